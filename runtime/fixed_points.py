"""Long-time behaviour of the equations of motion: the stationary state a run heads for, its
stability, and the rate at which the error approaches it.

Given an `IntegrationResult` of `integrate(..., keep_atoms=True)`:

* Conserved charges: SGD is a gradient flow at rates lr/D for w and lr for v (SPEC section 1),
  so a symmetry of the loss that maps omega -> X omega, upsilon -> X^-T upsilon conserves
  tr(X C) with C = W W^T - V V^T / D (Noether). Linear g conserves all of C (GL(K)), relu its
  diagonal (rescaling of a unit), erf nothing. `Coordinates.conserved` measures which entries
  the integrated equations conserve (dC/dt cancels to 1e-8 of its two terms).
* `fixed_point(result)` solves f(y) = 0 together with C(y) = C(y0) for the right-hand side f,
  starting from the recorded state y0 (scipy least_squares, Levenberg-Marquardt, with the
  finite-difference Jacobian below; MINPACK's own QR, so no BLAS threads that slow small
  problems down on busy machines). Without the charges the root is any point of the orbit of
  stationary states; with them it is the one this run converges to. It works in the
  integrator's state (direction vectors of the small atoms, matrices S_j of the large ones),
  with each S_j reduced to its upper triangle so that the perturbations stay symmetric.
  Measured (linear, D = 400, spikes (3, 2, 1.5) D, W0, V0 ~ 0.5 N(0, 1), lr 0.5): the bulk
  holds |W|^2 ~ (D - 3) 0.25 ~ 99 per unit at t = 0; it drains into the spikes at rate
  ~ 2 lr T0 / D (T0 = 0.25 -> 0.0093), so at t = 500 and 1e4 (error 1.2 % and 0.17 % above
  eps_PCA(2)) it still holds 92 and 50, and Q_kk is 33-44 and 122-166 against 228-309 at the
  end: the state is ~|y0| away from its fixed point although the error (GL(K)-invariant) is
  close. The root is therefore accepted when the state is within max_distance |y0| of it or
  moves towards it.
  This is the D -> infinity picture. The finite-D equations (finite_size=True; integrate warns
  that they change this run's drift by 9 %) conserve nothing: their lr^2 terms move the state
  along the orbit towards small w (Q_kk 24-29 at t = 500, 2.4-5 at 1e4, 0.14-0.16 at 1e5, T0
  up to 15-18) while the error still reaches eps_PCA(2) (1.24634 at 1e5), and no finite
  stationary state is found there, as for erf.
* Stability: eigenvalues of the Jacobian J = df/dy at the fixed point by central differences,
  all 2n perturbed states in one call of the vectorised right-hand side.
* Zero modes: a continuous symmetry of the equations maps fixed points to fixed points, so its
  generator g at y* is a zero mode (J g = 0). The candidates tested are rotations among the
  direction vectors of one atom (a degenerate spike: the order parameters see only
  sum theta theta^T), the GL(K) mixing of units omega -> X omega, upsilon -> X^-T upsilon (a
  symmetry of linear networks; its diagonal is the rescaling of a unit, a symmetry of
  homogeneous g such as relu) and the rescaling omega_k -> c omega_k, upsilon_k -> upsilon_k/c^2
  (quadratic g). An eigenvalue is zero when |lambda| <= zero_factor (noise + eps max|lambda|),
  noise its numerical uncertainty: its first-order change between the Jacobians at steps h and
  2h. A threshold relative to max|lambda| cannot work: the bulk decays at ~2 lr rho_bulk / p
  (p ~ D scale_w^2, the spikes' share of |W|^2) while max|lambda| ~ lr Q ~ lr s p, a ratio
  ~ 2 / (D^3 scale_w^4 s_1) (7e-8 in the run above: 2.3e-5 against 325, where the old
  1e-6 max|lambda| counted the three bulk modes as zero: 7 zero modes for K^2 = 4). Measured
  there: zero modes |lambda| <= 2e-12 with uncertainty of the same size, bulk modes 2.3e-5 with
  uncertainty 1e-20.
* Approach rate: with y - y* = sum_i c_i v_i exp(lambda_i t), the error excess
  eps - eps* = grad(eps).(y - y*) + O(|y - y*|^2) decays at the slowest rate -Re lambda_i among
  the non-zero modes with grad(eps).v_i != 0, or twice the slowest state rate if that is slower
  (at a stationary point of a gradient flow grad(eps).v_i = 0 for the direction vectors, and the
  error is linear only in the bulk matrices). grad(eps).v_i is the slope along v_i by central
  differences, non-zero when above zero_factor times its uncertainty: a normalised projection
  cannot tell, for the slowest bulk mode's is 6.5e-8 (slope 1.3e-5 over |grad eps| = 198; the
  uncertainty of the slope is 5e-13). In the run above the rate is 2.29e-5 = 2 lr rho_bulk /
  p_max with p - 1/p the eigenvalues of C (the closed form of the linear network; the old
  0.0035-0.0042 was twice the rate of the unlearned third spike, 1.75e-3). `fit_rate` measures
  the rate on the late-time error curve: it agrees only once the bulk is small next to the
  charge; over t in [316, 1e5] it gives 5e-5, since T0, and with it the bulk's instantaneous
  rate 2 lr T0 / D, is still falling there (0.019 at t = 8e3, 0.0099 at 8e4).

Where there is no finite stationary state near y0 (e.g. erf, vanilla: the error decreases towards
eps_PCA(K) by shrinking w and growing v without end), the result says so (found=False) and
reports the power law of the late-time error excess over the PCA level it has reached instead
(erf, same run: excess ~ Q^2 with Q ~ t^-1/3, so t^-2/3; measured 0.669 over t in [1e5, 1e6],
0.77 over [1e3, 1e6]). Errors are named by their PCA level eps_PCA(m), not compared with
eps_PCA(K): relu without bias, K = 2, pairs its units into one linear unit at eps_PCA(1) for
spikes (2, 1) D (D = 300, lr 1); for (3, 2, 1.5) D (the run above) it stops instead in another
stable state, w_1,2 = +-a u_1 + c u_2 (a = 7.9, c = 6.7, field correlation -0.356), at
eps_PCA(1) + 0.0109 (SGD at D = 400: correlation -0.354, error 2.29 at t = 2000).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

import generated


@dataclass
class FixedPoint:
    """A stationary state of the equations of motion that a run heads for (see module doc).

    found: a root was found with residual and charges within tolerance, within max_distance of
    the state or approached by it. state: the integrator's raw state at the root (or at the
    start, when not found). error, Q, R, T, T0: the error and order parameters there. residual:
    max |f(y*)|; distance: |y* - y0| / |y0|; conserved: how many charges the root kept.
    eigenvalues: of the Jacobian at y* in the reduced coordinates, by decreasing real part;
    is_zero: which are zero modes (within zero_factor of their numerical uncertainty); n_zero:
    how many. symmetries: {name: number of independent generators with J g = 0}; n_symmetry:
    their joint rank. stable: no non-zero eigenvalue with Re lambda > 0; n_unstable: how many.
    rate: slowest decay rate -Re lambda of a non-zero mode; error_rate: predicted decay rate of
    eps - eps*; fitted_rate: the rate fitted on the late-time error curve (nan if not fitted)
    over fit_window = (t_from, t_to): it measures `error_rate` only if the window spans several
    e-folds of it in the linear regime. power: when no fixed point was found, the exponent p of
    eps - eps_PCA(m) ~ t^-p fitted on the late times, m the PCA level the error has reached.
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
    is_zero: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    conserved: int = 0

    def summary(self, n_eigenvalues=8):
        """A JSON-ready dict: the numbers above, the order parameters' diagonals, and the
        n_eigenvalues non-zero eigenvalues with the largest real parts (the zero modes are
        counted in n_zero_modes)."""
        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)

        ev = self.eigenvalues[~self.is_zero][:n_eigenvalues]
        return {
            "found": bool(self.found), "message": self.message, "error": num(self.error),
            "pca_error_K": None if self.pca_errors is None else float(self.pca_errors[-1]),
            "residual": num(self.residual), "distance": num(self.distance),
            "stable": bool(self.stable), "n_unstable": int(self.n_unstable),
            "n_zero_modes": int(self.n_zero), "n_symmetry_modes": int(self.n_symmetry),
            "conserved_charges": int(self.conserved),
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
        self.iu_units = np.triu_indices(system.K)
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
        Y = self.unpack(Z)
        Fz = self._pack_columns(self.drift(Y[:, None] if Y.ndim == 1 else Y))
        return Fz[:, 0] if Z.ndim == 1 else Fz

    def drift(self, Y):
        """f on raw states, columns Y (N, m); all NaN if the system flags non-finite drift."""
        before = self.system.failed
        self.system.failed = None
        F = self.system(0.0, Y)
        bad = self.system.failed
        self.system.failed = before
        return np.full_like(F, np.nan) if bad else F

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

    def jacobian(self, z, rel_step=1e-6, fun=None):
        """J_ij = d fun_i/dz_j (fun: f by default, vectorised over columns) by central
        differences, 2n states in one call."""
        h = self.steps(z, rel_step)
        E = np.diag(h)
        F = (fun or self.rhs)(np.concatenate([z[:, None] + E, z[:, None] - E], axis=1))
        n = z.size
        return (F[:, :n] - F[:, n:]) / (2 * h)

    # -- conserved charges: C = W W^T - V V^T / D -------------------------------------------------

    def charges(self, Z):
        """Upper triangle of C = W W^T - V V^T / D = sum over every direction tau of
        omega_tau omega_tau^T - upsilon_tau upsilon_tau^T / D, per column of Z (n, m) -> (K(K+1)/2, m);
        no rows with V tied to W."""
        Y = self.unpack(Z[:, None] if Z.ndim == 1 else Z)
        if self.K2 != 2 * self.system.K:
            C = np.zeros((0, Y.shape[1]))
        else:
            ww, vv = self._weight_products(Y, Y)
            C = (ww - vv)[:, self.iu_units[0], self.iu_units[1]].T
        return C[:, 0] if Z.ndim == 1 else C

    def conserved(self, states, rtol=1e-8):
        """Which entries of C the equations conserve (mask over `charges`' rows), measured on the
        recorded raw states (m, N): at the state where d(W W^T)/dt and d(V V^T / D)/dt move
        fastest, dC/dt, their difference, must cancel to rtol of them.

        Noether (module doc): a symmetry omega -> X omega, upsilon -> X^-T upsilon of the loss
        conserves tr(X C) under the vanilla flow. Measured (D = 300, spikes (2, 1) D): linear g
        conserves all of C, relu and truncated linear its diagonal, erf, relu with a trained
        bias and the finite-D equations (lr^2 terms) none.
        """
        if self.K2 != 2 * self.system.K:
            return np.zeros(0, bool)
        Y = np.asarray(states, float).T
        F = self.drift(Y)
        if not np.all(np.isfinite(F)):
            return np.zeros(self.iu_units[0].size, bool)
        dww, dvv = (a + np.swapaxes(a, -1, -2) for a in self._weight_products(Y, F, symmetric=False))
        dww, dvv = (a[:, self.iu_units[0], self.iu_units[1]] for a in (dww, dvv))
        activity = np.abs(dww) + np.abs(dvv)
        at = np.argmax(activity, axis=0), np.arange(activity.shape[1])
        return (activity[at] > 0) & (np.abs(dww - dvv)[at] <= rtol * activity[at])

    def _weight_products(self, Y, Yd, symmetric=True):
        """(Sum omega omega_d^T, Sum upsilon upsilon_d^T / D) over every direction, (m, K, K) each,
        for raw states Y and Yd (N, m) (Yd = Y: the products themselves; Yd = f(Y): half their
        time derivative, the matrices' drift halved unless symmetric)."""
        K = self.system.K
        th, S = self.system.parts(Y.T)
        thd, Sd = self.system.parts(Yd.T)
        total = th.transpose(0, 2, 1) @ thd + (1.0 if symmetric else 0.5) * Sd.sum(axis=1)
        return total[:, :K, :K], total[:, K:, K:]

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


def fixed_point(result, index=-1, *, zero_factor=100.0, max_distance=0.5, residual_tol=1e-9,
                fit_from=None, rel_step=1e-6):
    """The stationary state that the run recorded in `result` heads for from result.t[index]
    (module doc).

    result: IntegrationResult of integrate(..., keep_atoms=True). The root keeps the charges
    the equations conserve (Coordinates.conserved) at their values at t[index]. It counts as
    found when max |f(y*)| <= residual_tol max|lambda| max(|y*|, 1), the charges match to
    residual_tol, the bulk matrices are positive semi-definite and either
    |y* - y0| <= max_distance |y0| or the state moves towards y* (f(y0).(y* - y0) > 0). An
    eigenvalue is a zero mode when |lambda| <= zero_factor times its numerical uncertainty
    (module doc). fit_from: fit the error's late-time rate (or power law) on
    result.t >= fit_from (default: the last half of the recorded times, in log t).
    """
    if getattr(result, "state", None) is None or getattr(result, "system", None) is None:
        raise ValueError("fixed_point needs an IntegrationResult of integrate(..., keep_atoms=True)")
    if not zero_factor >= 1 or not max_distance > 0 or not residual_tol > 0:
        raise ValueError("zero_factor must be >= 1; max_distance and residual_tol positive")
    act = generated.load(result.activation)
    coords = Coordinates(result.system)
    pca = np.asarray(result.pca_errors)
    y0 = result.state[index]
    z0 = coords.pack(y0)
    kept = coords.conserved(result.state)
    charges = lambda Z: coords.charges(Z)[kept]
    C0 = charges(z0)

    def error_at(Z):
        return coords.system.error(act, coords.unpack(Z).T, float(pca[0]))

    def equations(Z):
        return np.concatenate([coords.rhs(Z), charges(Z) - (C0 if Z.ndim == 1 else C0[:, None])])

    sol = least_squares(lambda z: _finite(equations(z), WALL), z0, method="lm", x_scale="jac",
                        jac=lambda z: _finite(coords.jacobian(z, rel_step, equations), 0.0),
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
    z = sol.x
    J = coords.jacobian(z, rel_step)
    lam, vecs = np.linalg.eig(J)
    order = np.argsort(-lam.real, kind="stable")
    lam, vecs = lam[order], vecs[:, order]
    scale = float(np.max(np.abs(lam))) if lam.size else 0.0
    residual = float(np.max(np.abs(coords.rhs(z))))
    charge_gap = float(np.max(np.abs(charges(z) - C0), initial=0.0)
                       / max(np.max(np.abs(C0), initial=0.0), 1.0))
    distance = float(np.linalg.norm(z - z0) / max(np.linalg.norm(z0), 1e-300))
    approaching = float(coords.rhs(z0) @ (z - z0)) > 0
    valid = _positive_semidefinite(coords, z)
    found = bool(sol.success and np.isfinite(residual) and valid
                 and residual <= residual_tol * scale * max(np.max(np.abs(z)), 1.0)
                 and charge_gap <= residual_tol and (distance <= max_distance or approaching))
    at = z if found else z0
    Q, R, T, T0 = coords.order_parameters(at)
    fp = FixedPoint(found=found, message="", state=coords.unpack(at), error=float(error_at(at[:, None])[0]),
                    Q=Q, R=R, T=T, T0=T0, pca_errors=pca, residual=residual, distance=distance,
                    conserved=int(kept.sum()))
    t, err = np.asarray(result.t), np.asarray(result.error)
    fit_from = _default_fit_start(t) if fit_from is None else float(fit_from)
    late = t >= fit_from
    fp.fit_window = (fit_from, float(t[-1]))
    if not found:
        why = ("least squares did not converge" if not sol.success else
               "the root is not a valid state (a bulk matrix is not positive semi-definite)" if not valid else
               f"the charges drift to {charge_gap:.3g} of their size" if charge_gap > residual_tol else
               f"the closest root is {distance:.3g} |y0| away and the state moves away from it"
               if distance > max_distance and not approaching else
               f"the residual stalls at {residual:.3g}")
        m = _pca_level(err[-1], pca)
        fp.power = fit_power(t[late], err[late] - pca[m])
        drift = np.max(np.abs(coords.rhs(z0)))
        fp.message = (f"no stationary state near the state at t = {t[index]:.4g} ({why}; "
                      f"|f(y0)| = {drift:.3g}); the error excess over eps_PCA({m}) = {pca[m]:.6g} "
                      f"decays like t^-{fp.power:.3g} over t >= {fit_from:.3g}")
        return fp

    fp.eigenvalues = lam
    J_coarse = coords.jacobian(z, 2 * rel_step)
    fp.is_zero = np.abs(lam) <= zero_factor * (_eigenvalue_noise(J - J_coarse, vecs) + EPS * scale)
    fp.n_zero = int(fp.is_zero.sum())
    fp.symmetries, fp.n_symmetry = _symmetries(coords, z, J, J_coarse, zero_factor)
    unstable = (lam.real > 0) & ~fp.is_zero
    fp.n_unstable = int(unstable.sum())
    fp.stable = fp.n_unstable == 0
    decaying = ~fp.is_zero & ~unstable
    if fp.stable and decaying.any():
        rates = -lam.real
        fp.rate = float(np.min(rates[decaying]))
        slope, noise = _error_slopes(error_at, z, vecs)
        linear = decaying & (slope > zero_factor * noise)
        fp.error_rate = float(min(np.min(rates[linear]) if linear.any() else np.inf, 2 * fp.rate))
        fp.fitted_rate = fit_rate(t[late], err[late] - fp.error)
    m = _pca_level(fp.error, pca)
    parts = [f"fixed point at error {fp.error:.6g} = eps_PCA({m}) {fp.error - pca[m]:+.2g} "
             f"(eps_PCA(K) = {pca[-1]:.6g}), residual {residual:.2g}, {distance:.2g} |y0| from the state "
             f"at t = {t[index]:.4g}" + (", which moves towards it" if distance > max_distance else "")
             + (f", with its {fp.conserved} conserved charge(s)" if fp.conserved else "")]
    parts.append("stable" if fp.stable else f"unstable: {fp.n_unstable} growing mode(s), "
                 f"fastest rate {lam[0].real:.4g}")
    if fp.n_zero:
        names = ", ".join(f"{k}: {v}" for k, v in fp.symmetries.items() if v)
        parts.append(f"{fp.n_zero} zero mode(s), {fp.n_symmetry} from symmetries ({names or 'none'})")
        if fp.n_zero != fp.n_symmetry:
            parts.append("unexplained zero modes: a continuum of stationary states")
    if np.isfinite(fp.rate):
        efolds = fp.error_rate * (t[-1] - fit_from)
        parts.append(f"slowest decay rate {fp.rate:.4g}; error approaches at rate {fp.error_rate:.4g} "
                     f"(fitted on the error curve over t in [{fit_from:.3g}, {t[-1]:.3g}], "
                     f"{efolds:.2g} e-folds: {fp.fitted_rate:.4g})")
    fp.message = "; ".join(parts)
    return fp


#: machine epsilon: the floor of an eigenvalue's numerical uncertainty, relative to max |lambda|
EPS = np.finfo(float).eps


def _pca_level(error, pca_errors):
    """The fewest components m whose PCA error eps_PCA(m) (decreasing in m) is not above `error`,
    to round-off of eps_PCA(0): the PCA level the error has reached."""
    below = np.flatnonzero(pca_errors <= error + 1e-9 * pca_errors[0])
    return int(below[0]) if below.size else 0


def _eigenvalue_noise(dJ, vecs):
    """First-order change of each eigenvalue of J when J changes by dJ: |(V^-1 dJ V)_ii|, V the
    right eigenvectors (rows of V^-1: the left ones, normalised against them). With dJ the
    difference of the central-difference Jacobians at steps h and 2h this is the eigenvalue's
    numerical uncertainty (round-off over h dominates)."""
    return np.abs(np.diag(np.linalg.pinv(vecs) @ dJ @ vecs))


#: residual standing in for a state outside the kernels' domain (non-finite drift)
WALL = 1e30


def _finite(a, fill):
    """a with every entry replaced by `fill` if any is non-finite (Levenberg-Marquardt then
    rejects the step and shortens the next)."""
    return a if np.all(np.isfinite(a)) else np.full_like(a, fill)


def _symmetries(coords, z, J, J_coarse, zero_factor):
    """{name: rank of that family's generators with J g = 0} and the joint rank of all: |J g| within
    zero_factor times its numerical uncertainty |(J - J_coarse) g| + eps |J| |g|."""
    norm_J = np.linalg.norm(J, 2)
    found, kept = {}, []
    for name, G in coords.generators(z).items():
        ok = [g for g in G if np.linalg.norm(g) > 0 and np.linalg.norm(J @ g) <= zero_factor * (
              np.linalg.norm((J - J_coarse) @ g) + EPS * norm_J * np.linalg.norm(g))]
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


def _error_slopes(error_at, z, vecs, rel_step=1e-4):
    """|d eps / ds| along each eigenvector (unit norm; real and imaginary parts) at z by central
    differences with step s = rel_step |z|, and its numerical uncertainty: the change of that slope
    when s doubles plus the round-off eps |eps(z)| / s. Errors that are quadratic along a mode
    (direction vectors at a stationary point) give slopes O(s^2), below the uncertainty."""
    unit = vecs / np.linalg.norm(vecs, axis=0)
    dirs = np.concatenate([unit.real, unit.imag], axis=1)
    n = unit.shape[1]
    s = rel_step * max(np.linalg.norm(z), 1e-300)

    def slope(h):
        e = error_at(np.concatenate([z[:, None] + h * dirs, z[:, None] - h * dirs], axis=1))
        d = (e[:2 * n] - e[2 * n:]) / (2 * h)
        return d[:n] + 1j * d[n:]

    fine = slope(s)
    floor = EPS * abs(float(error_at(z[:, None])[0])) / s
    return np.abs(fine), np.abs(fine - slope(2 * s)) + floor


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
