"""One experiment point from a full config (runtime.config): the problem, the theory, SGD
seeds, and the curves that combine them.

`ae-dynamics run` calls `theory` and `sgd` (all seeds at once) and `combine`; a sweep submits
`theory` and one `sgd` per seed as separate Dask tasks and `combine`s them per point. The tasks
never raise: a failure (IntegrationError, ValueError, a blow-up) comes back as status "failed"
with its message, and warnings are recorded, so that one bad point cannot stop a sweep.

Everything runs in the eigenbasis of the input covariance (eigvecs = I): every rule is
equivariant under rotations (runtime.simulate) and the initial weights' law is isotropic, so
this is the experiment in any basis, without D x D work. The initial weights are
`rng = numpy.random.default_rng(seed)`, `W0 = init * rng.standard_normal((K, D))`, then
`V0 = init * rng.standard_normal((K, D))`; SGD seed s is `simulate(..., seeds=[s])`.
"""
from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass

import numpy as np

import generated
from runtime import data
from runtime.integrate import IntegrationError
from runtime.progress import Interrupted
from runtime.simulate import simulate
from runtime.spectrum import Spectrum

#: the median absolute deviation times this is the standard deviation of a normal sample
ROBUST_SD = 1.482602218505602

@dataclass(frozen=True)
class Problem:
    """The arrays of one point: eigvals (D,), W0, V0 (K, D), b0 (K,) or None, c0 (D,) or None, samples
    (N, D) in the eigenbasis (a data set) or None (Gaussian inputs), times (n,), pca_errors (K + 1,)."""
    eigvals: np.ndarray
    W0: np.ndarray
    V0: np.ndarray
    b0: np.ndarray | None
    c0: np.ndarray | None
    samples: np.ndarray | None
    times: np.ndarray
    pca_errors: np.ndarray


def problem(cfg):
    """The Problem of a full config."""
    d = cfg["data"]
    if d["dataset"] is None:
        eigvals = np.concatenate([np.asarray(d["spikes"]) * d["D"], np.full(d["D"] - len(d["spikes"]), d["bulk"])])
        samples = None
    else:
        eigvals, samples = dataset(d["dataset"], d["path"], d["patch"] or 32, d["samples"], cfg["seed"])
    D, K = eigvals.size, cfg["K"]
    rng = np.random.default_rng(cfg["seed"])
    W0 = cfg["init"] * rng.standard_normal((K, D))
    V0 = cfg["init"] * rng.standard_normal((K, D))
    b0 = None if cfg["b0"] is None else np.asarray(cfg["b0"], float)
    c0 = None if cfg["c0"] is None else np.full(D, float(cfg["c0"]))
    times = time_grid(cfg["time"]["t_max"], cfg["time"]["points"], D)
    return Problem(eigvals, W0, V0, b0, c0, samples, times, Spectrum.from_eigvals(eigvals)[0].pca_errors(K))


@functools.lru_cache(maxsize=2)
def dataset(kind, path, patch, samples, seed):
    """(eigvals, training samples in the eigenbasis) of runtime.data.load, kept per process:
    the tasks of a sweep on one worker load and rotate a data set once."""
    ds = data.load(kind, path, patch=patch, max_samples=samples, seed=seed)
    return ds.eigvals, ds.samples @ ds.eigvecs


def _rule_params(cfg):
    """The rule's parameters of a config: its weight decay."""
    return {"kappa": cfg["kappa"]} if cfg["kappa"] else None


def time_grid(t_max, points, D):
    """t = 0 and `points` log-spaced times from min(0.1, t_max / 100) to t_max, rounded to whole
    SGD steps (t D an integer; times that round together are kept once)."""
    t = np.geomspace(min(0.1, t_max / 100), t_max, points)
    steps = np.unique(np.rint(t * D))
    return np.concatenate([[0.0], steps[steps > 0] / D])


def theory(cfg, progress=False):
    """The equations of motion of cfg["theory"]["equations"] at the problem's times: a dict with
    t (the problem's times), error and error_spread (None unless fluctuations or stochastic: the
    predicted seed spread, or the sample paths' mean and spread; as far as the
    integration got), pca_errors, status ("ok" | "failed" | "interrupted": Ctrl-C), message, warnings,
    seconds."""
    equations = cfg["theory"]["equations"]

    def work(prob):
        act = generated.load(cfg["activation"])
        try:
            res = act.integrate(prob.eigvals, np.eye(prob.eigvals.size), prob.W0, prob.V0, lr=cfg["lr"],
                                times=prob.times, rule=cfg["rule"], b0=prob.b0, c0=prob.c0,
                                rule_params=_rule_params(cfg), progress=progress,
                                finite_size=equations != "limit", fluctuations=equations == "fluctuations",
                                stochastic="samples" if equations == "samples" else equations == "stochastic",
                                paths=cfg["theory"]["paths"], seed=cfg["seed"])
        except (IntegrationError, Interrupted) as exc:                  # keep what was computed
            res = exc.result
            status = "interrupted" if isinstance(exc, Interrupted) else "failed"
            return dict(error=res.error, error_spread=res.error_spread, status=status, message=str(exc))
        return dict(error=res.error, error_spread=res.error_spread, status="ok", message=res.message)

    return _recorded(cfg, work, error=np.empty(0), error_spread=None)


def sgd(cfg, seeds, progress=False):
    """Online SGD for the given seeds at the problem's times: a dict with t, seeds, error
    (len(seeds), n) (the population error; with a data set, the error on its training rows),
    pca_errors, status ("ok" | "failed": a seed blew up | "interrupted": Ctrl-C), message, warnings,
    seconds."""
    seeds = [int(s) for s in seeds]

    def work(prob):
        real = prob.samples is not None
        try:
            res = simulate(cfg["activation"], prob.eigvals, None, prob.W0, prob.V0, lr=cfg["lr"], times=prob.times,
                           rule=cfg["rule"], b0=prob.b0, c0=prob.c0, rule_params=_rule_params(cfg), seeds=seeds,
                           test_samples=0, progress=progress,
                           samples=prob.samples, test_set=prob.samples if real else None)
        except Interrupted as exc:                                       # keep the records so far
            res = exc.result
        status = {0: "ok", -2: "interrupted"}.get(res.status, "failed")
        return dict(error=res.test_error if real else res.error, status=status, message=res.message)

    return _recorded(cfg, work, seeds=seeds, error=np.empty((len(seeds), 0)))


def _recorded(cfg, work, **empty):
    """Run work(problem) with its warnings recorded and any exception turned into status
    "failed"; adds t, pca_errors, warnings, seconds (`empty`: the fields when nothing ran)."""
    tic = time.perf_counter()
    out = dict(empty, t=np.empty(0), pca_errors=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prob = problem(cfg)
            out.update(t=prob.times, pca_errors=prob.pca_errors)
            out.update(work(prob))
        except Exception as exc:                           # recorded: a sweep goes on
            out.update(status="failed", message=f"{type(exc).__name__}: {exc}")
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    out["seconds"] = time.perf_counter() - tic
    return out


def combine(cfg, theory_part, sgd_parts):
    """One point's result from its theory and SGD parts: curves over t (theory, theory_spread,
    sgd_mean, sgd_sd (ddof = 1, NaN below 2 seeds), sgd_robust_sd (ROBUST_SD x the median
    absolute deviation: the seeds' spread without a few runs that escape a plateau late, which
    can dominate sgd_sd; docs/fluctuations.md), sgd_seeds: how many seeds are finite,
    pca_error_K), status "done", "failed" or "interrupted" with the parts' messages, warnings, seconds,
    largest_gap (max over t of |sgd_mean - theory|, where both exist)."""
    parts = [theory_part, *sgd_parts]
    t = max((p["t"] for p in parts), key=len)
    n = t.size
    pca = next((p["pca_errors"] for p in parts if p["pca_errors"] is not None), np.full(cfg["K"] + 1, np.nan))
    E = np.concatenate([_pad(p["error"], n, len(p["seeds"])) for p in sgd_parts]) if sgd_parts else np.empty((0, n))
    count = np.sum(np.isfinite(E), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN columns give NaN, as they should
        mean = np.nanmean(E, axis=0) if sgd_parts else np.full(n, np.nan)
        sd = np.where(count > 1, np.nanstd(E, axis=0, ddof=1), np.nan) if sgd_parts else np.full(n, np.nan)
        robust = (np.where(count > 1, ROBUST_SD * np.nanmedian(np.abs(E - np.nanmedian(E, axis=0)), axis=0), np.nan)
                  if sgd_parts else np.full(n, np.nan))
    spread = theory_part["error_spread"]
    curves = {"t": t, "theory": _pad(theory_part["error"], n), "theory_spread":
              np.full(n, np.nan) if spread is None else _pad(spread, n),
              "sgd_mean": mean, "sgd_sd": sd, "sgd_robust_sd": robust, "sgd_seeds": count, "pca_error_K": np.full(n, pca[-1])}
    errors = [f"theory: {theory_part['message']}"] if theory_part["status"] != "ok" else []
    errors += [f"SGD seed{'s' if len(p['seeds']) > 1 else ''} {', '.join(map(str, p['seeds']))}: {p['message']}"
               for p in sgd_parts if p["status"] != "ok"]
    gap = np.abs(curves["sgd_mean"] - curves["theory"])
    largest = None
    if np.any(np.isfinite(gap)):
        i = int(np.nanargmax(gap))
        largest = {"gap": float(gap[i]), "t": float(t[i]), "sgd_sd": float(sd[i])}
    status = "interrupted" if any(p["status"] == "interrupted" for p in parts) else "failed" if errors else "done"
    return {"config": cfg, "status": status, "errors": errors,
            "warnings": sorted({w for p in parts for w in p["warnings"]}), "curves": curves,
            "pca_errors": pca, "largest_gap": largest,
            "seconds": {"theory": theory_part["seconds"], "sgd": [p["seconds"] for p in sgd_parts]}}


def _pad(a, n, rows=None):
    """a (m,) or (rows, m) with m <= n, padded with NaN to length n along its last axis."""
    a = np.asarray(a, float)
    if rows is not None:
        a = a.reshape(rows, -1)
    out = np.full(a.shape[:-1] + (n,), np.nan)
    out[..., :a.shape[-1]] = a
    return out
