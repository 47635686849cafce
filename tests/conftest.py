"""Shared helpers for the Gaussian-average tests: activations and kernels of the generated
modules, Hypothesis strategies for covariances, and the seeded Monte Carlo estimator; and the
comparison of sample paths with SGD runs (assert_paths_agree)."""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import generated  # noqa: E402

ACTIVATIONS = tuple(generated.ACTIVATIONS)
LITERATURE_DIM = {"J2": 2, "I2": 2, "I21": 2, "I22": 2, "I3": 3, "I4": 4}
_KERNEL = re.compile(r"^(mean|pair)_(\d+)(?:_(\d+))?$")


def load(name):
    return generated.load(name)


def kernel_names(module):
    """The kernel functions (mean_*, pair_*) a generated module defines."""
    return sorted(n for n in vars(module) if _KERNEL.match(n) and callable(getattr(module, n)))


def kernel_orders(name):
    """'pair_2_0' -> ((2,), (0,)); 'mean_11' -> ((1, 1),)."""
    _, *groups = _KERNEL.match(name).groups()
    return tuple(tuple(int(d) for d in grp) for grp in groups if grp is not None)


def all_kernels():
    """(activation, kernel name) for every kernel of every generated module."""
    return [(a, k) for a in ACTIVATIONS for k in kernel_names(load(a))]


def all_literature():
    """(activation, average) for every literature average of every generated module."""
    return [(a, n) for a in ACTIVATIONS for n in load(a).LITERATURE]


# ----------------------------------------------------------------------------------------
# Hypothesis: variances log-uniform on [1e-2, 1e2], correlations up to +-0.999

#: a fixed, derandomized profile for the property tests (deterministic in CI)
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])

variances = st.floats(-2.0, 2.0).map(lambda t: float(10.0**t))
correlations = st.floats(-0.999, 0.999)


@st.composite
def cov2(draw):
    """(c11, c12, c22) of a 2x2 covariance."""
    v1, v2, r = draw(variances), draw(variances), draw(correlations)
    return v1, r * np.sqrt(v1 * v2), v2


@st.composite
def covariance(draw, n):
    """An n x n covariance: the correlation matrix of n random factor rows (unit-normalised,
    so PSD by construction, with off-diagonal correlations clipped to +-0.999 by shrinking
    towards the identity) scaled by log-uniform variances."""
    rows = []
    for _ in range(n):
        row = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n)))
        if np.linalg.norm(row) < 0.1:
            row = row + 0.5 * np.eye(n)[len(rows)]
        rows.append(row / np.linalg.norm(row))
    F = np.array(rows)
    R = F @ F.T
    off = np.max(np.abs(R - np.diag(np.diag(R))))
    if off > 0.999:                          # shrink: still PSD, correlations within 0.999
        lam = 0.999 / off
        R = lam * R + (1 - lam) * np.eye(n)
    np.fill_diagonal(R, 1.0)
    sd = np.sqrt([draw(variances) for _ in range(n)])
    C = R * np.outer(sd, sd)
    return 0.5 * (C + C.T)


def matrix2(c11, c12, c22):
    return np.array([[c11, c12], [c12, c22]], dtype=float)


# ----------------------------------------------------------------------------------------
# Monte Carlo

MC_SAMPLES = 200_000
MC_SEED = 20240611
MC_SIGMAS = 5.0


@lru_cache(maxsize=None)
def standard_normals(dim):
    """A fixed (MC_SAMPLES, dim) array of standard normals (numpy default_rng, fixed seed)."""
    return np.random.default_rng(MC_SEED + dim).standard_normal((MC_SAMPLES, dim))


def gaussian_samples(C):
    """(MC_SAMPLES, n) samples of N(0, C) for a PSD C (symmetric square root, so singular
    covariances are fine)."""
    C = np.asarray(C, dtype=float)
    lam, U = np.linalg.eigh(C)
    root = U * np.sqrt(np.clip(lam, 0.0, None))
    Z = standard_normals(C.shape[0])
    # Z @ root.T, column by column: a BLAS call here is slow when its threads compete for cores
    return sum(Z[:, [j]] * root[:, j] for j in range(C.shape[0]))


def mc_mean(values):
    """Sample mean and its standard error."""
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


def assert_mc(value, values, what=""):
    """|value - sample mean| <= 5 standard errors; a tiny absolute floor only for integrands
    that are exactly constant (zero standard error)."""
    value = float(value)
    mean, se = mc_mean(values)
    tol = MC_SIGMAS * se
    if se == 0.0:
        tol = 1e-12 * max(1.0, abs(mean))
    assert np.isfinite(value), f"{what}: {value}"
    deviation = abs(value - mean) / max(se, 1e-300)
    assert abs(value - mean) <= tol, (
        f"{what}: value {value!r}, Monte Carlo {mean!r} +- {se!r} ({deviation:.1f} SE)")


#: a small spiked problem as a config file's tail (K = 2 by default)
SMALL_CONFIG = "init = 0.3\nseed = 3\n[data]\nD = 100\nspikes = [3.0, 1.5]\n[time]\nt_max = 4\npoints = 6\n" \
               "[simulation]\nseeds = 2\n"


def run_small_config(tmp_path, head):
    """Run the config `head` + SMALL_CONFIG (runtime.run); returns its curves.csv as a DataFrame and
    the arrays the README's config section says it uses (eigvals, W0, V0), built here from that
    description rather than by runtime.experiment."""
    import tomllib

    import pandas as pd

    from runtime import config, run
    cfg, _ = config.parse(tomllib.loads(head + "\n" + SMALL_CONFIG))
    summary = run.run(cfg, tmp_path / "out", progress=False, log=lambda *a: None)
    assert summary["status"] == "done", summary
    eigvals = np.concatenate([np.array([3.0, 1.5]) * 100, np.ones(98)])
    rng = np.random.default_rng(3)
    W0, V0 = 0.3 * rng.standard_normal((2, 100)), 0.3 * rng.standard_normal((2, 100))
    return pd.read_csv(tmp_path / "out" / "curves.csv"), eigvals, W0, V0


def ctrl_c_as_in_a_terminal():
    """preexec_fn for a subprocess the tests interrupt: SIGINT at its default, as in a terminal. A
    process started with SIGINT ignored (which a test runner's worker may pass on) keeps ignoring
    it, and Python then installs no KeyboardInterrupt handler."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_paths_agree(paths, sgd, times, checked=None, below=0.0):
    """Sample paths' errors (paths, n_t) against SGD's runs (seeds, n_t) at the times `checked` (a
    mask; default every t > 0): the mean within 3 combined standard errors of SGD's, and the
    distribution not told apart from SGD's by a two-sample KS test (1 %, Bonferroni over the
    checked times). `below`: a bias of the paths' mean below SGD's allowed on top of the 3 SE, where
    the approximation has a documented one-sided offset (docs/stochastic.md). Returns the smallest
    p-value and the largest gap over its standard error."""
    later = np.flatnonzero(times > 0 if checked is None else checked)
    worst_p, worst_gap = 1.0, 0.0
    for i in later:
        p, e = paths[:, i], sgd[:, i]
        se = np.sqrt(p.var(ddof=1) / p.size + e.var(ddof=1) / e.size)
        difference = p.mean() - e.mean()
        assert -3 * se - below <= difference <= 3 * se, (times[i], p.mean(), e.mean(), se)
        gap = abs(difference)
        pvalue = ks_2samp(p, e).pvalue
        assert pvalue > 0.01 / later.size, (times[i], pvalue)
        worst_p, worst_gap = min(worst_p, pvalue), max(worst_gap, gap / max(se, 1e-300))
    return worst_p, worst_gap


def slow_and_fast(k):
    """Independent copies of u' = -u + v, v' = -k (v - u^2), stacked (u_1, v_1, ...): v relaxes to
    u^2 at rate k, u decays slowly (stiff for large k); any number of copies per call (the contract
    of runtime.solver.BlockBDF and runtime.validity.carry)."""
    def flow(t, y):
        u, v = y.reshape(-1, 2).T
        return np.stack([v - u, -k * (v - u * u)], axis=1).ravel()
    return flow
