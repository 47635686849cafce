"""integrate(..., stochastic=True): sample paths of the diffusion approximation of SGD at finite D
(runtime.stochastic, issue 15), against direct SGD, the fluctuation expansion, the finite-D
equations and the D -> infinity limit."""
import gc

import numpy as np
import pytest
from scipy.stats import ks_2samp

from conftest import assert_paths_agree
from generated import erf, linear, relu
from runtime import averages, fast_kernels, quadrature, stochastic
from runtime.simulate import simulate
from runtime.spectrum import spiked_problem

TIMES = np.linspace(0, 8, 17)


def saddle_case(D=300, scale=0.1):
    """Linear, K = 2, spikes (2, 1) D over a unit bulk, eigenbasis, W0 and V0 = scale N(0, 1) from
    seed 0, lr = 1: from the small start the error sits near 1.0 (one spike learnt) until
    t ~ 3-5, when the second unit leaves that saddle at a time the noise decides."""
    eigvals = np.concatenate([np.array([2.0, 1.0]) * D, np.ones(D - 2)])
    rng = np.random.default_rng(0)
    return eigvals, None, scale * rng.standard_normal((2, D)), scale * rng.standard_normal((2, D))


def test_paths_through_a_saddle_are_sgd_runs():
    """128 paths against 24 SGD seeds, while the runs leave the saddle (t <= 7): the mean within
    3 combined standard errors at every time, the error's distribution over paths not told apart
    from SGD's by a two-sample Kolmogorov-Smirnov test (1 % level, Bonferroni over the times), and
    the same for the escape time from the plateau (first crossing of the level halfway between
    eps_PCA(1) and eps_PCA(2)). Every path ends on the PCA fixed point."""
    args, seeds, paths = saddle_case(), 24, 128
    run = linear.integrate(*args, times=TIMES, stochastic=True, paths=paths, seed=1)
    sgd = simulate(linear, *args, times=TIMES, seeds=seeds, test_samples=0)
    assert run.status == 0 and run.error_paths.shape == (paths, TIMES.size)
    assert run.error[0] == pytest.approx(sgd.error[0, 0], rel=1e-10)
    assert_paths_agree(run.error_paths, sgd.error, TIMES, (TIMES > 0) & (TIMES <= 7))
    level = 0.5 * (run.pca_errors[1] + run.pca_errors[2])
    ours, theirs = run.escape_times(level), stochastic.escape_times(TIMES, sgd.error, level)
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs))
    assert 2 < np.median(ours) < 6
    assert ks_2samp(ours, theirs).pvalue > 0.01
    assert set(run.basins) <= {"(-2, +1)", "(+2, +1)", "(-2, -1)", "(+2, -1)", "(+1, +2)", "(-1, +2)", "(+1, -2)",
                                "(-1, -2)"}
    assert run.error[-1] == pytest.approx(run.pca_errors[2], abs=0.02)


def spread_se(error_paths):
    """The standard error of the paths' standard deviation at each time, for any distribution
    (delta method: Var(s) = (mu_4 - sigma^4) / (4 n sigma^2)). The errors' distributions here are
    heavy-tailed (excess kurtosis 2 ... 46 over the runs below: a few paths leave a plateau late),
    where the Gaussian sigma / sqrt(2 (n - 1)) is up to 3x too small."""
    x = error_paths - error_paths.mean(axis=0)
    kurtosis = np.mean(x**4, axis=0) / np.mean(x**2, axis=0) ** 2
    return error_paths.std(axis=0, ddof=1) * np.sqrt((kurtosis - 1) / (4 * error_paths.shape[0]))


def test_where_the_expansion_holds_paths_agree_with_it():
    """Linear, K = 2, D = 500, spikes (3, 2, 1.5) D, init 0.5 (no saddle): the paths' mean and
    spread agree with fluctuations=True, and their spread with SGD's (1024 runs stepped per
    sample: exact), within standard errors. During the drop at t ~ 2 SGD's spread is 0.032 against
    the expansion's 0.025 (the late paths; the spread check's ratio is 1.09 there)."""
    args, paths = spiked_problem(500, 2, (3.0, 2.0, 1.5), seed=2), 128
    times = np.linspace(0, 4, 5)
    run = linear.integrate(*args, times=times, stochastic=True, paths=paths, seed=3)
    expansion = linear.integrate(*args, times=times, fluctuations=True)
    sgd = linear.integrate(*args, times=times, stochastic="samples", paths=1024, seed=0)
    se_mean = run.error_spread[1:] / np.sqrt(paths)
    assert np.all(np.abs(run.error[1:] - expansion.error[1:]) <= 3 * se_mean)
    se_run, se_sgd = spread_se(run.error_paths[:, 1:]), spread_se(sgd.error_paths[:, 1:])
    assert np.all(np.abs(run.error_spread[1:] - expansion.error_spread[1:]) <= 4 * se_run)
    assert np.all(np.abs(run.error_spread[1:] - sgd.error_spread[1:]) <= 4 * np.hypot(se_run, se_sgd))


def test_a_trained_bias_fluctuates_with_the_spikes():
    """Linear, K = 1, D = 500, b0 = 0.3 (the bias' noise and its cross moments with the spikes,
    BIAS_NOISE): the paths' mean, spread and mean bias agree with the fluctuation expansion within
    the paths' standard errors; per path, the order parameters average to the result's."""
    args, paths, b0 = spiked_problem(500, 1, (3.0, 2.0, 1.5), seed=1), 128, np.array([0.3])
    times = np.linspace(0, 4, 5)
    run = linear.integrate(*args, times=times, b0=b0, stochastic=True, paths=paths, seed=2, keep_atoms=True)
    expansion = linear.integrate(*args, times=times, b0=b0, fluctuations=True)
    assert np.all(np.abs(run.error[1:] - expansion.error[1:]) <= 3 * run.error_spread[1:] / np.sqrt(paths))
    assert np.all(np.abs(run.error_spread[1:] - expansion.error_spread[1:]) <= 4 * spread_se(run.error_paths[:, 1:]))
    assert np.all(np.abs(run.b - expansion.b) < 0.02) and np.ptp(run.b[:, 0]) > 0.05     # the bias moves
    Q = run.path_order_parameters()[0]
    assert Q.shape == (times.size, paths, 1, 1)
    np.testing.assert_allclose(Q.mean(axis=1), run.Q, rtol=1e-12)
    assert run.directions().shape[:2] == (times.size, paths)


def test_the_scheme_converges_in_the_step_and_to_the_limit():
    """Heun in the drift: at D = 10^6, where the noise is small (spread ~5e-4), the paths' mean
    follows the finite-D equations and halving dt cuts its error ~4x (measured 0.021, 0.0061,
    0.0014 at dt = 0.2, 0.1, 0.05: second order); at D = 300 the spread does not move with dt
    beyond its standard error; as D grows the mean tends to the D -> infinity equations."""
    times = np.linspace(0, 3, 4)
    big = saddle_case(D=10**6, scale=0.3)
    exact = linear.integrate(*big, times=times, finite_size=True, rtol=1e-10, atol=1e-12)
    errs = [np.max(np.abs(linear.integrate(*big, times=times, stochastic=True, paths=16, dt=dt).error - exact.error))
            for dt in (0.2, 0.1, 0.05)]
    assert errs[1] < errs[0] / 2.5 and errs[2] < errs[1] / 2.5 and errs[2] < 3e-3, errs
    small, times = saddle_case(D=300, scale=0.3), np.linspace(0, 2, 3)
    spreads = [linear.integrate(*small, times=times, stochastic=True, paths=128, seed=s, dt=dt).error_spread[1:]
               for s, dt in ((4, 0.04), (5, 0.01))]
    assert np.all(np.abs(spreads[0] - spreads[1]) <= 4 * spreads[1] / np.sqrt(2 * 127)), spreads
    gaps = [np.max(np.abs(linear.integrate(*saddle_case(D, 0.3), times=times, stochastic=True, paths=64).error
                          - linear.integrate(*saddle_case(D, 0.3), times=times).error)) for D in (300, 3000)]
    assert gaps[1] < gaps[0] / 3, gaps


def test_escape_times_and_basins_read_the_paths():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    errors = np.array([[2.0, 1.5, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0], [0.4, 0.3, 0.2, 0.1]])
    np.testing.assert_allclose(stochastic.escape_times(t, errors, 1.25), [1.5, np.nan, 0.0])
    omega = np.array([[[0.1, -2.0], [1.0, 0.0]], [[-3.0, 0.0], [0.1, 0.2]]])      # (paths, J, K)
    assert list(stochastic.basins(omega, np.array([2.0, 1.0]))) == ["(+2, -1)", "(-1, +2)"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(fluctuations=True), "choose one"),
    (dict(finite_size=False), "needs the finite-D equations"),
    (dict(paths=1), "paths >= 2"),
    (dict(paths=2.5), "paths >= 2"),
    (dict(dt=0.0), "positive dt"),
    (dict(dt=float("nan")), "dt must be finite"),
])
def test_bad_requests_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear.integrate(*saddle_case(D=50), times=[0, 1], stochastic=True, **kwargs)


def issue_case(act, K, b0=None, D=300):
    """Issue 15's ReLU-with-a-trained-bias and erf K = 3 cases (test_stochastic_samples'
    test_issue_cases_from_a_saddle_start): spikes (3, 2, 1.5) D over a unit bulk, D = 300,
    eigenbasis, W0, V0 = 0.1 N(0, 1) from seed 7 (the saddle start), lr 1."""
    eigvals = np.concatenate([np.array([3.0, 2.0, 1.5]) * D, np.ones(D - 3)])
    rng = np.random.default_rng(7)
    return act, (eigvals, None, 0.1 * rng.standard_normal((K, D)), 0.1 * rng.standard_normal((K, D))), b0


RELU_BIAS = (relu, 2, np.array([0.3, -0.2]))
ERF_K3 = (erf, 3)


def _forget_averages():
    """Drop the averages remembered for the last Q (runtime.quadrature's and each activation's
    Equations'), so that none computed at other node counts is read back."""
    quadrature._LAST[:] = [None, {}]
    for obj in gc.get_objects():
        if isinstance(obj, averages.Equations):
            obj._last = (None, None)


#: node counts of the coarse multi-unit rule (runtime.quadrature's defaults: 131 one-unit nodes,
#: 91 x 131 per pair, 45^3 per triple): 7.5x cheaper on erf K = 3; against the default rule at 48
#: states along SGD paths the drift's finite-D correction is 3e-6 and the spikes' noise 1e-4 off,
#: relative to their largest entries (test_coarse_quadrature_keeps_the_finite_d_terms). Not for a
#: smoothed kink: ReLU's noise averages need the default rule's nodes (300 % off at these counts).
COARSE = dict(N_ONE=61, N_TRIPLE=25, N_OUTER=45, N_INNER=61)


def _coarse(monkeypatch):
    """Every multi-unit average by the quadrature at COARSE's node counts: not from
    runtime.fast_kernels' tables (tabulated_units), which would otherwise give the averages on one
    and two units -- or not, depending on whether an earlier test in the process built them at the
    default node counts (their checks against the quadrature fail at the coarse ones)."""
    for name, count in COARSE.items():
        monkeypatch.setattr(quadrature, name, count)
    monkeypatch.setattr(fast_kernels, "tabulated_units", lambda *args: None)


@pytest.fixture
def coarse_quadrature(monkeypatch):
    """The multi-unit quadrature at COARSE's node counts (_coarse) for the test, the remembered
    averages dropped before and after it."""
    _forget_averages()
    _coarse(monkeypatch)
    yield
    _forget_averages()


def _finite_terms(act, args, b0, Y):
    """The drift's finite-D correction F_D - F_inf and the spikes' noise N (step_noise) of
    integrate()'s systems for `act` at states Y (m, N)."""
    captured = {}

    def grab(finite, limit, noises, y0, times, paths, *rest):
        captured.update(finite=finite, limit=limit, noises=noises)
        return np.asarray(times, float), np.broadcast_to(y0, (len(times), paths, y0.size)), 0, "ok", 0

    real = stochastic.sample_paths
    stochastic.sample_paths = grab
    try:
        act.integrate(*args, times=[0.0, 1.0], b0=b0, stochastic=True, paths=2, progress=False)
    finally:
        stochastic.sample_paths = real
    finite, limit = captured["finite"], captured["limit"]
    _forget_averages()
    correction = finite(0.0, Y.T).T - limit(0.0, Y.T).T
    return correction, finite.step_noise(Y, captured["noises"])[1]


def test_coarse_quadrature_keeps_the_finite_d_terms(monkeypatch):
    """erf, K = 3 (the case test_erf_three_units_from_a_saddle_start runs at COARSE's node counts):
    at 48 states of SGD runs (8 per-sample paths at t = 0, 1, 2, 3, 5, 8: the fall from the saddle,
    the plateau and the second escape) the coarse rule's drift correction and spike noise are
    within 1e-5 and 1e-3 of the default rule's, relative to their largest entries (measured 3e-6
    and 1e-4); the correction itself is O(1/D), so its error is ~1e-8 of the drift."""
    act, args, b0 = issue_case(*ERF_K3)
    states = act.integrate(*args, times=[0, 1, 2, 3, 5, 8], stochastic="samples", paths=8, seed=3, progress=False,
                           keep_atoms=True).state
    Y = states.reshape(-1, states.shape[-1])
    monkeypatch.setattr(fast_kernels, "tabulated_units", lambda *args: None)      # the default rule's own
    correction, N = _finite_terms(act, args, b0, Y)
    _coarse(monkeypatch)
    coarse_correction, coarse_N = _finite_terms(act, args, b0, Y)
    _forget_averages()
    assert np.abs(correction).max() > 1e-4 and np.abs(N).max() > 1e-4       # terms that matter
    assert np.abs(coarse_correction - correction).max() <= 1e-5 * np.abs(correction).max()
    assert np.abs(coarse_N - N).max() <= 1e-3 * np.abs(N).max()


def _against_sgd(act, args, b0, times, paths, seeds, levels, below=0.0):
    """The diffusion paths (seed 9) against `seeds` SGD runs: mean within 3 SE (`below`: and a
    documented offset below SGD) and KS at every time (assert_paths_agree), and for each level the
    times the error first drops below it by KS (a run that never does within `times` counts as
    later than every one that does)."""
    run = act.integrate(*args, times=times, b0=b0, stochastic=True, paths=paths, seed=9, progress=False)
    sgd = simulate(act, *args, times=times, b0=b0, seeds=seeds, test_samples=0, progress=False)
    assert run.status == 0 and run.error_paths.shape == (paths, times.size)
    assert run.error[0] == pytest.approx(sgd.error[0, 0], rel=1e-10)
    worst_p, worst_gap = assert_paths_agree(run.error_paths, sgd.error, times, below=below)
    print(f"smallest KS p {worst_p:.3g} over {times.size - 1} times, largest mean gap {worst_gap:.2f} SE", end="")
    for level in levels:
        ours, theirs = (np.nan_to_num(escape, nan=np.inf) for escape in
                        (run.escape_times(level), stochastic.escape_times(times, sgd.error, level)))
        assert np.mean(np.isfinite(ours)) > 0.9 and np.mean(np.isfinite(theirs)) > 0.9, level
        pvalue = ks_2samp(ours, theirs).pvalue
        assert pvalue > 0.01, level
        print(f"; escape below {level}: {np.mean(ours[np.isfinite(ours)]):.3f} against "
              f"{np.mean(theirs[np.isfinite(theirs)]):.3f}, KS p {pvalue:.3g}", end="")
    return run, sgd


def test_relu_with_a_trained_bias_from_a_saddle_start():
    """ReLU with a trained bias b0 = (0.3, -0.2), K = 2 (issue 15's case), at the default settings:
    32 diffusion paths against 24 SGD seeds to t = 5, through the fall from the saddle (t ~ 1.5-3.5,
    error 3.74 -> 2.3): mean and distribution at every time, and the time of the fall's midpoint."""
    act, args, b0 = issue_case(*RELU_BIAS)
    times = np.linspace(0, 5, 11)
    _against_sgd(act, args, b0, times, 32, 24, [3.0])


def test_erf_three_units_from_a_saddle_start(coarse_quadrature):
    """erf, K = 3 (issue 15's case), the multi-unit quadrature at COARSE's node counts (checked
    above): 48 diffusion paths against 48 SGD seeds to t = 12, through the fall from the saddle
    (t ~ 2, error 3.74 -> 1.45), the plateau and the second escape, the one the noise times (t ~ 5-12,
    1.45 -> 0.8): mean and distribution at every time, and the times of both.

    In the fall the diffusion approximation's mean sits below SGD's by up to ~3/D (measured offline,
    192 paths against 1024 per-sample paths: 0.002-0.010 at t = 2-4; docs/stochastic.md), about
    1 SE at 48 paths and 48 seeds, so the mean is held to 3 SE plus that one-sided 3/D. Path seeds
    9-14 give z = -3.5, -0.9, -0.8, +0.2, -0.1, -1.0 at t = 4 (mean -1.0); seed 9 is the first."""
    act, args, b0 = issue_case(*ERF_K3)
    times = np.linspace(0, 12, 25)
    _against_sgd(act, args, b0, times, 48, 48, [2.2, 1.3], below=3 / args[0].size)
