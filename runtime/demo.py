"""python -m runtime.demo: the default experiment (SPEC section 5, finding 1).

erf autoencoder, K = 4, spiked inputs with 4 spikes at D = 1000, lr = 1: integrate the
equations, simulate SGD from the same weights, and write error.png, error.csv and
summary.json into --out; print a short table.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import generated
from runtime.simulate import simulate

SPIKES = (4.0, 3.0, 2.0, 1.5)


def problem(D, K, seed):
    """Spiked covariance (eigenvalues s_m D and a unit bulk), random eigenvectors, small init."""
    rng = np.random.default_rng(seed)
    eigvals = np.concatenate([np.array(SPIKES) * D, np.ones(D - len(SPIKES))])
    eigvecs = np.linalg.qr(rng.normal(size=(D, D)))[0]
    W0 = 0.2 * rng.normal(size=(K, D))
    V0 = 0.2 * rng.normal(size=(K, D))
    return eigvals, eigvecs, W0, V0


def plot(path, theory, sim, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(theory.t[1:], theory.error[1:], color="C0", lw=2, label="equations of motion")
    mean, std = sim.error.mean(0), sim.error.std(0)
    ax.errorbar(sim.t[1:], mean[1:], yerr=std[1:], fmt="o", ms=4, color="C1", label=f"SGD, {sim.error.shape[0]} seeds")
    for m, level in enumerate(theory.pca_errors):
        ax.axhline(level, ls="--", lw=0.8, color="gray")
        ax.text(theory.t[1], level, f" PCA {m}", va="bottom", fontsize=8, color="gray")
    ax.set_xscale("log")
    ax.set_xlabel("t = steps / D")
    ax.set_ylabel("reconstruction error")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m runtime.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--D", type=int, default=1000)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--t-max", type=float, default=100.0)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    act = generated.load("erf")
    eigvals, eigvecs, W0, V0 = problem(args.D, args.K, seed=0)
    times = np.concatenate([[0.0], np.logspace(-1, np.log10(args.t_max), 25)])

    start = time.perf_counter()
    theory = act.integrate(eigvals, eigvecs, W0, V0, lr=1.0, times=times, progress=True)
    t_theory = time.perf_counter() - start
    start = time.perf_counter()
    sim = simulate(act, eigvals, eigvecs, W0, V0, lr=1.0, times=times, seeds=args.seeds,
                   test_samples=2000, progress=True)
    t_sim = time.perf_counter() - start

    mean, std = sim.error.mean(0), sim.error.std(0)
    rows = np.column_stack([times, theory.error, mean, std, sim.test_error.mean(0)])
    np.savetxt(out / "error.csv", rows, delimiter=",", fmt="%.8g",
               header="t,theory_error,sgd_error_mean,sgd_error_std,sgd_test_error_mean", comments="")
    plot(out / "error.png", theory, sim, f"erf, K = {args.K}, D = {args.D}, spikes {SPIKES}")
    summary = {
        "activation": "erf", "rule": "vanilla", "K": args.K, "D": args.D, "lr": 1.0, "spikes": SPIKES,
        "seeds": args.seeds, "pca_errors": theory.pca_errors.tolist(),
        "final_error": {"theory": float(theory.error[-1]), "sgd_mean": float(mean[-1]), "sgd_std": float(std[-1])},
        "max_abs_gap": float(np.max(np.abs(mean - theory.error))),
        "seconds": {"integrate": t_theory, "simulate": t_sim},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{'t':>8} {'theory':>9} {'SGD':>9} {'+-':>7}")
    for i in range(0, times.size, 3):
        print(f"{times[i]:8.2f} {theory.error[i]:9.4f} {mean[i]:9.4f} {std[i]:7.4f}")
    print(f"PCA errors (m = 0..{args.K}): " + ", ".join(f"{e:.3f}" for e in theory.pca_errors))
    print(f"integrate {t_theory:.2f} s, simulate {t_sim:.1f} s; wrote {out}/error.png, error.csv, summary.json")


if __name__ == "__main__":
    main()
