"""The input spectrum as atoms (eigenvalue rho_j, multiplicity m_j) and the per-atom matrices.

SPEC section 3: group the directions tau into atoms j of equal eigenvalue; per atom keep

    q_j = sum_{tau in j} omega_tau omega_tau^T,   r_j = sum upsilon_tau omega_tau^T / sqrt(D),
    t_j = sum upsilon_tau upsilon_tau^T / D,

with omega = W U, upsilon = V U (K x D). Then Q = sum_j rho_hat_j q_j, R = sum_j rho_hat_j r_j,
T = sum_j rho_hat_j t_j, T0 = sum_j t_j with rho_hat = rho / D. A spike is an atom of
multiplicity 1, an equal bulk one atom, a continuous bulk (D -> infinity) a quadrature over its
density with one atom per node (multiplicities may then be non-integer weights).
"""
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special

#: eigenvalues of eigh in [-ROUNDING * max, 0) are round-off of a zero eigenvalue, not data
ROUNDING = 1e-10
#: tolerance of the orthonormality check of eigenvector matrices
ORTHONORMAL_TOL = 1e-6


def _vector(a, what):
    try:
        a = np.array(a, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array") from None
    if a.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")
    return a


def eigenvalues(eigvals, what="eigvals"):
    """Validated eigenvalues (D,): finite and >= 0. Values in [-ROUNDING * max, 0) are eigh's
    round-off of a zero eigenvalue and become 0; anything more negative raises ValueError."""
    rho = _vector(eigvals, what)
    if rho.size == 0:
        raise ValueError(f"{what} is empty")
    floor = -ROUNDING * max(float(np.max(rho)), 0.0)
    bad = np.flatnonzero(rho < floor)
    if bad.size:
        raise ValueError(f"{what}: negative eigenvalue {what}[{bad[0]}] = {rho[bad[0]]!r}; "
                         f"the covariance is not positive semi-definite")
    return np.maximum(rho, 0.0)


def eigenvectors(eigvecs, D, what="eigvecs"):
    """Validated (D, D) matrix with orthonormal columns."""
    try:
        U = np.asarray(eigvecs, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array") from None
    if U.shape != (D, D):
        raise ValueError(f"{what} must have shape (D, D) = ({D}, {D}), got {U.shape}")
    if not np.all(np.isfinite(U)):
        raise ValueError(f"{what} contains NaN or inf")
    # U^T U = I checked on random probe vectors: O(D^2) instead of O(D^3)
    Z = np.random.default_rng(0).standard_normal((D, 4))
    err = np.max(np.abs(U.T @ (U @ Z) - Z)) / np.max(np.abs(Z))
    if err > ORTHONORMAL_TOL:
        raise ValueError(f"{what}: columns are not orthonormal (|U^T U z - z| / |z| = {err:.3g} "
                         f"for a random z)")
    return U


def weights(W, shape, what):
    """Validated weight matrix of the given shape (no NaN or inf)."""
    try:
        W = np.asarray(W, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array") from None
    if W.shape != tuple(shape):
        raise ValueError(f"{what} has shape {W.shape}, expected {tuple(shape)}")
    if np.any(np.isnan(W)):
        raise ValueError(f"{what} contains NaN")
    if not np.all(np.isfinite(W)):
        raise ValueError(f"{what} contains inf")
    return W


def encoder_weights(W, D, what="W0", source="the eigenvalues"):
    """Validated (K, D) weights with K >= 1 and the D of `source` (no NaN or inf)."""
    try:
        W = np.asarray(W, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array of shape (K, D)") from None
    if W.ndim != 2 or W.shape[1] != D:
        raise ValueError(f"{what} has shape {W.shape}, expected (K, {D}) to match {source}")
    if W.shape[0] == 0:
        raise ValueError(f"{what} has shape {W.shape}: no hidden units, K must be at least 1")
    return weights(W, W.shape, what)


@dataclass(frozen=True)
class Spectrum:
    """Atoms of the input covariance Omega: eigenvalues `rho` (J,) (of Omega, not divided by D),
    multiplicities `mult` (J,) (> 0, possibly non-integer quadrature weights), and the input
    dimension `D` of the 1/D normalisations."""
    rho: np.ndarray
    mult: np.ndarray
    D: float

    def __post_init__(self):
        rho = _vector(self.rho, "rho")
        mult = _vector(self.mult, "mult")
        if rho.shape != mult.shape:
            raise ValueError(f"rho and mult must have the same length, got {rho.size} and {mult.size}")
        if rho.size == 0:
            raise ValueError("a spectrum needs at least one atom")
        bad = np.flatnonzero(rho < 0)
        if bad.size:
            raise ValueError(f"negative eigenvalue rho[{bad[0]}] = {rho[bad[0]]!r}")
        bad = np.flatnonzero(mult <= 0)
        if bad.size:
            raise ValueError(f"multiplicity mult[{bad[0]}] = {mult[bad[0]]!r} is not positive")
        try:
            D = float(self.D)
        except (TypeError, ValueError):
            raise ValueError(f"D must be a number, got {self.D!r}") from None
        if not (np.isfinite(D) and D > 0):
            raise ValueError(f"D must be positive and finite, got {self.D!r}")
        rho.flags.writeable = False
        mult.flags.writeable = False
        object.__setattr__(self, "rho", rho)
        object.__setattr__(self, "mult", mult)
        object.__setattr__(self, "D", D)

    def __eq__(self, other):
        if not isinstance(other, Spectrum):
            return NotImplemented
        return self.D == other.D and np.array_equal(self.rho, other.rho) and np.array_equal(self.mult, other.mult)

    def __hash__(self):
        return hash((self.rho.tobytes(), self.mult.tobytes(), self.D))

    @property
    def J(self):
        """Number of atoms."""
        return self.rho.size

    @property
    def rho_hat(self):
        """rho_j / D."""
        return self.rho / self.D

    @property
    def total_variance(self):
        """sum_j m_j rho_j (= trace Omega)."""
        return float(np.sum(self.mult * self.rho))

    def pca_error(self, m):
        """eps_PCA(m) = (sum_tau rho_tau - sum of the top m rho_tau) / (2D), multiplicities counted
        (a fractional share of the atom at the boundary when m cuts through it)."""
        return float(self.pca_errors_at(np.asarray([m], dtype=float))[0])

    def pca_errors(self, K):
        """eps_PCA(m) for m = 0, 1, ..., K (array of length K + 1)."""
        if int(K) != K or K < 0:
            raise ValueError(f"K must be a non-negative integer, got {K!r}")
        return self.pca_errors_at(np.arange(int(K) + 1, dtype=float))

    def pca_errors_at(self, m):
        """eps_PCA(m) for an array of (possibly fractional) component counts m."""
        m = np.asarray(m, dtype=float)
        total_mult = float(np.sum(self.mult))
        if np.any(~np.isfinite(m)) or np.any(m < 0):
            raise ValueError(f"number of components must be >= 0, got {m}")
        if np.any(m > total_mult * (1 + 1e-12)):
            raise ValueError(f"number of components {np.max(m)} exceeds the total multiplicity {total_mult}")
        order = np.argsort(-self.rho, kind="stable")
        rho, mult = self.rho[order], self.mult[order]
        before = np.concatenate([[0.0], np.cumsum(mult)[:-1]])
        take = np.clip(m[..., None] - before, 0.0, mult)
        top = np.sum(take * rho, axis=-1)
        return (self.total_variance - top) / (2 * self.D)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_eigvals(cls, eigvals, rtol=1e-12, atol=None):
        """Group equal eigenvalues into atoms; returns (spectrum, atom_of).

        Sorted in decreasing order, an eigenvalue joins the current atom when it differs from
        the atom's first (largest) eigenvalue by at most max(rtol * that eigenvalue, atol);
        atol defaults to rtol * max(eigvals) (eigh's round-off is relative to the largest
        eigenvalue). The atom's rho is the mean of its eigenvalues. Atoms are ordered by
        decreasing eigenvalue; `atom_of` (D,) gives the atom of direction tau.
        """
        rho = eigenvalues(eigvals)
        if not (np.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"rtol must be >= 0, got {rtol!r}")
        atol = rtol * float(np.max(rho)) if atol is None else float(atol)
        order = np.argsort(-rho, kind="stable")
        srt = rho[order]
        label = np.empty(rho.size, dtype=np.intp)
        starts = [0]
        ref = srt[0]
        for i in range(1, srt.size):
            if ref - srt[i] > max(rtol * abs(ref), atol):
                starts.append(i)
                ref = srt[i]
        bounds = np.append(starts, srt.size)
        for j in range(len(starts)):
            label[bounds[j]:bounds[j + 1]] = j
        atom_of = np.empty(rho.size, dtype=np.intp)
        atom_of[order] = label
        mult = np.diff(bounds).astype(float)
        means = np.add.reduceat(srt, starts) / mult
        return cls(means, mult, rho.size), atom_of

    @classmethod
    def spiked(cls, D, strengths, bulk=1.0):
        """M spikes rho_m = s_m D (multiplicity 1 each) and one bulk atom rho = bulk (sigma_bulk^2)
        of multiplicity D - M: M + 1 atoms at any D."""
        s = _spikes(strengths)
        D = _dimension(D, s.size)
        if not (np.isfinite(bulk) and bulk >= 0):
            raise ValueError(f"bulk variance must be finite and >= 0, got {bulk!r}")
        return cls(np.append(s * D, float(bulk)), np.append(np.ones(s.size), D - s.size), D)

    @classmethod
    def marchenko_pastur(cls, D, ratio, strengths=(), sigma2=1.0, nodes=64):
        """Spikes s_m D plus the D -> infinity Marchenko-Pastur bulk of aspect ratio `ratio` = D/N
        in (0, 1] and scale sigma2 (density sqrt((b - x)(x - a)) / (2 pi sigma2 ratio x) on
        [a, b] = sigma2 (1 -+ sqrt(ratio))^2) as an n-node Gauss quadrature, each node an atom
        of multiplicity (D - M) w_i.

        The nodes and weights are the Gauss rule of the MP law itself (Golub-Welsch on its
        Jacobi matrix: diagonal sigma2, sigma2 (1 + ratio), ..., off-diagonal sigma2 sqrt(ratio)),
        so the moments of order <= 2 nodes - 1 are exact to rounding, square-root edges included.
        """
        s = _spikes(strengths)
        D = _dimension(D, s.size)
        ratio, sigma2 = float(ratio), float(sigma2)
        if not (0 < ratio <= 1):
            raise ValueError(f"Marchenko-Pastur ratio D/N must be in (0, 1], got {ratio!r}")
        if not (np.isfinite(sigma2) and sigma2 > 0):
            raise ValueError(f"sigma2 must be positive, got {sigma2!r}")
        n = _nodes(nodes)
        diag = np.full(n, sigma2 * (1 + ratio))
        diag[0] = sigma2
        off = np.full(n - 1, sigma2 * np.sqrt(ratio))
        x, vecs = scipy.linalg.eigh_tridiagonal(diag, off)
        w = vecs[0] ** 2
        w /= np.sum(w)
        x = np.maximum(x, 0.0)
        return cls(np.concatenate([s * D, x]), np.concatenate([np.ones(s.size), (D - s.size) * w]), D)

    @classmethod
    def from_density(cls, density, support, D, nodes=64, strengths=()):
        """Spikes s_m D plus a bulk of D - M eigenvalues with the (unnormalised) density
        `density` (vectorised callable) on support = (a, b), 0 <= a < b, as an n-node quadrature.

        Substituting x = (a + b)/2 + (b - a)/2 cos(theta), dx = (b - a)/2 sin(theta) dtheta, and
        Gauss-Legendre in theta on [0, pi] makes square-root (and inverse square-root) edges
        smooth; the density is normalised numerically with the same rule.
        """
        s = _spikes(strengths)
        D = _dimension(D, s.size)
        try:
            a, b = (float(v) for v in support)
        except (TypeError, ValueError):
            raise ValueError(f"support must be a pair (a, b), got {support!r}") from None
        if not (np.isfinite(a) and np.isfinite(b) and 0 <= a < b):
            raise ValueError(f"support must satisfy 0 <= a < b (finite), got ({a}, {b})")
        n = _nodes(nodes)
        u, gw = np.polynomial.legendre.leggauss(n)
        theta = np.pi / 2 * (u + 1)
        # x - a = (b - a) cos^2(theta/2), b - x = (b - a) sin^2(theta/2): no cancellation at the edges
        x = a + (b - a) * np.cos(theta / 2) ** 2
        p = np.asarray(density(x), dtype=float)
        if p.shape != x.shape:
            p = np.broadcast_to(p, x.shape)
        if not np.all(np.isfinite(p)):
            raise ValueError("density returned NaN or inf inside the support")
        if np.any(p < 0):
            raise ValueError("density is negative inside the support")
        w = gw * (np.pi / 2) * (b - a) / 2 * np.sin(theta) * p
        mass = np.sum(w)
        if not mass > 0:
            raise ValueError("density has zero mass on the support")
        keep = w > 0
        return cls(np.concatenate([s * D, x[keep]]),
                   np.concatenate([np.ones(s.size), (D - s.size) * w[keep] / mass]), D)


def _spikes(strengths):
    s = np.atleast_1d(np.array(strengths, dtype=float)) if np.size(strengths) else np.zeros(0)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ValueError(f"spike strengths must be a finite 1-D sequence, got {strengths!r}")
    bad = np.flatnonzero(s < 0)
    if bad.size:
        raise ValueError(f"negative spike strength strengths[{bad[0]}] = {s[bad[0]]!r}")
    return s


def _dimension(D, M):
    try:
        D = float(D)
    except (TypeError, ValueError):
        raise ValueError(f"D must be a number, got {D!r}") from None
    if not (np.isfinite(D) and D > M):
        raise ValueError(f"D must exceed the number of spikes M = {M}, got D = {D}")
    return D


def _nodes(nodes):
    if int(nodes) != nodes or nodes < 1:
        raise ValueError(f"nodes must be a positive integer, got {nodes!r}")
    return int(nodes)


# -- per-atom matrices ------------------------------------------------------------------------

def projections(W0, V0, eigvecs, D=None):
    """(omega, upsilon / sqrt(D)) with omega = W0 U, upsilon = V0 U, each of shape (K, D)
    (the per-direction form: q_tau = omega_tau omega_tau^T etc.). eigvecs=None: U = I (the
    weights are given in the eigenbasis), with D the number of eigenvalues."""
    W0, V0, U = _check_init(W0, V0, eigvecs, D)
    if U is not None:
        W0, V0 = W0 @ U, V0 @ U
    return W0, V0 / np.sqrt(W0.shape[1])


def atom_matrices(spectrum, atom_of, W0, V0, eigvecs):
    """(q, r, t), each (J, K, K): q_j = sum_{tau in j} omega_tau omega_tau^T,
    r_j = sum upsilon_tau omega_tau^T / sqrt(D), t_j = sum upsilon_tau upsilon_tau^T / D,
    with omega = W0 U, upsilon = V0 U and atom_of (D,) the atom of each direction."""
    omega, ups = projections(W0, V0, eigvecs)
    D = omega.shape[1]
    if not isinstance(spectrum, Spectrum):
        raise ValueError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
    if spectrum.D != D:
        raise ValueError(f"spectrum.D = {spectrum.D} does not match eigvecs of shape ({D}, {D})")
    atom_of = np.asarray(atom_of)
    if atom_of.shape != (D,) or not np.issubdtype(atom_of.dtype, np.integer):
        raise ValueError(f"atom_of must be an integer array of shape ({D},), got {atom_of.dtype} {atom_of.shape}")
    if np.any(atom_of < 0) or np.any(atom_of >= spectrum.J):
        raise ValueError(f"atom_of has entries outside 0 .. J-1 = {spectrum.J - 1}")
    counts = np.bincount(atom_of, minlength=spectrum.J)
    bad = np.flatnonzero(counts != spectrum.mult)
    if bad.size:
        j = bad[0]
        raise ValueError(f"atom_of assigns {counts[j]} directions to atom {j} of multiplicity {spectrum.mult[j]}")
    order = np.argsort(atom_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    o, u = omega[:, order], ups[:, order]          # (K, D), columns grouped by atom

    def grouped(a, b):
        outer = a.T[:, :, None] * b.T[:, None, :]  # (D, K, K)
        return np.add.reduceat(outer, starts, axis=0)

    return grouped(o, o), grouped(u, o), grouped(u, u)


def random_problem(eigvals, K, seed=0, scale_w=0.5, scale_v=0.5):
    """A problem in the interface of SPEC section 6 for the given eigenvalues (D,): Haar-random
    eigenvectors, then W0 and V0 with i.i.d. N(0, scale^2) entries, all from one seeded generator.
    Returns (eigvals (D,), eigvecs (D, D), W0 (K, D), V0 (K, D))."""
    eigvals = np.asarray(eigvals, float)
    rng = np.random.default_rng(seed)
    eigvecs, _ = np.linalg.qr(rng.normal(size=(eigvals.size, eigvals.size)))
    shape = (K, eigvals.size)
    return eigvals, eigvecs, scale_w * rng.normal(size=shape), scale_v * rng.normal(size=shape)


def spiked_problem(D, K, strengths, seed=0, scale_w=0.5, scale_v=0.5):
    """random_problem for a spiked model: eigenvalues s_m D for the spikes and 1 for the bulk."""
    eigvals = np.concatenate([np.asarray(strengths, float) * D, np.ones(D - len(strengths))])
    return random_problem(eigvals, K, seed, scale_w, scale_v)


def random_init_matrices(spectrum, K, sigma_w=1.0, sigma_v=1.0, seed=0, sample_up_to=1):
    """(q, r, t), each (J, K, K), for W0, V0 with i.i.d. N(0, sigma_w^2), N(0, sigma_v^2) entries.

    Since U is orthonormal, the projections omega_tau, upsilon_tau are i.i.d. N(0, sigma^2 I_K).
    Atoms whose multiplicity is an integer <= sample_up_to (spikes) are sampled exactly
    (m_j directions each); every other atom gets its law-of-large-numbers value

        q_j = m_j sigma_w^2 I,   r_j = 0,   t_j = m_j sigma_v^2 / D I,

    which is exact as D -> infinity for the bulk: the relative fluctuations of q_j, t_j are
    O(m_j^-1/2), and r_j (mean 0, fluctuation O(sqrt(m_j / D)) = O(1)) enters R only as
    rho_j r_j / D = O(1/D).
    """
    if not isinstance(spectrum, Spectrum):
        raise ValueError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
    if int(K) != K or K < 1:
        raise ValueError(f"K must be a positive integer, got {K!r}")
    K = int(K)
    for name, val in (("sigma_w", sigma_w), ("sigma_v", sigma_v)):
        if not (np.isfinite(val) and val >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {val!r}")
    rng = np.random.default_rng(seed)
    D, J = spectrum.D, spectrum.J
    eye = np.eye(K)
    q = spectrum.mult[:, None, None] * sigma_w ** 2 * eye
    r = np.zeros((J, K, K))
    t = spectrum.mult[:, None, None] * sigma_v ** 2 / D * eye
    for j in range(J):
        m = spectrum.mult[j]
        if m == int(m) and m <= sample_up_to:
            om = sigma_w * rng.standard_normal((int(m), K))
            up = sigma_v * rng.standard_normal((int(m), K))
            q[j] = om.T @ om
            r[j] = up.T @ om / np.sqrt(D)
            t[j] = up.T @ up / D
    return q, r, t


def order_parameters(spectrum, q, r, t):
    """(Q, R, T, T0) = (sum_j rho_hat_j q_j, sum_j rho_hat_j r_j, sum_j rho_hat_j t_j, sum_j t_j)
    for q, r, t of shape (..., J, K, K) (any leading axes, e.g. time)."""
    if not isinstance(spectrum, Spectrum):
        raise ValueError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
    arrays = []
    for name, a in (("q", q), ("r", r), ("t", t)):
        a = np.asarray(a, dtype=float)
        if a.ndim < 3 or a.shape[-3] != spectrum.J or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"{name} must have shape (..., J, K, K) with J = {spectrum.J}, got {a.shape}")
        arrays.append(a)
    q, r, t = arrays
    if not (q.shape == r.shape == t.shape):
        raise ValueError(f"q, r, t must have the same shape, got {q.shape}, {r.shape}, {t.shape}")
    h = spectrum.rho_hat
    return (np.einsum("j,...jkl->...kl", h, q), np.einsum("j,...jkl->...kl", h, r),
            np.einsum("j,...jkl->...kl", h, t), np.sum(t, axis=-3))


def _check_init(W0, V0, eigvecs, D=None):
    """Validated (W0, V0, U) for eigvecs (D, D), or U = None (the eigenbasis) with D given."""
    if eigvecs is None:
        if D is None:
            raise ValueError("eigvecs=None (the eigenbasis) needs the dimension D")
        U = None
    else:
        try:
            U = np.asarray(eigvecs, dtype=float)
        except (TypeError, ValueError):
            raise ValueError("eigvecs must be a numeric array") from None
        if U.ndim != 2 or U.shape[0] != U.shape[1]:
            raise ValueError(f"eigvecs must be a square (D, D) matrix, got shape {U.shape}")
        if D is not None and U.shape[0] != D:
            raise ValueError(f"eigvecs has shape {U.shape} but there are {D} eigenvalues: expected ({D}, {D})")
        D = U.shape[0]
        U = eigenvectors(U, D)
    W0 = encoder_weights(W0, D, "W0", "the eigenvalues" if U is None else f"eigvecs of shape {U.shape}")
    if np.shape(V0) != W0.shape:
        raise ValueError(f"V0 of shape {np.shape(V0)} does not match W0 of shape {W0.shape}")
    return W0, weights(V0, W0.shape, "V0"), U
