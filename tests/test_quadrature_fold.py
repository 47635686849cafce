"""expect_units' fast paths (issue 13) against the plain evaluation of the same nested rules:
_conditional_rule against its elementwise formula, and the folded sums and the gathered output
against a sum per signature and an assignment per index tuple, at rtol 1e-12 (the rules are the
same; only the order of the floating-point sums differs)."""
import numpy as np
import pytest

from generated import load
from runtime import quadrature
from runtime.quadrature import _SQRT_2PI, _FAR, _TAIL, _nodes


def _conditional_reference(m, s, n, scale=1.0):
    """_conditional_rule as one elementwise formula (its form before the centred fast path)."""
    centred = (s <= scale) | (np.abs(m) > _FAR * s)
    U = np.where(centred, np.arcsinh(_TAIL), np.arcsinh((np.abs(m) + _TAIL * s) / scale))
    u, h = _nodes(U, n)
    sinh, cosh = np.sinh(u), np.cosh(u)
    safe_s = np.where(centred, 1.0, s)[..., None]
    y = np.where(centred[..., None], m[..., None] + s[..., None] * sinh, scale * sinh)
    z = np.where(centred[..., None], sinh, (scale * sinh - m[..., None]) / safe_s)
    dz = np.where(centred[..., None], cosh, scale * cosh / safe_s)
    return y, np.exp(-0.5 * z * z) / _SQRT_2PI * dz * h[..., None]


@pytest.mark.parametrize("scale", [1.0, 0.05])
@pytest.mark.parametrize("kind", ["mixed", "centred", "off"])
def test_conditional_rule_matches_its_formula(kind, scale):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 7)) * 3
    s = {"mixed": rng.uniform(0.1, 3, (4, 7)), "centred": np.full((4, 7), 0.5 * scale),
         "off": np.full((4, 7), 2.0)}[kind]
    if kind == "off":
        m = np.clip(m, -1, 1)
    y, w = quadrature._conditional_rule(m, s, 31, scale)
    y0, w0 = _conditional_reference(m, s, 31, scale)
    np.testing.assert_allclose(y, y0, rtol=1e-15, atol=0)
    np.testing.assert_allclose(w, w0, rtol=1e-15, atol=0)


def _shared_average(level, f):
    """sum over a _SharedLevel's nodes of w f(nodes), (M, n_outer), written out: the shared nodes
    broadcast against each outer node's weights, each centred element's own rule in its place."""
    out = np.sum(level.w * f(level.y), axis=-1)
    out.reshape(-1)[level.where] = f(level.yc) @ level.wc
    return out


def _reference_units(derivatives, orders_list, Q, means=None, scale=1.0, constant=0):
    """expect_units by one nested sum per signature and one assignment per index tuple."""
    K, batch = Q.shape[-1], Q.shape[:-2]
    plan, needed = quadrature._plan(K, tuple(orders_list), constant)
    Qf = Q.reshape(-1, K, K)
    mf = np.zeros(Qf.shape[:2]) if means is None else np.broadcast_to(means, batch + (K,)).reshape(-1, K)
    values = {}
    for units, signatures in needed.items():
        levels = quadrature._levels(Qf, mf, units, scale)
        for sig in signatures:
            inner = None
            for (x, w), orders in reversed(list(zip(levels, sig))):
                def f(x, orders=orders):
                    out = np.ones_like(x)
                    for a in orders:
                        out = out * derivatives[a](x)
                    return out
                if isinstance(x, quadrature._SharedLevel):     # a pair's inner level, its nodes shared
                    inner = _shared_average(x, f)
                    continue
                inner = np.sum(w * f(x) if inner is None else w * f(x) * inner, axis=-1)
            values[units, sig] = inner.reshape(batch)
    outs = []
    for n, entries in plan:
        out = np.empty(batch + (K,) * n)
        for idx, units, sig in entries:
            out[(Ellipsis,) + idx] = 0.0 if units is None else 1.0 if not units else values[units, sig]
        outs.append(out)
    return outs


ORDERS = (((0,), (0,), (0,), (0,)), ((1,), (0,), (0,)), ((2,), (1,), (0,)), ((1,), (1,), (1,), (1,)),
          ((3,), (2,), (0,)), ((2,), (2,)))


@pytest.mark.parametrize("name", ["erf", "tanh", "relu"])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_expect_units_matches_the_plain_sums(name, K):
    act = load(name)
    rng = np.random.default_rng(K)
    smoothed = getattr(act, "SMOOTHED", None)      # ReLU: the smoothed kink at its width, as averages.py uses it
    derivatives = quadrature._at_width(smoothed, act.SMOOTHING) if smoothed else act.DERIVATIVES
    scale = act.SMOOTHING if smoothed else 1.0
    for batch, with_means, constant in (((), False, 0), ((3,), True, 0), ((2,), False, int(K > 1))):
        A = rng.normal(size=batch + (K, K + 1)) * rng.uniform(0.3, 2.5)
        Q = A @ np.swapaxes(A, -1, -2)
        means = rng.normal(size=batch + (K,)) if with_means else None
        quadrature._LAST[:] = [None, {}]
        got = quadrature.expect_units(derivatives, ORDERS, Q, None, means, scale, constant)
        want = _reference_units(derivatives, ORDERS, Q, means, scale, constant)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * np.max(np.abs(w)))


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_smoothed_derivatives_in_one_pass_equal_the_functions_one_by_one(name):
    """The generated smoothed_derivatives(x, eps) (every order, their shared Gaussian and normal CDF
    once) against SMOOTHED[k](x, eps) one by one, at both Richardson widths, at the kink, in its
    +-9 sigma neighbourhood and far out; and expect_units with it against expect_units without it
    (runtime.quadrature._values_at), to rounding."""
    act = load(name)
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.normal(size=200) * 0.1, [0.0, -0.0, 1e-300, -40.0, 40.0, -1e5, 1e5]])
    for eps in (act.SMOOTHING, 2 * act.SMOOTHING):
        with np.errstate(over="raise", invalid="raise"):
            together = act.smoothed_derivatives(xs, eps)
        assert len(together) == len(act.SMOOTHED)
        for f, value in zip(act.SMOOTHED, together):       # rounding of terms up to the order's size near 0
            one = f(xs, eps)
            np.testing.assert_allclose(value, one, rtol=1e-14, atol=1e-14 * np.max(np.abs(one[:200])))
    A = rng.normal(size=(3, 2, 3))
    Q = A @ np.swapaxes(A, -1, -2)
    results = []
    for together in (None, act.smoothed_derivatives):
        quadrature._LAST[:] = [None, {}]
        derivatives = quadrature._at_width(act.SMOOTHED, act.SMOOTHING, together)
        results.append(quadrature.expect_units(derivatives, ORDERS, Q, None, None, act.SMOOTHING))
    for one_by_one, in_one_pass in zip(*results):
        np.testing.assert_allclose(in_one_pass, one_by_one, rtol=1e-12, atol=1e-12 * np.max(np.abs(one_by_one)))


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_homogeneous_smoothing_takes_both_widths_from_one_quadrature(name):
    """g_(2 eps)^(a)(x) = 2^(k - a) g_eps^(a)(x / 2) for the generated SMOOTHED functions (k =
    HOMOGENEITY, derived: 1 for ReLU and leaky ReLU), and smoothed_units' one call on Q and Q / 4
    against its two calls at eps and 2 eps, with means and an output-bias unit, to rounding."""
    act = load(name)
    assert act.HOMOGENEITY == 1
    eps, rng = act.SMOOTHING, np.random.default_rng(7)
    xs = np.concatenate([rng.normal(size=300) * 0.2, rng.normal(size=20) * 5.0, [0.0]])
    for a, f in enumerate(act.SMOOTHED):
        np.testing.assert_allclose(f(xs, 2 * eps), 2.0 ** (act.HOMOGENEITY - a) * f(xs / 2, eps), rtol=1e-13,
                                   atol=1e-13 * eps ** (1 - a))
    for K, with_means, constant in ((1, False, 0), (2, True, 0), (3, True, 1), (3, False, 0)):
        A = rng.normal(size=(2, K, K + 1))
        Q = A @ np.swapaxes(A, -1, -2)
        means = rng.normal(size=(2, K)) if with_means else None
        orders = tuple(o[:K] for o in ORDERS if len(o[:K]) == len(o) or K == 3)
        args = (act.SMOOTHED, eps, orders, Q, means, constant, act.smoothed_derivatives)
        two, one = quadrature.smoothed_units(*args), quadrature.smoothed_units(*args, act.HOMOGENEITY)
        for w, g in zip(two, one):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * np.max(np.abs(w)))


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_shared_inner_nodes_are_as_accurate_as_each_outer_nodes_own_rule(name):
    """A pair rule's inner level with its nodes shared by the outer nodes (_SharedLevel: every element's
    step at most its own rule's) against the per-element rule (_conditional_rule), both against that rule
    with 4 times the inner nodes, at variances 1e-2 ... 1e2, correlations up to 0.99 (where the outer
    nodes' far ends are centred) and with means: the shared rule's error at most twice the per-element
    rule's + 1e-13 of sqrt(E[f1^2] E[f2^2]) (measured: smaller, at most 1.1e-11 where the per-element rule
    errs by 3.3e-10 on smoothed ReLU)."""
    act = load(name)
    smoothed = getattr(act, "SMOOTHED", None)
    derivatives = quadrature._at_width(smoothed, act.SMOOTHING) if smoothed else act.DERIVATIVES
    scale = act.SMOOTHING if smoothed else 1.0
    rng = np.random.default_rng(11)
    M = 40
    v = 10 ** rng.uniform(-2, 2, (M, 2))
    r = np.concatenate([rng.uniform(-0.99, 0.99, M - 4), [0.0, 0.5, -0.9, 0.99]])
    c = (v[:, 0], r * np.sqrt(v[:, 0] * v[:, 1]), v[:, 1])
    m = rng.normal(size=(M, 2)) * (rng.uniform(size=(M, 1)) < 0.5)
    x1, w1, level, _ = quadrature._pair_rule(*c, m[:, 0], m[:, 1], scale=scale, shared=True)
    assert isinstance(level, quadrature._SharedLevel) and level.where.size > 0
    _, _, y, w = quadrature._pair_rule(*c, m[:, 0], m[:, 1], scale=scale)
    _, _, y4, w4 = quadrature._pair_rule(*c, m[:, 0], m[:, 1], n_inner=4 * quadrature.N_INNER, scale=scale)
    for o1, o2 in (((0,), (0,)), ((1,), (2,)), ((2, 2), (1,)), ((0,), (3, 1))):
        def f(x, orders=o2):
            return quadrature._product(derivatives, orders, x)
        outer = w1 * quadrature._product(derivatives, o1, x1)
        shared, own, fine = (np.sum(outer * inner, axis=-1) for inner in
                             (_shared_average(level, f), np.sum(w * f(y), axis=-1), np.sum(w4 * f(y4), axis=-1)))
        scale_cs = np.sqrt(quadrature.expect1(derivatives, o1 + o1, v[:, 0], m[:, 0], scale)
                           * quadrature.expect1(derivatives, o2 + o2, v[:, 1], m[:, 1], scale))
        error, bound = np.abs(shared - fine), 2 * np.abs(own - fine) + 1e-13 * scale_cs
        assert np.all(error <= bound), (o1, o2, error[error > bound], bound[error > bound])


def test_pair_rules_pass_a_nan_covariance_on():
    """A NaN in one covariance of the batch gives NaN averages on its pair (integrate's finiteness check
    reports it), not an exception from the shared inner level's node count; the other covariances' averages
    are finite and equal to their own call's to the rules' accuracy."""
    act = load("relu")
    derivatives = quadrature._at_width(act.SMOOTHED, act.SMOOTHING)
    Q = np.array([[[1.0, 0.3], [0.3, np.nan]], [[1.0, 0.2], [0.2, 2.0]]])
    orders = (((1,), (0,)), ((2,), (1,)))
    quadrature._LAST[:] = [None, {}]
    got = quadrature.expect_units(derivatives, orders, Q, None, None, act.SMOOTHING)
    quadrature._LAST[:] = [None, {}]
    alone = quadrature.expect_units(derivatives, orders, Q[1:], None, None, act.SMOOTHING)
    for g, a in zip(got, alone):
        assert np.isnan(g[0, 0, 1]) and np.isnan(g[0, 1, 0])
        np.testing.assert_allclose(g[1], a[0], rtol=1e-9, atol=1e-12)
