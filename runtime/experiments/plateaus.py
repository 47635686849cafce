"""Plateaus and noise-driven escapes at finite D: sample paths of the stochastic equations
(integrate(..., stochastic=True), runtime.stochastic) against SGD runs from the same weights.

A linear network, K = 2, spikes (2, 1) x D over a unit bulk, lr = 1, eigenbasis, from two starts:
the saddle start (W0, V0 = 0.1 N(0, 1): one unit learns the first spike at once, the second
leaves the plateau at eps ~ 1 at a time the noise decides) and the sequential-learning start
(N(0, 10^-6): both plateaus), at D = 300 and 1000. For each: the error's 10-50-90 % quantiles
over paths and over SGD seeds, and the histograms of the escape times from the last plateau
(first crossing of the level halfway between eps_PCA(1) and eps_PCA(2)).

Writes plateaus.png, plateaus.csv (quantiles per case) and plateaus.json (per case: the largest
gap of the means over their combined standard error, the smallest two-sample Kolmogorov-Smirnov
p-value of the error over the times, the escape times' mean and spread for paths and SGD with
their KS p-value, the basins the paths end in, and the seconds each took), with the fixed point
the D -> infinity equations reach (runtime.fixed_points).

The tied sign mixture: linear, tied weights, K = 2, spikes (3, 2, 1.5) x D, W0 = 0.5 N(0, 1),
lr = 0.5, at D = 300 and 1000. The runs sit in a plateau near eps = 3.75, leave it at a time the
noise decides, and end with each unit on a spike with a sign the noise decides (docs/tied.md).
Sample paths stepped per sample in the reduced space (stochastic=True for tied weights,
runtime.stochastic_samples) against SGD, with the finite-D mean equations: the error bands, and
the fraction of runs ending with each sign pattern (the sign of each unit's overlap with the
spike it ends on) for paths and SGD with binomial standard errors; plateaus.json records them
(`sign_patterns`: pattern -> [fraction of paths, of SGD runs, combined binomial standard error]).
"""
import time

import numpy as np
from scipy.stats import ks_2samp

from runtime.experiments.common import Run, panel_rows, pca_levels, spiked_eigvals
from runtime.stochastic import basins, escape_times, sign_patterns

NAME = "plateaus"
#: (label, initial scale of W0 and V0)
FULL = dict(starts=(("saddle start", 0.1), ("sequential start", 1e-3)), Ds=(300, 1000), K=2, spikes=(2.0, 1.0),
            seed=0, lr=1.0, t_max=24.0, n_times=49, paths=256, seeds=48,
            tied=dict(Ds=(300, 1000), spikes=(3.0, 2.0, 1.5), scale=0.5, lr=0.5))
SMALL = dict(FULL, starts=(("saddle start", 0.1),), Ds=(100,), t_max=8.0, n_times=9, paths=24, seeds=8,
             tied=dict(FULL["tied"], Ds=(100,)))
QUANTILES = (0.1, 0.5, 0.9)


def problem(cfg, D, scale):
    rng = np.random.default_rng(cfg["seed"])
    return spiked_eigvals(D, cfg["spikes"]), scale * rng.standard_normal((2, cfg["K"], D))


def compare(times, paths, sgd, level):
    """Means, distributions and escape times of the paths (P, n_t) against SGD's runs (S, n_t);
    KS p-values also over the times where SGD's mean is still 1 % of the way from its last value
    to `level` above it: at the fixed point the spread is second order and holds the bulk's own
    noise, which the reduced coordinates leave out (docs/stochastic.md)."""
    fixed = sgd.mean(axis=0)[-1]
    se = np.sqrt(paths.var(axis=0, ddof=1) / paths.shape[0] + sgd.var(axis=0, ddof=1) / sgd.shape[0])[1:]
    gap = np.abs(paths.mean(axis=0) - sgd.mean(axis=0))[1:]
    ks = np.array([ks_2samp(paths[:, i], sgd[:, i]).pvalue for i in range(1, times.size)])
    away = sgd.mean(axis=0)[1:] > fixed + 0.01 * (level - fixed)
    ours, theirs = escape_times(times, paths, level), escape_times(times, sgd, level)
    out = {"max_gap_over_standard_error": np.max(gap / np.maximum(se, 1e-300)), "min_ks_pvalue": ks.min(),
           "ks_times": len(ks), "min_ks_pvalue_away_from_the_fixed_point": ks[away].min() if away.any() else None,
           "ks_times_away": int(away.sum()), "escape_level": level,
           "escape_paths": [np.nanmean(ours), np.nanstd(ours)], "escape_sgd": [np.nanmean(theirs), np.nanstd(theirs)],
           "escaped": [float(np.mean(np.isfinite(ours))), float(np.mean(np.isfinite(theirs)))]}
    if np.isfinite(ours).sum() > 1 and np.isfinite(theirs).sum() > 1:
        out["escape_ks_pvalue"] = ks_2samp(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)]).pvalue
    return out, ours, theirs


def run(out, small=False):
    cfg = SMALL if small else FULL
    job = Run(NAME, out, cfg)
    times = np.linspace(0, cfg["t_max"], cfg["n_times"])
    results, summary = {}, {}
    header, cols = ["t"], [times]
    for start, scale in cfg["starts"]:
        for D in cfg["Ds"]:
            name = f"{start}, D = {D}"
            eigvals, (W0, V0) = problem(cfg, D, scale)
            tic = time.perf_counter()
            limit = job.integrate(f"{name} D -> infinity", "linear", eigvals, W0, V0, times, lr=cfg["lr"])
            job.fixed_point(f"{name} D -> infinity", limit)
            paths = job.integrate(f"{name} paths", "linear", eigvals, W0, V0, times, lr=cfg["lr"], stochastic=True,
                                  paths=cfg["paths"], seed=0)
            sim = job.simulate(name, "linear", eigvals, W0, V0, times, cfg["seeds"], lr=cfg["lr"])
            level = 0.5 * (paths.pca_errors[1] + paths.pca_errors[2])
            summary[name], ours, theirs = compare(times, paths.error_paths, sim.error, level)
            summary[name]["basins"] = tally(paths.basins)
            summary[name]["seconds"] = round(time.perf_counter() - tic, 3)
            results[name] = (limit, "equations, D → ∞"), paths, sim, ours, theirs, None
            job.record(cases=summary)
            quantile_columns(header, cols, name, paths, sim)
    for D in cfg["tied"]["Ds"]:
        name = f"tied sign mixture, D = {D}"
        summary[name], results[name] = tied(job, cfg, D, times, name)
        job.record(cases=summary)
        quantile_columns(header, cols, name, results[name][1], results[name][2])
    return job.finish(header, cols, plot(cfg, results))


def tally(labels):
    """{basin label: how many runs end in it}."""
    kinds, counts = np.unique(labels, return_counts=True)
    return dict(zip(kinds.tolist(), counts.tolist()))


def quantile_columns(header, cols, name, paths, sim):
    """The error's QUANTILES over paths and over SGD runs at each time, as CSV columns."""
    for who, values in (("paths", paths.error_paths), ("sgd", sim.error)):
        for q, row in zip(QUANTILES, np.quantile(values, QUANTILES, axis=0)):
            header.append(f"{who}_q{int(100 * q)} {name}")
            cols.append(row)


def tied(job, cfg, D, times, name):
    """The tied case at D: the finite-D mean equations, sample paths stepped per sample, SGD; the
    comparison of compare() (escape level halfway between the paths' plateau and final errors) and
    the sign patterns the runs end in."""
    case = cfg["tied"]
    eigvals = spiked_eigvals(D, case["spikes"])
    W0 = case["scale"] * np.random.default_rng(cfg["seed"]).standard_normal((cfg["K"], D))
    tic = time.perf_counter()
    run = dict(rule="tied", lr=case["lr"])
    equations = job.integrate(f"{name} finite-D equations", "linear", eigvals, W0, None, times, **run)
    paths = job.integrate(f"{name} paths", "linear", eigvals, W0, None, times, stochastic=True, paths=cfg["paths"],
                          seed=0, **run)
    sim = job.simulate(name, "linear", eigvals, W0, None, times, cfg["seeds"], n_overlap=len(case["spikes"]), **run)
    level = 0.5 * (paths.error[1] + paths.error[-1])
    out, ours, theirs = compare(times, paths.error_paths, sim.error, level)
    ended = basins(sim.overlap[:, -1].transpose(0, 2, 1), np.asarray(case["spikes"]))
    mine, sgd = sign_patterns(paths.basins), sign_patterns(ended)
    patterns = np.union1d(mine, sgd)
    f, g = np.array([np.mean(mine == p) for p in patterns]), np.array([np.mean(sgd == p) for p in patterns])
    se = np.sqrt(f * (1 - f) / mine.size + g * (1 - g) / sgd.size)
    out["sign_patterns"] = {p: [a, b, c] for p, a, b, c in zip(patterns.tolist(), f, g, se)}
    out["max_sign_gap_over_binomial_error"] = float(np.max(np.abs(f - g) / np.maximum(se, 1 / sgd.size)))
    out["basins"], out["basins_sgd"] = tally(paths.basins), tally(ended)
    out["seconds"] = round(time.perf_counter() - tic, 3)
    return out, ((equations, "finite-D mean equations"), paths, sim, ours, theirs, (patterns, f, g))


def plot(cfg, results):
    fig, axes = panel_rows(len(results), 4)
    for row, (name, ((limit, limit_label), paths, sim, ours, theirs, patterns)) in enumerate(results.items()):
        ax, ax_hist = axes[row]
        t = paths.t[1:]
        kind = "stochastic equations" if patterns is None else "paths stepped per sample"
        for values, color, who in ((paths.error_paths, "C1", f"{kind}, {paths.error_paths.shape[0]} paths"),
                                   (sim.error, "k", f"SGD, {sim.error.shape[0]} seeds")):
            lo, mid, hi = np.quantile(values[:, 1:], QUANTILES, axis=0)
            ax.plot(t, mid, "-" if color == "C1" else "o", color=color, ms=3, mfc="white", label=f"{who}: median")
            if color == "C1":
                ax.fill_between(t, lo, hi, color=color, alpha=0.25, label="… 10–90 %")
            else:
                ax.vlines(t, lo, hi, color=color, lw=0.8, label="… 10–90 %")
        ax.plot(t, limit.error[1:], "--", color="C0", lw=1.2, label=limit_label)
        pca_levels(ax, paths.pca_errors, t[0])
        spikes = cfg["tied"]["spikes"] if patterns is not None else cfg["spikes"]
        ax.set(xlabel="t = steps / D", ylabel="reconstruction error", yscale="log",
               title=f"linear, K = {cfg['K']}, spikes {spikes} × D: {name}")
        ax.legend(fontsize=7)
        if patterns is not None:
            sign_panel(ax_hist, name, *patterns, paths.error_paths.shape[0], sim.error.shape[0])
            continue
        bins = np.histogram_bin_edges(np.concatenate([ours[np.isfinite(ours)], theirs[np.isfinite(theirs)]]), 20)
        ax_hist.hist(ours[np.isfinite(ours)], bins=bins, density=True, color="C1", alpha=0.5, label="stochastic equations")
        ax_hist.hist(theirs[np.isfinite(theirs)], bins=bins, density=True, histtype="step", color="k", lw=1.5,
                     label="SGD")
        ax_hist.set(xlabel="escape time from the last plateau", ylabel="density", title=f"{name}: escape times")
        ax_hist.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sign_panel(ax, name, patterns, f, g, n_paths, n_seeds):
    """Bars: the fraction of paths and of SGD runs ending with each sign pattern, SGD's with its
    binomial standard error."""
    x = np.arange(patterns.size)
    ax.bar(x - 0.2, f, 0.4, color="C1", alpha=0.6, label=f"sample paths (per sample), {n_paths}")
    ax.bar(x + 0.2, g, 0.4, yerr=np.sqrt(g * (1 - g) / n_seeds), color="white", edgecolor="k", capsize=3,
           label=f"SGD, {n_seeds} seeds (± binomial SE)")
    ax.set_xticks(x, [f"({', '.join(p)})" for p in patterns])
    ax.set(xlabel="signs of the units' overlaps with the spikes they end on", ylabel="fraction of runs",
           title=f"{name}: sign patterns at t = end")
    ax.legend(fontsize=7)
