"""Issue 15's benchmark: sample paths at finite D, from the stochastic equations
(integrate(..., stochastic=True)) and from SGD stepped per sample in a reduced space
(stochastic="samples"), against SGD runs on the same problem.

`python bench/run.py stochastic`. Problem: spikes (2, 1) x D over a unit bulk, eigenbasis, W0 and
V0 = 0.1 N(0, 1) from seed 0, lr = 1, K = 2. For each case: one call's seconds, its cost per path,
and the SGD simulator's cost per seed (8 seeds, runtime.simulate) on the same problem and times;
the ratio is how many times cheaper a path is than an SGD run. The diffusion paths' cost does not
depend on D; the per-sample paths' grows like D (D steps per unit of time, a few numbers per step);
SGD's grows like D^2 (D steps per unit of time, D per step). Each row records the load average.
"""
import os
import time

import numpy as np

import generated
from runtime.experiments import plateaus
from runtime.simulate import simulate

#: (activation, D, paths, t_max, stochastic): True the diffusion approximation (runtime.stochastic),
#: "samples" SGD stepped per sample in the reduced space (runtime.stochastic_samples)
#: erf and ReLU diffusion paths at D = 500 only to t <= 5: their multi-unit quadratures at every path's
#: state cost 25 s (erf) and 70 s (ReLU) of CPU to t <= 5 at 256 paths (docs/performance.md)
CASES = (("linear", 500, 256, 50.0, True), ("linear", 300, 256, 20.0, True), ("linear", 3000, 256, 20.0, True),
         ("erf", 300, 64, 5.0, True), ("erf", 500, 256, 5.0, True), ("relu", 500, 256, 5.0, True),
         ("linear", 500, 256, 50.0, "samples"), ("erf", 500, 256, 50.0, "samples"),
         ("relu", 500, 256, 50.0, "samples"), ("linear", 3000, 256, 20.0, "samples"))
SGD_SEEDS = 8


def bench_stochastic(rng=None):
    rows = []
    for name, D, paths, t_max, method in CASES:
        eigvals, (W0, V0) = plateaus.problem(plateaus.FULL, D, 0.1)       # the plateaus' saddle start
        act, args, times = generated.load(name), (eigvals, None, W0, V0), np.linspace(0, t_max, 11)
        start = time.perf_counter()
        act.integrate(*args, times=times, stochastic=method, paths=paths, seed=0, progress=False)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        simulate(act, *args, times=times, seeds=SGD_SEEDS, test_samples=0, progress=False)
        per_seed = (time.perf_counter() - start) / SGD_SEEDS
        kind = "per sample" if method == "samples" else "diffusion"
        row = {"case": f"{name}, D = {D}, {paths} paths, t <= {t_max:g}, {kind}", "seconds": seconds,
               "per_path": seconds / paths, "sgd_per_seed": per_seed, "path_cheaper_by": per_seed * paths / seconds,
               "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"| {row['case']} | {seconds:.1f} | {row['per_path']:.3f} | {per_seed:.3f} | "
              f"{row['path_cheaper_by']:.2f}x | {row['load']:.1f} |", flush=True)
    return rows
