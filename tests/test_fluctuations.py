"""The fluctuation equations (runtime.fluctuations) without simulation: their corrections are
O(1/D), they start from zero, and bad requests raise. The comparison with SGD at D = 500 is in
tests/test_theory_vs_simulation.py."""
import numpy as np
import pytest

from generated import load
from runtime import spectrum as spec
from runtime.fluctuations import MAX_RELATIVE_SPREAD
from runtime.integrate import IntegrationError

TIMES = np.linspace(0, 20, 5)


def _run(name, D, **kw):
    spectrum = spec.Spectrum.spiked(D, [3.0, 2.0])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=1)
    return load(name).integrate(spectrum=spectrum, init=init, times=TIMES, **kw)


@pytest.mark.parametrize("name, b0", [("erf", None), ("linear", None), ("relu", None),
                                      ("erf", (0.3, -0.2)), ("relu", (0.3, -0.2))])
def test_corrections_fall_like_one_over_D(name, b0):
    """The change of the error and the predicted spread: x4 in D gives /4 and /2 (with a trained
    bias b0 too, whose fluctuations are included)."""
    change, spread = {}, {}
    for D in (2000, 8000):
        finite = _run(name, D, finite_size=True, b0=b0)
        fluct = _run(name, D, fluctuations=True, b0=b0, check_spread=False)    # tests/test_spread_check.py
        assert fluct.error_spread[0] == 0 and fluct.error[0] == finite.error[0]    # same weights, no spread yet
        change[D] = np.max(np.abs(fluct.error - finite.error))
        spread[D] = np.max(fluct.error_spread)
    assert change[2000] > 0
    assert change[2000] / change[8000] == pytest.approx(4, rel=0.1)
    assert spread[2000] / spread[8000] == pytest.approx(2, rel=0.15)


def test_finite_equations_with_a_bias_tend_to_the_large_D_limit():
    """integrate(finite_size=True, b0=...): the second-order terms averaged over the shifted fields;
    their gap to the D -> infinity equations falls like 1/D, and the biases stay trained."""
    b0 = np.array([0.3, -0.2])
    gap = {}
    for D in (500, 2000):
        finite, limit = _run("erf", D, finite_size=True, b0=b0), _run("erf", D, b0=b0)
        assert finite.b.shape == (TIMES.size, 2) and np.all(finite.b[0] == b0)
        gap[D] = np.max(np.abs(finite.error - limit.error))
    assert gap[500] > 0
    assert gap[500] / gap[2000] == pytest.approx(4, rel=0.1)


def test_order_parameters_are_seed_averages():
    """<Q> = Q(<y>) + (C's share): the averaged Q differs from that of the mean state by O(1/D)
    and stays symmetric."""
    res = _run("erf", 500, fluctuations=True, keep_atoms=True)
    mean_state_Q = res.system.core.order_parameters(res.state[:, :res.system.n])[0]
    assert np.allclose(res.Q, np.swapaxes(res.Q, 1, 2))
    assert 0 < np.max(np.abs(res.Q - mean_state_Q)) < 0.1 * np.max(np.abs(res.Q))


@pytest.mark.parametrize("kwargs, match", [
    ({"rule": "tied"}, "no O\\(1\\) limit"),
    ({"finite_size": False}, "needs the finite-D equations"),
    ({"rule": "truncated", "b0": np.zeros(2)}, "trains no bias"),
])
def test_unsupported_requests_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _run("erf", 100, fluctuations=True, **kwargs)



def test_a_breakdown_of_the_expansion_is_reported():
    """Spikes started almost orthogonal to the units (overlaps ~0.06): the mean sits near a saddle,
    runs escape at different times, and the spread grows past MAX_RELATIVE_SPREAD. The integrator
    stops there with a message and keeps what it computed."""
    spectrum = spec.Spectrum.spiked(500, [3.0, 2.0, 1.5])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    with pytest.raises(IntegrationError, match="fluctuations no longer small") as err:
        load("erf").integrate(spectrum=spectrum, init=init, times=np.linspace(0, 50, 26), fluctuations=True)
    partial = err.value.result
    assert partial.status == -1 and 10 < partial.t[-1] < 50
    assert np.all(np.isfinite(partial.error)) and partial.error_spread[-1] > 3 * partial.error_spread[2]
    assert MAX_RELATIVE_SPREAD == 0.5
