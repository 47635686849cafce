"""Gaussian smoothing of a piecewise-polynomial activation, for the finite-D equations.

The finite-D equations average products of derivatives of g over several units (derive.finite),
by Stein's lemma term by term. For ReLU-like g, g'' is a delta and those products (delta^2,
delta * Heaviside on one unit) are not defined one by one, though their sum, the expected SGD
step, is. So they are evaluated for the smoothed activation

    g_eps(x) = E[g(x + eps z)],  z ~ N(0, 1),

whose derivatives are functions; every average of the finite-D equations converges to that of g
as eps -> 0, in powers of eps (products on one unit such as g_eps'^2 -> g'^2 start at O(eps)).
The generated code takes the Richardson combination 2 f(eps) - f(2 eps), O(eps^2), with eps
not too small: single terms grow like eps^-3 (the third derivative of g_eps) and cancel in the
sum, so at eps = 1e-3 the quadrature's rounding is amplified a billion times (measured: 250
standard errors off a Monte Carlo of the SGD step), at eps = 0.02 it is not (within 1.6).
g_eps is exact in closed form: on each interval between kinks g is a polynomial p_i, and
g_eps(x) = sum_i int_{(c_i - x)/eps}^{(c_(i+1) - x)/eps} p_i(x + eps z) phi(z) dz.
"""
from __future__ import annotations

import sympy as sp

from derive import gaussian as G
from derive.activations import x

eps = sp.Symbol("epsilon", positive=True)
_z = sp.Symbol("z", real=True)

#: the smoothing width used in the generated modules (relative to unit-scale local fields)
EPSILON = sp.Rational(1, 50)


def kinks(g):
    """The points where g' jumps (the DiracDelta arguments of g''), sorted; [] if none."""
    d2 = G.normalize(sp.diff(g, x, 2))
    points = set()
    for delta in d2.atoms(sp.DiracDelta):
        points |= set(sp.solve(delta.args[0], x))
    return sorted(points)


def smoothed(g):
    """g_eps(x) in closed form (erf and exp) for a g that is polynomial between its kinks."""
    points = kinks(g)
    edges = [-sp.oo, *points, sp.oo]
    phi = sp.exp(-_z ** 2 / 2) / sp.sqrt(2 * sp.pi)
    total = sp.S.Zero
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = lo + 1 if hi == sp.oo else hi - 1 if lo == -sp.oo else (lo + hi) / 2
        piece = _polynomial_at(g, inside)
        a = -sp.oo if lo == -sp.oo else (lo - x) / eps
        b = sp.oo if hi == sp.oo else (hi - x) / eps
        total += sp.integrate(sp.expand(piece.subs(x, x + eps * _z) * phi), (_z, a, b))
    return sp.simplify(total)


def _polynomial_at(g, point):
    """The polynomial that g equals on the interval containing `point` (Heaviside factors fixed)."""
    expr = G.normalize(g)
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside),
                        lambda e: sp.S.One if e.args[0].subs(x, point) > 0 else sp.S.Zero)
    expr = sp.expand(sp.piecewise_fold(expr))
    if not expr.is_polynomial(x):
        raise G.NoClosedForm(f"g is not a polynomial between its kinks: {expr}")
    return expr
