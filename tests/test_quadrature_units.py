"""Averages over several units (runtime.quadrature.expect_units, the multi_* factors of the
finite-D equations) against Isserlis' theorem and a seeded Monte Carlo.

Index tuples over K = 3 units cover one, two and three distinct units (the one-, two- and
three-level double-exponential rules)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generated import load
from runtime.quadrature import THREE_UNIT_ACCURACY, expect_units

ORDERS = (((1,), (0,), (0,)), ((2,), (1,), (0,)), ((1,), (1,), (0,), (0,)), ((3,), (0,), (0,)))


def _covariance(seed, scale):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((3, 3))
    return scale**2 * M @ M.T + 0.05 * np.eye(3)


def _isserlis(Q, idx):
    a, b, c, d = idx
    return Q[a, b] * Q[c, d] + Q[a, c] * Q[b, d] + Q[a, d] * Q[b, c]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 2.5), rank_one=st.booleans())
def test_linear_four_point_averages_are_isserlis(seed, scale, rank_one):
    """E[lambda_a lambda_b lambda_c lambda_d] for every (a, b, c, d), also for perfectly
    correlated units (Q of rank one, where the rule regresses with a pseudo-inverse)."""
    Q = _covariance(seed, scale)
    if rank_one:
        u = np.random.default_rng(seed + 1).standard_normal(3) * scale
        Q = np.outer(u, u)
    (out,) = expect_units(load("linear").DERIVATIVES, (((0,), (0,), (0,), (0,)),), Q)
    for idx in itertools.product(range(3), repeat=4):
        # the accuracy the rules are built for: 1e-12 on one or two units, THREE_UNIT_ACCURACY on three
        accuracy = THREE_UNIT_ACCURACY if len(set(idx)) == 3 else 1e-12
        assert abs(out[idx] - _isserlis(Q, idx)) <= accuracy * np.trace(Q) ** 2, idx


def _monte_carlo(act, Q, orders, samples=2_000_000, chunk=250_000, seed=0, means=0.0):
    """Mean and standard error of prod g^(a)(lambda_k) for every tuple of units, lambda ~ N(means, Q)."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(Q)
    n = len(orders)
    total = total2 = 0.0
    for _ in range(samples // chunk):
        lam = rng.standard_normal((chunk, 3)) @ L.T + means
        factors = [np.prod([act.DERIVATIVES[a](lam) for a in o], axis=0) for o in orders]   # (chunk, 3) each
        prod = factors[0]
        for f in factors[1:]:
            prod = prod[..., None] * f.reshape((chunk,) + (1,) * (prod.ndim - 1) + (3,))
        total, total2 = total + prod.sum(0), total2 + (prod**2).sum(0)
    mean = total / samples
    assert prod.ndim == n + 1
    return mean, np.sqrt(np.maximum(total2 / samples - mean**2, 0) / samples)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.3, 2.0))
def test_three_unit_averages_match_monte_carlo(seed, scale):
    Q = _covariance(seed, scale)
    # sin only where its three-unit rule is accurate (variances up to ~7, N_TRIPLE's comment)
    for name in ("erf", "tanh", "sin") if scale <= 1.0 else ("erf", "tanh"):
        act = load(name)
        for orders, value in zip(ORDERS, expect_units(act.DERIVATIVES, ORDERS, Q)):
            mean, se = _monte_carlo(act, Q, orders)
            assert np.all(np.abs(value - mean) <= 5 * se + 1e-12), (name, orders, np.max(np.abs(value - mean) / se))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 3.0))
def test_polynomial_activations_are_exact_for_any_number_of_units(seed, scale):
    """With the degree given, Gauss-Hermite in whitened coordinates: linear against Isserlis for
    K = 4 (also with Q of rank two), quadratic against the one- and two-unit rules for K = 2."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((4, 2 if seed % 2 else 4)) * scale
    Q = M @ M.T
    (out,) = expect_units(load("linear").DERIVATIVES, (((0,), (0,), (0,), (0,)),), Q, 1)
    for idx in itertools.product(range(4), repeat=4):
        assert abs(out[idx] - _isserlis(Q, idx)) <= 1e-12 * np.trace(Q) ** 2, idx
    quadratic = load("quadratic")
    for exact, rule in zip(expect_units(quadratic.DERIVATIVES, ORDERS, Q[:2, :2], 2),
                           expect_units(quadratic.DERIVATIVES, ORDERS, Q[:2, :2])):
        np.testing.assert_allclose(exact, rule, rtol=1e-9, atol=1e-9 * np.trace(Q) ** 4)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.3, 2.0), shift=st.floats(0.2, 2.0))
def test_averages_over_shifted_fields_match_monte_carlo(seed, scale, shift):
    """lambda ~ N(means, Q), the fields of a network with an encoder bias: the one-, two- and
    three-unit rules against a Monte Carlo, and the exact polynomial rule against the others."""
    Q = _covariance(seed, scale)
    means = shift * np.random.default_rng(seed + 2).standard_normal(3)
    # sin only where its three-unit rule is accurate (variances up to ~7, N_TRIPLE's comment)
    for name in ("erf", "tanh", "sin") if scale <= 1.0 else ("erf", "tanh"):
        act = load(name)
        for orders, value in zip(ORDERS, expect_units(act.DERIVATIVES, ORDERS, Q, means=means)):
            mean, se = _monte_carlo(act, Q, orders, means=means)
            assert np.all(np.abs(value - mean) <= 5 * se + 1e-12), (name, orders, np.max(np.abs(value - mean) / se))
    quadratic = load("quadratic")
    for exact, rule in zip(expect_units(quadratic.DERIVATIVES, ORDERS, Q[:2, :2], 2, means[:2]),
                           expect_units(quadratic.DERIVATIVES, ORDERS, Q[:2, :2], means=means[:2])):
        np.testing.assert_allclose(exact, rule, rtol=1e-9, atol=1e-9 * (np.trace(Q) + means @ means) ** 4)


def test_more_than_three_units_is_a_value_error():
    with pytest.raises(ValueError, match="K <= 3"):
        expect_units(load("erf").DERIVATIVES, ORDERS, np.eye(4))


def test_tables_asked_once_for_every_pair_agree_with_pair_by_pair():
    """expect_units asks the tables once for all sets of two units (their signatures' union at their
    covariances stacked) and, where that call gives nothing, once per set: both give the same
    averages (to rounding), and those of the rule without tables to its accuracy."""
    from functools import partial

    from runtime import fast_kernels, quadrature
    act = load("erf")
    orders = ORDERS + (((1,), (1,)), ((2,), (0,)), ((1, 1),), ((3,), (1,)))
    Q = _covariance(3, 0.8)
    asked = []

    def tables(signatures, Qs, refuse_stacked=False):
        asked.append(Qs.shape[0])
        if refuse_stacked and Qs.shape[0] > 1:
            return None
        return fast_kernels.tabulated_units(act.DERIVATIVES, signatures, Qs)

    results = []
    for refuse in (False, True):
        quadrature._LAST[0] = None
        asked.clear()
        results.append(expect_units(act.DERIVATIVES, orders, Q, tabulated=partial(tables, refuse_stacked=refuse)))
        # 3 units and 6 ordered pairs: 2 calls together; refused: each stacked call, then its sets one by one
        assert asked == ([3, 6] if not refuse else [3, 1, 1, 1, 6, 1, 1, 1, 1, 1, 1]), asked
    quadrature._LAST[0] = None
    bare = expect_units(act.DERIVATIVES, orders, Q)
    for together, one_by_one, rule in zip(*results, bare):
        np.testing.assert_allclose(together, one_by_one, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(together, rule, rtol=0, atol=THREE_UNIT_ACCURACY)


def test_smoothed_kink_pairs_with_means_at_small_variances(monkeypatch):
    """A pair's averages where one unit carries a sharp factor (g_eps'' and higher) and the other only
    smooth ones, at variances of a few eps^2 with means (a trained bias at a saddle start): the rule puts
    the sharp unit outer, whose nodes are centred on its kink; inner, its structure would sit at
    x1 = m1 - m2 / kappa, between the outer nodes (one rule per unordered pair erred by 1.6e-7 here and
    broke the diffusion paths' PSD check). Against the same rules with 3 times the nodes: 1e-9 of the
    largest average."""
    from runtime import quadrature
    act = load("relu")
    derivatives = quadrature._at_width(act.SMOOTHED, act.SMOOTHING)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 2, 3))
    Q = A @ np.swapaxes(A, -1, -2) * 0.01
    means = np.tile([0.3, -0.2], (6, 1))
    orders = (((4,), (1,), (0,)), ((3,), (0,)), ((0,), (3,)), ((4,), (1,)), ((2,), (0,), (0,)))

    def averages():
        quadrature._LAST[:] = [None, {}]
        return quadrature.expect_units(derivatives, orders, Q, None, means, act.SMOOTHING)
    got = averages()
    monkeypatch.setattr(quadrature, "N_OUTER", 3 * quadrature.N_OUTER)
    monkeypatch.setattr(quadrature, "N_INNER", 3 * quadrature.N_INNER)
    for g, fine in zip(got, averages()):
        np.testing.assert_allclose(g, fine, rtol=0, atol=1e-9 * np.abs(fine).max())
