"""`ae-dynamics sweep` on a real dask.distributed cluster: a `dask scheduler` and two
`dask worker` processes on 127.0.0.1 started here. A worker killed while it runs a task costs
only time; an interrupted sweep, rerun, computes only the missing points; the table equals a run
on a LocalCluster (--workers 2) and the API's own numbers; failing points are recorded."""
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import generated
from runtime import config, output
from runtime.simulate import simulate
from conftest import ctrl_c_as_in_a_terminal

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

#: 8 points; the finite-D theory takes about a second per point, SGD milliseconds per seed
CONFIG = """
activation = "erf"
K = 1
init = 0.3
[data]
spikes = [3.0, 1.5]
[time]
t_max = 3
points = 6
[theory]
equations = "finite"
[simulation]
seeds = 2
[sweep]
lr = [0.5, 1.0]
seed = [0, 1]
"data.D" = [50, 80]
"""


def wait_for(condition, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"waited {timeout} s for {what}")


class Cluster:
    """A scheduler and named workers, each its own process; stop() ends every one of them."""

    def __init__(self, directory):
        self.directory, self.procs, self.workers = directory, [], {}
        file = directory / "scheduler.json"
        self._start("scheduler", [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", file])
        self.address = wait_for(lambda: file.exists() and json.loads(file.read_text() or "{}").get("address"),
                                60, "the scheduler file")
        from distributed import Client
        self.client = Client(self.address, timeout="30s")

    def _start(self, name, args):
        log = open(self.directory / f"{name}.log", "ab")
        proc = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        log.close()
        self.procs.append(proc)
        return proc

    def start_worker(self, name):
        self.workers[name] = self._start(name, [BIN / "dask", "worker", self.address, "--name", name, "--nthreads", "1",
                                                "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"])

    def wait_for_workers(self, n):
        wait_for(lambda: len(self.client.scheduler_info()["workers"]) == n, 60, f"{n} workers")

    def address_of(self, name):
        return next(a for a, w in self.client.scheduler_info()["workers"].items() if w["name"] == name)

    def stop(self):
        self.client.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def cluster(tmp_path):
    c = None
    try:
        c = Cluster(tmp_path)
        for name in ("w0", "w1"):
            c.start_worker(name)
        c.wait_for_workers(2)
        yield c
    finally:
        if c is not None:
            c.stop()


def start_sweep(config_file, out, *where, env=ENV):
    return subprocess.Popen([str(BIN / "ae-dynamics"), "sweep", str(config_file), "--out", str(out), "--quiet", *where],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=ctrl_c_as_in_a_terminal)


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def read(out):
    return (json.loads((out / "summary.json").read_text()), pd.read_parquet(out / "results.parquet"),
            {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")})


def test_sweep_on_a_cluster_survives_a_killed_worker_resumes_and_matches_a_local_run(cluster, tmp_path):
    config_file = tmp_path / "sweep.toml"
    config_file.write_text(CONFIG)
    base, grid = config.parse(tomllib.loads(CONFIG), sweep=True)
    points = config.expand(base, grid)
    assert len(points) == 8

    # 1. kill worker w0 (SIGKILL) while it runs one of this sweep's tasks
    killed = tmp_path / "killed"
    proc = start_sweep(config_file, killed, "--scheduler", cluster.address)
    victim = cluster.address_of("w0")
    wait_for(lambda: cluster.client.processing().get(victim), 120, "a task on w0")
    cluster.workers["w0"].kill()
    code, stdout, stderr = finish(proc)
    assert code == 0, stderr
    summary, table_killed, _ = read(killed)
    assert summary["counts"] == {"done": 8, "failed": 0, "skipped": 0, "computed": 8, "not_finished": 0}
    assert victim not in cluster.client.scheduler_info()["workers"]             # w0 really died
    assert table_killed["point"].nunique() == 8
    cluster.start_worker("w2")
    cluster.wait_for_workers(2)

    # 2. interrupt a sweep (Ctrl-C) after its first point, rerun it: only the missing points run
    resumed = tmp_path / "resumed"
    proc = start_sweep(config_file, resumed, "--scheduler", cluster.address)
    wait_for(lambda: list((resumed / "points").glob("*.json")), 120, "a finished point")
    proc.send_signal(signal.SIGINT)
    code, _, stderr = finish(proc, 60)
    assert code == 130, stderr
    summary, partial, before = read(resumed)
    assert summary["status"] == "interrupted" and 1 <= len(before) < 8, (summary, before)
    assert summary["counts"]["done"] == len(before) and partial["point"].nunique() == len(before)
    code, stdout, stderr = finish(start_sweep(config_file, resumed, "--scheduler", cluster.address))
    assert code == 0, stderr
    assert f"{len(before)} reused" in stdout and f"{8 - len(before)} computed" in stdout, stdout
    summary, table_resumed, after = read(resumed)
    assert summary["counts"]["skipped"] == len(before) and summary["counts"]["computed"] == 8 - len(before)
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in before.items())   # not rewritten

    # 3. the same table from a LocalCluster of two worker processes
    local = tmp_path / "local"
    code, _, stderr = finish(start_sweep(config_file, local, "--workers", "2"))
    assert code == 0, stderr
    summary, table_local, _ = read(local)
    assert summary["cluster"]["workers"] == 2
    pd.testing.assert_frame_equal(table_killed, table_local, check_exact=True)
    pd.testing.assert_frame_equal(table_resumed, table_local, check_exact=True)

    # 4. ... and what the API gives for one point, in grid order
    assert list(table_local.columns) == ["lr", "seed", "data.D", *output.COLUMNS]
    assert list(table_local.drop_duplicates("point")[["lr", "seed", "data.D"]].itertuples(index=False, name=None)) \
        == [(p["lr"], p["seed"], p["data"]["D"]) for p in points]
    one = table_local[table_local["point"] == config.digest(points[-1])]        # lr 1, seed 1, D 80
    rng = np.random.default_rng(1)
    W0, V0 = 0.3 * rng.standard_normal((1, 80)), 0.3 * rng.standard_normal((1, 80))
    eigvals = np.concatenate([[3.0 * 80, 1.5 * 80], np.ones(78)])
    t = one["t"].to_numpy()
    theory = generated.load("erf").integrate(eigvals, np.eye(80), W0, V0, lr=1.0, times=t, finite_size=True)
    np.testing.assert_allclose(one["theory"], theory.error, rtol=1e-12)
    sgd = simulate("erf", eigvals, None, W0, V0, lr=1.0, times=t, seeds=[0, 1], test_samples=0)
    np.testing.assert_allclose(one["sgd_mean"], sgd.error.mean(0), rtol=1e-12)
    np.testing.assert_allclose(one["sgd_sd"], sgd.error.std(0, ddof=1), rtol=1e-12, atol=1e-15)
    record = json.loads((local / "points" / f"{config.digest(points[-1])}.json").read_text())
    assert record["config"] == points[-1] and record["status"] == "done"
    assert (local / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_failing_points_are_recorded_and_retried_and_the_rest_go_on(tmp_path):
    """A missing data file fails its points (FileNotFoundError); the others finish; exit 1;
    a rerun reuses the finished points and tries the failed ones again."""
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).standard_normal((300, 12)))
    config_file = tmp_path / "sweep.toml"
    config_file.write_text(f'K = 1\n[data]\ndataset = "npy"\n[time]\nt_max = 2\npoints = 4\n[simulation]\nseeds = 1\n'
                           f'[sweep]\n"data.path" = ["{good}", "{tmp_path / "missing.npy"}"]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    env = dict(ENV, AE_DYNAMICS_CACHE=str(tmp_path / "cache"))
    code, stdout, stderr = finish(start_sweep(config_file, out, "--workers", "1", env=env))
    assert code == 1
    summary, table, files = read(out)
    assert summary["counts"]["done"] == 2 and summary["counts"]["failed"] == 2 and len(files) == 4
    assert all("missing.npy" in p["values"]["data.path"] and "FileNotFoundError" in p["errors"][0]
               for p in summary["failed"])
    assert "missing.npy" in stderr and set(table["data.path"]) == {str(good)}
    code, stdout, _ = finish(start_sweep(config_file, out, "--workers", "1", env=env))
    assert code == 1 and "2 reused" in stdout and json.loads((out / "summary.json").read_text())["counts"]["computed"] == 0


def test_the_hash_names_the_full_config():
    cfg = config.defaults()
    other = json.loads(json.dumps(cfg))
    assert config.digest(cfg) == config.digest(other)
    for key, value in [("lr", 0.5), ("data.D", 501), ("simulation.seeds", 7), ("theory.equations", "finite")]:
        changed = json.loads(json.dumps(cfg))
        config.set_value(changed, key, value)
        assert config.digest(changed) != config.digest(cfg), key


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.json"
    output.write_json(path, {"x": float("nan"), "y": np.arange(2)})
    assert json.loads(path.read_text()) == {"x": None, "y": [0, 1]}

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        output.atomic(path, broken)
    assert json.loads(path.read_text()) == {"x": None, "y": [0, 1]} and os.listdir(tmp_path) == ["a.json"]


def test_no_scheduler_at_the_address_is_a_clean_failure(tmp_path):
    config_file = tmp_path / "sweep.toml"
    config_file.write_text("[data]\nD = 20\n[time]\nt_max = 1\npoints = 2\n[simulation]\nseeds = 0\n[sweep]\nK = [1, 2]\n")
    out = tmp_path / "out"
    env = dict(ENV, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    code, _, stderr = finish(start_sweep(config_file, out, "--scheduler", "tcp://127.0.0.1:9", env=env), 120)
    assert code == 1 and "tcp://127.0.0.1:9" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("stopped: ") and summary["counts"]["not_finished"] == 2
