"""The integrator: exact lumping, the linear network's PCA fixed point, failures, bad input."""
import numpy as np
import pytest

import generated
from runtime import spectrum as spec
from runtime.integrate import IntegrationError
from runtime.spectrum import spiked_problem


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_lumping_is_exact(name):
    """D atoms (bulk eigenvalues split by 1e-9 relative) and M+1 atoms give one trajectory."""
    act = generated.load(name)
    D, K = 200, 2
    eigvals, eigvecs, W0, V0 = spiked_problem(D, K, [3.0, 2.0], seed=1)
    times = [0, 1, 5, 20]
    lumped = act.integrate(eigvals, eigvecs, W0, V0, times=times, rtol=1e-10, atol=1e-12)
    split = eigvals.copy()
    split[2:] *= 1 + 1e-11 * np.arange(D - 2)         # distinct: per-direction representation
    direct = act.integrate(split, eigvecs, W0, V0, times=times, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lumped.error, direct.error, rtol=1e-7)
    np.testing.assert_allclose(lumped.Q, direct.Q, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(lumped.R, direct.R, rtol=1e-7, atol=1e-10)


def test_atoms_input_matches_weights_input():
    """spectrum= with init matrices from the same weights gives the same result."""
    act = generated.load("erf")
    D, K = 150, 3
    eigvals, eigvecs, W0, V0 = spiked_problem(D, K, [4.0, 3.0, 2.0], seed=2)
    times = [0, 2, 10]
    a = act.integrate(eigvals, eigvecs, W0, V0, times=times, rtol=1e-10, atol=1e-12)
    spectrum, atom_of = spec.Spectrum.from_eigvals(eigvals)
    init = spec.atom_matrices(spectrum, atom_of, W0, V0, eigvecs)
    b = act.integrate(spectrum=spectrum, init=init, times=times, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.error, b.error, rtol=1e-8)


def test_linear_network_reaches_pca_error():
    """Linear activation: the fixed point of the equations is the PCA error of K components."""
    act = generated.load("linear")
    D, K = 100, 2
    eigvals, eigvecs, W0, V0 = spiked_problem(D, K, [3.0, 2.0, 1.5], seed=3)
    # at D = 100 the finite-D noise feeds the bulk by half the drift's scale late on: integrate says so
    with pytest.warns(RuntimeWarning, match="finite_size=True"):
        res = act.integrate(eigvals, eigvecs, W0, V0, lr=1.0, times=[0, 10, 1000, 100000])
    assert res.error[-1] == pytest.approx(res.pca_errors[K], rel=1e-4)
    assert res.error[0] > res.pca_errors[K] + 0.5


def test_result_fields_and_shapes():
    act = generated.load("erf")
    eigvals, eigvecs, W0, V0 = spiked_problem(60, 2, [2.0], seed=4)
    res = act.integrate(eigvals, eigvecs, W0, V0, times=np.logspace(-2, 1, 7))
    assert res.status == 0 and res.success and res.message == "ok"
    assert res.t.shape == (7,) and res.error.shape == (7,)
    assert res.Q.shape == res.R.shape == res.T.shape == res.T0.shape == (7, 2, 2)
    assert res.pca_errors.shape == (3,)


@pytest.mark.parametrize("change, message", [
    (lambda a: dict(a, W0=a["W0"][:, :-1]), "W0"),
    (lambda a: dict(a, eigvecs=a["eigvecs"][:-1]), "eigvecs"),
    (lambda a: dict(a, eigvals=-a["eigvals"]), "negative"),
    (lambda a: dict(a, W0=np.where(np.arange(a["W0"].size).reshape(a["W0"].shape) == 3, np.nan, a["W0"])), "NaN"),
    (lambda a: dict(a, rule="hebbian"), "rule"),
    (lambda a: dict(a, lr=-1.0), "lr"),
    (lambda a: dict(a, times=[0, 2, 1]), "times"),
])
def test_bad_input_names_the_problem(change, message):
    eigvals, eigvecs, W0, V0 = spiked_problem(20, 2, [2.0], seed=5)
    args = change(dict(eigvals=eigvals, eigvecs=eigvecs, W0=W0, V0=V0))
    args.setdefault("times", [0, 1])
    with pytest.raises(ValueError, match=message):
        generated.load("erf").integrate(**args)


def test_blow_up_raises_with_partial_result():
    """A drift that turns non-finite mid-run (here: once Q_11 passes a threshold, as a kernel
    outside its domain would) is reported and raised, and the data before it kept."""
    from runtime.integrate import integrate
    erf = generated.load("erf")

    class Breaking:
        NAME, population_error = "erf-breaking", staticmethod(erf.population_error)

        @staticmethod
        def drift(Q, R, T, T0, lr):
            A, B = erf.drift_vanilla(Q, R, T, T0, lr)
            return (A * np.nan, B) if np.any(Q[..., 0, 0] > 3.0) else (A, B)

        DRIFTS = {"vanilla": drift}

    eigvals, eigvecs, W0, V0 = spiked_problem(40, 2, [5.0, 4.0], seed=6, scale_w=0.3, scale_v=0.3)
    times = np.linspace(0, 40, 21)
    assert erf.integrate(eigvals, eigvecs, W0, V0, times=times).Q[:, 0, 0].max() > 3.0
    with pytest.raises(IntegrationError, match="blow-up") as info:
        integrate(Breaking, eigvals, eigvecs, W0, V0, times=times)
    partial = info.value.result
    assert partial.status == -1 and 1 <= partial.t.size < times.size
    assert np.all(np.isfinite(partial.error)) and np.all(partial.Q[:, 0, 0] <= 3.0 + 1e-9)
    quiet = integrate(Breaking, eigvals, eigvecs, W0, V0, times=times, raise_on_failure=False)
    assert quiet.status == -1 and "blow-up" in quiet.message


@pytest.mark.parametrize("name", ["linear", "erf"])
def test_default_tolerances_keep_a_deep_saddle(name):
    """Small weights (1e-7 N(0, 1)) sit near a saddle and leave it at a time set by their smallest
    components: the default atol scales with them (runtime.integrate.default_atol). With a fixed
    atol = 1e-9, method="auto" (BDF) was 5.7e-2 (linear) and 2.6e-2 (erf) off in the error;
    with the scaled one 3.1e-5 and 1.5e-5. Reference: DOP853 at rtol 1e-12, atol 1e-20."""
    from runtime.experiments import plateaus
    act = generated.load(name)
    eigvals, (W0, V0) = plateaus.problem(plateaus.FULL, 300, 1e-7)
    times = np.linspace(0, 80, 41)
    ref = act.integrate(eigvals, None, W0, V0, times=times, method="DOP853", rtol=1e-12, atol=1e-20, progress=False)
    assert np.ptp(ref.error) > 1.0                      # the run leaves both saddles within t <= 80
    sol = act.integrate(eigvals, None, W0, V0, times=times, progress=False)
    assert np.max(np.abs(sol.error - ref.error)) < 1e-4


def test_tied_mean_equations_with_spikes_of_order_D_warn_and_point_to_the_paths():
    """Tied weights with spikes of order D: SGD runs are a mixture the mean equations cannot describe
    (docs/tied.md) and their escape hangs on rounding; integrate says so. Macroscopic atoms only (where
    the tied equations match SGD) and the sample paths do not warn."""
    import warnings
    erf = generated.load("erf")
    eigvals, eigvecs, W0, V0 = spiked_problem(60, 2, (2.0, 1.0), seed=0)
    with pytest.warns(RuntimeWarning, match=r"spikes of order D \(eigenvalues 120, 60\).*stochastic=True"):
        erf.integrate(eigvals, eigvecs, W0, V0, times=[0, 0.5], rule="tied", progress=False)
    macroscopic = np.concatenate([np.full(6, 4.0), np.full(6, 2.0), np.ones(48)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        erf.integrate(macroscopic, None, W0, V0, times=[0, 0.5], rule="tied", progress=False)
        erf.integrate(eigvals, eigvecs, W0, V0, times=[0, 0.5], rule="tied", stochastic=True, paths=2, progress=False)
