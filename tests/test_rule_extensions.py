"""The learning rules' extensions (issue 14) in the integrated equations, against SGD and closed forms:
the output bias c (a first unit with g = 1 and w = 0, derive.rules) and weight decay (rule_params
kappa). Their one-step drift and noise are checked against a Monte Carlo of one SGD step in
tests/test_finite.py; here whole runs are (their large-D limit: tests/test_theory_vs_simulation.py).
"""
import warnings

import numpy as np
import pytest

from conftest import run_small_config
from generated import load
from runtime.experiments import bias
from runtime.simulate import simulate


def _spiked(D, spikes, rng, init=0.5):
    eigvals = np.ones(D)
    eigvals[:len(spikes)] = np.asarray(spikes) * D
    K = len(spikes)
    return eigvals, init * rng.standard_normal((K, D)), init * rng.standard_normal((K, D))


def _within_spread(theory, sgd, what="error"):
    """Largest |theory - SGD mean| over the recorded times after 0, in units of the seed spread
    (the larger of SGD's and the one the fluctuation equations predict)."""
    spread = np.maximum(getattr(sgd, what).std(0, ddof=1), theory.error_spread)
    return float(np.max(np.abs(getattr(theory, what) - getattr(sgd, what).mean(0))[1:] / spread[1:]))


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_output_bias_follows_sgd_within_the_seed_spread(name):
    """c0 = N(0, 1) entries at D = 500, K = 2, spikes (3, 2) D: the fluctuation equations with the
    output bias follow SGD within the seed spread (measured: 0.5 spreads), and without the bias'
    unit they do not (the error differs by many spreads early on, when |c|^2/D ~ 1 decays)."""
    act, D = load(name), 500
    rng = np.random.default_rng(2)
    eigvals, W0, V0 = _spiked(D, (3.0, 2.0), rng)
    c0 = rng.standard_normal(D)
    times = np.linspace(0.0, 3.0, 7)
    theory = act.integrate(eigvals, None, W0, V0, lr=0.5, times=times, progress=False, c0=c0, fluctuations=True)
    sgd = simulate(act, eigvals, None, W0, V0, lr=0.5, times=times, seeds=6, progress=False, c0=c0)
    assert _within_spread(theory, sgd) < 2.0
    assert theory.output_bias[0] == pytest.approx(np.sum(c0**2) / D)
    assert theory.output_bias[-1] < 0.5 * theory.output_bias[0]       # c relaxes: the data have mean 0
    without = act.integrate(eigvals, None, W0, V0, lr=0.5, times=times, progress=False, fluctuations=True)
    without.error_spread = theory.error_spread
    assert _within_spread(without, sgd) > 10


def test_output_bias_closes_relus_gap_to_pca():
    """SPEC section 5's question, answered by the equations alone (the bias experiment's problem:
    K = 2, spikes (2, 1) D, init 0.1, b0 = 0.1, lr = 1, c0 = 0, t = 500): with both biases the
    error reaches eps_PCA(2) + 0.01 (SGD: 0.502-0.503); with the output bias alone it stays at
    SGD's 0.89, well above."""
    act, cfg = load("relu"), bias.FULL
    eigvals, W0, V0, b0 = bias.problem(cfg, cfg["D"][0])
    times = np.array([0.0, 100.0, 500.0])
    c0 = np.zeros(eigvals.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = act.integrate(eigvals, None, W0, V0, lr=1.0, times=times, progress=False, b0=b0, c0=c0)
        output = act.integrate(eigvals, None, W0, V0, lr=1.0, times=times, progress=False, c0=c0)
    pca = both.pca_errors
    assert both.error[-1] <= pca[2] + 0.01
    assert 0.87 <= output.error[-1] <= 0.91
    assert output.error[-1] > pca[2] + 0.3


def test_weight_decay_stationary_state_is_the_shrunk_pca_solution():
    """Linear g, vanilla with decay kappa: the stationary state keeps the top K directions with
    their amplitudes shrunk, a_k^2 = 1 - kappa/s_k for spikes s_k D (from the drift of SPEC
    section 5 with w, v -= (lr kappa/D) w, v): Q has eigenvalues s_k - kappa, T0 has 1 - kappa/s_k,
    and the error is eps_PCA(K) + sum_k kappa^2/(2 s_k)."""
    act, D, kappa = load("linear"), 400, 0.5
    spikes = np.array([3.0, 2.0])
    eigvals = np.full(D, 0.5)
    eigvals[:2] = spikes * D
    rng = np.random.default_rng(0)
    W0, V0 = 0.3 * rng.standard_normal((2, D)), 0.3 * rng.standard_normal((2, D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sol = act.integrate(eigvals, None, W0, V0, lr=1.0, times=[0.0, 400.0], progress=False,
                            rule_params={"kappa": kappa})
    assert np.sort(np.linalg.eigvalsh(sol.Q[-1])) == pytest.approx(np.sort(spikes - kappa), abs=1e-6)
    assert np.sort(np.linalg.eigvalsh(sol.T0[-1])) == pytest.approx(np.sort(1 - kappa / spikes), abs=1e-6)
    assert sol.error[-1] == pytest.approx(sol.pca_errors[2] + np.sum(kappa**2 / (2 * spikes)), abs=1e-7)


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_weight_decay_follows_sgd_within_the_seed_spread(name):
    """D = 500, kappa = 1: the fluctuation equations follow SGD with the same decay within the
    seed spread, and the decay moves the error by many spreads."""
    act, D = load(name), 500
    rng = np.random.default_rng(6)
    eigvals, W0, V0 = _spiked(D, (3.0, 2.0), rng, init=1.0)
    times, params = np.linspace(0.0, 4.0, 5), {"kappa": 1.0}
    theory = act.integrate(eigvals, None, W0, V0, lr=0.5, times=times, progress=False, fluctuations=True,
                           rule_params=params)
    sgd = simulate(act, eigvals, None, W0, V0, lr=0.5, times=times, seeds=6, progress=False, rule_params=params)
    assert _within_spread(theory, sgd) < 2.0
    plain = act.integrate(eigvals, None, W0, V0, lr=0.5, times=times, progress=False, fluctuations=True)
    plain.error_spread = theory.error_spread
    assert _within_spread(plain, sgd) > 3


def test_rule_params_and_output_bias_refuse_bad_input():
    act, D = load("erf"), 20
    rng = np.random.default_rng(0)
    eigvals, W0, V0 = _spiked(D, (2.0,), rng)
    call = dict(progress=False, times=[0.0, 1.0])
    for params, message in (({"kapa": 0.1}, "no parameter 'kapa'"), ({"kappa": np.nan}, "must be finite"),
                            ({"kappa": "a"}, "must be a number"), ([0.1], "must be a dict")):
        with pytest.raises(ValueError, match=message):
            act.integrate(eigvals, None, W0, V0, rule_params=params, **call)
    with pytest.raises(ValueError, match="c0 has shape"):
        act.integrate(eigvals, None, W0, V0, c0=np.zeros(D + 1), **call)
    with pytest.raises(ValueError, match="NaN"):
        act.integrate(eigvals, None, W0, V0, c0=np.full(D, np.nan), **call)
    with pytest.raises(ValueError, match="trains no output bias"):
        act.integrate(eigvals, None, W0, V0, rule="truncated", c0=np.zeros(D), **call)


def test_register_rule_refuses_what_the_engine_cannot_take():
    """Bad rules get a ValueError that names the problem, and are not registered."""
    import sympy as sp

    from derive import rules
    from derive.rules import D, X, V, act, dot, eta, k, l, lam, register_rule, scalar_times, sum_over
    e = X - sum_over(l, V[l] * act(l))
    good_dv = e * (eta / D * act(k))
    cases = [
        (lambda: dict(dw=3, dv=good_dv), "vector of the rule algebra"),
        (lambda: dict(dw=X * (eta * sp.Symbol("z") / D**2), dv=good_dv), "unknown symbol z"),
        (lambda: dict(dw=X * (eta * sp.Function("h")(lam[k]) / D**2), dv=good_dv), "unknown function h"),
        (lambda: dict(dw=scalar_times(dot(X, X), X) * (eta / D**3), dv=good_dv), r"\|x\|\^2"),
        (lambda: dict(dw=X * (eta**2 / D**2), dv=good_dv), "proportional to eta"),
        (lambda: dict(dw=scalar_times(dot(V[k], e), X) * (eta / D**2 * act(k, 1) / sp.sqrt(D)), dv=good_dv,
                      dc=e * (2 * eta / D)), "not its dc"),
        (lambda: dict(dw=X * (eta * act(k) / D**2), dv=good_dv, dc=e * (eta / D)), "dw at a unit with g = 1"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            register_rule("bad_rule", **make())
        assert "bad_rule" not in rules.RULES
    with pytest.raises(ValueError, match="already registered"):
        register_rule("vanilla", dw=X * (eta / D**2))
    with pytest.raises(ValueError, match="identifier"):
        register_rule("bad rule", dw=X * (eta / D**2))
    with pytest.raises(ValueError, match="unknown rule 'no_such_rule'"):
        simulate(load("erf"), np.ones(4), None, np.ones((1, 4)), np.ones((1, 4)), rule="no_such_rule")


def test_a_config_with_decay_and_output_bias_is_the_api(tmp_path):
    """kappa and c0 in a config file run the equations and SGD the API runs with rule_params and c0."""
    curves, eigvals, W0, V0 = run_small_config(tmp_path, "kappa = 0.2\nc0 = 0.3")
    extra = dict(times=curves["t"].to_numpy(), rule_params={"kappa": 0.2}, c0=np.full(100, 0.3), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theory = load("erf").integrate(eigvals, np.eye(100), W0, V0, **extra)
    sgd = simulate(load("erf"), eigvals, None, W0, V0, seeds=2, test_samples=0, **extra)
    assert np.allclose(curves["theory"], theory.error, rtol=1e-12)
    assert np.allclose(curves["sgd_mean"], sgd.mean(), rtol=1e-12)
