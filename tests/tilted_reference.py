"""mpmath references (30 digits) for the kernels of ELU-type activations, over N(m, C) at any size:
g^(n)(x) = (p1 x + p0) H(x) + q e^x H(-x) + r H(-x) + d delta(x) (a `Piece`), E[f1(x1) f2(x2)] as
mp.quad over x1 of f1(x1) times the conditional expectation of f2(x2) given x1 in closed form
(normal CDFs and densities, which mpmath evaluates at any size: e^(5e5) Phi(-1e3) is a number there),
with the integration range broken where f1 is not smooth, where the conditional expectation turns
(its Gaussian's mean crosses 0 or -s^2), at the e^x scale near 0 and at the Gaussian's scales."""
from __future__ import annotations

from dataclasses import dataclass

import mpmath as mp

DPS = 30


@dataclass(frozen=True)
class Piece:
    """(p1 x + p0) H(x) + q e^x H(-x) + r H(-x) + d delta(x)."""

    p1: object = 0
    p0: object = 0
    q: object = 0
    r: object = 0
    d: object = 0


def elu(alpha=1):
    """g, g', g'' of ELU with alpha: g = x H(x) + alpha (e^x - 1) H(-x)."""
    alpha = mp.mpf(alpha)
    return [Piece(p1=1, q=alpha, r=-alpha), Piece(p0=1, q=alpha), Piece(q=alpha, d=1 - alpha)]


def _at(f, x):
    """f(x) for x != 0 (the smooth part); H(0) = 1/2 at 0."""
    if x > 0:
        return f.p1 * x + f.p0
    if x < 0:
        return f.q * mp.exp(x) + f.r
    return (f.p0 + f.q + f.r) / 2


def _conditional(f, mu, s):
    """E[f(y)], y ~ N(mu, s^2) (s = 0: f(mu))."""
    if s == 0:
        return _at(f, mu)
    z = mu / s
    return (f.p1 * (mu * mp.ncdf(z) + s * mp.npdf(z)) + f.p0 * mp.ncdf(z)
            + f.q * mp.exp(mu + s * s / 2) * mp.ncdf(-(mu + s * s) / s) + f.r * mp.ncdf(-z)
            + f.d * mp.npdf(z) / s)


def pair(f1, f2, m1, m2, c11, c12, c22):
    """E[f1(x1) f2(x2)], (x1, x2) ~ N((m1, m2), [[c11, c12], [c12, c22]]) (c11 > 0)."""
    with mp.workdps(DPS):
        m1, m2, c11, c12, c22 = (mp.mpf(a) for a in (m1, m2, c11, c12, c22))
        sd = mp.sqrt(c11)
        kappa = c12 / c11
        s = mp.sqrt(max(c22 - c12 * c12 / c11, 0))

        def inner(x1):
            return _conditional(f2, m2 + kappa * (x1 - m1), s)

        def integrand(x1):
            return _at(f1, x1) * inner(x1) * mp.npdf(x1, m1, sd)

        breaks = {mp.mpf(0)}
        for u in (0.01, 0.1, 1, 3, 10, 30, 100, 300, 1000, 3000, 1e4):
            breaks |= {mp.mpf(-u), mp.mpf(u)}
        for u in (0, 0.1, 1, 3, 6, 10, 20, 40):
            breaks |= {m1 - u * sd, m1 + u * sd}
        if kappa != 0:
            for turn in (-m2, -m2 - s * s):
                centre = m1 + turn / kappa
                for u in (0, 0.1, 1, 3, 10, 40):
                    breaks |= {centre - u * s / abs(kappa), centre + u * s / abs(kappa), centre - u / abs(kappa)}
        lo, hi = m1 - 60 * sd, m1 + 60 * sd
        points = [lo] + sorted(b for b in breaks if lo < b < hi) + [hi]
        total = mp.quad(integrand, points, maxdegree=8)
        if f1.d:
            total += f1.d * mp.npdf(0, m1, sd) * inner(mp.mpf(0))
        return total


def mean(f1, f2, m, v):
    """E[f1(x) f2(x)], x ~ N(m, v) (f2 = None: E[f1(x)])."""
    if f2 is None:
        return pair(f1, Piece(p0=1, r=1), m, 0, v, 0, 1)
    return pair(f1, f2, m, m, v, v, v)


def square_mean(f, m, v):
    """E[f_s(x)^2] of f's part without the delta (the Cauchy-Schwarz scale of its kernels)."""
    with mp.workdps(DPS):
        m, sd = mp.mpf(m), mp.sqrt(mp.mpf(v))
        points = sorted({m - 60 * sd, m + 60 * sd, mp.mpf(0), *(m + u * sd for u in (-10, -3, -1, 1, 3, 10))})
        return mp.quad(lambda x: _at(f, x) ** 2 * mp.npdf(x, m, sd), points, maxdegree=8)


def _bisect(f, lo, hi, n=200):
    """root of a decreasing f in [lo, hi] (f(lo) > 0 > f(hi))."""
    for _ in range(n):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        if hi - lo < mp.mpf(10) ** (-30) * (1 + abs(lo)):
            break
    return (lo + hi) / 2


def mp_log_bvn(h, k, rho):
    """log P(X < h, Y < k) at 40 digits: int_{-inf}^{a} phi(x) Phi((b - rho x)/r) dx, a = min(h, k)
    (the conditioning runtime.elementwise._bvn_tail does not always take), by mp.quad (tanh-sinh)
    between breakpoints at the log-concave integrand's mode and where it has dropped by 0.5, 3,
    10, 30, 80, 200 (bisection)."""
    with mp.workdps(40):
        h, k, rho = mp.mpf(h), mp.mpf(k), mp.mpf(rho)
        a, b = min(h, k), max(h, k)
        if rho == 1:
            return mp.log(mp.ncdf(a))
        if rho == -1:
            v = mp.ncdf(a) - mp.ncdf(-b)
            return mp.log(v) if v > 0 else -mp.inf
        r = mp.sqrt((1 - rho) * (1 + rho))
        def G(x):
            return -x * x / 2 + mp.log(mp.ncdf((b - rho * x) / r))

        def dG(x):
            return -x - (rho / r) * mp.npdf((b - rho * x) / r) / mp.ncdf((b - rho * x) / r)

        if dG(a) >= 0:
            mode = a
        else:
            lo = a - 1
            while dG(lo) <= 0:
                lo = a - 2 * (a - lo)
            mode = _bisect(dG, lo, a)
        top = G(mode)
        pts = {mode, a}
        for drop in (0.5, 3, 10, 30, 80, 200):
            lo = mode - 1
            while G(lo) - top + drop > 0:
                lo = mode - 2 * (mode - lo)
            pts.add(_bisect(lambda x: -(G(x) - top + drop), lo, mode))
            if mode < a and G(a) - top + drop < 0:
                pts.add(_bisect(lambda x: G(x) - top + drop, mode, a))
        pts = sorted(p for p in pts if p <= a)
        val = mp.quad(lambda x: mp.exp(G(x) - top), [-mp.inf] + pts, maxdegree=10)
        return mp.log(val) + top - mp.log(mp.sqrt(2 * mp.pi))
