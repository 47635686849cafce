"""make bench: speed of the generated kernels, the integrator, the solvers, the SGD simulator and sweeps.

Prints markdown tables (copied into docs/performance.md) and writes bench/results.json.
Timings are the best of a few repeats, on one core (OpenBLAS threads pinned to 1; the threads part runs
fresh processes with the default threads); sweeps run
on a LocalCluster of 1 and of 2 worker processes. `python bench/run.py sweep` runs one part
(kernels, integrator, solver, simulator, fast_kernels, sweep, threads, ...) and updates its entry in results.json. The
solver part (issue 13's cases, StructuredBDF against scipy's RK45 and BDF in one run, scipy's
runs stopped after BUDGET seconds) takes about 15 minutes.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generated  # noqa: E402
from runtime import config, sweep  # noqa: E402
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
                 "seconds": best_of(distinct, 2), "nfev": res["d"].nfev, "method": f"auto ({res['d'].method})"})
    for D_spiked in (1000, 100000):
        spectrum = spec.Spectrum.spiked(D_spiked, [4.0, 3.0, 2.0, 1.5])
        init = spec.random_init_matrices(spectrum, K, sigma_w=1.0, sigma_v=1.0, seed=0)

        def spiked():
            res["s"] = erf.integrate(spectrum=spectrum, init=init, times=times, rtol=1e-6)
        rows.append({"case": f"erf K=4, spiked equal bulk (M+1 = 5 atoms), D={D_spiked}, t<=1000",
                     "seconds": best_of(spiked, 3), "nfev": res["s"].nfev, "method": f"auto ({res['s'].method})"})
    # finite-D equations (second-order terms, multi-unit averages by quadrature), K = 2
    spectrum = spec.Spectrum.spiked(400, [2.0, 1.0])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    for rule, finite in (("vanilla", True), ("tied", True)):
        def finite_run():
            res["f"] = erf.integrate(spectrum=spectrum, init=init, times=np.linspace(0, 50, 11),
                                     rule=rule, finite_size=finite)
        rows.append({"case": f"erf K=2 {rule}, finite-D equations, spikes (2, 1)D + bulk, D=400, t<=50",
                     "seconds": best_of(finite_run, 2), "nfev": res["f"].nfev, "method": f"auto ({res['f'].method})"})
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
                     "method": f"auto ({res['x'].method})"})
    for r in rows:
        print(f"| {r['case']} | {r['seconds']:.3f} | {r['nfev']} | {r['method']} |", flush=True)
    return rows


def stiff_problem(D=1000, K=4, seed=0):
    """Issue 13's stiff case: spikes (4, 3, 2, 1) D over a bulk of distinct eigenvalues uniform in
    [0.2, 1.8], random eigenvectors, W0, V0 = 0.1 N(0, 1)."""
    rng = np.random.default_rng(seed)
    eigvals = np.concatenate([np.array([4.0, 3.0, 2.0, 1.0]) * D, np.sort(rng.uniform(0.2, 1.8, D - 4))[::-1]])
    eigvecs = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return eigvals, eigvecs, 0.1 * rng.normal(size=(K, D)), 0.1 * rng.normal(size=(K, D))


def marchenko_pastur_problem(D=10000, K=4, ratio=0.5, seed=0):
    """D distinct eigenvalues: spikes (4, 3, 2, 1) D and the D - 4 quantiles (i + 1/2)/(D - 4) of the
    Marchenko-Pastur law of aspect ratio `ratio`; weights 0.1 N(0, 1) given in the eigenbasis."""
    a, b = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    x = np.linspace(a, b, 200001)
    cdf = np.concatenate([[0.0], np.cumsum(np.diff(x) * 0.5 * (lambda y: (np.sqrt(np.maximum((b - y) * (y - a), 0)) / y)[1:]
                                                                   + (np.sqrt(np.maximum((b - y) * (y - a), 0)) / y)[:-1])(x))])
    bulk = np.interp((np.arange(D - 4) + 0.5) / (D - 4), cdf / cdf[-1], x)[::-1]
    rng = np.random.default_rng(seed)
    eigvals = np.concatenate([np.array([4.0, 3.0, 2.0, 1.0]) * D, bulk])
    return eigvals, None, 0.1 * rng.normal(size=(K, D)), 0.1 * rng.normal(size=(K, D))


def budgeted(fn, budget):
    """fn() stopped after `budget` seconds (SIGALRM -> KeyboardInterrupt -> integrate's Interrupted):
    (seconds, the result or the partial result, whether it finished)."""
    import signal
    from runtime.progress import Interrupted

    def alarm(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    start = time.perf_counter()
    try:
        result, done = fn(), True
    except Interrupted as stop:
        result, done = stop.result, False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return time.perf_counter() - start, result, done


#: seconds after which a scipy solver's run in bench_solver is stopped (its row says how far it got)
BUDGET = 200.0
#: the stiff runs' output times: 0 and 39 log-spaced times from 0.1 to 1000
LOG_TIMES = np.concatenate([[0.0], np.logspace(-1, 3, 39)])


def bench_solver(rng):
    """runtime.solver.StructuredBDF against scipy's RK45 and BDF on the same right-hand side, on issue
    13's cases, each solver's error (max over the times) against a tight-tolerance reference
    (StructuredBDF at rtol 1e-10), and the physical floor: one right-hand side at each state
    StructuredBDF steps to, summed (its time beyond its nfev right-hand sides is its own: Jacobians,
    factorisations, the steps' Python)."""
    from scipy.integrate import solve_ivp

    from runtime import data, universality
    from runtime.solver import StructuredBDF
    spiked = spec.Spectrum.spiked(1000, [4.0, 3.0, 2.0, 1.5])
    finite = spec.Spectrum.spiked(400, [2.0, 1.0])
    finite_init = spec.random_init_matrices(finite, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    patches = data.load("sklearn", patch=32)
    cases = [
        ("stiff: erf K=4, D=1000, spikes (4,3,2,1)D + distinct bulk U[0.2,1.8], W0,V0=0.1 N(0,1), 40 log times to 1000",
         dict(zip(("eigvals", "eigvecs", "W0", "V0"), stiff_problem())), LOG_TIMES, ("RK45", "BDF")),
        ("32x32 patches (D=1024), erf K=8, init 0.2, t<=1000",
         dict(eigvals=patches.eigvals, eigvecs=None, W0=universality.initial_weights(8, 1024, 0.2, 0)[0],
              V0=universality.initial_weights(8, 1024, 0.2, 0)[1]), LOG_TIMES, ("RK45",)),   # BDF: 16384^2 Jacobian
        ("10^4 distinct eigenvalues (spikes + Marchenko-Pastur 0.5), erf K=4, t<=1000",
         dict(zip(("eigvals", "eigvecs", "W0", "V0"), marchenko_pastur_problem())), LOG_TIMES, ("RK45",)),
        ("spiked model (5 atoms), erf K=4, D=1000, t<=1000",
         dict(spectrum=spiked, init=spec.random_init_matrices(spiked, 4, sigma_w=1.0, sigma_v=1.0, seed=0)),
         np.linspace(0, 1000, 11), ("RK45", "BDF")),
        ("finite-D equations, erf K=2 vanilla, D=400, t<=50",
         dict(spectrum=finite, init=finite_init, finite_size=True), np.linspace(0, 50, 11), ("RK45", "BDF")),
        ("D -> infinity equations, same problem", dict(spectrum=finite, init=finite_init, finite_size=False),
         np.linspace(0, 50, 11), ("RK45", "BDF")),
        ("finite-D equations, erf K=2 tied, D=400, t<=50",
         dict(spectrum=finite, init=finite_init, rule="tied"), np.linspace(0, 50, 11), ("RK45", "BDF")),
    ]
    # fluctuations (mean and covariance, n + n^2 numbers: scipy's BDF would difference every one), the
    # integrator table's D = 500 setting without the spread check
    for name, K in (("linear", 2), ("relu", 2), ("erf", 3)):
        cases.append((f"fluctuations, {name} K={K}, spikes (3, 2, 1.5)D + bulk, D=500, t<=50",
                      dict(zip(("eigvals", "eigvecs", "W0", "V0"), spec.spiked_problem(500, K, (3.0, 2.0, 1.5), seed=K)),
                           fluctuations=True, check_spread=False, activation=name), np.linspace(0, 50, 11), ("RK45",)))
    rows = []
    for case, problem, times, others in cases:
        res = {}
        act = generated.load(problem.pop("activation", "erf"))

        def run(method, rtol=1e-6):
            res[method, rtol] = act.integrate(**problem, times=times, method=method, rtol=rtol, atol=1e-9,
                                              progress=False, keep_atoms=method == "StructuredBDF")
        run("StructuredBDF", 1e-10)
        reference = res["StructuredBDF", 1e-10]
        seconds = {"StructuredBDF": best_of(lambda: run("StructuredBDF"), 3)}
        for method in others:
            seconds[method], res[method, 1e-6], done = budgeted(lambda: run(method) or res[method, 1e-6], BUDGET)
            if not done:
                seconds[method] = f"> {BUDGET:.0f} (t = {res[method, 1e-6].t[-1]:.3g})"
        system, y0 = reference.system, reference.state[0]
        steps = solve_ivp(system, (0.0, times[-1]), y0, method=StructuredBDF, rtol=1e-6, atol=1e-9, vectorized=True)
        # the floor: one right-hand side at each state the solver steps to, each evaluated once (no cache
        # hits; the cost moves along a run: tied finite-D, 0.74 ms a right-hand side before the escape,
        # 1.5 ms during it, where the variances leave runtime.fast_kernels' tables)
        floor = best_of(lambda: [system(0.0, y) for y in steps.y.T[1:]], 1)
        rhs = floor / (steps.t.size - 1)
        row = {"case": case, "floor_seconds": floor, "steps": steps.t.size - 1,
               "rhs_seconds": rhs, "njev": steps.njev, "nlu": steps.nlu}
        for method, sec in seconds.items():
            r = res[method, 1e-6]
            n = min(r.t.size, reference.t.size)
            row[method] = {"seconds": sec, "nfev": r.nfev,
                           "error_vs_reference": float(np.max(np.abs(r.error[:n] - reference.error[:n])))}
        # StructuredBDF's own time: beyond its right-hand sides, each costed at the floor's mean
        row["own_seconds"] = seconds["StructuredBDF"] - row["StructuredBDF"]["nfev"] * rhs
        rows.append(row)
        print(f"| {case} | " + " | ".join(
            (f"{row[m]['seconds']:.3g} s" if not isinstance(row[m]['seconds'], str) else f"{row[m]['seconds']} s")
            + f", {row[m]['nfev']} RHS, {row[m]['error_vs_reference']:.1e}" if m in row else "-"
            for m in ("StructuredBDF", "RK45", "BDF"))
            + f" | {row['floor_seconds']:.3g} s ({row['steps']} steps x {1e3 * rhs:.2f} ms) "
            f"| {row['own_seconds']:.3g} s |", flush=True)
    return rows


def bench_scaling(rng):
    """StructuredBDF on the Marchenko-Pastur case (spikes (4, 3, 2, 1) D + D - 4 distinct bulk
    eigenvalues, K = 4, t <= 1000) at D = 2500 ... 40000: the cost per right-hand side and eigenvalue
    (issue 13: linear in D)."""
    erf = generated.load("erf")
    rows = []
    for D in (2500, 5000, 10000, 20000, 40000):
        eigvals, eigvecs, W0, V0 = marchenko_pastur_problem(D=D)
        res = {}

        def run():
            res["r"] = erf.integrate(eigvals, eigvecs, W0, V0, times=LOG_TIMES, method="StructuredBDF", rtol=1e-6,
                                     atol=1e-9, progress=False)
        seconds = best_of(run, 2)
        nfev = res["r"].nfev
        rows.append({"D": D, "seconds": seconds, "nfev": nfev, "us_per_rhs_per_eigenvalue": 1e6 * seconds / nfev / D})
        print(f"| {D} | {seconds:.3f} | {nfev} | {1e3 * seconds / nfev:.3f} | {1e6 * seconds / nfev / D:.3f} |", flush=True)
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


#: the sweeps timed: 16 points (K x lr x D), theory only and with 4 SGD seeds a point
SWEEP = {"activation": "erf", "init": 0.1, "data": {"spikes": [2.0, 1.0]}, "time": {"t_max": 20.0, "points": 20},
         "sweep": {"K": [1, 2], "lr": [0.25, 0.5, 1.0, 2.0], "data": {"D": [250, 500]}}}


def bench_sweep():
    """Points per minute of a 16-point sweep on LocalClusters of 1 and 2 workers (from
    submission to the last point written, cluster start-up apart), and the scheduler's cost per
    task (10^3 no-op tasks on one worker)."""
    import operator
    from distributed import Client, LocalCluster
    rows = []
    for seeds in (0, 4):
        base, grid = config.parse({**SWEEP, "simulation": {"seeds": seeds}}, sweep=True)
        row = {"case": f"16 points, {'theory only' if seeds == 0 else f'theory + {seeds} SGD seeds'}",
               "tasks": 16 * (seeds + 2)}
        for workers in (1, 2):
            tic = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster:
                row[f"startup_s_{workers}"] = time.perf_counter() - tic
                with tempfile.TemporaryDirectory() as out:
                    summary = sweep.run(base, grid, out, scheduler=cluster.scheduler_address, progress=False,
                                        log=lambda *a: None)
                assert summary["counts"]["done"] == 16, summary
                row[f"points_per_min_{workers}"] = 16 / summary["seconds"] * 60
        row["scaling"] = row["points_per_min_2"] / row["points_per_min_1"]
        rows.append(row)
        print(f"| {row['case']} | {row['tasks']} | {row['points_per_min_1']:.0f} | {row['points_per_min_2']:.0f} | "
              f"{row['scaling']:.2f} |", flush=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.gather(client.map(operator.neg, range(100)))                 # warm up
        n = 1000
        tic = time.perf_counter()
        client.gather(client.map(operator.neg, range(n)))
        overhead = (time.perf_counter() - tic) / n
    print(f"\nscheduling overhead: {overhead * 1e3:.2f} ms per task (10^3 no-op tasks, 1 worker); "
          f"cluster start-up {rows[0]['startup_s_1']:.1f} s (1 worker), {rows[0]['startup_s_2']:.1f} s (2 workers)")
    load = os.getloadavg()[0]
    print(f"load average during the sweeps: {load:.1f} on {os.cpu_count()} cores (other work slows the 2-worker runs)")
    return {"sweeps": rows, "overhead_s_per_task": overhead, "load_average": load, "cores": os.cpu_count()}


def bench_fast_kernels(rng):
    """Numerical pair kernels (tanh, sigmoid): evaluations/s of the module's kernel (the fast Mehler
    path of runtime.fast_kernels where it applies) against runtime.quadrature.expect2 and erf's
    closed form, on 10^5 random covariances (variances log-uniform in [1e-2, 1e2], rho uniform in
    [-0.9, 0.9], and in [-0.999, 0.999], where the fast path hands the few points beyond its
    per-point truncation bound -- tanh's large-variance corner -- to expect2); then
    the tanh / erf run time of a spiked run (D = 500, K = 2, t <= 50), in the D -> infinity limit
    and at finite D, in a fresh process (tables built on first use included) and warm."""
    import subprocess
    from runtime import quadrature
    rows, n = [], 10**5
    v1, v2 = 10 ** rng.uniform(-2, 2, n), 10 ** rng.uniform(-2, 2, n)
    erf = generated.load("erf")
    for rmax in (0.9, 0.999):
        c12 = rng.uniform(-rmax, rmax, n) * np.sqrt(v1 * v2)
        closed = n / best_of(lambda: erf.pair_0_0(v1, c12, v2), 3)
        for name in ("tanh", "sigmoid"):
            act = generated.load(name)
            for kernel in ("pair_0_0", "pair_1_1", "pair_2_0"):
                f = getattr(act, kernel)
                f(v1[:10], c12[:10], v2[:10])                                       # build its tables
                fast = n / best_of(lambda: f(v1, c12, v2), 3)
                o1, o2 = (tuple(int(c) for c in p) for p in kernel.split("_")[1:])
                m = 2000
                slow = m / best_of(lambda: quadrature.expect2(act.DERIVATIVES, o1, o2, v1[:m], c12[:m], v2[:m]), 1)
                rows.append({"activation": name, "kernel": kernel, "rho_max": rmax, "fast_per_s": fast,
                             "expect2_per_s": slow, "erf_closed_per_s": closed})
                print(f"| {name} {kernel} | {rmax} | {fast:.3g} | {slow:.3g} | {closed:.3g} |", flush=True)
    code = ("import sys, time, numpy\nfrom generated import tanh, erf\nfrom runtime.spectrum import spiked_problem\n"
            "args = spiked_problem(500, 2, [3.0, 2.0], seed=0)\nfs = sys.argv[1] == '1'\nout = []\n"
            "for mod in (erf, tanh, erf, tanh):\n    t = time.perf_counter()\n"
            "    mod.integrate(*args, times=numpy.linspace(0, 50, 11), progress=False, finite_size=fs)\n"
            "    out.append(time.perf_counter() - t)\nprint(*out)\n")
    runs = []
    for finite in (False, True):
        out = subprocess.run([sys.executable, "-c", code, str(int(finite))], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        e1, t1, e2, t2 = map(float, out.stdout.split())
        runs.append({"finite_size": finite, "erf_s": e1, "tanh_cold_s": t1, "tanh_warm_s": t2, "erf_warm_s": e2,
                     "ratio_cold": t1 / e1, "ratio_warm": t2 / e2})
        print(f"\nspiked run D=500 K=2 t<=50, finite_size={finite}: erf {e1:.3f} s, tanh {t1:.3f} s (fresh process, "
              f"ratio {t1 / e1:.2f}), warm {t2:.3f} s vs {e2:.3f} s (ratio {t2 / e2:.2f})", flush=True)
    return {"kernels": rows, "spiked": runs}


def bench_threads():
    """StructuredBDF on the 32x32 patches (erf, K = 8, t <= 1000) in a fresh process with OpenBLAS's
    default threads (a user's process: the rest of make bench pins one), with runtime.threads' one
    thread while the solver steps and with that limit turned off: the guard against numpy's and
    scipy's thread pools spinning against each other (docs/performance.md, fifth pass)."""
    import subprocess
    code = ("import contextlib, sys, time, numpy\nimport generated\nfrom runtime import data, threads, universality\n"
            "if sys.argv[1] == 'off':\n    threads.one_blas_thread = contextlib.nullcontext\n"
            "p = data.load('sklearn', patch=32)\nW0, V0 = universality.initial_weights(8, 1024, 0.2, 0)\n"
            "times = numpy.concatenate([[0.0], numpy.logspace(-1, 3, 39)])\nout = []\nfor _ in range(2):\n"
            "    t = time.perf_counter()\n"
            "    generated.load('erf').integrate(eigvals=p.eigvals, eigvecs=None, W0=W0, V0=V0, times=times,\n"
            "                                    method='StructuredBDF', rtol=1e-6, atol=1e-9, progress=False)\n"
            "    out.append(time.perf_counter() - t)\nprint(min(out))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rows = []
    for limit in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", code, limit], capture_output=True, text=True, check=True, env=env,
                             cwd=Path(__file__).resolve().parent.parent)
        rows.append({"one_blas_thread": limit, "seconds": float(out.stdout.split()[-1])})
        print(f"| 32x32 patches, StructuredBDF, default BLAS threads | {limit} | {rows[-1]['seconds']:.3f} |", flush=True)
    return rows


PARTS = {"kernels": ("| activation | kernels | covariances | I2 evals/s | I3 evals/s |\n|---|---|---|---|---|",
                     lambda rng: bench_kernels(rng)),
         "integrator": ("| integrator case | seconds | RHS evaluations | solver |\n|---|---|---|---|",
                        lambda rng: bench_integrator(rng)),
         "solver": ("| case (rtol 1e-6; error: max over t vs StructuredBDF at rtol 1e-10) | StructuredBDF | RK45 | BDF "
                    "| physical floor | StructuredBDF's own time |\n|---|---|---|---|---|---|", bench_solver),
         "scaling": ("| D (Marchenko-Pastur, erf K=4, t<=1000, StructuredBDF) | seconds | RHS | ms per RHS | "
                     "us per RHS and eigenvalue |\n|---|---|---|---|---|", bench_scaling),
         "simulator": ("| SGD simulator, D=1000, K=4, erf | steps/s | seed-steps/s |\n|---|---|---|",
                       lambda rng: bench_simulator()),
         "fast_kernels": ("| numerical kernel | max abs rho | evals/s (fast path) | evals/s (expect2) | "
                          "erf closed form |\n|---|---|---|---|---|", bench_fast_kernels),
         "sweep": ("| sweep (erf, D = 250/500, t <= 20) | tasks | points/min, 1 worker | 2 workers | scaling |\n"
                   "|---|---|---|---|---|", lambda rng: bench_sweep()),
         "activations": ("| activation | kernels | derive (s) | I2 evals/s | I3 evals/s |\n|---|---|---|---|---|",
                         lambda rng: __import__("bench.activations", fromlist=["bench_activations"])
                         .bench_activations(rng, random_covariances)),
         "threads": ("| case (fresh process) | runtime.threads' limit | seconds |\n|---|---|---|",
                     lambda rng: bench_threads()),
         "stochastic": ("| sample paths (K = 2) | seconds | s per path | SGD s per seed | "
                        "path cheaper by | load |\n|---|---|---|---|---|---|",
                        lambda rng: __import__("bench.stochastic", fromlist=["bench_stochastic"]).bench_stochastic())}


def main(argv=None):
    names = (sys.argv[1:] if argv is None else argv) or list(PARTS)
    unknown = set(names) - set(PARTS)
    if unknown:
        sys.exit(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    rng = np.random.default_rng(0)
    out = Path(__file__).resolve().parent / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in PARTS:                       # in a fixed order: the random covariances depend on it
        if name in names:
            header, run = PARTS[name]
            print("\n" + header)
            results[name] = run(rng)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
