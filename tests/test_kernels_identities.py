"""Exact identities between kernels, on Hypothesis-drawn covariances.

Truth: theorems about Gaussian averages, not the code's derivation -- Price's theorem
d/dC12 E[f1(x1) f2(x2)] = E[f1'(x1) f2'(x2)], the heat equation d/dC11 E[f1(x1) f2(x2)] =
E[f1''(x1) f2(x2)]/2, exchange symmetry, factorisation at C12 = 0, and x1 = x2 when
C11 = C12 = C22. Derivatives are five-point central differences (truncation O(h^4) ~ 1e-12
relative with h a thousandth of the distance to the edge of the PSD cone; rounding
~ eps |f| / h), hence the 1e-6 tolerance on differentiated identities; the others are exact
up to rounding (closed forms) or the 1e-10 quadrature accuracy documented in
runtime/quadrature.py (numerical kernels).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from conftest import ACTIVATIONS, PROPERTY, cov2, load, matrix2, variances

FD_RTOL, FD_ATOL = 1e-6, 1e-9
EXACT_RTOL, EXACT_ATOL, NUMERIC_ATOL, KINKED_RTOL = 1e-12, 1e-15, 1e-10, 1e-7

#: correlations kept within 0.99 so that the finite-difference stencil has room
price_cov = st.tuples(variances, st.floats(-0.99, 0.99), variances).map(
    lambda t: (t[0], t[1] * np.sqrt(t[0] * t[2]), t[2]))


def derivative(f, x, h):
    """Five-point central difference f'(x)."""
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def assert_fd(fd, exact, what):
    fd, exact = float(fd), float(exact)
    assert abs(fd - exact) <= FD_RTOL * abs(exact) + FD_ATOL, f"{what}: difference quotient {fd!r}, kernel {exact!r}"


def assert_equal(module, kernels, left, right, what):
    left, right = float(left), float(right)
    numeric = any(k in module.NUMERIC_KERNELS for k in kernels)
    tol = NUMERIC_ATOL if numeric else EXACT_RTOL * max(abs(left), abs(right)) + EXACT_ATOL
    assert abs(left - right) <= tol, f"{what}: {left!r} != {right!r}"


def _c12_step(c11, c12, c22):
    return 1e-3 * (np.sqrt(c11 * c22) - abs(c12))


def _c11_step(c11, c12, c22):
    return 1e-3 * (c11 - c12**2 / c22)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(c=price_cov)
def test_price_pair_0_0_and_I2(activation, c):
    """Price: d/dc12 pair_0_0 = d/dc12 I2 = pair_1_1."""
    m = load(activation)
    c11, c12, c22 = c
    h = _c12_step(*c)
    exact = m.pair_1_1(*c)
    assert_fd(derivative(lambda t: m.pair_0_0(c11, t, c22), c12, h), exact, f"{activation} d pair_0_0/dc12 {c}")
    assert_fd(derivative(lambda t: m.I2(matrix2(c11, t, c22)), c12, h), exact, f"{activation} d I2/dc12 {c}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(c=price_cov)
def test_price_pair_1_0_equals_heat_equation(activation, c):
    """E[g''(x1) g'(x2)] two ways: Price (d/dc12 of pair_1_0) and the heat equation in x1
    (2 d/dc11 of E[g(x1) g'(x2)] = pair_1_0 with the variables exchanged)."""
    m = load(activation)
    c11, c12, c22 = c
    price = derivative(lambda t: m.pair_1_0(c11, t, c22), c12, _c12_step(*c))
    heat = 2 * derivative(lambda t: m.pair_1_0(c22, c12, t), c11, _c11_step(*c))
    assert_fd(price, heat, f"{activation} E[g''(x1) g'(x2)] at {c}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(c=price_cov)
def test_heat_equation_pair_2_0(activation, c):
    """Heat equation: 2 d/dc11 pair_0_0 = pair_2_0 (for ReLU, g'' = delta)."""
    m = load(activation)
    c11, c12, c22 = c
    fd = 2 * derivative(lambda t: m.pair_0_0(t, c12, c22), c11, _c11_step(*c))
    assert_fd(fd, m.pair_2_0(*c), f"{activation} 2 d pair_0_0/dc11 {c}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(c=cov2())
def test_exchange_symmetry(activation, c):
    """I2(C) = I2(P C P) for the swap P; pair_0_0 and pair_1_1 are symmetric in (c11, c22)."""
    m = load(activation)
    c11, c12, c22 = c
    C = matrix2(*c)
    assert_equal(m, ["pair_0_0"], m.I2(C), m.I2(C[::-1, ::-1]), f"{activation} I2 swap {c}")
    for k in ("pair_0_0", "pair_1_1"):
        f = getattr(m, k)
        assert_equal(m, [k], f(c11, c12, c22), f(c22, c12, c11), f"{activation} {k} swap {c}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(v1=variances, v2=variances)
def test_factorisation_at_zero_correlation(activation, v1, v2):
    """At c12 = 0, pair_a_b(c11, 0, c22) = E[g^(a)(x1)] E[g^(b)(x2)] (E[g''] = 2 d/dv mean_0)."""
    m = load(activation)
    kernels = ["pair_0_0", "pair_1_0", "pair_1_1", "mean_0", "mean_1"]
    assert_equal(m, kernels, m.pair_0_0(v1, 0.0, v2), m.mean_0(v1) * m.mean_0(v2), f"{activation} pair_0_0")
    assert_equal(m, kernels, m.pair_1_0(v1, 0.0, v2), m.mean_1(v1) * m.mean_0(v2), f"{activation} pair_1_0")
    assert_equal(m, kernels, m.pair_1_1(v1, 0.0, v2), m.mean_1(v1) * m.mean_1(v2), f"{activation} pair_1_1")
    mean_2 = 2 * derivative(m.mean_0, v1, 1e-3 * v1)
    assert_fd(m.pair_2_0(v1, 0.0, v2), mean_2 * m.mean_0(v2), f"{activation} pair_2_0 at c12 = 0")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(v=variances)
def test_diagonal_pair_0_0_is_mean_00(activation, v):
    """C11 = C12 = C22 = v means x1 = x2: mean_00(v) = pair_0_0(v, v, v)."""
    m = load(activation)
    assert_equal(m, ["mean_00", "pair_0_0"], m.pair_0_0(v, v, v), m.mean_00(v),
                 f"{activation} pair_0_0(v, v, v), v={v}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@PROPERTY
@given(v=variances)
def test_diagonal_pair_1_1_is_mean_11(activation, v):
    """mean_11(v) = pair_1_1(v, v, v). For a kinked g, pair_1_1 has slope ~1/sqrt(det) in c12
    at the diagonal, so a one-ulp change of the input moves it by ~sqrt(eps)/(2 pi): 1e-7 there."""
    m = load(activation)
    left, right = m.pair_1_1(v, v, v), m.mean_11(v)
    if reference.has_delta(activation, 2):
        assert abs(left - right) <= KINKED_RTOL * abs(right), (
            f"{activation} pair_1_1(v, v, v) = {left!r} != {right!r}")
    else:
        assert_equal(m, ["mean_11", "pair_1_1"], left, right, f"{activation} pair_1_1(v, v, v), v={v}")
