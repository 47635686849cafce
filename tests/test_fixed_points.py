"""runtime.fixed_points: stationary states, their stability, zero modes and approach rates.

Truth from outside the code under test: the linear network's stationary error is eps_PCA(K);
for one linear unit the stationary states are a closed-form family and the slowest mode follows
from the 2 x 2 bulk drift of SPEC section 5; the approach rate is measured on a long
integration; relu units can only pair up into a linear unit (relu(x) - relu(-x) = x).
"""
import numpy as np
import pytest

import generated
from runtime.fixed_points import fit_power, fit_rate, fixed_point
from runtime.spectrum import Spectrum, random_init_matrices, spiked_problem

D = 50


def run(name, spikes, K, times, rule="vanilla", seed=1):
    act = generated.load(name)
    spectrum = Spectrum.spiked(D, spikes)
    init = random_init_matrices(spectrum, K, sigma_w=0.5, sigma_v=0.5, seed=seed)
    return act.integrate(spectrum=spectrum, init=init, times=times, rule=rule, keep_atoms=True,
                         rtol=1e-11, atol=1e-14)


LONG = np.concatenate([[0, 1, 10, 100], np.linspace(1000, 5000, 41)])


def test_linear_network_fixed_point_is_pca_with_gl_zero_modes():
    res = run("linear", (3, 2, 1.5), K=2, times=[0, 10, 100, 3000])
    fp = fixed_point(res)
    assert fp.found, fp.message
    assert fp.error == pytest.approx(res.pca_errors[2], abs=1e-10)
    assert fp.residual < 1e-12
    assert fp.stable and fp.n_unstable == 0
    scale = np.max(np.abs(fp.eigenvalues))
    assert np.all(fp.eigenvalues.real <= 1e-6 * scale)
    # W -> A W, V -> A^-T V (A in GL(2)): four zero modes, all explained
    assert fp.n_zero == fp.n_symmetry == 4
    assert fp.symmetries["rescaling of a unit (c w_k, v_k / c)"] == 2
    assert fp.symmetries["mixing of units (w_k += s w_l, v_l -= s v_k)"] == 2
    assert "4 zero mode(s), 4 from symmetries" in fp.message


def test_single_linear_unit_closed_form_and_fitted_rate():
    """K = 1, linear: stationary states omega_1 on the top spike with T0 omega_1^2 = 1, i.e.
    Q T0 = rho_hat_1; the bulk decays with M = [[-rho_hat T0, rho_hat], [rho_hat, -Q]] and the
    bulk matrix (the error is linear in it) at twice M's top eigenvalue."""
    res = run("linear", (3, 2), K=1, times=LONG)
    fp = fixed_point(res, fit_from=2000)
    assert fp.found and fp.stable, fp.message
    Q, T0 = fp.Q[0, 0], fp.T0[0, 0]
    assert Q * T0 == pytest.approx(3.0, rel=1e-9)
    assert fp.error == pytest.approx(res.pca_errors[1], abs=1e-10)
    rho = 1.0 / D
    lam = 0.5 * (-(rho * T0 + Q) + np.sqrt((rho * T0 - Q) ** 2 + 4 * rho ** 2))
    assert fp.rate == pytest.approx(-2 * lam, rel=1e-6)
    assert fp.error_rate == pytest.approx(fp.rate, rel=1e-12)
    # measured on the integration: excess decays like exp(-rate t) from t = 2000 to 5000
    assert fp.fitted_rate == pytest.approx(fp.error_rate, rel=1e-3)
    assert fp.n_zero == fp.n_symmetry == 1


def test_two_units_fitted_rate_agrees():
    """K = 2: three nearly equal slow bulk modes (2 l1, l1 + l2, 2 l2); the fit sees their mix."""
    res = run("linear", (3, 2, 1.5), K=2, times=LONG)
    fp = fixed_point(res, fit_from=2000)
    assert fp.found, fp.message
    print(f"predicted {fp.error_rate:.6g}, fitted {fp.fitted_rate:.6g}")
    assert fp.fitted_rate == pytest.approx(fp.error_rate, rel=0.03)
    assert fp.fitted_rate >= fp.error_rate * (1 - 1e-3)        # the slowest mode bounds the mix


def test_degenerate_spike_adds_a_rotation_zero_mode():
    """Spikes (4, 3, 3), K = 2: the second unit picks a direction in the degenerate plane; the
    circle of such choices is a line of fixed points: one more zero mode."""
    res = run("linear", (4, 3, 3), K=2, times=[0, 10, 100, 3000])
    fp = fixed_point(res)
    assert fp.found and fp.stable, fp.message
    assert fp.error == pytest.approx(res.pca_errors[2], abs=1e-10)
    assert fp.symmetries["rotation within a degenerate atom"] == 1
    assert fp.n_zero == fp.n_symmetry == 5


def test_truncated_linear_aligns_each_unit_with_its_eigenvector():
    """Truncated rule: only each unit's rescaling survives as a symmetry; w_k is parallel to u_k."""
    res = run("linear", (3, 2, 1.5), K=2, times=[0, 10, 100, 3000], rule="truncated")
    fp = fixed_point(res)
    assert fp.found and fp.stable, fp.message
    assert fp.n_zero == fp.n_symmetry == 2
    assert fp.symmetries["mixing of units (w_k += s w_l, v_l -= s v_k)"] == 0
    th, S = res.system.parts(fp.state[None])
    omega = th[0, :, :2]                                    # (spike, unit)
    norm = np.sqrt(np.sum(omega ** 2, axis=0) + np.einsum("jkk->k", S[0][:, :2, :2]))
    assert np.allclose(np.abs(omega[[0, 1], [0, 1]]) / norm, 1.0, atol=1e-8)


def test_relu_pairs_into_one_linear_unit():
    """relu without bias, K = 2: the stable state has w_2 = -c w_1 on the top spike
    (relu(x) - relu(-x) = x), error exactly eps_PCA(1); its zero modes are the units' rescalings."""
    res = run("relu", (2, 1), K=2, times=[0, 10, 100, 3000])
    fp = fixed_point(res)
    assert fp.found and fp.stable, fp.message
    assert fp.error == pytest.approx(res.pca_errors[1], abs=1e-9)
    assert fp.Q[0, 1] / np.sqrt(fp.Q[0, 0] * fp.Q[1, 1]) == pytest.approx(-1.0, abs=1e-9)
    assert fp.n_zero == fp.n_symmetry == 2


def test_erf_has_no_finite_fixed_point():
    """erf, vanilla: the error creeps towards eps_PCA(K) by shrinking w; nothing stationary nearby."""
    res = run("erf", (3, 2), K=2, times=np.concatenate([[0], np.logspace(0, 3.5, 30)]))
    fp = fixed_point(res, fit_from=300)
    assert not fp.found
    assert "no stationary state" in fp.message
    assert 0.3 < fp.power < 2.0
    assert fp.error == pytest.approx(res.error[-1])
    summary = fp.summary()
    assert summary["found"] is False and summary["late_power"] == pytest.approx(fp.power)


def test_fits_recover_known_rates():
    t = np.linspace(10, 100, 30)
    assert fit_rate(t, 3.0 * np.exp(-0.07 * t)) == pytest.approx(0.07, rel=1e-10)
    assert fit_power(t, 2.0 * t ** -1.5) == pytest.approx(1.5, rel=1e-10)
    assert np.isnan(fit_rate(t[:2], np.ones(2)))


def test_needs_kept_atoms():
    act = generated.load("linear")
    spectrum = Spectrum.spiked(D, (2,))
    res = act.integrate(spectrum=spectrum, init=random_init_matrices(spectrum, 1), times=[0, 1])
    with pytest.raises(ValueError, match="keep_atoms"):
        fixed_point(res)


def test_trained_bias_and_tied_states():
    """The bias (relu, SPEC finding 3) and the finite-D tied state are stationary states too:
    the root is where the integration ends, its error is the one the integrator reports, and
    the rest of the state (the biases, a K x K tied matrix per atom) is carried along."""
    D, K = 300, 2
    rng = np.random.default_rng(0)
    eigvals = np.concatenate([[2.0 * D, 1.0 * D], np.ones(D - 2)])
    W0, V0 = 0.1 * rng.normal(size=(K, D)), 0.1 * rng.normal(size=(K, D))
    res = generated.load("relu").integrate(eigvals, np.eye(D), W0, V0, times=[0, 100, 500],
                                           b0=np.full(K, 0.1), keep_atoms=True)
    fp = fixed_point(res)
    assert fp.found and fp.stable
    assert fp.error == pytest.approx(res.error[-1], abs=2e-3) and fp.error < 0.95 * res.pca_errors[1]
    tied = generated.load("linear").integrate(eigvals, np.eye(D), 0.5 * rng.normal(size=(K, D)), None,
                                              rule="tied", times=[0, 50, 200], keep_atoms=True)
    fp = fixed_point(tied)
    assert fp.found and fp.stable and fp.error == pytest.approx(tied.error[-1], rel=1e-9)


# -- issue 17, item 5: the long-time picture at D = 400 (docs/long_time.md) ------------------------------
#
# Spikes (3, 2, 1.5) D, K = 2, W0, V0 ~ 0.5 N(0, 1), lr 0.5. Closed form of the linear network
# (truth from the initial weights alone): the vanilla flow conserves C = W W^T - V V^T / D (the
# Noether charge of W -> X W, V -> X^-T V at rates lr/D and lr). At its stationary states the
# bulk is empty, the units span the top K spikes (error eps_PCA(K)) and, with P = Omega Omega^T
# (Omega: the K x K spike block of omega), T0 = P^-1 (decoder stationary) so that
# P - P^-1 = C: the eigenvalues of T0 are 1 / p_a with p_a = (c_a + sqrt(c_a^2 + 4)) / 2 for the
# eigenvalues c_a of C, and Q T0 has the spike strengths (3, 2) as eigenvalues. A bulk direction
# theta evolves with M = lr [[-rho T0, rho], [rho, -Q]] (SPEC section 5, linear g), rho = 1/D:
# its slow eigenvalues are -lr rho / p_a up to a relative O(rho / s_K) = 1/(2D), and the bulk
# matrix decays at their pairwise sums.

D_BIG, LR = 400, 0.5
BIG_TIMES = np.concatenate([[0, 1, 10, 100, 500, 1e3, 1e4, 1e5], np.linspace(2e5, 4e5, 9)])


@pytest.fixture(scope="module")
def big_problem():
    eigvals, eigvecs, W0, V0 = spiked_problem(D_BIG, 2, (3, 2, 1.5), seed=0, scale_w=0.5, scale_v=0.5)
    c = np.linalg.eigvalsh(W0 @ W0.T - V0 @ V0.T / D_BIG)
    p = (c + np.sqrt(c ** 2 + 4)) / 2
    return (eigvals, eigvecs, W0, V0), np.sort(1 / p)


def integrate_big(name, problem, times=BIG_TIMES):
    return generated.load(name).integrate(*problem, lr=LR, times=times, keep_atoms=True,
                                          rtol=1e-10, atol=1e-13)


@pytest.fixture(scope="module")
def big_linear(big_problem):
    return integrate_big("linear", big_problem[0])


def bulk_rates(inverse_p):
    """Decay rates of the bulk matrix at the fixed point: lr rho (1/p_a + 1/p_b), a <= b."""
    mu = LR / D_BIG * inverse_p
    return np.sort([2 * mu[0], mu[0] + mu[1], 2 * mu[1]])


@pytest.mark.parametrize("t", [500, 1e4])
def test_linear_big_finds_the_pca_state_the_run_heads_for(big_linear, big_problem, t):
    """Symptom 1: at t = 500 and 1e4 (error within 1 % of eps_PCA(2)) the bulk still holds most
    of |W|^2, so the fixed point is far in the state; it must still be found, and it must be the
    one this run converges to (fixed by the conserved C), not any point of the GL(2) orbit."""
    fp = fixed_point(big_linear, index=int(np.flatnonzero(BIG_TIMES == t)[0]))
    assert fp.found and fp.stable, fp.message
    assert fp.error == pytest.approx(big_linear.pca_errors[2], abs=1e-9)
    assert np.sort(np.linalg.eigvalsh(fp.T0)) == pytest.approx(big_problem[1], rel=1e-6)
    assert np.sort(np.linalg.eigvals(fp.Q @ fp.T0).real) == pytest.approx([2, 3], rel=1e-6)
    assert "= eps_PCA(2)" in fp.message


def test_linear_big_counts_k_squared_zero_modes_and_the_slow_bulk(big_linear, big_problem):
    """Symptom 2: at t = 1e5 the three bulk modes (rates ~2e-5, O(1/D)) are slow, not zero:
    exactly K^2 = 4 zero modes, all from GL(2), and the slowest rates are the bulk's."""
    fp = fixed_point(big_linear, index=int(np.flatnonzero(BIG_TIMES == 1e5)[0]))
    assert fp.found and fp.stable, fp.message
    assert fp.n_zero == fp.n_symmetry == 4
    assert "unexplained" not in fp.message
    decaying = np.sort(-fp.eigenvalues.real[~fp.is_zero])
    assert decaying[:3] == pytest.approx(bulk_rates(big_problem[1]), rel=3e-3)


def test_linear_big_predicted_approach_rate_is_the_measured_one(big_linear, big_problem):
    """Symptom 3: the error approaches eps_PCA(2) at the slowest bulk rate (the error is linear
    in the bulk matrix), 2 lr rho / max p. Measured on the error curve over t in [2e5, 4e5], where
    the two bulk modes that move the error (rates 2 lr rho / p_a, 3 % apart) mix: the fitted
    rate lies between them."""
    fp = fixed_point(big_linear, fit_from=2e5)
    assert fp.found, fp.message
    rates = bulk_rates(big_problem[1])
    assert fp.error_rate == pytest.approx(rates[0], rel=3e-3)
    assert rates[0] * (1 - 3e-3) <= fp.fitted_rate <= rates[2] * (1 + 3e-3)


@pytest.mark.parametrize("t", [500, 1e4])
def test_relu_pairing_is_found_and_named(t):
    """Symptom 4: relu without bias, K = 2, spikes (2, 1) D at D = 300 (SPEC finding 3), lr 1:
    the units pair into one linear unit, w_2 = -c w_1 (relu(x) - relu(-x) = x), at exactly
    eps_PCA(1); found from t = 500 on, and named eps_PCA(1), not compared with eps_PCA(K)."""
    problem = spiked_problem(300, 2, (2, 1), seed=0, scale_w=0.5, scale_v=0.5)
    res = generated.load("relu").integrate(*problem, lr=1.0, times=[0, 10, 100, t], keep_atoms=True,
                                           rtol=1e-10, atol=1e-13)
    fp = fixed_point(res)
    assert fp.found and fp.stable, fp.message
    assert fp.error == pytest.approx(res.pca_errors[1], abs=1e-9)
    assert fp.Q[0, 1] / np.sqrt(fp.Q[0, 0] * fp.Q[1, 1]) == pytest.approx(-1.0, abs=1e-9)
    assert fp.n_zero == fp.n_symmetry == 2
    assert "= eps_PCA(1) " in fp.message


def test_relu_big_ends_where_the_integration_ends(big_problem):
    """Spikes (3, 2, 1.5) D: relu does not pair here (SGD at D = 400 neither: correlation of the
    units' fields -0.354, error 2.29 at t = 2000). The stationary state found from t = 1000 is
    the one the integration reaches by t = 1e6, above eps_PCA(1)."""
    res = integrate_big("relu", big_problem[0], times=[0, 10, 100, 1e3, 1e6])
    fp = fixed_point(res, index=3)
    assert fp.found and fp.stable, fp.message
    assert fp.error == pytest.approx(res.error[-1], abs=1e-6)
    assert fp.error > res.pca_errors[1] + 0.01
    assert "= eps_PCA(1) +0.011" in fp.message


def test_erf_big_creeps_like_t_to_minus_two_thirds(big_problem):
    """erf: no finite fixed point; late on the units sit in g's cubic regime, the excess over
    eps_PCA(2) is ~ Q^2 and Q shrinks along the rescaling orbit at a rate set by the decoder's
    norm T0 ~ 1/Q: dQ/dt ~ -Q^4, so Q ~ t^-1/3 and the excess ~ t^-2/3."""
    times = np.concatenate([[0], np.logspace(0, 6, 31)])
    res = integrate_big("erf", big_problem[0], times=times)
    fp = fixed_point(res, fit_from=1e5)
    assert not fp.found
    assert "excess over eps_PCA(2)" in fp.message
    assert fp.power == pytest.approx(2 / 3, rel=0.02)
    late = res.t >= 1e5
    assert fit_power(res.t[late], res.Q[late, 0, 0]) == \
        pytest.approx(1 / 3, rel=0.03)
