"""Tied vs untied weights (SPEC section 5, finding 2): K = 2, spikes 2D and D, unit bulk,
init 0.5 N(0, 1). An erf autoencoder with tied weights (V = W) stalls well above the PCA error;
untied it approaches eps_PCA(K) (slowly). Untied: the D -> infinity equations; tied: the finite-D
equations at the given D (the tied rule has no O(1) limit, SPEC section 5), each with SGD points.
Also linear and ReLU tied (equations and SGD; ReLU's through the smoothed activation of
derive/smoothing.py; an activation the integrator refuses is recorded with its reason). Finally, how the tied order parameters scale with D in SGD: the
late-time spike projections |omega_tau| = (sum_k (w_k.u_tau)^2)^(1/2), Q_kk and |w_k|^2/D at
several D, with fitted exponents (quantity ~ D^p). Last, where the tied equations and SGD agree:
a spectrum whose atoms are all macroscopic (eigenvalues 4 and 2 with D/10 directions each over a
unit bulk), where each run's per-atom matrices self-average, unlike spikes of order D (docs/tied.md).

Writes tied.png, tied.csv (error curves at the main D) and tied.json (late-time errors of theory
and SGD, the scan over D with its exponents, the long-time analysis).
"""
import numpy as np

from runtime.experiments.common import Run, integrate, pca_levels, pyplot, sim_points, spiked_eigvals

NAME = "tied"
FULL = dict(D=400, K=2, spikes=(2.0, 1.0), init=0.5, lr=1.0, t_max=50.0, untied_t_max=1000.0,
            n_theory=60, n_sim=14, seeds=2, seed=0, scan_D=(200, 400, 800), tied_activations=("erf", "linear", "relu"),
            macro_atoms=((4.0, 0.1), (2.0, 0.1)), macro_seeds=24)
SMALL = dict(FULL, D=100, t_max=10.0, untied_t_max=20.0, n_theory=25, n_sim=5, seeds=1, scan_D=(100, 150),
             macro_seeds=3)
#: late-time averages are over the records with t >= LATE * t_max
LATE = 0.5


def problem(cfg, D=None):
    """Eigenvalues (eigenbasis, U = I) and i.i.d. N(0, init^2) initial W0, V0 at dimension D
    (default cfg["D"])."""
    D = cfg["D"] if D is None else D
    rng = np.random.default_rng(cfg["seed"])
    K = cfg["K"]
    return spiked_eigvals(D, cfg["spikes"]), cfg["init"] * rng.standard_normal((K, D)), \
        cfg["init"] * rng.standard_normal((K, D))


def macroscopic_eigvals(D, atoms):
    """Eigenvalue a for round(f D) directions per (a, f) in `atoms`, 1 for the rest."""
    sizes = [int(round(f * D)) for _, f in atoms]
    return np.concatenate([np.full(n, float(a)) for (a, _), n in zip(atoms, sizes)] + [np.ones(D - sum(sizes))])


def agreement(res, sim):
    """Largest and mean |equations - SGD mean| of the error over the records t > 0, in seed
    spreads and standard errors, and how far the SGD error moves, in spreads."""
    mean, spread = sim.mean()[1:], sim.std()[1:]
    ratio = np.abs(res.error[1:] - mean) / spread
    return {"max_gap_over_spread": float(np.max(ratio)),
            "mean_gap_over_standard_error": float(np.mean(ratio) * np.sqrt(sim.error.shape[0])),
            "error_change_over_spread": float(abs(mean[-1] - sim.mean()[0]) / np.mean(spread))}


def _grid(t_max, n):
    return np.concatenate([[0.0], np.logspace(-1, np.log10(t_max), n)])


def theory(cfg, job=None):
    """{(activation, rule): result}: erf untied (D -> infinity, up to untied_t_max), erf and
    linear tied (finite-D equations at cfg["D"], up to t_max); and {activation: reason} for the
    tied activations the integrator refuses (ValueError's message)."""
    eigvals, W0, V0 = problem(cfg)
    runs = [("erf", "vanilla", V0, cfg["untied_t_max"])] + [
        (act, "tied", None, cfg["t_max"]) for act in cfg["tied_activations"]]
    out, refused = {}, {}
    for act, rule, V, t_max in runs:
        args = (act, eigvals, W0, V, _grid(t_max, cfg["n_theory"]))
        try:
            out[act, rule] = (job.integrate(f"{act}/{rule}", *args, rule=rule, lr=cfg["lr"]) if job
                              else integrate(*args, rule=rule, lr=cfg["lr"]))
        except ValueError as err:
            if rule != "tied":
                raise
            refused[act] = str(err)
    return out, refused


def spike_projections(sim):
    """|omega_tau| = (sum_k (w_k.u_tau)^2)^(1/2) per seed, record and recorded spike tau:
    overlap w_k.u_tau/|w_k| times |w_k| = (D T0_kk)^(1/2) (V = W for tied)."""
    D = sim.W.shape[-1]
    norm = np.sqrt(D * np.diagonal(sim.T0, axis1=-2, axis2=-1))       # (S, n, K)
    return np.sqrt(np.sum((sim.overlap * norm[..., None]) ** 2, axis=-2))


def late_means(sim, n_spikes, t_from):
    """Late-time (t >= t_from) means over records, seeds and units: error, Q_kk, |w_k|^2/D,
    and |omega_tau| per spike."""
    late = sim.t >= t_from
    diag = lambda A: np.nanmean(np.diagonal(A[:, late], axis1=-2, axis2=-1))
    return {"error": float(np.nanmean(sim.error[:, late])),
            "error_seed_std": float(np.std(np.nanmean(sim.error[:, late], axis=1), ddof=1))
            if sim.error.shape[0] > 1 else 0.0,
            "Q_diag": diag(sim.Q), "w2_over_D": diag(sim.T0),
            "spike_projection": np.nanmean(spike_projections(sim)[:, late, :n_spikes], axis=(0, 1))}


def exponents(Ds, values):
    """p of value ~ C D^p: least squares of log(value) on log(D) (values (n_D, ...))."""
    values = np.asarray(values, float)
    slope = np.polyfit(np.log(np.asarray(Ds, float)), np.log(values.reshape(len(Ds), -1)), 1)[0]
    return slope.reshape(values.shape[1:])


def theory_late(res, t_from, n_spikes):
    """The same late-time means from an integrated (finite-D tied) run."""
    late = res.t >= t_from
    proj = np.sqrt(np.sum(res.directions()[..., :res.Q.shape[-1]] ** 2, axis=-1))     # (n_t, n_spikes)
    return {"error": float(np.mean(res.error[late])),
            "Q_diag": float(np.mean(np.diagonal(res.Q[late], axis1=-2, axis2=-1))),
            "w2_over_D": float(np.mean(np.diagonal(res.T0[late], axis1=-2, axis2=-1))),
            "spike_projection": np.mean(proj[late, :n_spikes], axis=0)}


def run(out, small=False):
    cfg = SMALL if small else FULL
    job = Run(NAME, out, cfg)
    M, D = len(cfg["spikes"]), cfg["D"]
    theo, refused = theory(cfg, job)
    pca = theo["erf", "vanilla"].pca_errors
    job.record(pca_errors=pca, no_equations={act: f"no tied equations for {act}: {why}" for act, why in refused.items()})
    job.record(theory_late={f"{act}/{rule}": dict(theory_late(res, LATE * res.t[-1], M), t=res.t[-1],
                                                  excess_over_pca_K_relative=(res.error[-1] - pca[-1]) / pca[-1])
                            for (act, rule), res in theo.items()})
    for (act, rule), res in theo.items():
        job.fixed_point(f"{act}/{rule}", res)

    sims, scan = {}, {}
    eigvals, W0, V0 = problem(cfg)
    sims["erf", "vanilla"] = job.simulate("erf/vanilla", "erf", eigvals, W0, V0, _grid(cfg["untied_t_max"], cfg["n_sim"]),
                                          cfg["seeds"], lr=cfg["lr"], n_overlap=M)
    for act in cfg["tied_activations"]:
        scan[act] = {}
        for d in cfg["scan_D"]:
            ev, W, _ = problem(cfg, d)
            sim = job.simulate(f"{act}/tied D={d}", act, ev, W, None, _grid(cfg["t_max"], cfg["n_sim"]), cfg["seeds"],
                               rule="tied", lr=cfg["lr"], n_overlap=M)
            scan[act][d] = late_means(sim, M, LATE * cfg["t_max"])
            if d == D:
                sims[act, "tied"] = sim
        rows = [scan[act][d] for d in cfg["scan_D"]]
        scan[act]["exponents"] = {q: exponents(cfg["scan_D"], [r[q] for r in rows])
                                  for q in ("Q_diag", "w2_over_D", "spike_projection")}
        job.record(scan={act: {str(k): v for k, v in s.items()} for act, s in scan.items()})
    job.record(simulation_late={f"{act}/{rule}": late_means(sim, M, LATE * sim.t[-1]) | {"t": sim.t[-1]}
                                for (act, rule), sim in sims.items()})
    header, cols = [], []
    for (act, rule), sim in sims.items():
        header += [f"t_{act}_{rule}", f"sgd_{act}_{rule}"]
        cols += [sim.t, sim.mean("error")]
        if (act, rule) in theo:
            header.append(f"theory_{act}_{rule}")
            cols.append(np.interp(sim.t, theo[act, rule].t, theo[act, rule].error))
    n = max(len(c) for c in cols)
    job.table(header, [np.pad(c.astype(float), (0, n - len(c)), constant_values=np.nan) for c in cols])
    eigvals_macro, grid = macroscopic_eigvals(D, cfg["macro_atoms"]), np.linspace(0, cfg["t_max"], cfg["n_sim"] + 1)
    macro = {}
    for act in cfg["tied_activations"]:
        label = f"{act}/tied macroscopic atoms"
        macro[act] = (job.integrate(label, act, eigvals_macro, W0, None, grid, rule="tied", lr=cfg["lr"]),
                      job.simulate(label, act, eigvals_macro, W0, None, grid, cfg["macro_seeds"], rule="tied",
                                   lr=cfg["lr"], n_overlap=0))
    job.record(macroscopic={act: agreement(*pair) for act, pair in macro.items()})
    job.figure(plot(cfg, theo, refused, sims, scan, pca, macro))
    return job.summary


def plot(cfg, theo, refused, sims, scan, pca, macro):
    plt = pyplot()
    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    D = cfg["D"]
    ax = axes[0, 0]
    for i, (rule, label) in enumerate((("vanilla", "untied (D → ∞ equations)"), ("tied", f"tied (finite-D equations, D = {D})"))):
        res, sim = theo["erf", rule], sims["erf", rule]
        ax.plot(res.t[1:], res.error[1:], color=f"C{i}", lw=2, label=f"erf {label}")
        sim_points(ax, sim.t[1:], sim.error[:, 1:], f"C{i}", f"erf {rule}: SGD, D = {D}")
    pca_levels(ax, pca, 0.1)
    ax.set(xscale="log", xlabel="t = steps / D", ylabel="reconstruction error",
           title=f"erf, K = {cfg['K']}, spikes {cfg['spikes']} × D: tied stalls, untied approaches PCA")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for i, act in enumerate(cfg["tied_activations"]):
        sim = sims[act, "tied"]
        if (act, "tied") in theo:
            res = theo[act, "tied"]
            ax.plot(res.t[1:], res.error[1:], color=f"C{i + 2}", lw=2, label=f"{act} tied: finite-D equations")
        sim_points(ax, sim.t[1:], sim.error[:, 1:], f"C{i + 2}", f"{act} tied: SGD, D = {D}")
    pca_levels(ax, pca, 0.1)
    note = "\n".join(f"{act}: no tied equations" for act in refused)
    if note:
        ax.text(0.98, 0.6, note, transform=ax.transAxes, fontsize=7, ha="right", va="center")
    ax.set(xscale="log", xlabel="t = steps / D", ylabel="reconstruction error", title="tied weights")
    ax.legend(fontsize=7)
    Ds = np.asarray(cfg["scan_D"], float)
    for ax, quantities in ((axes[1, 0], ("spike_projection",)), (axes[1, 1], ("Q_diag", "w2_over_D"))):
        for i, act in enumerate(cfg["tied_activations"]):
            for q, marker in zip(quantities, "os"):
                vals = np.array([np.atleast_1d(scan[act][d][q]) for d in cfg["scan_D"]])
                p = np.atleast_1d(scan[act]["exponents"][q])
                for m in range(vals.shape[1]):
                    ls = "-" if m == 0 else ":"
                    name = f"|ω_{m + 1}|" if q == "spike_projection" else {"Q_diag": "Q_kk", "w2_over_D": "|w|²/D"}[q]
                    ax.plot(Ds, vals[:, m], ls=ls, marker=marker, color=f"C{i + 2}", mfc="white",
                            label=f"{act}: {name} ~ D^{p[m]:.2f}")
        ax.set(xscale="log", yscale="log", xlabel="D", title=f"tied SGD, late time (t ≥ {LATE * cfg['t_max']:g})")
        ax.legend(fontsize=7)
    axes[1, 0].set_ylabel("|ω_τ| = (Σ_k (w_k.u_τ)²)^½")
    axes[1, 1].set_ylabel("Q_kk, |w_k|²/D (mean over k)")
    atoms = " and ".join(f"{a:g} (D/{1 / f:g} directions)" for a, f in cfg["macro_atoms"])
    q = lambda A: np.mean(np.diagonal(A, axis1=-2, axis2=-1), axis=-1)       # mean Q_kk
    for i, act in enumerate(cfg["tied_activations"]):
        res, sim = macro[act]
        level = res.pca_errors[-1]
        axes[2, 0].plot(res.t[1:], res.error[1:] - level, color=f"C{i + 2}", lw=2, label=f"{act} tied: finite-D equations")
        sim_points(axes[2, 0], sim.t[1:], sim.error[:, 1:] - level, f"C{i + 2}", f"{act} tied: SGD, D = {D}")
        axes[2, 1].plot(res.t, q(res.Q), color=f"C{i + 2}", lw=2, label=f"{act}: equations")
        sim_points(axes[2, 1], sim.t, q(sim.Q), f"C{i + 2}", f"{act}: SGD")
    axes[2, 0].set(yscale="log", xlabel="t = steps / D", ylabel="ε − ε_PCA(K)",
                   title=f"tied, every atom macroscopic: the equations match SGD\n(eigenvalues {atoms}, unit bulk)")
    axes[2, 1].set(xlabel="t = steps / D", ylabel="Q_kk (mean over k)", title="the same runs: Q")
    for ax in axes[2]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
