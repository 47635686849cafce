"""Issue 16's benchmark rows: per activation, the time to derive it and its I2 / I3 throughput.

`python bench/run.py activations` (a part of bench/run.py). Derive time: `derive.build(name)`,
the activation derived and its module generated and imported in memory, after the rules'
equations (the same for every activation) were derived once in this process (their time is a
row of its own). Throughput: evaluations per second of the generated module's I2 and I3 on
N_COVARIANCES random covariances in one vectorised call (variances log-uniform in [1e-2, 1e2],
bench/run.py's random_covariances), after one warm-up call (which builds a numerical kernel's
tables), best of REPEAT; closed form or numerical (NUMERIC_KERNELS, runtime/averages.py). Each
row records the machine's load average (1 minute) when it was measured.
"""
import os
import time

import generated

N_COVARIANCES = 10**4
REPEAT = 3


def _seconds(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_activations(rng, random_covariances):
    """One row per activation of generated/ (and one for the shared rules): kernels closed or
    numerical, derive seconds, I2 and I3 evaluations per second; printed as markdown rows.
    random_covariances(n, dim, rng): bench/run.py's."""
    import derive
    from derive import assembly

    rules_seconds = _seconds(assembly.source)
    print(f"| (rules, shared) | - | {rules_seconds:.1f} | - | - |", flush=True)
    rows = [{"activation": "(rules, shared)", "derive_seconds": rules_seconds, "load_average": os.getloadavg()[0]}]
    C2, C3 = random_covariances(N_COVARIANCES, 2, rng), random_covariances(N_COVARIANCES, 3, rng)
    for name in generated.ACTIVATIONS:
        seconds = _seconds(lambda: derive.build(name))
        act = generated.load(name)
        act.I2(C2[:10]), act.I3(C3[:10])                # warm-up: a numerical kernel builds its tables
        i2 = N_COVARIANCES / _seconds(lambda: act.I2(C2), REPEAT)
        i3 = N_COVARIANCES / _seconds(lambda: act.I3(C3), REPEAT)
        kind = "closed" if act.CLOSED_FORM else f"numerical ({len(act.NUMERIC_KERNELS)} kernels)"
        rows.append({"activation": name, "closed_form": act.CLOSED_FORM, "numeric_kernels": list(act.NUMERIC_KERNELS),
                     "derive_seconds": seconds, "n": N_COVARIANCES, "I2_per_s": i2, "I3_per_s": i3,
                     "load_average": os.getloadavg()[0]})
        print(f"| {name} | {kind} | {seconds:.1f} | {i2:.3g} | {i3:.3g} |", flush=True)
    return rows
