"""`ae-dynamics run` end to end: its files hold what the Python API gives for the same arrays.

The arrays are built here from the documented recipe (README, runtime/experiment.py):
eigenvalues s_i D over a bulk, U = I, rng = default_rng(seed), W0 = init N(0, 1) then V0; the
theory is generated.<activation>.integrate and SGD is runtime.simulate.simulate with the same seeds.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import median_abs_deviation

import generated
from runtime.simulate import simulate
from conftest import ctrl_c_as_in_a_terminal

AE = Path(sys.executable).parent / "ae-dynamics"


def run(tmp_path, text):
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.run([str(AE), "run", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    return proc, out


def arrays(D, spikes, K, init, seed):
    eigvals = np.concatenate([np.asarray(spikes) * D, np.ones(D - len(spikes))])
    rng = np.random.default_rng(seed)
    return eigvals, init * rng.standard_normal((K, D)), init * rng.standard_normal((K, D))


SMALL = """
activation = "{act}"
K = 2
lr = 0.5
init = 0.3
seed = 3
[data]
D = 100
spikes = [3.0, 1.5]
[time]
t_max = 5
points = 12
[theory]
equations = "{equations}"
paths = 32
[simulation]
seeds = 2
"""


@pytest.mark.parametrize("act, equations", [("erf", "limit"), ("relu", "limit"), ("linear", "fluctuations"),
                                             ("linear", "stochastic"), ("erf", "samples")])
def test_run_writes_what_the_api_returns(tmp_path, act, equations):
    proc, out = run(tmp_path, SMALL.format(act=act, equations=equations))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"error.png", "curves.csv", "summary.json"}
    assert (out / "error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["t", "theory", "theory_spread", "sgd_mean", "sgd_sd", "sgd_robust_sd", "sgd_seeds",
                                    "pca_error_K"]
    t = curves["t"].to_numpy()
    D = 100
    assert t[0] == 0 and t[-1] == 5 and 8 <= t.size <= 13 and np.all(np.diff(t) > 0)
    assert np.allclose(t * D, np.rint(t * D), rtol=0, atol=1e-9)        # whole SGD steps

    eigvals, W0, V0 = arrays(D, [3.0, 1.5], 2, 0.3, 3)
    theory = generated.load(act).integrate(eigvals, np.eye(D), W0, V0, lr=0.5, times=t,
                                           fluctuations=equations == "fluctuations",
                                           stochastic="samples" if equations == "samples" else equations == "stochastic",
                                           paths=32, seed=3)
    np.testing.assert_allclose(curves["theory"], theory.error, rtol=1e-12)
    if equations in ("fluctuations", "stochastic", "samples"):
        np.testing.assert_allclose(curves["theory_spread"], theory.error_spread, rtol=1e-12)
    else:
        assert curves["theory_spread"].isna().all()
    sim = simulate(act, eigvals, None, W0, V0, lr=0.5, times=t, seeds=[0, 1], test_samples=0)
    np.testing.assert_allclose(curves["sgd_mean"], sim.error.mean(0), rtol=1e-12)
    np.testing.assert_allclose(curves["sgd_sd"], sim.error.std(0, ddof=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(curves["sgd_robust_sd"], median_abs_deviation(sim.error, axis=0, scale="normal"),
                               rtol=1e-12, atol=1e-15)
    assert (curves["sgd_seeds"] == 2).all()
    assert np.allclose(curves["pca_error_K"], theory.pca_errors[-1])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["errors"] == []
    assert summary["config"]["activation"] == act and summary["config"]["data"]["D"] == D
    assert summary["config"]["time"] == {"t_max": 5.0, "points": 12}                # echoed in full
    assert set(summary["config"]) == {"activation", "rule", "K", "lr", "init", "seed", "b0", "c0", "kappa", "data",
                                      "time", "theory", "simulation"}
    gap = np.abs(sim.error.mean(0) - theory.error)
    assert summary["largest_gap"]["gap"] == pytest.approx(gap.max(), rel=1e-12)
    assert summary["largest_gap"]["t"] == t[np.argmax(gap)]
    assert summary["pca_errors"] == pytest.approx(theory.pca_errors.tolist(), rel=1e-12)
    assert {"numpy", "scipy", "ae-dynamics", "python"} <= set(summary["versions"])
    assert summary["seconds"]["theory"] > 0 and len(summary["seconds"]["sgd"]) == 1


def test_theory_only_with_a_trained_bias(tmp_path):
    proc, out = run(tmp_path, "b0 = [0.3, -0.2]\n[data]\nD = 60\n[time]\nt_max = 2\npoints = 5\n"
                              "[simulation]\nseeds = 0\n")
    assert proc.returncode == 0, proc.stderr
    curves = pd.read_csv(out / "curves.csv")
    eigvals, W0, V0 = arrays(60, [2.0, 1.0], 2, 0.1, 0)
    theory = generated.load("erf").integrate(eigvals, np.eye(60), W0, V0, times=curves["t"], b0=[0.3, -0.2])
    np.testing.assert_allclose(curves["theory"], theory.error, rtol=1e-12)
    assert curves["sgd_mean"].isna().all() and (curves["sgd_seeds"] == 0).all()


def test_a_failing_run_exits_1_and_keeps_its_message(tmp_path):
    """A data set that is not there: recorded in summary.json, exit status 1."""
    proc, out = run(tmp_path, f'[data]\ndataset = "npy"\npath = "{tmp_path / "missing.npy"}"\n'
                              "[simulation]\nseeds = 1\n")
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert any("FileNotFoundError" in e and "missing.npy" in e for e in summary["errors"])
    assert "missing.npy" in proc.stderr


def test_ctrl_c_during_sgd_keeps_the_theory_and_the_sgd_so_far(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[data]\nD = 100\n[time]\nt_max = 3000\npoints = 30\n[simulation]\nseeds = 2\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([str(AE), "run", str(config), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while not (out / "error.png").exists():                    # the last file written after the theory
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.5)                                            # well inside 300 000 SGD steps
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and any("interrupted" in e for e in summary["errors"])
    curves = pd.read_csv(out / "curves.csv")
    assert curves["theory"].notna().all()                          # the whole theory
    seeds = curves["sgd_seeds"].to_numpy()
    assert seeds[0] == 2 and seeds[-1] == 0                        # SGD up to the interrupt, not beyond
    assert curves["sgd_mean"].notna().to_numpy().tolist() == (seeds > 0).tolist()


def test_a_failing_theory_keeps_its_partial_curve_and_the_sgd(tmp_path):
    """The fluctuation expansion stops where the spikes' spread passes half their size (a
    saddle): the run records that, keeps the theory up to there and all of SGD, and exits 1."""
    proc, out = run(tmp_path, 'K = 1\ninit = 0.01\n[data]\nD = 50\n[time]\nt_max = 20\npoints = 8\n'
                              '[theory]\nequations = "fluctuations"\n[simulation]\nseeds = 1\n')
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "fluctuations no longer small" in summary["errors"][0]
    curves = pd.read_csv(out / "curves.csv")
    eigvals, W0, V0 = arrays(50, [2.0, 1.0], 1, 0.01, 0)
    theory = generated.load("erf").integrate(eigvals, np.eye(50), W0, V0, times=curves["t"], fluctuations=True,
                                             raise_on_failure=False)
    assert theory.status == -1 and 0 < theory.t.size < curves.shape[0]
    np.testing.assert_allclose(curves["theory"][:theory.t.size], theory.error, rtol=1e-12)
    assert curves["theory"][theory.t.size:].isna().all() and (curves["sgd_seeds"] == 1).all()
    assert (out / "error.png").stat().st_size > 0


def test_the_plot_of_a_run_without_any_curve(tmp_path):
    """A point that failed before computing anything still gets its (empty) figure."""
    from runtime import config, run as run_module
    cfg = config.defaults()
    nan = [None] * 3
    curves = {"t": [0.0, 1.0, 2.0], "theory": nan, "theory_spread": nan, "sgd_mean": nan, "sgd_sd": nan,
              "sgd_robust_sd": nan, "sgd_seeds": [0, 0, 0], "pca_error_K": nan}
    with open(tmp_path / "e.png", "wb") as f:
        run_module.plot(f, cfg, curves, [1.5, 1.0, 0.5])
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
