"""The equations of motion with a trained encoder bias (rule 'vanilla' with b0, SPEC section 1).

* the drift (A, B, db/dt of drift_vanilla_bias) against a brute-force Monte Carlo estimate of
  D times the expected per-sample update at a random finite-D state: the vanilla drift has no
  dropped 1/D terms, so it is exact at any D and must agree within 5 standard errors;
* integrate(b0=...): input checks, the same initial error as the simulator;
* equations vs SGD: the gap between theory and the seed-averaged simulation shrinks as D grows
  (the equations are the D -> infinity limit, see tests/test_theory_vs_simulation.py);
* SPEC section 5, finding 3: a ReLU autoencoder ends closer to the PCA error with a trained bias;
  with an output bias as well (SGD only) it reaches the PCA error.
"""
import numpy as np
import pytest

import generated
from conftest import assert_mc
from runtime.simulate import simulate
from runtime.spectrum import spiked_problem

SPIKES = (3.0, 2.0, 1.5)

ACTS = ["relu", "erf", "linear", "tanh"]


def _order_parameters(W, V, rho):
    D = rho.size
    return ((W * rho) @ W.T / D, (V * rho) @ W.T / D**1.5, (V * rho) @ V.T / D**2, V @ V.T / D)


@pytest.mark.parametrize("name", ACTS)
def test_bias_drift_matches_the_expected_sgd_update(name):
    """D E[update] over x ~ N(0, diag(rho)) at a random state (eigenbasis = identity):
    db_k/dt, dW[:, tau]/dt = ((rho_tau/D) A + B) theta_tau, and likewise dV."""
    act = generated.load(name)
    D, K, lr, n = 30, 2, 0.7, 200_000
    rng = np.random.default_rng(11)
    rho = rng.uniform(0.5, 2.0, size=D)
    rho[0] = 3.0 * D
    W, V = rng.normal(size=(K, D)), 0.7 * rng.normal(size=(K, D))
    b = np.array([0.6, -0.4])
    A, B, db = act.drift_vanilla_bias(*_order_parameters(W, V, rho), b, lr)
    X = np.random.default_rng(12).standard_normal((n, D)) * np.sqrt(rho)
    lam = X @ W.T / np.sqrt(D) + b
    g, gp = act.g(lam), act.dg(lam)
    E = X - g @ V
    a = (E @ V.T) * gp                                    # (v_k . e) g'(lambda_k)
    theta = np.concatenate([W, V / np.sqrt(D)])           # columns theta_tau
    flow = np.einsum("abt,bt->at", (rho / D)[None, None, :] * A[:, :, None] + B[:, :, None], theta)
    for k in range(K):
        assert_mc(db[k], lr / D * a[:, k], f"{name} db_{k}")
        for tau in (0, 1, 7):
            assert_mc(flow[k, tau], lr / D**1.5 * a[:, k] * X[:, tau], f"{name} dW[{k},{tau}]")
            assert_mc(flow[K + k, tau] * np.sqrt(D), lr * g[:, k] * E[:, tau], f"{name} dV[{k},{tau}]")


def test_integrate_checks_the_bias():
    relu = generated.load("relu")
    eigvals, eigvecs, W0, V0 = spiked_problem(20, 2, SPIKES, seed=0)
    for bad in (np.zeros(3), np.zeros((2, 1)), np.array([0.1, np.nan]), "ab"):
        with pytest.raises(ValueError, match="b0"):
            relu.integrate(eigvals, eigvecs, W0, V0, times=[0, 1], b0=bad)
    with pytest.raises(ValueError, match="trains no bias"):
        relu.integrate(eigvals, eigvecs, W0, V0, times=[0, 1], rule="truncated", b0=np.zeros(2))


def test_integrate_with_bias_starts_where_the_simulator_does():
    relu = generated.load("relu")
    eigvals, eigvecs, W0, V0 = spiked_problem(40, 2, SPIKES, seed=1)
    b0 = np.array([0.4, -0.6])
    res = relu.integrate(eigvals, eigvecs, W0, V0, times=[0, 0.5, 2], b0=b0)
    assert res.b.shape == (3, 2) and np.array_equal(res.b[0], b0)
    assert res.error.shape == (3,) and np.all(np.isfinite(res.error))
    sim = simulate(relu, eigvals, eigvecs, W0, V0, times=[0], b0=b0, test_samples=0)
    assert res.error[0] == pytest.approx(sim.error[0, 0], rel=1e-12)
    no_bias = relu.integrate(eigvals, eigvecs, W0, V0, times=[0, 0.5, 2])
    assert no_bias.b is None and not np.allclose(no_bias.error[1:], res.error[1:])


TIMES = np.linspace(0, 20, 11)


def gap(name, K, D, seeds=6):
    """Time-averaged |theory - seed mean of SGD| (error and biases) and the mean seed spread."""
    eigvals, eigvecs, W0, V0 = spiked_problem(D, K, SPIKES, seed=K)
    b0 = np.array([0.3, -0.2])[:K]
    act = generated.load(name)
    theory = act.integrate(eigvals, eigvecs, W0, V0, times=TIMES, b0=b0)
    sim = simulate(act, eigvals, eigvecs, W0, V0, times=TIMES, b0=b0, seeds=seeds, test_samples=0)
    assert sim.status == 0, sim.message
    assert theory.error[0] == pytest.approx(sim.error[0, 0], rel=1e-10)
    mean, spread = sim.error.mean(axis=0), sim.error.std(axis=0, ddof=1)
    b_gap = np.mean(np.abs(sim.b.mean(axis=0) - theory.b)[1:])
    return np.mean(np.abs(mean - theory.error)[1:]), np.mean(spread[1:]), b_gap


@pytest.mark.slow
@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
@pytest.mark.parametrize("K", [1, 2])
def test_equations_with_bias_are_the_large_D_limit_of_sgd(name, K):
    small, _, _ = gap(name, K, 250)
    mid, mid_spread, mid_b = gap(name, K, 500)
    large, spread, _ = gap(name, K, 1000)
    print(f"{name} K={K}: gap D=250 {small:.4f}, D=500 {mid:.4f} (seed spread {mid_spread:.4f}, "
          f"bias gap {mid_b:.4f}), D=1000 {large:.4f} (spread {spread:.4f})")
    # O(1/D) would give large ~ small / 4; allow half, plus three standard errors of the mean
    assert large < 0.5 * small + 3 * spread / np.sqrt(6)


def _relu_problem(D=300, scale=0.1, seed=0):
    """SPEC section 5, finding 3: K = 2, spikes 2D and D, unit bulk, lr = 1."""
    rho = np.ones(D)
    rho[:2] = (2.0 * D, 1.0 * D)
    rng = np.random.default_rng(seed)
    return rho, np.eye(D), scale * rng.normal(size=(2, D)), scale * rng.normal(size=(2, D))


def test_relu_with_a_trained_bias_ends_closer_to_pca():
    """From small weights (0.1 N(0, 1)) and b0 = 0.1: without bias eps stalls at eps_PCA(1);
    with the bias it leaves that plateau for ~0.917 with b ~ 2. (From b0 = 0 exactly the
    equations may stay on the plateau, where db/dt = 0 by symmetry: D = 600 does.)"""
    relu = generated.load("relu")
    rho, U, W0, V0 = _relu_problem()
    times = [0, 100, 300, 500]
    plain = relu.integrate(rho, U, W0, V0, times=times)
    biased = relu.integrate(rho, U, W0, V0, times=times, b0=np.full(2, 0.1))
    pca1, pca2 = plain.pca_errors[1], plain.pca_errors[2]
    print(f"t = 500: eps without bias {plain.error[-1]:.4f}, with bias {biased.error[-1]:.4f} "
          f"(b = {biased.b[-1].round(3)}); eps_PCA(1) = {pca1:.4f}, eps_PCA(2) = {pca2:.4f}")
    assert plain.error[-1] == pytest.approx(pca1, abs=0.01)           # stalls at one component
    assert biased.error[-1] < plain.error[-1] - 0.05                   # the bias helps ...
    assert biased.error[-1] > pca2 + 0.2                               # ... but does not reach PCA
    assert np.all(biased.b[-1] > 0.5)


def test_relu_with_both_biases_reaches_pca_in_sgd():
    """SPEC section 5, finding 3 asks whether an output bias (x_hat = V^T g + c) closes the rest
    of the gap. In SGD (D = 100, 3 seeds, t = 100, the setting above at small D) it does: with
    the encoder bias (b0 = 0.1) and an output bias (c0 = 0) every seed ends within 0.03 of
    eps_PCA(2); with either bias alone every seed stays more than 0.3 above it."""
    rho, U, W0, V0 = _relu_problem(D=100)
    kw = dict(times=[0, 100], seeds=3, test_samples=0)
    both = simulate("relu", rho, U, W0, V0, b0=np.full(2, 0.1), c0=np.zeros(100), **kw)
    encoder = simulate("relu", rho, U, W0, V0, b0=np.full(2, 0.1), **kw)
    output = simulate("relu", rho, U, W0, V0, c0=np.zeros(100), **kw)
    pca2 = both.pca_errors[2]
    print(f"t = 100, eps_PCA(2) = {pca2:.4f}: both biases {both.error[:, -1].round(4)}, encoder bias "
          f"{encoder.error[:, -1].round(4)}, output bias {output.error[:, -1].round(4)}")
    assert np.all(np.abs(both.error[:, -1] - pca2) < 0.03)
    assert np.all(encoder.error[:, -1] > pca2 + 0.3) and np.all(output.error[:, -1] > pca2 + 0.3)
