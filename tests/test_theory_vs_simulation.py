"""The integrated equations against direct SGD simulation of the same network.

The equations are the D -> infinity limit. At finite D the mean SGD error sits above them by a
finite-size bias that shrinks like 1/D (measured: linear, K = 1, gap 0.056 / 0.032 / 0.012 /
0.005 at D = 250 / 500 / 1000 / 2000), and at D = 500 it exceeds the seed-to-seed spread.
So the test checks the limit itself: from the same initial weights, the gap between theory and
the seed-averaged simulation falls at least twofold from D = 250 to D = 1000 (1/D: fourfold),
up to the seed-averaging error.
"""
import numpy as np
import pytest

import generated
from runtime.simulate import simulate

TIMES = np.linspace(0, 20, 11)


def gap(name, K, D, seeds=6, rule="vanilla"):
    """Time-averaged |theory - mean over seeds of SGD| and the mean seed-to-seed spread."""
    rng = np.random.default_rng(K)
    eigvals = np.concatenate([np.array([3.0, 2.0, 1.5]) * D, np.ones(D - 3)])
    eigvecs = np.linalg.qr(rng.normal(size=(D, D)))[0]
    W0 = 0.5 * rng.normal(size=(K, D))
    V0 = 0.5 * rng.normal(size=(K, D))
    act = generated.load(name)
    theory = act.integrate(eigvals, eigvecs, W0, V0, times=TIMES, rule=rule)
    sim = simulate(act, eigvals, eigvecs, W0, V0, times=TIMES, seeds=seeds, test_samples=0, rule=rule)
    assert sim.status == 0, sim.message
    mean, spread = sim.error.mean(axis=0), sim.error.std(axis=0, ddof=1)
    assert theory.error[0] == pytest.approx(mean[0], rel=1e-10)     # same initial state
    return np.mean(np.abs(mean - theory.error)[1:]), np.mean(spread[1:])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_equations_are_the_large_D_limit_of_sgd(name, K):
    small, _ = gap(name, K, 250)
    large, spread = gap(name, K, 1000)
    # O(1/D) would give large ~ small / 4; allow half, plus three standard errors of the mean
    assert large < 0.5 * small + 3 * spread / np.sqrt(6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_truncated_equations_are_the_large_D_limit_of_sgd(name):
    small, _ = gap(name, 2, 250, rule="truncated")
    large, spread = gap(name, 2, 1000, rule="truncated")
    assert large < 0.5 * small + 3 * spread / np.sqrt(6)
