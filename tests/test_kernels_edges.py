"""The boundary of the PSD cone: perfectly correlated inputs (C12^2 = C11 C22, both signs) and
zero variances give finite values equal to the exact degenerate expectation, without a
RuntimeWarning.

Truth: with x2 = alpha x1 the average is one-dimensional (mpmath, tests/reference.py); with
x1 = 0 it is g^(a)(0) (Heaviside(0) = 1/2 for ReLU's g') times a one-dimensional average.
The covariances are exact binary fractions, so det C is exactly 0 in floating point.
Tolerances: closed forms 1e-10 relative (1e-13 of the Cauchy-Schwarz scale near 0),
numerical kernels 1e-8 absolute. Exception: for a kinked g, pair_1_1 = E[g'(x1) g'(x2)] has an
infinite slope ~1/sqrt(det) in C12 at the boundary, so a one-ulp change of the input moves it
by ~sqrt(eps)/(2 pi); there it is held to 1e-7 of its scale.
"""
import warnings

import mpmath as mp
import numpy as np
import pytest

import reference as R
from conftest import ACTIVATIONS, kernel_names, kernel_orders, load, matrix2

RTOL, SCALE_ATOL, NUMERIC_ATOL, KINKED_RTOL = 1e-10, 1e-13, 1e-8, 1e-7

#: det = 0 exactly; sqrt(c11) sqrt(c22) is exact for the last four, off by an ulp for the first two
PERFECT = [(2.0, 4.0, 8.0), (2.0, -4.0, 8.0), (4.0, 6.0, 9.0), (4.0, -6.0, 9.0),
           (1 / 64, 1.0, 64.0), (0.25, -5.0, 100.0)]
VARIANCES = [0.01, 1.0, 100.0]


def quiet(f, *args):
    """f(*args) with every warning an error (no RuntimeWarning at the edges)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return f(*args)


def _tolerance(module, kernel, activation, expected, scale):
    """kernel "I" stands for a literature average (numerical if any kernel is)."""
    if kernel in module.NUMERIC_KERNELS or (kernel == "I" and module.NUMERIC_KERNELS):
        return NUMERIC_ATOL
    if kernel == "pair_1_1" and R.has_delta(activation, 2):
        return KINKED_RTOL * (abs(expected) + scale)
    return RTOL * abs(expected) + SCALE_ATOL * scale + 1e-300


def assert_edge(module, kernel, activation, value, expected, scale, what):
    value, expected, scale = float(value), float(expected), float(scale)
    assert np.isfinite(value), f"{what}: {value}"
    tol = _tolerance(module, kernel, activation, expected, scale)
    assert abs(value - expected) <= tol, f"{what}: {value!r}, exact degenerate value {expected!r}"


def g_at_zero(activation, order):
    return R.derivative(activation, order)(mp.mpf(0))


def mean_of(activation, order, v):
    """E[g^(order)(x)], x ~ N(0, v) (jump p(0) for a delta), and its scale sqrt(E[g^(order)^2])."""
    if v == 0:
        value = g_at_zero(activation, order)
        return value, abs(value)
    if R.has_delta(activation, order):
        assert order == 2
        value = R.jump(activation) / mp.sqrt(2 * mp.pi * v)
        return value, abs(value)
    return R.mean(activation, (order,), v), R.mean_scale(activation, (order,), v)


PAIRS = [(a, k) for a in ACTIVATIONS for k in kernel_names(load(a)) if k.startswith("pair_")]
MEANS = [(a, k) for a in ACTIVATIONS for k in kernel_names(load(a)) if k.startswith("mean_")]


@pytest.mark.parametrize("c", PERFECT, ids=str)
@pytest.mark.parametrize("activation, kernel", PAIRS)
def test_pair_kernel_perfectly_correlated(activation, kernel, c):
    """x2 = (C12/C11) x1: pair_a_b is the one-dimensional E[g^(a)(x1) g^(b)(alpha x1)]."""
    module = load(activation)
    (a,), (b,) = kernel_orders(kernel)
    expected = R.pair(activation, a, b, *c)            # det = 0: s = 0, a 1-D integral
    scale = abs(expected) if R.has_delta(activation, a) else R.pair_scale(activation, a, b, *c)
    value = quiet(getattr(module, kernel), *c)
    assert_edge(module, kernel, activation, value, expected, scale, f"{activation}.{kernel}{c}")


@pytest.mark.parametrize("c", PERFECT, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_I2_perfectly_correlated(activation, c):
    """I2 at C12^2 = C11 C22 is the one-dimensional E[g(x1) g(alpha x1)]."""
    module = load(activation)
    expected = R.pair(activation, 0, 0, *c)
    value = quiet(module.I2, matrix2(*c))
    assert_edge(module, "pair_0_0", activation, value, expected, R.pair_scale(activation, 0, 0, *c),
                f"{activation}.I2{c}")


def test_I3_perfectly_correlated():
    """x3 = x1 exactly (C = [[4, 1, 4], [1, 3, 1], [4, 1, 4]]): I3 = (C12/C11) E[g'(x1) x1 g(x1)]."""
    C = np.array([[4.0, 1.0, 4.0], [1.0, 3.0, 1.0], [4.0, 1.0, 4.0]])
    for activation in ACTIVATIONS:
        module = load(activation)
        g, d1 = R.derivative(activation, 0), R.derivative(activation, 1)
        expected = mp.mpf(1) / 4 * R.normal_average(lambda y: d1(y) * y * g(y), 0, 2)
        value = quiet(module.I3, C)
        numeric = bool(module.NUMERIC_KERNELS)
        tol = NUMERIC_ATOL if numeric else RTOL * abs(float(expected))
        assert np.isfinite(value) and abs(float(value) - float(expected)) <= tol, (activation, value, expected)


@pytest.mark.parametrize("v", VARIANCES)
@pytest.mark.parametrize("activation, kernel", PAIRS)
def test_pair_kernel_zero_variance(activation, kernel, v):
    """x2 = 0 (C12 = C22 = 0): E[g^(a)(x1)] g^(b)(0); x1 = 0: g^(a)(0) E[g^(b)(x2)]; both 0:
    g^(a)(0) g^(b)(0)."""
    module = load(activation)
    (a,), (b,) = kernel_orders(kernel)
    f = getattr(module, kernel)
    cases = [((v, 0.0, 0.0), mean_of(activation, a, v), mean_of(activation, b, 0))]
    if not R.has_delta(activation, a):
        cases += [((0.0, 0.0, v), mean_of(activation, a, 0), mean_of(activation, b, v)),
                  ((0.0, 0.0, 0.0), mean_of(activation, a, 0), mean_of(activation, b, 0))]
    for c, (m1, s1), (m2, s2) in cases:
        assert_edge(module, kernel, activation, quiet(f, *c), m1 * m2, s1 * s2, f"{activation}.{kernel}{c}")


@pytest.mark.parametrize("activation, kernel", MEANS)
def test_mean_kernel_zero_variance(activation, kernel):
    """mean_*(0) = the product of the derivatives at 0 (not defined for ReLU's g''' = delta')."""
    module = load(activation)
    (orders,) = kernel_orders(kernel)
    if any(R.has_delta(activation, a) for a in orders):
        pytest.skip("g''' of a kinked activation is not a function at 0")
    expected = mp.fprod(g_at_zero(activation, a) for a in orders)
    assert_edge(module, kernel, activation, quiet(getattr(module, kernel), 0.0), expected, abs(expected),
                f"{activation}.{kernel}(0)")


@pytest.mark.parametrize("v", VARIANCES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_literature_zero_variance(activation, v):
    """J2, I2, I21, I22, I3 with a variable identically 0 (scale: Cauchy-Schwarz bound)."""
    module = load(activation)
    g0, d0 = g_at_zero(activation, 0), g_at_zero(activation, 1)
    Eg, rms_g = mean_of(activation, 0, v)
    first_zero, second_zero = matrix2(0.0, 0.0, v), matrix2(v, 0.0, 0.0)
    c23 = 0.5 * np.sqrt(2.0 * v)
    C3 = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, c23], [0.0, c23, v]])
    expectations = [                                  # (average, C, exact value, scale)
        ("I2", first_zero, g0 * Eg, abs(g0) * rms_g), ("I2", second_zero, Eg * g0, abs(g0) * rms_g),
        ("J2", first_zero, 0, 0), ("J2", second_zero, 0, 0),
        ("I21", first_zero, 0, 0), ("I21", second_zero, 0, 0),
        ("I22", first_zero, d0 * v, abs(d0) * v), ("I22", second_zero, 0, 0),
        # x1 = 0: I3 = g'(0) E[x2 g(x3)] = g'(0) J2([[C22, C23], [C23, C33]])
        ("I3", C3, d0 * R.J2(activation, 2.0, c23, v), abs(d0) * np.sqrt(2.0) * rms_g),
    ]
    for name, C, expected, scale in expectations:
        assert_edge(module, "I", activation, quiet(getattr(module, name), C), expected, scale,
                    f"{activation}.{name}({C.tolist()})")


@pytest.mark.parametrize("activation, kernel", PAIRS)
def test_pair_kernel_subnormal_correlation(activation, kernel):
    """A correlation of 1e-310 (C12 = 0 up to a subnormal) gives the factorised value and no
    RuntimeWarning."""
    module = load(activation)
    f = getattr(module, kernel)
    at_zero = quiet(f, 1.0, 0.0, 2.0)
    value = quiet(f, 1.0, 1e-310, 2.0)
    assert abs(float(value) - float(at_zero)) <= 1e-12
