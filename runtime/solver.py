"""Implicit solvers with the equations' own Jacobian: block-diagonal plus low rank, Newton systems
solved by Woodbury (issue 13). StructuredBDF and StructuredRadau are scipy's BDF and Radau with it;
BlockBDF is scipy's BDF on many independent copies of one small system (a block-diagonal Jacobian,
runtime.validity's carried points). All three keep a Newton matrix's factorisation while the
step's shift moves by at most REUSE_SHIFT.

Given the order parameters p = (Q, R, T, T0 [, WW at finite D] [, the biases b]) the right-hand
side of runtime.integrate is affine in the state (_System.frozen, _BiasSystem.frozen):

    f(y) = L(p) y + c(p),  L(p) = blockdiag(M_tau = rho_hat_tau A + B     for each vector theta_tau,
                                            S_j -> M_j S_j + (M_j S_j)^T   for each matrix S_j,
                                            0                              for b),
                           c(p) = (0, N_j, db/dt),

and p(y) is quadratic: G = sum rho_hat theta theta^T + sum rho_hat_j S_j, sum theta theta^T + sum S_j
(SPEC section 3). So the Jacobian is

    J = L(p) + U W,   U = df/dp at fixed y (n x P),   W = dp/dy (P x n),

with P the number of independent entries of p (the upper triangles of the symmetric Q, T, T0,
WW, every entry of R, and b: 46 for K = 4), whatever the number n of state variables. U costs
one vectorised drift call over P + 1 order parameters (forward differences); W is applied as the
directional derivative of p. The Newton matrices of scipy's BDF (variable order 1-5, Shampine &
Reichelt, SIAM J. Sci. Comput. 18, 1 (1997)) and Radau IIA (order 5, Hairer & Wanner II, IV.8;
complex c), I - cJ = Pc - c U W with Pc = I - cL block-diagonal, are solved with the Woodbury
identity

    (Pc - c U W)^-1 = Pc^-1 + Pc^-1 U (I_P - c W Pc^-1 U)^-1 c W Pc^-1,

where scipy's solvers form J by n finite differences and factorise it in O(n^3). The vectors' blocks
I - c (rho_hat_tau A + B) share one eigenbasis (_EigenWoodbury), so a factorisation costs
O(Jv F^3 + P F^3) and a solve O(n F) (block by block where that basis or C is ill-conditioned:
O(n P F) and O(n (P + F)), _Woodbury). A state of at most DENSE_MAX numbers (a spiked model: M
vectors and a matrix) has L + U W formed and LU-factorised instead (_Dense): there the Woodbury
solve's ~40 numpy calls cost more than the O(n^3) (spiked model, K = 4, n = 96: 0.111 -> 0.078 s).
At finite D the second-order terms N_j depend on S_j directly as well; that part (O(lr^2 / D)) is
left out of J, which only slows Newton's iteration (its residual is the exact right-hand side).

StructuredBDF and BlockBDF step as scipy's BDF but for Newton's iteration (_BDF): scipy's takes at
least two right-hand sides a step, since its convergence test needs the iteration's contraction rate,
measured from the second iterate; here the rate carried from earlier steps (CVODE's) lets a step whose
first correction is already small stop after one (erf K = 2 finite-D, D = 400: 436 -> 292).

With fluctuations (runtime.fluctuations: the mean <y> and covariance C of a finite-D state, n + n^2
numbers) the same two solvers take the Jacobian blockdiag(J, C -> J C + C J^T), J the D -> infinity
drift's (FluctuationJacobian); a Newton solve is an LU on <y> and a Sylvester equation on C
(_Lyapunov), O(n^3) against O(n^6) for scipy's dense LU, whose finite-difference Jacobian would
also cost n + n^2 right-hand sides of 2 n + 1 drift evaluations each.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
from scipy.integrate import BDF, Radau
from scipy.integrate._ivp.bdf import MAX_FACTOR, MAX_ORDER, MIN_FACTOR, NEWTON_MAXITER, change_D
from scipy.integrate._ivp.common import norm
from scipy.linalg import lu_factor, lu_solve, schur
from scipy.linalg.lapack import ztrsyl
from scipy.sparse import csc_matrix

from runtime.fluctuations import FluctuationSystem

#: relative size of the forward-difference steps in the order parameters
DIFFERENCE_STEP = 1e-7
#: the vector blocks I - c (rho_tau A + B) of a Newton matrix are inverted in one shared eigenbasis
#: (_EigenWoodbury) while cond(C) cond(V) is at most this (C = I - c B, V the eigenvectors of C^-1 A),
#: else one block at a time. The basis' solves err by ~1e-16 cond(C) cond(V) relative (measured: 1e-11 at
#: cond(C) ~ 1e6, 9e-2 next to a singular C, where the blocks themselves are well-conditioned); on the
#: bench's runs cond(V) <= 4.2 and cond(C) <= 84 at every state and shift tried
EIGENBASIS_CONDITION_MAX = 1e6
#: a Newton matrix I - cJ is refactorised only where c moved by more than this fraction from a factorised
#: one of the same Jacobian (CVODE's dgmax = 0.3, Hindmarsh et al., ACM TOMS 31, 363 (2005)); within it
#: the iteration is a modified Newton one, converging to the same solution (its residual is exact)
REUSE_SHIFT = 0.3
#: StructuredBDF evaluates a new Jacobian before a step when the step before it took more than this many
#: right-hand sides (Newton iterations, rejected tries included): scipy's BDF renews it only once Newton
#: fails to converge in 4, so a stale one costs ~3 right-hand sides a step and shorter steps (its step
#: factor shrinks with the iterations). Radau renews it so already (n_iter > 2).
REFRESH_ITERATIONS = 2
#: states of at most this many numbers have their Newton matrices formed and LU-factorised (_Dense): below
#: it an O(n^3) LU costs less than the Woodbury factorisation's and solves' Python (spiked model, n = 96)
DENSE_MAX = 256
#: _BDF's Newton iteration may stop after one right-hand side with the contraction rate carried from an
#: earlier step, which falls by at most RATE_DECAY a measurement (CVODE's CRDOWN): a carried rate that
#: dropped to 3e-9 at once accepted every first correction, and the error test rejected every step, down to
#: the smallest step (erf K = 2 vanilla, D = 400, rtol 1e-10)
CARRY_RATE, RATE_DECAY = True, 0.3


def _difference_steps(x):
    """Forward-difference steps for the numbers x: DIFFERENCE_STEP relative to each, at least to a
    thousandth of the largest."""
    return DIFFERENCE_STEP * np.maximum(np.abs(x), np.max(np.abs(x), initial=0.0) * 1e-3 + 1e-12)


class _Layout:
    """A system's state split into vectors (Jv, F), matrices (Jm, F, F) and the biases (K), and
    its order parameters' independent coordinates."""

    def __init__(self, system):
        self.system = system
        core = getattr(system, "core", system)          # _BiasSystem wraps a _System
        self.core, self.K, self.F = core, core.K, core.F
        self.rho_vec, self.rho_mat = core.rho_vec, core.rho_mat
        self.split, self.n_mat, self.n_bias = core.split, core.rho_mat.size * core.F ** 2, system.extra
        # order = (Q, R, T, T0, WW): which are present and symmetric
        slots = [0, 4] if core.tied else [0, 1, 2, 3] + ([4] if core.D is not None else [])
        self.coords = [(s, a, b) for s in slots for a in range(self.K) for b in range(self.K)
                       if s == 1 or a <= b]
        self.slots = slots
        index = np.array([(slots.index(s), a, b) for s, a, b in self.coords]).T
        self._index = index                                             # (slot position, a, b) per coordinate
        # p's coordinates are linear in (G, total) flattened side by side, each a weighted sum of at most
        # two entries (a symmetric part's (x_ab + x_ba) / 2): their indices and weights (2, P - K), found
        # once from coordinates() of unit G's and totals
        F = self.F
        units = np.eye(2 * F * F).reshape(2 * F * F, 2, F, F)
        linear = self.coordinates(self.order(units[:, 0], units[:, 1]), np.zeros((2 * F * F, 0)))
        entries = np.argsort(linear == 0, axis=0, kind="stable")[:2]            # the nonzero rows first
        self._entries, self._weights = entries, np.take_along_axis(linear, entries, axis=0)
        # (a, c) -> the position of (min, max) in np.triu_indices(F) (StructuredJacobian.pairs)
        upper = np.zeros((F, F), dtype=int)
        upper[np.triu_indices(F)] = np.arange(F * (F + 1) // 2)
        self.symmetric_index = np.maximum(upper, upper.T)

    def pieces(self, Y):
        """Y (m, n) -> vectors (m, Jv, F), matrices (m, Jm, F, F), biases (m, K)."""
        m, F = Y.shape[0], self.F
        end = self.split + self.n_mat
        return (Y[:, :self.split].reshape(m, -1, F), Y[:, self.split:end].reshape(m, -1, F, F),
                Y[:, end:])

    def order(self, G, total):
        """(Q, R, T, T0, WW) from G = sum rho_hat theta theta^T and total = sum theta theta^T,
        as _System._globals (None where absent)."""
        K, core = self.K, self.core
        WW = None if core.D is None else total[:, :K, :K] / core.D
        if core.tied:
            return G, None, None, None, WW
        return G[:, :K, :K], G[:, K:, :K], G[:, K:, K:], total[:, K:, K:], WW

    def coordinates(self, order, b):
        """The P independent numbers of p = (order, b): (m, P)."""
        X = np.stack([order[s] for s in self.slots], axis=1)              # (m, slots, K, K)
        X = 0.5 * (X + np.swapaxes(X, 2, 3)) if self.core.tied else np.concatenate(
            [0.5 * (X[:, :1] + np.swapaxes(X[:, :1], 2, 3)), X[:, 1:2],
             0.5 * (X[:, 2:] + np.swapaxes(X[:, 2:], 2, 3))], axis=1)      # symmetric parts, R as it is
        return np.concatenate([X[:, self._index[0], self._index[1], self._index[2]], b], axis=1)

    def dp(self, weighted, S, V):
        """W V: the directional derivatives of p at the state (th, S) along the rows of V (m, n);
        weighted = (rho_tau theta_tau, theta_tau) stacked as (2F, Jv) (StructuredJacobian.weighted)."""
        dth, dS, db = self.pieces(V)
        X = weighted @ dth                                               # (m, 2F, F)
        F = self.F
        return self.dp_from(X[:, :F], X[:, F:], dS, db)

    def dp_from(self, X, Xt, dS, db):
        """W V from the vectors' sums X = sum rho_tau theta_tau dtheta_tau^T and Xt = sum theta_tau
        dtheta_tau^T (m, F, F), the matrices' dS (m, Jm, F, F) and the biases' db (m, K)."""
        m, F = X.shape[0], self.F
        flat = dS.reshape(m, -1, F * F)
        dG = (X + np.swapaxes(X, 1, 2)).reshape(m, -1) + self.rho_mat @ flat
        dtotal = (Xt + np.swapaxes(Xt, 1, 2)).reshape(m, -1) + flat.sum(axis=1)
        both = np.concatenate([dG, dtotal], axis=1)
        return np.concatenate([both[:, self._entries[0]] * self._weights[0] + both[:, self._entries[1]] * self._weights[1],
                               db], axis=1)

    def apply(self, field, th, S):
        """f = L(p) y + c(p) for the fields (A, B, N[, db]) of m order parameters: (m, n) (the
        right-hand side's own _System.apply, and db/dt)."""
        out = self.core.apply(*field[:3], th, S)
        return np.concatenate([out, field[3]], axis=1) if self.n_bias else out

    def apply_matrices(self, field, S):
        """The matrices' part of apply: M_j S_j + (M_j S_j)^T + N_j, M_j = rho_j A + B (m, Jm, F, F)."""
        return self.core.apply_matrices(*field[:3], S)


class StructuredJacobian:
    """J = L + U W at a state y (module docstring); `c * J` and `I - c * J` describe the Newton
    matrix that _structured_factors factorises."""

    def __init__(self, layout, y):
        self.layout = layout
        Y = y[None]
        th, S, b = layout.pieces(Y)
        self.th, self.S = th[0], S[0]
        core = layout.core
        order = core._globals(Y[:, :Y.shape[1] - layout.n_bias])
        p0 = layout.coordinates(order, b)[0]
        P = p0.size
        steps = _difference_steps(p0)
        # P + 1 order parameters: p0, then p0 + step_k e_k
        perturbed = [None if o is None else np.repeat(o, P + 1, axis=0) for o in order]
        # the state itself, copied only where the biases' steps go into it
        Yrep = np.repeat(Y, P + 1, axis=0) if layout.n_bias else np.broadcast_to(Y, (P + 1, Y.shape[1]))
        for k, (s, a, c) in enumerate(layout.coords):
            perturbed[s][k + 1, a, c] += steps[k]
            if s != 1 and a != c:
                perturbed[s][k + 1, c, a] += steps[k]
        for i in range(layout.n_bias):
            Yrep[len(layout.coords) + 1 + i, y.size - layout.n_bias + i] += steps[len(layout.coords) + i]
        field = layout.system.frozen(Yrep, tuple(perturbed))
        # the derivatives of the fields (A, B, N[, db]) in p; f is linear in them at fixed y, so
        # row k of U (P, n) is apply(dfield_k), and U v = apply(sum_k v_k dfield_k) in O(n F)
        self.dfield = [(x[1:] - x[0]) / steps.reshape((-1,) + (1,) * (np.ndim(x) - 1)) if np.ndim(x) else 0.0
                       for x in field]
        self.A, self.B = A, B = field[0][0], field[1][0]
        self.weighted = np.concatenate([self.th * layout.rho_vec[:, None], self.th], axis=1).T    # (2F, Jv)
        upper = np.triu_indices(layout.F)
        self.pairs = self.th[:, upper[0]] * self.th[:, upper[1]]                     # theta_a theta_c, a <= c
        # the fields' derivatives flattened side by side (P, ...), for U_times' one product
        self._sizes = [np.size(d[0]) if np.ndim(d) else 0 for d in self.dfield]
        self._flat = np.concatenate([d.reshape(P, -1) for d in self.dfield if np.ndim(d)], axis=1)
        Mj = layout.rho_mat[:, None, None] * A + B                      # (Jm, F, F)
        F = layout.F
        I = np.eye(F)
        # S_j -> M_j S_j + (M_j S_j)^T as the right-hand side computes it (on symmetric S_j, M_j S_j + S_j M_j^T;
        # BDF's Newton iterates carry rounding-sized antisymmetric parts, which the other form amplifies)
        left = Mj[:, :, None, :, None] * I[None, None, :, None, :]      # (M_j (x) I)[(a, b), (c, d)]
        self.L = (left + left.transpose(0, 2, 1, 3, 4)).reshape(-1, F * F, F * F)

    @functools.cached_property
    def U(self):
        """U (P, n): row k is apply(dfield_k), df/dp_k at fixed y."""
        return self.layout.apply(self.dfield, self.th, np.repeat(self.S[None], self.dfield[0].shape[0], axis=0))

    @functools.cached_property
    def dense(self):
        """J as an n x n matrix (_Dense): L from the frozen field applied to the unit vectors, plus U^T W."""
        layout = self.layout
        n = self.U.shape[1]
        E = np.eye(n)
        th, S, b = layout.pieces(E)
        field = (np.broadcast_to(self.A, (n,) + self.A.shape), np.broadcast_to(self.B, (n,) + self.B.shape), 0.0,
                 np.zeros_like(b))
        return layout.apply(field, th, S).T + self.U.T @ layout.dp(self.weighted, self.S, E).T

    def fields_along(self, v):
        """The fields' derivative along v (size P), sum_k v_k dfield_k, each with a leading axis of 1."""
        parts = np.split(v @ self._flat, np.cumsum(self._sizes)[:-1])
        return [part.reshape((1,) + np.shape(d)[1:]) if np.ndim(d) else 0.0 for part, d in zip(parts, self.dfield)]

    def U_times(self, v):
        """U v = sum_k v_k df/dp_k (n,) for v of size P, from the fields' derivatives: O(n F)."""
        return self.layout.apply(self.fields_along(v), self.th[None], self.S[None])[0]

    def __rmul__(self, c):
        return _Scaled(c, self)


class _Scaled:
    """c * J"""

    def __init__(self, c, J):
        self.c, self.J = c, J


class _Identity:
    """The solvers' `self.I`: BDF forms I - c * J, Radau mu * I - J; either becomes the
    (a, b, J) of a I - b J to factorise."""

    def __init__(self, a=1.0):
        self.a = a

    def __rmul__(self, a):
        return _Identity(a * self.a)

    def __sub__(self, other):
        return (self.a, other.c, other.J) if isinstance(other, _Scaled) else (self.a, 1.0, other)


class _Factors:
    """A factorisation of (I - c J) / a, with `a` and a `solve(r)`; reused for a nearby shift (_set_up)."""

    def rescaled(self, a):
        """(a I - b' J)^-1 approximated by this factorisation of (I - c J) / a (b' / a close to c)."""
        other = copy.copy(self)
        other.a = a
        return other


def _structured_factors(a, b, J):
    """The factorisation of (a I - b J) for J = StructuredJacobian: formed and LU-factorised for a
    state of at most DENSE_MAX numbers (_Dense), else in the vector blocks' shared eigenbasis
    (_EigenWoodbury) where it and C = I - c B are well-conditioned (EIGENBASIS_CONDITION_MAX), else
    block by block (_Woodbury)."""
    if J.th.size + J.S.size + J.layout.n_bias <= DENSE_MAX:
        return _Dense(a, b, J)
    c, F = b / a, J.layout.F
    C = np.eye(F) - c * J.B
    try:
        cond = np.linalg.cond(C)
        if cond <= EIGENBASIS_CONDITION_MAX:
            lam, V = np.linalg.eig(np.linalg.solve(C, J.A))
            if cond * np.linalg.cond(V) <= EIGENBASIS_CONDITION_MAX:
                return _EigenWoodbury(a, b, J, lam, V, np.linalg.solve(C @ V, np.eye(F)))
    except np.linalg.LinAlgError:                  # eig did not converge: block by block
        pass
    return _Woodbury(a, b, J)


class _Dense(_Factors):
    """(a I - b J)^-1 = (I - c J)^-1 / a by LU of the formed I - c J (StructuredJacobian.dense)."""

    def __init__(self, a, b, J):
        self.a, self.c = a, b / a
        self.factors = lu_factor(np.eye(J.dense.shape[0]) - self.c * J.dense, check_finite=False)

    def solve(self, r):
        out = lu_solve(self.factors, r, check_finite=False)
        return out if self.a == 1 else out / self.a


class _Woodbury(_Factors):
    """(a I - b J)^-1 = (I - c J)^-1 / a, c = b / a, for J = L + U W: the block-diagonal Pc = I - cL
    inverted block by block and the P x P capacitance matrix I - c W Pc^-1 U factorised
    (complex for Radau's complex shift), W Pc^-1 U from the formed Pc^-1 U (P, n): O(P Jv F^2)."""

    def __init__(self, a, b, J):
        self._common(a, b, J)
        F, layout = J.layout.F, J.layout
        self.Pv = np.linalg.inv(np.eye(F) - self.c * (layout.rho_vec[:, None, None] * J.A + J.B))
        self._factorise(layout.dp(J.weighted, J.S, self.inverse_blocks(J.U)))

    def _common(self, a, b, J):
        self.J, self.a = J, a
        self.c = c = b / a
        self.real = np.isrealobj(c)
        F = J.layout.F
        self.Pm = np.linalg.inv(np.eye(F * F) - c * J.L)

    def _factorise(self, WZ):
        """WZ (P, P): row k is W Pc^-1 U_k."""
        self.cap = lu_factor(np.eye(WZ.shape[0]) - self.c * WZ.T)

    def inverse_matrices(self, S):
        """The matrix blocks' inverses applied to S (m, Jm, F, F)."""
        m, Jm, F = S.shape[:3]
        return (self.Pm @ S.reshape(m, Jm, F * F).transpose(1, 2, 0)).transpose(2, 0, 1).reshape(m, Jm, F, F)

    def inverse_blocks(self, rows):
        """Pc^-1 applied to the rows (m, n)."""
        th, S, b = self.J.layout.pieces(rows)
        m = rows.shape[0]
        # rows times Pv^T, one (m, F) x (F, F) product per direction: 30 % faster than Pv @ th^T
        vectors = (np.swapaxes(th, 0, 1) @ np.swapaxes(self.Pv, 1, 2)).transpose(1, 0, 2)
        return np.concatenate([vectors.reshape(m, -1), self.inverse_matrices(S).reshape(m, -1),
                               b.astype(vectors.dtype)], axis=1)

    def solve(self, r):
        """Pc^-1 r + Pc^-1 U w, w = (capacitance)^-1 c W Pc^-1 r, with U w formed from the fields'
        derivatives (StructuredJacobian.U_times)."""
        z = self.inverse_blocks(r[None])
        w = lu_solve(self.cap, self.c * self.J.layout.dp(self.J.weighted, self.J.S, z)[0])
        return (z[0] + self.inverse_blocks(self.J.U_times(w)[None])[0]) / self.a


class _EigenWoodbury(_Woodbury):
    """_Woodbury with the vector blocks I - c (rho_tau A + B) = C (I - c rho_tau C^-1 A), C = I - c B,
    inverted in the eigenbasis they share, C^-1 A = V diag(lambda) V^-1, E = V^-1 C^-1:

        (I - c M_tau)^-1 = V diag(1 / (1 - c rho_tau lambda)) E,

    so Pc^-1 on the vectors is two (Jv, F) x (F, F) products and a scaling, and W Pc^-1 U needs only
    the moments H_u[i, a, c] = sum_tau u_tau theta_tau,a theta_tau,c / (1 - c rho_tau lambda_i),
    u = rho^2, rho, 1: O(Jv F^3 + P F^3) against _Woodbury's O(P Jv F^2). A solve stays in the
    eigenbasis until its last product."""

    def __init__(self, a, b, J, lam, V, E):
        self._common(a, b, J)
        layout = J.layout
        self.eigvecs, self.E = V, E
        self.scale = 1.0 / (1.0 - self.c * layout.rho_vec[:, None] * lam)       # (Jv, F)
        rho = layout.rho_vec
        weights = np.stack([rho ** 2, rho, np.ones_like(rho)])[:, :, None] * self.scale     # (3, Jv, F)
        H = (np.swapaxes(weights, 1, 2) @ J.pairs)[..., layout.symmetric_index]                 # (3, F, F, F)
        # sum_tau w_tau theta_tau (Pc^-1 U_k)_tau^T = [sum_c GA_k[i, c] H_(w rho)[i, a, c] + GB_k[i, c]
        # H_w[i, a, c]]_(a, i) V^T with GA_k = E dA_k, GB_k = E dB_k, for w = rho (G) and 1 (the total):
        # (i, P, 2F) [GA_k[i], GB_k[i]] times (i, 2F, F) [H_(w rho)[i]^T; H_w[i]^T]
        EdAB = np.concatenate([E @ J.dfield[0], E @ J.dfield[1]], axis=2)                      # (P, F, 2F)
        self.EdAB = EdAB.reshape(EdAB.shape[0], -1)
        G = EdAB.transpose(1, 0, 2)
        X, Xt = ((G @ np.concatenate([H[w], H[w + 1]], axis=2).transpose(0, 2, 1)).transpose(1, 2, 0) @ V.T
                 for w in (0, 1))
        if self.real:
            X, Xt = X.real, Xt.real
        dS = self.inverse_matrices(layout.apply_matrices(J.dfield, J.S))
        db = J.dfield[3] if layout.n_bias else np.zeros((G.shape[1], 0))
        self._factorise(layout.dp_from(X, Xt, dS, db))

    def solve(self, r):
        J, layout = self.J, self.J.layout
        F = layout.F
        th, S, b = layout.pieces(r[None])
        u = (th[0] @ self.E.T) * self.scale                   # Pc^-1 r's vectors in the eigenbasis
        S = self.inverse_matrices(S)
        X = (J.weighted @ u) @ self.eigvecs.T                 # (2F, F)
        X = X.real if self.real else X
        w = lu_solve(self.cap, self.c * layout.dp_from(X[None, :F], X[None, F:], S, b)[0], check_finite=False)
        # Pc^-1 U w: E (rho_tau A_w + B_w) theta_tau, A_w = sum_k w_k dA_k, from the stored E dA_k, E dB_k
        # ([E A_w, E B_w] = sum_k w_k [E dA_k, E dB_k]) and (rho_tau theta_tau, theta_tau) side by side (J.weighted^T)
        u = u + (J.weighted.T @ (w @ self.EdAB).reshape(F, 2 * F).T) * self.scale
        vectors = u @ self.eigvecs.T
        out = [vectors.real if self.real else vectors]
        if S.size or layout.n_bias:
            field = J.fields_along(w)
            out.append(S + self.inverse_matrices(layout.apply_matrices(field, J.S)))
            out += [b + field[3]] if layout.n_bias else []
        out = np.concatenate([x.ravel() for x in out])
        return out if self.a == 1 else out / self.a


class FluctuationJacobian:
    """The Newton Jacobian of runtime.fluctuations' state z = (<y>, C): blockdiag(J, C -> J C + C J^T),
    J = dF_inf/dy at <y> by forward differences (one vectorised call of the D -> infinity drift on
    n + 1 states). Left out: F's O(1/D) finite-D part, the mean's 1/2 F'':C, and the covariance's
    dependence on <y> through J and the noise, all small next to J at this order; they only slow
    the (modified) Newton iteration, whose residual is the exact right-hand side."""

    def __init__(self, system, t, z):
        n = system.n
        y = z[:n]
        steps = _difference_steps(y)
        Y = np.repeat(y[:, None], n + 1, axis=1)                # y, then y + step_i e_i, as columns
        Y[np.arange(n), 1 + np.arange(n)] += steps
        f = system.limit(t, Y)
        self.J = (f[:, 1:] - f[:, :1]) / steps

    def __rmul__(self, c):
        return _Scaled(c, self)


class _Lyapunov(_Factors):
    """(a I - b J)^-1 = (I - c J)^-1 / a for J = FluctuationJacobian: an LU of I - c J on <y>, and on C
    the Sylvester equation X - c (J X + X J^T) = R, i.e. A X + X A^T = R with A = I/2 - c J, by
    Bartels and Stewart (Comm. ACM 15, 820 (1972)): A = Z T Z^H (complex Schur, once per
    factorisation), T Y + Y T^T = Z^H R conj(Z) by LAPACK's ztrsyl, X = Z Y Z^T; O(n^3) per
    solve against O(n^6) for the n^2 x n^2 matrix."""

    def __init__(self, a, b, J):
        self.a, c = a, b / a
        n = J.J.shape[0]
        self.lu = lu_factor(np.eye(n) - c * J.J)
        self.T, self.Z = schur((0.5 * np.eye(n) - c * J.J).astype(complex), output="complex")
        self.real = np.isrealobj(c)

    def solve(self, r):
        n = self.Z.shape[0]
        Z = self.Z
        Y, scale, info = ztrsyl(self.T, self.T.conj(), Z.conj().T @ r[n:].reshape(n, n) @ Z.conj(), tranb="C")
        if info < 0:
            raise RuntimeError(f"ztrsyl: argument {-info} is illegal")
        # info = 1: T and -T^H have close eigenvalues and LAPACK perturbed them; the solve is then a
        # modified Newton one (BDF's residual stays exact) and only converges more slowly
        X = Z @ (Y / scale) @ Z.T
        out = np.concatenate([lu_solve(self.lu, r[:n]), (X.real if self.real else X).ravel()])
        return out / self.a


class _Blocks:
    """A block-diagonal Jacobian: m blocks n x n (BlockBDF)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __rmul__(self, c):
        return _Scaled(c, self)


class _BlockInverse(_Factors):
    """(a I - b J)^-1 for a block-diagonal J, inverted block by block."""

    def __init__(self, a, b, J):
        self.a = a
        self.inverse = np.linalg.inv(np.eye(J.blocks.shape[1]) - (b / a) * J.blocks)

    def solve(self, r):
        m, n = self.inverse.shape[:2]
        return (self.inverse @ r.reshape(m, n, 1)).ravel() / self.a


def _set_up(solver, base, fun, t0, y0, t_bound, options, jacobian, factorise):
    """Set up `solver`, of scipy's class `base` (BDF or Radau), on `fun` with the Jacobian
    jacobian(y) and the Newton matrices' factorisations factorise(a, b, J) of a I - b J, each
    reused while b / a moves by at most REUSE_SHIFT (a modified Newton iteration)."""
    n = np.asarray(y0).size
    # a placeholder Jacobian for the solver's set-up, replaced below
    base.__init__(solver, fun, t0, y0, t_bound, jac=lambda t, y: csc_matrix((n, n)), **options)
    solver.njev = 0
    recent = []                                    # the last factorisations, (J, c, factors)

    def jac(t, y, *f):
        solver.njev += 1
        return jacobian(t, y)

    def lu(abJ):
        a, b, J = abJ
        for J0, c0, factors in recent:
            if J0 is J and abs(b / a / c0 - 1) <= REUSE_SHIFT:
                return factors.rescaled(a)
        solver.nlu += 1
        factors = factorise(a, b, J)
        recent[:] = [(J, b / a, factors)] + recent[:1]
        return factors

    solver.jac, solver.J = jac, jac(t0, solver.y)
    solver.lu, solver.solve_lu, solver.I = lu, lambda LU, r: LU.solve(r), _Identity()


def _structured(solver, base, fun, t0, y0, t_bound, options):
    """`solver` of scipy's class `base` on a system of runtime.integrate with the structured Jacobian
    (of runtime.fluctuations' mean and covariance for a FluctuationSystem)."""
    if isinstance(fun, FluctuationSystem):
        _set_up(solver, base, fun, t0, y0, t_bound, options, lambda t, z: FluctuationJacobian(fun, t, z), _Lyapunov)
        return
    layout = _Layout(fun)
    _set_up(solver, base, fun, t0, y0, t_bound, options, lambda t, y: StructuredJacobian(layout, y),
            _structured_factors)


class _BDF(BDF):
    """scipy's BDF (the same steps, order and step-size control: _step_impl below is scipy 1.17's, line
    for line, but for the Newton iteration) whose Newton iteration may stop after one right-hand side.
    scipy's stops when rate / (1 - rate) |dy| < tol, rate = |dy_k| / |dy_(k-1)| the iteration's
    contraction, measured from its second iterate on: every step costs at least two right-hand sides.
    Here the rate of the latest step that measured one stands in until the step measures its own
    (CVODE's carried crate, Hindmarsh et al., ACM TOMS 31, 363 (2005), section 2.1), forgotten with the
    Jacobian it was measured with: a step whose first correction is already within the test takes one."""

    _rate = None         # the carried contraction rate

    def _newton(self, t_new, y_predict, c, psi, LU, scale):
        """scipy's solve_bdf_system with the carried rate: (converged, iterations, y, d)."""
        tol, carried = self.newton_tol, self._rate if CARRY_RATE else None
        d, y, dy_norm_old = 0, y_predict.copy(), None
        for k in range(NEWTON_MAXITER):
            f = self.fun(t_new, y)
            if not np.all(np.isfinite(f)):
                return False, k + 1, y, d
            dy = self.solve_lu(LU, c * f - psi - d)
            dy_norm = norm(dy / scale)
            rate = carried if dy_norm_old is None else dy_norm / dy_norm_old
            if dy_norm_old is not None and (rate >= 1 or rate ** (NEWTON_MAXITER - k) / (1 - rate) * dy_norm > tol):
                return False, k + 1, y, d
            y += dy
            d += dy
            if dy_norm_old is not None:
                self._rate = rate if carried is None else max(RATE_DECAY * carried, rate)
            if dy_norm == 0 or rate is not None and rate < 1 and rate / (1 - rate) * dy_norm < tol:
                return True, k + 1, y, d
            dy_norm_old = dy_norm
        return False, NEWTON_MAXITER, y, d

    def _new_jacobian(self, t, y):
        self._rate = None
        return self.jac(t, y)

    def _step_impl(self):
        t = self.t
        D = self.D

        max_step = self.max_step
        min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
        if self.h_abs > max_step:
            h_abs = max_step
            change_D(D, self.order, max_step / self.h_abs)
            self.n_equal_steps = 0
        elif self.h_abs < min_step:
            h_abs = min_step
            change_D(D, self.order, min_step / self.h_abs)
            self.n_equal_steps = 0
        else:
            h_abs = self.h_abs

        atol, rtol, order = self.atol, self.rtol, self.order
        alpha, gamma, error_const = self.alpha, self.gamma, self.error_const
        J, LU = self.J, self.LU
        current_jac = False

        step_accepted = False
        while not step_accepted:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            h = h_abs * self.direction
            t_new = t + h
            if self.direction * (t_new - self.t_bound) > 0:
                t_new = self.t_bound
                change_D(D, order, np.abs(t_new - t) / h_abs)
                self.n_equal_steps = 0
                LU = None
            h = t_new - t
            h_abs = np.abs(h)

            y_predict = np.sum(D[:order + 1], axis=0)
            scale = atol + rtol * np.abs(y_predict)
            psi = np.dot(D[1: order + 1].T, gamma[1: order + 1]) / alpha[order]

            converged = False
            c = h / alpha[order]
            while not converged:
                if LU is None:
                    LU = self.lu(self.I - c * J)
                converged, n_iter, y_new, d = self._newton(t_new, y_predict, c, psi, LU, scale)
                if not converged:
                    if current_jac:
                        break
                    J = self._new_jacobian(t_new, y_predict)
                    LU = None
                    current_jac = True

            if not converged:
                factor = 0.5
                h_abs *= factor
                change_D(D, order, factor)
                self.n_equal_steps = 0
                LU = None
                continue

            safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + max(n_iter, 2))
            scale = atol + rtol * np.abs(y_new)
            error = error_const[order] * d
            error_norm = norm(error / scale)
            if error_norm > 1:
                if n_iter == 1:             # the correction may hold the iteration's error: measure again
                    self._rate = None
                factor = max(MIN_FACTOR, safety * error_norm ** (-1 / (order + 1)))
                h_abs *= factor
                change_D(D, order, factor)
                self.n_equal_steps = 0
            else:
                step_accepted = True

        self.n_equal_steps += 1
        self.t, self.y, self.h_abs, self.J, self.LU = t_new, y_new, h_abs, J, LU
        # the differences of the new interpolating polynomial (d = D^(k+1) y_n)
        D[order + 2] = d - D[order + 1]
        D[order + 1] = d
        for i in reversed(range(order + 1)):
            D[i] += D[i + 1]
        if self.n_equal_steps < order + 1:
            return True, None

        error_m_norm = norm(error_const[order - 1] * D[order] / scale) if order > 1 else np.inf
        error_p_norm = norm(error_const[order + 1] * D[order + 2] / scale) if order < MAX_ORDER else np.inf
        error_norms = np.array([error_m_norm, error_norm, error_p_norm])
        with np.errstate(divide='ignore'):
            factors = error_norms ** (-1 / np.arange(order, order + 3))
        order += np.argmax(factors) - 1
        self.order = order
        factor = min(MAX_FACTOR, safety * np.max(factors))
        self.h_abs *= factor
        change_D(D, order, factor)
        self.n_equal_steps = 0
        self.LU = None
        return True, None


class StructuredBDF(_BDF):
    """scipy's BDF on a system of runtime.integrate (_System or _BiasSystem, passed as `fun`)
    with the structured Jacobian and Newton solves of the module docstring (Woodbury, or the formed
    matrix on small states) and Newton's carried rate (_BDF), the Jacobian
    renewed after a step of more than REFRESH_ITERATIONS Newton iterations; `nfev` counts
    right-hand sides (Newton iterations), `njev` structured Jacobians (each one vectorised drift
    call over P + 1 order parameters), `nlu` factorisations."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        _structured(self, BDF, fun, t0, y0, t_bound, options)
        self._stale = False

    def _step_impl(self):
        if self._stale:
            self.J, self.LU = self._new_jacobian(self.t, self.y), None
        before = self.nfev
        out = super()._step_impl()
        self._stale = self.nfev - before > REFRESH_ITERATIONS
        return out


class StructuredRadau(Radau):
    """scipy's Radau IIA (order 5) with the structured Jacobian, as StructuredBDF."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        _structured(self, Radau, fun, t0, y0, t_bound, options)


class BlockBDF(_BDF):
    """scipy's BDF on m independent copies of one system of n numbers, stacked as y = (y_1, ..., y_m)
    (runtime.validity's carried points); `fun(t, y)` must take any number of stacked copies. The
    Jacobian is block-diagonal: its m blocks n x n by forward differences in one call of fun on
    m (n + 1) copies; Newton matrices are inverted block by block, O(m n^3) against O((m n)^3)."""

    def __init__(self, fun, t0, y0, t_bound, blocks, **options):
        m = blocks
        n = np.asarray(y0).size // m

        def jacobian(t, y):
            Y = y.reshape(m, n)
            steps = DIFFERENCE_STEP * np.maximum(np.abs(Y), 1e-6)               # (m, n)
            copies = np.repeat(Y[:, None, :], n + 1, axis=1)                    # y, then y + step_i e_i
            copies[:, 1 + np.arange(n), np.arange(n)] += steps
            f = np.asarray(fun(t, copies.ravel())).reshape(m, n + 1, n)
            return _Blocks(np.swapaxes((f[:, 1:] - f[:, :1]) / steps[:, :, None], 1, 2))

        _set_up(self, BDF, fun, t0, y0, t_bound, options, jacobian, _BlockInverse)
