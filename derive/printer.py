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


class arcsin(sp.Function):
    """asin(clip(a, -1, 1))."""


class atan2(sp.Function):
    """numpy.arctan2(y, x)."""


class angle(sp.Function):
    """pi/2 + atan2(c, s) for s >= 0, computed as atan2(s, -c) (pi/2 at c = s = 0)."""


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


def guard(expr):
    """Rewrite divisions, radicals and asin for evaluation on the boundary of the PSD cone."""
    expr = sp.sympify(expr)
    if expr.is_Atom:
        return expr
    if expr.is_Add:
        return sp.Add(*(guard(a) for a in expr.args))
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
            return sp.Mul(*(guard(f) for f in num))
        n, d = sp.Mul(*num), sp.Mul(*den)
        if _known_positive(d):
            return sp.Mul(*(guard(f) for f in num)) / sp.Mul(*(guard(f) for f in den))
        return div(guard(n), guard(d))
    if expr.is_Pow and not expr.exp.is_Integer:
        base = guard(expr.base)
        if _known_nonnegative(expr.base):
            return sp.Pow(base, expr.exp)
        return sqrt0(base) if expr.exp == sp.S.Half else sp.Pow(sp.Max(base, 0), expr.exp)
    if isinstance(expr, sp.asin):
        return arcsin(guard(expr.args[0]))
    return expr.func(*(guard(a) for a in expr.args))


class NumpyPrinter(SciPyPrinter):
    """SciPy printer with the guarded helpers and kernel calls printed as plain names (or as
    `functions` maps them)."""

    def __init__(self, functions=()):
        names = {"div": "_div", "sqrt0": "_sqrt0", "arcsin": "_arcsin", "atan2": "_atan2", "angle": "_angle",
                 "ndtr": "scipy.special.ndtr", "bvn": "_bvn"}
        names.update(functions if isinstance(functions, dict) else {f: f for f in functions})
        super().__init__({"fully_qualified_modules": True, "user_functions": names})

    def _print_Heaviside(self, expr):
        return f"numpy.heaviside({self._print(expr.args[0])}, 0.5)"

    def _print_Pi(self, expr):
        return "numpy.pi"

    def _print_Max(self, expr):
        a, b = expr.args
        return f"numpy.maximum({self._print(a)}, {self._print(b)})"
