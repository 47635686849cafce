"""Sequential learning (SPEC section 5, finding 1): erf, K = 4, four spikes of well separated
strength, small initial weights. The error falls in steps, one principal component at a time,
with plateaus in between; each unit aligns with one eigenvector.

Writes sequential.png (error: theory line, SGD points, PCA levels; overlaps |w_k.u_tau|/|w_k|
per unit), sequential.csv (error curves) and sequential.json (drops, plateau levels against
eps_PCA(m), the times at which each component is learned, the long-time analysis).
"""
import numpy as np
from scipy.signal import find_peaks

from runtime.experiments.common import (Run, integrate, pca_levels, pyplot, sim_points, spiked_eigvals,
                                       theory_overlaps)

NAME = "sequential"
FULL = dict(activation="erf", D=1000, K=4, spikes=(16.0, 4.0, 1.0, 0.25), init=1e-3, lr=1.0,
            t_max=200.0, n_theory=300, n_sim=30, seeds=3, seed=0)
SMALL = dict(FULL, D=200, t_max=60.0, n_theory=150, n_sim=8, seeds=1)
#: a peak of -d eps / d log t counts as a drop when its prominence exceeds this share of the largest
PROMINENCE = 0.02
#: a unit has learned component tau once |w_k.u_tau| / |w_k| exceeds this
LEARNED_OVERLAP = 1 / np.sqrt(2)


def problem(cfg):
    """Eigenvalues (in the eigenbasis, U = I) and i.i.d. N(0, init^2) initial weights."""
    rng = np.random.default_rng(cfg["seed"])
    K, D = cfg["K"], cfg["D"]
    return (spiked_eigvals(D, cfg["spikes"]), cfg["init"] * rng.standard_normal((K, D)),
            cfg["init"] * rng.standard_normal((K, D)))


def theory(cfg, job=None):
    """The integrated equations on a log grid of n_theory times up to t_max (timed and recorded
    in `job`, a common.Run, if given)."""
    eigvals, W0, V0 = problem(cfg)
    times = np.concatenate([[0.0], np.logspace(-1, np.log10(cfg["t_max"]), cfg["n_theory"])])
    args = (cfg["activation"], eigvals, W0, V0, times)
    return job.integrate("erf", *args, lr=cfg["lr"]) if job else integrate(*args, lr=cfg["lr"])


def plateaus(t, error, pca_errors):
    """Drops and plateaus of an error curve sampled on a log grid (t > 0).

    Drops: peaks of the speed s = -d eps / d log t (prominence > PROMINENCE max s). Plateau m
    (after the m-th drop): the slowest point between drops m and m + 1, with its level, the
    PCA level eps_PCA(m) and the level's position (eps - eps_PCA(m)) / (eps_PCA(m-1) - eps_PCA(m))
    (0: at eps_PCA(m), 1: at eps_PCA(m-1)), and its flatness s / max s.
    """
    keep = t > 0
    lt, e = np.log(t[keep]), error[keep]
    speed = -np.gradient(e, lt)
    peaks, _ = find_peaks(speed, prominence=PROMINENCE * speed.max())
    out = []
    for m, (a, b) in enumerate(zip(peaks[:-1], peaks[1:]), start=1):
        j = a + int(np.argmin(speed[a:b + 1]))
        level = float(e[j])
        gap = pca_errors[m - 1] - pca_errors[m] if m < len(pca_errors) else np.nan
        out.append({"m": m, "t": float(np.exp(lt[j])), "error": level,
                    "pca_error": float(pca_errors[m]) if m < len(pca_errors) else None,
                    "position": float((level - pca_errors[m]) / gap) if m < len(pca_errors) else None,
                    "flatness": float(speed[j] / speed.max())})
    drops = [{"t": float(np.exp(lt[p])), "speed": float(speed[p])} for p in peaks]
    return drops, out


def learned_times(t, overlaps):
    """First time at which some unit has |w_k.u_tau| / |w_k| > LEARNED_OVERLAP, per tau (None if
    never), and that unit (1-based, as in the plot). overlaps: (n_t, K, n_spikes)."""
    best = np.max(np.abs(overlaps), axis=1)                     # (n_t, n_spikes)
    times, units = [], []
    for tau in range(best.shape[1]):
        hit = np.flatnonzero(best[:, tau] > LEARNED_OVERLAP)
        times.append(float(t[hit[0]]) if hit.size else None)
        units.append(int(np.argmax(np.abs(overlaps[hit[0], :, tau]))) + 1 if hit.size else None)
    return times, units


def run(out, small=False):
    cfg = SMALL if small else FULL
    job = Run(NAME, out, cfg)
    eigvals, W0, V0 = problem(cfg)
    res = theory(cfg, job)
    ov = theory_overlaps(res)
    drops, plats = plateaus(res.t, res.error, res.pca_errors)
    learned, units = learned_times(res.t, ov)
    job.record(pca_errors=res.pca_errors, drops=drops, plateaus=plats,
               learned_times=learned, learned_by_unit=units,
               final={"t": res.t[-1], "error": res.error[-1],
                      "excess_over_pca_K": res.error[-1] - res.pca_errors[-1],
                      "overlaps": np.abs(ov[-1])})
    job.fixed_point("erf", res)

    sim_t = np.concatenate([[0.0], np.logspace(-1, np.log10(cfg["t_max"]), cfg["n_sim"])])
    sim = job.simulate("erf", cfg["activation"], eigvals, W0, V0, sim_t, cfg["seeds"], lr=cfg["lr"],
                       n_overlap=len(cfg["spikes"]))
    on_sim = np.interp(sim.t, res.t, res.error)
    job.record(simulation={"t": sim.t, "error_mean": sim.mean("error"), "error_std": sim.std("error"),
                           "theory_at_t": on_sim, "final_overlaps_mean_abs": np.abs(sim.overlap[:, -1]).mean(0)})
    job.table(["t", "theory_error", "sgd_error_mean", "sgd_error_std"],
              [sim.t, on_sim, sim.mean("error"), sim.std("error")])
    job.figure(plot(cfg, res, ov, sim, plats))
    return job.summary


def plot(cfg, res, ov, sim, plats):
    plt = pyplot()
    K, M = cfg["K"], len(cfg["spikes"])
    fig = plt.figure(figsize=(3.2 * K, 7.5))
    grid = fig.add_gridspec(2, K, height_ratios=[1.4, 1])
    ax = fig.add_subplot(grid[0, :])
    t, s = res.t[1:], sim.t[1:]
    ax.plot(t, res.error[1:], color="C0", lw=2, label="equations of motion (D → ∞)")
    sim_points(ax, s, sim.error[:, 1:], "C1", f"SGD, D = {cfg['D']}, {sim.error.shape[0]} seed(s)")
    pca_levels(ax, res.pca_errors, t[0])
    for p in plats:
        ax.plot(p["t"], p["error"], "v", color="k", ms=6)
    ax.set(xscale="log", yscale="log", xlabel="t = steps / D", ylabel="reconstruction error",
           title=f"{cfg['activation']}, K = {K}, spikes {cfg['spikes']} × D, init σ = {cfg['init']}: "
                 "one component at a time (▼ plateaus)")
    ax.legend(loc="upper right")
    for k in range(K):
        axk = fig.add_subplot(grid[1, k])
        for tau in range(M):
            axk.plot(t, np.abs(ov[1:, k, tau]), color=f"C{tau}", lw=1.5, label=f"u_{tau + 1}")
            sim_points(axk, s, np.abs(sim.overlap[:, 1:, k, tau]), f"C{tau}")
        axk.set(xscale="log", ylim=(-0.02, 1.02), xlabel="t", title=f"unit {k + 1}: |w.u_τ| / |w|")
        if k == 0:
            axk.legend(fontsize=7)
    fig.tight_layout()
    return fig
