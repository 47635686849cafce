"""Sample paths of SGD at finite D, one sample at a time in a reduced space (issue 15).

Where the diffusion approximation of runtime.stochastic does not hold (tied weights: with spikes
of order D their spike overlaps move by O(1) per step), each path is stepped sample by sample,
exactly as SGD, in a space whose size does not depend on D.

Why this is exact: every rule's update involves the sample x only through inner products among
{x, w_k, v_k (, c)} and moves the weights along x and the weights themselves. Within an atom of
the spectrum (directions of one eigenvalue rho_a, multiplicity m_a) x is isotropic, so only the
weights' span inside the atom matters, of dimension at most R (the number of weight vectors: K
tied, 2K untied, one more with an output bias). Each path keeps, per large atom, the weights'
coordinates in an orthonormal frame of R directions of that atom; a sample's components along
the frame are N(0, rho_a) each, and the rest of its component inside the atom is one fresh
direction orthogonal to the frame, of squared norm rho_a chi^2(m_a - R), which the update adds
to the span. Taken over a block of BLOCK samples, sample j of the block has N(0, rho_a)
components along the frame and the fresh directions of samples i < j, its own fresh direction
with squared norm rho_a chi^2(m_a - R - j), and none along the later ones (the Bartlett
decomposition of the block): the rule's update (runtime.simulate's, the same code SGD runs, with
the true D in its normalisations) then runs on arrays of R + BLOCK numbers per large atom, and
at the end of the block each atom's part of the weights is compressed back to R coordinates (the
Cholesky factor of the rows' Gram matrix in the atom's block, or a QR of the block where that
matrix is singular: every inner product is kept). Atoms of small multiplicity (spikes) keep
their directions explicitly. The law of every path is that of SGD at this D, at a cost per step
independent of D: one numpy update of all paths per sample, as in runtime.simulate.

Any spectrum of atoms with integer multiplicities (directions, not a density's quadrature) can be
stepped; the cost grows with the number of atoms of multiplicity above R + BLOCK (R + BLOCK
numbers each) plus the number of directions in the others.

Recorded states are integrate()'s (runtime.integrate: the spikes' direction vectors theta_tau,
each large atom's S_a = sum theta theta^T, a trained bias), so the result is read as the
diffusion paths' is.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from runtime import simulate as _simulate

#: samples stepped between two compressions of the large atoms' frames (tied linear, K = 2, D = 500,
#: 256 paths, t <= 10: 0.77, 0.68, 0.68, 1.2, 1.7 s with 2, 4, 8, 16, 32: the update's arrays grow with it)
BLOCK = 8


class ReducedPaths:
    """P paths of SGD in the reduced space of `spectrum` (runtime.spectrum.Spectrum).

    Columns: first the small atoms' directions (multiplicity below 2 `units`, integrate()'s
    direction vectors, in its order), then each large atom's block: all its directions if it has
    at most R + BLOCK of them, else R frame coordinates and BLOCK fresh slots. W, V (P, K, d),
    c (P, d) or None, b (P, K) or None; V is W for tied weights."""

    def __init__(self, spectrum, units, K, tied, y0, system, paths):
        self.D, self.units, self.K, self.tied, self.P = spectrum.D, units, K, tied, paths
        self.R = K if tied else 2 * K + (units > K)
        self.F = units if tied else 2 * units
        small = spectrum.mult < 2 * units
        large = np.flatnonzero(~small)
        odd = [j for j in large if spectrum.mult[j] != int(spectrum.mult[j])]
        if odd:
            raise ValueError(f"per-sample paths need a spectrum of directions (integer multiplicities); atom {odd[0]} "
                             f"has multiplicity {spectrum.mult[odd[0]]:g} (a quadrature node of a density)")
        th, S = (part[0] for part in system.parts(y0[None]))
        self.n_small = th.shape[0]
        rho, blocks, framed = [np.repeat(spectrum.rho[small], spectrum.mult[small].astype(int))], [], []
        start = self.n_small
        for a, j in enumerate(large):
            m = int(spectrum.mult[j])
            width = self.R + BLOCK if m > self.R + BLOCK else m
            blocks.append(slice(start, start + width))
            if m > self.R + BLOCK:
                framed.append((a, m))
            rho.append(np.full(width, spectrum.rho[j]))
            start += width
        self.blocks, self.framed, self.rho = blocks, framed, np.concatenate(rho)
        self.sqrt_rho = np.sqrt(self.rho)
        theta = np.zeros((self.F, start))
        theta[:, :self.n_small] = th.T
        for a, cols in enumerate(blocks):
            lam, vec = np.linalg.eigh(S[a])
            theta[:, cols.start:cols.start + self.F] = vec * np.sqrt(np.clip(lam, 0.0, None))
        theta = np.repeat(theta[None], paths, axis=0)
        sd = np.sqrt(self.D)
        self.W = theta[:, units - K:units] if tied else theta[:, units - K:units].copy()
        self.V = self.W if tied else theta[:, units + units - K:] * sd
        self.c = theta[:, units] * sd if units > K and not tied else None
        self.b = None if system.extra == 0 else np.repeat(y0[None, -system.extra:][:, units - K:], paths, axis=0)
        # columns drawn N(0, 1) for every sample: all but the framed atoms' fresh slots, whose
        # strictly lower triangle (sample j sees the slots i < j) is drawn apart and the diagonal
        # from the chi-square: no normal is drawn to be zeroed
        dense = np.ones(self.rho.size, bool)
        for a, _ in framed:
            dense[blocks[a].start + self.R:blocks[a].stop] = False
        self.dense = np.flatnonzero(dense)
        self.dense_slice = slice(0, self.dense.size) if np.array_equal(self.dense, np.arange(self.dense.size)) else None
        self.compress()

    def draw(self, rng, m):
        """The next m samples of every path (P, m, d) in the reduced coordinates: N(0, rho) along
        the small atoms' directions and the frames, along the fresh direction of each earlier
        sample of the block, and sqrt(rho chi^2(mult - R - j)) along sample j's own; one call of
        the generator for the normals, one for the chi-squares."""
        P, n_dense = self.P, self.dense.size
        low_j, low_i = _lower(m)
        Z = rng.standard_normal((P, m * n_dense + len(self.framed) * low_j.size))
        X = np.zeros((P, m, self.rho.size))
        dense = Z[:, :m * n_dense].reshape(P, m, n_dense)
        if self.dense_slice is not None:
            np.multiply(dense, self.sqrt_rho[self.dense_slice], out=X[:, :, self.dense_slice])
        else:
            X[:, :, self.dense] = dense * self.sqrt_rho[self.dense]
        if not self.framed:
            return X
        j, used = np.arange(m), m * n_dense
        chi = rng.chisquare(np.concatenate([mult - self.R - j for _, mult in self.framed]), (P, m * len(self.framed)))
        for k, (a, mult) in enumerate(self.framed):
            fresh, sd = self.blocks[a].start + self.R, np.sqrt(self.rho[self.blocks[a].start])
            X[:, low_j, fresh + low_i] = sd * Z[:, used:used + low_j.size]
            X[:, j, fresh + j] = np.sqrt(self.rho[self.blocks[a].start] * chi[:, k * m:(k + 1) * m])
            used += low_j.size
        return X

    def rows(self):
        """The weight vectors (P, R, d): W, then V and c (untied)."""
        if self.tied:
            return self.W
        return np.concatenate([self.W, self.V] + ([] if self.c is None else [self.c[:, None]]), axis=1)

    def compress(self):
        """Each framed atom's part of the weights back to R coordinates: the Cholesky factor L of
        the rows' Gram matrix G = M M^T in the atom's block (L L^T = G: every inner product kept, to
        rounding relative to the rows' norms, as a QR of the block keeps them); a QR of the block
        where the Gram matrix is numerically singular (rows that are dependent within the atom)."""
        if not self.framed:
            return
        M = self.rows()
        K = self.K
        for a, _ in self.framed:
            cols = self.blocks[a]
            B = M[:, :, cols]
            try:
                r = np.linalg.cholesky(B @ np.swapaxes(B, 1, 2))                                  # (P, R, R)
            except np.linalg.LinAlgError:
                r = np.swapaxes(np.linalg.qr(np.swapaxes(B, 1, 2), mode="r"), 1, 2)
            frame, fresh = slice(cols.start, cols.start + self.R), slice(cols.start + self.R, cols.stop)
            self.W[:, :, frame], self.W[:, :, fresh] = r[:, :K], 0.0
            if not self.tied:
                self.V[:, :, frame], self.V[:, :, fresh] = r[:, K:2 * K], 0.0
                if self.c is not None:
                    self.c[:, frame], self.c[:, fresh] = r[:, -1], 0.0

    def state(self):
        """integrate()'s states (P, N): the small atoms' theta_tau, each large atom's S_a, b."""
        P, K, sd = self.P, self.K, np.sqrt(self.D)
        if self.tied:
            theta = self.W
        else:
            lead = [] if self.c is None else [np.zeros((P, 1, self.rho.size))]
            ups = [] if self.c is None else [self.c[:, None] / sd]
            theta = np.concatenate(lead + [self.W] + ups + [self.V / sd], axis=1)
        th = np.swapaxes(theta[:, :, :self.n_small], 1, 2).reshape(P, -1)
        S = [theta[:, :, cols] @ np.swapaxes(theta[:, :, cols], 1, 2) for cols in self.blocks]
        parts = [th] + [s.reshape(P, -1) for s in S]
        if self.b is not None:
            parts.append(np.concatenate([np.zeros((P, self.units - K)), self.b], axis=1))
        return np.concatenate(parts, axis=1)


@lru_cache(maxsize=None)
def _lower(m):
    """The strictly lower triangle's (rows, columns) of a block of m samples: sample j's components
    along the fresh directions of the samples i < j."""
    return np.tril_indices(m, -1)


def sample_paths(act, rule, rule_params, lr, spectrum, system, y0, units, K, times, paths, seed, bar,
                 error_of, diverged):
    """`paths` SGD runs of `rule` from integrate()'s initial state y0 (all paths from the same
    weights), stepped per sample in the reduced space (ReducedPaths) with runtime.simulate's update
    of the rule, recorded at `times` (after round(t D) samples) as integrate()'s states; `seed`
    draws every path's samples. error_of: states (m, N) -> errors (m,); a path whose error passes
    `diverged` (or whose weights are not finite) stops the run, keeping what it recorded.
    Returns (t, states (n_t, paths, N), status, message, samples stepped per path) like
    runtime.stochastic.sample_paths."""
    registered = _simulate._registered_rule(rule)
    tied = _simulate.ties_v_to_w(rule, registered)
    kappa = _simulate._decay(rule, rule_params, registered)
    if tied != (system.F == units):
        raise ValueError(f"rule {rule!r} ties V to W in its update but not in the equations' states, or the reverse: "
                         "its paths cannot be recorded as integrate()'s states")
    net = ReducedPaths(spectrum, units, K, tied, y0, system, paths)
    advance = _simulate._steps(rule, registered)(act, net.W, net.V, net.b, lr, net.D, net.c, 0, kappa)
    rng = np.random.default_rng(seed)
    steps = np.rint(np.asarray(times) * net.D).astype(np.int64)
    out_t, out_y, step, status, message = [], [], 0, 0, "ok"
    try:
        with np.errstate(all="ignore"):
            for target, n in zip(times, steps):
                while step < n:
                    m = int(min(BLOCK, n - step))
                    advance(net.draw(rng, m), 0, m)
                    net.compress()
                    step += m
                    bar.update(step / net.D - bar.n)
                Y = net.state()
                errors = error_of(Y)
                if not (np.all(errors <= diverged) and np.all(np.isfinite(Y))):
                    status, message = -1, (f"diverged at t = {step / net.D:.6g}: {int(np.sum(~(errors <= diverged)))} "
                                           f"of {paths} paths passed the error {diverged:.4g} or are not finite")
                    break
                out_t.append(float(target))
                out_y.append(Y)
    except KeyboardInterrupt:
        status, message = -2, f"interrupted (Ctrl-C) at t = {step / net.D:.6g}"
    return np.array(out_t), np.array(out_y).reshape(len(out_t), paths, -1), status, message, step
