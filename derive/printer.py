"""Expression -> numpy source, with the edges of the PSD cone handled (see runtime.elementwise).

`guard` rewrites an expression so that every division whose denominator may vanish becomes
`div(num, den)`, every radical whose radicand may be (rounded) negative becomes `sqrt0`, and
every asin clips its argument; `NumpyPrinter` prints the result. Positivity is decided with
the covariance symbols taken as merely non-negative, so 1/c11 is guarded but 1/(1 + c11) is not.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import SciPyPrinter


class div(sp.Function):
    """a / b with 0/0 -> 0."""


class sqrt0(sp.Function):
    """sqrt(max(a, 0))."""


class det(sp.Function):
    """det(c11, c12, c22) = c11 c22 - c12^2, 0 where bvn takes the correlation as +-1
    (runtime.elementwise.det)."""


class arcsin(sp.Function):
    """asin(clip(a, -1, 1))."""


class atan2(sp.Function):
    """numpy.arctan2(y, x)."""


class angle(sp.Function):
    """pi/2 + atan2(c, s) for s >= 0, computed as atan2(s, -c) (pi/2 at c = s = 0)."""


class log_ndtr(sp.Function):
    """log Phi(h), printed scipy.special.log_ndtr (accurate however small Phi(h) is)."""


class erfcx(sp.Function):
    """erfcx(u) = exp(u^2) erfc(u), printed scipy.special.erfcx."""


class tilted_bvn(sp.Function):
    """tilted_bvn(h, k, rho, a[, a - q/2]) = exp(a) bvn(h, k, rho), printed _bvn(h, k, rho, a[, a - q/2])
    (runtime.elementwise.bvn's tilt and scaled_tilt)."""


class absolute_bvn(sp.Function):
    """bvn(h, k, rho) to ~1e-16 absolutely, printed _bvn(h, k, rho, absolute=True): Owen's formula
    without runtime.elementwise.bvn's tail rule (relative accuracy below 1e-4 at ~5 us a point), for a
    bvn with a numeric coefficient in a sum with a constant term (erf: E[erf(x) erf(y)] =
    4 bvn - 2 Phi - 2 Phi + 1), whose own rounding, ~1e-16, the tail rule cannot improve."""


def absolute_bvns(expr):
    """expr with each bvn that is a term (times a number) of a sum with a nonzero constant term as
    absolute_bvn."""
    from derive import shifted

    def absolute(term):
        coefficient, factor = term.as_coeff_Mul()
        return coefficient * absolute_bvn(*factor.args) if isinstance(factor, shifted.bvn) else term

    def qualifies(e):        # (only these are rebuilt: the rest keeps its unevaluated guards, Max(0, ...))
        return e.is_Add and any(a.is_Number for a in e.args) and any(absolute(a) != a for a in e.args)
    return sp.sympify(expr).replace(qualifies, lambda e: sp.Add(*map(absolute, e.args)))


# ----------------------------------------------------------------------------------------
# Exp-tilted tail probabilities: exp(a) Phi(h), exp(a) bvn(h, k, rho)
#
# Completing the square (derive/shifted.py's tilt) turns E[e^x H(-x)] into e^(v/2) Phi(-sqrt v),
# and ELU's pair kernels into e^(c11/2 + c12 + c22/2) bvn(...): at variances of a few hundred
# the exponential overflows and the probability underflows, inf * 0. `stable_tails` gathers each
# such product, whose exponent is not known to be <= 0 (a Gaussian density times a CDF, as ReLU's
# are, stays as it is), into one factor evaluated stably:
#
# * exp(a) Phi(h) with a - h^2/2 = d <= 0 (known): exp(d) erfcx(-h/sqrt 2)/2, exact
#   (e^(v/2) Phi(-sqrt v) = erfcx(sqrt(v/2))/2), for h < 0 where the sign of h is not known
#   (a mean in h: exp(a + log_ndtr(h)) for h >= 0, where log_ndtr(h) ~ 0 is exact);
# * otherwise exp(a + log_ndtr(h)) (erfc(u) = 2 Phi(-sqrt 2 u) likewise), the relative error then
#   ~1e-16 |a|;
# * exp(a) bvn(h, k, rho) as tilted_bvn: exp(a + log bvn), and in the tail exp(a - q/2) times the
#   scaled CDF bvn e^(q/2), q/2 the Gaussian exponent at (h, k), with a - q/2 worked out here
#   (0 for ELU: the tilted Gaussian's density is largest at the orthant's corner) -- no cancellation.


def _nonnegative_version(expr):
    """Replace positive symbols by nonnegative ones (a variance may be exactly zero)."""
    return expr.xreplace({s: sp.Symbol(s.name, nonnegative=True) for s in expr.free_symbols if s.is_positive})


def _known_positive(expr):
    return bool(_nonnegative_version(expr).is_positive)


def _known_nonnegative(expr):
    return bool(_nonnegative_version(expr).is_nonnegative)


def rewrite_asin(expr):
    """asin(n/sqrt(X)) -> atan2(n, sqrt(X - n^2)), or -> angle(n, sqrt(X - n^2)) - pi/2 when that
    form makes the expression shorter (ReLU: c12 (pi/2 + asin) = c12 angle(c12, sqrt(det)), free
    of the cancellation near correlation -1). Exact for X > 0; at X = 0 the correlation is 0."""
    candidates = [expr]
    for shifted in (False, True):
        def repl(e, shifted=shifted):
            num, den = sp.fraction(sp.together(e.args[0]))
            radicals = sp.Mul.make_args(den)
            if not all(f.is_Pow and f.exp == sp.S.Half for f in radicals):
                return e
            X = sp.expand(sp.Mul(*(f.base for f in radicals)) - num**2)
            return angle(num, sp.sqrt(X)) - sp.pi / 2 if shifted else atan2(num, sp.sqrt(X))
        candidates.append(sp.expand(expr.replace(lambda e: isinstance(e, sp.asin), repl), power_base=False))
    return min(candidates[1:], key=lambda e: (sp.count_ops(e), candidates.index(e)))


def distribute(expr):
    """Split each top-level fraction (a + b)/d into a/d + b/d, so that a term whose numerator
    vanishes on the boundary is 0 there (div's 0/0 -> 0) and does not poison the others."""
    out = sp.S.Zero
    for term in sp.Add.make_args(expr):
        num, den = sp.fraction(term)
        out += sp.Add(*(t / den for t in sp.Add.make_args(sp.expand_mul(num))))
    return out


def _tails():
    from derive import shifted, smoothing
    return (shifted.ndtr, shifted.bvn, sp.erfc, smoothing.erfc), (sp.exp, smoothing.exp)


def _known_nonpositive(expr):
    return bool(_nonnegative_version(expr).is_nonpositive)


def _radicals_positive(expr):
    """expr with its radicals (square roots of variances and determinants here) as positive symbols,
    to tell its sign."""
    return sp.sympify(expr).replace(lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer,
                                    lambda e: sp.Dummy(positive=True) ** sp.sign(e.exp))


def _exponent(factor, exps):
    """a for a factor exp(a) (or exp(a)^n: n a), else None."""
    if isinstance(factor, exps):
        return factor.args[0]
    if factor.is_Pow and isinstance(factor.base, exps) and factor.exp.is_Integer:
        return factor.exp * factor.base.args[0]
    return None


def _distribute_products(expr):
    """expr as a list of terms, products distributed over sums (function arguments left whole)."""
    if expr.is_Add:
        return [t for a in expr.args for t in _distribute_products(a)]
    if expr.is_Mul:
        terms = [sp.S.One]
        for f in expr.args:
            terms = [t * u for t in terms for u in _distribute_products(f)]
        return terms
    return [expr]


def stable_tails(expr):
    """expr with its products exp(a) * (normal CDF, erfc or bvn) in a stable form (see above), and
    products of several exponentials of derive.smoothing's (which SymPy does not merge: ELU's
    g_eps'' has e^(x + eps^2/2) e^(-x^2/(2 eps^2) - x - eps^2/2), inf * 0 for x > 709) as one."""
    expr = sp.sympify(expr)
    tails, exps = _tails()
    if expr.is_Atom or not expr.has(*exps):
        return expr
    if expr.is_Mul:
        exponents = [_exponent(f, exps) for f in expr.args]
        found = [a for a in exponents if a is not None]
        if found:
            exponent = sp.Add(*found)
            rest = sp.Mul(*(f for f, a in zip(expr.args, exponents) if a is None))
            if rest.has(*tails) and not _known_nonpositive(exponent):
                return sp.Add(*(_tilted(t, exponent) for t in _distribute_products(rest)))
            if len(found) > 1 and any(isinstance(f.base if f.is_Pow else f, exps[1:]) for f in expr.args):
                return stable_tails(rest) * sp.exp(exponent)
    return expr.func(*(stable_tails(a) for a in expr.args))


def _tilted(term, exponent):
    """term * exp(exponent), its exponentials and its tail probabilities in one stable factor."""
    from derive import shifted
    tails, exps = _tails()
    others, cdfs, bvns = [], [], []
    for f in sp.Mul.make_args(term):
        a = _exponent(f, exps)
        base, times = (f.base, int(f.exp)) if f.is_Pow and f.exp.is_Integer and f.exp > 0 else (f, 1)
        if a is not None:
            exponent += a
        elif isinstance(base, shifted.ndtr) and not base.args[0].is_number:
            cdfs += [base.args[0]] * times
        elif isinstance(base, (sp.erfc, *tails[3:])) and not base.args[0].is_number:
            cdfs += [-sp.sqrt(2) * base.args[0]] * times
            others.append(sp.Integer(2) ** times)
        elif isinstance(base, shifted.bvn):
            bvns += [base] * times
        else:
            others.append(stable_tails(f))
    rest = sp.Mul(*others)
    if (not cdfs and not bvns) or _known_nonpositive(exponent):
        tail = sp.Mul(*(shifted.ndtr(h) for h in cdfs), *bvns)
        return rest * tail * (sp.exp(exponent) if exponent != 0 else 1)
    if not bvns and len(cdfs) == 1:
        (h,) = cdfs
        d = sp.cancel(exponent - h ** 2 / 2)
        if _known_nonpositive(_radicals_positive(d)):
            scaled = sp.exp(d) * erfcx(sp.cancel(-h / sp.sqrt(2))) / 2
            if _known_nonpositive(_radicals_positive(h)):
                return rest * scaled
            # h of either sign: erfcx(-h/sqrt 2) overflows for h > 37, where log_ndtr(h) ~ 0 is exact; h = 0
            # (a determinant that is 0) by erfcx, whose exp(d) does not carry the rounding of exponent
            scaled = scaled.xreplace({scaled.atoms(erfcx).pop(): erfcx(sp.Max(sp.cancel(-h / sp.sqrt(2)), 0))})
            return rest * sp.Piecewise((scaled, h <= 0), (sp.exp(exponent + log_ndtr(h)), True))
    exponent = exponent + sp.Add(*(log_ndtr(h) for h in cdfs))
    if len(bvns) > 1:
        raise ValueError(f"a product of bivariate normal CDFs: {term}")
    if bvns:
        return rest * tilted_bvn(*bvns[0].args, *_scaled_exponent(exponent, *bvns[0].args))
    return rest * sp.exp(exponent)


def _scaled_exponent(exponent, h, k, rho):
    """(exponent, exponent - q/2) with q = (h^2 - 2 rho h k + k^2)/(1 - rho^2) worked out, if that is
    free of radicals (0 for ELU's tilts, minus a Gaussian density's exponent with means): bvn's
    scaled tilt; else (exponent,)."""
    unwrap = {e: e.args[0] / e.args[1] for e in sp.sympify(h + k + rho).atoms(div)}
    h, k, rho = (sp.sympify(a).xreplace(unwrap) for a in (h, k, rho))
    if exponent.has(log_ndtr) or not rho.has(sp.Symbol):
        return (exponent,)
    scaled = sp.factor(sp.cancel(sp.together(exponent - (h**2 - 2 * rho * h * k + k**2) / (2 * (1 - rho**2)))))
    if any(p.exp.is_Rational and not p.exp.is_Integer for p in scaled.atoms(sp.Pow)):
        return (exponent,)
    return exponent, scaled


def guard(expr):
    """Rewrite divisions, radicals and asin for evaluation on the boundary of the PSD cone, and
    exp-tilted tail probabilities in a stable form (`stable_tails`)."""
    return _singular_as_bvn(_guard(stable_tails(expr)))


def _singular_as_bvn(expr):
    """In an expression that calls bvn, sqrt0(c11 c22 - c12^2) -> sqrt0(det(c11, c12, c22)).

    bvn takes a correlation within rounding of +-1 as +-1; the expression's other terms must then
    see a zero determinant too, or terms that cancel each other do so only to the rounding of
    sqrt(det) (ELU's E[g''(x1) g(x2)] at variances 1e6 came out 20x its value)."""
    from derive import shifted
    from derive.gaussian import DET, c11, c12, c22
    if not expr.has(shifted.bvn, tilted_bvn, absolute_bvn) or not {c11, c12, c22} <= expr.free_symbols:
        return expr
    return expr.replace(lambda e: isinstance(e, sqrt0) and sp.expand(e.args[0] - DET) == 0,
                        lambda e: sqrt0(det(c11, c12, c22)))


def _guard(expr):
    expr = sp.sympify(expr)
    if expr.is_Atom:
        return expr
    if expr.is_Add:
        return sp.Add(*(_guard(a) for a in expr.args))
    if expr.is_Mul or (expr.is_Pow and expr.exp.is_negative):
        num, den = [], []
        for f in sp.Mul.make_args(expr):
            if f.is_Pow and f.exp.is_negative:
                den.append(sp.Pow(f.base, -f.exp))
            elif f.is_Rational and f.q != 1:
                num.append(sp.Integer(f.p))
                den.append(sp.Integer(f.q))
            else:
                num.append(f)
        if not den:
            return sp.Mul(*(_guard(f) for f in num))
        n, d = sp.Mul(*num), sp.Mul(*den)
        if _known_positive(d):
            return sp.Mul(*(_guard(f) for f in num)) / sp.Mul(*(_guard(f) for f in den))
        return div(_guard(n), _guard(d))
    if expr.is_Pow and not expr.exp.is_Integer:
        base = _guard(expr.base)
        if _known_nonnegative(expr.base):
            return sp.Pow(base, expr.exp)
        return sqrt0(base) if expr.exp == sp.S.Half else sp.Pow(sp.Max(base, 0), expr.exp)
    if isinstance(expr, sp.asin):
        return arcsin(_guard(expr.args[0]))
    return expr.func(*(_guard(a) for a in expr.args))


class NumpyPrinter(SciPyPrinter):
    """SciPy printer with the guarded helpers and kernel calls printed as plain names (or as
    `functions` maps them)."""

    def __init__(self, functions=()):
        names = {"div": "_div", "sqrt0": "_sqrt0", "det": "_det", "arcsin": "_arcsin", "atan2": "_atan2", "angle": "_angle",
                 "ndtr": "scipy.special.ndtr", "bvn": "_bvn",
                 "log_ndtr": "scipy.special.log_ndtr", "erfcx": "scipy.special.erfcx", "tilted_bvn": "_bvn"}
        names.update(functions if isinstance(functions, dict) else {f: f for f in functions})
        super().__init__({"fully_qualified_modules": True, "user_functions": names})

    def _print_absolute_bvn(self, expr):
        return f"_bvn({', '.join(map(self._print, expr.args))}, absolute=True)"

    def _print_Heaviside(self, expr):
        return f"numpy.heaviside({self._print(expr.args[0])}, 0.5)"

    def _print_Pi(self, expr):
        return "numpy.pi"

    def _print_Pow(self, expr, rational=False):
        """x**p for an integer p >= 3 or a half-integer p >= 3/2 as _power(x, p) (runtime.elementwise.power:
        multiplications instead of pow per element); every other power as SciPyPrinter prints it."""
        p = expr.exp
        if p.is_Number and (2 * p).is_Integer and p >= (3 if p.is_Integer else sp.Rational(3, 2)):
            return f"_power({self._print(expr.base)}, {self._print(sp.Float(p)) if not p.is_Integer else int(p)})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Max(self, expr):
        a, b = expr.args
        return f"numpy.maximum({self._print(a)}, {self._print(b)})"
