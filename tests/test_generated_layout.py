"""The layout of generated/ (issue 13, item 2): what depends on the activation lives in
generated/NAME.py, the rules' equations once in generated/rules.py, and a right-hand side at
finite D evaluates its numerical averages in one quadrature call."""
import re

import numpy as np
import pytest

import generated
from conftest import ACTIVATIONS, ROOT, load
from generated import rules
from runtime import quadrature


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_modules_hold_no_rule_assembly(name):
    """No contraction of the equations is written in an activation's module: its DRIFTS, FINITE,
    SPIKE_NOISE, BIAS_DRIFTS and BIAS_NOISE call generated/rules.py, one function per rule."""
    source = (ROOT / "generated" / f"{name}.py").read_text()
    assert "einsum" not in source
    module = load(name)
    assert set(module.DRIFTS) == set(rules.LIMITS) and set(module.BIAS_DRIFTS) == set(rules.BIASED)
    if not module.FINITE_MISSING:
        assert set(module.FINITE) == set(module.SPIKE_NOISE) == set(rules.RULES)
    for rule, (drift, noise) in module.FINITE.items():
        assert drift.__doc__ == getattr(rules, f"finite_drift_{rule}").__doc__
        assert noise.__doc__ == getattr(rules, f"noise_{rule}").__doc__


def test_rules_list_what_they_read():
    """AVERAGES names every average a function of generated/rules.py reads (through the drift it
    extends too); E.unit, the hidden units' mask, is in every E (runtime.averages)."""
    source = (ROOT / "generated" / "rules.py").read_text()
    for function, names in rules.AVERAGES.items():
        body = source.split(f"\ndef {function}(")[1].split("\ndef ")[0]
        read = set(re.findall(r"\bE\.(\w+)", body)) - {"unit"}
        for called in re.findall(r"\b(_?drift_\w+)\(E,", body):    # the drift a bias drift extends, the shared terms
            read |= set(rules.AVERAGES[called])
        assert read == set(names), function


def _state(K, rng):
    X = rng.normal(size=(3 * K, 2 * K))
    C = X.T @ X / (3 * K)
    Q, R, T = C[:K, :K], C[K:, :K], C[K:, K:]
    S = np.array([(lambda Y: Y.T @ Y)(rng.normal(size=(2 * K + 2, 2 * K))) for _ in range(2)])
    return Q, R, T, T + 0.1 * np.eye(K), Q + 0.05 * np.eye(K), S, rng.normal(size=(3, 2 * K))


@pytest.mark.parametrize("name", ["erf", "relu", "linear"])
def test_one_quadrature_per_right_hand_side(name, monkeypatch):
    """The finite-D drift, the atoms' noise and the spikes' noise at the same order parameters
    (one right-hand side, with fluctuations) share one expect_units call; new order parameters
    make a new one."""
    calls = []
    real = quadrature.expect_units
    monkeypatch.setattr(quadrature, "expect_units", lambda *a, **k: calls.append(1) or real(*a, **k))
    act = generated.load(name)
    drift, noise = act.FINITE["vanilla"]
    Q, R, T, T0, WW, S, theta = _state(2, np.random.default_rng(0))
    rho = np.array([0.01, 0.002])
    # over g_eps at two widths (Richardson): one call on Q and Q / 4 where g is homogeneous (ReLU)
    per_call = 2 if getattr(act, "SMOOTHING", None) and act.HOMOGENEITY is None else 1
    drift(Q, R, T, T0, WW, 1.0, 400.0)
    noise(Q, R, T, T0, WW, 1.0, 400.0, S, rho, rho * 400)
    act.SPIKE_NOISE["vanilla"](Q, R, T, T0, WW, 1.0, 400.0, theta, np.array([0.01, 0.005, 0.003]), np.eye(3))
    assert len(calls) == per_call
    drift(1.01 * Q, R, T, T0, WW, 1.0, 400.0)
    assert len(calls) == 2 * per_call
