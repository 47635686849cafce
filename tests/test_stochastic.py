"""integrate(..., stochastic=True): sample paths of the diffusion approximation of SGD at finite D
(runtime.stochastic, issue 15), against direct SGD, the fluctuation expansion, the finite-D
equations and the D -> infinity limit."""
import numpy as np
import pytest
from scipy.stats import ks_2samp

from conftest import assert_paths_agree
from generated import linear
from runtime import stochastic
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
