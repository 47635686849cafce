"""Write generated/NAME.py for an activation: kernels, literature averages, (later) equations.

One clear step from expression to code, as SymPy's lambdify: `guard` the expression for the
edges, common-subexpression-eliminate it, print it with numpy. Output is deterministic.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import sympy as sp
from sympy.core.function import AppliedUndef

from derive import drift as drift_engine
from derive import finite as finite_engine
from derive import gaussian as G
from derive import rules, shifted, smoothing, stein
from derive.activations import Activation, x
from derive.kernels import BASE, derive_kernel, from_name
from derive.printer import NumpyPrinter, distribute, guard, rewrite_asin

COMMAND = "make derive  (python -m derive)"
MAX_DERIVATIVE = 5


@dataclass
class Derivation:
    """Everything derived for one activation."""

    activation: Activation
    g: sp.Expr
    kernels: dict = field(default_factory=dict)       # Kernel -> closed form or None (numeric)
    literature: dict = field(default_factory=dict)    # name -> (dim, formula in kernel calls)
    derivatives: list = field(default_factory=list)   # printable g, g', g'', ...
    drifts: dict = field(default_factory=dict)        # rule name -> drift_engine.Drift
    error: list = field(default_factory=list)         # monomials of the population error
    finite: dict = field(default_factory=dict)        # rule name -> (finite Drift, Noise, spike Noise)
    finite_missing: str = ""                          # why there are no finite-D equations
    error_tied: list = field(default_factory=list)    # population error of the tied network
    shifted: dict = field(default_factory=dict)       # Kernel -> closed form over N(m, C) or None
    bias_drifts: dict = field(default_factory=dict)   # rule name -> drift_engine.BiasDrift
    bias_noises: dict = field(default_factory=dict)   # rule name -> finite_engine.BiasNoise (finite D)
    bias_noise_missing: str = ""                      # why there are no finite-D equations with a bias
    smoothed: list = field(default_factory=list)      # g_eps, g_eps', ... where g'' is a delta

    @property
    def closed_form(self) -> bool:
        return all(e is not None for e in self.kernels.values())

    @property
    def numeric(self):
        return sorted(k.name for k, e in self.kernels.items() if e is None)

    @property
    def polynomial_degree(self):
        """The degree of g if it is a polynomial (its multi-unit averages are then exact by
        Gauss-Hermite quadrature), else None."""
        return sp.Poly(self.g, x).degree() if self.g.is_polynomial(x) else None


def kernel_calls(expr):
    return {from_name(f.func.__name__) for f in expr.atoms(AppliedUndef)}


def derive_all(activation: Activation) -> Derivation:
    g = G.normalize(activation.bound())
    d = Derivation(activation, g)
    for order in range(MAX_DERIVATIVE + 1):
        gd = G.normalize(sp.diff(g, x, order))
        if gd.has(sp.DiracDelta):
            break
        d.derivatives.append(gd)
    for name, (dim, integrand) in stein.LITERATURE.items():
        try:
            d.literature[name] = (dim, stein.average(integrand, dim, g))
        except G.NoClosedForm:
            continue
    wanted = set(BASE)
    for _, formula in d.literature.values():
        wanted |= kernel_calls(formula)
    d.drifts = {name: _derived_drift(name) for name in rules.RULES}
    d.drifts = {name: drift for name, drift in d.drifts.items() if drift is not None}
    d.error = drift_engine.derive_error(rules.get("vanilla"))
    finite = {name: _derived_finite(name) for name in rules.RULES}
    needed = max(a for _, *noises in finite.values() for noise in noises
                 for n in drift_engine.multi_names(noise.monomials()) for unit in drift_engine.multi_orders(n) for a in unit)
    if needed < len(d.derivatives):
        d.finite = finite
    elif smoothing.kinks(g):
        g_eps = smoothing.smoothed(g)
        d.smoothed = [sp.diff(g_eps, x, order) for order in range(MAX_DERIVATIVE + 1)]
        d.finite = finite
    else:
        d.finite_missing = (f"the finite-D equations average g^({needed}) over several units "
                            f"numerically, but g^({len(d.derivatives)}) is not a function")
    if d.finite:
        d.error_tied = drift_engine.derive_error(rules.get("tied"), finite=True)
    for drift in d.drifts.values():
        wanted |= set(drift.kernels())
    for drift, *noises in ([] if d.smoothed else d.finite.values()):
        wanted |= set(drift.kernels())
        wanted |= {from_name(n) for noise in noises for n in drift_engine.kernel_names(noise.monomials())}
    wanted |= {from_name(name) for name in drift_engine.kernel_names(d.error_tied)}
    wanted |= {from_name(name) for name in drift_engine.kernel_names(d.error)}
    for kernel in sorted(wanted):
        d.kernels[kernel] = derive_kernel(g, kernel)
    _derive_bias(d)
    return d


def _derive_bias(d: Derivation):
    """Shifted kernels (derive.shifted) for the rules that train an encoder bias, and the error."""
    d.bias_drifts = {name: drift_engine.derive_bias_drift(rule) for name, rule in rules.RULES.items()
                     if rule.db is not None and name in d.drifts}
    wanted = set(BASE) | {from_name(name) for name in drift_engine.kernel_names(d.error)}
    for drift in d.bias_drifts.values():
        wanted |= set(drift.kernels())
    for kernel in sorted(wanted):
        d.shifted[kernel] = shifted.derive_kernel(d.g, kernel)
    if not d.finite:
        d.bias_noise_missing = f"no finite-D equations ({d.finite_missing})"
    else:
        d.bias_noises = {name: _derived_bias_noise(name) for name in d.bias_drifts}


def _at_zero_variance(g, kernel, expr):
    """A one-point kernel at v = 0 is the integrand at x = 0 (Heaviside(0) = 1/2), which for a
    discontinuous g' differs from the limit v -> 0+ (ReLU: E[g'^2] = 1/2, g'(0)^2 = 1/4)."""
    if len(kernel.orders) != 1:
        return expr
    from derive.kernels import product
    at_zero = G.normalize(product(g, kernel.orders[0])).subs(x, 0)
    if at_zero.has(sp.DiracDelta) or not at_zero.is_finite or sp.simplify(expr.subs(G.v, 0) - at_zero) == 0:
        return expr
    v = sp.Symbol(G.v.name, nonnegative=True)    # G.v is positive: Eq(G.v, 0) would be False
    return sp.Piecewise((at_zero, sp.Eq(v, 0)), (expr.subs(G.v, v), True))


_DRIFT_CACHE = {}


def _derived_drift(name):
    """The rule's drift (activation-independent, so derived once); None without an O(1) limit."""
    if name not in _DRIFT_CACHE:
        try:
            _DRIFT_CACHE[name] = drift_engine.derive_drift(rules.get(name))
        except G.NoClosedForm:
            _DRIFT_CACHE[name] = None
    return _DRIFT_CACHE[name]


def _derived_finite(name):
    """(finite-D drift, second-order noise, noise between spikes) of a rule, activation-independent,
    derived once."""
    key = ("finite", name)
    if key not in _DRIFT_CACHE:
        rule = rules.get(name)
        _DRIFT_CACHE[key] = (drift_engine.derive_drift(rule, finite=True), finite_engine.derive_noise(rule),
                             finite_engine.derive_noise(rule, cross=True))
    return _DRIFT_CACHE[key]


def _derived_bias_noise(name):
    """The second moments of a trained bias (derive.finite.derive_bias_noise), derived once. The
    finite-D bias equations reuse drift_<rule>_bias, so the rule's drift must be exact at any D."""
    key = ("bias noise", name)
    if key not in _DRIFT_CACHE:
        if _corrections(_derived_finite(name)[0]).monomials():
            raise G.NoClosedForm(f"rule {name!r}: its drift has O(1/D) terms the bias drift does not carry")
        _DRIFT_CACHE[key] = finite_engine.derive_bias_noise(rules.get(name))
    return _DRIFT_CACHE[key]


# ----------------------------------------------------------------------------------------

_DERIVATIVE_NAMES = ["g", "dg", "d2g", "d3g", "d4g", "d5g"]
_LITERATURE_DOC = {
    "J2": "E[x1 g(x2)]", "I2": "E[g(x1) g(x2)]", "I21": "E[g'(x1) x1 x2]",
    "I22": "E[g'(x1) x2^2]", "I3": "E[g'(x1) x2 g(x3)]", "I4": "E[g'(x1) g'(x2) g(x3) g(x4)]",
}


def _body(expr, printer, indent="    ", rewrite=True):
    """Lines computing expr with common subexpressions hoisted, ending in `return`
    (rewrite=False: keep the expression's own form -- no asin rewrite, no deep distribution of
    fractions -- as the shifted kernels need, see derive.shifted)."""
    expr = guard(distribute(rewrite_asin(expr)) if rewrite else expr)
    temps, (reduced,) = sp.cse(expr, symbols=sp.numbered_symbols("t"), optimizations=None)
    lines = [f"{indent}{t} = {printer.doprint(e)}" for t, e in temps]
    return lines, reduced


def _function(name, args, doc, expr, printer, shape_args=None, rewrite=True):
    lines, reduced = _body(expr, printer, rewrite=rewrite)
    result = printer.doprint(reduced)
    shape_args = shape_args or args
    lines.append(f"    return _broadcast({result}, {', '.join(shape_args)})")
    return [f"def {name}({', '.join(args)}):", *_doc(doc), *lines, "", ""]


def _doc(text):
    text = textwrap.indent(text.strip(), "    ").lstrip()
    return [f'    """{text}', '    """'] if "\n" in text else [f'    """{text}"""']


def _formula(expr):
    return textwrap.fill(sp.sstr(expr), width=88, subsequent_indent="    ", break_long_words=False)


def module_source(d: Derivation) -> str:
    act = d.activation
    kernel_names = [k.name for k in d.kernels]
    printer = NumpyPrinter(functions=kernel_names + [shifted.name(k) for k in d.shifted])
    params = {str(p): str(sp.nsimplify(val)) for p, val in act.params.items()}
    status = ("every kernel in closed form, derived by the SymPy engine (derive/gaussian.py)"
              if d.closed_form else
              "NUMERICAL kernels (no closed form found): " + ", ".join(d.numeric) +
              " -- double-exponential quadrature, runtime/quadrature.py")
    out = [
        f"# Generated by `{COMMAND}` from derive/: do not edit.",
        f"# Activation {act.name}: g(x) = {sp.sstr(act.expr)}" + (f" with {params}" if params else ""),
        f"# Kernels: {status}.",
        "# Finite-D equations: " + ("averages over several units (multi_*) NUMERICAL, by double-exponential "
                                    "quadrature per unit, pair or triple of units (runtime/quadrature.py, "
                                    "expect_units; K <= 3; three-unit accuracy in runtime/quadrature.py at N_TRIPLE)."
                                    if d.finite else
                                    f"none ({d.finite_missing})."),
        *([f"# Finite-D equations: g'' is a delta, so their O(1/D) terms and second-order noise are NUMERICAL "
           f"averages over the Gaussian-smoothed g_eps (SMOOTHED, eps = SMOOTHING = {smoothing.EPSILON}, "
           "Richardson-extrapolated to eps -> 0, O(eps^2); derive/smoothing.py); their D^0 terms are the exact "
           "drift_<rule>."] if d.smoothed else []),
        f"# Shifted kernels (trained bias): {_shifted_status(d)}.",
        *(["# Finite-D equations with a trained bias (BIAS_NOISE): their second-order noise averages over "
           "lambda ~ N(b, Q) are NUMERICAL (expect_units with means" + (", over the smoothed g_eps" if d.smoothed else
                                                                        "; exact Gauss-Hermite for a polynomial g") + "); "
           "the drift is the exact drift_<rule>_bias."] if d.bias_noises else
          [f"# Finite-D equations with a trained bias: none ({d.bias_noise_missing})."]),
        f'"""Gaussian averages of g(x) = {sp.sstr(d.g)} ({act.description}).',
        "",
        "Kernels (mean_*, pair_*) take arrays that broadcast and are not validated (hot path);",
        "the literature's averages (J2, I2, I21, I22, I3, I4) take covariances of shape",
        "(..., n, n), validate them, and return arrays of shape (...).",
        '"""',
        "import numpy",
        "import scipy.special",
        "",
        "from runtime import integrate as _integrate",
        "from runtime.check import covariance as _covariance",
        "from runtime.elementwise import angle as _angle, arcsin as _arcsin, atan2 as _atan2, broadcast as _broadcast, div as _div, sqrt0 as _sqrt0",
        "from runtime.elementwise import bvn as _bvn",
    ]
    if not d.closed_form or d.finite or None in d.shifted.values():
        out.append("from runtime import quadrature as _quadrature")
    out += [
        "",
        f"NAME = {act.name!r}",
        f"EXPRESSION = {sp.sstr(d.g)!r}",
        f"PARAMS = {params!r}",
        f"CLOSED_FORM = {d.closed_form}",
        f"POLYNOMIAL_DEGREE = {d.polynomial_degree}",
        f"NUMERIC_KERNELS = {tuple(d.numeric)!r}",
        f"LITERATURE = {tuple(d.literature)!r}",
        f"SHIFTED_NUMERIC_KERNELS = {tuple(shifted.name(k) for k, e in d.shifted.items() if e is None)!r}",
        "",
        "",
    ]
    for order, gd in enumerate(d.derivatives):
        name = _DERIVATIVE_NAMES[order]
        out += _function(name, ["x"], f"g^({order})(x) = {sp.sstr(gd)}", gd, printer)
    out += [f"DERIVATIVES = ({', '.join(_DERIVATIVE_NAMES[:len(d.derivatives)])},)", "", ""]
    if d.smoothed:
        names = [n + "_smoothed" for n in _DERIVATIVE_NAMES[:len(d.smoothed)]]
        for order, (name, gd) in enumerate(zip(names, d.smoothed)):
            out += _function(name, ["x", "epsilon"], f"g_eps^({order})(x), g smoothed over N(0, epsilon^2) "
                             "(derive/smoothing.py)", gd, printer)
        out += [f"SMOOTHED = ({', '.join(names)},)", f"SMOOTHING = {float(smoothing.EPSILON)!r}", "", ""]
    for kernel, expr in d.kernels.items():
        args = [str(a) for a in kernel.args]
        if expr is None:
            doc = f"{kernel.describe()}.\n\nNumerical: double-exponential quadrature (runtime/quadrature.py)."
            fn = "expect1" if len(kernel.orders) == 1 else "expect2"
            orders = ", ".join(repr(o) for o in kernel.orders)
            out += [f"def {kernel.name}({', '.join(args)}):", *_doc(doc),
                    f"    return _quadrature.{fn}(DERIVATIVES, {orders}, {', '.join(args)})", "", ""]
        else:
            doc = f"{kernel.describe()}.\n\n= {_formula(expr)}"
            out += _function(kernel.name, args, doc, _at_zero_variance(d.g, kernel, expr), printer)
    out += _shifted_kernel_functions(d, printer)
    for name, (dim, formula) in d.literature.items():
        out += _literature_function(name, dim, formula, printer)
    out += _error_function(d)
    out += _shifted_error_function(d)
    for name, drift in d.drifts.items():
        out += _drift_function(d, name, drift)
    for name, drift in d.bias_drifts.items():
        out += _bias_drift_function(d, name, drift)
    out += [
        f"DRIFTS = {{{', '.join(f'{n!r}: drift_{n}' for n in d.drifts)}}}",
        f"BIAS_DRIFTS = {{{', '.join(f'{n!r}: drift_{n}_bias' for n in d.bias_drifts)}}}",
        "",
        "",
    ]
    if d.finite:
        out += _error_function(d, tied=True)
    for name, (drift, noise, spike_noise) in d.finite.items():
        out += _drift_function(d, name, drift) + _noise_function(d, name, noise) + _noise_function(d, name, spike_noise)
    for name, bias_noise in d.bias_noises.items():
        _, noise, spike_noise = d.finite[name]
        out += (_noise_function(d, name, noise, bias=True) + _noise_function(d, name, spike_noise, bias=True)
                + _bias_noise_function(d, name, bias_noise))
    out += [
        "#: rule -> (finite-D drift, second-order noise): the exact expected drift at dimension D",
        f"FINITE = {{{', '.join(f'{n!r}: (finite_drift_{n}, noise_{n})' for n in d.finite)}}}",
        "#: rule -> the noise between spikes, D E[d theta_j d theta_j2^T] (runtime.fluctuations)",
        f"SPIKE_NOISE = {{{', '.join(f'{n!r}: spike_noise_{n}' for n in d.finite)}}}",
        "#: rule -> (noise_<rule>_bias, spike_noise_<rule>_bias, bias_noise_<rule>): the finite-D noise with a",
        "#: trained encoder bias b, the drift being drift_<rule>_bias (exact at any D)",
        f"BIAS_NOISE = {{{', '.join(f'{n!r}: (noise_{n}_bias, spike_noise_{n}_bias, bias_noise_{n})' for n in d.bias_noises)}}}",
        f"BIAS_NOISE_MISSING = {d.bias_noise_missing!r}",
        f"FINITE_MISSING = {d.finite_missing!r}",
        "",
        "",
        "#: runtime.integrate.integrate for this activation, with its signature and docstring",
        "integrate = _integrate.bind(globals())",
    ]
    return "\n".join(out).rstrip() + "\n"


def _zero_kernels(d):
    return {k.name for k, e in d.kernels.items() if e is not None and e == 0}


_CONSTANT_OPERANDS = ("eye", "tril", "rho_hat", "m_rho", "rho_eye")   # no leading (batch) axes


def _einsum_lines(monomials, zero, output, batched=False, free=None):
    """Sum of einsum monomials, skipping those with a kernel that vanishes identically."""
    parts = []
    for m in monomials:
        if any(name in zero for name, _ in m.factors):
            continue
        subscripts, names = m.einsum(output, free)
        if batched:
            ins, out = subscripts.split("->")
            subscripts = ",".join(i if n in _CONSTANT_OPERANDS else "..." + i
                                  for i, n in zip(ins.split(","), names)) + "->..." + out
        coeff = m.coeff.subs(rules.eta, 1)
        sign, coeff = ("-", -coeff) if coeff.could_extract_minus_sign() else ("+", coeff)
        printed = sp.pycode(coeff) if not coeff.free_symbols else f"({NumpyPrinter().doprint(coeff)})"
        scale = "" if coeff == 1 else f"{printed}*"
        operands = ", ".join(n + "_" if n.startswith(("mean_", "pair_", "multi_")) else n for n in names)
        parts.append(f"{sign} {scale}numpy.einsum({subscripts!r}, {operands})")
    if not parts:
        return "0.0"
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _kernel_arrays(monomials, zero):
    names = sorted(drift_engine.kernel_names(monomials) - zero)
    lines = []
    for n in names:
        call = f"{n}(q)" if n.startswith("mean_") else f"{n}(q[..., :, None], Q, q[..., None, :])"
        lines.append(f"    {n}_ = {call}")
    multi = sorted(drift_engine.multi_names(monomials))
    if multi:
        orders = tuple(drift_engine.multi_orders(n) for n in multi)
        lines.append(f"    {', '.join(n + '_' for n in multi)}, = _quadrature.expect_units(DERIVATIVES, {orders!r}, Q, "
                     "POLYNOMIAL_DEGREE)")
    return lines


def _numeric_kernel_arrays(smoothed, shifted=False):
    """Kernel arrays of the finite-D functions with every average numerical, in one expect_units
    call that shares its rules among them: mean_o(q_k) is the average over unit k, pair_a_b(q_k,
    Q_kl, q_l) over units (k, l), multi_* over tuples of units. `smoothed`: g'' is a delta, so over
    the smoothed activation (SMOOTHED at width SMOOTHING, extrapolated to 0); `shifted`: over
    lambda ~ N(b, Q), a trained encoder bias."""
    def arrays(monomials, zero):
        names = sorted(drift_engine.kernel_names(monomials)) + sorted(drift_engine.multi_names(monomials))
        if not names:
            return []
        orders = tuple(from_name(n).orders if n.startswith(("mean_", "pair_")) else drift_engine.multi_orders(n)
                       for n in names)
        call = ("_quadrature.smoothed(_quadrature.expect_units, SMOOTHED, SMOOTHING, " if smoothed else
                "_quadrature.expect_units(DERIVATIVES, ")
        means = f", {'None' if smoothed else 'POLYNOMIAL_DEGREE'}, b" if shifted else ""
        return [f"    {', '.join(n + '_' for n in names)}, = {call}{orders!r}, Q{means})"]
    return arrays


def _error_function(d, tied=False):
    """population_error (untied, optionally with an encoder bias) or population_error_tied (finite D)."""
    zero = _zero_kernels(d)
    monomials = d.error_tied if tied else d.error
    formula = " + ".join(f"{m.coeff}*{'*'.join(n for n, _ in m.factors)}" for m in monomials)
    if tied:
        head = ["def population_error_tied(Q, WW, half_trace, D):",
                *_doc("eps = tr(Omega)/(2D) + E[|x_hat|^2 - 2 x.x_hat]/(2D) for the tied network at dimension D "
                      "(SPEC section 3).\n\n"
                      "Q, WW = w.w/D of shape (..., K, K); half_trace = tr(Omega)/(2D).\n"
                      f"Derived: {formula} (einsum over units)."),
                "    Q, WW = numpy.asarray(Q, dtype=float), numpy.asarray(WW, dtype=float)"]
    else:
        head = ["def population_error(Q, R, T, T0, half_trace, b=None):",
                *_doc("eps = tr(Omega)/(2D) + E[|x_hat|^2 - 2 x.x_hat]/(2D) for the untied network (SPEC section 3).\n\n"
                      "Q, R, T, T0 of shape (..., K, K); half_trace = tr(Omega)/(2D); b (..., K): encoder bias or None.\n"
                      f"Derived: {formula} (einsum over units)."),
                "    if b is not None:",
                "        return _population_error_shifted(Q, R, T0, b, half_trace)",
                "    Q, R, T0 = numpy.asarray(Q, dtype=float), numpy.asarray(R, dtype=float), numpy.asarray(T0, dtype=float)"]
    return [
        *head,
        "    q = numpy.diagonal(Q, axis1=-2, axis2=-1)",
        *_kernel_arrays(monomials, zero),
        f"    return half_trace + {_einsum_lines(monomials, zero, '', batched=True)}",
        "", "",
    ]


def _slots(fams):
    return {"w": "0:K", "v": "K:2 * K"} if len(fams) == 2 else {"w": ":"}


def _preamble(monomials, zero, kernel_arrays=None):
    """K, q = diag(Q), the constant operands and the kernel arrays a drift function needs."""
    lines = ["    K = Q.shape[-1]", "    q = numpy.diagonal(Q, axis1=-2, axis2=-1)", "    eye = numpy.eye(K)"]
    if any(n == "tril" for m in monomials for n, _ in m.factors):
        lines.append("    tril = numpy.tril(numpy.ones((K, K)))")
    return lines + (kernel_arrays or _kernel_arrays)(monomials, zero)


def _corrections(drift):
    """The finite-D Drift's terms of negative D-order: what it adds to the D -> infinity drift."""
    def below(ms):
        return [m for m in ms if sp.powsimp(m.coeff).as_coeff_exponent(rules.D)[1] < 0]
    return drift_engine.Drift(drift.rule, True, {key: below(ms) for key, ms in drift.A.items()},
                              {key: below(ms) for key, ms in drift.B.items()})


def _drift_function(d, name, drift):
    smoothed = drift.finite and bool(d.smoothed)
    exact_limit = smoothed and name in d.drifts       # D^0 terms exact, O(1/D) terms smoothed
    if exact_limit:
        drift = _corrections(drift)
    zero = set() if smoothed else _zero_kernels(d)
    monomials = drift.monomials()
    fams = drift_engine.families(drift.rule)
    F = "2 * K" if len(fams) == 2 else "K"
    theta = "(omega_tau, upsilon_tau/sqrt(D))" if len(fams) == 2 else "omega_tau"
    if drift.finite:
        fname, args = f"finite_drift_{name}", "Q, R, T, T0, WW, lr, D"
        what = "every term at dimension D (exact expected drift per unit of time)"
    else:
        fname, args = f"drift_{name}", "Q, R, T, T0, lr"
        what = "the D -> infinity limit"
    lines = [
        f"def {fname}({args}):",
        *_doc(f"Rule {name!r}: {drift.rule.description}.\n\n"
              f"d theta_tau/dt = (rho_hat_tau A + B) theta_tau with theta_tau = {theta}, {what};\n"
              f"derived by derive.drift. Order parameters of shape (..., K, K); returns (A, B) of shape (..., {F}, {F})."),
        *_preamble(monomials, zero, _numeric_kernel_arrays(smoothed=True) if smoothed else None),
        f"    A = numpy.zeros(Q.shape[:-2] + ({F}, {F}))", f"    B = numpy.zeros(Q.shape[:-2] + ({F}, {F}))",
    ]
    lines += _block_lines(drift, zero)
    if exact_limit:
        lines += [f"    A_limit, B_limit = drift_{name}(Q, R, T, T0, lr)",
                  "    return A_limit + lr * A, B_limit + lr * B", "", ""]
    else:
        lines += ["    return lr * A, lr * B", "", ""]
    return lines


def _block_lines(drift, zero):
    """A[..., f, h] = ..., B[..., f, h] = ... for the nonzero blocks of a Drift."""
    slot, lines = _slots(drift_engine.families(drift.rule)), []
    for label, blocks in (("A", drift.A), ("B", drift.B)):
        for (f, h), ms in sorted(blocks.items()):
            expr = _einsum_lines(ms, zero, "ka", batched=True)
            if expr != "0.0":
                lines.append(f"    {label}[..., {slot[f]}, {slot[h]}] = {expr}")
    return lines


def _noise_function(d, name, noise, bias=False):
    """noise_<rule> (per atom, from S_j) or spike_noise_<rule> (per pair of spikes, from theta);
    bias=True: the same with a trained encoder bias b (averages over N(b, Q), named *_bias)."""
    zero = set() if d.smoothed or bias else _zero_kernels(d)
    arrays = _numeric_kernel_arrays(bool(d.smoothed), shifted=True) if bias else \
        _numeric_kernel_arrays(smoothed=True) if d.smoothed else None
    suffix, bias_arg, bias_doc = ("_bias", ", b", "\nb (..., K): the encoder bias (fields lambda ~ N(b, Q)).") if bias \
        else ("", "", "")
    monomials = noise.monomials()
    fams = drift_engine.families(noise.rule)
    F = "2 * K" if len(fams) == 2 else "K"
    slot = _slots(fams)
    if noise.cross:
        head = [f"def spike_noise_{name}{suffix}(Q, R, T, T0, WW, lr, D, theta, rho_hat, rho_eye{bias_arg}):",
                *_doc(f"Rule {name!r}: N_jj2 = D E[d theta_j d theta_j2^T] per unit of time for two spikes j, j2 "
                      "(derive.finite, cross=True),\n"
                      "whose covariance, N_jj2 minus (d theta_j/dt)(d theta_j2/dt)^T / D, drives their fluctuations.\n"
                      "theta (..., J, F): "
                      f"the spikes' direction vectors; rho_hat (J,): rho_j/D; rho_eye (J, J): diag(rho_j). "
                      f"Returns (..., J, J, {F}, {F}).{bias_doc}"),
                *_preamble(monomials, zero, arrays)]
        head += [f"    theta_{f} = theta[..., {slot[f]}]" for f in fams]
        head.append(f"    N = numpy.zeros(theta.shape[:-1] + theta.shape[-2:-1] + ({F}, {F}))")
        output, free = "jikl", finite_engine.FREE_CROSS
    else:
        head = [f"def noise_{name}{suffix}(Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho{bias_arg}):",
                *_doc(f"Rule {name!r}: N_j = D sum_(tau in atom j) E[d theta_tau d theta_tau^T], the second-order (lr^2)\n"
                      "terms of dS_j/dt = M_j S_j + S_j M_j^T + N_j (derive.finite). S (..., J, F, F): per-atom matrices;\n"
                      f"rho_hat (J,): rho_j/D; m_rho (J,): multiplicity times rho_j. Returns (..., J, {F}, {F}).{bias_doc}"),
                *_preamble(monomials, zero, arrays)]
        head += [f"    S_{f}{h} = S[..., {slot[f]}, {slot[h]}]" for f in fams for h in fams]
        head.append(f"    N = numpy.zeros(S.shape[:-2] + ({F}, {F}))")
        output, free = "jkl", finite_engine.FREE
    lines = head
    for (f, h), ms in sorted(noise.N.items()):
        expr = _einsum_lines(ms, zero, output, batched=True, free=free)
        if expr != "0.0":
            lines.append(f"    N[..., {slot[f]}, {slot[h]}] = {expr}")
    lines += ["    return lr**2 * N", "", ""]
    return lines


def _bias_noise_function(d, name, noise):
    """bias_noise_<rule>: D E[db db^T] and D E[db d theta_j^T] for the spikes j (derive.finite)."""
    fams = drift_engine.families(noise.rule)
    F = "2 * K" if len(fams) == 2 else "K"
    slot = _slots(fams)
    lines = [f"def bias_noise_{name}(Q, R, T, T0, WW, lr, D, b, theta, rho_hat):",
             *_doc(f"Rule {name!r} with a trained encoder bias b (..., K): Nbb = D E[db_k db_l] (..., K, K) and\n"
                   "Nbt = D E[db_k d theta_j^T] (..., J, K, F) per unit of time for the spikes' direction vectors\n"
                   "theta (..., J, F), rho_hat (J,) = rho_j/D (derive.finite.derive_bias_noise). Their covariance,\n"
                   "minus the product of the drifts over D, drives the fluctuations of b (runtime.fluctuations)."),
             *_preamble(noise.monomials(), set(), _numeric_kernel_arrays(bool(d.smoothed), shifted=True))]
    lines += [f"    theta_{f} = theta[..., {slot[f]}]" for f in fams]
    lines += [f"    Nbb = {_einsum_lines(noise.bb, set(), 'kl', batched=True, free=finite_engine.FREE)} + numpy.zeros(Q.shape)",
              f"    Nbt = numpy.zeros(theta.shape[:-1] + (K, {F}))"]
    for h, ms in sorted(noise.btheta.items()):
        expr = _einsum_lines(ms, set(), "jkl", batched=True, free=finite_engine.FREE)
        if expr != "0.0":
            lines.append(f"    Nbt[..., {slot[h]}] = {expr}")
    lines += ["    return lr**2 * Nbb, lr**2 * Nbt", "", ""]
    return lines


def _shifted_status(d):
    numeric = [shifted.name(k) for k, e in d.shifted.items() if e is None]
    if not numeric:
        return "every one in closed form (ndtr, bivariate normal CDF), derived by derive/shifted.py"
    return ("NUMERICAL (no closed form found): " + ", ".join(numeric) +
            " -- double-exponential quadrature with means, runtime/quadrature.py")


def _shifted_kernel_functions(d, printer):
    """shifted_mean_*(m, v) and shifted_pair_*(m1, m2, c11, c12, c22): averages over N(m, C)."""
    out = []
    for kernel, expr in d.shifted.items():
        args = [str(a) for a in shifted.args(kernel)]
        name = shifted.name(kernel)
        if expr is None:
            doc = f"{shifted.describe(kernel)}.\n\nNumerical: double-exponential quadrature (runtime/quadrature.py)."
            fn = "expect1" if len(kernel.orders) == 1 else "expect2"
            orders = ", ".join(repr(o) for o in kernel.orders)
            cov = args[1:] if len(args) == 2 else args[2:]
            out += [f"def {name}({', '.join(args)}):", *_doc(doc),
                    f"    return _quadrature.{fn}(DERIVATIVES, {orders}, {', '.join(cov + args[:len(args) - len(cov)])})",
                    "", ""]
        else:
            doc = f"{shifted.describe(kernel)}.\n\n= {_formula(expr)}"
            out += _function(name, args, doc, expr, printer, rewrite=False)
    return out


def _shifted_zero(d):
    return {k.name for k, e in d.shifted.items() if e is not None and e == 0}


def _shifted_kernel_arrays(monomials, zero):
    names = sorted(drift_engine.kernel_names(monomials) - zero)
    lines = []
    for n in names:
        call = (f"shifted_{n}(b, q)" if n.startswith("mean_") else
                f"shifted_{n}(b[..., :, None], b[..., None, :], q[..., :, None], Q, q[..., None, :])")
        lines.append(f"    {n}_ = {call}")
    return lines


def _shifted_error_function(d):
    zero = _shifted_zero(d)
    return [
        "def _population_error_shifted(Q, R, T0, b, half_trace):",
        *_doc("population_error with an encoder bias b (..., K): the same monomials, kernels over lambda ~ N(b, Q)."),
        "    Q, R, T0, b = (numpy.asarray(a, dtype=float) for a in (Q, R, T0, b))",
        "    q = numpy.diagonal(Q, axis1=-2, axis2=-1)",
        *_shifted_kernel_arrays(d.error, zero),
        f"    return half_trace + {_einsum_lines(d.error, zero, '', batched=True)}",
        "", "",
    ]


def _bias_drift_function(d, name, bias_drift):
    zero = _shifted_zero(d)
    drift = bias_drift.drift
    monomials = bias_drift.monomials()
    lines = [
        f"def drift_{name}_bias(Q, R, T, T0, b, lr):",
        *_doc(f"Rule {name!r} with a trained encoder bias b (..., K), lambda_k = w_k.x/sqrt(D) + b_k.\n\n"
              "As drift_" + name + " with kernels over lambda ~ N(b, Q) (derive.drift.derive_bias_drift),\n"
              "and db_k/dt. Returns (A, B, db) of shapes (..., 2K, 2K), (..., 2K, 2K), (..., K)."),
        *_preamble(monomials, zero, _shifted_kernel_arrays),
    ]
    lines += ["    A = numpy.zeros(Q.shape[:-2] + (2 * K, 2 * K))", "    B = numpy.zeros(Q.shape[:-2] + (2 * K, 2 * K))"]
    lines += _block_lines(drift, zero)
    lines += [f"    db = {_einsum_lines(bias_drift.db, zero, 'k', batched=True)} + numpy.zeros(b.shape)",
              "    return lr * A, lr * B, lr * db", "", ""]
    return lines


def _literature_function(name, dim, formula, printer):
    entries = [stein.cov(i, j) for i in range(1, dim + 1) for j in range(i, dim + 1)]
    unpack = ", ".join(str(e) if e in formula.free_symbols or e == entries[0] else "_" for e in entries)
    doc = (f"{name} = {_LITERATURE_DOC[name]} for x ~ N(0, C), C of shape (..., {dim}, {dim}).\n\n"
           f"Stein: {name} = {_formula(formula)}")
    lines, reduced = _body(formula, printer)
    return [f"def {name}(C):", *_doc(doc),
            f"    {unpack} = _covariance(C, {dim}, {name!r})",
            *lines,
            f"    return _broadcast({printer.doprint(reduced)}, c11)", "", ""]


def package_init(names) -> str:
    """generated/__init__.py: the list of modules and `load(name)`."""
    return "\n".join([
        f"# Generated by `{COMMAND}`: do not edit.",
        '"""One module per activation; `load(name)` imports one by name."""',
        "import importlib",
        "",
        f"ACTIVATIONS = {tuple(sorted(names))!r}",
        "",
        "",
        "def load(name):",
        '    """The generated module of activation `name`; unknown names list the available ones."""',
        "    if name not in ACTIVATIONS:",
        "        raise ValueError(f\"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}\")",
        "    return importlib.import_module(f\"generated.{name}\")",
        "",
    ])
