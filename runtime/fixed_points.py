"""Long-time behaviour of the equations of motion: the stationary state near a late-time state,
its stability, and the rate at which the error approaches it.

Given an `IntegrationResult` of `integrate(..., keep_atoms=True)`:

* `fixed_point(result)` solves f(y) = 0 for the right-hand side f of the integrated system,
  starting from the last recorded state y0 (scipy least_squares, Levenberg-Marquardt,
  with the finite-difference Jacobian below; MINPACK's own QR, so no BLAS threads that slow
  small problems down on busy machines). It works in the integrator's state (direction vectors of
  the small atoms, matrices S_j of the large ones), with each S_j reduced to its upper triangle so
  that the perturbations stay symmetric.
* Stability: eigenvalues of the Jacobian J = df/dy at the fixed point by central differences,
  all 2n perturbed states in one call of the vectorised right-hand side.
* Zero modes: a continuous symmetry of the equations maps fixed points to fixed points, so its
  generator g at y* is a zero mode (J g = 0). The candidates tested are rotations among the
  direction vectors of one atom (a degenerate spike: the order parameters see only
  sum theta theta^T), the GL(K) mixing of units omega -> X omega, upsilon -> X^-T upsilon (a
  symmetry of linear networks; its diagonal is the rescaling of a unit, a symmetry of
  homogeneous g such as relu) and the rescaling omega_k -> c omega_k, upsilon_k -> upsilon_k/c^2
  (quadratic g). The eigenvalues with |lambda| <= zero_tol * max|lambda| are the zero modes; the
  report says how many the symmetries found explain.
* Approach rate: with y - y* = sum_i c_i v_i exp(lambda_i t), the error excess
  eps - eps* = grad(eps).(y - y*) + O(|y - y*|^2) decays at the slowest rate -Re lambda_i among
  the non-zero modes with grad(eps).v_i != 0, or twice the slowest state rate if that is slower
  (at a stationary point of a gradient flow grad(eps).v_i = 0 for the direction vectors, and the
  error is linear only in the bulk matrices). `fit_rate` measures the rate on the late-time error
  curve to compare.

Where there is no finite stationary state near y0 (e.g. erf, vanilla: the error decreases towards
eps_PCA(K) by shrinking w and growing v without end), the result says so (found=False) and
reports the power law of the late-time error excess over eps_PCA(K) instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

import generated


@dataclass
class FixedPoint:
    """A stationary state of the equations of motion near a late-time state (see module doc).

    found: a root was found with residual and distance within tolerance. state: the
    integrator's raw state at the root (or at the start, when not found). error, Q, R, T, T0:
    the error and order parameters there. residual: max |f(y*)|; distance: |y* - y0| / |y0|.
    eigenvalues: of the Jacobian at y* in the reduced coordinates, by decreasing real part.
    n_zero: eigenvalues with |lambda| <= zero_tol max|lambda|; symmetries: {name: number of
    independent generators with J g = 0}; n_symmetry: their joint rank. stable: no eigenvalue
    with Re lambda > zero_tol max|lambda|; n_unstable: how many. rate: slowest decay rate
    -Re lambda of a non-zero mode; error_rate: predicted decay rate of eps - eps*; fitted_rate:
    the rate fitted on the late-time error curve (nan if not fitted) over fit_window = (t_from,
    t_to): it measures `error_rate` only if the window spans several e-folds of it. power: when no fixed
    point was found, the exponent p of eps - eps_PCA(K) ~ t^-p fitted on the late times.
    """
    found: bool
    message: str
    state: np.ndarray = field(repr=False)
    error: float = np.nan
    Q: np.ndarray = field(default=None, repr=False)
    R: np.ndarray = field(default=None, repr=False)
    T: np.ndarray = field(default=None, repr=False)
    T0: np.ndarray = field(default=None, repr=False)
    pca_errors: np.ndarray = field(default=None, repr=False)
    residual: float = np.nan
    distance: float = np.nan
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0, complex), repr=False)
    n_zero: int = 0
    n_symmetry: int = 0
    symmetries: dict = field(default_factory=dict)
    stable: bool = False
    n_unstable: int = 0
    rate: float = np.nan
    error_rate: float = np.nan
    fitted_rate: float = np.nan
    power: float = np.nan
    fit_window: tuple = (np.nan, np.nan)
    zero_threshold: float = 0.0

    def summary(self, n_eigenvalues=8):
        """A JSON-ready dict: the numbers above, the order parameters' diagonals, and the
        n_eigenvalues non-zero eigenvalues with the largest real parts (the zero modes are
        counted in n_zero_modes)."""
        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)

        ev = self.eigenvalues[np.abs(self.eigenvalues) > self.zero_threshold][:n_eigenvalues]
        return {
            "found": bool(self.found), "message": self.message, "error": num(self.error),
            "pca_error_K": None if self.pca_errors is None else float(self.pca_errors[-1]),
            "residual": num(self.residual), "distance": num(self.distance),
            "stable": bool(self.stable), "n_unstable": int(self.n_unstable),
            "n_zero_modes": int(self.n_zero), "n_symmetry_modes": int(self.n_symmetry),
            "symmetries": {k: int(v) for k, v in self.symmetries.items()},
            "rate": num(self.rate), "error_rate": num(self.error_rate),
            "fitted_error_rate": num(self.fitted_rate), "late_power": num(self.power),
            "fit_window": [num(x) for x in self.fit_window],
            "fit_window_efolds": num(self.error_rate * (self.fit_window[1] - self.fit_window[0])),
            "leading_nonzero_eigenvalues": [[float(z.real), float(z.imag)] for z in ev],
            "Q_diag": None if self.Q is None else np.diag(self.Q).tolist(),
            "T0_diag": None if self.T0 is None else np.diag(self.T0).tolist(),
        }


class Coordinates:
    """The integrator's state y with each matrix S_j reduced to its upper triangle (z), and
    the right-hand side f and its Jacobian in z. `system` is an IntegrationResult.system."""

    def __init__(self, system):
        self.system = system
        K2 = system.F                    # 2K, or K with V tied to W
        self.nv = system.split
        self.iu = np.triu_indices(K2)
        self.K2 = K2
        self.n_mat = system.rho_mat.size
        self.extra = system.extra        # trailing numbers (a trained bias) kept as they are

    def pack(self, y):
        """y (N,) -> z."""
        y = np.asarray(y, float)
        th, S = self.system.parts(y[None])
        return np.concatenate([th.ravel(), S[0][:, self.iu[0], self.iu[1]].ravel(), y[y.size - self.extra:]])

    def unpack(self, Z):
        """z (n,) or columns (n, m) -> y (N,) or (N, m), S_j symmetric."""
        Zc = Z[:, None] if Z.ndim == 1 else Z
        m = Zc.shape[1]
        S = np.zeros((m, self.n_mat, self.K2, self.K2))
        end = Zc.shape[0] - self.extra
        S[:, :, self.iu[0], self.iu[1]] = Zc[self.nv:end].T.reshape(m, self.n_mat, -1)
        S = S + np.swapaxes(S, -1, -2) * (1 - np.eye(self.K2))
        Y = np.concatenate([Zc[:self.nv].T, S.reshape(m, -1), Zc[end:].T], axis=1).T
        return Y[:, 0] if Z.ndim == 1 else Y

    def rhs(self, Z):
        """f in z coordinates, on a vector or on columns (one vectorised call). Non-finite
        drift (a state outside the kernels' domain) gives NaN, not the system's zeros."""
        before = self.system.failed
        self.system.failed = None
        F = self.system(0.0, self.unpack(Z))
        bad = self.system.failed
        self.system.failed = before
        Fz = self._pack_columns(F[:, None] if F.ndim == 1 else F)
        if bad:
            Fz[:] = np.nan
        return Fz[:, 0] if Z.ndim == 1 else Fz

    def _pack_columns(self, Y):
        m = Y.shape[1]
        th, S = self.system.parts(Y.T)
        return np.concatenate([th.reshape(m, -1), S[:, :, self.iu[0], self.iu[1]].reshape(m, -1),
                               Y[Y.shape[0] - self.extra:].T], axis=1).T

    def steps(self, z, rel_step=1e-6):
        """Finite-difference steps per coordinate: rel_step times |z_i|, floored at a fraction
        of the state's typical size (coordinates at zero, e.g. an empty bulk)."""
        typical = np.sqrt(np.mean(z * z)) if z.size else 1.0
        return rel_step * np.maximum(np.abs(z), 1e-2 * max(typical, 1e-12))

    def jacobian(self, z, rel_step=1e-6):
        """J_ij = df_i/dz_j by central differences, 2n states in one right-hand-side call."""
        h = self.steps(z, rel_step)
        E = np.diag(h)
        F = self.rhs(np.concatenate([z[:, None] + E, z[:, None] - E], axis=1))
        n = z.size
        return (F[:, :n] - F[:, n:]) / (2 * h)

    def order_parameters(self, z):
        return tuple(a[0] for a in self.system.order_parameters(self.unpack(z)[None]))

    # -- symmetry generators: tangent vectors (in z) of the orbit through z ----------------------

    def generators(self, z):
        """{name: array (n_gen, n)} of candidate symmetry generators at z (module doc)."""
        K = self.system.K
        th, S = self.system.parts(self.unpack(z)[None])
        th, S = th[0], S[0]
        out = {}
        rot = []
        rho = self.system.rho_vec
        for a in range(rho.size):
            for b in range(a + 1, rho.size):
                if rho[a] == rho[b]:
                    d = np.zeros_like(th)
                    d[a], d[b] = th[b], -th[a]
                    rot.append(self._tangent(d, np.zeros_like(S)))
        if rot:
            out["rotation within a degenerate atom"] = np.array(rot)
        if self.K2 != 2 * K or self.extra:      # the (w, v) symmetries below need untied weights, no bias
            return out
        unit = lambda a, b: np.eye(K)[:, [a]] @ np.eye(K)[[b]]        # E_ab
        families = {"rescaling of a unit (c w_k, v_k / c)": [(a, a, 1.0) for a in range(K)],
                    "mixing of units (w_k += s w_l, v_l -= s v_k)":
                        [(a, b, 1.0) for a in range(K) for b in range(K) if a != b],
                    "rescaling of a unit (c w_k, v_k / c^2)": [(a, a, 2.0) for a in range(K)]}
        for name, members in families.items():
            if members:
                out[name] = np.array([self._linear_action(th, S, unit(a, b), -p * unit(a, b).T)
                                      for a, b, p in members])
        return out

    def _linear_action(self, th, S, X, Y):
        """Tangent of omega -> exp(sX) omega, upsilon -> exp(sY) upsilon at s = 0."""
        G = np.zeros((self.K2, self.K2))
        K = self.system.K
        G[:K, :K], G[K:, K:] = X, Y
        return self._tangent(th @ G.T, G @ S + S @ G.T)

    def _tangent(self, d_th, d_S):
        return np.concatenate([d_th.ravel(), d_S[:, self.iu[0], self.iu[1]].ravel(), np.zeros(self.extra)])


def fixed_point(result, index=-1, *, zero_tol=1e-6, max_distance=0.5, residual_tol=1e-9,
                fit_from=None, rel_step=1e-6):
    """The stationary state near the state recorded at result.t[index] (module doc).

    result: IntegrationResult of integrate(..., keep_atoms=True). zero_tol: eigenvalues with
    |lambda| <= zero_tol max|lambda| count as zero modes. A root counts as found when
    max |f(y*)| <= residual_tol max|lambda| max(|y*|, 1) and |y* - y0| <= max_distance |y0|.
    fit_from: fit the error's late-time rate (or power law) on result.t >= fit_from (default:
    the last half of the recorded times, in log t).
    """
    if getattr(result, "state", None) is None or getattr(result, "system", None) is None:
        raise ValueError("fixed_point needs an IntegrationResult of integrate(..., keep_atoms=True)")
    if not (0 < zero_tol < 1) or not max_distance > 0 or not residual_tol > 0:
        raise ValueError("zero_tol must be in (0, 1); max_distance and residual_tol positive")
    act = generated.load(result.activation)
    coords = Coordinates(result.system)
    half_trace = float(result.pca_errors[0])
    y0 = result.state[index]
    z0 = coords.pack(y0)

    def error_at(Z):
        return coords.system.error(act, coords.unpack(Z).T, half_trace)

    sol = least_squares(lambda z: _finite(coords.rhs(z), WALL), z0, method="lm", x_scale="jac",
                        jac=lambda z: _finite(coords.jacobian(z, rel_step), 0.0),
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=100)
    z = sol.x
    J = coords.jacobian(z, rel_step)
    lam, vecs = np.linalg.eig(J)
    order = np.argsort(-lam.real, kind="stable")
    lam, vecs = lam[order], vecs[:, order]
    scale = float(np.max(np.abs(lam))) if lam.size else 0.0
    residual = float(np.max(np.abs(coords.rhs(z))))
    distance = float(np.linalg.norm(z - z0) / max(np.linalg.norm(z0), 1e-300))
    valid = _positive_semidefinite(coords, z)
    found = bool(sol.success and np.isfinite(residual) and valid
                 and residual <= residual_tol * scale * max(np.max(np.abs(z)), 1.0)
                 and distance <= max_distance)
    Q, R, T, T0 = coords.order_parameters(z if found else z0)
    fp = FixedPoint(found=found, message="", state=coords.unpack(z if found else z0),
                    error=float(error_at((z if found else z0)[:, None])[0]), Q=Q, R=R, T=T, T0=T0,
                    pca_errors=np.asarray(result.pca_errors), residual=residual, distance=distance)
    t, err = np.asarray(result.t), np.asarray(result.error)
    fit_from = _default_fit_start(t) if fit_from is None else float(fit_from)
    late = t >= fit_from
    fp.fit_window = (fit_from, float(t[-1]))
    if not found:
        why = ("least squares did not converge" if not sol.success else
               "the root is not a valid state (a bulk matrix is not positive semi-definite)" if not valid else
               f"the closest root is {distance:.3g} |y0| away" if distance > max_distance else
               f"the residual stalls at {residual:.3g}")
        excess = err - float(result.pca_errors[-1])
        fp.power = fit_power(t[late], excess[late])
        drift = np.max(np.abs(coords.rhs(z0)))
        fp.message = (f"no stationary state near the state at t = {t[index]:.4g} ({why}; "
                      f"|f(y0)| = {drift:.3g}); the error excess over eps_PCA(K) decays like "
                      f"t^-{fp.power:.3g} over t >= {fit_from:.3g}")
        return fp

    fp.eigenvalues = lam
    fp.zero_threshold = zero_tol * scale
    zero = np.abs(lam) <= fp.zero_threshold
    fp.n_zero = int(zero.sum())
    fp.symmetries, fp.n_symmetry = _symmetries(coords, z, J, zero_tol)
    unstable = lam.real > zero_tol * scale
    fp.n_unstable = int(unstable.sum())
    fp.stable = fp.n_unstable == 0
    decaying = ~zero & ~unstable
    if fp.stable and decaying.any():
        rates = -lam.real
        fp.rate = float(np.min(rates[decaying]))
        grad = _gradient(error_at, z, coords.steps(z, rel_step))
        proj = np.abs(grad @ vecs) / (np.linalg.norm(grad) * np.linalg.norm(vecs, axis=0) + 1e-300)
        linear = decaying & (proj > 1e-6)
        fp.error_rate = float(min(np.min(rates[linear]) if linear.any() else np.inf, 2 * fp.rate))
        excess = err - fp.error
        fp.fitted_rate = fit_rate(t[late], excess[late])
    parts = [f"fixed point at error {fp.error:.6g} (eps_PCA(K) = {result.pca_errors[-1]:.6g}), "
             f"residual {residual:.2g}, {distance:.2g} |y0| from the state at t = {t[index]:.4g}"]
    parts.append("stable" if fp.stable else f"unstable: {fp.n_unstable} growing mode(s), "
                 f"fastest rate {lam[0].real:.4g}")
    if fp.n_zero:
        names = ", ".join(f"{k}: {v}" for k, v in fp.symmetries.items() if v)
        parts.append(f"{fp.n_zero} zero mode(s), {fp.n_symmetry} from symmetries ({names or 'none'})")
        if fp.n_zero != fp.n_symmetry:
            parts.append("unexplained zero modes: a continuum of stationary states, or a slow mode "
                         "below zero_tol")
    if np.isfinite(fp.rate):
        efolds = fp.error_rate * (t[-1] - fit_from)
        parts.append(f"slowest decay rate {fp.rate:.4g}; error approaches at rate {fp.error_rate:.4g} "
                     f"(fitted on the error curve over t in [{fit_from:.3g}, {t[-1]:.3g}], "
                     f"{efolds:.2g} e-folds: {fp.fitted_rate:.4g})")
    fp.message = "; ".join(parts)
    return fp


#: residual standing in for a state outside the kernels' domain (non-finite drift)
WALL = 1e30


def _finite(a, fill):
    """a with every entry replaced by `fill` if any is non-finite (Levenberg-Marquardt then
    rejects the step and shortens the next)."""
    return a if np.all(np.isfinite(a)) else np.full_like(a, fill)


def _symmetries(coords, z, J, zero_tol):
    """{name: rank of that family's generators with J g = 0} and the joint rank of all."""
    norm_J = np.linalg.norm(J, 2)
    found, kept = {}, []
    for name, G in coords.generators(z).items():
        ok = [g for g in G if np.linalg.norm(g) > 0
              and np.linalg.norm(J @ g) <= 10 * zero_tol * norm_J * np.linalg.norm(g)]
        found[name] = _rank(np.array(ok)) if ok else 0
        kept.extend(ok)
    return found, (_rank(np.array(kept)) if kept else 0)


def _rank(G, rtol=1e-6):
    s = np.linalg.svd(G / np.linalg.norm(G, axis=1, keepdims=True), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def _positive_semidefinite(coords, z, rtol=1e-8):
    """The bulk matrices at z are PSD up to rtol times the state's largest entry (a matrix
    that decays to zero may be reached from just below by the root finder)."""
    _, S = coords.system.parts(coords.unpack(z)[None])
    if S.shape[1] == 0:
        return True
    return bool(np.all(np.linalg.eigvalsh(S[0]) >= -rtol * max(np.max(np.abs(z)), 1e-300)))


def _gradient(fun, z, h):
    """Central-difference gradient of a scalar function vectorised over columns."""
    E = np.diag(h)
    F = fun(np.concatenate([z[:, None] + E, z[:, None] - E], axis=1))
    return (F[:z.size] - F[z.size:]) / (2 * h)


def _default_fit_start(t):
    """Start of the last half of the recorded times in log t (t > 0)."""
    pos = t[t > 0]
    if pos.size == 0:
        return 0.0
    return float(np.sqrt(pos[0] * pos[-1]))


def fit_rate(t, excess, floor=1e-9):
    """Rate r of excess ~ C exp(-r t): least squares of log(excess) on t over the points where
    excess > floor * max(excess) (nan with fewer than three such points or a non-positive
    excess)."""
    t, excess = np.asarray(t, float), np.asarray(excess, float)
    keep = excess > floor * np.max(np.abs(excess), initial=0.0)
    if keep.sum() < 3:
        return np.nan
    slope = np.polyfit(t[keep], np.log(excess[keep]), 1)[0]
    return float(-slope)


def fit_power(t, excess):
    """Exponent p of excess ~ C t^-p: least squares of log(excess) on log(t) over t > 0,
    excess > 0 (nan with fewer than three such points)."""
    t, excess = np.asarray(t, float), np.asarray(excess, float)
    keep = (t > 0) & (excess > 0)
    if keep.sum() < 3:
        return np.nan
    return float(-np.polyfit(np.log(t[keep]), np.log(excess[keep]), 1)[0])
