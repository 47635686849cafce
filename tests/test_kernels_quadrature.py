"""Kernels and literature averages against mpmath quadrature at 30 digits (tests/reference.py).

Closed forms (every kernel outside NUMERIC_KERNELS, and the literature averages of CLOSED_FORM
modules): relative error <= 1e-10, or absolute <= 1e-13 times the average's natural scale (a
Cauchy-Schwarz/Hoelder bound) where the average is ~0. Numerical kernels (tanh, sigmoid):
absolute error <= 1e-8. Variances 1e-2 ... 1e2, correlations up to +-0.999.
"""
import math

import mpmath as mp
import numpy as np
import pytest

import reference as R
from conftest import ACTIVATIONS, kernel_names, kernel_orders, load

RTOL, SCALE_ATOL, NUMERIC_ATOL = 1e-10, 1e-13, 1e-8

VARIANCES = [0.01, 0.1, 1.0, 7.0, 100.0]
#: (var1, correlation, var2): across the range, and edge-ish ones
_COVS = [(1.0, 0.3, 2.0), (0.01, -0.7, 0.04), (100.0, 0.5, 30.0), (3.0, -0.2, 0.05),
         (0.01, 0.999, 100.0), (100.0, -0.999, 0.01), (100.0, 0.999, 100.0), (0.01, 0.999, 0.01)]
COVS = [(v1, r * math.sqrt(v1 * v2), v2) for v1, r, v2 in _COVS]
#: nested (two-dimensional) quadrature costs ~0.7 s a value: fewer, keeping the edge-ish ones
NESTED_COVS = [COVS[i] for i in (0, 4, 5, 6, 7)]


def _corr3(r12, r13, r23, variances):
    sd = np.sqrt(variances)
    return np.array([[1, r12, r13], [r12, 1, r23], [r13, r23, 1]]) * np.outer(sd, sd)


COVS3 = [_corr3(0.3, -0.5, 0.4, [1, 2, 0.5]), _corr3(0.9, 0.95, 0.8, [0.01, 100, 1]),
         _corr3(-0.6, 0.2, 0.1, [100, 0.01, 30]), _corr3(0.999, 0.998, 0.9975, [1, 1, 1]),
         _corr3(0.1, -0.99, -0.05, [0.05, 5, 0.02])]


def _nested(activation):
    return activation not in R.TEXTBOOK


def assert_matches(value, ref, scale, numeric, what):
    value = float(value)
    ref, scale = float(ref), float(scale)
    if numeric:
        assert abs(value - ref) <= NUMERIC_ATOL, f"{what}: {value!r} vs mpmath {ref!r}"
    else:
        tol = RTOL * abs(ref) + SCALE_ATOL * scale
        assert abs(value - ref) <= tol, (
            f"{what}: {value!r} vs mpmath {ref!r} (relative error {abs(value - ref) / max(abs(ref), 1e-300):.2e})")


# ----------------------------------------------------------------------------------------
# The reference itself


@pytest.mark.parametrize("activation", sorted(R.TEXTBOOK))
def test_reference_inner_table_matches_quadrature(activation):
    """The textbook averages E[y^p g^(b)(y)], y ~ N(m, s^2), used as inner integrals, agree with
    one-dimensional mpmath quadrature (b <= 1; sin's up to b = 3, its table covers every order)."""
    for m, s in [(0.3, 0.7), (-2.5, 0.05), (4.0, 3.0), (0.0, 10.0), (-0.01, 0.004)]:
        for b in ((0, 1, 2, 3) if activation in R.EVERY_ORDER else (0, 1)):
            for p in (0, 1):
                table = R.inner_average(activation, b, p, m, s)
                quad = R.inner_by_quadrature(activation, b, p, m, s)
                assert abs(table - quad) <= 1e-19 * (1 + abs(quad)), (activation, b, p, m, s)


def test_reference_one_dimensional_rule_reproduces_exact_moments():
    """The one-dimensional rule gives E[x^4] = 3 v^2, E[cos x] = exp(-v/2), E[relu(x)^2] = v/2."""
    for v in VARIANCES:
        assert abs(R.mean("quadratic", (0, 0), v) - 3 * mp.mpf(v) ** 2) <= 1e-18 * v**2
        assert abs(R.mean("relu", (0, 0), v) - mp.mpf(v) / 2) <= 1e-18 * v
        if v <= 30:
            assert abs(R.mean("sin", (1,), v) - mp.exp(-mp.mpf(v) / 2)) <= 1e-18


@pytest.mark.parametrize("c", [COVS[0], COVS[6]], ids=str)
def test_reference_nested_rule_reproduces_erf_closed_form(c):
    """The nested rule used for tanh and sigmoid, applied to erf (as steep), reproduces the
    textbook E[erf(x1/sqrt2) erf(x2/sqrt2)] = (2/pi) asin(c12 / sqrt((1+c11)(1+c22)))."""
    c11, c12, c22 = (mp.mpf(t) for t in c)
    exact = 2 / mp.pi * mp.asin(c12 / mp.sqrt((1 + c11) * (1 + c22)))
    assert abs(R.pair("erf", 0, 0, *c, nested=True) - exact) <= 1e-13


# ----------------------------------------------------------------------------------------
# Kernels

MEAN_CASES = [(a, k, v) for a in ACTIVATIONS for k in kernel_names(load(a)) if k.startswith("mean_")
              for v in VARIANCES]


def _pair_covs(activation, kernel):
    if not _nested(activation):
        return COVS
    # a closed form of a module with numerical kernels (tanh's pair_1_0 = 0 by parity)
    return NESTED_COVS if kernel in load(activation).NUMERIC_KERNELS else NESTED_COVS[:2]


PAIR_CASES = [(a, k, c) for a in ACTIVATIONS for k in kernel_names(load(a)) if k.startswith("pair_")
              for c in _pair_covs(a, k)]


@pytest.mark.parametrize("activation, kernel, v", MEAN_CASES)
def test_mean_kernel_matches_mpmath(activation, kernel, v):
    """mean_*(v) against a one-dimensional mpmath integral of the registry's derivatives."""
    module = load(activation)
    (orders,) = kernel_orders(kernel)
    ref = R.mean(activation, orders, v)
    numeric = kernel in module.NUMERIC_KERNELS
    scale = 0 if numeric else R.mean_scale(activation, orders, v)
    assert_matches(getattr(module, kernel)(v), ref, scale, numeric, f"{activation}.{kernel}({v})")


@pytest.mark.parametrize("activation, kernel, c", PAIR_CASES, ids=str)
def test_pair_kernel_matches_mpmath(activation, kernel, c):
    """pair_a_b(c11, c12, c22) against mpmath in conditional coordinates."""
    module = load(activation)
    (a,), (b,) = kernel_orders(kernel)
    ref = R.pair(activation, a, b, *c)
    numeric = kernel in module.NUMERIC_KERNELS
    scale = 0 if numeric else R.pair_scale(activation, a, b, *c)
    assert_matches(getattr(module, kernel)(*c), ref, scale, numeric, f"{activation}.{kernel}{c}")


# ----------------------------------------------------------------------------------------
# Literature averages of the closed-form modules

CLOSED = [a for a in ACTIVATIONS if load(a).CLOSED_FORM]
LIT2_CASES = [(a, n, c) for a in CLOSED for n in ("J2", "I2", "I21", "I22") if n in load(a).LITERATURE
              for c in COVS]
LIT3_CASES = [(a, i) for a in CLOSED if "I3" in load(a).LITERATURE for i in range(len(COVS3))]


def test_closed_form_flags_are_consistent():
    """CLOSED_FORM is exactly 'no numerical kernel'; only tanh and sigmoid need quadrature."""
    for a in ACTIVATIONS:
        module = load(a)
        assert module.CLOSED_FORM == (len(module.NUMERIC_KERNELS) == 0)
        assert set(module.NUMERIC_KERNELS) <= set(kernel_names(module))


@pytest.mark.parametrize("activation, average, c", LIT2_CASES, ids=str)
def test_two_point_literature_average_matches_mpmath(activation, average, c):
    """J2 (regression of x1 on x2), I21, I22 (one-dimensional) and I2 (conditional coordinates)."""
    module = load(activation)
    C = np.array([[c[0], c[1]], [c[1], c[2]]])
    ref = getattr(R, average)(activation, *c)
    scale = R.literature_scale(activation, average, C.tolist())
    assert_matches(getattr(module, average)(C), ref, scale, False, f"{activation}.{average}{c}")


@pytest.mark.parametrize("activation, index", LIT3_CASES)
def test_I3_matches_mpmath(activation, index):
    """I3 = E[g'(x1) x2 g(x3)] with E[x2 | x1, x3] by regression, then x3 | x1 in conditional
    coordinates."""
    module = load(activation)
    C = COVS3[index]
    ref = R.I3(activation, C.tolist())
    scale = R.literature_scale(activation, "I3", C.tolist())
    assert_matches(module.I3(C), ref, scale, False, f"{activation}.I3({C.tolist()})")


def test_far_nodes_of_an_exponential_activation_raise_no_overflow_warning():
    """sigmoid's derivatives, written with e^(kx), overflow to inf in their denominators at the far
    nodes of a wide Gaussian (variance 1e4: x up to 900), which is their limit 0, not an error: the
    averages are silent and right, E[g^(5)(x)] against mpmath at 30 digits and E[g^(5)(x1) g(x2)] at
    c12 = 0 equal to E[g^(5)] E[g] = E[g^(5)] / 2."""
    import warnings
    import mpmath as mp
    from generated import sigmoid
    from runtime import quadrature
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        one = quadrature.expect1(sigmoid.DERIVATIVES, (5,), 1e4)
        pair = quadrature.expect2(sigmoid.DERIVATIVES, (5,), (0,), 1e4, 0.0, 1e4)
        units = quadrature.expect_units(sigmoid.DERIVATIVES, [((5,), (0,))], np.array([[1e4, 0.0], [0.0, 1e4]]))
    with mp.workdps(30):
        d5 = lambda x: mp.diff(lambda u: 1 / (1 + mp.exp(-u)), x, 5)
        exact = float(mp.quad(lambda x: d5(x) * mp.npdf(x, 0, 100), [-200, -40, -10, 0, 10, 40, 200]))
    assert abs(one - exact) <= 1e-6 * abs(exact)
    assert abs(pair - exact / 2) <= 1e-6 * abs(exact)
    assert np.all(np.isfinite(units[0])) and abs(units[0][0, 1] - exact / 2) <= 1e-6 * abs(exact)
