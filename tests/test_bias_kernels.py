"""Shifted-Gaussian kernels (a trained encoder bias, derive/shifted.py) against independent truths.

* seeded Monte Carlo (2e5 samples, 5 standard errors) on Hypothesis-drawn means in [-3, 3] and
  covariances (variances 1e-2 ... 1e2, correlations up to +-0.999), for every activation;
  where a derivative is a delta (ReLU g''), an exact Stein identity needing only g, g' is sampled;
* mpmath quadrature at 30 digits (tests/reference.py) at fixed points: closed forms to 1e-10
  relative, numerical kernels (tanh, sigmoid) to 1e-8 absolute;
* textbook closed forms: E[relu'(x)] = Phi(m/s), E[relu(x)] = m Phi(m/s) + s phi(m/s),
  E[erf(x/sqrt2)] = erf(m/sqrt(2(1+v)));
* m = 0 gives the unshifted kernels; perfect correlation and zero variance give the limits
  (one-point kernels, deterministic factors), never NaN;
* runtime.elementwise.bvn against scipy's numerical bivariate normal CDF.
"""
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as R
from conftest import (ACTIVATIONS, MC_SAMPLES, PROPERTY, assert_mc as _assert_mc, cov2, gaussian_samples,
                      kernel_orders, load, matrix2, standard_normals, variances)
from runtime.elementwise import bvn

means = st.floats(-3.0, 3.0)


def assert_mc(value, values, what=""):
    """conftest.assert_mc; but a shift can push a kink many standard deviations away, where a
    sample that is constant (zero standard error) says only that other values have probability
    below ~15/n (seen in none of n samples but with probability e^-15): allow that much."""
    values = np.asarray(values, dtype=float)
    if values.size and np.all(values == values[0]):
        assert abs(float(value) - values[0]) <= 15 / MC_SAMPLES * max(1.0, abs(values[0])), (what, value)
        return
    _assert_mc(value, values, what)


def shifted_kernels(module):
    return sorted(n for n in vars(module) if n.startswith("shifted_") and callable(getattr(module, n)))


SHIFTED = [(a, n) for a in ACTIVATIONS for n in shifted_kernels(load(a))]
MEANS = [(a, n) for a, n in SHIFTED if n.startswith("shifted_mean_")]
PAIRS = [(a, n) for a, n in SHIFTED if n.startswith("shifted_pair_")]


def _orders(name):
    return kernel_orders(name[len("shifted_"):])


def _product(module, orders, x):
    out = np.ones_like(x)
    for a in orders:
        out = out * module.DERIVATIVES[a](x)
    return out


def _mean_samples(module, orders, m, v):
    sd = math.sqrt(v)
    z = standard_normals(1)[:, 0]
    x = m + sd * z
    if all(a < len(module.DERIVATIVES) for a in orders):
        return _product(module, orders, x)
    if orders == (2,):          # Stein: E[g''(x)] = E[(x - m) g'(x)] / v
        return (x - m) * module.dg(x) / v
    if orders == (3,):          # E[g'''(x)] = E[g(x) He3(z)] / sd^3
        return module.g(x) * (z**3 - 3 * z) / sd**3
    raise AssertionError(f"no Monte Carlo estimator for {orders}")


def _pair_samples(module, a, b, m1, m2, c11, c12, c22):
    X = gaussian_samples(matrix2(c11, c12, c22)) + np.array([m1, m2])
    x1, x2 = X[:, 0], X[:, 1]
    n = len(module.DERIVATIVES)
    if a < n and b < n:
        return module.DERIVATIVES[a](x1) * module.DERIVATIVES[b](x2)
    if a == 2 and b + 1 < n:
        # Stein on x1: E[(x1 - m1) g'(x1) F(x2)] = c11 E[g''(x1) F(x2)] + c12 E[g'(x1) F'(x2)]
        d = module.DERIVATIVES
        return ((x1 - m1) * d[1](x1) * d[b](x2) - c12 * d[1](x1) * d[b + 1](x2)) / c11
    raise AssertionError(f"no Monte Carlo estimator for pair ({a}, {b})")


@pytest.mark.parametrize("activation, kernel", MEANS)
@PROPERTY
@given(m=means, v=variances)
def test_shifted_mean_kernel_matches_monte_carlo(activation, kernel, m, v):
    module = load(activation)
    (orders,) = _orders(kernel)
    value = getattr(module, kernel)(m, v)
    assert np.ndim(value) == 0
    assert_mc(value, _mean_samples(module, orders, m, v), f"{activation}.{kernel}(m={m}, v={v})")


@pytest.mark.parametrize("activation, kernel", PAIRS)
@PROPERTY
@given(m1=means, m2=means, c=cov2())
def test_shifted_pair_kernel_matches_monte_carlo(activation, kernel, m1, m2, c):
    module = load(activation)
    (a,), (b,) = _orders(kernel)
    value = getattr(module, kernel)(m1, m2, *c)
    assert np.ndim(value) == 0
    assert_mc(value, _pair_samples(module, a, b, m1, m2, *c), f"{activation}.{kernel}(m=({m1}, {m2}), c={c})")


# ----------------------------------------------------------------------------------------
# mpmath quadrature

MV = [(0.7, 1.0), (-1.3, 0.05), (2.5, 30.0), (-0.4, 4.0)]
_PAIR_POINTS = [(0.5, -1.0, 1.0, 0.3, 2.0), (-1.2, 0.8, 0.05, -0.7, 0.04), (1.5, 1.3, 10.0, 0.95, 10.0),
                (-0.3, 2.0, 3.0, -0.2, 0.05), (0.2, -0.2, 1.0, -0.995, 1.0)]
PAIR_POINTS = [(m1, m2, c11, r * math.sqrt(c11 * c22), c22) for m1, m2, c11, r, c22 in _PAIR_POINTS]


def _mp_mean(name, orders, m, v):
    m, v = mp.mpf(m), mp.mpf(v)
    sd = mp.sqrt(v)
    if any(R.has_delta(name, a) for a in orders):
        if orders == (2,):      # g'' = jump delta
            return R.jump(name) * mp.npdf(0, m, sd)
        if orders == (3,):
            g = R.derivative(name, 0)
            return R.normal_average(lambda y: g(y) * (((y - m) / sd) ** 3 - 3 * (y - m) / sd), m, sd) / sd**3
    return R.normal_average(R.product(name, orders), m, sd, xcap=R.OSCILLATING.get(name))


def _mp_pair(name, a, b, m1, m2, c11, c12, c22):
    m1, m2, c11, c12, c22 = (mp.mpf(t) for t in (m1, m2, c11, c12, c22))
    kappa, s = R._conditional(c11, c12, c22)
    nested = name not in R._INNER
    if R.has_delta(name, a):
        # E[jump delta(x1) F(x2)] = jump p1(0) E[F(x2) | x1 = 0], x2 | x1 = 0 ~ N(m2 - kappa m1, s^2)
        return R.jump(name) * mp.npdf(0, m1, mp.sqrt(c11)) * R.inner_average(name, b, 0, m2 - kappa * m1, s)
    f1 = R.derivative(name, a)
    rule = R.NESTED if nested else R.FINE
    scales = {s, max(s, mp.mpf(1))}
    extra = [m1 + (bb * scale - m2) / kappa for bb in rule.breaks for scale in scales] if kappa != 0 else []
    return R.normal_average(lambda y: f1(y) * R.inner_average(name, b, 0, m2 + kappa * (y - m1), s, nested),
                            m1, mp.sqrt(c11), rule=rule, xcap=R.OSCILLATING.get(name), extra_breaks=extra)


def _tolerance(module, kernel, exact):
    if kernel in module.SHIFTED_NUMERIC_KERNELS:
        return dict(abs=1e-8)
    return dict(rel=1e-10, abs=1e-13 * max(1.0, abs(exact)))


@pytest.mark.parametrize("activation, kernel", MEANS)
def test_shifted_mean_kernel_matches_mpmath(activation, kernel):
    module = load(activation)
    (orders,) = _orders(kernel)
    for m, v in MV:
        exact = float(_mp_mean(activation, orders, m, v))
        assert getattr(module, kernel)(m, v) == pytest.approx(exact, **_tolerance(module, kernel, exact)), (m, v)


@pytest.mark.parametrize("activation, kernel", [(a, k) for a, k in PAIRS if a in R._INNER or a == "tanh"])
def test_shifted_pair_kernel_matches_mpmath(activation, kernel):
    module = load(activation)
    (a,), (b,) = _orders(kernel)
    points = PAIR_POINTS if activation in R._INNER else PAIR_POINTS[:2]     # nested quadrature is slow
    for point in points:
        exact = float(_mp_pair(activation, a, b, *point))
        assert getattr(module, kernel)(*point) == pytest.approx(exact, **_tolerance(module, kernel, exact)), point


def test_textbook_shifted_averages():
    from scipy.special import erf as serf, ndtr
    relu, erf = load("relu"), load("erf")
    m, v = np.array([-1.3, 0.0, 0.4, 2.0]), np.array([0.5, 2.0, 1e-4, 30.0])
    s = np.sqrt(v)
    assert np.allclose(relu.shifted_mean_1(m, v), ndtr(m / s), rtol=1e-14)
    assert np.allclose(relu.shifted_mean_0(m, v), m * ndtr(m / s) + s * np.exp(-m**2 / (2 * v)) / np.sqrt(2 * np.pi),
                       rtol=1e-13)
    assert np.allclose(erf.shifted_mean_0(m, v), serf(m / np.sqrt(2 * (1 + v))), rtol=1e-13, atol=1e-16)


# ----------------------------------------------------------------------------------------
# m = 0, and the edges

COVS = [(1.0, 0.3, 2.0), (0.01, -0.007, 0.04), (100.0, 27.0, 30.0), (3.0, -0.99 * math.sqrt(0.15), 0.05)]


@pytest.mark.parametrize("activation, kernel", [(a, k) for a, k in SHIFTED
                                                if hasattr(load(a), k[len("shifted_"):])])
def test_zero_mean_gives_the_unshifted_kernel(activation, kernel):
    module = load(activation)
    unshifted = getattr(module, kernel[len("shifted_"):])
    tol = dict(abs=1e-8) if kernel in module.SHIFTED_NUMERIC_KERNELS else dict(rel=1e-10, abs=1e-13)
    if kernel.startswith("shifted_mean_"):
        for v in (0.01, 0.3, 1.0, 7.0, 100.0):
            assert getattr(module, kernel)(0.0, v) == pytest.approx(unshifted(v), **tol), v
    else:
        for c in COVS:
            assert getattr(module, kernel)(0.0, 0.0, *c) == pytest.approx(unshifted(*c), **tol), c


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_perfect_correlation_gives_the_one_point_kernel(activation):
    """x2 = x1: E[g(x1) g(x2)] = E[g(x)^2]; x2 = -x1 is finite and matches Monte Carlo."""
    module = load(activation)
    tol = dict(abs=1e-8) if module.SHIFTED_NUMERIC_KERNELS else dict(rel=1e-12, abs=1e-14)
    m, q = np.array([0.7, -1.1, 0.0, 2.0]), np.array([1.3, 0.2, 5.0, 0.01])
    assert np.allclose(module.shifted_pair_0_0(m, m, q, q, q), module.shifted_mean_00(m, q),
                       rtol=tol.get("rel", 0), atol=tol["abs"])
    assert np.allclose(module.shifted_pair_1_1(m, m, q, q, q), module.shifted_mean_11(m, q),
                       rtol=tol.get("rel", 0), atol=tol["abs"])
    for kernel in [k for k in shifted_kernels(module) if k.startswith("shifted_pair_")]:
        (a,), (b,) = _orders(kernel)
        for sign in (1.0, -1.0):
            value = getattr(module, kernel)(0.7, -0.4, 1.3, sign * 1.3, 1.3)
            assert np.isfinite(value), (kernel, sign)
            if a < len(module.DERIVATIVES) and b < len(module.DERIVATIVES):
                assert_mc(value, _pair_samples(module, a, b, 0.7, -0.4, 1.3, sign * 1.3, 1.3),
                          f"{activation}.{kernel} at correlation {sign}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_zero_variance_gives_the_integrand_at_the_mean(activation):
    """v = 0: E[f(x)] = f(m) (m away from ReLU's kink); c11 = c12 = 0: the x1 factor comes out."""
    module = load(activation)
    tol = 1e-8 if module.SHIFTED_NUMERIC_KERNELS else 1e-12
    for kernel in [k for k in shifted_kernels(module) if k.startswith("shifted_mean_")]:
        (orders,) = _orders(kernel)
        if any(a >= len(module.DERIVATIVES) for a in orders):
            continue
        for m in (-0.8, 1.7):
            value = getattr(module, kernel)(m, 0.0)
            assert value == pytest.approx(float(_product(module, orders, np.array(m))), abs=tol), (kernel, m)
    for kernel in [k for k in shifted_kernels(module) if k.startswith("shifted_pair_")]:
        (a,), (b,) = _orders(kernel)
        if a >= len(module.DERIVATIVES) or b >= len(module.DERIVATIVES):
            continue
        one = getattr(module, f"shifted_mean_{b}", None)
        if one is None:
            continue
        value = getattr(module, kernel)(1.7, -0.3, 0.0, 0.0, 2.0)
        want = float(module.DERIVATIVES[a](np.array(1.7))) * one(-0.3, 2.0)
        assert value == pytest.approx(want, abs=tol), kernel


def test_bivariate_normal_cdf_matches_scipy():
    from scipy.stats import multivariate_normal
    rng = np.random.default_rng(5)
    for _ in range(200):
        h, k = rng.normal(scale=2.0, size=2)
        h = 0.0 if rng.random() < 0.15 else h
        k = 0.0 if rng.random() < 0.15 else k
        r = rng.uniform(-0.999, 0.999)
        want = multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([h, k])
        assert bvn(h, k, r) == pytest.approx(want, abs=1e-7), (h, k, r)
    # limits: rho = +-1, infinite arguments, h = k = 0
    assert bvn(0.3, -0.2, 1.0) == pytest.approx(0.5 * math.erfc(0.2 / math.sqrt(2)), rel=1e-14)
    assert bvn(0.3, 0.2, -1.0) == pytest.approx(max(0.0, 0.5 * math.erfc(-0.3 / math.sqrt(2))
                                                    + 0.5 * math.erfc(-0.2 / math.sqrt(2)) - 1), rel=1e-12)
    assert bvn(np.inf, 0.4, 0.3) == pytest.approx(0.5 * math.erfc(-0.4 / math.sqrt(2)), rel=1e-14)
    assert bvn(-np.inf, 0.4, 0.3) == 0.0
    assert bvn(0.0, 0.0, 0.5) == pytest.approx(0.25 + math.asin(0.5) / (2 * math.pi), rel=1e-14)
