"""ae-dynamics run: one experiment from a full config into a directory.

Writes error.png (theory line, SGD mean with its seed spread, PCA levels), curves.csv (t,
theory, theory_spread, sgd_mean, sgd_sd, sgd_robust_sd, sgd_seeds, pca_error_K: the sweep table's columns) and
summary.json (the config in full, status, errors, warnings, largest gap, final errors,
timings, package versions). The outputs are written once the theory is done and again after
SGD, so an interrupted or failed simulation keeps the theory; Ctrl-C writes the partial curves
(status "interrupted") and then raises KeyboardInterrupt.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime import config, experiment, output, schedules


def run(cfg, out, progress=True, log=print):
    """Run the point `cfg` into directory `out`; returns the summary (a JSON-able dict)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    seeds = cfg["simulation"]["seeds"]
    theory = experiment.theory(cfg, progress=progress)
    log(f"theory ({cfg['theory']['equations']} equations): {theory['status']}, {theory['seconds']:.2f} s"
        + ("" if theory["status"] == "ok" else f": {theory['message']}"))
    summary = _write(out, cfg, experiment.combine(cfg, theory, []), tic, pending="SGD" if seeds else None)
    if seeds and theory["status"] != "interrupted":
        sgd = experiment.sgd(cfg, range(seeds), progress=progress)
        log(f"SGD, {seeds} seed(s): {sgd['status']}, {sgd['seconds']:.2f} s"
            + ("" if sgd["status"] == "ok" else f": {sgd['message']}"))
        summary = _write(out, cfg, experiment.combine(cfg, theory, [sgd]), tic)
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt                   # after writing what was computed
    return summary


def _write(out, cfg, result, tic, pending=None):
    """The three outputs of `result`; `pending`: what is still to run (status "incomplete")."""
    record = output.jsonable({"hash": config.digest(cfg), "values": {}, **result})
    output.write_table(output.table([record]).drop(columns="point"), out / "curves.csv")
    curves = record.pop("curves")
    del record["values"]
    final = {k: curves[k][-1] if curves[k] else None for k in ("t", "theory", "sgd_mean", "sgd_sd")}
    summary = {**record, "final": final, "versions": output.versions()}
    if pending and summary["status"] != "interrupted":
        summary.update(status="incomplete", pending=pending)
    summary["seconds"]["total"] = time.perf_counter() - tic
    output.write_json(out / "summary.json", summary)
    output.atomic(out / "error.png", lambda f: plot(f, cfg, curves, record["pca_errors"]))
    return summary


def plot(file, cfg, curves, pca_errors):
    """error.png: the theory line (with its predicted spread), SGD means with their seed
    spread, and the PCA errors eps_PCA(m), m = 0..K, against t (log scale, t > 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = {k: np.array(v, dtype=float)[1:] for k, v in curves.items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    equations = cfg["theory"]["equations"]
    label = {"limit": "equations (D -> infinity)", "finite": "equations at this D",
             "fluctuations": "equations with fluctuations",
             "stochastic": f"stochastic equations, {cfg['theory']['paths']} paths (mean)",
             "samples": f"SGD per sample in a reduced space, {cfg['theory']['paths']} paths (mean)"}[equations]
    ax.plot(c["t"], c["theory"], color="C0", lw=2, label=label)
    if np.any(np.isfinite(c["theory_spread"])):
        ax.fill_between(c["t"], c["theory"] - c["theory_spread"], c["theory"] + c["theory_spread"], color="C0",
                        alpha=0.2, label="spread over the paths" if equations in ("stochastic", "samples") else "predicted seed spread")
    if np.any(c["sgd_seeds"] > 0):
        ax.errorbar(c["t"], c["sgd_mean"], yerr=np.nan_to_num(c["sgd_sd"]), fmt="o", ms=4, color="C1",
                    label=f"SGD, {cfg['simulation']['seeds']} seeds (mean, sd)")
    for m, level in enumerate(pca_errors):
        if level is not None:
            ax.axhline(level, ls="--", lw=0.8, color="gray")
            ax.text(0.01, level, f"PCA {m}", va="bottom", fontsize=8, color="gray", transform=ax.get_yaxis_transform())
    data = cfg["data"]
    where = (f"D = {data['D']}, spikes {data['spikes']}" if data["dataset"] is None else data["dataset"])
    if np.any(np.isfinite(c["theory"])) or np.any(c["sgd_seeds"] > 0):    # else nothing to put on a log axis
        ax.set_xscale("log")
    ax.set_xlabel("t = steps / D")
    ax.set_ylabel("reconstruction error")
    ax.set_title(f"{cfg['activation']}, {cfg['rule']}, K = {cfg['K']}, lr = {schedules.schedule(cfg['lr']):g}, {where}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, format="png", dpi=120)
    plt.close(fig)
