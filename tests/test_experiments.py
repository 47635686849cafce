"""The experiments package: each experiment end to end at small size, the command line, and the
theory overlaps in the simulator's convention."""
import json

import numpy as np
import pytest

import generated
from runtime.experiments import EXPERIMENTS, load
from runtime.experiments.__main__ import main
from runtime.experiments.common import spiked_eigvals, theory_overlaps
from runtime.simulate import simulate


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """name -> (output folder, summary) of the experiment's small run, each run once per module."""
    done = {}

    def get(name):
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            done[name] = out, load(name).run(out, small=True)
        return done[name]
    return get


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_end_to_end(name, small_run):
    tmp_path, summary = small_run(name)
    for ext in ("png", "json", "csv"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["experiment"] == name and saved == json.loads(json.dumps(summary))
    assert saved["fixed_points"] and all("message" in fp for fp in saved["fixed_points"].values())
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_plateaus_compares_paths_with_sgd(small_run):
    """Each case records the means' largest gap, the KS p-values and the escape times of the
    stochastic equations' paths and of SGD, and the basins the paths end in."""
    _, summary = small_run("plateaus")
    for case in summary["cases"].values():
        assert case["ks_times"] > 0 and 0 <= case["min_ks_pvalue"] <= 1 and case["max_gap_over_standard_error"] >= 0
        assert len(case["escape_paths"]) == len(case["escape_sgd"]) == 2
        assert sum(case["basins"].values()) == summary["config"]["paths"]
    tied = [case for name, case in summary["cases"].items() if name.startswith("tied sign mixture")]
    assert len(tied) == len(summary["config"]["tied"]["Ds"])
    for case in tied:       # the tied runs' sign patterns: fractions of paths and SGD runs, their error
        fractions = np.array(list(case["sign_patterns"].values()))
        assert np.allclose(fractions[:, :2].sum(axis=0), 1) and np.all(fractions[:, 2] >= 0)
        assert sum(case["basins_sgd"].values()) == summary["config"]["seeds"]


def test_tied_reports_equations_and_scaling(small_run):
    """Every tied activation has equations (ReLU's through the smoothed activation); the D scan
    has every tied activation at every D with finite exponents; the tied states are analysed by
    runtime.fixed_points like the others; the comparison on macroscopic atoms is recorded."""
    _, summary = small_run("tied")
    cfg = summary["config"]
    assert summary["no_equations"] == {}
    assert set(summary["theory_late"]) == {"erf/vanilla", "erf/tied", "linear/tied", "relu/tied"}
    for act in cfg["tied_activations"]:
        scan = summary["scan"][act]
        assert set(scan) == {str(d) for d in cfg["scan_D"]} | {"exponents"}
        values = [scan["exponents"]["Q_diag"], scan["exponents"]["w2_over_D"], *scan["exponents"]["spike_projection"]]
        assert None not in values and np.all(np.isfinite(values)), (act, scan["exponents"])
    assert "found" in summary["fixed_points"]["erf/tied"] and "found" in summary["fixed_points"]["erf/vanilla"]
    assert set(summary["macroscopic"]) == set(cfg["tied_activations"])
    assert all(np.isfinite(list(m.values())).all() for m in summary["macroscopic"].values())


def test_bias_reports_seeds_and_biases(small_run):
    _, summary = small_run("bias")
    cfg = summary["config"]
    late = summary["simulation_late"]
    for D, seeds in zip(cfg["D"], cfg["seeds"]):
        with_bias = late[f"relu/bias D={D}"]
        assert len(with_bias["error"]) == seeds and np.shape(with_bias["b"]) == (seeds, cfg["K"])
        assert late[f"relu/no bias D={D}"]["b"] is None
    for name in ("bias + output bias", "output bias"):         # SGD with an output bias, first D
        assert len(late[f"relu/{name} D={cfg['D'][0]}"]["error"]) == cfg["seeds"][0]
    assert len(summary["theory_late"]["relu/bias"]["b"]) == cfg["K"]
    for name in ("bias + output bias", "output bias"):         # the equations with an output bias
        assert summary["theory_late"][name]["output_bias_c2_over_D"] >= 0
    assert "found" in summary["fixed_points"]["relu/bias"] and "found" in summary["fixed_points"]["relu/no bias"]


def test_command_line_runs_the_named_experiment(tmp_path, capsys):
    assert main(["sequential", "--small", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sequential.csv", "sequential.json", "sequential.png"]
    assert "1 of 1 experiment(s)" in capsys.readouterr().err


def test_unknown_experiment_is_refused_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'no_such_experiment'"):
        main(["sequential", "no_such_experiment", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_theory_overlaps_use_the_simulators_norm():
    """Same weights: w_k.u_tau / |w_k| with |w_k| over all D directions (spikes and bulk)."""
    D, K = 40, 3
    rng = np.random.default_rng(3)
    eigvals = spiked_eigvals(D, (3.0, 2.0))
    W0, V0 = rng.standard_normal((K, D)), rng.standard_normal((K, D))
    res = generated.load("erf").integrate(eigvals, np.eye(D), W0, V0, times=[0, 0.5], keep_atoms=True)
    sim = simulate("erf", eigvals, None, W0, V0, times=[0], test_samples=0, n_overlap=2)
    expected = W0[:, :2] / np.linalg.norm(W0, axis=1, keepdims=True)
    assert np.allclose(sim.overlap[0, 0], expected, rtol=1e-12)
    assert np.allclose(theory_overlaps(res)[0], expected, rtol=1e-10)
