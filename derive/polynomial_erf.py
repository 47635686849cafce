"""Gaussian averages of polynomials times erf (and Gaussians): GELU, x erf(x), x^2 Phi(x).

`derive.gaussian` reduces an average to its primitive, E[z^n exp(A z^2 + B z)], by conditioning
and Price's theorem. A polynomial times erf(a x) is outside that class, and Price's recursion on
it ends in integrals SymPy does not do (GELU: every kernel numerical). This module takes the
class

    f(x) = sum_k  p_k(x) exp(A_k x^2 + B_k x) prod_j erf(a_jk x + b_jk)      (p_k polynomials)

with derive/shifted.py's reduction at mean zero: erf(a x + b) = 2 P(sqrt2 a x + sqrt2 b + Y > 0) - 1
with Y ~ N(0, 1) independent (a *step*), Gaussian factors absorbed into the covariance, Stein's
lemma E[x_i F] = sum_j C_ij E[d_j F] for the polynomial factors (the derivative of a step is
its density, which conditions the Gaussian), and what is left are orthant probabilities of at
most two steps:

* one step: P(u > 0) = Phi(h), h = E u / sd(u); at h = 0 (erf of a multiple of x) it is 1/2,
  otherwise (1 + erf(h / sqrt 2)) / 2;
* two steps with h1 = h2 = 0: P(u1 > 0, u2 > 0) = 1/4 + asin(rho) / (2 pi) (Sheppard), rho their
  correlation, bounded away from +-1 by the independent Y's. Two steps with a threshold (erf of
  affine arguments in both variables) are a bivariate normal CDF without an elementary form,
  and NoClosedForm.

E.g. E[x Phi(x)] over x ~ N(0, v) = v / sqrt(2 pi (1 + v)), and GELU's E[g(x1) g(x2)] is
c12/4 + c12 asin(c12 / sqrt((1 + c11)(1 + c22))) / (2 pi) + an algebraic term.

`applies(f)` says when the route is taken (derive.gaussian.one_point and two_point try it
first): an erf of a multiple of x in f and nothing outside the class (erf of an affine
argument stays on the former paths, see `applies`). Everything without erf keeps its former path and output; so does
erf(x/sqrt 2) (generated/erf.py comes out byte-identical, in a third of the time: the Price
route's sp.integrate and sp.simplify are not needed).
"""
from __future__ import annotations

import sympy as sp
from sympy.core import numbers

from derive import gaussian as G
from derive import shifted as S
from derive.activations import x

_ERF = (sp.erf, sp.erfc)


class MarkedPi(numbers.Pi):
    """pi, marking an expression as this route's: derive.gaussian.tidy then uses `tidy` below
    (targeted radical arithmetic) instead of sp.simplify, on the route's results and on the
    derivatives derive.kernels takes of them (Price, heat equation), which keep the constant.
    Prints as pi (derive.printer: numpy.pi); a result that is a number gets SymPy's pi back."""


PI = MarkedPi()


# erf of an affine argument, erf(a x + b) with b != 0, is left to the former paths: the route
# reduces its one-point averages (to erf(h / sqrt 2)) but not E[erf(.) erf(.)] (a bivariate
# normal CDF at non-zero thresholds), and with the former paths on the rest the derivation of
# erf(x + 1/2) took over 10 minutes instead of 13 s (its kernels numerical either way).


def applies(f) -> bool:
    """Whether f (an expression in x) is for this route: an erf (or erfc) of a multiple of x,
    times polynomials and Gaussian-type exponentials exp(quadratic) only."""
    f = sp.sympify(f)
    if not f.has(*_ERF) or f.has(sp.Heaviside, sp.DiracDelta, sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.sign):
        return False
    erfs = [e for e in f.atoms(*_ERF) if e.has(x)]
    if not erfs or any(not e.args[0].is_polynomial(x) or sp.degree(e.args[0], x) != 1
                       or sp.Poly(e.args[0], x).coeff_monomial(1) != 0 for e in erfs):
        return False              # only erf of a multiple of x (see above)
    if any(e.has(x) for e in f.atoms(sp.Function) - f.atoms(*_ERF) - f.atoms(sp.exp)):
        return False
    exponents = [sp.expand(e.args[0]) for e in f.atoms(sp.exp) if e.has(x)]
    return all(e.is_polynomial(x) and sp.degree(e, x) <= 2 for e in exponents)


def one_point(f, var=G.v):
    """E[f(x)], x ~ N(0, var), untidied (derive.gaussian.one_point tidies)."""
    Sigma = sp.Matrix([[var]])
    return _at_zero_mean(sp.Add(*(c * S._expect(t, (sp.S.Zero,), Sigma) for c, t in S._terms(f, 0, 1))))


def two_point(f1, f2):
    """E[f1(x1) f2(x2)], (x1, x2) ~ N(0, [[c11, c12], [c12, c22]]), untidied."""
    Sigma = sp.Matrix([[G.c11, G.c12], [G.c12, G.c22]])
    terms = [(c1 * c2, S._join(t1, t2)) for c1, t1 in S._terms(f1, 0, 2) for c2, t2 in S._terms(f2, 1, 2)]
    return _at_zero_mean(sp.Add(*(c * S._expect(t, (sp.S.Zero, sp.S.Zero), Sigma) for c, t in terms)))


def _ndtr(h):
    return sp.Rational(1, 2) if h == 0 else (1 + sp.erf(h / sp.sqrt(2))) / 2


def _orthant(h1, h2, rho):
    if h1 != 0 or h2 != 0:
        raise G.NoClosedForm(f"bivariate normal CDF at thresholds ({h1}, {h2})")
    return sp.Rational(1, 4) + sp.asin(rho) / (2 * sp.pi)


def _at_zero_mean(expr):
    """Replace derive.shifted's ndtr and bvn by their closed forms (or refuse), tidy radicals."""
    expr = expr.replace(lambda e: isinstance(e, S.ndtr), lambda e: _ndtr(sp.cancel(e.args[0])))
    expr = expr.replace(lambda e: isinstance(e, S.bvn),
                        lambda e: _orthant(*(sp.cancel(a) for a in e.args[:2]), e.args[2]))
    if expr.has(sp.I):
        raise G.NoClosedForm(f"complex result {expr}")
    return expr.xreplace({sp.pi: PI})


# ----------------------------------------------------------------------------------------
# Tidying without sp.simplify: group the terms by their transcendental factors (asin, erf, exp),
# and bring each group's algebraic coefficient to a normal form -- radicals sqrt(p) of
# irreducible polynomials p (and primes, and pi) as new symbols r with r^2 = p, one fraction
# whose denominator is rationalised (free of r) and whose numerator is reduced to degree <= 1
# in each r. The normal form is unique, so what cancels does (GELU's E[g''(x1) g(x2)] loses
# its asin term).

class _Fallback(Exception):
    """Outside what `tidy` normalises: derive.gaussian.tidy then simplifies as before."""


_PI = sp.Dummy("pi", positive=True)
_TEST_POINT = {G.c11: sp.Rational(7, 5), G.c22: sp.Rational(9, 7), G.c12: sp.Rational(1, 3),
               G.v: sp.Rational(11, 10), _PI: sp.Rational(22, 7)}


def _positive_at_test_point(p):
    """Whether the polynomial p is positive at a point inside the covariance cone (its sign there
    orients an irreducible radicand)."""
    value = p.subs(_TEST_POINT)
    value = value.subs({s: sp.Rational(13 + k, 10) for k, s in enumerate(sorted(value.free_symbols, key=str))})
    if not value.is_number or value == 0:
        raise _Fallback(f"cannot orient the radicand {p}")
    return value > 0


def marked(expr) -> bool:
    return isinstance(expr, sp.Basic) and expr.has(PI)


def tidy(expr):
    """expr (this route's, marked) in the normal form described above; None where it does not
    apply (then derive.gaussian.tidy simplifies)."""
    try:
        out = _tidy(expr)
        return out.xreplace({PI: sp.pi}) if out.is_number else out
    except _Fallback:
        return None


def _tidy(expr):
    """Transcendental atoms (asin, erf, exp) as symbols t, radicals as symbols r (r^2 = p), one
    fraction of polynomials reduced and rationalised in the r's, regrouped by the t's."""
    expr = expr.replace(lambda e: isinstance(e, sp.asin), lambda e: sp.asin(_algebraic(e.args[0])))
    atoms = sorted(expr.atoms(sp.asin, sp.erf, sp.exp), key=sp.default_sort_key)
    ts = {a: sp.Dummy(f"t{i}") for i, a in enumerate(atoms)}
    if any(a.has(*atoms[:i], *atoms[i + 1:]) for i, a in enumerate(atoms)):
        raise _Fallback("nested transcendental functions")
    return _algebraic(expr.xreplace(ts), ts={t: a for a, t in ts.items()})


def _algebraic(expr, ts=None):
    """The normal form of an expression algebraic in the covariance symbols and polynomial in the
    symbols `ts` (which it maps back to their atoms), see above."""
    ts = ts or {}
    expr = sp.sympify(expr).xreplace({sp.pi: _PI, PI: _PI})
    if expr.atoms(sp.Function):
        raise _Fallback(f"a function in {expr}")
    relations = {}                          # r -> p with r^2 = p
    symbols = {}                            # p -> r

    def radical(p):
        """sqrt(p) for an irreducible polynomial (or a prime) p, as a symbol."""
        if p not in symbols:
            symbols[p] = sp.Dummy(f"r{len(symbols)}")
            relations[symbols[p]] = p
        return symbols[p]

    powers = {}

    def power(base, exponent):
        key = (base, exponent)
        if key in powers:
            return powers[key]
        if not exponent.is_Rational or exponent.q not in (1, 2):
            raise _Fallback(f"exponent {exponent}")
        if base.free_symbols & (set(relations) | set(ts)):
            raise _Fallback(f"nested radical {base}")
        out = sp.S.One
        num, den = sp.fraction(sp.cancel(base))
        for part, sign in ((num, 1), (den, -1)):
            const, factors = sp.factor_list(part)
            for f, m in factors:
                if not _positive_at_test_point(f):
                    f, const = -f, const * (-1) ** m
                k = m * exponent * sign * 2          # f^(k/2)
                out *= f ** (k // 2) * (radical(f) if k % 2 else 1)
            if const < 0:
                raise _Fallback(f"radicand {base} not positive")
            for prime, m in sp.factorint(const).items():
                k = m * exponent * sign * 2
                out *= sp.Integer(prime) ** (k // 2) * (radical(sp.Integer(prime)) if k % 2 else 1)
        powers[key] = out
        return out

    expr = expr.replace(lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer,
                        lambda e: power(e.base, e.exp))
    num, den = sp.fraction(sp.together(expr))
    rs = sorted(relations, key=lambda r: sp.default_sort_key(relations[r]))
    tsyms = sorted(ts, key=lambda t: sp.default_sort_key(ts[t]))
    gens = [*tsyms, *rs, *sorted(expr.free_symbols - set(rs) - set(tsyms), key=sp.default_sort_key)]
    if not gens:
        return expr
    num, den = sp.Poly(num, *gens), sp.Poly(den, *gens)
    bases = {r: sp.Poly(relations[r], *gens) for r in rs}

    def reduce(p):
        """p with r^2 -> relations[r] until every r has degree <= 1."""
        for r in rs:
            i = gens.index(r)
            if p.degree(r) < 2:
                continue
            low, out = {}, sp.Poly(0, *gens)
            for monom, coeff in p.terms():
                k = monom[i]
                if k < 2:
                    low[monom] = low.get(monom, 0) + coeff
                else:
                    m = list(monom)
                    m[i] = k % 2
                    out += sp.Poly.from_dict({tuple(m): coeff}, *gens) * bases[r] ** (k // 2)
            p = out + sp.Poly.from_dict(low, *gens) if low else out
        return p

    num, den = reduce(num), reduce(den)
    for r in rs:
        if den.degree(r) > 0:
            i = gens.index(r)
            odd = sp.Poly.from_dict({m: c for m, c in den.terms() if m[i] == 1}, *gens)
            conjugate = den - 2 * odd
            num, den = reduce(num * conjugate), reduce(den * conjugate)
    if den.is_zero:
        raise _Fallback("zero denominator")
    num, den = num.cancel(den, include=True)
    back = {**{r: sp.sqrt(relations[r].xreplace({_PI: PI})) for r in rs}, **ts, _PI: PI}
    groups = {}
    k = len(tsyms) + len(rs)
    for monom, coeff in num.terms():
        groups.setdefault(monom[:k], []).append((monom[k:], coeff))
    rest = gens[k:]
    numerator = sp.S.Zero
    for monom, terms in sorted(groups.items()):
        coeff = sp.Poly.from_dict(dict(terms), *rest).as_expr() if rest else sum(c for _, c in terms)
        numerator += sp.factor(coeff) * sp.Mul(*(g**e for g, e in zip(gens[:k], monom)))
    # the t-groups as separate fractions (an asin term apart from the algebraic ones)
    by_t = {}
    for term in sp.Add.make_args(numerator):
        key = sp.Mul(*(f for f in sp.Mul.make_args(term) if f.free_symbols & set(tsyms)))
        by_t[key] = by_t.get(key, sp.S.Zero) + term / key
    den = sp.factor(den.as_expr())
    return sp.Add(*((n / den).xreplace(back) * key.xreplace(back) for key, n in by_t.items()))
