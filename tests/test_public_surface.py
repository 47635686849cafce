"""Issue 17: the wrong answers and silent failures a new user hit at the public surface.

One regression test per symptom (each failed on the code before the fix), and a hypothesis test
that draws shape combinations for every public entry point: a ValueError naming the problem,
or a result that agrees with an independent path, never a wrong number.
"""
import inspect
import pydoc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from generated import erf, relu
from runtime import data, progress
from runtime import integrate as integrate_module
from runtime import simulate as simulate_module
from runtime.integrate import IntegrationError
from runtime.progress import Interrupted
from runtime.simulate import simulate
from runtime.spectrum import Spectrum, atom_matrices, random_init_matrices, spiked_problem

QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def problem():
    """D = 50, K = 2, spikes (2, 1) D, W0, V0 ~ N(0, 1): the issue's setting."""
    return spiked_problem(50, 2, [2.0, 1.0], seed=0, scale_w=1.0, scale_v=1.0)


# -- 1. a wrong answer with no error -------------------------------------------------------------

@pytest.mark.parametrize("cut", [slice(1, None), None])
def test_eigenvalues_that_do_not_match_the_eigenvectors_are_refused(problem, cut):
    eigvals, U, W0, V0 = problem
    bad = eigvals[cut] if cut is not None else np.append(eigvals, 1.0)       # 49 or 51 eigenvalues
    with pytest.raises(ValueError, match=rf"\(50, 50\).*{bad.size} eigenvalues"):
        erf.integrate(bad, U, W0, V0, times=[0, 1], **QUIET)
    with pytest.raises(ValueError, match=rf"shape \(D, D\) = \({bad.size}, {bad.size}\), got \(50, 50\)"):
        simulate(erf, bad, U, W0, V0, times=[0, 1], test_samples=0, **QUIET)


def test_no_hidden_units_is_refused(problem):
    eigvals, U, W0, V0 = problem
    with pytest.raises(ValueError, match="no hidden units"):
        erf.integrate(eigvals, U, W0[:0], V0[:0], times=[0, 1], **QUIET)
    with pytest.raises(ValueError, match="no hidden units"):
        simulate(erf, eigvals, U, W0[:0], V0[:0], times=[0, 1], test_samples=0, **QUIET)
    spectrum = Spectrum.spiked(50, [2.0, 1.0])
    empty = np.zeros((spectrum.J, 0, 0))
    with pytest.raises(ValueError, match="no hidden units"):
        erf.integrate(spectrum=spectrum, init=(empty, empty, empty), times=[0, 1], **QUIET)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(D=st.integers(4, 7), K=st.integers(0, 2), eigenbasis=st.booleans(), with_bias=st.booleans(),
       off=st.lists(st.sampled_from([0, 0, 0, 0, -1, 1]), min_size=5, max_size=5), seed=st.integers(0, 99))
def test_every_shape_combination_raises_or_agrees(D, K, eigenbasis, with_bias, off, seed):
    """eigvals (D + a,), eigvecs (D + b, D + b), W0 (K, D + c), V0 (K, D + d), b0 (K + e,):
    integrate, simulate, projections and atom_matrices either refuse with ValueError or, when every
    shape agrees, integrate's and simulate's initial errors agree (two independent paths)."""
    rng = np.random.default_rng(seed)
    a, b, c, d, e = off
    eigvals = np.concatenate([[3.0 * D], rng.uniform(0.5, 1.5, D - 1 + a)])
    U = None if eigenbasis else np.linalg.qr(rng.normal(size=(D + b, D + b)))[0]
    W0, V0 = rng.normal(size=(K, D + c)), rng.normal(size=(K, D + d))
    b0 = rng.normal(size=K + e) if with_bias else None
    consistent = K >= 1 and a == c == d == 0 and (eigenbasis or b == 0) and (not with_bias or e == 0)
    calls = {
        "integrate": lambda: erf.integrate(eigvals, U, W0, V0, times=[0, 0.2], b0=b0, **QUIET).error[0],
        "simulate": lambda: simulate(erf, eigvals, U, W0, V0, times=[0, 0.1], b0=b0, test_samples=0,
                                     **QUIET).error[0, 0],
    }
    if not consistent:
        for name, call in calls.items():
            with pytest.raises(ValueError):
                call()
        if U is not None and (b != c or c != d or K == 0):
            with pytest.raises(ValueError):
                atom_matrices(Spectrum.from_eigvals(np.ones(D + b))[0], np.zeros(D + b, dtype=int), W0, V0, U)
        return
    errors = {name: call() for name, call in calls.items()}
    assert np.isfinite(errors["integrate"])
    assert errors["integrate"] == pytest.approx(errors["simulate"], rel=1e-9)


def test_eigvecs_none_means_the_eigenbasis_in_integrate_as_in_simulate(problem):
    eigvals, U, W0, V0 = problem
    rotated = erf.integrate(eigvals, U, W0, V0, times=[0, 1, 5], **QUIET)
    eigenbasis = erf.integrate(eigvals, None, W0 @ U, V0 @ U, times=[0, 1, 5], **QUIET)
    np.testing.assert_allclose(eigenbasis.error, rotated.error, rtol=1e-8)
    sim = simulate(erf, eigvals, None, W0 @ U, V0 @ U, times=[0], test_samples=0, **QUIET)
    assert sim.error[0, 0] == pytest.approx(eigenbasis.error[0], rel=1e-12)


# -- 2. divergence reported as success -------------------------------------------------------------

def test_simulate_flags_diverging_seeds_and_stops_them(problem):
    eigvals, U, W0, V0 = problem
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = simulate(erf, eigvals, U, W0, V0, lr=50.0, times=[0, 1, 5, 20], seeds=2, test_samples=0, **QUIET)
    assert res.status == -1 and res.diverged.tolist() == [True, True] and "seed 1 diverged" in res.message
    assert np.all(np.isnan(res.error[:, -1]))
    # stopped at the first check past the threshold, not run on to 1e96
    Q = np.einsum("skd,sld->skl", res.W, res.W) / 50
    assert np.all(np.isfinite(res.W)) and np.max(Q) < 1e6


@pytest.mark.parametrize("prefetch", [False, True])
def test_the_seeds_that_survive_run_as_if_alone(problem, prefetch):
    """lr = 47: some of 8 seeds diverge. Stopping them must not change the others' trajectories."""
    eigvals, U, W0, V0 = problem
    kw = dict(lr=47.0, times=[0, 5, 20], test_samples=0, prefetch=prefetch, **QUIET)
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = simulate(erf, eigvals, U, W0, V0, seeds=8, **kw)
    assert 0 < res.diverged.sum() < 8
    survivor = int(np.flatnonzero(~res.diverged)[-1])
    alone = simulate(erf, eigvals, U, W0, V0, seeds=[survivor], **kw)
    np.testing.assert_array_equal(res.error[survivor], alone.error[0])
    np.testing.assert_array_equal(res.W[survivor], alone.W[0])


def test_integrate_stops_a_blow_up_early():
    """The tied rule at lr = 50 blows up at once; it used to take 233 s to say so."""
    eigvals, U, W0, _ = spiked_problem(50, 2, [2.0, 1.0], seed=0, scale_w=1.0, scale_v=1.0)
    with pytest.raises(IntegrationError, match="diverged") as info:
        erf.integrate(eigvals, U, W0, None, lr=50.0, rule="tied", times=[0, 10, 50], **QUIET)
    assert info.value.result.status == -1 and info.value.result.nfev < 1000


def test_integrate_warns_where_the_limit_is_not_to_be_trusted(problem):
    eigvals, U, W0, V0 = problem
    with pytest.warns(RuntimeWarning, match="finite_size=True") as record:
        limit = erf.integrate(eigvals, U, W0, V0, lr=50.0, times=[0, 1, 10], **QUIET)
    assert "D = 50, lr = 50" in str(record[0].message) and limit.finite_size_effect > 0.3
    finite = erf.integrate(eigvals, U, W0, V0, lr=50.0, times=[0, 1, 10], finite_size=True, **QUIET)
    assert abs(finite.error[-1] - limit.error[-1]) > 0.1          # the warning is about a real gap
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # at D = 500, lr = 1: no warning
        big = spiked_problem(500, 2, [2.0, 1.0], seed=0)
        res = erf.integrate(*big, times=[0, 1, 10], **QUIET)
    assert res.finite_size_effect < integrate_module.FINITE_SIZE_WARNING


# -- 3. runs with no feedback ------------------------------------------------------------------------

def test_long_runs_show_progress_unless_turned_off(problem, monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    eigvals, U, W0, V0 = problem
    erf.integrate(eigvals, U, W0, V0, times=[0, 5])
    simulate(erf, eigvals, U, W0, V0, times=[0, 5], test_samples=0)
    err = capsys.readouterr().err
    assert "integrate erf/vanilla" in err and "simulate erf/vanilla" in err
    erf.integrate(eigvals, U, W0, V0, times=[0, 5], progress=False)
    simulate(erf, eigvals, U, W0, V0, times=[0, 5], test_samples=0, progress=False)
    assert capsys.readouterr().err == ""


def test_ctrl_c_in_integrate_raises_with_the_partial_result(problem, monkeypatch):
    class Impatient(integrate_module.RK45):
        """RK45 whose user presses Ctrl-C at the 40th step."""
        def step(self):
            self.steps = getattr(self, "steps", 0) + 1
            if self.steps == 40:
                raise KeyboardInterrupt
            return super().step()

    monkeypatch.setitem(integrate_module._METHODS, "RK45", Impatient)
    eigvals, U, W0, V0 = problem
    with pytest.raises(Interrupted) as info:
        erf.integrate(eigvals, U, W0, V0, times=np.linspace(0, 1e12, 50), method="RK45", **QUIET)
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt) and result.status == -2 and "interrupted" in result.message
    assert result.t[0] == 0 and result.error[0] == pytest.approx(erf.integrate(eigvals, U, W0, V0, times=[0]).error[0])


def test_ctrl_c_in_simulate_raises_with_the_records_so_far(problem, monkeypatch):
    vanilla = simulate_module._RULE_STEPS["vanilla"]

    def impatient(*args):
        advance, calls = vanilla(*args), []

        def step(X, j0, j1):
            calls.append(1)
            if len(calls) == 30:
                raise KeyboardInterrupt
            advance(X, j0, j1)
        return step

    monkeypatch.setitem(simulate_module._RULE_STEPS, "vanilla", impatient)
    eigvals, U, W0, V0 = problem
    with pytest.raises(Interrupted) as info:
        simulate(erf, eigvals, U, W0, V0, times=np.arange(0, 1000.0, 0.1), seeds=2, test_samples=0, **QUIET)
    result = info.value.result
    assert result.status == -2 and "interrupted" in result.message
    assert np.all(np.isfinite(result.error[:, :5])) and np.all(np.isnan(result.error[:, -1]))


# -- 4. signatures -------------------------------------------------------------------------------

def test_generated_integrate_carries_the_runtime_signature_and_docstring():
    params = list(inspect.signature(erf.integrate).parameters)
    assert params[:5] == ["eigvals", "eigvecs", "W0", "V0", "lr"] and "fluctuations" in params and "act" not in params
    assert erf.integrate.__doc__ == integrate_module.integrate.__doc__
    assert "eigvals=None, eigvecs=None, W0=None" in pydoc.render_doc(erf.integrate)


# -- 7. small things -------------------------------------------------------------------------------

def test_fewer_samples_than_dimensions_gives_a_clean_spectrum():
    X = np.random.default_rng(0).normal(size=(10, 40))
    with pytest.warns(RuntimeWarning, match="round-off"):
        ds = data.prepare(X, test_fraction=0.0, cache=False)
    assert np.all(ds.eigvals >= 0) and np.sum(ds.eigvals > 1e-9) == 9      # centred: rank N - 1
    with pytest.raises(ValueError, match="at least 2"):
        data.spectrum(X[:1])


def test_variances_beyond_the_representable_range_are_refused():
    assert relu.I2(1e99 * np.eye(2)) == pytest.approx(1e99 / (2 * np.pi))   # sqrt(C11 C22)/(2 pi), SPEC 4
    with pytest.raises(ValueError, match="beyond the representable range"):
        relu.I2(1e300 * np.eye(2))
    with pytest.raises(ValueError, match="beyond the representable range"):
        erf.I3(1e200 * np.eye(3))


def test_random_init_matrices_build_init_for_a_spectrum():
    """The README's recipe for init=(q, r, t): the spiked model's two spikes sampled, its bulk at
    its law-of-large-numbers value, integrated like any other start."""
    spectrum = Spectrum.spiked(1000, [2.0, 1.0])
    init = random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    res = erf.integrate(spectrum=spectrum, init=init, times=[0, 10], **QUIET)
    assert res.success and res.error[-1] < res.error[0]


def test_register_takes_x_as_a_user_writes_it():
    """sp.Symbol("x") (no assumptions) and the string "tanh(x)" mean the registry's real x; any other
    free symbol is refused by name."""
    import sympy as sp
    from derive import activations
    try:
        plain = activations.register("probe_plain_x", sp.tanh(sp.Symbol("x")))
        text = activations.register("probe_text_x", "tanh(x)")
        assert plain.expr == text.expr == sp.tanh(activations.x)
        with pytest.raises(ValueError, match=r"\['y'\] are neither x nor parameters"):
            activations.register("probe_y", sp.tanh(sp.Symbol("y")))
    finally:
        for name in ("probe_plain_x", "probe_text_x", "probe_y"):
            activations.REGISTRY.pop(name, None)
