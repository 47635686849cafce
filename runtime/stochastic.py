"""Sample paths of SGD at finite D in the reduced coordinates: the diffusion approximation (issue 15).

In one SGD run a spike's direction vector theta_s (and a trained bias b) moves by O(1/D) per step,
with a random part of the same size, so over a time dt it moves by F_D(y) dt, F_D the exact
expected drift of the finite-D equations (runtime.integrate, derive.finite), plus an increment of
covariance Sigma(y) dt, Sigma = N - F F^T / D (the spikes' noise N of spike_noise_<rule>, with a
bias BIAS_NOISE: the same Sigma as runtime.fluctuations'). The diffusion approximation

    dy = F_D(y) dt + Sigma(y)^(1/2) dW

keeps what the linear-noise expansion drops: paths that sit near a saddle leave it at times the
noise decides, and end in the basin it decides. The bulk matrices follow their finite-D equations
along each path (their own noise is O(D^-3/2), left out as in runtime.fluctuations). The cost per
step is two drift evaluations and one noise evaluation for all paths at once, independent of D.

Scheme: Heun's predictor-corrector in the drift with the Gaussian increment of the step added to
both stages. For noise of size eps = D^(-1/2) its weak error is O(h^2 + eps^2 h) (Milstein &
Tretyakov, Stochastic Numerics for Mathematical Physics, 2004, ch. 3, schemes for systems with
small noise): second order in the drift, first in the noise, whose share is 1/D smaller. The
D -> infinity drift F_inf (closed-form kernels) is evaluated at both stages of every step; the
O(1/D) parts, the correction F_D - F_inf and Sigma (numerical averages over several units, ~50x
the cost), at the start of a step once REFRESH steps have passed or a path has moved by CHANGE
of its size since they were last evaluated, and held in between. tests/test_stochastic.py checks
the convergence in h.
"""
from __future__ import annotations

import numpy as np

#: the default step: the fastest rates of the equations are a few per unit of time (lr ~ 1)
STEP = 0.02
#: the finite-D correction F_D - F_inf and Sigma (both O(1/D)) are evaluated again after REFRESH
#: steps, or sooner once a path's state has moved by CHANGE of its size: Sigma grows with the
#: weights, and held for 5 steps regardless it made the spread 10 % too small while the weights
#: grow (the saddle case of tests/test_stochastic.py at t = 1: 0.063 against 0.070 evaluated at
#: every step; 0.069 with CHANGE = 0.01, at 45 % of the evaluations)
REFRESH = 5
CHANGE = 0.01
#: negative eigenvalues of Sigma below this fraction of its largest are rounding (set to 0)
ROUNDING = 1e-9


def noise_root(N, drift, idx, D):
    """Sigma^(1/2) for each path: Sigma = N - F_idx F_idx^T / D, N (P, s, s), drift (P, n).
    Returns (P, s, s) with L L^T = Sigma, or raises ValueError if Sigma is not a covariance."""
    F = drift[:, idx]
    S = N - F[:, :, None] * F[:, None, :] / D
    S = 0.5 * (S + np.swapaxes(S, 1, 2))
    lam, vec = np.linalg.eigh(S)
    scale = np.maximum(lam[:, -1:], 0.0)
    if np.any(lam < -ROUNDING * scale - 1e-300):
        worst = float(np.min(lam / np.maximum(scale, 1e-300)))
        raise ValueError(f"the spikes' noise covariance is not positive semi-definite (smallest eigenvalue "
                         f"{worst:.3g} of the largest): the diffusion approximation does not hold here")
    return vec * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]


def sample_paths(finite, limit, noises, y0, times, paths, seed, step, bar, error_of, diverged):
    """Integrate `paths` sample paths of dy = F_D dt + Sigma^(1/2) dW from y0 (all paths start at
    the same weights), recording them at `times`. finite, limit: the finite-D and the D -> infinity
    systems of runtime.integrate (F_D = F_inf + (F_D - F_inf), the correction and Sigma evaluated
    again after REFRESH steps or a move by CHANGE); noises: what finite.step_noise takes.
    error_of: states (m, n) -> errors (m,); a path whose error passes `diverged` stops the run,
    keeping what it recorded. Returns
    (t, states (n_t, paths, n), status, message, evaluations) like runtime.integrate._solve."""
    rng = np.random.default_rng(seed)
    Y = np.repeat(np.asarray(y0, float)[None], paths, axis=0)
    out_t, out_y = [], []
    t, nfev, status, message, steps, anchor = 0.0, 0, 0, "ok", 0, None
    try:
        for target in times:
            while t < target:
                h = target - t if target - t < step * (1 + 1e-9) else step
                F0 = limit(t, Y.T).T
                if steps % REFRESH == 0 or _moved(Y, anchor, CHANGE):
                    anchor = Y.copy()
                    drift = finite(t, Y.T).T
                    correction = drift - F0
                    idx, N = finite.step_noise(Y, noises)
                    root = noise_root(N, drift, idx, finite.D)
                    nfev += 1
                dW = np.sqrt(h) * np.einsum("pij,pj->pi", root, rng.standard_normal((paths, idx.size)))
                F0 = F0 + correction
                predicted = Y + h * F0
                predicted[:, idx] += dW
                Y = Y + 0.5 * h * (F0 + limit(t + h, predicted.T).T + correction)
                Y[:, idx] += dW
                t = target if h == target - t else t + h
                steps += 1
                bar.update(t - bar.n)
                if finite.failed or limit.failed or not np.all(np.isfinite(Y)):
                    status = -1
                    message = finite.failed or limit.failed or f"non-finite state at t = {t:.6g} (blow-up)"
                    break
            if status:
                break
            errors = error_of(Y)
            if not np.all(errors <= diverged):
                status, message = -1, (f"diverged at t = {t:.6g}: {int(np.sum(~(errors <= diverged)))} of {paths} "
                                       f"paths passed the error {diverged:.4g}")
                break
            out_t.append(float(target))
            out_y.append(Y.copy())
    except KeyboardInterrupt:
        status, message = -2, f"interrupted (Ctrl-C) at t = {t:.6g}"
    return np.array(out_t), np.array(out_y).reshape(len(out_t), paths, Y.shape[1]), status, message, nfev


def _moved(Y, anchor, change):
    """Whether any path's state moved by more than `change` of its size since `anchor`."""
    if anchor is None:
        return True
    return bool(np.any(np.linalg.norm(Y - anchor, axis=1) > change * np.linalg.norm(anchor, axis=1)))


def escape_times(t, error_paths, level):
    """The first time each path's error falls below `level` (paths, n_t) -> (paths,), linearly
    interpolated between the recorded times; nan for a path that never does (within the run)."""
    error_paths = np.asarray(error_paths, float)
    below = error_paths <= level
    first = np.argmax(below, axis=1)
    out = np.full(error_paths.shape[0], np.nan)
    hit = below.any(axis=1)
    for p in np.flatnonzero(hit):
        k = first[p]
        if k == 0:
            out[p] = t[0]
            continue
        e0, e1 = error_paths[p, k - 1], error_paths[p, k]
        out[p] = t[k - 1] + (t[k] - t[k - 1]) * (e0 - level) / (e0 - e1)
    return out


def basins(omega, rho_hat):
    """The basin each path ends in, from its spikes' encoder components omega (paths, J, K) at the
    last time: for each hidden unit k the spike s carrying the largest share rho_hat_s omega_sk^2 of
    its overlap with the spikes, with the sign of omega_sk, as a label "(+1, -2)" (unit 1 on spike 1
    with a positive sign, unit 2 on spike 2 with a negative one); spikes numbered from 1 in
    decreasing order of eigenvalue."""
    s = np.argmax(rho_hat[None, :, None] * omega ** 2, axis=1)                 # (paths, K)
    sign = np.sign(np.take_along_axis(omega, s[:, None, :], axis=1)[:, 0]).astype(int)
    return np.array(["(" + ", ".join(f"{int(v):+d}" for v in row) + ")" for row in sign * (s + 1)])


def sign_patterns(labels):
    """The sign pattern of each basin label of basins(): "(+1, -2)" -> "+-" (the sign of each unit's
    overlap with the spike it ends on, whichever spike that is)."""
    return np.array(["".join(part.strip()[0] for part in str(label).strip("()").split(",")) for label in labels])
