"""The finite-D equations (derive.finite) against a brute-force Monte Carlo of one SGD step.

At dimension D the equations are the exact expected change of the per-atom matrices,
dS_j/dt = D E[sum_{tau in j} (theta_tau + d theta_tau)(theta_tau + d theta_tau)^T - theta_tau theta_tau^T],
second-order (lr^2) terms included. The reference draws x ~ N(0, Omega), applies the rule to the
actual weights (SPEC section 1) and averages the change of every S_j; the tolerance is five
standard errors of that average. The second-order terms alone are hundreds of standard errors,
so the check sees them.
"""
import functools

import numpy as np
import pytest

from generated import load
from runtime.integrate import _System
from runtime.spectrum import Spectrum

D = 7
ATOMS = [[0], [1], [2, 3, 4], [5, 6]]
SPECTRUM = Spectrum(np.array([3.0 * D, 1.5 * D, 1.0, 0.5]), np.array([1.0, 1.0, 3.0, 2.0]), D)
RHO = np.concatenate([[SPECTRUM.rho[j]] * len(a) for j, a in enumerate(ATOMS)])
LR = 0.7
SAMPLES, CHUNK = 400_000, 50_000


def _theta(W, V, tied):
    return W.T if tied else np.concatenate([W, V / np.sqrt(D)]).T          # (D, F)


def _matrices(theta):
    return np.array([theta[a].T @ theta[a] for a in ATOMS])


def _sgd_step(act, rule, W, V, x, b=None, kappa=0.0, c=None):
    """The updates (dW, dV) of SPEC section 1 for each sample of x (n, D); with an encoder bias b
    (rule vanilla) also db, as (dW, dV, db). kappa: weight decay, w, v -= (LR kappa/D) w, v. With an
    output bias c (rule vanilla: x_hat = V^T g + c, c += (LR/D) e), dW and dV have its unit first:
    a zero row, and dc."""
    g, dg = act.DERIVATIVES[0], act.DERIVATIVES[1]
    lam = x @ W.T / np.sqrt(D) + (0.0 if b is None else b)
    G, Gp = g(lam), dg(lam)
    if rule == "tied":
        e = x - G @ W
        dW = LR / D * (G[:, :, None] * e[:, None, :] + ((e @ W.T) * Gp)[:, :, None] * x[:, None, :] / np.sqrt(D))
        dW = dW - LR * kappa / D * W
        return dW, dW
    K = W.shape[0]
    mask = np.tril(np.ones((K, K))) if rule == "truncated" else np.ones((K, K))
    e = x[:, None, :] - np.einsum("kl,nl,ld->nkd", mask, G, V) - (0.0 if c is None else c)   # e_k (n, K, D)
    ve = np.einsum("kd,nkd->nk", V, e)
    dW = LR / D**2 * (ve * Gp)[:, :, None] * x[:, None, :] / np.sqrt(D) - LR * kappa / D * W
    dV = LR / D * G[:, :, None] * e - LR * kappa / D * V
    if c is not None:
        dW = np.concatenate([np.zeros_like(dW[:, :1]), dW], axis=1)
        dV = np.concatenate([LR / D * e[:, :1], dV], axis=1)
    return (dW, dV) if b is None else (dW, dV, LR / D**2 * ve * Gp)


def _sample_means(draw, seed):
    """Mean and standard error over SAMPLES inputs x ~ N(0, Omega), drawn in chunks, of each
    per-sample quantity of draw(x) -> {name: array (n, ...)}: {name: (mean, standard error)}."""
    rng = np.random.default_rng(seed)
    sums = {}
    for _ in range(SAMPLES // CHUNK):
        x = rng.standard_normal((CHUNK, D)) * np.sqrt(RHO)
        for key, value in draw(x).items():
            total, total2 = sums.get(key, (0.0, 0.0))
            sums[key] = total + value.sum(0), total2 + (value**2).sum(0)
    out = {}
    for key, (total, total2) in sums.items():
        mean = total / SAMPLES
        out[key] = mean, np.sqrt(np.maximum(total2 / SAMPLES - mean**2, 0) / SAMPLES)
    return out


def monte_carlo(act, rule, W, V, seed=0, kappa=0.0, c=None):
    """Mean and standard error of D * (change of S_j) per step (the output bias' unit first with c)."""
    tied = rule == "tied"
    theta = _theta(*((W, V) if c is None else _with_output_bias(W, V, c)), tied)

    def draw(x):
        dW, dV = _sgd_step(act, rule, W, V, x, kappa=kappa, c=c)
        dth = _theta(dW.transpose(1, 0, 2), dV.transpose(1, 0, 2), tied).transpose(1, 0, 2) if not tied \
            else dW.transpose(0, 2, 1)
        return {"dS": np.stack([np.einsum("iF,niG->nFG", theta[a], dth[:, a]) + np.einsum("niF,iG->nFG", dth[:, a], theta[a])
                                + np.einsum("niF,niG->nFG", dth[:, a], dth[:, a]) for a in ATOMS], axis=1) * D}
    return _sample_means(draw, seed)["dS"]


def _with_output_bias(W, V, c):
    """The weights with the output bias' unit first: w = 0, v = c (derive.rules)."""
    return np.concatenate([np.zeros((1, D)), W]), np.concatenate([c[None], V])


def equations(act, rule, S, K, **params):
    drift, noise = (functools.partial(f, **params) for f in act.FINITE[rule])
    system = _System(drift, LR, np.zeros(0), SPECTRUM.rho_hat, K, noise=noise,
                     m_rho=SPECTRUM.mult * SPECTRUM.rho, D=D, tied=rule == "tied")
    full = system(0.0, S.ravel()).reshape(S.shape)
    order = system._globals(S.ravel()[None])
    N = noise(*order, LR, D, S[None], SPECTRUM.rho_hat, SPECTRUM.mult * SPECTRUM.rho)[0]
    return full, N


@pytest.mark.parametrize("name, rule, K", [
    ("erf", "vanilla", 2), ("erf", "truncated", 2), ("erf", "tied", 2), ("linear", "vanilla", 1),
    ("linear", "tied", 2), ("sin", "vanilla", 2), ("tanh", "tied", 2), ("sigmoid", "vanilla", 1),
    ("quadratic", "truncated", 2), ("relu", "vanilla", 2), ("relu", "tied", 2), ("leaky_relu", "truncated", 2),
])
def test_finite_equations_are_the_expected_sgd_step(name, rule, K):
    act = load(name)
    rng = np.random.default_rng(K)
    scale = 0.3 if name == "quadratic" else 1.2     # large variances: Q_kk up to ~10
    W, V = scale * rng.standard_normal((K, D)), scale * rng.standard_normal((K, D))
    if rule == "tied":
        V = W
    S = _matrices(_theta(W, V, rule == "tied"))
    mean, se = monte_carlo(act, rule, W, V)
    full, N = equations(act, rule, S, K)
    assert np.all(np.abs(full - mean) <= 5 * se + 1e-12), np.max(np.abs(full - mean) / se)
    assert np.max(np.abs(N) / se) > 50            # the second-order terms are resolved


@pytest.mark.parametrize("name, rule", [("erf", "vanilla"), ("relu", "truncated"), ("linear", "tied")])
def test_weight_decay_is_in_the_expected_sgd_step(name, rule):
    """rule_params kappa (w, v -= (lr kappa/D) w, v per step) against one SGD step, every entry of
    D E[change of S_j] within 5 standard errors; the decay's own terms are far above that."""
    act, K, kappa = load(name), 2, 5.0
    rng = np.random.default_rng(3)
    W, V = 1.2 * rng.standard_normal((K, D)), 1.2 * rng.standard_normal((K, D))
    if rule == "tied":
        V = W
    S = _matrices(_theta(W, V, rule == "tied"))
    mean, se = monte_carlo(act, rule, W, V, kappa=kappa)
    full, _ = equations(act, rule, S, K, kappa=kappa)
    assert np.all(np.abs(full - mean) <= 5 * se + 1e-12), np.max(np.abs(full - mean) / se)
    assert np.max(np.abs(full - equations(act, rule, S, K)[0]) / se) > 20


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_output_bias_is_in_the_expected_sgd_step(name):
    """The output bias c as a first unit with g = 1 and w = 0 (output_bias=True): D E[change of
    S_j] of one SGD step with x_hat = V^T g + c, c += (lr/D) e, within 5 standard errors, the
    second-order terms included; without the bias' unit's averages the check fails."""
    act, K = load(name), 2
    rng = np.random.default_rng(4)
    W, V, c = (1.2 * rng.standard_normal((K, D)), 1.2 * rng.standard_normal((K, D)),
               1.5 * rng.standard_normal(D))
    S = _matrices(_theta(*_with_output_bias(W, V, c), False))
    mean, se = monte_carlo(act, "vanilla", W, V, c=c)
    full, N = equations(act, "vanilla", S, K + 1, output_bias=True)
    assert np.all(np.abs(full - mean) <= 5 * se + 1e-12), np.max(np.abs(full - mean) / se)
    moving = se > 0                                        # not the bias' unit's w = 0
    assert np.max(np.abs(N)[moving] / se[moving]) > 50
    wrong, _ = equations(act, "vanilla", S, K + 1)        # the bias' unit read as a unit with g
    assert np.max(np.abs(wrong - mean)[moving] / se[moving]) > 50


@pytest.mark.parametrize("rule", ["vanilla", "truncated", "tied"])
def test_compiled_update_is_the_sgd_step(rule):
    """derive.update runs a rule's update as written (simulate's path for registered rules): for the
    built-in rules, with decay, an encoder and an output bias, it is the step written out above."""
    from derive import rules
    from derive.update import Update
    act, K = load("relu"), 2
    rng = np.random.default_rng(7)
    W, V, x = rng.standard_normal((K, D)), rng.standard_normal((K, D)), rng.standard_normal((5, D))
    b, c = (rng.standard_normal(K), rng.standard_normal(D)) if rule == "vanilla" else (None, None)
    if rule == "tied":
        V = W
    runs = [None if a is None else np.repeat(a[None], len(x), axis=0) for a in (W, V, b, c)]
    dW, dV, db, dc = Update(rules.get(rule), LR, D, {"kappa": 0.3})(x, *runs, act.DERIVATIVES, np)
    expected = _sgd_step(act, rule, W, V, x, b=b, kappa=0.3, c=c)
    if c is not None:
        np.testing.assert_allclose(dc, expected[1][:, 0], atol=1e-14)
        expected = (expected[0][:, 1:], expected[1][:, 1:], expected[2])
    np.testing.assert_allclose(dW, expected[0], atol=1e-14)
    if rule != "tied":
        np.testing.assert_allclose(dV, expected[1], atol=1e-14)
    if b is not None:
        np.testing.assert_allclose(db, expected[2], atol=1e-14)


def monte_carlo_spikes(act, rule, W, V, seed=1):
    """Mean and standard error of D d theta_s d theta_s'^T per step for the spikes s, s' (directions
    0 and 1), shape (2, 2, F, F)."""
    tied = rule == "tied"

    def draw(x):
        dW, dV = _sgd_step(act, rule, W, V, x)
        dth = (dW.transpose(0, 2, 1) if tied else np.concatenate([dW, dV / np.sqrt(D)], axis=1).transpose(0, 2, 1))[:, :2]
        return {"tt": D * np.einsum("niF,njG->nijFG", dth, dth)}
    return _sample_means(draw, seed)["tt"]


@pytest.mark.parametrize("name, rule, K", [
    ("erf", "vanilla", 2), ("linear", "vanilla", 1), ("erf", "truncated", 2), ("erf", "tied", 2),
    ("relu", "vanilla", 2),
])
def test_noise_between_spikes_is_the_second_moment_of_one_sgd_step(name, rule, K):
    """spike_noise_<rule>: D E[d theta_s d theta_s'^T] for every pair of spikes, cross terms included;
    on the diagonal it is the atom noise of a rank-one S_j = theta theta^T."""
    act = load(name)
    rng = np.random.default_rng(K + 10)
    W, V = 1.2 * rng.standard_normal((K, D)), 1.2 * rng.standard_normal((K, D))
    if rule == "tied":
        V = W
    theta = _theta(W, V, rule == "tied")
    mean, se = monte_carlo_spikes(act, rule, W, V)
    S = _matrices(theta)
    order = _System(act.FINITE[rule][0], LR, np.zeros(0), SPECTRUM.rho_hat, K, D=D,
                    tied=rule == "tied")._globals(S.ravel()[None])
    rho = SPECTRUM.rho[:2]
    N = act.SPIKE_NOISE[rule](*order, LR, D, theta[None, :2], rho / D, np.diag(rho))[0]
    assert np.all(np.abs(N - mean) <= 5 * se + 1e-12), np.max(np.abs(N - mean) / se)
    assert np.max(np.abs(N[0, 1]) / se[0, 1]) > 20           # the cross terms are resolved
    atom = act.FINITE[rule][1](*order, LR, D, S[None, :2], rho / D, rho)[0]
    np.testing.assert_allclose(N[[0, 1], [0, 1]], atom, rtol=1e-10, atol=1e-12)


def monte_carlo_bias(act, W, V, b, seed=2):
    """Means and standard errors of D d theta_s d theta_s'^T, D db db^T and D db d theta_s^T per
    step of rule vanilla with encoder bias b, for the spikes s, s' (directions 0 and 1)."""
    def draw(x):
        dW, dV, db = _sgd_step(act, "vanilla", W, V, x, b)
        dth = np.concatenate([dW, dV / np.sqrt(D)], axis=1).transpose(0, 2, 1)[:, :2]
        return {"tt": D * np.einsum("niF,njG->nijFG", dth, dth), "bb": D * np.einsum("nk,nl->nkl", db, db),
                "bt": D * np.einsum("nk,njF->njkF", db, dth)}
    return _sample_means(draw, seed)


@pytest.mark.parametrize("name", ["erf", "linear", "relu", "tanh"])
def test_noise_with_a_bias_is_the_second_moment_of_one_sgd_step(name):
    """BIAS_NOISE: the spikes' noise with the fields shifted by b, the bias's own second moment
    D E[db db^T] and its cross moment with the spikes D E[db d theta_s^T], against one SGD step;
    on the diagonal the spikes' noise is the atom noise (with b) of a rank-one S_j."""
    act = load(name)
    K = 2
    rng = np.random.default_rng(21)
    W, V = 1.2 * rng.standard_normal((K, D)), 1.2 * rng.standard_normal((K, D))
    b = np.array([0.7, -0.5])
    theta = _theta(W, V, False)
    mc = monte_carlo_bias(act, W, V, b)
    S = _matrices(theta)
    order = _System(act.FINITE["vanilla"][0], LR, np.zeros(0), SPECTRUM.rho_hat, K, D=D)._globals(S.ravel()[None])
    rho = SPECTRUM.rho[:2]
    atom_noise, spike_noise, bias_noise = act.BIAS_NOISE["vanilla"]
    N = spike_noise(*order, LR, D, theta[None, :2], rho / D, np.diag(rho), b[None])[0]
    Nbb, Nbt = bias_noise(*order, LR, D, b[None], theta[None, :2], rho / D)
    for key, value in (("tt", N), ("bb", Nbb[0]), ("bt", Nbt[0])):
        mean, se = mc[key]
        assert np.all(np.abs(value - mean) <= 5 * se + 1e-12), (key, np.max(np.abs(value - mean) / se))
        assert np.max(np.abs(value) / se) > 20, key                # resolved
    atom = atom_noise(*order, LR, D, S[None, :2], rho / D, rho, b[None])[0]
    np.testing.assert_allclose(N[[0, 1], [0, 1]], atom, rtol=1e-10, atol=1e-12)
    unbiased = act.SPIKE_NOISE["vanilla"](*order, LR, D, theta[None, :2], rho / D, np.diag(rho))[0]
    assert np.max(np.abs(unbiased - mc["tt"][0]) / mc["tt"][1]) > 5   # the shift matters


@pytest.mark.parametrize("name", ["erf", "linear", "tanh", "sin"])
@pytest.mark.parametrize("rule", ["vanilla", "truncated"])
def test_finite_drift_tends_to_the_large_D_limit(name, rule):
    act = load(name)
    rng = np.random.default_rng(3)
    K = 3
    M = rng.standard_normal((2 * K, 2 * K))
    S = M @ M.T
    Q, R, T, T0 = S[:K, :K], S[K:, :K], S[K:, K:] * 0.7, S[K:, K:]
    A, B = act.DRIFTS[rule](Q, R, T, T0, 1.3)
    for Dbig in (1e8, 1e12):
        Af, Bf = act.FINITE[rule][0](Q, R, T, T0, Q * 0.5, 1.3, Dbig)
        np.testing.assert_allclose(Af, A, atol=50 / np.sqrt(Dbig) * (1 + np.abs(A).max()))
        np.testing.assert_allclose(Bf, B, atol=50 / np.sqrt(Dbig) * (1 + np.abs(B).max()))


def test_tied_error_at_the_initial_weights_is_exact():
    """Linear tied: eps = tr((I - P) Omega (I - P)^T)/(2D), P = W^T W/sqrt(D), in closed form."""
    act = load("linear")
    Dd, K = 60, 2
    rng = np.random.default_rng(0)
    eigvals = np.concatenate([[3.0 * Dd, 1.0 * Dd], np.linspace(0.5, 1.5, Dd - 2)])
    U = np.linalg.qr(rng.standard_normal((Dd, Dd)))[0]
    W = 0.3 * rng.standard_normal((K, Dd))
    res = act.integrate(eigvals, U, W, None, rule="tied", times=[0.0, 0.5])
    P = np.eye(Dd) - W.T @ W / np.sqrt(Dd)
    Omega = (U * eigvals) @ U.T
    assert res.error[0] == pytest.approx(np.trace(P @ Omega @ P.T) / (2 * Dd), rel=1e-10)
    assert res.status == 0 and np.all(np.isfinite(res.error))


def test_finite_size_limits_are_value_errors():
    eigvals = np.array([20.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="K <= 3"):
        load("erf").integrate(eigvals, np.eye(6), np.ones((4, 6)), None, rule="tied")
