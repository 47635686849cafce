"""Integrate the equations of motion on a spectrum of atoms (SPEC sections 3, 5 and 6).

Each direction tau evolves linearly given the order parameters,
d theta_tau/dt = M(rho_hat_tau) theta_tau with M = rho_hat A + B and theta_tau =
(omega_tau, upsilon_tau/sqrt(D)); (A, B) come from the generated `drift_<rule>` of the
activation. Two exact representations, chosen by cost:

* per direction, theta_tau (2K numbers each), when the weights and eigenvectors are given and
  every eigenvalue is distinct;
* per atom, S_j = sum_{tau in j} theta_tau theta_tau^T (2K x 2K), with
  dS_j/dt = M_j S_j + S_j M_j^T, when eigenvalues repeat (a spiked model with an equal bulk is
  M+1 atoms at any D) or the spectrum is given as atoms (D -> infinity).

The order parameters are Q = sum_j rho_hat_j q_j, R = sum_j rho_hat_j r_j, T = sum_j rho_hat_j t_j,
T0 = sum_j t_j, with (q_j, r_j, t_j) the blocks of S_j.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

from runtime import spectrum as spec
from runtime.progress import Progress


class IntegrationError(RuntimeError):
    """The solver failed or the state blew up; `.result` holds what was computed until then."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


@dataclass
class IntegrationResult:
    """Like scipy's OdeResult: t, the error and order parameters at t, status and message."""

    t: np.ndarray
    error: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    T0: np.ndarray
    pca_errors: np.ndarray        # eps_PCA(m) for m = 0..K
    activation: str
    rule: str
    status: int = 0               # 0: reached the last time; -1: failed (see message)
    message: str = "ok"
    nfev: int = 0
    atoms: np.ndarray | None = field(default=None, repr=False)   # S_j or theta_tau at t

    @property
    def success(self):
        return self.status == 0

    def overlaps(self):
        """Per direction, |omega_k tau| / |w_k| at each t (per-direction mode only), shape (n_t, K, J)."""
        if self.atoms is None or self.atoms.ndim != 3:
            raise ValueError("overlaps need integrate(..., keep_atoms=True) in per-direction mode")
        K = self.Q.shape[-1]
        omega = self.atoms[:, :, :K]
        norm = np.sqrt(np.sum(omega**2, axis=1, keepdims=True))
        return np.abs(np.swapaxes(omega / np.where(norm > 0, norm, 1.0), 1, 2))


class _System:
    """The right-hand side in either representation, with evaluation counting."""

    def __init__(self, act, drift, lr, rho_hat, per_direction, K):
        self.act, self.drift, self.lr = act, drift, lr
        self.rho_hat, self.per_direction, self.K = rho_hat, per_direction, K
        self.failed = None

    def order_parameters(self, y):
        K = self.K
        if self.per_direction:
            th = y.reshape(-1, 2 * K)
            w, u = th[:, :K], th[:, K:]
            wr, ur = w * self.rho_hat[:, None], u * self.rho_hat[:, None]
            return w.T @ wr, u.T @ wr, u.T @ ur, u.T @ u
        S = y.reshape(-1, 2 * K, 2 * K)
        Sr = np.tensordot(self.rho_hat, S, axes=1)
        T0 = S[:, K:, K:].sum(axis=0)
        return Sr[:K, :K], Sr[K:, :K], Sr[K:, K:], T0

    def __call__(self, t, y):
        Q, R, T, T0 = self.order_parameters(y)
        A, B = self.drift(Q, R, T, T0, self.lr)
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
            self.failed = self.failed or f"non-finite drift at t = {t:.6g} (blow-up)"
            return np.zeros_like(y)
        K2 = 2 * self.K
        if self.per_direction:
            th = y.reshape(-1, K2)
            return ((th @ A.T) * self.rho_hat[:, None] + th @ B.T).ravel()
        S = y.reshape(-1, K2, K2)
        MS = self.rho_hat[:, None, None] * (A @ S) + B @ S
        return (MS + np.swapaxes(MS, 1, 2)).ravel()


def integrate(act, eigvals=None, eigvecs=None, W0=None, V0=None, lr=1.0, times=(0.0, 1.0, 10.0),
              rule="vanilla", b0=None, *, spectrum=None, init=None, rtol=1e-6, atol=1e-9,
              method="DOP853", progress=False, keep_atoms=False, raise_on_failure=True):
    """Integrate the equations of motion of `act` (a generated module) for `rule`.

    Either eigvals (D,), eigvecs (D, D) and W0, V0 (K, D) (SPEC section 6), or `spectrum`
    (runtime.spectrum.Spectrum) with `init` = (q, r, t), each of shape (J, K, K).
    Returns an IntegrationResult at `times`; on failure raises IntegrationError carrying the
    partial result (or returns it with status -1 when raise_on_failure=False).
    """
    if rule not in act.DRIFTS:
        raise ValueError(f"unknown rule {rule!r} for activation {act.NAME}; known: {', '.join(act.DRIFTS)}")
    if b0 is not None:
        raise NotImplementedError("trained biases: the shifted-Gaussian averages are not derived yet")
    lr = float(lr)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr}")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or np.any(~np.isfinite(times)) or np.any(times < 0) \
            or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, sorted 1-D array of non-negative numbers")

    if spectrum is None:
        if any(a is None for a in (eigvals, eigvecs, W0, V0)):
            raise ValueError("give eigvals, eigvecs, W0 and V0, or spectrum= and init=")
        spectrum, atom_of = spec.Spectrum.from_eigvals(eigvals)
        per_direction = spectrum.J == len(np.asarray(eigvals))
        if per_direction:
            omega, upsilon = spec.projections(W0, V0, eigvecs)
            order = np.argsort(atom_of)
            y0 = np.concatenate([omega, upsilon], axis=0).T[order]     # (J, 2K), atom order
        else:
            q, r, t = spec.atom_matrices(spectrum, atom_of, W0, V0, eigvecs)
            y0 = _stack(q, r, t)
    else:
        if init is None:
            raise ValueError("spectrum= needs init=(q, r, t), the initial per-atom matrices")
        per_direction = False
        y0 = _stack(*init)
        if y0.shape[0] != spectrum.J:
            raise ValueError(f"init has {y0.shape[0]} atoms but the spectrum has {spectrum.J}")
    K = y0.shape[-1] // 2
    if not np.all(np.isfinite(y0)):
        raise ValueError("initial state contains NaN or inf")

    system = _System(act, act.DRIFTS[rule], lr, spectrum.rho_hat, per_direction, K)
    bar = Progress(times[-1], f"integrate {act.NAME}/{rule}", enabled=progress)

    def rhs(t, y):
        bar.update(t)
        return system(t, y)

    def blown(t, y):
        return -1.0 if system.failed else 1.0
    blown.terminal = True

    sol = solve_ivp(rhs, (0.0, times[-1]), y0.ravel(), method=method, t_eval=times,
                    rtol=rtol, atol=atol, events=blown)
    bar.close()
    n = sol.t.size
    ys = sol.y.T
    if system.failed or not np.all(np.isfinite(ys)):
        keep = [i for i in range(n) if np.all(np.isfinite(ys[i]))]
        ys, tt = ys[keep], sol.t[keep]
        status, message = -1, system.failed or "non-finite state (blow-up)"
    else:
        tt = sol.t
        status, message = (0, "ok") if sol.status == 0 and n == times.size else (-1, sol.message)
    ops = [system.order_parameters(y) for y in ys]
    Q, R, T, T0 = (np.array([o[i] for o in ops]).reshape(len(ops), K, K) for i in range(4))
    half_trace = 0.5 * float(np.sum(spectrum.mult * spectrum.rho_hat))
    error = np.array([act.population_error(*o, half_trace) for o in ops])
    atoms = None
    if keep_atoms:
        atoms = ys.reshape(len(ys), -1, 2 * K) if per_direction else ys.reshape(len(ys), -1, 2 * K, 2 * K)
    result = IntegrationResult(tt, error, Q, R, T, T0, spectrum.pca_errors(K), act.NAME, rule,
                               status, message, sol.nfev, atoms)
    if status != 0 and raise_on_failure:
        raise IntegrationError(f"integration of {act.NAME}/{rule} failed at t = "
                               f"{tt[-1] if tt.size else 0:.6g}: {message}", result)
    return result


def _stack(q, r, t):
    """Per-atom S_j = [[q_j, r_j^T], [r_j, t_j]] of shape (J, 2K, 2K)."""
    q, r, t = (np.asarray(a, dtype=float) for a in (q, r, t))
    if q.ndim != 3 or q.shape != r.shape or q.shape != t.shape or q.shape[1] != q.shape[2]:
        raise ValueError(f"init matrices must all have shape (J, K, K); got {q.shape}, {r.shape}, {t.shape}")
    return np.concatenate([np.concatenate([q, np.swapaxes(r, 1, 2)], axis=2),
                           np.concatenate([r, t], axis=2)], axis=1)
