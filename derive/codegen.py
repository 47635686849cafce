"""Write generated/NAME.py for an activation: kernels, literature averages, (later) equations.

One clear step from expression to code, as SymPy's lambdify: `guard` the expression for the
edges, common-subexpression-eliminate it, print it with numpy. Output is deterministic.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import sympy as sp
from sympy.core.function import AppliedUndef

from derive import assembly
from derive import gaussian as G
from derive import rules, shifted, smoothing, stein
from derive.activations import Activation, x
from derive.kernels import BASE, Kernel, derive_kernel, from_name, with_constant_unit
from derive.printer import NumpyPrinter, absolute_bvns, distribute, guard, rewrite_asin
from runtime import fast_kernels

COMMAND = "make derive  (python -m derive)"
MAX_DERIVATIVE = 5


@dataclass
class Derivation:
    """Everything derived for one activation (the rules' equations are derive.assembly's, shared)."""

    activation: Activation
    g: sp.Expr
    kernels: dict = field(default_factory=dict)       # Kernel -> closed form or None (numeric)
    literature: dict = field(default_factory=dict)    # name -> (dim, formula in kernel calls), g's own
    derivatives: list = field(default_factory=list)   # printable g, g', g'', ...
    finite_missing: str = ""                          # why there are no finite-D equations
    shifted: dict = field(default_factory=dict)       # Kernel -> closed form over N(m, C) or None
    bias_noise_missing: str = ""                      # why there are no finite-D equations with a bias
    smoothed: list = field(default_factory=list)      # g_eps, g_eps', ... where g'' is a delta
    homogeneity: int = None                           # k with g_(lam eps)(lam x) = lam^k g_eps(x), or None
    inner: dict = field(default_factory=dict)         # orders on one unit -> E[prod g^(a)(m + sqrt(v) z)], closed

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


def _averages_of(prefixes):
    """The kernels (mean_*, pair_*) that generated/rules.py's functions starting with `prefixes` read."""
    return {from_name(n) for f, names in assembly.table().items() if f.startswith(prefixes)
            for n in names if not n.startswith("multi_")}


def derive_all(activation: Activation) -> Derivation:
    g = G.normalize(activation.bound())
    d = Derivation(activation, g)
    for order in range(MAX_DERIVATIVE + 1):
        gd = G.normalize(sp.diff(g, x, order))
        if gd.has(sp.DiracDelta):
            break
        d.derivatives.append(gd)
    shared = assembly.shared_literature()
    for name, (dim, integrand) in stein.LITERATURE.items():
        if name in shared:
            continue
        try:
            d.literature[name] = (dim, stein.average(integrand, dim, g))
        except G.NoClosedForm:
            continue
    wanted = set(BASE) | _averages_of(("drift_", "population_error"))
    for _, formula in list(shared.values()) + list(d.literature.values()):
        wanted |= kernel_calls(formula)
    needed = max(a for name in assembly.multi_averages(("noise_", "spike_noise_"))
                 for unit in assembly.orders(name) for a in unit)
    if needed >= len(d.derivatives):
        if smoothing.resolved_kinks(g):
            g_eps = smoothing.smoothed(g)
            d.smoothed = [sp.diff(g_eps, x, order) for order in range(MAX_DERIVATIVE + 1)]
            d.homogeneity = smoothing.homogeneity(g_eps)
        else:
            d.finite_missing = (f"the finite-D equations average g^({needed}) over several units "
                                f"numerically, but g^({len(d.derivatives)}) is not a function")
    if not d.smoothed and not d.finite_missing:
        wanted |= _averages_of(("finite_drift_", "noise_", "spike_noise_"))
    for kernel in sorted(with_constant_unit(wanted)):
        d.kernels[kernel] = derive_kernel(g, kernel)
    for kernel in sorted(with_constant_unit(set(BASE) | _averages_of(("bias_drift_", "population_error")))):
        d.shifted[kernel] = shifted.derive_kernel(d.g, kernel)
    if not d.smoothed and not d.finite_missing and d.polynomial_degree is None:
        # the innermost unit's conditional average in runtime.quadrature.expect_units' three-unit rules:
        # a shifted mean, E[prod_a g^(a)(m + sqrt(v) z)], where the engine has it in closed form, for the
        # orders a unit of three carries (at most two factors: four slots on three units)
        for orders in assembly.unit_orders(("finite_drift_", "noise_", "spike_noise_", "bias_noise_"), units=3):
            closed = shifted.derive_kernel(d.g, Kernel((orders,)))
            if closed is not None:
                d.inner[orders] = closed
    if d.finite_missing:
        d.bias_noise_missing = f"no finite-D equations ({d.finite_missing})"
    return d


def _horner_in_g(g, gd):
    """g^(n) in Horner form where it is a polynomial of degree >= 3 in g = f(x) itself (tanh's:
    2 tanh^3 - 2 tanh = tanh (2 tanh^2 - 2)), printed as written: no power above 2, which numpy
    takes ~20x longer than a product (1e6 points: tanh's g'' 90 ms as powers); else gd."""
    if not (isinstance(g, sp.Function) and g.args == (x,)):
        return gd
    y = sp.Dummy("y")
    p = gd.subs(g, y)
    if p.has(x) or not p.is_polynomial(y) or sp.degree(p, y) < 3:
        return gd
    return sp.horner(p, wrt=y).subs(y, g)


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


# ----------------------------------------------------------------------------------------

_DERIVATIVE_NAMES = ["g", "dg", "d2g", "d3g", "d4g", "d5g"]
def _body(exprs, printer, indent="    ", rewrite=True):
    """Lines computing the expressions `exprs` with their common subexpressions hoisted, and the
    reduced expressions (rewrite=False: keep each expression's own form -- no asin rewrite, no deep
    distribution of fractions -- as the shifted kernels need, see derive.shifted)."""
    exprs = [absolute_bvns(guard(distribute(rewrite_asin(e)) if rewrite else e)) for e in exprs]
    temps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"), optimizations=None)
    lines = [f"{indent}{t} = {printer.doprint(e)}" for t, e in temps]
    return lines, reduced


def _function(name, args, doc, expr, printer, rewrite=True, prelude=()):
    lines, (reduced,) = _body([expr], printer, rewrite=rewrite)
    lines.append(f"    return _broadcast({printer.doprint(reduced)}, {', '.join(args)})")
    return [f"def {name}({', '.join(args)}):", *_doc(doc), *prelude, *lines, "", ""]


def _joint_function(name, args, doc, exprs, printer, rewrite=True):
    """One function returning the tuple of `exprs`, their common subexpressions computed once."""
    lines, reduced = _body(exprs, printer, rewrite=rewrite)
    values = ", ".join(f"_broadcast({printer.doprint(r)}, {', '.join(args)})" for r in reduced)
    return [f"def {name}({', '.join(args)}):", *_doc(doc), *lines, f"    return ({values},)", "", ""]


def _in_ndtr(expr):
    """erfc(a) = 2 Phi(-sqrt(2) a): the smoothed kinks in the normal CDF Phi (ndtr) of x/epsilon."""
    return expr.replace(sp.erfc, lambda a: 2 * shifted.ndtr(-sp.sqrt(2) * a))


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
              "NUMERICAL kernels (no closed form found), by runtime.averages.numerical_kernels:" +
              _methods(d.numeric))
    out = [
        f"# Generated by `{COMMAND}` from derive/: do not edit.",
        f"# Activation {act.name}: g(x) = {sp.sstr(act.expr)}" + (f" with {params}" if params else ""),
        f"# Kernels: {status}.",
        "# Equations of motion: generated/rules.py (the same for every activation) read with this module's averages "
        "(runtime/averages.py).",
        "# Finite-D equations: " + ("averages over several units (multi_*) NUMERICAL, by double-exponential "
                                    "quadrature per unit, pair or triple of units (runtime/quadrature.py, "
                                    "expect_units; K <= 3; three-unit accuracy in runtime/quadrature.py at N_TRIPLE)"
                                    + ("; over three units the innermost one's conditional average in closed form "
                                       f"(inner_means: {len(d.inner)} orders, derive/shifted.py)." if d.inner else ".")
                                    if not d.finite_missing else
                                    f"none ({d.finite_missing})."),
        *([f"# Finite-D equations: g'' is a delta, so their O(1/D) terms and second-order noise are NUMERICAL "
           f"averages over the Gaussian-smoothed g_eps (SMOOTHED, eps = SMOOTHING = {smoothing.EPSILON}, "
           "Richardson-extrapolated to eps -> 0, O(eps^2); derive/smoothing.py); their D^0 terms are the exact "
           "drift_<rule>."] if d.smoothed else []),
        f"# Shifted kernels (trained bias): {_shifted_status(d)}.",
        *(["# Finite-D equations with a trained bias (BIAS_NOISE): their second-order noise averages over "
           "lambda ~ N(b, Q) are NUMERICAL (expect_units with means" + (", over the smoothed g_eps" if d.smoothed else
                                                                        "; exact Gauss-Hermite for a polynomial g") + "); "
           "the drift is the exact drift_<rule>_bias."] if not d.bias_noise_missing else
          [f"# Finite-D equations with a trained bias: none ({d.bias_noise_missing})."]),
        f'"""Gaussian averages of g(x) = {sp.sstr(d.g)} ({act.description}); the interface: generated/__init__.py."""',
        "import numpy",
        "import scipy.special",
        "",
        "from runtime import averages as _averages",
        "from runtime import integrate as _integrate",
        "from runtime.check import covariance as _covariance",
        "from runtime.elementwise import angle as _angle, arcsin as _arcsin, atan2 as _atan2, broadcast as _broadcast, det as _det, div as _div, power as _power, sqrt0 as _sqrt0",
        "from runtime.elementwise import bvn as _bvn, standardised as _standardised",
        "",
        f"NAME, EXPRESSION, PARAMS, POLYNOMIAL_DEGREE = {act.name!r}, {sp.sstr(d.g)!r}, {params!r}, "
        f"{d.polynomial_degree}",
        f"CLOSED_FORM, NUMERIC_KERNELS, SHIFTED_NUMERIC_KERNELS = {d.closed_form}, {tuple(d.numeric)!r}, "
        f"{tuple(shifted.name(k) for k, e in d.shifted.items() if e is None)!r}",
        f"LITERATURE, FINITE_MISSING, BIAS_NOISE_MISSING = "
        f"{tuple(assembly.shared_literature()) + tuple(d.literature)!r}, {d.finite_missing!r}, {d.bias_noise_missing!r}",
        "",
        "",
    ]
    horner = [_horner_in_g(d.g, gd) for gd in d.derivatives]
    out += _functions([(_DERIVATIVE_NAMES[order], ["x"], f"g^({order})(x) = {sp.sstr(gd)}", printed)
                       for order, (gd, printed) in enumerate(zip(d.derivatives, horner))], printer,
                      as_written=[_DERIVATIVE_NAMES[o] for o, (gd, h) in enumerate(zip(d.derivatives, horner)) if h != gd])
    out += [f"DERIVATIVES = ({', '.join(_DERIVATIVE_NAMES[:len(d.derivatives)])},)", "", ""]
    if d.smoothed:
        names = [n + "_smoothed" for n in _DERIVATIVE_NAMES[:len(d.smoothed)]]
        out += _functions([(name, ["x", "epsilon"], f"g_eps^({order})(x), g smoothed over N(0, epsilon^2) "
                            "(derive/smoothing.py)", _in_ndtr(gd)) for order, (name, gd) in enumerate(zip(names, d.smoothed))],
                          printer)
        out += _joint_function("smoothed_derivatives", ["x", "epsilon"],
                               f"(g_eps, g_eps', ..., g_eps^({len(d.smoothed) - 1}))(x) in one pass, the factors they share\n"
                               "(the Gaussian and the normal CDF of x/epsilon) computed once (runtime/quadrature.py).",
                               [_in_ndtr(gd) for gd in d.smoothed], printer)
        out += [f"SMOOTHED = ({', '.join(names)},)", f"SMOOTHING = {float(smoothing.EPSILON)!r}",
                "#: k with g_(lam eps)(lam x) = lam^k g_eps(x), or None: where it is set, both widths of the "
                "Richardson step come",
                "#: from one quadrature (runtime.quadrature.smoothed_units)",
                f"HOMOGENEITY = {d.homogeneity!r}", "", ""]
    powers = {k.name: _powers(e) for k, e in d.kernels.items() if e is not None and len(k.orders) == 2}
    out += _functions([(k.name, [str(a) for a in k.args], f"{k.describe()}.\n\n= {_formula(powers.get(k.name) or e)}",
                        powers.get(k.name) or _at_zero_variance(d.g, k, e)) for k, e in d.kernels.items()
                       if e is not None], printer, as_written={n for n, f in powers.items() if f is not None})
    out += _shifted_functions(d, printer)
    if d.inner:
        out += _joint_function("inner_means", ["m", "v"],
                               "E[prod_a g^(a)(x)], x ~ N(m, v), for each orders a of INNER_ORDERS, in closed form "
                               "(derive/shifted.py),\nin one pass: the innermost level of runtime.quadrature.expect_units' "
                               "three-unit rules.", list(d.inner.values()), printer, rewrite=False)
        out += [f"INNER_ORDERS = {tuple(d.inner)!r}", "", ""]
    out += _numeric_kernels(d.numeric, [shifted.name(k) for k, e in d.shifted.items() if e is None])
    for name, (dim, formula) in d.literature.items():
        out += _literature_function(name, dim, formula, printer)
    shared = tuple(assembly.shared_literature())
    limits = [n for n in rules.RULES if assembly.limit_drift(n) is not None]
    biased = [n for n in rules.RULES if assembly.bias_equations(n) is not None]
    out += [
        "#: the equations of motion and the literature's averages of generated/rules.py, read with this module's",
        "#: kernels and averages (runtime/averages.py)",
        "DRIFTS, BIAS_DRIFTS, FINITE, SPIKE_NOISE, BIAS_NOISE = _averages.Equations(globals()).tables()",
        "#: the learning rules' shared equations read here: generated/rules.py (derive.build: derived in memory)",
        "RULES_MODULE = _averages.Equations(globals()).rules",
        f"{', '.join([f'drift_{n}' for n in limits] + [f'drift_{n}_bias' for n in biased])} = "
        f"{', '.join([f'DRIFTS[{n!r}]' for n in limits] + [f'BIAS_DRIFTS[{n!r}]' for n in biased])}",
        f"{', '.join(shared)}, population_error, population_error_tied = _averages.Equations(globals()).averages"
        f"{shared!r}",
        "#: runtime.integrate.integrate for this activation, with its signature and docstring",
        "integrate = _integrate.bind(globals())",
    ]
    return "\n".join(out).rstrip() + "\n"


def _what(doc):
    """What a function of a docstring `doc` averages or is (its first line, without the distribution)."""
    return doc.split("\n")[0].rstrip(".").split(", (x1, x2) ~")[0].split(", x ~")[0]


def _powers(expr):
    """A pair kernel whose factored form holds a polynomial to a power beyond the square root
    (erf: pi det(1 + C)^(5/2)) in that factored form, printed as written; else None (expanded, the
    power would print as dozens of terms)."""
    factored = sp.factor(expr)
    if any(p.base.is_Add and p.exp.is_Rational and p.exp.q == 2 and abs(p.exp) > 1 for p in factored.atoms(sp.Pow)):
        return factored
    return None


def _functions(items, printer, rewrite=True, prelude=None, as_written=()):
    """A function per (name, args, doc, expression); those whose expression is a number share
    one line per value, `name1 = name2 = _averages.constant(value)`, and one whose expression is
    another's (sin: E[g^(4)(x1) g''(x2)] = E[g''(x1) g(x2)]) is that function, `name = other`."""
    constants, same, out = {}, {}, []
    for name, args, doc, expr in items:
        if expr.is_number:
            constants.setdefault(expr, []).append(name)
        elif (tuple(args), expr) in same:
            same[tuple(args), expr].append((name, _what(doc)))
        else:
            same[tuple(args), expr] = [(name, _what(doc))]
            out += _function(name, args, doc, expr, printer, rewrite=rewrite and name not in as_written,
                             prelude=(prelude or {}).get(name, ()))
    for (first, what), *others in (group for group in same.values() if len(group) > 1):
        out += [f"#: {'; '.join(f'{n} = {w}' for n, w in others)}: the closed form of {first}, {what}",
                f"{' = '.join(n for n, _ in others)} = {first}", "", ""]
    for value, names in constants.items():
        out += [f"#: the constant {sp.sstr(value)}", f"{' = '.join(names)} = _averages.constant({sp.pycode(value)})",
                "", ""]
    return out


def _numeric_kernels(names, shifted_names):
    """One call binding the kernels without a closed form, NUMERIC_KERNELS and SHIFTED_NUMERIC_KERNELS
    (runtime.averages.numerical_kernels), a comment line per family saying how it evaluates them."""
    tables = [t for t, ns in (("NUMERIC_KERNELS", names), ("SHIFTED_NUMERIC_KERNELS", shifted_names)) if ns]
    if not tables:
        return []
    families = dict.fromkeys(fast_kernels.family(n) for n in [*names, *shifted_names])
    return ["#: the kernels without a closed form, over DERIVATIVES (runtime/averages.py, numerical_kernels):",
            *[f"#: {f}_* by {fast_kernels.METHODS[f]}" for f in families],
            f"{', '.join([*names, *shifted_names])}, = _averages.numerical_kernels(DERIVATIVES, {' + '.join(tables)})",
            "", ""]


def _shifted_status(d):
    numeric = [shifted.name(k) for k, e in d.shifted.items() if e is None]
    if not numeric:
        return "every one in closed form (ndtr, bivariate normal CDF), derived by derive/shifted.py"
    return "NUMERICAL (no closed form found), by runtime.averages.numerical_kernels:" + _methods(numeric)


def _methods(names):
    """The kernels `names` grouped by family, each with the method that evaluates it
    (runtime.fast_kernels.METHODS, what runtime.averages.numerical_kernels does)."""
    families = {}
    for n in names:
        families.setdefault(fast_kernels.family(n), []).append(n)
    return ";".join(f"\n#   {', '.join(ns)} by {fast_kernels.METHODS[f]}" for f, ns in families.items())


#: the standardised means, correlation and conditional means of (x1, x2) ~ N((m1, m2), C), computed
#: once per shifted pair kernel by runtime.elementwise.standardised (the same definitions)
_H1, _H2, _RHO, _K1, _K2 = sp.symbols("h1 h2 r k1 k2", real=True)


def _standardisation():
    s1, s2, sd = sp.sqrt(G.c11), sp.sqrt(G.c22), sp.sqrt(G.c11 * G.c22 - G.c12 ** 2)
    m1, m2 = shifted.m1, shifted.m2
    return {_H1: m1 / s1, _H2: m2 / s2, _RHO: G.c12 / (s1 * s2),
            _K1: (G.c22 * m1 - G.c12 * m2) / (s2 * sd), _K2: (G.c11 * m2 - G.c12 * m1) / (s1 * sd)}


def _standardised(expr):
    """expr with the arguments of its normal CDFs (ndtr, bvn), +-h1, +-h2, +-r, +-k1, +-k2, and of
    its normal densities, exp(-h^2/2), written in those symbols (runtime.elementwise.standardised)."""
    table = _standardisation()

    def argument(a):
        for symbol, value in table.items():
            for sign in (1, -1):
                if sp.expand(a - sign * value) == 0:
                    return sign * symbol
        return a

    def exponent(a):
        for symbol, value in table.items():
            if symbol != _RHO and sp.expand(a + value ** 2 / 2) == 0:
                return -symbol ** 2 / 2
        return a
    expr = expr.replace(lambda e: isinstance(e, (shifted.bvn, shifted.ndtr)),
                        lambda e: e.func(*(argument(a) for a in e.args)))
    return expr.replace(lambda e: isinstance(e, sp.exp), lambda e: sp.exp(exponent(e.args[0])))


def _shifted_functions(d, printer):
    """The shifted kernels in closed form; the pair kernels in the standardised means, correlation
    and conditional means of their Gaussian, from one call (runtime.elementwise.standardised)."""
    items = [(shifted.name(k), [str(a) for a in shifted.args(k)], f"{shifted.describe(k)}.\n\n= {_formula(e)}",
              _standardised(e) if len(k.orders) == 2 else e) for k, e in d.shifted.items() if e is not None]
    symbols = tuple(_standardisation())
    unpack = [f"    {', '.join(map(str, symbols))} = _standardised({', '.join(map(str, shifted.args(Kernel(((0,), (0,))))))})"]
    return _functions(items, printer, rewrite=False,
                      prelude={n: unpack for n, _, _, e in items if e.has(*symbols)})


def _literature_function(name, dim, formula, printer):
    """A literature average of g's own (its Stein reduction uses g, derive.stein)."""
    lines, (reduced,) = _body([formula], printer)
    return [f"def {name}(C):", *_doc(assembly.literature_doc(name, dim, _formula(formula))),
            f"    {assembly.literature_unpack(dim, formula)} = _covariance(C, {dim}, {name!r})",
            *lines,
            f"    return _broadcast({printer.doprint(reduced)}, c11)", "", ""]


def package_init(names) -> str:
    """generated/__init__.py: the list of modules and `load(name)`."""
    return "\n".join([
        f"# Generated by `{COMMAND}`: do not edit.",
        '"""One module per activation (generated/NAME.py); `load(name)` imports one by name.',
        "",
        "A module holds what depends on its g: the derivatives g, dg, ..., the kernels mean_*, pair_* (and",
        "shifted_* over N(m, C)), and the literature's averages of its own (I4). What does not, the rules'",
        "equations and the Stein reductions of J2, I2, I21, I22, I3, is generated/rules.py, bound to the",
        "module's kernels by runtime/averages.py (DRIFTS, FINITE, SPIKE_NOISE, BIAS_DRIFTS, BIAS_NOISE,",
        "population_error, population_error_tied, J2 ...). Kernels take arrays that broadcast and are not",
        "validated (hot path); the literature's averages take covariances of shape (..., n, n), validate",
        "them, and return arrays of shape (...).",
        '"""',
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
