"""Learning-rate schedules (runtime.schedules; issue 14, item 3): lr may be a function of t = steps / D
in integrate and simulate alike, and the equations are the same with eta(t).

* A constant schedule is the float it holds: integrate and simulate give bit for bit what lr = 0.7 gives.
* SGD step n uses eta(n / D) (checked on two steps by hand, and across blocks and records).
* The D -> infinity drift is linear in lr, so there a schedule is a change of time: the run with
  eta(t) is the lr = 1 run at tau(t) = integral_0^t eta. The finite-D (lr^2) terms are not.
* SGD with a decaying schedule (inverse_time, cosine) against the equations with fluctuations at
  D = 500, the setup of tests/test_theory_vs_simulation.py: within the seed spread and within three
  standard errors at every time, while the equations at a constant lr miss it by several spreads.
"""
import math
import tomllib

import numpy as np
import pytest

import generated
from conftest import run_small_config
from runtime import config, schedules
from runtime import simulate as sim_module
from runtime.simulate import simulate
from runtime.spectrum import spiked_problem

erf, linear = generated.load("erf"), generated.load("linear")
QUIET = dict(progress=False)

# -- the module: values, reprs, config forms ---------------------------------------------------

def test_named_schedules_follow_their_formulas():
    t = np.array([0.0, 1.0, 5.0, 10.0, 20.0])
    assert np.array_equal(schedules.constant(0.7)(t), np.full(5, 0.7))
    assert np.allclose(schedules.inverse_time(2.0, 5.0)(t), 2.0 / (1 + t / 5.0), rtol=1e-15)
    cos = schedules.cosine(1.0, 10.0, lr_min=0.1)
    assert np.allclose(cos(t), 0.1 + 0.9 * (1 + np.cos(np.pi * np.minimum(t, 10) / 10)) / 2, rtol=1e-15)
    assert cos(0.0) == 1.0 and cos(10.0) == pytest.approx(0.1) and cos(20.0) == cos(10.0)
    assert isinstance(cos(3.0), float) and cos(t).shape == t.shape
    assert repr(cos) == "cosine(lr=1.0, t_max=10.0, lr_min=0.1)"
    assert "lr / (1 + t / t0)" in schedules.inverse_time.__doc__ and "cos(pi" in schedules.cosine.__doc__
    assert f"{schedules.constant(0.5):g}" == "0.5" and f"{cos:g}" == repr(cos)


@pytest.mark.parametrize("given, expected", [
    (0.5, schedules.constant(0.5)),
    (2, schedules.constant(2.0)),
    ({"schedule": "cosine", "lr": 1.0, "t_max": 50}, schedules.cosine(1.0, 50.0)),
    ({"schedule": "inverse_time", "lr": 1, "t0": 10}, schedules.inverse_time(1.0, 10.0)),
    ({"schedule": "constant", "lr": 0.3}, schedules.constant(0.3)),
    (("cosine", 1.0, 50, 0.1), schedules.cosine(1.0, 50.0, 0.1)),
    (schedules.inverse_time(1.0, 3.0), schedules.inverse_time(1.0, 3.0)),
])
def test_schedule_accepts_numbers_named_schedules_and_their_config_forms(given, expected):
    s = schedules.schedule(given)
    assert s == expected
    assert schedules.schedule(s.config()) == s                 # the config form round-trips


def test_a_function_of_t_is_vectorised_whether_or_not_it_takes_arrays():
    t = np.linspace(0, 10, 7)
    numpy_fn = schedules.schedule(lambda t: np.exp(-t / 4))
    scalar_fn = schedules.schedule(lambda t: math.exp(-t / 4))        # math.exp takes no arrays
    constant_fn = schedules.schedule(lambda t: 0.7)                   # a number for any t
    assert np.allclose(numpy_fn(t), np.exp(-t / 4)) and np.allclose(scalar_fn(t), np.exp(-t / 4))
    assert np.array_equal(constant_fn(t), np.full(7, 0.7)) and constant_fn.constant_value is None
    assert schedules.resolve(schedules.constant(0.7)) == 0.7 and type(schedules.resolve(0.7)) is float


# -- (a) a constant schedule is its number, bit for bit -------------------------------------------

CONSTANTS = {"constant(0.7)": schedules.constant(0.7), "lambda": lambda t: 0.7,
             "config form": {"schedule": "constant", "lr": 0.7}}
FIELDS = ("t", "error", "Q", "R", "T", "T0")


@pytest.fixture(scope="module")
def small():
    return spiked_problem(100, 2, (3.0, 2.0), seed=1)


@pytest.mark.parametrize("name", CONSTANTS)
def test_a_constant_schedule_integrates_bit_for_bit_like_its_number(small, name):
    times = [0, 0.5, 2, 6]
    ref = erf.integrate(*small, lr=0.7, times=times, **QUIET)
    res = erf.integrate(*small, lr=CONSTANTS[name], times=times, **QUIET)
    for what in FIELDS:
        assert np.array_equal(getattr(res, what), getattr(ref, what)), what
    assert ref.lr == 0.7 and (type(res.lr) is float) == (name != "lambda")
    # measured at each state's own time for a function (one state at a time): equal up to rounding
    assert res.finite_size_effect == pytest.approx(ref.finite_size_effect, rel=1e-12)


@pytest.mark.parametrize("name", ["constant(0.7)", "lambda"])
def test_a_constant_schedule_is_bit_for_bit_with_fluctuations(small, name):
    times = [0, 0.25, 0.5]
    ref = erf.integrate(*small, lr=0.7, times=times, fluctuations=True, **QUIET)
    res = erf.integrate(*small, lr=CONSTANTS[name], times=times, fluctuations=True, **QUIET)
    for what in (*FIELDS, "error_spread"):
        assert np.array_equal(getattr(res, what), getattr(ref, what)), what


@pytest.mark.parametrize("rule", ["vanilla", "biases", "truncated", "tied", "sanger"])
@pytest.mark.parametrize("name", ["constant(0.7)", "lambda"])
def test_a_constant_schedule_simulates_bit_for_bit_like_its_number(small, rule, name):
    """300 steps at D = 100: more than one block of samples (BLOCK = 256). "biases": vanilla with a
    trained encoder bias b0 and output bias c0."""
    act = linear if rule == "sanger" else erf
    extra = dict(b0=np.array([0.1, -0.2]), c0=np.full(100, 0.05)) if rule == "biases" else {}
    kw = dict(times=[0, 1, 3], seeds=2, test_samples=0, rule="vanilla" if rule == "biases" else rule, **extra, **QUIET)
    ref = simulate(act, *small, lr=0.7, **kw)
    res = simulate(act, *small, lr=CONSTANTS[name], **kw)
    for what in ("error", "Q", "R", "T0", "W", "V"):
        assert np.array_equal(getattr(res, what), getattr(ref, what)), what
    assert ref.lr == 0.7 and (type(res.lr) is float) == (name != "lambda")


# -- SGD's steps follow eta(n / D) -------------------------------------------------------------

def test_sgd_step_n_uses_eta_of_n_over_D():
    """Two steps by hand (SPEC section 1, vanilla) with eta(0) = 1 and eta(1/D) = 1 / (1 + 1/(D t0))."""
    D, K = 30, 2
    rng = np.random.default_rng(4)
    rho = np.ones(D)
    rho[:2] = (3.0 * D, 1.5 * D)
    W, V = rng.standard_normal((K, D)), rng.standard_normal((K, D))
    lr = schedules.inverse_time(1.0, t0=0.01)
    res = simulate(erf, rho, None, W, V, lr=lr, times=[0, 2 / D], seeds=[5], test_samples=0, **QUIET)
    gen = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0])
    X = gen.standard_normal((sim_module.BLOCK, D))[:2] * np.sqrt(rho)       # the first two samples
    for n, x in enumerate(X):
        eta = lr(n / D)
        lam = W @ x / np.sqrt(D)
        g, gp = erf.g(lam), erf.dg(lam)
        e = x - V.T @ g
        W, V = W + eta / D ** 2 * np.outer((V @ e) * gp, x / np.sqrt(D)), V + eta / D * np.outer(g, e)
    assert lr(1 / D) < 0.25
    assert np.allclose(res.W[0], W, rtol=1e-10, atol=1e-13) and np.allclose(res.V[0], V, rtol=1e-10, atol=1e-13)


def test_a_schedule_is_followed_across_blocks_and_records():
    """Recording does not change the trajectory (the step count carries over blocks of samples)."""
    args = spiked_problem(50, 2, (3.0, 2.0), seed=3)
    kw = dict(lr=schedules.cosine(1.0, t_max=8.0), seeds=2, test_samples=0, **QUIET)
    dense = simulate(erf, *args, times=np.linspace(0, 12, 25), **kw)
    sparse = simulate(erf, *args, times=[12.0], **kw)
    assert np.array_equal(dense.W, sparse.W) and np.array_equal(dense.error[:, -1], sparse.error[:, -1])
    const = simulate(erf, *args, times=[12.0], seeds=2, test_samples=0, **QUIET)
    assert not np.allclose(const.W, sparse.W)


# -- the D -> infinity equations: a schedule is a change of time -----------------------------------

def _tau(lr, t):
    """integral_0^t eta(s) ds."""
    if isinstance(lr, schedules.inverse_time):
        return lr.lr * lr.t0 * np.log1p(t / lr.t0)
    s = np.minimum(t, lr.t_max)
    a = lr.lr - lr.lr_min
    return lr.lr_min * t + a * (s / 2 + lr.t_max / (2 * np.pi) * np.sin(np.pi * s / lr.t_max))


@pytest.mark.parametrize("lr", [schedules.inverse_time(1.0, 3.0), schedules.cosine(1.0, 10.0, lr_min=0.1)], ids=repr)
@pytest.mark.parametrize("rule", ["vanilla", "truncated", "bias"])
def test_limit_equations_with_a_schedule_are_the_constant_run_at_integrated_time(small, lr, rule):
    """Measured: the two agree to 5e-9 (relative), while the schedule moves the error by 0.06 (cosine)
    to 0.39 (inverse_time) from the constant-lr run at the same t."""
    times = np.linspace(0, 20, 11)
    kw = dict(rule="vanilla" if rule == "bias" else rule, b0=np.array([0.2, -0.1]) if rule == "bias" else None,
              finite_size=False, rtol=1e-9, atol=1e-12, **QUIET)
    res = erf.integrate(*small, lr=lr, times=times, **kw)
    warped = erf.integrate(*small, lr=1.0, times=_tau(lr, times), **kw)
    const = erf.integrate(*small, lr=1.0, times=times, **kw)
    assert res.lr is lr
    for what in ("error", "Q", "R", "T0"):
        assert np.allclose(getattr(res, what), getattr(warped, what), rtol=1e-6, atol=1e-8), what
    assert np.max(np.abs(res.error - const.error)) > 0.03          # the schedule does change the run


# -- (b, c) SGD with a decaying schedule against the equations at D = 500 ---------------------------

D, SEEDS = 500, 16
TIMES = np.linspace(0, 40, 21)


@pytest.fixture(scope="module")
def spiked():
    """Spikes 3D, 2D, 1.5D over a unit bulk, K = 2, random eigenvectors, weights 0.5 N(0, 1)."""
    return spiked_problem(D, 2, (3.0, 2.0, 1.5), seed=2)


@pytest.fixture(scope="module")
def constant_theory(spiked):
    return erf.integrate(*spiked, lr=1.0, times=TIMES, fluctuations=True, **QUIET)


@pytest.mark.parametrize("lr", [schedules.inverse_time(1.0, t0=5.0), schedules.cosine(1.0, t_max=30.0)], ids=repr)
def test_sgd_with_a_decaying_schedule_matches_the_equations(spiked, constant_theory, lr):
    """erf, K = 2, D = 500, 16 seeds, t in [0, 40]; the equations with fluctuations (finite D; the
    D -> infinity ones carry an O(1/D) bias larger than the spread here, test_theory_vs_simulation).
    Measured: gap / spread at most 0.16 (inverse_time) and 0.23 (cosine), gap / standard error at
    most 0.62 and 0.91; the constant-lr equations miss the scheduled SGD by up to 7.8 and 7.5 spreads."""
    theory = erf.integrate(*spiked, lr=lr, times=TIMES, fluctuations=True, **QUIET)
    sgd = simulate(erf, *spiked, lr=lr, times=TIMES, seeds=SEEDS, test_samples=0, **QUIET)
    assert theory.success and sgd.status == 0, (theory.message, sgd.message)
    assert sgd.lr is lr and theory.lr is lr
    mean, spread = sgd.mean()[1:], sgd.std()[1:]
    se = spread / np.sqrt(SEEDS)
    gap = np.abs(theory.error[1:] - mean)
    assert np.all(gap <= spread), np.max(gap / spread)
    assert np.all(gap <= 3 * se), np.max(gap / se)
    assert 0.5 < np.mean(theory.error_spread[1:]) / np.mean(spread) < 2
    # (c) the schedule matters: at a constant lr the same equations are far outside SGD's spread
    assert np.max(np.abs(constant_theory.error[1:] - mean) / spread) > 3


# -- (d) bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (0, "lr must be a positive number"),
    (-1.0, "lr must be a positive number"),
    (float("nan"), "lr must be finite"),
    (float("inf"), "lr must be finite"),
    ("fast", "a named schedule needs its parameters"),
    ({"schedule": "exponential", "lr": 1.0}, "unknown learning-rate schedule 'exponential'"),
    ({"lr": 1.0, "t_max": 5}, "needs a 'schedule' key"),
    ({"schedule": "cosine", "lr": 1.0}, r"cosine schedule takes lr, t_max, lr_min \(required: lr, t_max\)"),
    ({"schedule": "cosine", "lr": 1.0, "t_max": 5, "warmup": 1}, "unknown: warmup"),
    ({"schedule": "cosine", "lr": 1.0, "t_max": 5, "lr_min": 2.0}, "lr_min must be in"),
    ({"schedule": "inverse_time", "lr": 1.0, "t0": 0}, "t0 must be a positive number"),
    ({"schedule": "inverse_time", "lr": "1", "t0": 2}, "lr must be a number"),
    (("cosine",), "cosine schedule takes"),
    ((), "schedule name, arguments"),
    (lambda t: -1.0, r"gave lr = -1.0 at t = 0"),
    (lambda t: float("nan"), r"gave lr = nan at t = 0"),
    (lambda t: "fast", "expected a number"),
    (lambda: 1.0, "expected a number"),
], ids=lambda value: "callable" if callable(value) else str(value))   # stable ids: pytest-xdist compares them
def test_bad_schedules_raise_value_error_naming_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        schedules.schedule(bad)


def test_integrate_and_simulate_reject_bad_learning_rates(small):
    for call in (lambda lr: erf.integrate(*small, lr=lr, times=[0, 1], **QUIET),
                 lambda lr: simulate(erf, *small, lr=lr, times=[0, 1], test_samples=0, **QUIET)):
        for lr, message in [(lambda t: -0.5, "gave lr = -0.5 at t = 0"), ({"schedule": "cosine"}, "takes lr, t_max"),
                            (("inverse_time", 1.0, -2.0), "t0 must be a positive number")]:
            with pytest.raises(ValueError, match=message):
                call(lr)
    # the checks of a number are as before
    with pytest.raises(ValueError, match="lr must be a positive number, got 0.0"):
        erf.integrate(*small, lr=0, times=[0, 1], **QUIET)
    with pytest.raises(ValueError, match="lr must be a positive number, got 'cosine'"):
        erf.integrate(*small, lr="cosine", times=[0, 1], **QUIET)
    with pytest.raises(ValueError, match="lr must be positive and finite"):
        simulate(erf, *small, lr=-1, times=[0, 1], **QUIET)
    with pytest.raises(ValueError, match="lr must be a number, got 'cosine'"):
        simulate(erf, *small, lr="cosine", times=[0, 1], **QUIET)
    # a function that turns negative later is caught where it does
    with pytest.raises(ValueError, match=r"gave lr = -[0-9.e-]+ at t = 2\.0"):
        simulate(erf, *small, lr=lambda t: 1.0 - t / 2, times=[0, 3], test_samples=0, **QUIET)
    with pytest.raises(ValueError, match=r"gave lr = -[0-9.e-]+ at t = 2\.0"):
        erf.integrate(*small, lr=lambda t: 1.0 - t / 2, times=[0, 3], method="RK45", **QUIET)


# -- configs --------------------------------------------------------------------------------------

def test_config_takes_a_number_or_an_inline_schedule_table():
    cfg, _ = config.parse(tomllib.loads('lr = {schedule = "cosine", lr = 1, t_max = 50}'))
    assert cfg["lr"] == {"schedule": "cosine", "lr": 1.0, "t_max": 50.0, "lr_min": 0.0}
    assert config.parse(tomllib.loads("lr = 0.5"))[0]["lr"] == 0.5
    base, grid = config.parse(tomllib.loads('[sweep]\nlr = [0.5, {schedule = "inverse_time", lr = 1, t0 = 10}]'),
                              sweep=True)
    assert grid["lr"] == [0.5, {"schedule": "inverse_time", "lr": 1.0, "t0": 10.0}]
    for text, expected in [('lr = {schedule = "step", lr = 1}', "lr: unknown learning-rate schedule 'step'"),
                           ('lr = {schedule = "cosine", lr = 1}', "lr: cosine schedule takes"),
                           ('lr = {schedule = "cosine", lr = -1, t_max = 5}', "lr: cosine schedule: lr must be a positive"),
                           ("[lr]\nt0 = 3", "lr: lr as a table needs a 'schedule' key")]:
        with pytest.raises(config.ConfigError, match=expected):
            config.parse(tomllib.loads(text))


def test_run_with_a_schedule_config_is_the_api_with_that_schedule(tmp_path):
    curves, eigvals, W0, V0 = run_small_config(tmp_path, 'lr = {schedule = "inverse_time", lr = 1.0, t0 = 2}')
    lr = schedules.inverse_time(1.0, 2.0)
    theory = erf.integrate(eigvals, np.eye(100), W0, V0, lr=lr, times=curves["t"].to_numpy(), **QUIET)
    sgd = simulate(erf, eigvals, None, W0, V0, lr=lr, times=curves["t"].to_numpy(), seeds=2, test_samples=0, **QUIET)
    assert np.allclose(curves["theory"], theory.error, rtol=1e-12)
    assert np.allclose(curves["sgd_mean"], sgd.mean(), rtol=1e-12)
    assert (tmp_path / "out" / "error.png").exists()
