"""Shared pieces of the experiments: spiked problems, theory overlaps, runs with progress,
the fixed-point summary, and writing the PNG / JSON / CSV of one experiment."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import generated
from runtime.fixed_points import fixed_point
from runtime.simulate import simulate


def spiked_eigvals(D, spikes):
    """Eigenvalues s_m D for the spikes and 1 for the D - M bulk directions (SPEC section 2)."""
    return np.concatenate([np.asarray(spikes, float) * D, np.ones(D - len(spikes))])


def theory_overlaps(result):
    """w_k . u_tau / |w_k| (n_t, K, n_spikes) from the integrator's direction vectors, with
    |w_k|^2 = sum over all D directions of omega_k tau^2 (spikes' vectors plus the bulk
    matrices' q_kk): the simulator's `overlap`."""
    K = result.Q.shape[-1]
    omega = result.directions()[..., :K]                           # (n_t, n_spikes, K)
    norm2 = np.sum(omega ** 2, axis=1) + np.einsum("tjkk->tk", result.matrices()[..., :K, :K])
    return np.swapaxes(omega, 1, 2) / np.sqrt(norm2)[..., None]


def integrate(activation, eigvals, W0, V0, times, rule="vanilla", lr=1.0, progress=False, b0=None,
              fluctuations=False, c0=None, **paths):
    """The equations of motion from weights given in the eigenbasis (U = I), atoms kept (b0, c0: a
    trained encoder, output bias; rule "tied": the finite-D equations, V0 ignored; fluctuations:
    the seed average and spread at the spectrum's D; `paths`: stochastic=True, paths=P, seed=s for
    sample paths, runtime.stochastic)."""
    return generated.load(activation).integrate(eigvals, np.eye(eigvals.size), W0, V0, lr=lr, times=times,
                                                rule=rule, b0=b0, keep_atoms=True, progress=progress,
                                                fluctuations=fluctuations, c0=c0, **paths)


class Run:
    """One experiment's run: integrate and simulate with progress bars and timings, keep a JSON
    summary that is written to disk after every step (a failure loses nothing already done)."""

    def __init__(self, name, out, config):
        self.name, self.out = name, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary = {"experiment": name, "config": config, "seconds": {}}

    def integrate(self, label, activation, eigvals, W0, V0, times, rule="vanilla", lr=1.0, b0=None,
                  fluctuations=False, c0=None, **paths):
        tic = time.perf_counter()
        res = integrate(activation, eigvals, W0, V0, times, rule=rule, lr=lr, progress=True, b0=b0,
                        fluctuations=fluctuations, c0=c0, **paths)
        self.summary["seconds"][f"integrate {label}"] = round(time.perf_counter() - tic, 3)
        return res

    def simulate(self, label, activation, eigvals, W0, V0, times, seeds, rule="vanilla", lr=1.0,
                 n_overlap=8, b0=None, c0=None):
        tic = time.perf_counter()
        sim = simulate(activation, eigvals, None, W0, V0, lr=lr, times=times, rule=rule, seeds=seeds,
                       test_samples=0, progress=True, n_overlap=n_overlap, b0=b0, c0=c0)
        self.summary["seconds"][f"simulate {label}"] = round(time.perf_counter() - tic, 3)
        if sim.status != 0:
            self.summary.setdefault("warnings", []).append(f"simulate {label}: {sim.message}")
        return sim

    def fixed_point(self, label, result, **kwargs):
        """Record the long-time analysis of `result` (runtime.fixed_points) under `label`."""
        fp = fixed_point(result, **kwargs)
        self.summary.setdefault("fixed_points", {})[label] = fp.summary()
        self.save()
        return fp

    def record(self, **items):
        self.summary.update(_jsonable(items))
        self.save()

    def save(self):
        path = self.out / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.summary, indent=2))
        tmp.replace(path)

    def table(self, header, columns):
        """Write <name>.csv with the given columns (equal length)."""
        np.savetxt(self.out / f"{self.name}.csv", np.column_stack(columns), delimiter=",",
                   fmt="%.8g", header=",".join(header), comments="")

    def figure(self, fig):
        import matplotlib.pyplot as plt
        fig.savefig(self.out / f"{self.name}.png", dpi=120)
        plt.close(fig)

    def finish(self, header, columns, fig):
        """Write the table and the figure; the summary (what run() returns)."""
        self.table(header, columns)
        self.figure(fig)
        return self.summary


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def panel_rows(rows, height):
    """A figure of `rows` rows of two panels each: (fig, axes (rows, 2))."""
    return pyplot().subplots(rows, 2, figsize=(12, height * rows), squeeze=False)


def sim_points(ax, t, values, color, label=None, marker="o"):
    """Mean over seeds with the seed-to-seed spread as error bars (values: (seeds, n_t))."""
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else None
    ax.errorbar(t, mean, yerr=std, fmt=marker, ms=3.5, color=color, mfc="white", lw=0.8,
                label=label)


def pca_levels(ax, levels, x):
    for m, level in enumerate(levels):
        ax.axhline(level, ls="--", lw=0.7, color="gray")
        ax.text(x, level, f" PCA {m}", va="bottom", fontsize=7, color="gray")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
