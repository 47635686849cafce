"""Truncated vs vanilla SGD (SPEC section 5, finding 4), from a rotated initialisation: encoder
and decoder start in the top-K eigenspace, rotated within it by a fixed K x K rotation R.
Vanilla SGD learns the span only (w_k stays a mixture of the u_tau: |w_k.u_k|/|w_k| < 1 while
the share of |w_k|^2 in the top-K span -> 1); the truncated rule aligns w_k with u_k.
erf and linear networks, theory lines with SGD points; for the linear network also Sanger's rule
(simulated; it has no O(1) limit in these scalings, the overlaps are scale-free).

Writes truncated.png, truncated.csv (error curves) and truncated.json (late-time overlaps of
theory and SGD for each network and rule, the long-time analysis of each theory run).
"""
import numpy as np
from scipy.stats import special_ortho_group

from runtime.experiments.common import (Run, integrate, pca_levels, pyplot, sim_points, spiked_eigvals,
                                       theory_overlaps)

NAME = "truncated"
FULL = dict(activations=("erf", "linear"), D=500, K=3, spikes=(3.0, 2.0, 1.0), scale=0.3,
            noise=0.01, rotation_seed=1, seed=0, lr=1.0, t_max=200.0, n_theory=200, n_sim=20,
            seeds=2)
SMALL = dict(FULL, D=100, t_max=50.0, n_theory=100, n_sim=6, seeds=1)
RULES = ("vanilla", "truncated")


def problem(cfg):
    """Eigenvalues (eigenbasis, U = I); W0 = scale R on the top-K directions, V0 = scale sqrt(D) R
    there (so upsilon / sqrt(D) = scale R), plus i.i.d. N(0, noise^2) on every entry."""
    D, K = cfg["D"], cfg["K"]
    R = special_ortho_group.rvs(K, random_state=cfg["rotation_seed"])
    rng = np.random.default_rng(cfg["seed"])
    W0 = cfg["noise"] * rng.standard_normal((K, D))
    V0 = cfg["noise"] * rng.standard_normal((K, D))
    W0[:, :K] += cfg["scale"] * R
    V0[:, :K] += cfg["scale"] * np.sqrt(D) * R
    return spiked_eigvals(D, cfg["spikes"]), W0, V0, R


def alignment(overlaps):
    """From overlaps (..., K, n_spikes): |w_k.u_k|/|w_k| (..., K) and the share of |w_k|^2 in the
    span of the top K eigenvectors (..., K)."""
    K = overlaps.shape[-2]
    top = overlaps[..., :K]
    return np.abs(np.diagonal(top, axis1=-2, axis2=-1)), np.sum(top ** 2, axis=-1)


def theory(cfg, job=None):
    """Integrated equations for every activation and rule: {(activation, rule): result}
    (timed and recorded in `job`, a common.Run, if given)."""
    eigvals, W0, V0, _ = problem(cfg)
    times = np.concatenate([[0.0], np.logspace(-1, np.log10(cfg["t_max"]), cfg["n_theory"])])
    out = {}
    for act in cfg["activations"]:
        for rule in RULES:
            args = (act, eigvals, W0, V0, times)
            out[act, rule] = (job.integrate(f"{act}/{rule}", *args, rule=rule, lr=cfg["lr"]) if job
                              else integrate(*args, rule=rule, lr=cfg["lr"]))
    return out


def run(out, small=False):
    cfg = SMALL if small else FULL
    job = Run(NAME, out, cfg)
    eigvals, W0, V0, R = problem(cfg)
    job.record(rotation=R)
    theo = theory(cfg, job)
    late = {}
    for (act, rule), res in theo.items():
        diag, span = alignment(theory_overlaps(res)[-1])
        late[f"{act}/{rule}"] = {"t": res.t[-1], "error": res.error[-1], "pca_error_K": res.pca_errors[-1],
                                 "overlap_kk": diag, "top_K_share": span}
    job.record(theory_late=late)
    for (act, rule), res in theo.items():
        job.fixed_point(f"{act}/{rule}", res)

    sim_t = np.concatenate([[0.0], np.logspace(-1, np.log10(cfg["t_max"]), cfg["n_sim"])])
    runs = [(act, rule) for act in cfg["activations"] for rule in RULES]
    if "linear" in cfg["activations"]:
        runs.append(("linear", "sanger"))
    sims, sim_late = {}, {}
    for act, rule in runs:
        sim = job.simulate(f"{act}/{rule}", act, eigvals, W0, V0, sim_t, cfg["seeds"], rule=rule,
                           lr=cfg["lr"], n_overlap=cfg["K"])
        sims[act, rule] = sim
        diag, span = alignment(sim.overlap[:, -1])
        sim_late[f"{act}/{rule}"] = {"t": sim.t[-1], "error_mean": np.mean(sim.error[:, -1]),
                                     "overlap_kk_mean": diag.mean(0), "top_K_share_mean": span.mean(0)}
        job.record(simulation_late=sim_late)
    header, cols = ["t"], [sim_t]
    for (act, rule), sim in sims.items():
        header.append(f"sgd_{act}_{rule}")
        cols.append(sim.mean("error"))
        if (act, rule) in theo:
            header.append(f"theory_{act}_{rule}")
            cols.append(np.interp(sim.t, theo[act, rule].t, theo[act, rule].error))
    return job.finish(header, cols, plot(cfg, theo, sims))


STYLE = {"vanilla": ("--", "v", "vanilla"), "truncated": ("-", "o", "truncated"), "sanger": (None, "s", "Sanger (SGD only)")}


def plot(cfg, theo, sims):
    plt = pyplot()
    from matplotlib.lines import Line2D
    acts = cfg["activations"]
    fig, axes = plt.subplots(len(acts), 2, figsize=(12, 4.2 * len(acts)), squeeze=False)
    for row, act in enumerate(acts):
        ax_e, ax_o = axes[row]
        for i, rule in enumerate(RULES):
            res, (ls, mk, label) = theo[act, rule], STYLE[rule]
            ax_e.plot(res.t[1:], res.error[1:], ls=ls, color=f"C{i}", lw=1.8, label=f"{label}: equations")
            sim = sims[act, rule]
            sim_points(ax_e, sim.t[1:], sim.error[:, 1:], f"C{i}", f"{label}: SGD", marker=mk)
            diag, _ = alignment(theory_overlaps(res))
            for k in range(cfg["K"]):
                ax_o.plot(res.t[1:], diag[1:, k], ls=ls, color=f"C{k + 2}", lw=1.5,
                          label=f"unit {k + 1}" if rule == "truncated" else None)
                sim_points(ax_o, sim.t[1:], alignment(sim.overlap[:, 1:])[0][..., k], f"C{k + 2}", marker=mk)
        if (act, "sanger") in sims:
            sim = sims[act, "sanger"]
            for k in range(cfg["K"]):
                sim_points(ax_o, sim.t[1:], alignment(sim.overlap[:, 1:])[0][..., k], f"C{k + 2}", marker="s")
        pca_levels(ax_e, theo[act, RULES[0]].pca_errors, theo[act, RULES[0]].t[1])
        ax_e.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="reconstruction error",
                 title=f"{act}, K = {cfg['K']}, spikes {cfg['spikes']} × D, rotated init, D = {cfg['D']}")
        ax_o.set(xscale="log", ylim=(0, 1.03), xlabel="t = steps / D", ylabel="|w_k.u_k| / |w_k|",
                 title=f"{act}: alignment of unit k with eigenvector k")
        ax_e.legend(fontsize=7)
        handles = ax_o.get_legend_handles_labels()[0] + [
            Line2D([], [], color="k", ls=STYLE[r][0] or "none", marker=STYLE[r][1], mfc="white", label=STYLE[r][2])
            for r in STYLE if (act, r) in sims]
        ax_o.legend(handles=handles, fontsize=7, loc="lower right", title="lines: equations, markers: SGD",
                    title_fontsize=7)
    fig.tight_layout()
    return fig
