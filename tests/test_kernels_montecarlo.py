"""Every kernel and literature average of every generated module against a seeded Monte Carlo
estimate (2e5 samples, 5 standard errors) on Hypothesis-drawn covariances.

The truth is the sample mean of the integrand, built from the module's own g, g', g'', g'''
(checked against the registry expression in test_generated_module.py); where a derivative is
not an ordinary function (ReLU: g'' = jump * delta) an exact Gaussian identity that needs only
g or g' is sampled instead.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from conftest import (LITERATURE_DIM, PROPERTY, all_kernels, all_literature, assert_mc, cov2,
                      covariance, gaussian_samples, kernel_orders, load, matrix2, standard_normals,
                      variances)


def _literature_integrand(module, name, X):
    g, dg = module.g, module.dg
    x = [X[:, i] for i in range(X.shape[1])]
    return {
        "J2": lambda: x[0] * g(x[1]),
        "I2": lambda: g(x[0]) * g(x[1]),
        "I21": lambda: dg(x[0]) * x[0] * x[1],
        "I22": lambda: dg(x[0]) * x[1] ** 2,
        "I3": lambda: dg(x[0]) * x[1] * g(x[2]),
        "I4": lambda: dg(x[0]) * dg(x[1]) * g(x[2]) * g(x[3]),
    }[name]()


@pytest.mark.parametrize("activation, average", all_literature())
@PROPERTY
@given(data=st.data())
def test_literature_average_matches_monte_carlo(activation, average, data):
    """J2, I2, I21, I22, I3, I4 = the sample mean of their integrand (5 SE)."""
    module = load(activation)
    C = data.draw(covariance(LITERATURE_DIM[average]), label="C")
    X = gaussian_samples(C)
    value = getattr(module, average)(C)
    assert_mc(value, _literature_integrand(module, average, X), f"{activation}.{average}(C={C.tolist()})")


def _product(module, orders, x):
    out = np.ones_like(x)
    for a in orders:
        out = out * module.DERIVATIVES[a](x)
    return out


def _mean_samples(activation, module, orders, v):
    x = np.sqrt(v) * standard_normals(1)[:, 0]
    if all(a < len(module.DERIVATIVES) for a in orders):
        return _product(module, orders, x)
    if len(orders) == 1:
        # E[g^(n)(x)] = E[g(x) He_n(x/sd)] / sd^n (Gaussian integration by parts, n times)
        (n,) = orders
        return module.g(x) * np.polynomial.hermite_e.hermeval(x / np.sqrt(v), [0] * n + [1]) / v ** (n / 2)
    raise AssertionError(f"no Monte Carlo estimator for mean of orders {orders} of {activation}")


def _pair_samples(activation, module, a, b, c11, c12, c22):
    n = len(module.DERIVATIVES)
    if a < n and b < n:
        X = gaussian_samples(matrix2(c11, c12, c22))
        return module.DERIVATIVES[a](X[:, 0]) * module.DERIVATIVES[b](X[:, 1])
    if a == 2 and b < n and reference.has_delta(activation, 2):
        # g'' = jump * delta:  E[g''(x1) F(x2)] = jump p1(0) E[F(x2) | x1 = 0], x2 | x1 = 0 ~ N(0, s^2)
        s = np.sqrt(max(c22 - c12**2 / c11, 0.0))
        jump = float(reference.jump(activation))
        return jump / np.sqrt(2 * np.pi * c11) * module.DERIVATIVES[b](s * standard_normals(1)[:, 0])
    raise AssertionError(f"no Monte Carlo estimator for pair ({a}, {b}) of {activation}")


MEAN_KERNELS = [(a, k) for a, k in all_kernels() if k.startswith("mean_")]
PAIR_KERNELS = [(a, k) for a, k in all_kernels() if k.startswith("pair_")]


@pytest.mark.parametrize("activation, kernel", MEAN_KERNELS)
@PROPERTY
@given(v=variances)
def test_mean_kernel_matches_monte_carlo(activation, kernel, v):
    """mean_*(v) = the sample mean of the product of derivatives at x ~ N(0, v) (5 SE)."""
    module = load(activation)
    (orders,) = kernel_orders(kernel)
    value = getattr(module, kernel)(v)
    assert np.ndim(value) == 0
    assert_mc(value, _mean_samples(activation, module, orders, v), f"{activation}.{kernel}(v={v})")


@pytest.mark.parametrize("activation, kernel", PAIR_KERNELS)
@PROPERTY
@given(c=cov2())
def test_pair_kernel_matches_monte_carlo(activation, kernel, c):
    """pair_a_b(c11, c12, c22) = the sample mean of g^(a)(x1) g^(b)(x2) (5 SE)."""
    module = load(activation)
    (a,), (b,) = kernel_orders(kernel)
    value = getattr(module, kernel)(*c)
    assert np.ndim(value) == 0
    assert_mc(value, _pair_samples(activation, module, a, b, *c), f"{activation}.{kernel}(c={c})")
