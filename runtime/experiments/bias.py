"""ReLU autoencoders need a trained bias (SPEC section 5, finding 3): K = 2, spikes 2D and D, unit
bulk, lr = 1, weights 0.1 N(0, 1), encoder bias b0 = 0.1 (trained, rule vanilla). Without a bias
the error stalls at eps_PCA(1); with it the equations leave that plateau (still above
eps_PCA(2)). Theory: the D -> infinity equations from the weights at the first D; SGD: several
seeds at each D, shown seed by seed (whether a seed leaves the plateau is a finite-D matter),
with the bias trajectories b_k(t). For comparison, erf with and without bias (equations only).
SPEC section 5 asks whether an output bias c (x_hat = V^T g + c) closes the rest of the gap: the
equations with a trained output bias (c0 = 0), with and without the encoder bias, against SGD at
the first D (with both biases both reach eps_PCA(2); with the output bias alone both stay near
0.89).

Writes bias.png, bias.csv (error curves) and bias.json (late-time errors and biases of theory
and of every SGD seed, how many seeds left the eps_PCA(1) plateau, and the long-time analysis
where runtime.fixed_points supports the state: it does not take a trained bias, which is
recorded as such).
"""
import numpy as np

from runtime.experiments.common import Run, integrate, pca_levels, pyplot, spiked_eigvals

NAME = "bias"
FULL = dict(activation="relu", compare="erf", D=(300, 600), seeds=(4, 2), K=2, spikes=(2.0, 1.0),
            init=0.1, b0=0.1, lr=1.0, t_max=500.0, n_theory=80, n_sim=16, seed=0)
SMALL = dict(FULL, D=(100,), seeds=(2,), t_max=60.0, n_theory=30, n_sim=6)
#: a run has left the eps_PCA(1) plateau once its error is this far below eps_PCA(1)
LEFT_PLATEAU = 0.02


def problem(cfg, D):
    """Eigenvalues (eigenbasis, U = I), i.i.d. N(0, init^2) W0, V0 at dimension D, and b0."""
    rng = np.random.default_rng(cfg["seed"])
    K = cfg["K"]
    return (spiked_eigvals(D, cfg["spikes"]), cfg["init"] * rng.standard_normal((K, D)),
            cfg["init"] * rng.standard_normal((K, D)), np.full(K, cfg["b0"]))


def _grid(cfg, n):
    return np.concatenate([[0.0], np.logspace(-1, np.log10(cfg["t_max"]), n)])


def theory(cfg, job=None):
    """{(activation, with_bias): result} for the ReLU network and the comparison activation, and
    OUTPUT_BIASES -> result for the ReLU network with a trained output bias, from the weights at
    the first D (timed and recorded in `job`, a common.Run, if given)."""
    eigvals, W0, V0, b0 = problem(cfg, cfg["D"][0])
    out, c0 = {}, np.zeros(eigvals.size)
    runs = [(act, with_bias, None) for act in (cfg["activation"], cfg["compare"]) for with_bias in (False, True)]
    runs += [(cfg["activation"], name == "bias + output bias", name) for name in OUTPUT_BIASES]
    for act, with_bias, output in runs:
        args = (act, eigvals, W0, V0, _grid(cfg, cfg["n_theory"]))
        kw = dict(lr=cfg["lr"], b0=b0 if with_bias else None, c0=None if output is None else c0)
        label = f"{act}/{output or ('bias' if with_bias else 'no bias')}"
        out[output or (act, with_bias)] = job.integrate(label, *args, **kw) if job else integrate(*args, **kw)
    return out


#: the runs with a trained output bias c (c0 = 0), with and without the encoder bias
OUTPUT_BIASES = ("bias + output bias", "output bias")


def _label(key):
    return key if isinstance(key, str) else f"{key[0]}/{'bias' if key[1] else 'no bias'}"


def run(out, small=False):
    cfg = SMALL if small else FULL
    job = Run(NAME, out, cfg)
    theo = theory(cfg, job)
    relu = cfg["activation"]
    pca = theo[relu, False].pca_errors
    job.record(pca_errors=pca, theory_late={
        _label(key): {"t": res.t[-1], "error": res.error[-1], "excess_over_pca_K": res.error[-1] - pca[-1],
                      "b": None if res.b is None else res.b[-1],
                      "output_bias_c2_over_D": None if res.output_bias is None else res.output_bias[-1]}
        for key, res in theo.items()})
    for key, res in theo.items():
        if not isinstance(key, str):            # fixed_points takes no trained output bias
            job.fixed_point(_label(key), res)

    sims, late = {}, {}
    for D, seeds in zip(cfg["D"], cfg["seeds"]):
        eigvals, W0, V0, b0 = problem(cfg, D)
        for with_bias in (False, True):
            label = f"{relu}/{'bias' if with_bias else 'no bias'} D={D}"
            sim = job.simulate(label, relu, eigvals, W0, V0, _grid(cfg, cfg["n_sim"]), seeds, lr=cfg["lr"],
                               n_overlap=len(cfg["spikes"]), b0=b0 if with_bias else None)
            sims[D, with_bias] = sim
            final = sim.error[:, -1]
            late[label] = {"t": sim.t[-1], "error": final, "b": None if sim.b is None else sim.b[:, -1],
                           "seeds_off_plateau": int(np.sum(final < pca[1] - LEFT_PLATEAU)), "seeds": int(final.size)}
            job.record(simulation_late=late)
    D, seeds = cfg["D"][0], cfg["seeds"][0]
    eigvals, W0, V0, b0 = problem(cfg, D)
    output = {}                     # SGD with a trained output bias c (c0 = 0), with and without b
    for name, encoder in zip(OUTPUT_BIASES, (b0, None)):
        label = f"{relu}/{name} D={D}"
        output[name] = sim = job.simulate(label, relu, eigvals, W0, V0, _grid(cfg, cfg["n_sim"]), seeds, lr=cfg["lr"],
                                          n_overlap=len(cfg["spikes"]), b0=encoder, c0=np.zeros(D))
        late[label] = {"t": sim.t[-1], "error": sim.error[:, -1], "excess_over_pca_K": sim.error[:, -1] - pca[-1],
                       "seeds": int(sim.error.shape[0])}
        job.record(simulation_late=late)
    t = sims[cfg["D"][0], False].t
    header, cols = ["t"], [t]
    for key, res in theo.items():
        header.append("theory_" + _label(key).replace(" + ", "_and_").replace("/", "_").replace(" ", "_"))
        cols.append(np.interp(t, res.t, res.error))
    for (D, b), sim in sims.items():
        header.append(f"sgd_{relu}_{'bias' if b else 'nobias'}_D{D}_mean")
        cols.append(sim.mean("error"))
    for name, sim in output.items():
        header.append(f"sgd_{relu}_{name.replace(' + ', '_and_').replace(' ', '_')}_D{cfg['D'][0]}_mean")
        cols.append(sim.mean("error"))
    return job.finish(header, cols, plot(cfg, theo, sims, output, pca))


def plot(cfg, theo, sims, output, pca):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    relu, markers = cfg["activation"], "os^v"
    ax_e, ax_b, ax_c = axes
    for i, with_bias in enumerate((False, True)):
        res = theo[relu, with_bias]
        name = "trained bias" if with_bias else "no bias"
        ax_e.plot(res.t[1:], res.error[1:], color=f"C{i}", lw=2, label=f"{name}: equations (D → ∞)")
        for j, D in enumerate(cfg["D"]):
            sim = sims[D, with_bias]
            for s in range(sim.error.shape[0]):
                ax_e.plot(sim.t[1:], sim.error[s, 1:], ls="none", marker=markers[j], ms=4, mfc="white", color=f"C{i}",
                          label=f"{name}: SGD D = {D}, one marker per seed" if s == 0 else None)
    for i, (name, sim) in enumerate(output.items()):
        res = theo[name]
        ax_e.plot(res.t[1:], res.error[1:], color=f"C{i + 4}", lw=2, ls="--", label=f"{name}: equations (D → ∞)")
        for s in range(sim.error.shape[0]):
            ax_e.plot(sim.t[1:], sim.error[s, 1:], ls="none", marker="D", ms=3.5, mfc="white", color=f"C{i + 4}",
                      label=f"{name}: SGD D = {cfg['D'][0]}, one marker per seed" if s == 0 else None)
    pca_levels(ax_e, pca, 0.1)
    ax_e.set(xscale="log", xlabel="t = steps / D", ylabel="reconstruction error",
             title=f"{relu}, K = {cfg['K']}, spikes {cfg['spikes']} × D\ninit σ = {cfg['init']}, b0 = {cfg['b0']}, output bias c0 = 0")
    ax_e.legend(fontsize=7, loc="upper right")
    res = theo[relu, True]
    for k in range(cfg["K"]):
        ax_b.plot(res.t[1:], res.b[1:, k], color=f"C{k + 2}", lw=2, label=f"b_{k + 1}: equations")
        for j, D in enumerate(cfg["D"]):
            sim = sims[D, True]
            for s in range(sim.b.shape[0]):
                ax_b.plot(sim.t[1:], sim.b[s, 1:, k], ls="none", marker=markers[j], ms=4, mfc="white", color=f"C{k + 2}",
                          label=f"b_{k + 1}: SGD D = {D}" if s == 0 else None)
    ax_b.set(xscale="log", xlabel="t = steps / D", ylabel="encoder bias b_k", title=f"{relu}: trained biases")
    ax_b.legend(fontsize=7)
    comp = cfg["compare"]
    for i, with_bias in enumerate((False, True)):
        res = theo[comp, with_bias]
        final_b = "" if res.b is None else f" (b(t = {res.t[-1]:g}) = {np.array2string(res.b[-1], precision=3)})"
        ax_c.plot(res.t[1:], res.error[1:], color=f"C{i}", lw=2, ls="--" if with_bias else "-",
                  label=f"{comp}, {'trained bias' if with_bias else 'no bias'}: equations{final_b}")
    pca_levels(ax_c, pca, 0.1)
    ax_c.set(xscale="log", xlabel="t = steps / D", ylabel="reconstruction error", title=f"{comp} for comparison (equations only)")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return fig
