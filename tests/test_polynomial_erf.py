"""Closed forms of polynomials times erf (derive/polynomial_erf.py; issue 16, item 1): GELU,
x erf(x) and x^2 Phi(x), registered test-locally by tests/test_activation_zoo.py and derived in
memory once per process (its `built`).

Truth from outside the code: mpmath at 30 digits from the registry expression (SymPy
derivatives lambdified to mpmath, tests/reference.py's composite Gauss-Legendre rules), and
seeded Monte Carlo (conftest, 2e5 samples, 5 standard errors) with the module's own g, g', ...

* textbook one-point averages: E[x Phi(x)] = v / sqrt(2 pi (1 + v)) (GELU's mean_0) and
  E[x erf(x)] = 2 v / sqrt(pi (1 + 2 v));
* every mean_* kernel at variances 1e-2 ... 1e2 (one-dimensional quadrature) and at v = 0, where
  it is the integrand at x = 0;
* every pair_* kernel at a moderate and a random covariance and at correlation +-0.999 (nested
  quadrature in conditional coordinates), and on the edges, where the average is one-
  dimensional: c12 = +-sqrt(c11 c22) (x2 = +-sqrt(c22/c11) x1) and c11 = 0 (x1 = 0): finite,
  no NaN, and equal to the limit. Tolerance: 1e-10 relative plus 1e-13 of the Cauchy-Schwarz
  scale sqrt(E[g^(a)(x1)^2] E[g^(b)(x2)^2]);
* the same kernels against Monte Carlo at the edges, at 0.999 and at random covariances.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import reference as R
from conftest import MC_SIGMAS, gaussian_samples, kernel_names, kernel_orders, matrix2, mc_mean
from derive import activations
from derive.activations import x
from test_activation_zoo import CLOSED, ZOO, built

NAMES = sorted(CLOSED)
RTOL, SCALE_ATOL = 1e-10, 1e-13
VARIANCES = (0.01, 0.3, 1.0, 7.0, 100.0)

_rng = np.random.default_rng(16)
#: (c11, correlation, c22): random (log-uniform variances 1e-2 ... 1e2), then the hard ones
RANDOM = tuple((float(10 ** _rng.uniform(-2, 2)), float(_rng.uniform(-0.999, 0.999)), float(10 ** _rng.uniform(-2, 2)))
               for _ in range(3))
NESTED_COVS = ((1.0, 0.3, 2.0), (0.5, 0.999, 3.0), (20.0, -0.999, 0.7), RANDOM[0])
#: edges: perfect correlation +-1 (x2 a multiple of x1), and a zero variance
EDGE_COVS = ((1.0, 1.0, 4.0), (3.0, -1.0, 0.2), (0.01, 1.0, 50.0), (0.0, 0.0, 2.0), (2.0, 0.0, 0.0))
MC_COVS = EDGE_COVS + ((0.5, 0.999, 3.0), (20.0, -0.999, 0.7)) + RANDOM


def _cov(c11, r, c22):
    return c11, r * math.sqrt(c11 * c22), c22


class Exact:
    """g^(k) of a zoo activation in mpmath, and the averages by quadrature."""

    def __init__(self, name, orders=6):
        expr, params = ZOO[name]
        g = activations.Activation(name, expr, params).bound()
        self._d = sp.lambdify(x, [sp.diff(g, x, k) for k in range(orders)], modules="mpmath", cse=True)

        self._means = {}

    def d(self, y):
        return self._d(mp.mpf(y))

    def means(self, orders_list, v):
        """{orders: E[prod_a g^(a)(x)]}, x ~ N(0, v), on one set of nodes (rule FINE)."""
        v = mp.mpf(v)
        todo = list(dict.fromkeys(o for o in orders_list if (o, v) not in self._means))
        if todo and v == 0:
            d0 = self.d(0)
            self._means.update({(o, v): mp.fprod(d0[a] for a in o) for o in todo})
        elif todo:
            totals = dict.fromkeys(todo, mp.mpf(0))
            for y, w in _nodes(mp.sqrt(v), R.FINE):
                d = self.d(y)
                for o in todo:
                    totals[o] += w * mp.fprod(d[a] for a in o)
            self._means.update({(o, v): t for o, t in totals.items()})
        return {o: self._means[o, v] for o in orders_list}

    def mean(self, orders, v):
        return self.means([orders], v)[orders]

    def pairs(self, specs, c11, c12, c22):
        """{(a, b): E[g^(a)(x1) g^(b)(x2)]}: one-dimensional on the edges, nested otherwise."""
        c11, c12, c22 = (mp.mpf(c) for c in (c11, c12, c22))
        if c11 == 0 or c22 == 0:
            # one variable is 0 (then c12 = 0): the average factorises
            d0 = self.d(0)
            out = {}
            for a, b in specs:
                out[a, b] = d0[a] * self.mean((b,), c22) if c11 == 0 else self.mean((a,), c11) * d0[b]
            return out
        kappa, s2 = c12 / c11, c22 - c12**2 / c11
        if abs(s2) <= mp.mpf(10) ** -12 * c22:      # rounding of c12 = +-sqrt(c11 c22)
            # x2 = kappa x1
            totals = dict.fromkeys(specs, mp.mpf(0))
            for y, w in _nodes(mp.sqrt(c11), R.FINE, breaks=[0] + [b / kappa for b in (1, -1, 4, -4)]):
                d1, d2 = self.d(y), self.d(kappa * y)
                for a, b in specs:
                    totals[a, b] += w * d1[a] * d2[b]
            return totals
        s = mp.sqrt(s2)
        totals = dict.fromkeys(specs, mp.mpf(0))
        bs = sorted({b for _, b in specs})
        for y, w in _nodes(mp.sqrt(c11), R.NESTED, breaks=[0] + [b * max(s, 1) / kappa for b in (1, -1, 4, -4)]):
            inner = dict.fromkeys(bs, mp.mpf(0))
            for u, wu in _nodes(s, R.NESTED, mean=kappa * y):
                du = self.d(u)
                for b in bs:
                    inner[b] += wu * du[b]
            d1 = self.d(y)
            for a, b in specs:
                totals[a, b] += w * d1[a] * inner[b]
        return totals


EXACT = {name: Exact(name) for name in NAMES}


def _nodes(sd, rule, mean=0, breaks=()):
    """[(point, weight)]: E[f(mean + sd Z)] ~ sum weight f(point) (panels of tests/reference.py)."""
    mean, sd = mp.mpf(mean), mp.mpf(sd)
    zbreaks = [mp.mpf(0)] + [(mp.mpf(b) - mean) / sd for b in (*rule.breaks, *breaks)]
    out = []
    for lo, hi in R._panels(-rule.tail, rule.tail, zbreaks, rule.zcap):
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        for t, w in rule.nodes:
            z = mid + half * t
            out.append((mean + sd * z, half * w * mp.exp(-z * z / 2) / R.SQRT_2PI))
    return out


def _pair_kernels(module):
    return [(k, *(o for (o,) in kernel_orders(k))) for k in kernel_names(module) if k.startswith("pair_")]


def _check(value, exact, scale, label):
    value = float(value)
    assert np.isfinite(value), f"{label}: {value}"
    error = abs(value - float(exact))
    tol = RTOL * abs(float(exact)) + SCALE_ATOL * float(scale)
    return None if error <= tol else f"{label}: {value!r} vs mpmath {mp.nstr(exact, 20)} (error {error:.3g}, tol {tol:.3g})"


# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_kernel_closed(name):
    """The module says every kernel is closed (CLOSED_FORM, no NUMERIC_KERNELS), and has them all."""
    module = built(name)
    assert module.CLOSED_FORM is True and module.NUMERIC_KERNELS == ()
    assert tuple(kernel_names(module)) == CLOSED[name]


def test_textbook_one_point():
    """E[x Phi(x)] = v / sqrt(2 pi (1 + v)); E[x erf(x)] = 2 v / sqrt(pi (1 + 2 v))."""
    gelu, x_erf = built("zoo_gelu"), built("zoo_x_erf")
    for v in VARIANCES:
        w = mp.mpf(v)
        for value, exact in ((gelu.mean_0(v), w / mp.sqrt(2 * mp.pi * (1 + w))),
                             (x_erf.mean_0(v), 2 * w / mp.sqrt(mp.pi * (1 + 2 * w)))):
            assert abs(float(value) - exact) <= 1e-14 * exact, (v, value, exact)


@pytest.mark.parametrize("name", NAMES)
def test_means_against_mpmath(name):
    """Every mean_* kernel at variances 1e-2 ... 1e2 and at v = 0 (the integrand at 0)."""
    module, exact = built(name), EXACT[name]
    means = [(k, kernel_orders(k)[0]) for k in kernel_names(module) if k.startswith("mean_")]
    bad = []
    for v in (0.0, *VARIANCES):
        refs = exact.means([o for _, o in means] + [o * 2 for _, o in means], v)
        for kernel, orders in means:
            value, ref = getattr(module, kernel)(v), refs[orders]
            scale = mp.sqrt(refs[orders * 2]) if v else abs(ref)
            bad.append(_check(value, ref, scale, f"{name} {kernel}({v})"))
    bad = [b for b in bad if b]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cov", NESTED_COVS + EDGE_COVS, ids=lambda c: "%g,%g,%g" % c)
def test_pairs_against_mpmath(name, cov):
    """Every pair_* kernel: nested quadrature inside the cone, one-dimensional on its edges."""
    module, exact = built(name), EXACT[name]
    c = _cov(*cov)
    pairs = _pair_kernels(module)
    values = exact.pairs([(a, b) for _, a, b in pairs], *c)
    bad = []
    for kernel, a, b in pairs:
        scale = mp.sqrt(exact.mean((a, a), c[0]) * exact.mean((b, b), c[2]))
        bad.append(_check(getattr(module, kernel)(*c), values[a, b], scale, f"{name} {kernel}{c}"))
    bad = [b for b in bad if b]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", NAMES)
def test_pairs_near_the_edge_approach_the_edge(name):
    """At correlation 1 - 1e-12 (and c11 = 1e-14) the kernels are within 1e-5 of the edge values."""
    module = built(name)
    bad = []
    for kernel, _, _ in _pair_kernels(module):
        f = getattr(module, kernel)
        for (c11, r, c22), (e11, er, e22) in (((1.0, 1 - 1e-12, 4.0), (1.0, 1.0, 4.0)),
                                              ((3.0, -1 + 1e-12, 0.2), (3.0, -1.0, 0.2)),
                                              ((1e-14, 0.5, 2.0), (0.0, 0.0, 2.0))):
            near, edge = float(f(*_cov(c11, r, c22))), float(f(*_cov(e11, er, e22)))
            if not (np.isfinite(near) and abs(near - edge) <= 1e-5 * max(1.0, abs(edge))):
                bad.append(f"{name} {kernel}: {near!r} near {(e11, er, e22)}, {edge!r} on it")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", NAMES)
def test_kernels_against_monte_carlo(name):
    """Every kernel against the sample mean (5 standard errors) at the edges, at +-0.999 and at
    random covariances; the mean_* kernels at VARIANCES."""
    module = built(name)
    D = module.DERIVATIVES
    bad = []
    for c in (_cov(*cov) for cov in MC_COVS):
        X = gaussian_samples(matrix2(*c))
        for kernel, a, b in _pair_kernels(module):
            bad.append(_mc(getattr(module, kernel)(*c), D[a](X[:, 0]) * D[b](X[:, 1]), f"{kernel}{c}"))
    for v in VARIANCES:
        X = gaussian_samples(matrix2(v, v, v))[:, 0]
        for kernel in (k for k in kernel_names(module) if k.startswith("mean_")):
            (orders,) = kernel_orders(kernel)
            bad.append(_mc(getattr(module, kernel)(v), np.prod([D[a](X) for a in orders], axis=0), f"{kernel}({v})"))
    bad = [f"{name} {b}" for b in bad if b]
    assert not bad, "\n".join(bad)


def _mc(value, samples, label):
    value = float(value)
    mean, se = mc_mean(samples)
    if not np.isfinite(value):
        return f"{label}: {value}"
    if se == 0.0:
        return None if abs(value - mean) <= 1e-12 * max(1.0, abs(mean)) else f"{label}: {value} vs {mean}"
    deviation = abs(value - mean) / se
    return None if deviation <= MC_SIGMAS else f"{label}: {value!r}, Monte Carlo {mean!r} +- {se!r} ({deviation:.1f} SE)"
