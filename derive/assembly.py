"""Write generated/rules.py: what does not depend on the activation, emitted once for all.

Every learning rule's equations (derive.drift, derive.finite) and the literature's averages
(derive.stein) are sums of products of the order parameters and Gaussian averages of g; only the
averages depend on the activation. generated/rules.py holds those sums, one function per rule and
equation, reading the averages from an object E (E.pair_1_1, E.multi_1_0_0, ...) that
runtime.averages evaluates for an activation (generated/NAME.py); AVERAGES lists what each
function reads. Adding a rule changes this one emitted file.
"""
from __future__ import annotations

from collections import Counter

import sympy as sp

from derive import contraction
from derive import drift as drift_engine
from derive import finite as finite_engine
from derive import gaussian as G
from derive import rules, stein
from derive.kernels import from_name
from derive.printer import NumpyPrinter

COMMAND = "make derive  (python -m derive)"


def _cached(function):
    """Derive once per process (the rules do not depend on the activation)."""
    memo = {}

    def wrapper(*args):
        if args not in memo:
            memo[args] = function(*args)
        return memo[args]
    wrapper.__doc__ = function.__doc__
    return wrapper


@_cached
def limit_drift(name):
    """The rule's D -> infinity drift, None without an O(1) limit (tied weights)."""
    try:
        return drift_engine.derive_drift(rules.get(name))
    except G.NoClosedForm:
        return None


@_cached
def finite_equations(name):
    """(finite-D drift, second-order noise N_j, noise between spikes) of a rule."""
    rule = rules.get(name)
    return (drift_engine.derive_drift(rule, finite=True), finite_engine.derive_noise(rule),
            finite_engine.derive_noise(rule, cross=True))


def corrections(drift):
    """The finite-D Drift's terms of negative D-order: what it adds to the D -> infinity drift."""
    def below(ms):
        return [m for m in ms if sp.powsimp(m.coeff).as_coeff_exponent(rules.D)[1] < 0]
    return drift_engine.Drift(drift.rule, True, {key: below(ms) for key, ms in drift.A.items()},
                              {key: below(ms) for key, ms in drift.B.items()})


@_cached
def bias_equations(name):
    """(BiasDrift, BiasNoise) of a rule that trains an encoder bias, or None. The finite-D bias
    equations reuse the bias drift, so the rule's drift must be exact at any D."""
    rule = rules.get(name)
    if rule.db is None or limit_drift(name) is None:
        return None
    if corrections(finite_equations(name)[0]).monomials():
        raise G.NoClosedForm(f"rule {name!r}: its drift has O(1/D) terms the bias drift does not carry")
    return drift_engine.derive_bias_drift(rule), finite_engine.derive_bias_noise(rule)


@_cached
def error(tied):
    """Monomials of the population error less tr(Omega)/(2D): untied (D -> infinity form, exact
    at any D), or tied at dimension D."""
    return tuple(drift_engine.derive_error(rules.get("tied" if tied else "vanilla"), finite=tied))


def shared_literature():
    """The literature's averages whose Stein reduction needs no property of g: name -> (dim, formula)."""
    out = {}
    for name, (dim, integrand) in stein.LITERATURE.items():
        try:
            out[name] = (dim, stein.average(integrand, dim))
        except G.NoClosedForm:
            continue
    return out


def averages(monomials):
    """The names of the averages (mean_*, pair_*, multi_*) the monomials read, sorted."""
    return tuple(sorted(drift_engine.kernel_names(monomials)) + sorted(drift_engine.multi_names(monomials)))


def orders(name):
    """Derivative orders per unit of an average's name, as runtime.quadrature.expect_units takes them."""
    return from_name(name).orders if name.startswith(("mean_", "pair_")) else drift_engine.multi_orders(name)


# -- source -------------------------------------------------------------------------------

def _doc(text, indent="    "):
    lines = text.strip().splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *[f"{indent}{line}" if line else "" for line in lines[1:]], f'{indent}"""']


def _slots(fams):
    return {"w": "0:K", "v": "K:2 * K"} if len(fams) == 2 else {"w": ":"}


def _width(fams):
    return "2 * K" if len(fams) == 2 else "K"


def _constants(monomials, last=False):
    """K, and the constant arrays the terms read; `last`: with the batch axes last (runtime.contract)."""
    lines = ["    K = Q.shape[-1]"]
    names = {n for m in monomials for n, _ in m.factors}
    pad = "_constant({}, batch)" if last else "{}"
    if "eye" in names:
        lines.append(f"    eye = {pad.format('numpy.eye(K)')}")
    if "tril" in names:
        lines.append(f"    tril = {pad.format('numpy.tril(numpy.ones((K, K)))')}")
    if "unit" in names:
        lines.append("    unit = E.unit")
    return lines


#: the noise functions' array arguments -> their unit (not batch) axes
_CORE = {"Q": 2, "R": 2, "T": 2, "T0": 2, "WW": 2, "rho_hat": 1, "m_rho": 1, "rho_eye": 2, "theta": 2, "S": 3}


def _batch_last(function, monomials, shaped, args):
    """The lines that move the batch axes of E's averages and of the arguments `args` (in that
    order) that the terms read last, `shaped` (the argument giving the output's shape) always, so
    that each einsum's inner loop runs over the batch (runtime.contract), and the constants."""
    read = {n.split("_")[0] if n.startswith(("theta_", "S_")) else n for m in monomials for n, _ in m.factors}
    moved = [a for a in args if a in read or a == shaped]
    return [f"    E, batch, ({', '.join(moved)}{',' * (len(moved) == 1)}) = _batch_last(E, AVERAGES[{function!r}], "
            f"{', '.join(f'({a}, {_CORE[a]})' for a in moved)})", *_constants(monomials, last=True)[1:]]


# -- the terms that several rules' limits share, written once ---------------------------

#: the function of generated/rules.py holding the drift terms shared by several rules
SHARED = "_drift_shared"


def _key(block, m):
    """A monomial of a block, comparable across rules (summed indices renamed canonically)."""
    subscripts, names = m.einsum()
    return block, m.coeff, subscripts, tuple(names)


def _keys(drift):
    """The Counter of a Drift's monomials by _key."""
    return Counter(_key((part, key), m) for part in ("A", "B") for key, ms in getattr(drift, part).items() for m in ms)


def _split(drift, keys):
    """(the Drift's monomials counted in `keys`, once each, as a Drift; the others, as a Drift)."""
    left = Counter(keys)
    parts = drift_engine.Drift(drift.rule, drift.finite), drift_engine.Drift(drift.rule, drift.finite)
    for part in ("A", "B"):
        for key, ms in getattr(drift, part).items():
            for m in ms:
                k = _key((part, key), m)
                inside = left[k] > 0
                left[k] -= inside
                getattr(parts[0 if inside else 1], part).setdefault(key, []).append(m)
    return parts


def _without(drift, shared):
    """The Drift less the monomials of `shared`."""
    return _split(drift, _keys(shared))[1]


@_cached
def shared_drift(names):
    """(rules, Drift): the D -> infinity drift's terms that every rule of `names` with a limit
    shares (the same monomial in the same block), when two or more rules with the same weight
    families and parameters have one; else None."""
    limits = [n for n in names if limit_drift(n) is not None]
    if len(limits) < 2:
        return None
    first = limit_drift(limits[0])
    if any(drift_engine.families(limit_drift(n).rule) != drift_engine.families(first.rule)
           or rules.get(n).params != rules.get(limits[0]).params for n in limits):
        return None
    common = _keys(first)
    for n in limits[1:]:
        common &= _keys(limit_drift(n))
    if not common:
        return None
    return tuple(limits), _split(first, common)[0]


def _shared_function(limits, shared):
    """_drift_shared: the terms of (A, B) the rules' limits share, for each drift_<rule> to add to."""
    fams = drift_engine.families(shared.rule)
    F = _width(fams)
    names = [f"drift_{n}" for n in limits]
    doc = (f"The terms of (A, B) that {', '.join(names[:-1])} and {names[-1]} share, written once: "
           "each adds its own terms.\n"
           f"Averages E at Q, R, T (..., K, K); returns (A, B) of shape (..., {F}, {F}), without the factor lr.")
    shape = f"Q.shape[:-2] + ({F}, {F})"
    lines = [f"def {SHARED}(E, Q, R, T, T0{_params(limits[0])[0]}):", *_doc(doc), *_constants(shared.monomials())]
    lines += _blocks("A", shared.A, fams, shape=shape) + _blocks("B", shared.B, fams, shape=shape)
    return lines + ["    return A, B", "", ""]


def _blocks(label, blocks, fams, output="ka", free=None, shape=None, last=False, mirror=None):
    """`label` = zeros(shape), then label[..., f, h] = (factored sum) for its nonzero blocks;
    shape None: label exists already (the shared terms), label[..., f, h] += (factored sum).
    `last`: the batch axes last, label[:, ..., :, f, h] (runtime.contract). `mirror`: the swap of
    output indices under which label is symmetric (the noise matrices): a diagonal block is
    printed from half its terms (contraction.mirrored), a block (h, f) that is the transpose of
    the block (f, h) before it as that transpose (runtime.contract.swapped)."""
    slot = _slots(fams)
    lines = [f"    {label} = numpy.zeros({shape})"] if shape is not None else []
    lead = ":, " * (len(output) - 2) if last else "..., "
    for (f, h), ms in sorted(blocks.items()):
        if mirror and (h, f) < (f, h) and (h, f) in blocks and \
                contraction.transposes(blocks[(h, f)], ms, output, free, rules.eta, mirror):
            axes = contraction.axes(output, mirror)
            lines.append(f"    {label}[{lead}{slot[f]}, {slot[h]}] = _swapped({label}[{lead}{slot[h]}, {slot[f]}], {axes})")
            continue
        expr = contraction.source(ms, output, free, rules.eta, indent=" " * 8, last=last,
                                  mirror=mirror if mirror and f == h else None)
        if expr != "0.0":
            lines.append(f"    {label}[{lead}{slot[f]}, {slot[h]}] {'=' if shape is not None else '+='} {expr}")
    return lines


def _params(name):
    """The rule's parameters: (', kappa=0.0' for a signature, ', kappa=kappa' for a call)."""
    params = rules.get(name).params
    return ("".join(f", {p}={float(v)!r}" for p, v in params), "".join(f", {p}={p}" for p, _ in params))


def _drift_function(name, drift, fname, args, what, limit=None, shared=None):
    """`shared`: the Drift of the terms this rule shares with others, written once (_drift_shared),
    which the function starts from and adds its own terms to."""
    fams = drift_engine.families(drift.rule)
    F = _width(fams)
    theta = "(omega_tau, upsilon_tau/sqrt(D))" if len(fams) == 2 else "omega_tau"
    doc = (f"Rule {name!r}: {drift.rule.description}.\n\n"
           f"d theta_tau/dt = (rho_hat_tau A + B) theta_tau, theta_tau = {theta}: {what} (derive.drift).\n"
           f"Averages E at Q, R, T (..., K, K); returns (A, B) of shape (..., {F}, {F}).")
    shape = f"Q.shape[:-2] + ({F}, {F})"
    lines = [f"def {fname}({args}{_params(name)[0]}):", *_doc(doc)]
    if shared is not None:
        own = _without(drift, shared)
        lines += [*_constants(own.monomials()),
                  f"    A, B = {SHARED}(E, Q, R, T, T0{_params(name)[1]})"]
        lines += _blocks("A", own.A, fams) + _blocks("B", own.B, fams)
    else:
        lines += _constants(drift.monomials())
        lines += _blocks("A", drift.A, fams, shape=shape) + _blocks("B", drift.B, fams, shape=shape)
    if limit:
        lines += [f"    A_limit, B_limit = {limit}", "    return A_limit + lr * A, B_limit + lr * B"]
    else:
        lines.append("    return lr * A, lr * B")
    return lines + ["", ""]


def _finite_function(name, drift):
    """finite_drift_<rule>: the limit's drift (averages E_limit) plus the O(1/D) terms, or every
    term for a rule without a limit."""
    args = "E, E_limit, Q, R, T, T0, WW, lr, D"
    what = "every term at dimension D, the exact expected drift per unit of time"
    if limit_drift(name) is None:
        return _drift_function(name, drift, f"finite_drift_{name}", args,
                               what + " (E_limit unused: no D -> infinity limit)")
    extra = corrections(drift)
    call = f"drift_{name}(E_limit, Q, R, T, T0, lr{_params(name)[1]})"
    if not extra.monomials():
        doc = f"Rule {name!r} at dimension D: drift_{name}, exact (no O(1/D) terms; E unused)."
        return [f"def finite_drift_{name}({args}{_params(name)[0]}):", *_doc(doc), f"    return {call}", "", ""]
    return _drift_function(name, extra, f"finite_drift_{name}", args,
                           f"{what}: drift_{name} (averages E_limit) plus its O(1/D) terms (averages E)",
                           limit=call)


def _noise_function(name, noise):
    fams = drift_engine.families(noise.rule)
    F = _width(fams)
    monomials = noise.monomials()
    if noise.cross:
        function = f"spike_noise_{name}"
        head = [f"def {function}(E, Q, R, T, T0, WW, lr, D, theta, rho_hat, rho_eye{_params(name)[0]}):",
                f'    """Rule {name!r}: N_jj2 = D E[d theta_j d theta_j2^T] for two spikes j, j2, (..., J, J, {F}, {F})."""',
                "    K = Q.shape[-1]",
                *_batch_last(function, monomials, "theta", ("Q", "R", "T", "T0", "WW", "theta", "rho_hat", "rho_eye")),
                "    theta_w, theta_v = theta[:, :K], theta[:, K:]" if len(fams) == 2 else "    theta_w = theta"]
        shape = f"theta.shape[:1] * 2 + ({F}, {F}) + batch"
        output, free, mirror = "jikl", finite_engine.FREE_CROSS, {"j": "i", "i": "j", "k": "l", "l": "k"}
    else:
        function = f"noise_{name}"
        head = [f"def {function}(E, Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho{_params(name)[0]}):",
                f'    """Rule {name!r}: N_j = D sum_(tau in atom j) E[d theta_tau d theta_tau^T], (..., J, {F}, {F})."""',
                "    K = Q.shape[-1]",
                *_batch_last(function, monomials, "S", ("Q", "R", "T", "T0", "WW", "S", "rho_hat", "m_rho")),
                "    S_ww, S_wv, S_vw, S_vv = _wv_blocks(S, K)" if len(fams) == 2 else "    S_ww = S"]
        shape = f"S.shape[:3] + batch"
        output, free, mirror = "jkl", finite_engine.FREE, {"k": "l", "l": "k"}
    return head + _shared(lambda last: _blocks("N", noise.N, fams, output, free, shape, last=last, mirror=mirror)) + \
        ["    return lr**2 * _batch_first(N, batch)", "", ""]


def _shared(lines):
    """lines(last): a function's sums, batch axes last, each contraction that several of their
    terms compute named at its first evaluation and read after (derive.contraction.Shared: two passes)."""
    shared = contraction.Shared()
    lines(shared)
    shared.counting = False
    return lines(shared)


def _bias_functions(name, bias_drift, noise):
    fams = drift_engine.families(noise.rule)
    F, slot = _width(fams), _slots(fams)
    db = contraction.source(bias_drift.db, "k", eta=rules.eta)
    signature, call = _params(name)
    lines = [f"def bias_drift_{name}(E, Q, R, T, T0, b, lr{signature}):",
             *_doc(f"Rule {name!r} with a trained encoder bias b (..., K), lambda_k = w_k.x/sqrt(D) + b_k: drift_{name}\n"
                   "with the averages E over lambda ~ N(b, Q) (derive.drift.derive_bias_drift), and db_k/dt.\n"
                   "Returns (A, B, db) of shapes (..., 2K, 2K), (..., 2K, 2K), (..., K)."),
             *_constants(bias_drift.db),
             f"    A, B = drift_{name}(E, Q, R, T, T0, lr{call})",
             f"    return A, B, lr * ({db} + numpy.zeros(b.shape))", "", ""]
    monomials = noise.monomials()
    lines += [f"def bias_noise_{name}(E, Q, R, T, T0, WW, lr, D, b, theta, rho_hat{signature}):",
              *_doc(f"Rule {name!r} with a trained encoder bias b (..., K): Nbb = D E[db_k db_l] (..., K, K) and\n"
                    "Nbt = D E[db_k d theta_j^T] (..., J, K, F) per unit of time for the spikes' direction vectors\n"
                    "theta (..., J, F), rho_hat (J,) = rho_j/D (derive.finite.derive_bias_noise); averages E over\n"
                    "lambda ~ N(b, Q). Their covariance, minus the product of the drifts over D, drives the\n"
                    "fluctuations of b (runtime.fluctuations)."),
              "    K = Q.shape[-1]",
              *_batch_last(f"bias_noise_{name}", monomials, "theta", ("Q", "R", "T", "T0", "WW", "theta", "rho_hat"))]
    lines.append("    theta_w, theta_v = theta[:, :K], theta[:, K:]")

    def sums(last):
        bb = contraction.source(noise.bb, "kl", finite_engine.FREE, rules.eta, last=last)
        out = [f"    Nbb = {bb} + numpy.zeros((K, K) + batch)",
               f"    Nbt = numpy.zeros(theta.shape[:1] + (K, {F}) + batch)"]
        for h, ms in sorted(noise.btheta.items()):
            expr = contraction.source(ms, "jkl", finite_engine.FREE, rules.eta, last=last)
            if expr != "0.0":
                out.append(f"    Nbt[:, :, {slot[h]}] = {expr}")
        return out
    return lines + _shared(sums) + \
        ["    return lr**2 * _batch_first(Nbb, batch), lr**2 * _batch_first(Nbt, batch)", "", ""]


def _error_functions():
    def formula(ms):
        return " + ".join(f"{m.coeff}*{'*'.join(n for n, _ in m.factors)}" for m in ms)
    untied, tied = error(False), error(True)
    return [
        "def population_error(E, Q, R, T, T0, half_trace):",
        *_doc("eps = tr(Omega)/(2D) + E[|x_hat|^2 - 2 x.x_hat]/(2D) for the untied network (SPEC section 3).\n\n"
              "Q, R, T, T0 of shape (..., K, K); half_trace = tr(Omega)/(2D); averages E (over N(b, Q) with a bias).\n"
              f"Derived: {formula(untied)} (summed over units)."),
        f"    return half_trace + {contraction.source(untied, '')}", "", "",
        "def population_error_tied(E, Q, WW, half_trace, D):",
        *_doc("eps = tr(Omega)/(2D) + E[|x_hat|^2 - 2 x.x_hat]/(2D) for the tied network at dimension D (SPEC section 3).\n\n"
              "Q, WW = w.w/D of shape (..., K, K); half_trace = tr(Omega)/(2D).\n"
              f"Derived: {formula(tied)} (summed over units)."),
        f"    return half_trace + {contraction.source(tied, '')}", "", "",
    ]


_LITERATURE_DOC = {
    "J2": "E[x1 g(x2)]", "I2": "E[g(x1) g(x2)]", "I21": "E[g'(x1) x1 x2]",
    "I22": "E[g'(x1) x2^2]", "I3": "E[g'(x1) x2 g(x3)]", "I4": "E[g'(x1) g'(x2) g(x3) g(x4)]",
}


def literature_doc(name, dim, formula):
    """The docstring of a literature average; `formula` its Stein reduction (printed as given)."""
    return (f"{name} = {_LITERATURE_DOC[name]} for x ~ N(0, C), C of shape (..., {dim}, {dim}).\n\n"
            f"Stein: {name} = {formula}")


def literature_unpack(dim, formula):
    """The left side unpacking the covariance entries c11, c12, ... a formula uses (c11 always)."""
    entries = [stein.cov(i, j) for i in range(1, dim + 1) for j in range(i, dim + 1)]
    return ", ".join(str(e) if e in formula.free_symbols or e == entries[0] else "_" for e in entries)


def _literature_functions():
    out = []
    for name, (dim, formula) in shared_literature().items():
        kernels = sorted(f.func.__name__ for f in formula.atoms(sp.core.function.AppliedUndef))
        printer = NumpyPrinter(functions={k: f"kernels.{k}" for k in kernels})
        out += [f"def {name}(kernels, C):", *_doc(literature_doc(name, dim, sp.sstr(formula)) + "\n"
                                                  "kernels: the activation's module (its mean_*, pair_*)."),
                f"    {literature_unpack(dim, formula)} = _covariance(C, {dim}, {name!r})",
                f"    return _broadcast({printer.doprint(formula)}, c11)", "", ""]
    return out


def table():
    """generated/rules.py's function -> the averages it reads (its AVERAGES), for every rule
    registered so far."""
    return _table(tuple(rules.RULES))


@_cached
def _table(names):
    out = {}
    for n in names:
        if limit_drift(n) is not None:
            out[f"drift_{n}"] = averages(limit_drift(n).monomials())
    if shared_drift(names) is not None:
        out[SHARED] = averages(shared_drift(names)[1].monomials())
    for n in names:
        if bias_equations(n) is not None:
            bias_drift, bias_noise = bias_equations(n)
            out[f"bias_drift_{n}"] = averages(bias_drift.monomials())
            out[f"bias_noise_{n}"] = averages(bias_noise.monomials())
    for n in names:
        drift, noise, spike_noise = finite_equations(n)
        out[f"finite_drift_{n}"] = averages((corrections(drift) if limit_drift(n) is not None else drift).monomials())
        out[f"noise_{n}"] = averages(noise.monomials())
        out[f"spike_noise_{n}"] = averages(spike_noise.monomials())
    out["population_error"] = averages(error(False))
    out["population_error_tied"] = averages(error(True))
    return out


def multi_averages(prefixes):
    """The averages over several units (multi_*) read by the functions whose names start with `prefixes`."""
    return {a for f, names in table().items() if f.startswith(prefixes) for a in names if a.startswith("multi_")}


def _partitions(items):
    """Every partition of the list `items` into non-empty blocks."""
    if not items:
        yield []
        return
    for rest in _partitions(items[1:]):
        for i in range(len(rest)):
            yield rest[:i] + [[items[0]] + rest[i]] + rest[i + 1:]
        yield [[items[0]]] + rest


def unit_orders(prefixes, units):
    """The derivative orders one unit can carry in the averages (mean_*, pair_*, multi_*) read by the
    functions whose names start with `prefixes`, where an average's index tuple falls on `units`
    distinct units (runtime.quadrature.expect_units groups the factors by unit): the orders on one
    of them, sorted decreasing; a sorted tuple of them."""
    names = {a for f, names in table().items() if f.startswith(prefixes) for a in names}
    return tuple(sorted({tuple(sorted((a for slot in block for a in slot), reverse=True))
                         for name in names for blocks in _partitions(list(orders(name)))
                         if len(blocks) == units for block in blocks},
                        key=lambda o: (len(o), o)))


def source():
    """generated/rules.py."""
    names = list(rules.RULES)
    limits = [n for n in names if limit_drift(n) is not None]
    biased = [n for n in names if bias_equations(n) is not None]
    body = []
    shared = shared_drift(tuple(names))
    if shared is not None:
        body += _shared_function(*shared)
    for n in limits:
        body += _drift_function(n, limit_drift(n), f"drift_{n}", "E, Q, R, T, T0, lr", "the D -> infinity limit",
                                shared=shared[1] if shared is not None and n in shared[0] else None)
    for n in biased:
        body += _bias_functions(n, *bias_equations(n))
    for n in names:
        drift, noise, spike_noise = finite_equations(n)
        body += _finite_function(n, drift) + _noise_function(n, noise) + _noise_function(n, spike_noise)
    body += _error_functions()
    literature = shared_literature()
    body += _literature_functions()
    head = [
        f"# Generated by `{COMMAND}` from derive/ (derive/assembly.py): do not edit.",
        "# The same for every activation: each learning rule's equations and the literature's averages in terms of",
        "# the Gaussian averages of g, which runtime/averages.py evaluates for one activation (generated/NAME.py).",
        '"""The learning rules\' equations of motion (SPEC section 5), assembled from Gaussian averages.',
        "",
        "Per rule: drift_<rule> (the D -> infinity limit) and finite_drift_<rule> (at dimension D) give (A, B) with",
        "d theta_tau/dt = (rho_hat_tau A + B) theta_tau, theta_tau = (omega_tau, upsilon_tau/sqrt(D)) (omega_tau with",
        "tied weights) (derive.drift); noise_<rule> gives N_j = D sum_(tau in atom j) E[d theta_tau d theta_tau^T], the",
        "second-order (lr^2) terms of dS_j/dt = M_j S_j + S_j M_j^T + N_j, for the per-atom matrices S (..., J, F, F),",
        "rho_hat (J,) = rho_j/D, m_rho (J,) = multiplicity times rho_j; spike_noise_<rule> gives N_jj2 =",
        "D E[d theta_j d theta_j2^T] for the spikes' direction vectors theta (..., J, F), rho_eye = diag(rho_j), whose",
        "covariance, N_jj2 - (d theta_j/dt)(d theta_j2/dt)^T / D, drives their fluctuations (derive.finite, cross).",
        "",
        "Each function reads the averages over the local fields lambda ~ N(0, Q) (N(b, Q) with a bias) from E:",
        "E.mean_<o> (..., K) is E[prod g^(o)(lambda_k)], E.pair_<o1>_<o2> (..., K, K) the average over units (k, l),",
        "E.multi_<o1>_<o2>_... (..., K, K, ...) over a tuple of units (<o>: the derivative orders of g on that unit);",
        "E.unit (K,) is 1 on a hidden unit and 0 on the output bias' unit (g = 1, w = 0: derive.rules).",
        "AVERAGES lists what each function reads.",
        "Each sum is factored, common factors pulled out (derive/contraction.py); the terms several rules' limits",
        "share are written once (_drift_shared), each drift_<rule> adding its own. The noise functions move the batch",
        "axes last on entry and back on return (runtime/contract.py), so that their einsums' inner loops run over the",
        "batch; they contract at most three operands a call, and a contraction several terms compute is named where it",
        "is first evaluated, (sub1 := _einsum(...)), and read by that name after (_einsum: numpy.einsum's C loop,",
        "runtime/contract.py). Like terms (equal up to the",
        "names of summed indices and the operands' symmetries) are added, and the noise matrices, symmetric, are",
        "written from half their terms: a diagonal block as _mirrored(axes, X) = X + X^T, the block (w, v) as the",
        "transpose of the block (v, w) (derive/contraction.py, mirrored).",
        '"""',
        "import numpy",
        "",
        "from runtime.check import covariance as _covariance",
        "from runtime.contract import batch_first as _batch_first",
        "from runtime.contract import batch_last as _batch_last",
        "from runtime.contract import constant as _constant",
        "from runtime.contract import einsum as _einsum",
        "from runtime.contract import mirrored as _mirrored",
        "from runtime.contract import swapped as _swapped",
        "from runtime.elementwise import broadcast as _broadcast, power as _power",
        "",
        "",
        "def _wv_blocks(S, K):",
        '    """The (w, v) blocks of matrices S (J, 2K, 2K, batch...): S_ww, S_wv, S_vw, S_vv."""',
        "    return S[:, :K, :K], S[:, :K, K:], S[:, K:, :K], S[:, K:, K:]",
        "",
        "",
        f"RULES = {tuple(names)!r}",
        "#: rules with a D -> infinity limit (drift_<rule>); the others have finite-D equations only",
        f"LIMITS = {tuple(limits)!r}",
        "#: rules that train an encoder bias (bias_drift_<rule>, bias_noise_<rule>)",
        f"BIASED = {tuple(biased)!r}",
        "#: rules whose output bias c (x_hat = V^T g + c) is a first unit with g = 1 and w = 0 (derive.rules)",
        f"OUTPUT_BIASED = {tuple(n for n in names if rules.output_bias_unit(rules.get(n)))!r}",
        "#: each rule's parameters (keyword arguments of its functions) and their defaults",
        f"PARAMS = {{{', '.join(f'{n!r}: {rules.get(n).defaults()!r}' for n in names)}}}",
        "#: the literature's averages written here; an activation may add others (I4) of its own",
        f"LITERATURE = {tuple(literature)!r}",
        "#: function -> the averages it reads from E",
        "AVERAGES = {",
        *[f"    {k!r}: {v!r}," for k, v in table().items()],
        "}",
        "",
        "",
    ]
    return "\n".join(head + body).rstrip() + "\n"
