"""make bench: speed of the generated kernels, the integrator and the SGD simulator.

Prints markdown tables (copied into the README) and writes bench/results.json.
Timings are the best of a few repeats, on one core (OpenBLAS threads pinned to 1).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generated  # noqa: E402
from runtime import spectrum as spec  # noqa: E402
from runtime.simulate import steps_per_second  # noqa: E402

N_CLOSED = 10**6
N_NUMERIC = 10**4


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_covariances(n, dim, rng):
    """Covariances with variances log-uniform in [1e-2, 1e2] and random correlations."""
    F = rng.normal(size=(n, dim, dim + 1))
    C = F @ np.swapaxes(F, 1, 2)
    d = np.sqrt(np.einsum("nii->ni", C))
    scale = 10 ** rng.uniform(-1, 1, size=(n, dim))
    return C / (d[:, :, None] * d[:, None, :]) * (scale[:, :, None] * scale[:, None, :])


def bench_kernels(rng):
    rows = []
    C2_big, C3_big = random_covariances(N_CLOSED, 2, rng), random_covariances(N_CLOSED, 3, rng)
    for name in generated.ACTIVATIONS:
        act = generated.load(name)
        n = N_CLOSED if act.CLOSED_FORM else N_NUMERIC
        C2, C3 = C2_big[:n], C3_big[:n]
        i2 = n / best_of(lambda: act.I2(C2), 3 if act.CLOSED_FORM else 1)
        i3 = n / best_of(lambda: act.I3(C3), 3 if act.CLOSED_FORM else 1)
        rows.append({"activation": name, "closed_form": act.CLOSED_FORM, "n": n, "I2_per_s": i2, "I3_per_s": i3})
        print(f"| {name} | {'closed' if act.CLOSED_FORM else 'numeric'} | {n:.0e} | {i2:.3g} | {i3:.3g} |", flush=True)
    return rows


def bench_integrator(rng):
    rows = []
    erf = generated.load("erf")
    K, D = 4, 1000
    bulk = np.sort(rng.uniform(0.5, 1.5, D - 4))[::-1]
    eigvals = np.concatenate([np.array([4.0, 3.0, 2.0, 1.5]) * D, bulk])
    eigvecs = np.linalg.qr(rng.normal(size=(D, D)))[0]
    W0, V0 = rng.normal(size=(K, D)), rng.normal(size=(K, D))
    times = np.linspace(0, 1000, 11)
    res = {}

    def distinct():
        res["d"] = erf.integrate(eigvals, eigvecs, W0, V0, times=times, rtol=1e-6)
    rows.append({"case": "erf K=4, D=1000 distinct eigenvalues, t<=1000, rtol 1e-6",
                 "seconds": best_of(distinct, 2), "nfev": res["d"].nfev, "method": "auto (RK45)"})
    for D_spiked in (1000, 100000):
        spectrum = spec.Spectrum.spiked(D_spiked, [4.0, 3.0, 2.0, 1.5])
        init = spec.random_init_matrices(spectrum, K, sigma_w=1.0, sigma_v=1.0, seed=0)

        def spiked():
            res["s"] = erf.integrate(spectrum=spectrum, init=init, times=times, rtol=1e-6)
        rows.append({"case": f"erf K=4, spiked equal bulk (M+1 = 5 atoms), D={D_spiked}, t<=1000",
                     "seconds": best_of(spiked, 3), "nfev": res["s"].nfev, "method": "auto (BDF)"})
    # finite-D equations (second-order terms, multi-unit averages by quadrature), K = 2
    spectrum = spec.Spectrum.spiked(400, [2.0, 1.0])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    for rule, finite in (("vanilla", True), ("tied", True)):
        def finite_run():
            res["f"] = erf.integrate(spectrum=spectrum, init=init, times=np.linspace(0, 50, 11),
                                     rule=rule, finite_size=finite)
        rows.append({"case": f"erf K=2 {rule}, finite-D equations, spikes (2, 1)D + bulk, D=400, t<=50",
                     "seconds": best_of(finite_run, 2), "nfev": res["f"].nfev, "method": "auto (BDF)"})
    # fluctuation equations (mean and covariance of the finite-D state), the D = 500 tests' setting
    for name, K, b0 in (("erf", 2, None), ("erf", 3, None), ("linear", 2, None), ("relu", 2, None),
                        ("linear", 2, (0.3, -0.2)), ("relu", 1, (0.3,))):
        eigvals, eigvecs, W0, V0 = spec.spiked_problem(500, K, (3.0, 2.0, 1.5), seed=K)

        def fluctuating():
            res["x"] = generated.load(name).integrate(eigvals, eigvecs, W0, V0, times=np.linspace(0, 50, 11),
                                                      b0=b0, fluctuations=True)
        bias = "" if b0 is None else f" + bias b0={b0}"
        rows.append({"case": f"{name} K={K} vanilla{bias}, fluctuations, spikes (3, 2, 1.5)D + bulk, D=500, t<=50 "
                             "(tests' init)", "seconds": best_of(fluctuating, 1), "nfev": res["x"].nfev,
                     "method": "auto (RK45)"})
    for r in rows:
        print(f"| {r['case']} | {r['seconds']:.3f} | {r['nfev']} | {r['method']} |", flush=True)
    return rows


def bench_simulator():
    rows = []
    for label, kwargs in [("plain numpy loop, 1 seed", dict(seeds=1, reference=True)),
                          ("simulate, 1 seed", dict(seeds=1)),
                          ("simulate, 8 seeds", dict(seeds=8))]:
        sps = steps_per_second(D=1000, K=4, steps=20000, **kwargs)
        seeds = kwargs["seeds"]
        rows.append({"case": label, "steps_per_s": sps, "seed_steps_per_s": sps * seeds})
        print(f"| {label} | {sps:,.0f} | {sps * seeds:,.0f} |", flush=True)
    return rows


def main():
    rng = np.random.default_rng(0)
    print("\n| activation | kernels | covariances | I2 evals/s | I3 evals/s |\n|---|---|---|---|---|")
    kernels = bench_kernels(rng)
    print("\n| integrator case | seconds | RHS evaluations | solver |\n|---|---|---|---|")
    integrator = bench_integrator(rng)
    print("\n| SGD simulator, D=1000, K=4, erf | steps/s | seed-steps/s |\n|---|---|---|")
    simulator = bench_simulator()
    out = Path(__file__).resolve().parent / "results.json"
    out.write_text(json.dumps({"kernels": kernels, "integrator": integrator, "simulator": simulator}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
