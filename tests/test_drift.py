"""The equations of motion emitted from the rule definitions agree with SPEC section 5.

The reference is the SPEC's formula typed in from the text, evaluated with the activation's
kernels (themselves checked against Monte Carlo and mpmath elsewhere), on random states.
"""
import numpy as np
import pytest

import generated
from derive import rules

ACTIVATIONS = ["linear", "erf", "relu", "sin", "quadratic", "tanh"]


def random_state(rng, K, D=50.0):
    """Random consistent order parameters: from random projections on a few directions."""
    J = 3 * K
    rho = rng.uniform(0.5, 3.0, J) * D
    omega = rng.normal(size=(K, J))
    upsilon = rng.normal(size=(K, J)) * np.sqrt(D)
    Q = (omega * rho) @ omega.T / D
    R = (upsilon * rho) @ omega.T / D**1.5
    T = (upsilon * rho) @ upsilon.T / D**2
    T0 = upsilon @ upsilon.T / D
    return rho, omega, upsilon, Q, R, T, T0


def spec_drift(act, rho, omega, upsilon, Q, R, T0, D, lr, truncated=False):
    """SPEC section 5, term by term (truncated: unit k sees units l <= k only)."""
    K = Q.shape[0]
    q = np.diag(Q)
    Eg1 = act.mean_1(q)
    I2 = act.pair_0_0(q[:, None], Q, q[None, :])
    E11 = act.pair_1_1(q[:, None], Q, q[None, :])
    E20 = act.pair_2_0(q[:, None], Q, q[None, :])
    mask = np.tril(np.ones((K, K))) if truncated else np.ones((K, K))
    d_ups = np.zeros_like(upsilon)
    d_om = np.zeros_like(omega)
    for k in range(K):
        d_ups[k] = lr * (rho * omega[k] / np.sqrt(D) * Eg1[k]
                         - sum(mask[k, l] * upsilon[l] * I2[k, l] for l in range(K)))
        E_nu_g2 = R[k, k] / Q[k, k] * (Q[k, k] * act.mean_3(Q[k, k]))     # (R_kk/Q_kk) E[lambda g''(lambda)]
        self_term = E_nu_g2 - sum(mask[k, l] * T0[k, l] * E20[k, l] for l in range(K)) - T0[k, k] * E11[k, k]
        cross = sum(mask[k, a] * omega[a] * T0[k, a] * E11[a, k] for a in range(K) if a != k)
        d_om[k] = lr * rho / D * (upsilon[k] / np.sqrt(D) * Eg1[k] + omega[k] * self_term - cross)
    return d_om, d_ups


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("rule", ["vanilla", "truncated"])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_emitted_drift_matches_spec(name, rule, K):
    act = generated.load(name)
    rng = np.random.default_rng(K + 10 * len(name))
    D, lr = 50.0, 0.7
    rho, omega, upsilon, Q, R, T, T0 = random_state(rng, K, D)
    A, B = act.DRIFTS[rule](Q, R, T, T0, lr)
    theta = np.concatenate([omega, upsilon / np.sqrt(D)])          # (2K, J)
    d_theta = (A @ theta) * (rho / D) + B @ theta
    d_om, d_ups = spec_drift(act, rho, omega, upsilon, Q, R, T0, D, lr, truncated=rule == "truncated")
    np.testing.assert_allclose(d_theta[:K], d_om, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_theta[K:], d_ups / np.sqrt(D), rtol=1e-9, atol=1e-12)


def test_population_error_matches_spec():
    """eps = tr(Omega)/2D - sum_k E[nu_k g(lambda_k)] + 1/2 sum_kl T0_kl E[g_k g_l] (SPEC section 3)."""
    act = generated.load("erf")
    rng = np.random.default_rng(3)
    rho, omega, upsilon, Q, R, T, T0 = random_state(rng, 3)
    q = np.diag(Q)
    expected = 1.7 - np.sum(np.diag(R) * act.mean_1(q)) \
        + 0.5 * np.sum(T0 * act.pair_0_0(q[:, None], Q, q[None, :]))
    assert act.population_error(Q, R, T, T0, 1.7) == pytest.approx(expected, rel=1e-12)


def test_unknown_rule_lists_known_ones():
    with pytest.raises(ValueError, match="vanilla"):
        rules.get("hebbian")
