"""Reference Gaussian averages in mpmath at 30 digits, independent of the code under test.

The activation and its derivatives come from the registry expression (derive.activations) via
SymPy differentiation and `lambdify(..., "mpmath")`; nothing here calls generated/ or runtime/.

Integrals are composite Gauss-Legendre rules (nodes from mpmath, working precision 30 digits)
over z in [-tail, tail], with panel breaks where the argument of the activation crosses 0 and
+-2^k (kinks, and the steep region of tanh/sigmoid/erf), panels at most `zcap` standard
deviations long and, for oscillating activations, at most 1.5 long in x. Rule FINE (one-
dimensional integrals, 24 nodes a panel) is accurate to ~1e-19, rule NESTED (12 nodes; the
two-dimensional integrals of tanh and sigmoid) to ~1e-15; tests/test_kernels_quadrature.py
checks both against exact averages. mpmath's adaptive `quad` on infinite intervals is not
used: it is slow here and, for tanh at variance 100, silently wrong in the second digit.

Two-point averages use conditional coordinates: x1 = sqrt(c11) z1 and x2 | x1 ~ N(kappa x1, s^2)
with kappa = c12/c11, s^2 = c22 - c12^2/c11. The inner average is a textbook one-dimensional
Gaussian formula for the elementary activations (table `_INNER`, checked against quadrature
by tests/test_kernels_quadrature.py) and a nested quadrature otherwise.
"""
from __future__ import annotations

from functools import lru_cache

import mpmath as mp
import sympy as sp
from mpmath.calculus.quadrature import GaussLegendre

from derive.activations import get, x

DPS = 30
mp.mp.dps = DPS
OSCILLATING = {"sin": mp.mpf("1.5")}                       # panel length in x
SQRT_2PI = mp.sqrt(2 * mp.pi)


class Rule:
    """Gauss-Legendre nodes per panel (3 * 2^(degree-1)), truncation of z, panel length in z
    and panel breaks in x."""

    def __init__(self, degree, tail, zcap, breaks):
        self.nodes = GaussLegendre(mp.mp).calc_nodes(degree, mp.mp.prec)
        self.tail, self.zcap = mp.mpf(tail), mp.mpf(zcap)
        self.breaks = [mp.mpf(0)] + [s * mp.mpf(b) for b in breaks for s in (1, -1)]


#: one-dimensional integrals (and the outer one over a textbook inner average): 24 nodes
FINE = Rule(4, 10, 2, [mp.mpf(2) ** k for k in range(-3, 8)])
#: nested quadrature (tanh, sigmoid): 12 nodes, coarser, still far below the 1e-8 tolerance
NESTED = Rule(3, 9, 3, [1, 2, 4, 8, 16])


def _heaviside(t, h0=None):
    """Heaviside with H(0) = 1/2 (the convention of the generated modules)."""
    return mp.mpf(1) if t > 0 else mp.mpf(0) if t < 0 else mp.mpf(1) / 2


@lru_cache(maxsize=None)
def expression(name, order=0):
    """The registry's g^(order) (parameters at their defaults) as a SymPy expression."""
    return sp.diff(get(name).bound(), x, order)


def has_delta(name, order):
    return expression(name, order).has(sp.DiracDelta)


@lru_cache(maxsize=None)
def derivative(name, order):
    """g^(order) as an mpmath function (ordinary derivatives only)."""
    expr = expression(name, order)
    if expr.has(sp.DiracDelta):
        raise ValueError(f"g^({order}) of {name} is not an ordinary function")
    return sp.lambdify(x, expr, modules=["mpmath", {"Heaviside": _heaviside, "Max": max}])


def jump(name):
    """g'(0+) - g'(0-) for an activation whose g'' is a multiple of delta(x)."""
    d1 = derivative(name, 1)
    return d1(mp.mpf(1) / 10**6) - d1(-mp.mpf(1) / 10**6)


def product(name, orders):
    fs = [derivative(name, a) for a in orders]

    def f(y):
        out = mp.mpf(1)
        for fn in fs:
            out *= fn(y)
        return out
    return f


# ----------------------------------------------------------------------------------------
# Quadrature

def _panels(lo, hi, breaks, cap):
    points = sorted({lo, hi, *(b for b in breaks if lo < b < hi)})
    for a, b in zip(points, points[1:]):
        n = max(1, int(mp.ceil((b - a) / cap)))
        for k in range(n):
            yield a + (b - a) * k / n, a + (b - a) * (k + 1) / n


def _gauss_legendre(f, panels, nodes):
    total = mp.mpf(0)
    for a, b in panels:
        mid, half = (a + b) / 2, (b - a) / 2
        total += half * mp.fsum(w * f(mid + half * t) for t, w in nodes)
    return total


def normal_average(f, mean, sd, rule=FINE, xcap=None, extra_breaks=()):
    """E[f(mean + sd Z)], Z ~ N(0, 1), with panel breaks where mean + sd z hits a break."""
    mean, sd = mp.mpf(mean), mp.mpf(sd)
    if sd == 0:
        return f(mean)
    cap = rule.zcap if xcap is None else min(rule.zcap, xcap / sd)
    zbreaks = [mp.mpf(0)] + [(b - mean) / sd for b in (*rule.breaks, *extra_breaks)]
    return _gauss_legendre(lambda z: mp.exp(-z * z / 2) * f(mean + sd * z),
                           _panels(-rule.tail, rule.tail, zbreaks, cap), rule.nodes) / SQRT_2PI


# ----------------------------------------------------------------------------------------
# Textbook inner averages E[y^p g^(b)(y)], y ~ N(m, s^2), p, b in {0, 1}

def _Phi(r):
    return mp.ncdf(r)


def _phi(r):
    return mp.npdf(r)


def _relu_inner(b, p, m, s):
    r = m / s
    if b == 0:
        return m * _Phi(r) + s * _phi(r) if p == 0 else (m * m + s * s) * _Phi(r) + m * s * _phi(r)
    return _Phi(r) if p == 0 else m * _Phi(r) + s * _phi(r)


def _linear_inner(b, p, m, s):
    if b == 0:
        return m if p == 0 else m * m + s * s
    return mp.mpf(1) if p == 0 else m


def _erf_inner(b, p, m, s):
    u = 1 + s * s
    gauss = mp.sqrt(2 / mp.pi) * mp.exp(-m * m / (2 * u))
    if b == 0:
        e = mp.erf(m / mp.sqrt(2 * u))
        return e if p == 0 else m * e + s * s * gauss / mp.sqrt(u)
    return gauss / mp.sqrt(u) if p == 0 else gauss * m / u ** mp.mpf(1.5)


def _sin_inner(b, p, m, s):
    """sin^(b)(y) = sin(y + b pi/2): E[sin(y + a)] = e^(-s^2/2) sin(m + a), E[y sin(y + a)] =
    e^(-s^2/2) (m sin(m + a) + s^2 cos(m + a)) (Stein), for every order b."""
    e, phase = mp.exp(-s * s / 2), m + b * mp.pi / 2
    return e * mp.sin(phase) if p == 0 else e * (m * mp.sin(phase) + s * s * mp.cos(phase))


def _quadratic_inner(b, p, m, s):
    if b == 0:
        return m * m + s * s if p == 0 else m**3 + 3 * m * s * s
    return 2 * m if p == 0 else 2 * (m * m + s * s)


def _leaky_inner(b, p, m, s):
    slope = -derivative("leaky_relu", 0)(mp.mpf(-1))          # g(x) = slope x for x < 0
    linear, relu = _linear_inner(b, p, m, s), _relu_inner(b, p, m, s)
    return slope * linear + (1 - slope) * relu


_INNER = {"linear": _linear_inner, "quadratic": _quadratic_inner, "sin": _sin_inner,
          "erf": _erf_inner, "relu": _relu_inner, "leaky_relu": _leaky_inner}
#: activations whose inner averages are textbook formulas (the others are nested quadratures)
TEXTBOOK = frozenset(_INNER)
#: ... for every derivative order (the others for b <= 1)
EVERY_ORDER = frozenset({"sin"})


def inner_average(name, b, p, m, s, nested=False):
    """E[y^p g^(b)(y)] for y ~ N(m, s^2): textbook formula when known (b <= 1, sin's any b), else quadrature."""
    m, s = mp.mpf(m), mp.mpf(s)
    if s == 0:
        return m**p * derivative(name, b)(m)
    if name in _INNER and not nested and (b <= 1 or name in EVERY_ORDER):
        return _INNER[name](b, p, m, s)
    f = derivative(name, b)
    return normal_average(lambda y: y**p * f(y), m, s, rule=NESTED, xcap=OSCILLATING.get(name))


def inner_by_quadrature(name, b, p, m, s):
    """The same average by quadrature only (to check the textbook table)."""
    f = derivative(name, b)
    return normal_average(lambda y: mp.mpf(y)**p * f(y), m, s, xcap=OSCILLATING.get(name))


# ----------------------------------------------------------------------------------------
# Kernels and literature averages

def _mp(*values):
    return [mp.mpf(v) for v in values]


def mean(name, orders, v):
    """E[prod_a g^(a)(x)], x ~ N(0, v)."""
    (v,) = _mp(v)
    orders = tuple(orders)
    if len(orders) == 1 and has_delta(name, orders[0]):
        # Gaussian integration by parts n times: E[g^(n)(x)] = E[g(x) He_n(x/sd)] / sd^n
        n, sd = orders[0], mp.sqrt(v)
        g = derivative(name, 0)
        return normal_average(lambda y: g(y) * mp.hermite(n, y / (sd * mp.sqrt(2))) / mp.sqrt(2) ** n, 0, sd) / sd**n
    return normal_average(product(name, orders), 0, mp.sqrt(v), xcap=OSCILLATING.get(name))


def _conditional(c11, c12, c22):
    kappa = c12 / c11
    s = mp.sqrt(max(c22 - c12 * kappa, mp.mpf(0)))
    return kappa, s


def _outer(f, c11, kappa, s, name, nested=False):
    """E[f(x1)] for x1 ~ N(0, c11) with breaks for g(x1) and for the inner average
    E[g(kappa x1 + s Z)], which has structure where kappa x1 is near 0 on the scales 1 and s."""
    rule = NESTED if nested or name not in _INNER else FINE
    scales = {s, max(s, mp.mpf(1))}      # a kink smoothed by s; a steep g (scale 1) smoothed by s
    extra = [b * scale / kappa for b in rule.breaks for scale in scales] if kappa != 0 else []
    xcap = OSCILLATING.get(name)
    if xcap is not None and abs(kappa) > 1:
        xcap = xcap / abs(kappa)
    return normal_average(f, 0, mp.sqrt(c11), rule=rule, xcap=xcap, extra_breaks=extra)


def pair(name, a, b, c11, c12, c22, nested=False):
    """E[g^(a)(x1) g^(b)(x2)] for (x1, x2) ~ N(0, [[c11, c12], [c12, c22]]), c11 > 0.
    nested=True forces the nested quadrature (to check it where a closed form is known)."""
    c11, c12, c22 = _mp(c11, c12, c22)
    kappa, s = _conditional(c11, c12, c22)
    if has_delta(name, a):
        if a != 2 or has_delta(name, b):
            raise ValueError("only g'' = jump * delta(x) is handled")
        # E[jump delta(x1) F(x2)] = jump p1(0) E[F(x2) | x1 = 0], x2 | x1 = 0 ~ N(0, s^2)
        return jump(name) / mp.sqrt(2 * mp.pi * c11) * inner_average(name, b, 0, 0, s)
    f1 = derivative(name, a)
    return _outer(lambda y: f1(y) * inner_average(name, b, 0, kappa * y, s, nested),
                  c11, kappa, s, name, nested)


def J2(name, c11, c12, c22):
    """E[x1 g(x2)] = (c12/c22) E[x2 g(x2)] (regression of x1 on x2)."""
    c11, c12, c22 = _mp(c11, c12, c22)
    g = derivative(name, 0)
    return c12 / c22 * normal_average(lambda y: y * g(y), 0, mp.sqrt(c22), xcap=OSCILLATING.get(name))


def I2(name, c11, c12, c22):
    return pair(name, 0, 0, c11, c12, c22)


def I21(name, c11, c12, c22):
    """E[g'(x1) x1 x2] = (c12/c11) E[g'(x1) x1^2]."""
    c11, c12, c22 = _mp(c11, c12, c22)
    d1 = derivative(name, 1)
    return c12 / c11 * normal_average(lambda y: d1(y) * y * y, 0, mp.sqrt(c11), xcap=OSCILLATING.get(name))


def I22(name, c11, c12, c22):
    """E[g'(x1) x2^2] = E[g'(x1) ((kappa x1)^2 + s^2)]."""
    c11, c12, c22 = _mp(c11, c12, c22)
    kappa, s = _conditional(c11, c12, c22)
    d1 = derivative(name, 1)
    return normal_average(lambda y: d1(y) * ((kappa * y) ** 2 + s * s), 0, mp.sqrt(c11),
                          xcap=OSCILLATING.get(name))


def I3(name, C):
    """E[g'(x1) x2 g(x3)]: E[x2 | x1, x3] = alpha x1 + beta x3 (regression), then x3 | x1."""
    C = mp.matrix([[mp.mpf(C[i][j]) for j in range(3)] for i in range(3)])
    sub = mp.matrix([[C[0, 0], C[0, 2]], [C[2, 0], C[2, 2]]])
    alpha, beta = mp.lu_solve(sub, mp.matrix([C[1, 0], C[1, 2]]))
    kappa, s = _conditional(C[0, 0], C[0, 2], C[2, 2])
    d1 = derivative(name, 1)

    def f(y):
        m = kappa * y
        return d1(y) * (alpha * y * inner_average(name, 0, 0, m, s) + beta * inner_average(name, 0, 1, m, s))
    return _outer(f, C[0, 0], kappa, s, name)


# ----------------------------------------------------------------------------------------
# Natural scales: bounds on |average| (Cauchy-Schwarz / Hoelder). An average much smaller
# than its scale is "~0" and is compared absolutely, at a small multiple of the scale.

def _rms(name, orders, v):
    return mp.sqrt(mean(name, tuple(orders) * 2, v))


def mean_scale(name, orders, v):
    """sqrt(E[f^2]) >= |E[f]|; for the third derivative of a kinked g, the bound
    sqrt(E[g^2] E[He3^2]) / sd^3 of its integration-by-parts form."""
    (v,) = _mp(v)
    if any(has_delta(name, a) for a in orders):
        return mp.sqrt(6 * mean(name, (0, 0), v)) / v ** mp.mpf(1.5)
    return _rms(name, orders, v)


def pair_scale(name, a, b, c11, c12, c22):
    """sqrt(E[g^(a)(x1)^2] E[g^(b)(x2)^2]) >= |E[g^(a)(x1) g^(b)(x2)]|; |average| for a delta."""
    if has_delta(name, a):
        return abs(pair(name, a, b, c11, c12, c22))
    return _rms(name, (a,), c11) * _rms(name, (b,), c22)


def literature_scale(name, average, C):
    """A Hoelder bound on |average| for the covariance C (nested lists)."""
    def c(i, j):
        return mp.mpf(C[i][j])
    if average == "J2":
        return mp.sqrt(c(0, 0)) * _rms(name, (0,), c(1, 1))
    if average == "I2":
        return _rms(name, (0,), c(0, 0)) * _rms(name, (0,), c(1, 1))
    if average == "I21":        # ||g'(x1)||_2 ||x1 x2||_2
        return _rms(name, (1,), c(0, 0)) * mp.sqrt(c(0, 0) * c(1, 1) + 2 * c(0, 1) ** 2)
    if average == "I22":        # ||g'(x1)||_2 ||x2^2||_2
        return _rms(name, (1,), c(0, 0)) * mp.sqrt(3) * c(1, 1)
    if average == "I3":         # ||g'(x1)||_2 ||x2||_4 ||g(x3)||_4
        return (_rms(name, (1,), c(0, 0)) * (3 * c(1, 1) ** 2) ** mp.mpf(0.25)
                * mean(name, (0, 0, 0, 0), c(2, 2)) ** mp.mpf(0.25))
    raise ValueError(average)
