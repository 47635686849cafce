"""runtime.simulate: direct online SGD in the conventions of SPEC section 1."""
import numpy as np
import pytest

import generated.erf as erf
import generated.linear as linear
import generated.relu as relu
from runtime import simulate as sim
from runtime.simulate import error_from_order_parameters, simulate


def _spiked(D, strengths=(2.0, 1.0), seed=0, K=2, scale=1.0):
    rng = np.random.default_rng(seed)
    rho = np.ones(D)
    rho[:len(strengths)] = np.multiply(strengths, D)
    U, _ = np.linalg.qr(rng.standard_normal((D, D)))
    return rho, U, scale * rng.standard_normal((K, D)), scale * rng.standard_normal((K, D))


def _direct(W, V, rho, U):
    D = rho.size
    Om = (U * rho) @ U.T
    return W @ Om @ W.T / D, V @ Om @ W.T / D ** 1.5, V @ Om @ V.T / D ** 2, V @ V.T / D


def test_recorded_order_parameters_match_final_weights():
    rho, U, W0, V0 = _spiked(60, K=3)
    res = simulate(linear, rho, U, W0, V0, lr=0.05, times=[0, 0.5, 2], seeds=2, test_samples=0)
    assert res.status == 0 and res.t.tolist() == [0, 0.5, 2]
    for s in range(2):
        for name, want in zip(("Q", "R", "T", "T0"), _direct(res.W[s], res.V[s], rho, U)):
            assert np.allclose(getattr(res, name)[s, -1], want, rtol=1e-10, atol=1e-12)
        for name, want in zip(("Q", "R", "T", "T0"), _direct(W0, V0, rho, U)):
            assert np.allclose(getattr(res, name)[s, 0], want, rtol=1e-10, atol=1e-12)
    assert not np.allclose(res.W[0], W0)              # it moved, a little
    # overlaps: normalised rows of W U on the top eigen-directions
    om = res.W[1] @ U
    assert np.array_equal(res.overlap_index[:2], [0, 1])
    assert np.allclose(res.overlap[1, -1], (om / np.linalg.norm(om, axis=1, keepdims=True))[:, res.overlap_index])


@pytest.mark.parametrize("seeds", [1, 2])
def test_recording_does_not_change_the_trajectory(seeds):
    D = 20
    rho, U, W0, V0 = _spiked(D, K=2, seed=9)
    # many records inside one block of samples, records between blocks, and repeated times
    dense = np.concatenate([np.arange(0, 3 * sim.BLOCK + 7) / D, [(3 * sim.BLOCK + 7) / D]])
    a = simulate(erf, rho, U, W0, V0, times=dense, seeds=seeds, test_samples=0)
    b = simulate(erf, rho, U, W0, V0, times=[dense[-1]], seeds=seeds, test_samples=0)
    c = simulate(erf, rho, U, W0, V0, times=[0, 1.05, 2.5, dense[-1]], seeds=seeds, test_samples=0)
    assert np.allclose(a.W, b.W, rtol=1e-13) and np.allclose(a.W, c.W, rtol=1e-13)
    assert np.allclose(a.V, b.V, rtol=1e-13) and np.allclose(a.V, c.V, rtol=1e-13)
    assert np.allclose(a.Q[:, [0, 21, 50, -1]], c.Q, rtol=1e-13)
    assert a.t.size == dense.size and np.all(np.isfinite(a.error))


def test_identity_eigenvectors_may_be_omitted():
    rho, _, W0, V0 = _spiked(30, K=2, seed=10)
    a = simulate(erf, rho, None, W0, V0, times=[0, 2], test_samples=200)
    b = simulate(erf, rho, np.eye(30), W0, V0, times=[0, 2], test_samples=200)
    assert np.allclose(a.W, b.W, rtol=1e-13) and np.allclose(a.test_error, b.test_error, rtol=1e-13)


def test_linear_error_formula_matches_direct_computation():
    rho, U, W, V = _spiked(40, K=2, seed=3, scale=0.3)
    D = rho.size
    Q, R, T, T0 = _direct(W, V, rho, U)
    A = np.eye(D) - V.T @ W / np.sqrt(D)               # e = A x for the linear network
    direct = np.trace(A @ (U * rho) @ U.T @ A.T) / (2 * D)
    assert error_from_order_parameters(linear, Q, R, T0, rho.sum() / (2 * D)) == pytest.approx(direct, rel=1e-12)


def _loss_std(act, W, V, rho, U, b=None, c=None, n=20000, seed=99):
    """Standard deviation of the per-sample loss at fixed weights (for the MC error bar)."""
    D = rho.size
    X = np.random.default_rng(seed).standard_normal((n, D)) * np.sqrt(rho) @ U.T
    lam = X @ W.T / np.sqrt(D) + (0 if b is None else b)
    E = X - act.g(lam) @ V - (0 if c is None else c)
    return np.std(np.sum(E * E, axis=1) / (2 * D))


@pytest.mark.parametrize("act,bias,output_bias", [(erf, False, False), (relu, True, False), (relu, True, True),
                                                 (erf, False, True)])
def test_held_out_error_agrees_with_population_error(act, bias, output_bias):
    """The recorded error (from the order parameters, with output_bias_error for an output bias c)
    against the mean loss on the held-out samples, at the start and after training."""
    rho, U, W0, V0 = _spiked(80, K=2, seed=1)
    N = 20000
    b0 = np.array([0.3, -0.2]) if bias else None
    c0 = np.random.default_rng(3).normal(size=80) if output_bias else None
    res = simulate(act, rho, U, W0, V0, times=[0, 3], seeds=1, test_samples=N, b0=b0, c0=c0)
    assert res.status == 0
    b = None if res.b is None else res.b[0, -1]
    c = None if res.c is None else res.c[0]
    se = _loss_std(act, res.W[0], res.V[0], rho, U, b, c) / np.sqrt(N)
    assert abs(res.test_error[0, -1] - res.error[0, -1]) < 5 * se
    se0 = _loss_std(act, W0, V0, rho, U, b0, c0) / np.sqrt(N)
    assert abs(res.test_error[0, 0] - res.error[0, 0]) < 5 * se0


def test_seeds_are_reproducible_and_independent():
    rho, U, W0, V0 = _spiked(50, K=2, seed=2)
    kw = dict(times=[0, 1, 2], test_samples=500)
    a = simulate(erf, rho, U, W0, V0, seeds=[0, 1], **kw)
    b = simulate(erf, rho, U, W0, V0, seeds=[0, 1], **kw)
    for name in ("error", "test_error", "Q", "R", "T", "T0", "W", "V"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.Q[0, -1], a.Q[1, -1])
    assert not np.allclose(a.test_error[0], a.test_error[1])
    # a seed's trajectory does not depend on the other seeds of the batch
    c = simulate(erf, rho, U, W0, V0, seeds=[1], **kw)
    assert np.allclose(c.Q[0], a.Q[1], rtol=1e-10) and np.allclose(c.test_error[0], a.test_error[1], rtol=1e-10)
    # the count form means seeds 0..n-1, and the summaries are over seeds
    d = simulate("erf", rho, U, W0, V0, seeds=2, **kw)
    assert np.array_equal(d.error, a.error) and d.seeds == (0, 1)
    assert np.allclose(a.mean(), a.error.mean(0)) and np.allclose(a.std("test_error"), a.test_error.std(0, ddof=1))


def _first_sample(seed, rho, U):
    """The first training sample of `seed` (documented streams: SeedSequence(seed).spawn(2)[0], blocks)."""
    gen = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    xi = gen.standard_normal((sim.BLOCK, rho.size))[0]
    return U @ (np.sqrt(rho) * xi)


@pytest.mark.parametrize("rule", ["vanilla", "bias", "output bias", "truncated", "tied", "sanger"])
def test_one_step_follows_the_spec_update(rule):
    """rule "bias": vanilla with a trained encoder bias; "output bias": with x_hat = V^T g + c as
    well, c += (lr/D) e (plain SGD on the same loss)."""
    D, K, lr = 30, 3, 0.7
    rho, U, W, V = _spiked(D, K=K, seed=4)
    act = linear if rule == "sanger" else erf
    b0 = np.array([0.1, -0.2, 0.3]) if rule in ("bias", "output bias") else None
    c0 = np.random.default_rng(6).normal(size=D) if rule == "output bias" else None
    res = simulate(act, rho, U, W, V, lr=lr, times=[0, 1 / D], test_samples=0, seeds=[5],
                   rule="vanilla" if b0 is not None else rule, b0=b0, c0=c0)
    x = _first_sample(5, rho, U)
    lam = W @ x / np.sqrt(D) + (0 if b0 is None else b0)
    g, gp = act.g(lam), act.dg(lam)
    if rule in ("vanilla", "bias", "output bias"):
        e = x - V.T @ g - (0 if c0 is None else c0)
        W1 = W + lr / D ** 2 * np.outer((V @ e) * gp, x / np.sqrt(D))
        V1 = V + lr / D * np.outer(g, e)
    elif rule == "truncated":
        E = x - np.cumsum(g[:, None] * V, axis=0)         # e_k = x - sum_{l<=k} v_l g_l
        W1 = W + lr / D ** 2 * np.sum(V * E, axis=1)[:, None] * gp[:, None] * x / np.sqrt(D)
        V1 = V + lr / D * g[:, None] * E
    elif rule == "tied":
        e = x - W.T @ g
        W1 = V1 = W + lr / D * (np.outer(g, e) + np.outer((W @ e) * gp, x / np.sqrt(D)))
    else:
        y = W @ x / np.sqrt(D)
        W1 = V1 = W + lr / D ** 2 * (np.outer(y, x) - np.tril(np.outer(y, y)) @ W)
    assert np.allclose(res.W[0], W1, rtol=1e-10, atol=1e-13)
    assert np.allclose(res.V[0], V1, rtol=1e-10, atol=1e-13)
    if b0 is not None:
        assert np.allclose(res.b[0, -1], b0 + lr / D ** 2 * (V @ e) * gp, rtol=1e-12)
    if c0 is not None:
        assert np.allclose(res.c[0], c0 + lr / D * e, rtol=1e-12)


def test_error_decreases_on_a_spiked_problem():
    rho, U, W0, V0 = _spiked(200, (2.0, 1.0), K=2, seed=0)
    res = simulate(erf, rho, U, W0, V0, times=[0, 5, 20], seeds=2, test_samples=2000)
    assert res.status == 0
    assert np.all(res.error[:, -1] < 0.5 * res.error[:, 0])
    assert np.all(res.error[:, -1] < res.pca_errors[1])      # beyond one component's worth
    assert np.all(res.error[:, -1] > res.pca_errors[2] - 0.05)
    assert np.allclose(res.pca_errors, [1.995, 0.995, 0.495])


def test_sanger_aligns_first_unit_with_top_eigenvector():
    rho, U, W0, _ = _spiked(100, (3.0, 1.5), K=2, seed=6)
    res = simulate("linear", rho, U, W0, None, rule="sanger", times=[0, 40], test_samples=0)
    assert res.status == 0
    assert abs(res.overlap[0, -1, 0, 0]) > 0.9
    assert abs(res.overlap[0, 0, 0, 0]) < 0.5


@pytest.mark.parametrize("rule", ["tied", "truncated"])
def test_tied_and_truncated_run(rule):
    rho, U, W0, V0 = _spiked(80, K=2, seed=7)
    res = simulate(erf, rho, U, W0, V0, rule=rule, times=[0, 2, 5], seeds=2, test_samples=1000)
    assert res.status == 0
    for name in ("error", "test_error", "Q", "R", "T", "T0", "overlap"):
        assert np.all(np.isfinite(getattr(res, name)))
    if rule == "tied":
        assert res.V is res.W and np.allclose(res.R, res.Q / np.sqrt(80))


def test_blow_up_is_reported_not_raised():
    rho, U, W0, V0 = _spiked(40, K=2, seed=8)
    with pytest.warns(RuntimeWarning, match="seed 0 diverged"):
        res = simulate(erf, rho, U, W0, V0, lr=400.0, times=[0, 1, 50], seeds=1, test_samples=100)
    assert res.status == -1 and "diverged" in res.message and res.diverged.tolist() == [True]
    assert np.isfinite(res.error[0, 0]) and np.isnan(res.error[0, -1])


def test_bad_input_raises():
    rho, U, W0, V0 = _spiked(20, K=2)
    with pytest.raises(ValueError, match="known rules: vanilla, truncated, tied, sanger"):
        simulate(erf, rho, U, W0, V0, rule="hebb")
    with pytest.raises(ValueError, match="unknown activation"):
        simulate("softsign", rho, U, W0, V0)
    with pytest.raises(ValueError, match=r"W0 has shape \(2, 19\)"):
        simulate(erf, rho, U, W0[:, 1:], V0)
    with pytest.raises(ValueError, match="V0 has shape"):
        simulate(erf, rho, U, W0, V0[:1])
    with pytest.raises(ValueError, match="eigvecs must have shape"):
        simulate(erf, rho, U[1:], W0, V0)
    with pytest.raises(ValueError, match="negative eigenvalue"):
        simulate(erf, np.where(np.arange(20) == 3, -1.0, rho), U, W0, V0)
    bad = W0.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="W0 contains NaN"):
        simulate(erf, rho, U, bad, V0)
    with pytest.raises(ValueError, match="lr must be positive"):
        simulate(erf, rho, U, W0, V0, lr=0)
    with pytest.raises(ValueError, match="sorted"):
        simulate(erf, rho, U, W0, V0, times=[0, 2, 1])
    with pytest.raises(ValueError, match=">= 0"):
        simulate(erf, rho, U, W0, V0, times=[-1, 2])
    with pytest.raises(ValueError, match="linear activation only"):
        simulate(erf, rho, U, W0, V0, rule="sanger")
    with pytest.raises(ValueError, match="vanilla' only"):
        simulate(erf, rho, U, W0, V0, rule="tied", b0=np.zeros(2))
    with pytest.raises(ValueError, match="output bias .c0. is implemented for rule 'vanilla' only"):
        simulate(erf, rho, U, W0, V0, rule="truncated", c0=np.zeros(20))
    with pytest.raises(ValueError, match="c0"):
        simulate(erf, rho, U, W0, V0, c0=np.zeros(19))
    with pytest.raises(ValueError, match="orthonormal"):
        simulate(erf, rho, 2 * U, W0, V0)
