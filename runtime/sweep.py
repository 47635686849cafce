"""ae-dynamics sweep: every point of a config's grid on Dask, resumable, one table at the end.

Each point is named by the hash of its full config. Its theory and each SGD seed are separate
Dask tasks (runtime.experiment.theory, .sgd), combined per point by a third
(runtime.experiment.combine); as each point finishes, the client writes points/<hash>.json
(temporary file, then rename). A rerun into the same directory reuses every point that has a
result there and computes the rest; failed points are recorded and computed again next time.
A worker that dies costs time only: the scheduler reruns its tasks elsewhere.

The output directory (results.parquet, results.csv, points/, summary.json, sweep.png) is
written by the client process only, so on a cluster it need not be shared with the workers
(a data set's `path` must be readable on the workers, though).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime import config, experiment, output


@contextlib.contextmanager
def dask_client(workers=None, scheduler=None):
    """A dask.distributed Client: on the scheduler at `scheduler` (an existing cluster), else on
    a LocalCluster of `workers` single-threaded worker processes (default: os.cpu_count())."""
    from distributed import Client, LocalCluster
    if scheduler is not None:                      # connect timeout: distributed.comm.timeouts.connect (30 s)
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def run(base, grid, out, workers=None, scheduler=None, progress=True, log=print):
    """Run the sweep of `grid` over `base` into directory `out`; returns the summary dict
    (also written to out/summary.json). Ctrl-C writes the outputs of the points finished so far
    and re-raises KeyboardInterrupt."""
    out = Path(out)
    points = config.expand(base, grid)
    hashes = [config.digest(p) for p in points]
    (out / "points").mkdir(parents=True, exist_ok=True)
    records = {h: r for h in hashes if (r := _finished(out, h)) is not None}
    todo = [(h, p) for h, p in zip(hashes, points) if h not in records]
    log(f"sweep: {len(points)} points, {len(records)} reused from {out}, {len(todo)} to compute")
    tic = time.perf_counter()
    failed, where, status = {}, None, "finished"
    try:
        if todo:
            with dask_client(workers, scheduler) as client:
                where = {"scheduler": client.scheduler.address, "workers": len(client.scheduler_info()["workers"])}
                for h, record in _compute(client, todo, grid, progress):
                    output.write_json(out / "points" / f"{h}.json", record)
                    (records if record["status"] == "done" else failed)[h] = record
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {type(exc).__name__}: {exc}"
        raise
    finally:
        summary = _summary(grid, hashes, records, failed, len(points) - len(todo), where, status,
                           time.perf_counter() - tic)
        _write_outputs(out, grid, [records[h] for h in hashes if h in records], summary)
    return summary


def _compute(client, todo, grid, progress):
    """Submit every point's tasks; yield (hash, record) as points finish."""
    from distributed import as_completed
    run_id = uuid.uuid4().hex[:8]
    futures = {}
    for h, cfg in todo:
        theory = client.submit(experiment.theory, cfg, key=f"theory-{h}-{run_id}")
        seeds = [client.submit(experiment.sgd, cfg, [s], key=f"sgd-{h}-{s}-{run_id}")
                 for s in range(cfg["simulation"]["seeds"])]
        futures[client.submit(experiment.combine, cfg, theory, seeds, key=f"point-{h}-{run_id}")] = (h, cfg)
    with tqdm(total=len(futures), desc="sweep", unit="point", disable=not progress) as bar:
        for future in as_completed(futures):
            h, cfg = futures[future]
            try:
                result = future.result()
            except Exception as exc:                 # e.g. KilledWorker: the point's tasks kept killing workers
                result = {"config": cfg, "status": "failed", "errors": [f"{type(exc).__name__}: {exc}"]}
            future.release()
            bar.update()
            yield h, output.jsonable({"hash": h, "values": {k: config.get(cfg, k) for k in grid}, **result})


def _finished(out, h):
    """The record in out/points/<h>.json if it holds a finished point, else None."""
    try:
        record = json.loads((out / "points" / f"{h}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "done" and config.digest(record.get("config")) == h else None


def _summary(grid, hashes, records, failed, skipped, where, status, seconds):
    done = sum(h in records for h in hashes)
    return {"status": status, "grid": grid, "points": len(hashes),
            "counts": {"done": done, "failed": len(failed), "skipped": skipped, "computed": done - skipped,
                       "not_finished": len(hashes) - done - len(failed)},
            "failed": [{"hash": h, "values": r["values"], "errors": r["errors"], "warnings": r.get("warnings", [])}
                       for h, r in failed.items()],
            "warnings": {h: r["warnings"] for h, r in records.items() if r.get("warnings")},
            "cluster": where, "seconds": seconds, "versions": output.versions()}


def _write_outputs(out, grid, done, summary):
    output.write_table(output.table(done, grid), out / "results.csv", out / "results.parquet")
    output.write_json(out / "summary.json", summary)
    if done:
        output.atomic(out / "sweep.png", lambda f: plot(f, grid, done))


def plot(file, grid, records):
    """sweep.png: the final error against each swept key (one panel per key): theory as lines,
    SGD means with their seed spread as points, one series per value of the other keys."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(grid)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        labels = [json.dumps(v) for v in grid[key]]
        numeric = all(isinstance(v, (int, float)) for v in grid[key])
        series = {}
        for r in records:
            rest = ", ".join(f"{k} = {json.dumps(r['values'][k])}" for k in keys if k != key)
            x = r["values"][key] if numeric else labels.index(json.dumps(r["values"][key]))
            c = r["curves"]
            series.setdefault(rest, []).append((x, _last(c["theory"]), _last(c["sgd_mean"]), _last(c["sgd_sd"])))
        for i, (rest, rows) in enumerate(sorted(series.items())):
            x, th, mean, sd = np.array(sorted(rows), dtype=float).T
            ax.plot(x, th, "-", color=f"C{i % 10}", label=rest or None)
            ax.errorbar(x, mean, yerr=sd, fmt="o", ms=4, color=f"C{i % 10}")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_xlabel(key)
        ax.set_ylabel("final error (line: theory, points: SGD)")
        if len(series) <= 8 and any(series):
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(file, format="png", dpi=110)
    plt.close(fig)


def _last(values):
    return np.nan if not values or values[-1] is None else values[-1]
