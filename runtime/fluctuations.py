"""Fluctuations of the spikes at finite D: the linear-noise (system-size) expansion.

In one SGD run a spike's direction vector theta_s moves by O(1/D) per step with a random part of
the same size, so over a unit of time it fluctuates by O(1/sqrt(D)) around the mean path. The
error is not linear in theta_s, so the seed-averaged error differs from the error of the mean
state by O(1/D), with a large prefactor when the spikes are strong (rho_s = s D). Van Kampen's
expansion to that order, on the state y of the finite-D equations (spike vectors and bulk
matrices, runtime.integrate) with C = Cov(y):

    d<y>/dt = F(<y>) + 1/2 F'':C,        dC/dt = J C + C J^T + Sigma,
    Sigma = N_spikes - (d theta/dt)(d theta/dt)^T / D   (spike block; derive.finite, cross=True),

J = dF/dy, F the finite-D drift. The bulk matrices are sums over ~D directions: their own noise is
O(D^-3/2) and left out, but they respond to the spikes' fluctuations through J. F'':C and J C
are read off F at the points <y> +- sqrt|lambda_i| e_i along the eigenvectors of C, each pair
weighted by the sign of lambda_i (exact for quadratic F, and linear in C), one vectorised call.
F differs from its D -> infinity limit F_inf by O(1/D), so to this order F'':C and J C are those
of F_inf, whose averages are kernels in closed form, and only F(<y>) and the spikes' noise need the
finite-D equations' numerical averages. The same points
give the mean error, <eps> = eps(<y>) + 1/2 eps'':C, and (with the points <y> + d_i + d_j) the
predicted seed-to-seed spread of the error. With a trained encoder bias b (runtime.integrate's
_BiasSystem) b fluctuates by O(1/sqrt(D)) too, driven by its own noise and its cross moments with
the spikes (BIAS_NOISE of the activation, derive.finite.derive_bias_noise).
"""
from __future__ import annotations

import numpy as np

#: eigenvalues of C below this fraction of the largest are dropped from the points
RELATIVE_CUTOFF = 1e-12
#: the expansion assumes small fluctuations: it stops (status -1) once the spikes' spread,
#: sqrt(tr C_spikes), exceeds this fraction of their mean |theta_spikes|. Measured: 0.05-0.1
#: where it matches SGD (tests/test_theory_vs_simulation.py); near a saddle, where runs escape
#: at different times, it grows without bound (erf, K = 2, spikes started at overlaps ~0.06:
#: 0.2, 0.34, 0.51, 0.67 at t = 5, 10, 15, 20).
MAX_RELATIVE_SPREAD = 0.5


class FluctuationSystem:
    """The state z = (<y>, C) of a finite-D system of runtime.integrate (`core`) with spike vectors;
    `limit`: the same system with the D -> infinity drift; `noises`: what core.step_noise takes
    (spike_noise_<rule>, or with a bias its spike and bias noise)."""

    def __init__(self, core, limit, noises):
        self.core, self.limit, self.noises = core, limit, noises
        self.n = None                 # size of y, set by initial_state

    @property
    def failed(self):
        return self.core.failed or self.limit.failed

    @failed.setter
    def failed(self, value):
        self.core.failed = value

    def initial_state(self, y0):
        """z0 = (y0, 0): every seed starts from the same weights."""
        self.n = y0.size
        return np.concatenate([y0, np.zeros(self.n * self.n)])

    def _split(self, z):
        y, C = z[:self.n], z[self.n:].reshape(self.n, self.n)
        return y, 0.5 * (C + C.T)

    def points(self, z):
        """(<y> followed by <y> + d_i and <y> - d_i: shape (1 + 2m, n); d_i = sqrt|lambda_i| e_i; the
        signs s_i of the eigenvalues lambda_i), over C's eigenpairs (lambda_i, e_i) with |lambda_i| above
        RELATIVE_CUTOFF of the largest."""
        return self._points(*self._split(z))

    @staticmethod
    def _points(y, C):
        lam, vec = np.linalg.eigh(C)
        keep = np.abs(lam) > RELATIVE_CUTOFF * np.max(np.abs(lam))
        d = (vec[:, keep] * np.sqrt(np.abs(lam[keep]))).T
        return np.concatenate([y[None], y + d, y - d]), d, np.sign(lam[keep])

    @staticmethod
    def mean(values, sign):
        """From f at points(): <f> = f(<y>) + 1/2 sum_i s_i (f_i+ + f_i- - 2 f(<y>)), over the leading axis:
        f(<y>) + 1/2 f'':C, exact for quadratic f. The signs make it (and J C) linear in any symmetric
        C: on the solution C is PSD and they are all +1, but a Newton iterate's C has eigenvalues of
        either sign near 0, where dropping the negative ones makes the right-hand side non-smooth and
        Newton's iteration slow (linear K = 2, D = 500, StructuredBDF: 1 234 right-hand sides with
        them dropped, 544 with the signs: docs/performance.md, eighth pass)."""
        m = (values.shape[0] - 1) // 2
        f0, fp, fm = values[0], values[1:m + 1], values[m + 1:]
        return f0 + 0.5 * np.tensordot(sign, fp + fm - 2 * f0, axes=1)

    def __call__(self, t, z):
        if z.ndim == 2:               # columns (a finite-difference Jacobian)
            return np.stack([self(t, col) for col in z.T], axis=1)
        y, C = self._split(z)
        split = self.core.split
        if split:
            spread = np.sqrt(max(np.trace(C[:split, :split]), 0.0)) / max(np.linalg.norm(y[:split]), 1e-300)
            if spread > MAX_RELATIVE_SPREAD:
                self.failed = self.failed or (
                    f"fluctuations no longer small at t = {t:.6g}: the spikes' spread is {spread:.2f} of their "
                    f"size (limit {MAX_RELATIVE_SPREAD}); SGD runs leave this state at different times (a saddle "
                    "or plateau), which the linear-noise expansion does not describe")
                return np.zeros_like(z)
        Y, d, sign = self._points(y, C)
        f = self.limit(t, Y.T).T                                  # (1 + 2m, n)
        m = d.shape[0]
        drift = self.core(t, Y[0])
        dy = drift + self.mean(f, sign) - f[0]
        JC = ((f[1:m + 1] - f[m + 1:]) / 2 * sign[:, None]).T @ d   # sum_i s_i (J d_i) d_i^T
        dC = JC + JC.T
        idx, N = self.core.step_noise(Y[0], self.noises)
        if idx.size:
            dC[np.ix_(idx, idx)] += N - np.outer(drift[idx], drift[idx]) / self.core.D
        return np.concatenate([dy, dC.ravel()])

    # the read-outs integrate() takes from a system, as seed averages

    def parts(self, Z):
        return self.core.parts(Z[:, :self.n])

    def _averaged(self, Z, fn):
        """Seed averages of fn(states (m, n)) -> (m, ...) at each state z in Z."""
        out = []
        for z in Z:
            Y, _, sign = self.points(z)
            out.append(self.mean(fn(Y), sign))
        return np.array(out)

    def order_parameters(self, Z):
        stacked = self._averaged(Z, lambda Y: np.stack(self.core.order_parameters(Y), axis=1))
        return tuple(stacked[:, i] for i in range(4))

    def biases(self, Z):
        return self._averaged(Z, self.core.biases)

    def error(self, act, Z, half_trace):
        return self._averaged(Z, lambda Y: self.core.error(act, Y, half_trace))

    def error_spread(self, act, Z, half_trace):
        """The predicted seed-to-seed standard deviation of the error, to second order: with
        y = <y> + sum_i z_i d_i (z ~ N(0, 1)), Var eps = sum_i g_i^2 + 1/2 sum_ij H_ij^2, g_i and
        H_ij the first and second differences of eps along d_i, d_j. Near a minimum of the
        error g -> 0 and the spread is the quadratic term, O(1/D) like the mean correction.

        It is the spread of a Gaussian about the mean path. A few runs that take up a spike late
        (a tail of escape times) are outside it, and they can dominate the standard deviation
        of a few seeds while the mean still agrees. Measured (issue 17, item 6; ReLU, K = 2,
        D = 200, lr = 0.5, the sweep's init from seed 0): at t = 20 this gives 0.013; 16 SGD seeds
        give 0.071, two of them late; 64 seeds give 0.039 (3 late), 0.010 by the median absolute
        deviation; by t = 80, once the late runs have caught up, 0.013 (predicted 0.021). integrate
        checks for such tails (runtime.validity: result.spread_check, a warning) and
        integrate(..., stochastic=True) gives the distribution itself (runtime.stochastic)."""
        out = []
        for z in Z:
            Y, d, sign = self.points(z)
            d = d[sign > 0]                              # (C is PSD: the others are rounding)
            Y = np.concatenate([Y[:1], Y[0] + d, Y[0] - d])
            m = d.shape[0]
            i, j = np.triu_indices(m, 1)
            pairs = Y[0] + d[i] + d[j]
            eps = self.core.error(act, np.concatenate([Y, pairs]), half_trace)
            e0, ep, em, eij = eps[0], eps[1:m + 1], eps[m + 1:2 * m + 1], eps[2 * m + 1:]
            H = np.diag(ep + em - 2 * e0)
            H[i, j] = H[j, i] = eij - ep[i] - ep[j] + e0
            out.append(np.sqrt(np.sum(((ep - em) / 2) ** 2) + 0.5 * np.sum(H ** 2)))
        return np.array(out)
