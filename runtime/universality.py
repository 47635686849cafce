"""python -m runtime.universality: the equations on a real spectrum track SGD on real samples.

SPEC section 2 and finding 5 ("Gaussian universality", Refinetti & Goldt, ICML 2022): for each
activation and K, integrate the equations of motion on the eigen-decomposition of the empirical
covariance of a data set (runtime.data) and run online SGD (vanilla rule) where every step draws
one real training sample with replacement, from the same initial weights. The SGD error is
measured on the training rows themselves: that empirical distribution is what SGD draws from
and its covariance is exactly the spectrum the equations use (held-out rows with --test heldout).
As a control, SGD on Gaussian inputs with the same spectrum separates finite-D fluctuations
from the non-Gaussianity of the data.

Writes into --out: universality.png (theory lines, SGD points, PCA levels), spectrum.png
(eigenvalues, log-log), summary.json (per activation and K: largest |theory - SGD| over time,
at which t, PCA errors) and curves.csv.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import generated
from runtime import data
from runtime.simulate import simulate

#: CSV columns, one row per (activation, K, t)
COLUMNS = ("activation", "K", "t", "theory", "sgd_real_mean", "sgd_real_std",
           "sgd_real_gaussian_error_mean", "sgd_gaussian_mean", "sgd_gaussian_std")


def initial_weights(K, D, scale, seed):
    """W0, V0 (K, D) with i.i.d. N(0, scale^2) entries (isotropic: the same law in any basis)."""
    rng = np.random.default_rng([seed, K])
    return scale * rng.standard_normal((K, D)), scale * rng.standard_normal((K, D))


def compare(ds, activation, K, lr=1.0, init=0.2, times=None, seeds=3, seed=0, test="train",
            control=True, progress=False):
    """One case: the equations vs SGD on the real samples of `ds` (and on Gaussian inputs).

    Everything runs in the eigenbasis of the data (every rule is equivariant under rotations,
    see runtime.simulate): samples X U, weights drawn there. Returns a dict of arrays over
    `times` (t): theory (and theory_dense on t_dense, for plots), sgd_real (seeds, n) error on the training rows (test="train") or the
    held-out rows (test="heldout"), sgd_real_gaussian_error (seeds, n) the Gaussian population
    error of those SGD weights, sgd_gaussian (seeds, n) or None, pca_errors, seconds.
    """
    if test not in ("train", "heldout"):
        raise ValueError(f"test must be 'train' or 'heldout', got {test!r}")
    act = generated.load(activation)
    times = np.asarray(times if times is not None else default_times(100.0, 25), dtype=float)
    D = ds.D
    X = ds.samples @ ds.eigvecs
    X_test = X if test == "train" else ds.test @ ds.eigvecs
    if X_test.shape[0] == 0:
        raise ValueError("the data set holds no held-out rows (test_fraction = 0); use test='train'")
    W0, V0 = initial_weights(K, D, init, seed)
    tic = time.perf_counter()
    dense = np.union1d(times, np.geomspace(times[times > 0].min(), times[-1], 200)) if np.any(times > 0) else times
    theory = act.integrate(ds.eigvals, np.eye(D), W0, V0, lr=lr, times=dense, progress=progress)
    at = np.searchsorted(dense, times)
    seconds = {"integrate": time.perf_counter() - tic}
    tic = time.perf_counter()
    real = simulate(act, ds.eigvals, None, W0, V0, lr=lr, times=times, seeds=seeds, samples=X,
                    test_set=X_test, progress=progress)
    seconds["sgd_real"] = time.perf_counter() - tic
    gauss = None
    if control:
        tic = time.perf_counter()
        gauss = simulate(act, ds.eigvals, None, W0, V0, lr=lr, times=times, seeds=seeds,
                         test_samples=0, progress=progress)
        seconds["sgd_gaussian"] = time.perf_counter() - tic
    for res in (real, gauss):
        if res is not None and res.status != 0:
            raise RuntimeError(f"SGD {activation}, K = {K}: {res.message}")
    return {"t": times, "theory": theory.error[at], "t_dense": dense, "theory_dense": theory.error,
            "sgd_real": real.test_error,
            "sgd_real_gaussian_error": real.error, "sgd_gaussian": None if gauss is None else gauss.error,
            "pca_errors": theory.pca_errors, "seconds": seconds}


def largest_gap(t, theory, sgd):
    """max_t |theory(t) - mean over seeds of sgd(t)|, the t where it occurs, and the seeds'
    standard error of the mean there."""
    mean = sgd.mean(axis=0)
    i = int(np.argmax(np.abs(mean - theory)))
    se = sgd[:, i].std(ddof=1) / np.sqrt(sgd.shape[0]) if sgd.shape[0] > 1 else float("nan")
    return {"gap": float(abs(mean[i] - theory[i])), "t": float(t[i]), "standard_error": float(se)}


def default_times(t_max, n):
    """0 and n log-spaced times from 0.1 to t_max."""
    return np.concatenate([[0.0], np.logspace(-1, np.log10(t_max), n)])


def plot_cases(path, cases, title):
    """Grid: one panel per (activation, K); theory line, SGD points (mean +- std), PCA levels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    acts = sorted({a for a, _ in cases})
    Ks = sorted({k for _, k in cases})
    fig, axes = plt.subplots(len(acts), len(Ks), figsize=(4.2 * len(Ks), 3.4 * len(acts)), squeeze=False)
    for (a, K), c in cases.items():
        ax = axes[acts.index(a), Ks.index(K)]
        t = c["t"]
        ax.plot(c["t_dense"][1:], c["theory_dense"][1:], color="C0", lw=2, label="equations on the data spectrum")
        ax.errorbar(t[1:], c["sgd_real"].mean(0)[1:], yerr=c["sgd_real"].std(0)[1:], fmt="o", ms=3.5,
                    color="C1", label="SGD on the real samples")
        if c["sgd_gaussian"] is not None:
            ax.plot(t[1:], c["sgd_gaussian"].mean(0)[1:], "x", ms=4, color="C2", label="SGD on Gaussian inputs")
        for level in c["pca_errors"]:
            ax.axhline(level, ls="--", lw=0.7, color="gray")
        ax.text(t[1], c["pca_errors"][-1], f" PCA {len(c['pca_errors']) - 1}", va="bottom", fontsize=7, color="gray")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{a}, K = {K}", fontsize=10)
        ax.set_xlabel("t = steps / D")
        ax.set_ylabel("reconstruction error")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spectrum(path, ds):
    """Eigenvalues of the empirical covariance in decreasing order, log-log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rho = np.sort(ds.eigvals)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    rank = np.arange(1, rho.size + 1)
    keep = rho > 0
    ax.loglog(rank[keep], rho[keep], ".", ms=3)
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue of the covariance")
    ax.set_title(f"{ds.name}: D = {ds.D}, N = {ds.samples.shape[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path, cases):
    rows = []
    for (a, K), c in cases.items():
        gauss = c["sgd_gaussian"]
        nan = np.full(c["t"].size, np.nan)
        cols = (c["t"], c["theory"], c["sgd_real"].mean(0), c["sgd_real"].std(0),
                c["sgd_real_gaussian_error"].mean(0),
                nan if gauss is None else gauss.mean(0), nan if gauss is None else gauss.std(0))
        rows += [f"{a},{K}," + ",".join(f"{v[i]:.8g}" for v in cols) for i in range(c["t"].size)]
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")


def summary_of(c):
    """The summary.json entry of one case."""
    out = {"largest_gap": largest_gap(c["t"], c["theory"], c["sgd_real"]),
           "largest_gap_gaussian_error_of_sgd_weights": largest_gap(c["t"], c["theory"], c["sgd_real_gaussian_error"]),
           "final": {"theory": float(c["theory"][-1]), "sgd_real": float(c["sgd_real"][:, -1].mean())},
           "pca_errors": c["pca_errors"].tolist(), "seconds": c["seconds"]}
    if c["sgd_gaussian"] is not None:
        out["largest_gap_gaussian_inputs"] = largest_gap(c["t"], c["theory"], c["sgd_gaussian"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m runtime.universality", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["sklearn"], metavar=("KIND", "PATH"),
                        help="sklearn (default) | cifar10 DIR | mnist DIR_OR_FILE | npy FILE")
    parser.add_argument("--out", default="results/universality")
    parser.add_argument("--activations", nargs="+", default=["erf", "relu"])
    parser.add_argument("--K", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--init", type=float, default=0.2, help="std of the initial weights")
    parser.add_argument("--t-max", type=float, default=100.0)
    parser.add_argument("--n-times", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the patches, split and initial weights")
    parser.add_argument("--patch", type=int, default=32, help="side of the sklearn patches (D = patch^2)")
    parser.add_argument("--n-patches", type=int, default=25000)
    parser.add_argument("--max-samples", type=int, default=None, help="cap on the training rows")
    parser.add_argument("--test", choices=("train", "heldout"), default="train",
                        help="rows on which the SGD error is measured")
    parser.add_argument("--no-control", action="store_true", help="skip SGD on Gaussian inputs")
    parser.add_argument("--cache-dir", default=None, help=f"default ${data.CACHE_ENV} or {data.DEFAULT_CACHE}")
    args = parser.parse_args(argv)
    kind, path = args.data[0], (args.data[1] if len(args.data) > 1 else None)
    if len(args.data) > 2:
        parser.error("--data takes a kind and at most one path")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tic = time.perf_counter()
    try:
        ds = data.load(kind, path, patch=args.patch, n_patches=args.n_patches, max_samples=args.max_samples,
                       seed=args.seed, cache=args.cache_dir or True)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    t_data = time.perf_counter() - tic
    print(f"{ds.name}: N = {ds.samples.shape[0]} training rows, {ds.test.shape[0]} held out, D = {ds.D} "
          f"({t_data:.1f} s, key {ds.key[:12]})")
    plot_spectrum(out / "spectrum.png", ds)
    times = default_times(args.t_max, args.n_times)
    cases = {}
    summary = {"data": {"name": ds.name, "kind": kind, "path": path, "N": ds.samples.shape[0],
                        "N_test": ds.test.shape[0], "D": ds.D, "key": ds.key, "seconds": t_data,
                        "top_eigenvalues_over_D": (np.sort(ds.eigvals)[::-1][:10] / ds.D).tolist()},
               "rule": "vanilla", "lr": args.lr, "init": args.init, "seeds": args.seeds, "test": args.test,
               "times": times.tolist(), "cases": {}}
    for a in args.activations:
        for K in args.K:
            cases[a, K] = c = compare(ds, a, K, args.lr, args.init, times, args.seeds, args.seed, args.test,
                                      not args.no_control, progress=True)
            summary["cases"][f"{a}_K{K}"] = s = summary_of(c)
            (out / "summary.json").write_text(json.dumps(summary, indent=2))     # kept up to date
            write_csv(out / "curves.csv", cases)
            g = s["largest_gap"]
            print(f"{a:>5} K = {K}: largest |theory - SGD| = {g['gap']:.4f} at t = {g['t']:.3g} "
                  f"(+- {g['standard_error']:.4f}); final {s['final']['theory']:.4f} vs {s['final']['sgd_real']:.4f}; "
                  f"{sum(c['seconds'].values()):.1f} s")
    plot_cases(out / "universality.png", cases, f"{ds.name}, D = {ds.D}, lr = {args.lr}, {args.seeds} seeds")
    summary["seconds"] = time.perf_counter() - tic
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}/universality.png, spectrum.png, summary.json, curves.csv ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
