"""integrate(..., stochastic="samples"), and stochastic=True for tied weights: SGD stepped per
sample in the reduced space (runtime.stochastic_samples, issue 15), against direct SGD
(runtime.simulate, D-dimensional, seeded) at the same D."""
import numpy as np
import pytest
from scipy.stats import ks_2samp

from conftest import assert_paths_agree
from generated import erf, linear, relu
from runtime import stochastic_samples
from runtime.integrate import IntegrationError
from runtime.simulate import simulate
from runtime.spectrum import Spectrum, random_init_matrices
from runtime.stochastic import basins, escape_times, sign_patterns

TIED_TIMES = np.linspace(0, 20, 11)


def tied_case(D=200, scale=0.5):
    """Linear, K = 2, spikes (3, 2, 1.5) D over a unit bulk, eigenbasis, W0 = scale N(0, 1) from
    seed 0, lr = 0.25 (docs/tied.md at D = 200): the runs sit in a plateau near eps = 3.74 and
    leave it at t ~ 8 ... 14, each unit on a spike with a sign the noise decides."""
    eigvals = np.concatenate([np.array([3.0, 2.0, 1.5]) * D, np.ones(D - 3)])
    return eigvals, None, scale * np.random.default_rng(0).standard_normal((2, D)), None


@pytest.fixture(scope="module")
def tied_runs():
    args = tied_case()
    run = linear.integrate(*args, times=TIED_TIMES, rule="tied", lr=0.25, stochastic=True, paths=256, seed=1,
                           progress=False)
    sgd = simulate(linear, *args, times=TIED_TIMES, rule="tied", lr=0.25, seeds=48, test_samples=0, n_overlap=3,
                   progress=False)
    return run, sgd


def test_tied_paths_are_sgd_runs(tied_runs):
    """Tied weights (stochastic=True steps them per sample): 256 paths against 48 SGD seeds, through
    the plateau, the escape and after it, agree in mean and distribution at every time."""
    run, sgd = tied_runs
    assert run.status == 0 and run.error_paths.shape == (256, TIED_TIMES.size)
    assert run.error[0] == pytest.approx(sgd.error[0, 0], rel=1e-12)
    assert_paths_agree(run.error_paths, sgd.error, TIED_TIMES)
    assert np.all(run.error_paths[:, 1] > 3.7) and np.median(run.error_paths[:, -1]) < 1.4   # plateau, then escape
    level = 0.5 * (run.error[1] + run.error[-1])
    ours, theirs = run.escape_times(level), escape_times(TIED_TIMES, sgd.error, level)
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs)) and 6 < np.median(ours) < 10
    assert ks_2samp(ours, theirs).pvalue > 0.01


def test_tied_sign_mixture_is_sgds(tied_runs):
    """The runs end in a mixture of sign patterns (the sign of each unit's overlap with the spike it
    learns): the fraction of paths with each pattern is within 3 combined binomial standard errors
    of SGD's fraction over its 48 seeds, and at least two patterns each hold 10 % of SGD's runs."""
    run, sgd = tied_runs
    assert list(sign_patterns(["(+2, -1)", "(-1, +2)"])) == ["+-", "-+"]
    ours = sign_patterns(run.basins)
    theirs = sign_patterns(basins(sgd.overlap[:, -1].transpose(0, 2, 1), np.array([3.0, 2.0, 1.5])))
    assert np.sum([np.mean(theirs == p) >= 0.1 for p in np.unique(theirs)]) >= 2
    for pattern in np.union1d(ours, theirs):
        f, g = np.mean(ours == pattern), np.mean(theirs == pattern)
        se = np.sqrt(f * (1 - f) / ours.size + g * (1 - g) / theirs.size)
        assert abs(f - g) <= 3 * max(se, 1 / theirs.size), (pattern, f, g, se)


def test_vanilla_paths_match_sgd_at_the_fixed_point_too():
    """stochastic="samples" for the untied rule on the saddle case of tests/test_stochastic.py
    (linear, K = 2, D = 300, spikes (2, 1) D, init 0.1, lr 1), to t = 12: also once the runs sit at
    the fixed point, where the diffusion paths leave out the bulk's own noise and their spread is
    half SGD's (docs/stochastic.md), the per-sample paths are SGD's."""
    D = 300
    eigvals = np.concatenate([np.array([2.0, 1.0]) * D, np.ones(D - 2)])
    rng = np.random.default_rng(0)
    args = eigvals, None, 0.1 * rng.standard_normal((2, D)), 0.1 * rng.standard_normal((2, D))
    times = np.linspace(0, 12, 13)
    run = linear.integrate(*args, times=times, stochastic="samples", paths=192, seed=2, progress=False)
    sgd = simulate(linear, *args, times=times, seeds=32, test_samples=0, progress=False)
    assert run.status == 0
    assert_paths_agree(run.error_paths, sgd.error, times)
    late = times >= 10
    ratio = run.error_paths[:, late].std(axis=0, ddof=1) / sgd.error[:, late].std(axis=0, ddof=1)
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_erf_tied_on_several_atoms_with_a_schedule():
    """erf, tied, eigenvalues 4 and 2 with D/10 directions each over a unit bulk (three atoms kept in
    frames), lr a schedule: the paths agree with SGD in mean and distribution."""
    D = 200
    eigvals = np.concatenate([np.full(D // 10, 4.0), np.full(D // 10, 2.0), np.ones(D - D // 5)])
    W0 = np.random.default_rng(3).standard_normal((2, D))
    times = np.linspace(0, 4, 9)
    lr = {"schedule": "inverse_time", "lr": 2.0, "t0": 5.0}
    run = erf.integrate(eigvals, None, W0, None, times=times, rule="tied", lr=lr, stochastic=True, paths=128,
                        seed=4, progress=False)
    sgd = simulate(erf, eigvals, None, W0, None, times=times, rule="tied", lr=lr, seeds=32, test_samples=0,
                   progress=False)
    assert_paths_agree(run.error_paths, sgd.error, times)
    assert run.error[-1] < run.error[0] - 0.25


def test_compression_keeps_every_inner_product():
    """A block of samples and the compression of the frames leave integrate()'s state (the spikes'
    vectors, each large atom's sum theta theta^T) unchanged by the compression, to rounding; also
    where the weights are dependent within an atom (V = 2 W), whose Gram matrix has no Cholesky
    factor."""
    spectrum = Spectrum.spiked(100, (3.0, 2.0))
    q, r, t = random_init_matrices(spectrum, 2, seed=0)
    run = linear.integrate(spectrum=spectrum, init=(q, r, t), times=[0.0, 0.5], stochastic="samples", paths=4,
                           seed=0, progress=False, keep_atoms=True)
    system, state = run.system, run.state[0, 0]
    net = stochastic_samples.ReducedPaths(spectrum, 2, 2, False, state, system, 3)
    rng = np.random.default_rng(0)
    net.W += net.draw(rng, 3)[:, :2] * 1e-3
    net.V += net.draw(rng, 3)[:, :2]
    before = net.state()
    net.compress()
    assert np.allclose(net.state(), before, rtol=1e-10, atol=1e-10 * np.abs(before).max())
    assert np.all(net.W[:, :, net.blocks[0].start + net.R:] == 0)
    net.V[:] = 2 * net.W                # rows dependent within the atom: a singular Gram matrix (the QR)
    before = net.state()
    net.compress()
    assert np.allclose(net.state(), before, rtol=1e-10, atol=1e-10 * np.abs(before).max())
    assert np.all(np.isfinite(net.W)) and np.all(np.isfinite(net.V))


def test_trained_biases():
    """erf, vanilla with a trained encoder bias and output bias (b0, c0; the output bias is one more
    vector in the frames): the paths agree with SGD in mean and distribution, and the result's
    biases are the paths' means."""
    D = 100
    eigvals = np.concatenate([np.array([3.0, 1.5]) * D, np.ones(D - 2)])
    rng = np.random.default_rng(5)
    W0, V0, c0 = 0.5 * rng.standard_normal((2, D)), 0.5 * rng.standard_normal((2, D)), rng.standard_normal(D)
    b0 = np.array([0.3, -0.2])
    times = np.linspace(0, 3, 7)
    run = erf.integrate(eigvals, None, W0, V0, times=times, b0=b0, c0=c0, stochastic="samples", paths=96, seed=6,
                        progress=False)
    sgd = simulate(erf, eigvals, None, W0, V0, times=times, b0=b0, c0=c0, seeds=32, test_samples=0, progress=False)
    assert_paths_agree(run.error_paths, sgd.error, times)
    assert run.error[-1] < run.error[0] - 0.3
    se = sgd.b[:, -1].std(axis=0, ddof=1) * np.sqrt(1 / 32 + 1 / 96)     # combined, at SGD's spread
    assert np.all(np.abs(run.b[-1] - sgd.b[:, -1].mean(axis=0)) <= 3 * se)


def test_a_diverging_path_stops_the_run():
    """Linear tied SGD diverges at a large rate: the run stops at the first record where a path's
    error passed the divergence limit, raising IntegrationError with what it recorded."""
    args = tied_case(D=50)
    with pytest.raises(IntegrationError, match="diverged") as info:
        linear.integrate(*args, times=[0, 0.5, 20], rule="tied", lr=4.0, stochastic=True, paths=8, progress=False)
    assert info.value.result.status == -1 and info.value.result.error_paths.shape[0] == 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(stochastic="paths"), "stochastic must be False, True or 'samples'"),
    (dict(stochastic="samples", paths=1), "paths >= 2"),
    (dict(stochastic="samples", spectrum=Spectrum(np.array([300.0, 1.0]), np.array([1.0, 99.5]), 100)),
     "integer multiplicities"),
])
def test_bad_input(kwargs, message):
    """Bad input raises ValueError naming it; a density's quadrature (non-integer multiplicities)
    has no directions to step."""
    spectrum = kwargs.pop("spectrum", None)
    if spectrum is None:
        args = tied_case(D=50)
        call = dict(eigvals=args[0], W0=args[2], V0=args[2])
    else:
        call = dict(spectrum=spectrum, init=random_init_matrices(spectrum, 2, seed=0))
    with pytest.raises(ValueError, match=message):
        linear.integrate(**call, times=[0, 1], progress=False, **kwargs)


@pytest.mark.parametrize("case", ["relu, trained bias", "erf, K = 3"])
def test_issue_cases_from_a_saddle_start(case):
    """Issue 15's cases the diffusion paths are too slow for in CI (their multi-unit quadrature):
    ReLU with a trained bias b0 = (0.3, -0.2) and erf with K = 3, spikes (3, 2, 1.5) D over a unit
    bulk, D = 300, W0, V0 = 0.1 N(0, 1) (the saddle start), lr 1. The per-sample paths against 24 SGD
    seeds: mean within 3 SE and KS at every time, and the times the error first drops below the
    midpoint of its fall, by KS."""
    D, act, K, b0 = (300, relu, 2, np.array([0.3, -0.2])) if case.startswith("relu") else (300, erf, 3, None)
    eigvals = np.concatenate([np.array([3.0, 2.0, 1.5]) * D, np.ones(D - 3)])
    rng = np.random.default_rng(7)
    args = eigvals, None, 0.1 * rng.standard_normal((K, D)), 0.1 * rng.standard_normal((K, D))
    times = np.linspace(0, 16, 33)
    run = act.integrate(*args, times=times, b0=b0, stochastic="samples", paths=128, seed=8, progress=False)
    sgd = simulate(act, *args, times=times, b0=b0, seeds=24, test_samples=0, progress=False)
    assert_paths_agree(run.error_paths, sgd.error, times)
    level = 0.5 * (sgd.error[:, 0].mean() + sgd.error[:, -1].mean())
    ours, theirs = escape_times(times, run.error_paths, level), escape_times(times, sgd.error, level)
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs))          # every run falls past it
    assert ks_2samp(ours, theirs).pvalue > 0.01
