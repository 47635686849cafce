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
g_eps(x) = sum_i int_{(c_i - x)/eps}^{(c_(i+1) - x)/eps} p_i(x + eps z) phi(z) dz; pieces that
are not polynomials (ELU's e^x - 1) take the shifted-Gaussian engine instead, g_eps(x) being the
one-point average E[g(m + eps z)] at m = x (derive/shifted.py: normal CDFs after completing the
square). A kink is any point where some derivative of g jumps (ELU is C^1 at 0, its g'' jumps),
so that the finite-D averages of g^(k) that are not functions go through g_eps.
"""
from __future__ import annotations

import sympy as sp

from derive import gaussian as G
from derive.activations import x

eps = sp.Symbol("epsilon", positive=True)
_z = sp.Symbol("z", real=True)

#: the smoothing width used in the generated modules (relative to unit-scale local fields)
EPSILON = sp.Rational(1, 50)


#: kinks are looked for in the derivatives of g up to this order (ELU: g'' jumps at 0)
KINK_ORDER = 6


def kinks(g):
    """The points where g or one of its derivatives jumps (the DiracDelta arguments of g^(k),
    1 <= k <= KINK_ORDER), sorted; [] if none. ReLU: [0] (g'' = delta); hard tanh: [-1, 1];
    ELU: [0] (C^1 there, its second derivative jumps)."""
    g = G.normalize(g)
    points = set()
    for order in range(1, KINK_ORDER + 1):
        for delta in G.normalize(sp.diff(g, x, order)).atoms(sp.DiracDelta):
            points |= set(sp.solve(delta.args[0], x))
    return sorted(points)


def resolved_kinks(g):
    """kinks(g) where the runtime's rules resolve g_eps, else []: runtime/quadrature.py's rules for
    a smoothed kink (scale = eps) centre their nodes on x = 0, and a kink elsewhere (hard tanh's at
    +-1) falls between nodes spaced ~0.1 there, five times the width eps (measured: hard tanh's
    predicted SGD spread 20 times the measured one). Such a g gets no finite-D equations (the
    module's FINITE_MISSING), its D^0 equations being exact."""
    points = kinks(g)
    return points if set(points) <= {0} else []


def smoothed(g):
    """g_eps(x) in closed form (erf and exp): by the pieces of g where they are polynomials, else
    as the shifted-Gaussian average E[g(m + eps z)] at m = x (derive/shifted.py; ELU's e^x - 1).
    Kinks off 0 (hard tanh) take the latter too: simplify merges the pieces' Gaussian factors into
    exp(+(x - 1)^2/(2 eps^2)) exp(-...) products, which overflow at eps = SMOOTHING."""
    if set(kinks(g)) <= {0}:
        try:
            return _smoothed_polynomial(g)
        except G.NoClosedForm:
            pass
    return _smoothed_shifted(g)


def homogeneity(g_eps):
    """The degree k with g_(lam eps)(lam x) = lam^k g_eps(x) for every lam > 0 (g positively
    homogeneous of degree k: ReLU and leaky ReLU 1), checked on the closed form g_eps; None if
    there is none. The runtime then takes both widths of the Richardson step from one quadrature
    (runtime.quadrature.smoothed_units)."""
    lam = sp.Symbol("lambda", positive=True)
    scaled = g_eps.subs({x: lam * x, eps: lam * eps}, simultaneous=True)
    base, k = sp.simplify(scaled / g_eps).as_base_exp()
    if base != lam or not k.is_Integer or sp.simplify(scaled - lam ** k * g_eps) != 0:
        return None
    return int(k)


def _smoothed_shifted(g):
    """g_eps(x) = shifted_mean_0(x, eps^2), its normal CDFs written as erfc (differentiable)."""
    from derive import shifted
    from derive.kernels import Kernel
    closed = shifted.derive_kernel(G.normalize(g), Kernel(((0,),)))
    if closed is None:
        raise G.NoClosedForm(f"no closed form for g smoothed: {g}")
    closed = closed.subs({shifted.m: x, G.v: eps**2})
    closed = closed.replace(lambda e: isinstance(e, shifted.ndtr), lambda e: sp.erfc(-e.args[0] / sp.sqrt(2)) / 2)
    closed = sp.simplify(closed)
    closed = closed.replace(lambda e: isinstance(e, sp.erfc), lambda e: erfc(e.args[0]))
    return closed.replace(lambda e: isinstance(e, sp.exp), lambda e: exp(e.args[0]))


class exp(sp.Function):
    """exp, printed numpy.exp, that expansion leaves whole: SymPy's splits exp(-(x - 1)^2/(2 eps^2))
    into exp(-1/(2 eps^2)) exp(x/eps^2) exp(-x^2/(2 eps^2)), which overflows to inf * 0 at
    eps = SMOOTHING for |x| > ~15 (the printer expands; a kink at 0 has no such factor)."""

    def fdiff(self, argindex=1):
        return self


class erfc(sp.Function):
    """erfc, printed scipy.special.erfc, whose derivative is the whole exp above."""

    def fdiff(self, argindex=1):
        return -2 / sp.sqrt(sp.pi) * exp(-self.args[0] ** 2)


def _smoothed_polynomial(g):
    """g_eps(x) for a g that is polynomial between its kinks."""
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
