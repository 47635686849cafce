"""Integrate the equations of motion on a spectrum of atoms (SPEC sections 3, 5 and 6).

Each direction tau evolves linearly given the order parameters,
d theta_tau/dt = M(rho_hat_tau) theta_tau with M = rho_hat A + B and theta_tau =
(omega_tau, upsilon_tau/sqrt(D)); (A, B) come from the generated `drift_<rule>` of the
activation. An atom j of multiplicity m_j is kept in the cheapest exact form:

* m_j < 2K (spikes): its m_j direction vectors theta_tau (2K numbers each);
* m_j >= 2K (a bulk): S_j = sum_{tau in j} theta_tau theta_tau^T (2K x 2K), with
  dS_j/dt = M_j S_j + S_j M_j^T.

A matrix for an atom of multiplicity below 2K would be wrong, not just wasteful: rounding
errors give it rank it cannot have, and where M_j has several growing modes (early on, every
unit can learn a spike) the phantom rank grows as if the spike were degenerate. So a spiked
model with an equal bulk costs M vectors and one matrix at any D, and D distinct eigenvalues
cost D vectors. The order parameters are Q = sum rho_hat q, R = sum rho_hat r,
T = sum rho_hat t, T0 = sum t over vectors and matrices alike.

At finite D (finite_size=True, and always for tied weights) (A, B) is the exact expected drift
and each matrix gains the second-order terms N_j (derive.finite); with V tied to W, theta_tau =
omega_tau (K numbers). A trained bias appends b (K numbers) to the state (_BiasSystem); at
finite D its N_j average over the shifted fields (BIAS_NOISE of the activation).
"""
from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import BDF, DOP853, LSODA, RK23, RK45, Radau

from runtime import check, fast_kernels
from runtime import progress as _progress
from runtime import quadrature
from runtime import schedules as _schedules
from runtime import solver as _solver
from runtime import spectrum as spec
from runtime import stochastic as _stochastic
from runtime import stochastic_samples as _samples
from runtime import threads as _threads
from runtime import validity
from runtime.fluctuations import FluctuationSystem
from runtime.progress import DIVERGED, Interrupted, divergence_limit


#: method="auto" integrates with StructuredBDF up to this K; beyond it, with BDF up to AUTO_IMPLICIT_SIZE
#: numbers and RK45 above: StructuredBDF's Jacobian (P + 1 ~ 2 K^2 evaluations of the drift) and
#: factorisations (O(Jv F^3 + P F^3)) outweigh the ~6x fewer right-hand sides when the run is not stiff.
#: Measured (erf, t <= 1000, init 0.2, image patches): K = 8, D = 1024: 0.30 s against RK45's 0.54 s;
#: K = 12, D = 256: 0.41 s against 0.43 s; K = 16, D = 1024: 1.58 s against 1.06 s
AUTO_STRUCTURED_MAX_K = 8
AUTO_IMPLICIT_SIZE = 1000
#: atol=None: the absolute tolerance is ATOL times the initial weights' scale (at most 1), and at
#: least ATOL_FLOOR (runtime.integrate.default_atol)
ATOL, ATOL_FLOOR = 1e-9, 1e-15
#: solver steps between two checks for a divergence (runtime.progress.divergence_limit)
CHECK_EVERY = 8
#: a D -> infinity run warns when the finite-D terms at its D change the drift by more than this
FINITE_SIZE_WARNING = 0.05


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
    state: np.ndarray | None = field(default=None, repr=False)   # raw states at t (keep_atoms=True)
    system: object = field(default=None, repr=False)
    b: np.ndarray | None = None   # encoder biases (n, K) when trained (b0 given), else None
    error_spread: np.ndarray | None = None   # predicted seed-to-seed std of error (fluctuations=True)
    finite_size_effect: float = float("nan")  # |F_D - F_inf| / |F_inf| on the run's states (D -> infinity runs)
    output_bias: np.ndarray | None = None    # |c|^2/D (n,) of a trained output bias (c0 given), else None
    lr: object = None             # the learning rate: a float, or its runtime.schedules schedule
    spread_check: object = None   # runtime.validity.SpreadCheck of error_spread (fluctuations=True)
    error_paths: np.ndarray | None = None    # (paths, n) each sample path's error (stochastic=True)
    basins: np.ndarray | None = None         # (paths,) the spike each unit ends on (stochastic=True)
    method: str | None = None     # the ODE solver that ran (what method="auto" picked); None for sample paths

    @property
    def success(self):
        return self.status == 0

    def directions(self):
        """theta_tau = (omega_tau, upsilon_tau/sqrt(D)) of the small atoms (spikes) at each t:
        shape (n_t, n_directions, 2K), in decreasing order of eigenvalue ((n_t, paths, ...) with
        stochastic=True)."""
        return self._parts(0)

    def matrices(self):
        """S_j of the large atoms (bulks) at each t, shape (n_t, n_atoms, 2K, 2K) ((n_t, paths, ...)
        with stochastic=True)."""
        return self._parts(1)

    def _parts(self, which):
        if self.state is None:
            raise ValueError("directions and matrices need integrate(..., keep_atoms=True)")
        part = self.system.parts(self.state.reshape(-1, self.state.shape[-1]))[which]
        return part.reshape(self.state.shape[:-1] + part.shape[1:])

    def path_order_parameters(self):
        """(Q, R, T, T0) of every sample path, each (n_t, paths, K, K) (stochastic=True, keep_atoms=True)."""
        if self.state is None or self.state.ndim != 3:
            raise ValueError("order parameters per path need integrate(..., stochastic=True, keep_atoms=True)")
        K, shape = self.Q.shape[-1], self.state.shape[:2]
        every = self.system.order_parameters(self.state.reshape(-1, self.state.shape[-1]))
        return tuple(M.reshape(shape + M.shape[1:])[..., -K:, -K:] for M in every)

    def _paths(self):
        if self.error_paths is None:
            raise ValueError("sample paths need integrate(..., stochastic=True)")
        return self.error_paths

    def quantiles(self, q):
        """Quantiles q (a number or a sequence in [0, 1]) of the error over the sample paths at each t."""
        return np.quantile(self._paths(), q, axis=0)

    def escape_times(self, level):
        """Each path's first time with the error at or below `level` (linear between recorded
        times; nan if never): the time a path leaves a plateau above `level`."""
        return _stochastic.escape_times(self.t, self._paths(), level)


class _System:
    """The right-hand side on the mixed state (vectors of small atoms, matrices of large ones).

    D -> infinity: (A, B) = drift(Q, R, T, T0, lr). Finite D (`finite` = (drift, noise) of
    derive.finite): (A, B) = drift(Q, R, T, T0, WW, lr, D) is the exact expected drift, and each
    matrix gains the second-order terms N_j = noise(..., S, rho_hat_j, m_j rho_j). A spike keeps
    its direction vector: in one run its matrix has rank one, and the average of its
    fluctuations (the spike's share of N_j: O(1/D) for the untied rules, runtime.fluctuations)
    is not a state of the equations. For tied weights that share is not small: the runs end in
    different sign patterns, which no mean state describes (docs/tied.md).
    With V tied to W the state is omega alone (F = K), else theta = (omega, upsilon/sqrt(D))."""

    def __init__(self, drift, lr, rho_vec, rho_mat, K, *, noise=None, m_rho=None, D=None, tied=False):
        self.drift, self.K = drift, K
        self.schedule, self.lr = _learning_rate(lr)
        self.noise, self.m_rho, self.D, self.tied = noise, m_rho, D, tied
        self.F = K if tied else 2 * K
        self.extra = 0                # numbers after the atoms in the state (none)
        self.rho_vec, self.rho_mat = rho_vec, rho_mat
        self.split = rho_vec.size * self.F
        self.failed = None

    def parts(self, Y):
        """States Y of shape (m, N) -> direction vectors (m, Jv, F) and matrices (m, Jm, F, F)."""
        F, m = self.F, Y.shape[0]
        return Y[:, :self.split].reshape(m, -1, F), Y[:, self.split:].reshape(m, -1, F, F)

    def _globals(self, Y):
        """(Q, R, T, T0, WW), each (m, K, K); R, T, T0 are None for tied weights."""
        K = self.K
        th, S = self.parts(Y)
        thT = th.transpose(0, 2, 1)
        G = (thT * self.rho_vec) @ th + np.einsum("j,mjab->mab", self.rho_mat, S)
        total = thT @ th + S.sum(axis=1)                  # sum over every direction of theta theta^T
        WW = None if self.D is None else total[:, :K, :K] / self.D
        if self.tied:
            return G, None, None, None, WW
        T0 = total[:, K:, K:]
        return G[:, :K, :K], G[:, K:, :K], G[:, K:, K:], T0, WW

    def step_noise(self, y, spike_noise, *bias):
        """D E[d y_i d y_i'] per unit of time for the numbers of the state y with noise of their own
        (the spikes' direction vectors, the first `split`): (their indices, the (split, split) matrix),
        or for states y of shape (m, N) the (m, split, split) matrices.
        `bias`: the encoder bias, for the shifted spike_noise_<rule>_bias."""
        Y = np.atleast_2d(y)
        if not self.split:
            return np.arange(0), np.zeros((0, 0) if y.ndim == 1 else (Y.shape[0], 0, 0))
        rho = self.rho_vec
        N = spike_noise(*self._globals(Y), self.lr, self.D, self.parts(Y)[0], rho, np.diag(rho * self.D), *bias)
        N = N.transpose(0, 1, 3, 2, 4).reshape(Y.shape[0], self.split, self.split)
        return np.arange(self.split), N[0] if y.ndim == 1 else N

    def order_parameters(self, Y):
        """(Q, R, T, T0), each (m, K, K); with V = W, nu = lambda/sqrt(D) gives R = Q/sqrt(D),
        T = Q/D and T0 = w.w/D."""
        Q, R, T, T0, WW = self._globals(Y)
        if self.tied:
            return Q, Q / np.sqrt(self.D), Q / self.D, WW
        return Q, R, T, T0

    def error(self, act, Y, half_trace):
        Q, R, T, T0, WW = self._globals(Y)
        if self.tied:
            return act.population_error_tied(Q, WW, half_trace, self.D)
        return act.population_error(Q, R, T, T0, half_trace)

    def frozen(self, Y, order=None):
        """The field at states Y (m, N), affine in the state given the order parameters (by
        default Y's own, _globals): (A, B, N) with d theta_tau/dt = (rho_hat_tau A + B) theta_tau
        and dS_j/dt = M_j S_j + S_j M_j^T + N_j (N = 0.0 in the D -> infinity limit, else
        (m, Jm, F, F)); runtime.solver differentiates it in the order parameters."""
        order = self._globals(Y) if order is None else order
        if self.noise is None:
            return (*self.drift(*order[:4], self.lr), 0.0)
        A, B = self.drift(*order, self.lr, self.D)
        return A, B, self.noise(*order, self.lr, self.D, self.parts(Y)[1], self.rho_mat, self.m_rho)

    def at(self, t):
        """With a schedule, set lr to eta(t): frozen() and step_noise() use the lr of the latest call."""
        if self.schedule is not None:
            self.lr = self.schedule.rate(t)

    def __call__(self, t, y):
        """The right-hand side; y of shape (N,) or, vectorised over columns, (N, m)."""
        self.at(t)
        Y = y[None] if y.ndim == 1 else y.T
        th, S = self.parts(Y)
        A, B, N = self.frozen(Y)
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B)) and np.all(np.isfinite(N))):
            self.failed = self.failed or f"non-finite drift at t = {t:.6g} (blow-up)"
            return np.zeros_like(y)
        out = self.apply(A, B, N, th, S)
        return out[0] if y.ndim == 1 else out.T

    def apply(self, A, B, N, th, S):
        """The field (A, B, N) of m order parameters on the vectors th (m or 1, Jv, F) and matrices
        S (m or 1, Jm, F, F): d theta_tau/dt = (rho_hat_tau A + B) theta_tau, then the matrices'
        M_j S_j + (M_j S_j)^T + N_j (apply_matrices), flattened as the state: (m, n)."""
        m, F = A.shape[0], self.F
        both = th @ np.concatenate([np.swapaxes(A, 1, 2), np.swapaxes(B, 1, 2)], axis=2)      # (m, Jv, 2F)
        d_th = both[..., :F] * self.rho_vec[:, None] + both[..., F:]
        return np.concatenate([d_th.reshape(m, -1), self.apply_matrices(A, B, N, S).reshape(m, -1)], axis=1)

    def apply_matrices(self, A, B, N, S):
        """M_j S_j + (M_j S_j)^T + N_j, M_j = rho_hat_j A + B: (m, Jm, F, F)."""
        MS = self.rho_mat[:, None, None] * (A[:, None] @ S) + B[:, None] @ S
        return MS + np.swapaxes(MS, -1, -2) + N


class _BiasSystem:
    """_System with a trained encoder bias: the state is the weights' state followed by b (K),
    the drift `drift_<rule>_bias(Q, R, T, T0, b, lr)` returns (A, B, db/dt). It is exact at any D,
    so at finite D (`noise` = noise_<rule>_bias, with m_rho and D) only the matrices' second-order
    terms are added, averaged over the shifted fields."""

    def __init__(self, bias_drift, lr, rho_vec, rho_mat, K, *, noise=None, m_rho=None, D=None):
        self.bias_drift, self.bias_noise, self.K, self.D = bias_drift, noise, K, D
        self.schedule, self.lr = _learning_rate(lr)
        self.core = _System(self._weights_drift, lr, rho_vec, rho_mat, K,
                            noise=None if noise is None else self._noise, m_rho=m_rho, D=D)
        self.split, self.rho_vec, self.rho_mat, self.F = self.core.split, rho_vec, rho_mat, self.core.F
        self.extra = K                # the biases follow the atoms in the state

    @property
    def failed(self):
        return self.core.failed

    @failed.setter
    def failed(self, value):
        self.core.failed = value

    def parts(self, Y):
        return self.core.parts(Y[:, :-self.K])

    def order_parameters(self, Y):
        return self.core.order_parameters(Y[:, :-self.K])

    def biases(self, Y):
        return Y[:, -self.K:]

    def error(self, act, Y, half_trace):
        return act.population_error(*self.order_parameters(Y), half_trace, b=self.biases(Y))

    def step_noise(self, y, noises):
        """As _System.step_noise, for the spikes and the biases (the last K numbers), their cross
        moments included; noises = (spike_noise_<rule>_bias, bias_noise_<rule>)."""
        spike_noise, bias_noise = noises
        K, split = self.K, self.split
        Y = np.atleast_2d(y)
        W, b = Y[:, :-K], Y[:, -K:]
        idx, Ntt = self.core.step_noise(W, spike_noise, b)
        Nbb, Nbt = bias_noise(*self.core._globals(W), self.lr, self.D, b, self.core.parts(W)[0], self.rho_vec)
        Nbt = Nbt.transpose(0, 2, 1, 3).reshape(Y.shape[0], K, split)   # (m, J, K, F) -> (m, K, J F)
        N = np.concatenate([np.concatenate([Ntt, np.swapaxes(Nbt, 1, 2)], axis=2),
                            np.concatenate([Nbt, Nbb], axis=2)], axis=1)
        return np.concatenate([idx, np.arange(Y.shape[1] - K, Y.shape[1])]), N[0] if y.ndim == 1 else N

    def _weights_drift(self, Q, R, T, T0, *rest):
        """_System's drift call: rest = (lr,) in the limit, (WW, lr, D) at finite D, where the
        bias drift is the same (exact at any D)."""
        A, B, self._db = self.bias_drift(Q, R, T, T0, self._b, self.lr)
        return A, B

    def _noise(self, *args):
        return self.bias_noise(*args, self._b)

    def frozen(self, Y, order=None):
        """_System.frozen of the weights and db/dt (m, K), at states Y (m, N)."""
        self._b = Y[:, -self.K:]
        return (*self.core.frozen(Y[:, :-self.K], order), self._db)

    at = _System.at

    def __call__(self, t, y):
        self.at(t)                    # and self.core at t, in its own call below
        self._b = (y[None] if y.ndim == 1 else y.T)[:, -self.K:]
        weights = self.core(t, y[:-self.K])
        db = self._db if np.all(np.isfinite(self._db)) else np.zeros_like(self._db)
        return np.concatenate([weights, db[0]]) if y.ndim == 1 else np.concatenate([weights, db.T])


def _learning_rate(lr):
    """(schedule, lr) of a system: (None, lr) for a float lr, else (the schedule, eta(0))."""
    if isinstance(lr, _schedules.Schedule):
        return lr, lr.rate(0.0)
    return None, lr


class _Bound:
    """The activation module with `rule`'s functions taking `params` (its parameters, and
    output_bias=True for the output bias' unit), everything else read from the module."""

    def __init__(self, act, rule, params):
        def bind(name):
            """act.<name> ({rule: function or tuple of functions}) for `rule` only, bound to params."""
            table = getattr(act, name, {})
            if rule not in table:
                return {}
            entry = table[rule]
            if isinstance(entry, tuple):
                return {rule: tuple(functools.partial(f, **params) for f in entry)}
            return {rule: functools.partial(entry, **params)}
        self._act = act
        self.DRIFTS, self.BIAS_DRIFTS, self.FINITE, self.SPIKE_NOISE, self.BIAS_NOISE = (
            bind(n) for n in ("DRIFTS", "BIAS_DRIFTS", "FINITE", "SPIKE_NOISE", "BIAS_NOISE"))
        self.population_error = functools.partial(act.population_error, output_bias=params.get("output_bias", False))

    def __getattr__(self, name):
        return getattr(self._act, name)


def _initial_state(spectrum, K, F, vectors, matrices):
    """Split atoms by multiplicity; `vectors(j)` -> (m_j, F), `matrices(j)` -> (F, F).
    Returns the vectors, the matrices, rho_hat per vector and rho_hat and m rho per matrix."""
    small = [j for j in range(spectrum.J) if spectrum.mult[j] < 2 * K]
    large = [j for j in range(spectrum.J) if spectrum.mult[j] >= 2 * K]
    th = [vectors(j) for j in small]
    rho_vec = np.concatenate([np.full(len(v), spectrum.rho_hat[j]) for v, j in zip(th, small)] or [np.zeros(0)])
    th = np.concatenate(th) if th else np.zeros((0, F))
    S = np.array([matrices(j) for j in large]) if large else np.zeros((0, F, F))
    return th, S, rho_vec, spectrum.rho_hat[large], (spectrum.mult * spectrum.rho)[large]


def _factor(S, m, j):
    """m vectors theta with sum theta theta^T = S (an atom of multiplicity m < 2K)."""
    if m != int(m):
        raise ValueError(f"atom {j} has multiplicity {m} < 2K that is not an integer")
    lam, vec = np.linalg.eigh(S)
    m = int(m)
    if np.any(lam[:-m] > 1e-9 * max(lam[-1], 1e-300)) or lam[0] < -1e-9 * max(lam[-1], 1e-300):
        raise ValueError(f"init matrices of atom {j} are not positive semi-definite of rank <= its multiplicity {m}")
    return (vec[:, -m:] * np.sqrt(np.maximum(lam[-m:], 0))).T


def integrate(act, eigvals=None, eigvecs=None, W0=None, V0=None, lr=1.0, times=(0.0, 1.0, 10.0),
              rule="vanilla", b0=None, *, spectrum=None, init=None, rtol=1e-6, atol=None,
              method="auto", progress=True, keep_atoms=False, raise_on_failure=True, finite_size=None,
              fluctuations=False, rule_params=None, c0=None, stochastic=False, paths=256, seed=0, dt=None,
              check_spread="auto"):
    """Integrate the equations of motion of `act` (a generated module) for `rule`.

    Either eigvals (D,), eigvecs (D, D) (or None: the weights are given in the eigenbasis) and
    W0, V0 (K, D) (SPEC section 6), or `spectrum` (runtime.spectrum.Spectrum) with `init` =
    (q, r, t), each of shape (J, K, K) (runtime.spectrum.random_init_matrices builds them).
    lr: a positive number, or a schedule eta(t) (a callable of t, runtime.schedules' constant,
    inverse_time, cosine, or their config form {"schedule": name, ...}): every right-hand side at
    time t is evaluated at eta(t); the result's `lr` records it (a constant one as its float).
    b0 (K,): an initial encoder bias, then trained (rule 'vanilla', SPEC section 1) with the
    activation's `drift_<rule>_bias`; the result's `b` (n, K) holds it and `error` includes it.
    Returns an IntegrationResult at `times`; on failure (solver failure, non-finite state, or
    divergence: the error above DIVERGED x max(eps_PCA(0), the initial error)) raises
    IntegrationError carrying the partial result (or returns it with status -1 when
    raise_on_failure=False). Ctrl-C raises runtime.progress.Interrupted carrying the partial
    result (status -2). progress: a bar on stderr once a run has taken a few seconds.

    method="auto" picks StructuredBDF (runtime.solver: BDF with the Jacobian block-diagonal plus low
    rank, Newton systems solved by Woodbury, or formed and LU-factorised for a state of at most
    DENSE_MAX numbers) for K <= AUTO_STRUCTURED_MAX_K, and for K above it BDF for states of up to
    AUTO_IMPLICIT_SIZE numbers, else RK45; StructuredBDF with fluctuations=True at any K (there its
    Newton systems are an LU on the mean and a Sylvester equation on the covariance: linear K = 2,
    D = 500, 8.7x fewer right-hand sides than RK45). The
    equations become stiff once the weights grow (the decoder relaxes at rate lr * E[g g], fast
    next to the slow approach to the PCA error): there an explicit solver needs ~10^5 steps where
    BDF needs ~10^3. BDF's finite-difference Jacobian costs one evaluation per state variable,
    which is cheap for spiked models (M vectors and one matrix) but not for thousands of
    distinct eigenvalues, where StructuredBDF's costs one drift call over the independent
    entries of the order parameters (46 for K = 4); on small states StructuredBDF takes 25-50 %
    fewer right-hand sides than BDF (its Newton iteration stops after one where a carried rate allows,
    runtime.solver._BDF) and 10-50 % less time (spiked model, K = 4: 0.079 s against 0.105 s; ReLU with
    a bias, finite D: 0.56 s against 0.99 s). Pass method= (any of scipy's, "StructuredBDF" or
    "StructuredRadau") to choose.
    rtol and atol go to the solver; atol=None scales the absolute tolerance with the initial
    weights (default_atol: 1e-9 times their size, down to 1e-15), so that a run from small
    weights keeps the small components that decide when it leaves its saddle.

    finite_size=True integrates the finite-D equations at the spectrum's D instead of the
    D -> infinity limit: the exact expected drift of every per-atom matrix, second-order (lr^2)
    terms included for the atoms kept as matrices (derive.finite). Rules without an O(1) limit
    (tied) have only these; finite_size=None picks them for such rules and the limit otherwise.
    A D -> infinity run measures how much the finite-D terms at its D change the drift along
    its states (`finite_size_effect`, max |F_D - F_inf| / max |F_inf|, at the first, the last
    and the fastest of the recorded states) and warns (RuntimeWarning) above FINITE_SIZE_WARNING: the limit is not to be
    trusted at that D and lr. Where the finite-D equations are not available (K > 3 unless g is
    a polynomial) finite_size_effect is nan: not measured.

    fluctuations=True (implies finite_size) adds the spikes' O(1/sqrt(D)) fluctuations to that
    order (runtime.fluctuations): `error` and the order parameters become averages over SGD runs
    from the same weights, and `error_spread` their predicted seed-to-seed standard deviation.
    With b0 the biases fluctuate with the spikes (the activation's BIAS_NOISE). `spread_check` then
    says whether error_spread is still SGD's (runtime.validity, a RuntimeWarning where it is not):
    check_spread=True runs that check, False skips it, "auto" runs it unless its cost would dwarf the
    run's: with a trained bias and an activation whose shifted kernels are numerical (tanh, sigmoid,
    ...), every one of its validity.SAMPLES states costs a quadrature per kernel and right-hand side
    (1.5 s per right-hand side against a 38 s run, ~30 min in all, for tanh, K = 2), so "auto" skips
    it there with a RuntimeWarning that says so.

    rule_params: the rule's parameters (weight decay: {"kappa": 0.01}; defaults in the activation's
    RULES_MODULE.PARAMS). c0 (D,): an initial output bias, x_hat = V^T g + c, trained (c += (lr/D) e)
    for the rules in RULES_MODULE.OUTPUT_BIASED; it enters the equations as a first unit with g = 1
    and encoder weight 0 (derive.rules), projected on the eigenvectors like the weights. The result's
    Q, R, T, T0 and b are the hidden units', `error` includes c, `output_bias` is |c|^2/D and, with
    keep_atoms, directions() and matrices() hold the bias' unit first.

    stochastic=True (implies finite_size) integrates `paths` sample paths of the diffusion
    approximation of SGD at this D (runtime.stochastic: Heun in the drift, Gaussian increments
    from the spikes' noise, step dt, default runtime.stochastic.STEP; `seed` draws them), all
    vectorised, at a cost independent of D: `error` and the order parameters are the means over
    paths, `error_spread` their standard deviation, `error_paths` (paths, n) each path's error,
    `basins` the spike each unit ends on in each path; quantiles() and escape_times() read them,
    and with keep_atoms directions()/matrices() have a paths axis. Tied weights, whose spikes move
    by O(1) per step (the diffusion approximation does not hold there), are stepped per sample
    instead: stochastic="samples" (any rule; the default for rules without an O(1) limit) runs
    `paths` SGD runs exactly, each in a reduced space of a few numbers per atom
    (runtime.stochastic_samples: the sample's components along the weights' span in each atom and
    one fresh direction; cost per step independent of D, D steps per unit of time; dt unused), for
    spectra of directions (integer multiplicities), with the same result.
    """
    known = sorted(set(act.DRIFTS) | set(getattr(act, "FINITE", {})))
    if rule not in known:
        missing = getattr(act, "FINITE_MISSING", "")
        raise ValueError(f"unknown rule {rule!r} for activation {act.NAME}; known: {', '.join(known)}"
                         + (f" ({missing})" if missing else ""))
    if not (isinstance(check_spread, (bool, np.bool_)) or check_spread == "auto"):
        raise ValueError(f"check_spread must be True, False or 'auto', got {check_spread!r}")
    if not (isinstance(stochastic, (bool, np.bool_)) or stochastic == "samples"):
        raise ValueError(f"stochastic must be False, True or 'samples', got {stochastic!r}")
    samples = stochastic == "samples" or (bool(stochastic) and rule not in act.DRIFTS)   # per-sample SGD paths
    if stochastic:
        if fluctuations:
            raise ValueError("stochastic=True and fluctuations=True describe the same spread two ways: choose one")
        if finite_size is False and not samples:
            raise ValueError("stochastic=True needs the finite-D equations (finite_size=True)")
        dt = check.number(_stochastic.STEP if dt is None else dt, "dt")
        if isinstance(paths, bool) or not isinstance(paths, (int, np.integer)) or paths < 2 or dt <= 0:
            raise ValueError(f"stochastic needs an integer number of paths >= 2 and a positive dt, got paths = "
                             f"{paths!r}, dt = {dt!r}")
        finite_size = finite_size if samples else True
    if fluctuations:
        if finite_size is False:
            raise ValueError("fluctuations=True needs the finite-D equations (finite_size=True)")
        if rule not in act.DRIFTS:
            raise ValueError(f"fluctuations: rule {rule!r} has no O(1) limit to expand around "
                             "(its spikes move by O(1) per step)")
        finite_size = True
    if finite_size is None:
        finite_size = rule not in act.DRIFTS
    if finite_size and rule not in getattr(act, "FINITE", {}):
        raise ValueError(f"no finite-D equations for {act.NAME}: {getattr(act, 'FINITE_MISSING', '')}")
    if not finite_size and rule not in act.DRIFTS:
        raise ValueError(f"rule {rule!r} has no D -> infinity limit; integrate it with finite_size=True")
    tied = rule == "tied"
    if b0 is not None and rule not in getattr(act, "BIAS_DRIFTS", {}):
        raise ValueError(f"rule {rule!r} trains no bias (b0 given) in these equations; rules with a bias: "
                         f"{', '.join(getattr(act, 'BIAS_DRIFTS', {})) or 'none'}")
    if b0 is not None and finite_size and rule not in getattr(act, "BIAS_NOISE", {}):
        raise ValueError(f"no finite-D equations with a trained bias (b0) for {act.NAME}: "
                         f"{getattr(act, 'BIAS_NOISE_MISSING', '')}")
    if callable(lr) or isinstance(lr, (dict, tuple, list)):
        lr = _schedules.resolve(lr)   # a schedule, or the float of a constant one (the same arithmetic)
    if not isinstance(lr, _schedules.Schedule):
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"lr must be a positive number, got {lr!r}") from None
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive number, got {lr}")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or np.any(~np.isfinite(times)) or np.any(times < 0) \
            or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, sorted 1-D array of non-negative numbers")

    params = {} if rule_params is None else check.rule_params(rule, act.RULES_MODULE.PARAMS.get(rule, {}), rule_params)
    if c0 is not None:
        if rule not in act.RULES_MODULE.OUTPUT_BIASED:
            raise ValueError(f"rule {rule!r} trains no output bias (c0 given) in these equations; rules with one: "
                             f"{', '.join(act.RULES_MODULE.OUTPUT_BIASED) or 'none'}")
        if spectrum is not None:
            raise ValueError("c0 needs the weights (eigvals, eigvecs, W0, V0), not spectrum= and init=")
        params["output_bias"] = True
    act = _Bound(act, rule, params)
    if spectrum is None:
        if any(a is None for a in (eigvals, W0, W0 if tied else V0)):
            raise ValueError("give eigvals, eigvecs, W0 and V0 (V0 is ignored for tied weights), "
                             "or spectrum= and init=")
        spectrum, atom_of = spec.Spectrum.from_eigvals(eigvals)
        omega, upsilon = spec.projections(W0, W0 if tied else V0, eigvecs, D=atom_of.size)
        K = omega.shape[0]
        if c0 is not None:      # the output bias' unit first: w = 0, v = c
            c_omega, c_upsilon = spec.projections(np.zeros((1, atom_of.size)), spec.weights(c0, (atom_of.size,), "c0")[None], eigvecs,
                                                  D=atom_of.size)
            omega, upsilon = np.concatenate([c_omega, omega]), np.concatenate([c_upsilon, upsilon])
            b0 = None if b0 is None else np.concatenate([[0.0], spec.weights(b0, (K,), "b0")])
        units = omega.shape[0]          # the hidden units and the output bias' unit
        theta = (omega if tied else np.concatenate([omega, upsilon])).T    # (D, F)
        members = [np.flatnonzero(atom_of == j) for j in range(spectrum.J)]
        th, S, rho_vec, rho_mat, m_rho = _initial_state(
            spectrum, units, theta.shape[1], lambda j: theta[members[j]], lambda j: theta[members[j]].T @ theta[members[j]])
    else:
        if not isinstance(spectrum, spec.Spectrum):
            raise ValueError(f"spectrum must be a runtime.spectrum.Spectrum, got {type(spectrum).__name__}")
        if init is None:
            raise ValueError("spectrum= needs init=(q, r, t), the initial per-atom matrices "
                             "(runtime.spectrum.random_init_matrices)")
        S_all = _stack(*init)
        if S_all.shape[0] != spectrum.J:
            raise ValueError(f"init has {S_all.shape[0]} atoms but the spectrum has {spectrum.J}")
        K = S_all.shape[-1] // 2
        if K == 0:
            raise ValueError("init matrices have shape (J, 0, 0): no hidden units, K must be at least 1")
        if tied:
            S_all = S_all[:, :K, :K]
        units = K
        th, S, rho_vec, rho_mat, m_rho = _initial_state(
            spectrum, K, S_all.shape[-1], lambda j: _factor(S_all[j], spectrum.mult[j], j), lambda j: S_all[j])
    if finite_size and K > quadrature.MAX_UNITS and act.POLYNOMIAL_DEGREE is None and not samples:
        raise ValueError(f"the finite-D equations are implemented for K <= {quadrature.MAX_UNITS} "
                         f"unless g is a polynomial (their averages over {K} units have no kernel here); got K = {K}")
    y0 = np.concatenate([th.ravel(), S.ravel()])
    if not np.all(np.isfinite(y0)):
        raise ValueError("initial state contains NaN or inf")
    if b0 is not None:
        y0 = np.concatenate([y0, spec.weights(b0, (units,), "b0")])
    build = functools.partial(_system, act, rule, lr, rho_vec, rho_mat, units, b0 is not None, m_rho=m_rho,
                              D=spectrum.D, tied=tied)
    system = build(finite_size)
    spikes = spectrum.rho[spectrum.rho >= np.sqrt(spectrum.D)]             # eigenvalues of order D
    if rule not in act.DRIFTS and not stochastic and spikes.size and np.size(rho_vec):
        warnings.warn(f"{act.NAME}/{rule} at D = {spectrum.D:g}: with spikes of order D (eigenvalues "
                      f"{', '.join(f'{s:.4g}' for s in spikes[:4])}), SGD runs end in a mixture of sign patterns and "
                      "leave the plateau at noise-driven times; no equations for one mean state describe them "
                      "(measured 2-90 seed spreads off, docs/tied.md), and these equations' escape hangs on "
                      "rounding errors (erf, D = 400: solvers differ by up to 0.3 in the error). "
                      "integrate(..., stochastic=True) (equations = \"stochastic\" in a config) gives SGD's "
                      "distribution", RuntimeWarning, stacklevel=3)
    if fluctuations:
        system = FluctuationSystem(system, build(False), act.SPIKE_NOISE[rule] if b0 is None else act.BIAS_NOISE[rule][1:])
        y0 = system.initial_state(y0)
    if method == "auto":
        # with fluctuations (n + n^2 numbers, each evaluation 2 n + 1 of the core's) scipy's BDF would
        # difference n + n^2 columns; StructuredBDF's Jacobian there is n + 1 of the limit's (runtime.solver)
        structured = fluctuations or units <= AUTO_STRUCTURED_MAX_K
        method = "StructuredBDF" if structured else "BDF" if y0.size <= AUTO_IMPLICIT_SIZE else "RK45"
    half_trace = 0.5 * float(np.sum(spectrum.mult * spectrum.rho_hat))
    error_of = functools.partial(system.error, act, half_trace=half_trace)
    # with fluctuations also solved at the times the spread's check needs (runtime.validity)
    solved = np.union1d(times, validity.check_times(times[-1])) if fluctuations else times
    diverged = divergence_limit(error_of(y0[None])[0], half_trace)
    with _progress.bar(float(times[-1]), f"integrate {act.NAME}/{rule}", progress,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| t = {n:.4g} of {total:.4g} [{elapsed}<{remaining}]") as bar:
        if samples:
            ts, ys, status, message, nfev = _samples.sample_paths(
                act, rule, rule_params, lr, spectrum, system, y0, units, K, times, paths, seed, bar, error_of, diverged)
        elif stochastic:
            ts, ys, status, message, nfev = _stochastic.sample_paths(
                system, build(False), act.SPIKE_NOISE[rule] if b0 is None else act.BIAS_NOISE[rule][1:], y0, times,
                paths, seed, dt, bar, error_of, diverged)
        else:
            atol = default_atol(system, y0, slice(units - K, units)) if atol is None else atol
            with _threads.one_blas_thread():        # runtime.threads: scipy's LU next to numpy's products
                ts, ys, status, message, nfev = _solve(system, y0, solved, method, rtol, atol, bar, error_of, diverged)
    Y = ys.reshape(len(ts), -1) if not stochastic else ys.reshape(-1, ys.shape[-1])     # every path's state
    spread = spread_check = None
    if fluctuations:
        spread = system.error_spread(act, Y, half_trace)
        numeric = getattr(act, "SHIFTED_NUMERIC_KERNELS", ()) if b0 is not None else ()
        if check_spread == "auto" and numeric:
            warnings.warn(f"{act.NAME}/{rule}: the spread check (result.spread_check) was skipped: with a trained "
                          f"bias the D -> infinity drift averages {act.NAME} by quadrature at every state "
                          f"({len(numeric)} numerical shifted kernels), and the check carries "
                          f"{validity.SAMPLES} states from {len(validity.START_FRACTIONS)} start times through it, "
                          "tens to hundreds of times this run's cost; integrate(..., check_spread=True) runs it "
                          "anyway", RuntimeWarning, stacklevel=3)
        elif check_spread:
            try:
                spread_check = validity.check_spread(system, ts, Y, spread,
                                                     functools.partial(system.core.error, act, half_trace=half_trace),
                                                     progress=progress)
            except KeyboardInterrupt:         # the run is complete: keep it, without the check
                status, message = -2, "interrupted (Ctrl-C) in the spread check; the run itself is complete"
        rows = np.searchsorted(solved, times)           # the requested times (repeats kept) among the solved
        rows = rows[rows < ts.size]
        ts, ys, Y, spread = ts[rows], ys[rows], Y[rows], spread[rows]
    Q, R, T, T0 = system.order_parameters(Y)
    hidden = slice(units - K, None)     # without the output bias' unit
    errors, b = error_of(Y), None if b0 is None else system.biases(Y)
    error_paths = basins = None
    if stochastic:                      # means over the paths; their spread, and each path's error
        def per_path(M):
            return M.reshape(ts.size, paths, *M.shape[1:])
        error_paths = per_path(errors).T.copy()
        errors = error_paths.mean(axis=0)
        spread = error_paths.std(axis=0, ddof=1)
        Q, R, T, T0 = (per_path(M).mean(axis=1) for M in (Q, R, T, T0))
        b = None if b is None else per_path(b).mean(axis=1)
        if ts.size and system.split:
            basins = _stochastic.basins(system.parts(ys[-1])[0][..., units - K:units], system.rho_vec)
    result = IntegrationResult(ts, errors, *(M[:, hidden, hidden] for M in (Q, R, T, T0)), spectrum.pca_errors(K),
                               act.NAME, rule, status, message, nfev, ys if keep_atoms else None, system,
                               b=None if b is None else b[:, hidden].copy(),
                               error_spread=spread, output_bias=None if c0 is None else T0[:, 0, 0].copy(),
                               spread_check=spread_check, error_paths=error_paths, basins=basins)
    result.lr, result.method = lr, None if samples or stochastic else method
    if spread_check is not None and not spread_check.valid:
        warnings.warn(spread_check.message(f"{act.NAME}/{rule} at D = {spectrum.D:g}"), RuntimeWarning, stacklevel=3)
    if not finite_size and _finite_size_available(act, rule, K, b0 is not None) and ts.size:
        result.finite_size_effect = _finite_size_effect(system, build(True), Y, ts)
        if result.finite_size_effect > FINITE_SIZE_WARNING:
            warnings.warn(f"{act.NAME}/{rule} at D = {spectrum.D:g}, lr = {lr:g}: the finite-D terms change the "
                          f"drift by {100 * result.finite_size_effect:.0f}% along this run, so the D -> infinity "
                          f"equations are not to be trusted here; integrate with finite_size=True "
                          f"(or fluctuations=True; in a config: equations = \"finite\")", RuntimeWarning, stacklevel=3)
    at = f"t = {ts[-1] if ts.size else 0:.6g}"
    if status == -2:
        raise Interrupted(f"integration of {act.NAME}/{rule} {message}; the result so far is in .result", result)
    if status != 0 and raise_on_failure:
        raise IntegrationError(f"integration of {act.NAME}/{rule} failed at {at}: {message}", result)
    return result


def bind(namespace):
    """integrate() for the activation whose module globals are `namespace` (how a generated
    module binds it: `integrate = bind(globals())`, which works for modules built in memory
    too), with integrate's signature less `act` and its docstring."""
    act = _Namespace(namespace)

    @functools.wraps(integrate)
    def bound(*args, **kwargs):
        return integrate(act, *args, **kwargs)

    signature = inspect.signature(integrate)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


class _Namespace:
    """Attribute access to a module's globals, read at call time."""

    def __init__(self, namespace):
        self.__dict__ = namespace


def _system(act, rule, lr, rho_vec, rho_mat, K, bias, finite_size, *, m_rho, D, tied):
    """The right-hand side of `rule`: the D -> infinity drift, or the finite-D one at D; with a
    trained bias (`bias`) the bias drift's system."""
    if not finite_size:
        if bias:
            return _BiasSystem(act.BIAS_DRIFTS[rule], lr, rho_vec, rho_mat, K)
        return _System(act.DRIFTS[rule], lr, rho_vec, rho_mat, K)
    if bias:
        return _BiasSystem(act.BIAS_DRIFTS[rule], lr, rho_vec, rho_mat, K, noise=act.BIAS_NOISE[rule][0],
                           m_rho=m_rho, D=D)
    drift, noise = act.FINITE[rule]
    return _System(drift, lr, rho_vec, rho_mat, K, noise=noise, tied=tied, m_rho=m_rho, D=D)


def _finite_size_available(act, rule, K, bias):
    """Whether the finite-D equations of `rule` exist for this activation, K and bias."""
    return (rule in getattr(act, "FINITE", {}) and (not bias or rule in getattr(act, "BIAS_NOISE", {}))
            and (K <= quadrature.MAX_UNITS or act.POLYNOMIAL_DEGREE is not None))


def _finite_size_effect(limit, finite, Y, ts=None):
    """max |F_D(y) - F_inf(y)| / max |F_inf(y)| over the recorded states Y (n, N) at times ts: F_inf at
    every state, F_D (costly: averages over up to three units) at the first, the last and the
    one where F_inf is largest. With an lr schedule each state's field is at its own time."""
    def field(system, rows):
        if limit.schedule is None:
            return system(0.0, Y[rows].T)
        return np.stack([system(ts[i], Y[i]) for i in np.arange(len(Y))[rows]], axis=1)

    with np.errstate(all="ignore"), fast_kernels.untabulated():      # (three states: the quadrature is cheaper)
        f_inf = field(limit, slice(None))
        norms = np.linalg.norm(f_inf, axis=0)
        probes = np.unique([0, int(np.argmax(norms)), len(Y) - 1])
        f_D = field(finite, probes)
    limit.failed = finite.failed = None
    scale, change = np.max(norms), np.max(np.linalg.norm(f_D - f_inf[:, probes], axis=0))
    return float(change / scale) if scale > 0 else float("inf") if change > 0 else 0.0


_METHODS = {"RK45": RK45, "RK23": RK23, "DOP853": DOP853, "BDF": BDF, "Radau": Radau, "LSODA": LSODA,
            "StructuredBDF": _solver.StructuredBDF, "StructuredRadau": _solver.StructuredRadau}


def default_atol(system, y0, hidden):
    """The absolute tolerance of atol=None: ATOL times the initial weights' scale s (at most 1),
    at least ATOL_FLOOR; s = the smallest sqrt(Q_kk), sqrt(T0_kk) over the hidden units.

    A run from small weights sits near a saddle and leaves it at a time set by its smallest
    components; a fixed absolute tolerance above their size lets the solver lose them and shifts
    the escape. Spikes (2, 1) D, D = 300, W0, V0 = 1e-7 N(0, 1), t <= 80, against DOP853 at
    rtol 1e-12 (tests/test_integrate.py): with atol 1e-9 BDF (method="auto") was 2.6e-2 (erf)
    and 5.7e-2 (linear) off in the error, RK45 5e-4 and 1.2e-3; with atol 1e-15, 1.5e-5 and
    3.1e-5, RK45 1.5e-6 and 4e-6. The floor keeps round-off (~1e-16 of O(1) entries) below it."""
    Q, _, _, T0 = system.order_parameters(y0[None])
    sizes = np.concatenate([np.diagonal(Q[0])[hidden], np.diagonal(T0[0])[hidden]])
    scale = min(1.0, float(np.sqrt(max(np.min(sizes), 0.0))))
    return max(ATOL * scale, ATOL_FLOOR)


def _solve(system, y0, times, method, rtol, atol, bar, error_of, limit):
    """Step a scipy OdeSolver and read the states at `times` off its dense output; stop at a
    blow-up, a divergence (error_of(y) above `limit`, runtime.progress.divergence_limit), a solver
    failure or Ctrl-C, keeping every state reached before it.
    Returns (t, y, status, message, nfev): status 0 and message "ok" on success, -1 on failure,
    -2 on an interrupt."""
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(_METHODS)}")
    out_t, out_y = [t for t in times if t <= 0], [y0 for t in times if t <= 0]
    if times[-1] <= 0:
        return np.array(out_t), np.array(out_y), 0, "ok", 0
    # vectorized: BDF's finite-difference Jacobian evaluates all its columns in one call
    solver = _METHODS[method](system, 0.0, y0, times[-1], rtol=rtol, atol=atol, vectorized=True)
    n_steps = 0
    pending = iter(times[len(out_t):])
    nxt = next(pending, None)
    status, message = 0, "ok"
    try:
        while nxt is not None:
            failure = solver.step()
            n_steps += 1
            if system.failed or failure:
                status, message = -1, system.failed or failure
                break
            bar.update(solver.t - bar.n)
            if not np.all(np.isfinite(solver.y)):
                status, message = -1, f"non-finite state at t = {solver.t:.6g} (blow-up)"
                break
            error = float(error_of(solver.y[None])[0]) if n_steps % CHECK_EVERY == 0 else 0.0
            if not error <= limit:
                status, message = -1, (f"diverged at t = {solver.t:.6g}: the error {error:.4g} passed {limit:.4g} "
                                       f"= {DIVERGED:g} x max(eps_PCA(0), initial error)")
                break
            if nxt <= solver.t:
                dense = solver.dense_output()
                while nxt is not None and nxt <= solver.t:
                    out_t.append(nxt)
                    out_y.append(dense(nxt))
                    nxt = next(pending, None)
            if solver.status == "finished" and nxt is not None:
                out_t.append(nxt)
                out_y.append(solver.y)
                nxt = next(pending, None)
    except KeyboardInterrupt:
        status, message = -2, f"interrupted (Ctrl-C) at t = {solver.t:.6g}"
    return np.array(out_t), np.array(out_y).reshape(len(out_t), -1), status, message, solver.nfev


def _stack(q, r, t):
    """Per-atom S_j = [[q_j, r_j^T], [r_j, t_j]] of shape (J, 2K, 2K)."""
    q, r, t = (np.asarray(a, dtype=float) for a in (q, r, t))
    if q.ndim != 3 or q.shape != r.shape or q.shape != t.shape or q.shape[1] != q.shape[2]:
        raise ValueError(f"init matrices must all have shape (J, K, K); got {q.shape}, {r.shape}, {t.shape}")
    return np.concatenate([np.concatenate([q, np.swapaxes(r, 1, 2)], axis=2),
                           np.concatenate([r, t], axis=2)], axis=1)
