"""Fast two-point Gaussian averages (pair kernels) for activations without a closed form.

    pair(derivatives, orders1, orders2, c11, c12, c22)
        = E[prod_a g^(a)(x1) prod_b g^(b)(x2)],  (x1, x2) ~ N(0, [[c11, c12], [c12, c22]])
    tabulated_units(derivatives, signatures, Q)
        the same for many (orders1, orders2) at once (the finite-D equations' averages on a
        pair of units, quadrature.expect_units), or the one-unit means of many orders

Method: Mehler's (Price's) series in the correlation rho = c12 / sqrt(c11 c22),

    E[f1(x1) f2(x2)] = sum_n rho^n h1_n(sigma1) h2_n(sigma2),
    h_n(sigma) = E[f(sigma z) He_n(z)] / sqrt(n!),  z ~ N(0, 1),

the normalised Hermite coefficients of f(sigma z). They depend on one variance only, so for each
unit factor f (an `orders` tuple of g's derivatives) they are tabulated lazily: for n < N_FIRST
(128) on the first call, for 4 times as many (512, 2048, then N_MAX = 4096) when a point needs more
terms than tabulated (a pair of large variances at high |rho|). Each is a Chebyshev series of
degree < N_CHEB (112) in log(sigma) over sigma^2 in [V_MIN, V_MAX], built from a trapezoidal rule
in z (step 0.02 on [-14, 14], spectrally accurate for f analytic in a strip: tanh(sigma z) at
sigma = 10 has its poles 0.157 off the real axis, error ~exp(-2 pi 0.157 / 0.02) ~ 1e-21; the
Hermite functions up to n = 4096 oscillate with frequency <= sqrt(n) = 64 and grow off the axis
like exp(sqrt(n) |Im z|), which leaves ~exp(-(314 - 64) 0.157) ~ 1e-17), then re-expanded on
PIECES (8) equal pieces of log(sigma) with degree < DEGREE (24) for the evaluation: ~5 ms per
factor at 128 terms, 10 ms at 512, ~0.06 s at 4096 (one core, idle; 128 terms take ~0.3 MB a
factor, 4096 ~9 MB).

Truncation, per point. The sum after N terms errs by at most, by Cauchy-Schwarz on blocks of
terms [LEVELS[l], LEVELS[l+1]) and on the tail n >= n_tab (the table's size; from Parseval,
E[f^2] - sum h_n^2, or where that cancels, from the residual f - sum h_n He_n/sqrt(n!) on the rule),

    ||f1|| ||f2|| (sum_{l: LEVELS[l] >= N} |rho|^LEVELS[l] E1_l E2_l + |rho|^n_tab T1 T2),

||f||^2 = E[f(sigma z)^2], E_l and T the normalised block and tail energies. These are bounded on
N_BINS (16) bins of log(variance) -- SAFETY (2) times their maximum at 9 points of the bin, edges
included: a margin for the smooth variation between them, not a proof -- and for every pair of
bins and every |rho| edge in EDGES the fewest LEVELS (8 ... 4096) whose bound is <= TRUNCATION
(1e-11) are tabulated (_Pair.terms). A point takes the terms of its variances' bins at the
first edge >= |rho|: most need few (mean 30-50 terms for variances log-uniform in [1e-2, 1e2]),
a pair of large variances at |rho| = 0.99 thousands. Points are grouped by their number of
terms and pieces: per group, matrix products (local Chebyshev basis @ table) and a weighted row
sum; ~1-2e6 evaluations/s on one core (docs/performance.md).

Domain and fallback. The series takes points with both variances in [V_MIN, V_MAX] and a
bound that holds by N_MAX terms: up to the last edge, |rho| = 0.9999, except where both variances
are large and |rho| high -- for tanh's kernels every variance pair up to |rho| = 0.995 (0.998
for pair_0_0) and up to 0.9999 but for both variances >~ 10-50 (depending on the kernel), for
sigmoid's up to 0.999-0.9999 (`_Pair.limit`, `domain`: the |rho| up to which every variance pair
is on the series). Points with conditional variance c22 - c12^2/c11 <= DEGENERATE (rho = +-1 up
to rounding: the diagonal k = l of every kernel matrix) are one-dimensional, E[f1(x1) f2(kappa x1)],
by runtime.quadrature's outer rule (the value expect2 gives there, without its collapsed inner rule).

The corner: the points of the domain beyond the series' reach (|rho| > 0.9999 anywhere, both of
tanh's variances large at |rho| > ~0.995) with d = 1 - |rho| < D_TOP (2^-4) come from corner cells
(_Pair.corner). There the average is a smooth function of (t1, t2, d) up to d = 0 (by Price's
theorem its rho-derivatives are (sigma1 sigma2)^n E[f1^(n) f2^(n)], finite), analytic for Re d > 0
but with Taylor coefficients at d = 0 growing like n!: so d is split in octaves towards 0. Per
sign of rho, CELL_PIECES (8) equal pieces of each t and CELL_OCTAVES (10) intervals of d
([0, 2^-13), then [2^(j-14), 2^(j-13)), j = 1 ... 9), a cell is the tensor Chebyshev interpolant
of degree < CELL_DEGREE (12, 12, 14) in (t1, t2, d) through expect2's values at its 2016 points
(expect2 is within ~1e-15 of mpmath near |rho| = 1), built when a point first falls in it
(~0.15 s, ~1.4 s where f2 is g'' or a higher derivative, slow at expect2's nodes; 16 kB) and
checked: its last coefficients along each axis <= CELL_TOLERANCE (1e-11), and the interpolant at
its two extreme corners within PROBE_TOLERANCE of expect2, both relative to the smallest
sqrt(E[f1^2] E[f2^2]) in the cell (by expect1); a cell that fails either is left to expect2. A
batch's corner points are grouped by cell: per cell one matrix product and two contractions,
~2e6 points/s. Points the series covers stay on it, even where it takes thousands of terms (~1e4
points/s at 4096): a cell costs ~2000 expect2 evaluations, so taking them would make most first
uses slower (docs/performance.md). Every other point (beyond the series' reach with d >= D_TOP,
in a cell that failed its checks, variances outside the domain, means, NaN) goes to
runtime.quadrature.expect2 unchanged: nothing is approximated outside the domain.

Accuracy (tests/test_fast_kernels.py, against mpmath at 30 digits at random covariances and at
|rho| = 0.95, 0.99, 0.999 with variances at both ends, for tanh, sigmoid and softplus, and at
corner points up to |rho| = 1 - 1e-9 and +-1): |error| <= 1e-9 |value| + 1e-10 sqrt(E[f1^2] E[f2^2]),
i.e. 1e-9 relative, and absolute at 1e-10 of the Cauchy-Schwarz scale where the value is ~0
(measured: <= 1e-12 relative; the cells <= 1e-12 of the scale against expect2). A batch of fewer than
_SMALL points takes a path with fewer numpy calls and the same sums (each point's own terms, the
local interpolants, the same powers of rho), so a value does not depend on the batch it comes in
beyond rounding (tests/test_kernels_input.py: 1e-13). For given
inputs the result is deterministic: the tables are a fixed computation, and growing them keeps
their first terms and the terms each covered point takes bit for bit, so a value does not depend
on which points were evaluated before (tests/test_fast_kernels.py); a cell is a fixed computation
of its index, and a point takes the cells only where the full tables do not reach it. Each table
checks itself when built: its global and local Chebyshev series must have converged (last
coefficients < 1e-14, resp. 1e-13, of the largest) and the fast path must agree with expect2 at
probe points (among them each variance corner's highest covered |rho|) at 1e-10 of the scale; a
factor that fails either (an activation that is not analytic near the real axis, say) is not
accelerated -- every call goes to expect2.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import threading

import numpy as np

from runtime import quadrature

V_MIN, V_MAX = 1e-2, 1e2
N_MAX = 4096         # Hermite terms tabulated at most
N_FIRST = 128        # Hermite terms tabulated at a factor's first use (x4 when a point needs more)
N_CHEB = 112         # Chebyshev degree (+1) in log(sigma)
PIECES, DEGREE = 8, 24   # the series' evaluation: Chebyshev interpolants of degree < DEGREE on PIECES equal pieces
TRUNCATION = 1e-11   # truncation bound, relative to the Cauchy-Schwarz scale
#: |rho| edges: a point with EDGES[k-1] < |rho| <= EDGES[k] takes the terms that its variances' bins need at EDGES[k]
EDGES = (0.3, 0.5, 0.65, 0.75, 0.82, 0.88, 0.92, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)
#: the numbers of terms a point can take: the truncation bound is checked after each
LEVELS = (8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048,
          2560, 3072, N_MAX)
N_BINS = 16          # bins in log(variance) of the coefficient bounds
SAFETY = 2.0         # factor on each bin's block energies (their maximum at 9 points of the bin)
DEGENERATE = 1e-14   # conditional variance below which a point is treated as rho = +-1
#: a Chebyshev series in log(sigma) has converged when its last coefficients are below this times its
#: largest (erf's products of derivatives, Gaussians of width 1/sigma, reach it at N_CHEB = 112, not at 80:
#: 5e-12 ... 1.5e-11 there; tanh's and sigmoid's ~1e-15)
SERIES_TOLERANCE = 1e-14
#: the corner cells: CELL_PIECES equal pieces of each t in [-1, 1], CELL_OCTAVES intervals of d = 1 - |rho|
#: ([0, D_LOW), then octaves [D_LOW 2^(j-1), D_LOW 2^j) up to D_TOP), Chebyshev degrees (+1) in (t1, t2, d)
CELL_PIECES, CELL_OCTAVES, D_LOW = 8, 10, 2.0 ** -13
D_TOP = D_LOW * 2.0 ** (CELL_OCTAVES - 1)
CELL_DEGREE = (12, 12, 14)
CELL_TOLERANCE = 1e-11   # a cell's last Chebyshev coefficients, relative to the smallest scale in it
PROBE_TOLERANCE = 1e-10
_STEP, _ZMAX = 0.02, 14.0
_K = np.arange(N_CHEB, dtype=float)

#: how runtime.averages.numerical_kernels evaluates each family of kernels without a closed form:
#: the one description its kernels' docstrings and the generated modules' headers (derive/codegen.py) use
METHODS = {
    "mean": (f"a Chebyshev series in log(variance) tabulated by quadrature for variances in [{V_MIN:g}, {V_MAX:g}] "
             "(runtime/fast_kernels.py, equal to the quadrature to ~1e-14), double-exponential quadrature "
             "outside (runtime/quadrature.py)"),
    "pair": ("Mehler's series in the correlation over tabulated Hermite coefficients (runtime/fast_kernels.py) "
             f"for variances in [{V_MIN:g}, {V_MAX:g}] and |rho| up to the series' reach, 3-D Chebyshev cells in "
             "(log variances, 1 - |rho|) tabulated by quadrature beyond it, double-exponential quadrature outside "
             "the variance domain (runtime/quadrature.py)"),
    "shifted_mean": "double-exponential quadrature with the mean (runtime/quadrature.py)",
    "shifted_pair": "double-exponential quadrature with the means (runtime/quadrature.py)",
}


def family(name):
    """The family of a kernel's name, a key of METHODS: 'pair_1_1' -> 'pair', 'shifted_mean_0' -> 'shifted_mean'."""
    shifted = name.startswith("shifted_")
    return ("shifted_" if shifted else "") + name.split("_")[1 if shifted else 0]
_SMALL = 256         # below this many points: direct formulas with fewer numpy calls
_CHUNK = 1 << 15     # terms x points per chunk of the series (the temporaries stay in cache)

_U0, _U1 = 0.5 * np.log(V_MIN), 0.5 * np.log(V_MAX)     # log(sigma) range
_LOCK = threading.RLock()     # re-entrant: a pair builds its two tables under it


@functools.lru_cache(maxsize=1)
def _trapezoid():
    """Trapezoidal nodes z on [-14, 14] and weights w: the step times the standard normal density."""
    z = _STEP * np.arange(-round(_ZMAX / _STEP), round(_ZMAX / _STEP) + 1)      # symmetric: f(-x) is a flip
    return z, _STEP * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


@functools.lru_cache(maxsize=1)
def _hermite_rule(n):
    """The trapezoidal rule (z, w) and the matrices (even k, odd k) of w(z) He_k(z)/sqrt(k!), k < n,
    at the nodes z >= 0: f's even and odd parts need no more."""
    z, w = _trapezoid()
    half = z.size // 2
    zp = z[half:]
    P = np.empty(((n + 1) // 2, zp.size)), np.empty((n // 2, zp.size))     # even and odd k, filled in turn
    previous, current = np.ones(zp.size), zp.copy()
    P[0][0], P[1][0] = previous, current
    for k in range(1, n - 1):
        previous, current = current, (zp * current - np.sqrt(k) * previous) / np.sqrt(k + 1)
        P[(k + 1) % 2][(k + 1) // 2] = current
    for part in P:
        part *= w[half:]
    return z, w, P[0], P[1]


_GRID = {}


def _on_grid(derivatives, orders, flip=False):
    """prod_a g^(a)(s sigma_j z_i) on the table's grid (nodes, N_CHEB), s = -1 if `flip` else 1; each
    derivative evaluated once per activation (the grid in z is symmetric: s = -1 reverses it)."""
    out = 1.0
    for a in orders:
        key = (derivatives, a)
        if key not in _GRID:
            z = _trapezoid()[0]
            with np.errstate(all="ignore"):
                _GRID[key] = derivatives[a](_nodes()[1][None, :] * z[:, None])
        out = out * _GRID[key]
    return out[::-1] if flip and orders else out


def _product(derivatives, orders, x):
    out = derivatives[orders[0]](x)
    for a in orders[1:]:
        out = out * derivatives[a](x)
    return out


@functools.lru_cache(maxsize=1)
def _nodes():
    """The Chebyshev points t_j, their sigmas, and T_k(t_j) (k, j)."""
    k = np.arange(N_CHEB)
    t = np.cos(np.pi * (k + 0.5) / N_CHEB)
    return t, np.exp(_U0 + (t + 1) / 2 * (_U1 - _U0)), np.cos(np.outer(k, np.pi * (k + 0.5) / N_CHEB))


def _transform(values):
    """Chebyshev coefficients (N_CHEB, ...) from values (N_CHEB, ...) at the Chebyshev points, and
    whether the series converged (last coefficients < SERIES_TOLERANCE of the largest)."""
    C = (2.0 / N_CHEB) * np.tensordot(_nodes()[2], values, axes=1)
    C[0] *= 0.5
    scale = np.abs(C).max() if np.all(np.isfinite(C)) else np.inf
    return C, bool(np.isfinite(scale) and np.abs(C[-6:]).max() <= SERIES_TOLERANCE * max(scale, 1e-300))


class _Mean:
    """E[f1(sigma z) f2(s sigma z)], f = prod g^(orders), for s = +1 and -1 (f2 = 1 when orders2 is
    empty) as Chebyshev series in log sigma, coef (N_CHEB, 2): one-point means and the pair kernels
    at rho = +-1 and equal variances. `ok`: converged and equal to quadrature.expect1 / the
    one-dimensional rule at probe points (1e-12 of E[f1^2]^(1/2) E[f2^2]^(1/2) + 1e-12)."""

    def __init__(self, derivatives, orders1, orders2=()):
        w = _trapezoid()[1]
        with np.errstate(all="ignore"):
            f1 = _on_grid(derivatives, orders1)
            values = np.stack([w @ (f1 * _on_grid(derivatives, orders2)),
                               w @ (f1 * _on_grid(derivatives, orders2, flip=True))], axis=-1)
        self.coef, self.ok = _transform(values)
        if self.ok:
            v = np.array([V_MIN, 0.07, 1.0, 13.0, V_MAX])
            if orders2:
                probe = [_degenerate(derivatives, orders1, orders2, v, s * v, v) for s in (1, -1)]
            else:
                probe = [quadrature.expect1(derivatives, orders1, v)] * 2
            fast = self(v, np.array([1.0] * 5)), self(v, -np.ones(5))
            self.ok = all(np.all(np.abs(a - b) <= 1e-12 * (1 + np.abs(b))) for a, b in zip(fast, probe))

    def __call__(self, v, sign):
        values = self.coef.T @ _basis(_t(v))                                # (2, M)
        return np.where(sign >= 0, values[0], values[1])


class _Table:
    """Chebyshev coefficients (N_CHEB, n) of h_k(sigma), k < n, in t = 2 (u - U0)/(U1 - U0) - 1,
    u = log sigma, for one factor f = prod g^(orders), and the same re-expanded on PIECES pieces
    (local[p], (n, DEGREE)); `ok` False when either did not converge. Bounds per bin of t (N_BINS
    equal bins): energy[b, l], SAFETY times the largest over the bin (9 points) of
    sqrt(sum_{LEVELS[l] <= k < LEVELS[l+1]} h_k^2 / E[f^2]), and tail[b], the same for k >= n: the
    smaller of Parseval's E[f^2] - sum h_k^2 (which loses digits to cancellation) and the residual
    f - sum h_k He_k/sqrt(k!) integrated by the same rule (at the table's nodes in and next to the bin)."""

    def __init__(self, derivatives, orders, n):
        self.n = n
        z, w, Pe, Po = _hermite_rule(n)
        half = z.size // 2
        with np.errstate(all="ignore"):
            F = _on_grid(derivatives, orders)                                # (nodes, N_CHEB)
            even, odd = F[half:] + F[half::-1], F[half:] - F[half::-1]
            even[0] *= 0.5
            H = np.empty((n, N_CHEB))
            H[0::2], H[1::2] = Pe @ even, Po @ odd
            norm2 = w @ (F * F)                                              # E[f(sigma z)^2]
            # the residual's energy at the table's nodes (w He_k/sqrt(k!) divided by w at the end)
            se, so = Pe.T @ H[0::2], Po.T @ H[1::2]
            r = np.concatenate([(F[:half] - (se - so)[:0:-1] / w[:half, None]),
                                F[half:] - (se + so) / w[half:, None]])
            residual = np.sqrt((w @ (r * r)) / norm2)
        # column n: E[f^2], for the normalised bounds below
        C, self.ok = _transform(np.concatenate([H.T, norm2[:, None]], axis=1))
        # the terms a smaller table of this factor has, copied bit for bit: a point's value does not
        # change when another point makes the tables grow
        sizes = [key[2] for key in list(_TABLES) if key[0] == derivatives and key[1] == orders and key[2] < n]
        previous = _TABLES[derivatives, orders, max(sizes)] if sizes else None
        previous = previous if previous is not None and previous.ok else None
        if previous is not None:
            C[:, :previous.n] = previous.coef
        self.coef = np.ascontiguousarray(C[:, :n])                          # (N_CHEB, n); column 0: E[f]
        self.norm2 = C[:, n].copy()                                          # E[f^2]'s Chebyshev series
        self.ok = self.ok and bool(np.all(norm2 > 0))
        if not self.ok:
            return
        # the same interpolant re-expanded on PIECES pieces, degree < DEGREE: local[p] (n, DEGREE)
        x, T = _interpolation(DEGREE)
        local = [T @ (_basis(-1.0 + (2 * p + x + 1.0) / PIECES).T @ self.coef) for p in range(PIECES)]
        self.local = np.ascontiguousarray(np.stack([c.T for c in local]))       # (PIECES, n, DEGREE)
        if previous is not None:
            self.local[:, :previous.n] = previous.local
        self.ok = max(np.abs(c[-3:]).max() for c in local) <= 1e-13 * np.abs(self.coef).max()
        if not self.ok:
            return
        # normalised block energies on a grid of 8 N_BINS + 1 points: each bin's 9 points, edges included
        grid = 8 * N_BINS + 1
        Hg = _basis(np.linspace(-1.0, 1.0, grid)).T @ C                     # (grid, n + 1)
        share = Hg[:, :n] ** 2 / Hg[:, n:]
        starts = [L for L in LEVELS if L < n]
        blocks = np.sqrt(np.add.reduceat(share, np.array(starts), axis=1))  # (grid, blocks)
        tail = np.sqrt(np.maximum(1.0 - share.sum(axis=1), 0.0))
        rows = 8 * np.arange(N_BINS)[:, None] + np.arange(9)                 # (N_BINS, 9)
        self.energy = SAFETY * blocks[rows].max(axis=1)                      # (N_BINS, blocks)
        lo = -1.0 + 2.0 * np.arange(N_BINS) / N_BINS
        near = np.abs(_nodes()[0][None, :] - (lo[:, None] + 1.0 / N_BINS)) <= 3.0 / N_BINS   # (N_BINS, N_CHEB)
        self.tail = SAFETY * np.minimum(tail[rows].max(axis=1), np.where(near, residual, 0.0).max(axis=1))


@functools.lru_cache(maxsize=None)
def _interpolation(n):
    """The n Chebyshev points x_j = cos(pi (j + 1/2) / n) and the matrix T (n, n) taking values at
    them to the coefficients of the interpolant sum_k c_k T_k(x), k < n."""
    k = np.arange(n)
    x = np.cos(np.pi * (k + 0.5) / n)
    T = (2.0 / n) * np.cos(np.outer(k, np.pi * (k + 0.5) / n))
    T[0] *= 0.5
    return x, T


def _basis(t):
    """Chebyshev basis T_k(t), k < N_CHEB, of t (M,): (N_CHEB, M)."""
    if t.size < _SMALL:
        return _cosines(t, N_CHEB)
    return _chebyshev(t, N_CHEB)


def _cosines(t, degree):
    """T_k(t) = cos(k arccos t), k < degree, (degree, M): fewer numpy calls than the recurrence
    for a few points (t outside [-1, 1] by rounding is clipped)."""
    return np.cos(np.multiply.outer(_K[:degree], np.arccos(np.minimum(np.maximum(t, -1.0), 1.0))))


class _Pair:
    """The Mehler series of one kernel: the terms each point needs (by the bins of its variances
    and the edge of its |rho|). Its `state`, replaced whole: (tables, terms, limit), from tables of
    N_FIRST terms, 4 times as many up to N_MAX whenever a point needs more (terms -1; 0: beyond reach);
    and its corner cells beyond the series' reach, `cells` {index: coefficients or None}, built lazily."""

    def __init__(self, derivatives, orders1, orders2):
        self.derivatives, self.orders = derivatives, (orders1, orders2)
        self.size = N_FIRST
        self.state = self._state(N_FIRST)
        self.cells = {}

    def _state(self, n, previous=None):
        """(tables, terms, limit) with tables of n terms. terms[b1, b2, k]: LEVELS' fewest terms
        (<= n) whose truncation bound at |rho| = EDGES[k] holds for variances in bins b1, b2 (-1 or
        0 where none does, k = len(EDGES): |rho| beyond the edges), kept from the `previous` terms
        where those were covered (the same first terms, bit for bit: results do not depend on
        whether the tables grew); limit: the |rho| up to which every pair of bins is covered."""
        tables = (_table(self.derivatives, self.orders[0], n), _table(self.derivatives, self.orders[1], n))
        t1, t2 = tables
        terms = np.zeros((N_BINS, N_BINS, len(EDGES) + 1), dtype=np.intp)
        if not (t1.ok and t2.ok):
            return tables, terms, -1.0
        edges = np.array(EDGES)
        levels = np.array([L for L in LEVELS if L <= n])
        # bound after levels[l] terms: sum_{l' >= l} |rho|^levels[l'] E1[l'] E2[l'] + |rho|^n tail1 tail2
        X = (t1.energy[:, None, None, :] * t2.energy[None, :, None, :]) * edges[:, None] ** levels[:-1]
        X = np.concatenate([X, np.zeros(X.shape[:-1] + (1,))], axis=-1)     # after n terms: the tail only
        bound = np.cumsum(X[..., ::-1], axis=-1)[..., ::-1]
        bound += (edges ** n)[:, None] * (t1.tail[:, None] * t2.tail[None, :])[:, :, None, None]
        fits = bound <= TRUNCATION
        terms[:, :, :-1] = np.where(fits.any(axis=-1), levels[np.argmax(fits, axis=-1)], 0 if n >= N_MAX else -1)
        if previous is not None:
            terms = np.where(previous > 0, previous, terms)
        everywhere = np.all(terms[:, :, :-1] > 0, axis=(0, 1))
        k = int(np.argmin(everywhere)) if not everywhere.all() else len(EDGES)
        state = tables, terms, (EDGES[k - 1] if k > 0 else -1.0)
        if (terms > 0).any() and not self._probe(state):
            return tables, np.zeros_like(terms), -1.0
        return state

    def _extend(self, n=4):
        """Tables of `n` times as many terms (at most N_MAX)."""
        size = self.size
        if size < N_MAX:
            with _LOCK:
                if self.size == size:
                    self.state = self._state(min(n * size, N_MAX), self.state[1])
                    self.size = min(n * size, N_MAX)

    @property
    def limit(self):
        """The |rho| up to which every variance pair of the domain is fast (the full tables)."""
        self._extend(N_MAX)
        return self.state[2]

    @property
    def tables(self):
        return self.state[0]

    def _probe(self, state):
        """The fast path against expect2 at points spread over the domain, at the uniform limit and
        at the highest |rho| each variance corner reaches (1e-10 of the scale)."""
        tables, terms, limit = state
        v1 = [V_MIN, V_MAX, 3.0, V_MIN, V_MIN, V_MAX, 1.0]
        v2 = [V_MIN, V_MAX, 0.5, V_MIN, V_MAX, V_MAX, 1.0]
        r = [limit, -limit, 0.95 * limit, 0, 0, 0, 0]
        for i in range(3, 7):
            b1, b2 = _bin(_t(np.array([v1[i]])))[0], _bin(_t(np.array([v2[i]])))[0]
            covered = np.nonzero(terms[b1, b2, :-1] > 0)[0]
            r[i] = (-1) ** i * EDGES[covered[-1]] if covered.size else 0.5
        v1, v2, r = (np.array(a, dtype=float) for a in (v1, v2, r))
        keep = r > -1.0                  # (limit -1: none uniform)
        v1, v2, r = v1[keep], v2[keep], r[keep]
        c12 = r * np.sqrt(v1 * v2)
        t1, t2 = _t(v1), _t(v2)
        N = _lookup(terms, t1, t2, r)
        fast = N > 0
        if not fast.any():
            return True
        v1, v2, c12, N = v1[fast], v2[fast], c12[fast], N[fast]
        value = _series(tables, t1[fast], t2[fast], r[fast], N)
        slow = quadrature.expect2(self.derivatives, *self.orders, v1, c12, v2)
        return bool(np.all(np.abs(value - slow) <= PROBE_TOLERANCE * self.scale(v1, v2, tables)))

    def scale(self, v1, v2, tables=None):
        """sqrt(E[f1^2] E[f2^2]) (from the tables, to a few digits: enough for a tolerance)."""
        h1, h2 = (_coefficients(t, v) for t, v in zip(tables or self.tables, (v1, v2)))
        return np.sqrt(np.sum(h1 * h1, axis=-1) * np.sum(h2 * h2, axis=-1))

    def needed(self, t1, t2, rho, inside=None):
        """(N, tables): the terms each point needs (0: not covered; points not `inside` get 0) and
        the tables to sum them from; t1, t2 in [-1, 1] (_t of the variances). Extends the tables
        (4 times as many terms) while a point needs more terms than they hold."""
        while True:
            tables, terms, _ = self.state
            N = _lookup(terms, t1, t2, rho)
            if inside is not None:
                N = np.where(inside, N, 0)
            if self.size >= N_MAX or not (N < 0).any():
                return N, tables
            self._extend()

    def corner(self, t1, t2, rho):
        """(values, ok) at points with 0 <= 1 - |rho| < D_TOP from the corner cells: per cell
        (sign of rho, pieces of t1 and t2, interval of d = 1 - |rho|) the tensor Chebyshev sum
        sum_abc C[a, b, c] T_a(tau1) T_b(tau2) T_c(tau3) in the points' local variables; ok False
        where the cell failed its checks (_cell)."""
        c1, tau1 = _local(t1, CELL_PIECES)
        c2, tau2 = _local(t2, CELL_PIECES)
        j, tau3 = _octave(1.0 - np.abs(rho))
        key = (((rho < 0) * CELL_PIECES + c1) * CELL_PIECES + c2) * CELL_OCTAVES + j
        order = np.argsort(key, kind="stable")
        keys, starts = np.unique(key[order], return_index=True)
        n1, n2, n3 = CELL_DEGREE
        B1, B2, B3 = (_chebyshev(tau[order], n) for tau, n in zip((tau1, tau2, tau3), CELL_DEGREE))
        out, ok = np.empty(rho.size), np.ones(rho.size, bool)
        for k, a, b in zip(keys, starts, np.append(starts[1:], rho.size)):
            C = _built(self.cells, self._cell, int(k))        # (n3 n2, n1)
            if C is None:
                ok[a:b] = False
                continue
            X = (C @ B1[:, a:b]).reshape(n3, n2, b - a)
            out[a:b] = np.einsum("cm,cm->m", np.einsum("cbm,bm->cm", X, B2[:, a:b]), B3[:, a:b])
        values, good = np.empty(rho.size), np.empty(rho.size, bool)
        values[order], good[order] = out, ok
        return values, good

    def _cell(self, key):
        """A corner cell's coefficients C[a, b, c] (as (n3 n2, n1): C[a, b, c] at [c n2 + b, a]) from
        expect2 at its tensor Chebyshev points, or None where the tables failed or the cell fails
        its checks: the last coefficients along each axis <= CELL_TOLERANCE, and the interpolant at
        the cell's two extreme corners within PROBE_TOLERANCE of expect2, relative to the smallest
        scale sqrt(E[f1^2] E[f2^2]) at its points (the scale by expect1: fixed, whatever the tables' size)."""
        if not all(t.ok for t in self.tables):
            return None
        rest, j = divmod(key, CELL_OCTAVES)
        sign, c1, c2 = *divmod(rest // CELL_PIECES, CELL_PIECES), rest % CELL_PIECES
        (x1, T1), (x2, T2), (x3, T3) = (_interpolation(n) for n in CELL_DEGREE)
        lo, hi = (float(b) for b in _bounds(j))
        v1, v2 = (_variance(-1.0 + (2 * c + x + 1.0) / CELL_PIECES) for c, x in ((c1, x1), (c2, x2)))
        V1, V2, D = np.meshgrid(v1, v2, lo + (x3 + 1.0) * (0.5 * (hi - lo)), indexing="ij")
        s = 1.0 - 2.0 * sign
        expect2 = functools.partial(quadrature.expect2, self.derivatives, *self.orders)
        C = np.einsum("ai,bj,ck,ijk->abc", T1, T2, T3, expect2(V1, s * (1.0 - D) * np.sqrt(V1 * V2), V2))
        # the extreme corners (all local variables -1, resp. +1) and the smallest scale
        e1, e2 = (_variance(-1.0 + 2.0 * np.array([c, c + 1]) / CELL_PIECES) for c in (c1, c2))
        r = s * (1.0 - np.array([lo, hi]))
        probe = expect2(e1, r * np.sqrt(e1 * e2), e2)
        fast = np.array([np.sum((-1.0) ** np.indices(C.shape).sum(axis=0) * C), np.sum(C)])   # T_k(-+1) = (-+1)^k
        scale = np.sqrt(np.prod([quadrature.expect1(self.derivatives, o + o, np.concatenate([v, e])).min()
                                 for o, v, e in zip(self.orders, (v1, v2), (e1, e2))]))
        last = max(np.abs(C[-1]).max(), np.abs(C[:, -1]).max(), np.abs(C[:, :, -1]).max())
        if not (last <= CELL_TOLERANCE * scale and np.all(np.abs(fast - probe) <= PROBE_TOLERANCE * scale)):
            return None
        return np.ascontiguousarray(C.transpose(2, 1, 0).reshape(-1, T1.shape[0]))

    def mehler(self, c11, c12, c22):
        """The series at points in the fast domain (1-D arrays, every point covered)."""
        rho = c12 / np.sqrt(c11 * c22)
        t1 = _t(c11)
        t2 = t1 if c22 is c11 else _t(c22)
        N, tables = self.needed(t1, t2, rho)
        return _series(tables, t1, t2, rho, N)


def _lookup(terms, t1, t2, rho):
    return terms[_bin(t1), _bin(t2), _edge(rho)]


def _edge(rho):
    """The index k of the |rho| edge each rho takes (EDGES[k-1] < |rho| <= EDGES[k]; an |rho| at an
    edge up to rounding takes that edge: the bound moves by ~N 1e-13 relative)."""
    return np.searchsorted(EDGES, np.abs(rho) - 1e-13)


def _series(tables, t1, t2, rho, N):
    """sum_{n < N_i} rho_i^n h1_n h2_n at each point i (N_i > 0 one of LEVELS), the h_n from the
    tables' local interpolants. The points sorted by (terms, piece of t1, piece of t2); per
    number of terms one matrix product per piece (per pair of pieces for h2), the powers of rho
    by doubling, and a column sum."""
    tab1, tab2 = tables
    same = t2 is t1 and tab2 is tab1                # one table at the same variances
    M = rho.size
    level = np.searchsorted(LEVELS, N)
    p1, tau1 = _local(t1)
    p2, tau2 = (p1, tau1) if same else _local(t2)
    key = ((level * PIECES + p1) * PIECES + p2).astype(np.int16)
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=len(LEVELS) * PIECES * PIECES).reshape(len(LEVELS), PIECES, PIECES)
    B1 = _chebyshev(tau1[order])
    B2 = B1 if same else _chebyshev(tau2[order])
    rho = rho[order]
    out = np.empty(M)
    start = 0
    for l in np.nonzero(counts.sum(axis=(1, 2)))[0]:
        L, m = LEVELS[l], int(counts[l].sum())
        H1 = np.empty((L, m))
        H2 = H1 if same else np.empty((L, m))
        a = 0
        for i in np.nonzero(counts[l].sum(axis=1))[0]:
            b = a + int(counts[l, i].sum())
            np.matmul(tab1.local[i][:L], B1[:, start + a:start + b], out=H1[:, a:b])
            if not same:
                for j in np.nonzero(counts[l, i])[0]:
                    c = a + int(counts[l, i, j])
                    np.matmul(tab2.local[j][:L], B2[:, start + a:start + c], out=H2[:, a:c])
                    a = c
            a = b
        step = max(_CHUNK // L, 64)                   # (the products and powers stay in cache)
        for a in range(0, m, step):
            b = min(a + step, m)
            P = H1[:, a:b] * H2[:, a:b]
            out[start + a:start + b] = np.einsum("ij,ij->j", P, _powers(rho[start + a:start + b], L))
        start += m
    result = np.empty(M)
    result[order] = out
    return result


def _powers(rho, L):
    """rho^k for k < L (L >= 2), (L, M), by doubling: each power is rounded the same way for any L."""
    R = np.empty((L, rho.size))
    R[0], R[1] = 1.0, rho
    k = 2
    while k < L:
        j = min(k, L - k)
        np.multiply(R[:j], R[k - 1] * R[1], out=R[k:k + j])
        k += j
    return R


def _local(t, pieces=PIECES):
    """The piece (of `pieces` equal ones of [-1, 1]) of each t and t's local variable in [-1, 1]."""
    u = np.clip((t + 1.0) * (pieces / 2), 0.0, pieces)
    piece = np.minimum(u.astype(np.intp), pieces - 1)
    return piece, 2.0 * (u - piece) - 1.0


def _bounds(j):
    """The interval [lo, hi) of d = 1 - |rho| of the corner cells' octave j."""
    return np.where(j > 0, np.ldexp(D_LOW, j - 1), 0.0), np.ldexp(D_LOW, j)


def _octave(d):
    """The octave j of each d in [0, D_TOP) (j = 0: [0, D_LOW), else [D_LOW 2^(j-1), D_LOW 2^j))
    and d's local variable in [-1, 1]."""
    j = np.maximum(np.frexp(d / D_LOW)[1], 0)
    lo, hi = _bounds(j)
    return j, 2.0 * (d - lo) / (hi - lo) - 1.0


def _chebyshev(tau, degree=DEGREE):
    """The Chebyshev basis T_k(tau), k < degree, (degree, M) of tau (M,), by the recurrence."""
    B = np.empty((degree, tau.size))
    B[0], B[1] = 1.0, tau
    tau2 = 2.0 * tau
    for k in range(2, degree):
        np.multiply(tau2, B[k - 1], out=B[k])
        B[k] -= B[k - 2]
    return B


def _bin(t):
    """The bin (of N_BINS in [-1, 1]) of each t; t outside (rounding) is clipped, NaN goes to bin 0."""
    u = (t + 1.0) * (N_BINS / 2)
    return np.minimum(np.where(u >= 0.0, u, 0.0), N_BINS - 1).astype(np.intp)


def _t(v):
    return (np.log(v) * 0.5 - _U0) * (2.0 / (_U1 - _U0)) - 1.0


def _variance(t):
    """The variance at t (the inverse of _t)."""
    return np.exp(2.0 * (_U0 + (t + 1.0) * (0.5 * (_U1 - _U0))))


def _coefficients(table, v):
    return _basis(_t(np.atleast_1d(v))).T @ table.coef


_TABLES, _PAIRS = {}, {}


def _built(store, cls, *key):
    """store[key], built once as cls(*key) (under the lock: worker threads share the tables)."""
    if key not in store:
        with _LOCK:
            if key not in store:
                store[key] = cls(*key)
    return store[key]


def _table(derivatives, orders, n=N_FIRST):
    return _built(_TABLES, _Table, derivatives, orders, n)


def _pair(derivatives, orders1, orders2):
    return _built(_PAIRS, _Pair, derivatives, orders1, orders2)


def domain(derivatives, orders1, orders2):
    """(V_MIN, V_MAX, |rho| limit) of the fast path for this kernel (limit < 0: none)."""
    return V_MIN, V_MAX, _pair(derivatives, tuple(orders1), tuple(orders2)).limit


def _degenerate(derivatives, orders1, orders2, c11, c12, c22):
    """E[f1(x1) f2(kappa x1)], x1 ~ N(0, c11): expect2's outer rule with its inner rule collapsed."""
    sigma1 = np.sqrt(c11)
    kappa = c12 / c11
    with np.errstate(divide="ignore"):
        b1 = np.minimum(np.minimum(1.0, 1.0 / sigma1), 1.0 / np.abs(kappa * sigma1))
    x1, w1 = quadrature._sinh_rule(np.zeros_like(c11), sigma1, b1, quadrature.N_OUTER)
    return np.sum(w1 * _product(derivatives, orders1, x1) * _product(derivatives, orders2, kappa[:, None] * x1),
                  axis=-1)


_MEANS = {}


def _mean_table(derivatives, orders1, orders2=()):
    return _built(_MEANS, _Mean, derivatives, orders1, orders2)


def mean(derivatives, orders, v):
    """E[prod_a g^(a)(x)], x ~ N(0, v): the tabulated Chebyshev series for v in [V_MIN, V_MAX]
    (equal to quadrature.expect1 to ~1e-14), expect1 elsewhere."""
    orders = tuple(orders)
    v = np.asarray(v, dtype=float)
    shape, flat = v.shape, v.ravel()
    table = _mean_table(derivatives, orders)
    with np.errstate(invalid="ignore"):
        inside = (flat >= V_MIN) & (flat <= V_MAX)
    if not table.ok or not inside.all():
        out = np.empty(flat.shape)
        if table.ok and inside.any():
            out[inside] = table(flat[inside], 1.0)
        rest = ~inside if table.ok else np.ones(flat.shape, bool)
        if rest.any():
            out[rest] = quadrature.expect1(derivatives, orders, flat[rest])
        return out.reshape(shape)
    if flat.size < _SMALL:                      # (the means of one right-hand side share their variances)
        basis = _remembered(_LAST_MEAN, flat.tobytes(), lambda: _basis(_t(flat)))
    else:
        basis = _basis(_t(flat))
    return (table.coef[:, 0] @ basis).reshape(shape)


#: the last small batch of variances of mean() and their Chebyshev basis
_LAST_MEAN = [(b"", None)]


def _remembered(slot, key, build):
    """slot[0] = (key, value) of the last call, rebuilt when the key differs: what the kernels of one
    right-hand side share (read once: another thread may replace it)."""
    last_key, value = slot[0]
    if last_key != key or value is None:
        value = build()
        slot[0] = key, value
    return value


def pair(derivatives, orders1, orders2, c11, c12, c22):
    """E[prod_a g^(a)(x1) prod_b g^(b)(x2)] for (x1, x2) ~ N(0, [[c11, c12], [c12, c22]]): the
    Mehler series in its domain, tabulated or one-dimensional rules at rho = +-1, the corner cells
    beyond the series' reach, else quadrature.expect2 (see the module docstring)."""
    orders1, orders2 = tuple(orders1), tuple(orders2)
    c11, c12, c22 = (np.asarray(c, dtype=float) for c in (c11, c12, c22))
    shape = c11.shape
    if not c12.shape == c22.shape == shape:              # (broadcast by adding zeros: cheaper than broadcast_arrays)
        shape = np.broadcast_shapes(c11.shape, c12.shape, c22.shape)
        zero = np.zeros(shape)
        c11, c12, c22 = (c if c.shape == shape else c + zero for c in (c11, c12, c22))
    c11, c12, c22 = c11.ravel(), c12.ravel(), c22.ravel()
    if c11.size == 0:
        return np.empty(shape)
    kernel = _pair(derivatives, orders1, orders2)
    if c11.size < _SMALL:
        points = _small_points(c11, c12, c22)
        if points.inside:
            return _small(derivatives, orders1, orders2, kernel, c11, c12, c22, points).reshape(shape)
    with np.errstate(all="ignore"):
        bound = np.sqrt(c11 * c22)
        rho = c12 / bound
        inside = (c11 >= V_MIN) & (c11 <= V_MAX) & (c22 >= V_MIN) & (c22 <= V_MAX)
        t1, t2 = _t(c11), _t(c22)
        N, tables = kernel.needed(t1, t2, rho, inside)
        fast = N > 0
        if fast.all():
            return _series(tables, t1, t2, rho, N).reshape(shape)
        flat = inside & ~fast & _flat(c11, c12, c22, bound)
    out = np.empty(c11.shape)
    if fast.any():
        out[fast] = _series(tables, t1[fast], t2[fast], rho[fast], N[fast])
    done = fast | _corner(kernel, t1, t2, rho, inside & ~(fast | flat), out)
    _degenerate_and_rest(derivatives, orders1, orders2, c11, c12, c22, done, flat, out)
    return out.reshape(shape)


def _reach(rho):
    """Whether 1 - |rho| is in [0, D_TOP), the corner cells' range (False for NaN)."""
    with np.errstate(invalid="ignore"):
        d = 1.0 - np.abs(rho)
        return (d >= 0.0) & (d < D_TOP)


def _corner(kernel, t1, t2, rho, todo, out):
    """out at the points `todo` in the corner cells' range, from the cells; returns where it was
    set (cells that failed their checks left out)."""
    reach = todo & _reach(rho)
    if reach.any():
        index = np.nonzero(reach)[0]
        values, ok = kernel.corner(t1[index], t2[index], rho[index])
        out[index[ok]] = values[ok]
        reach[index[~ok]] = False
    return reach


def _flat(c11, c12, c22, bound):
    """rho = +-1 up to rounding: conditional variance <= DEGENERATE (and |c12| <= sqrt(c11 c22))."""
    return (c22 - c12 * (c12 / c11) <= DEGENERATE * np.maximum(c22, 1.0)) & (np.abs(c12) <= bound * (1 + 1e-12))


def _degenerate_and_rest(derivatives, orders1, orders2, c11, c12, c22, done, flat, out):
    """out at the points that are `flat` (rho = +-1: the tabulated diagonal at equal variances, else
    the one-dimensional rule) and at those neither `done` nor flat (expect2)."""
    if flat.any():
        diagonal = _mean_table(derivatives, orders1, orders2)
        equal = flat & (c11 == c22) if diagonal.ok else np.zeros_like(flat)
        if equal.any():
            out[equal] = diagonal(c11[equal], c12[equal])
        other = flat & ~equal
        if other.any():
            out[other] = _degenerate(derivatives, orders1, orders2, c11[other], c12[other], c22[other])
    rest = ~(done | flat)
    if rest.any():
        out[rest] = quadrature.expect2(derivatives, orders1, orders2, c11[rest], c12[rest], c22[rest])


class _Points:
    """What the kernels that one right-hand side evaluates at the same few points share: the
    variances' (t, piece, local Chebyshev basis, bin, global basis), rho's |rho| edge, where the
    points are rho = +-1 (flat) and at equal variances, and the powers of rho (grown as needed)."""

    def __init__(self, c11, c12, c22):
        with np.errstate(all="ignore"):
            v = np.concatenate((c11, c22))
            self.inside = bool(v.min() >= V_MIN and v.max() <= V_MAX)        # (False with a NaN)
            if not self.inside:
                return
            bound = np.sqrt(c11 * c22)
            self.M, self.rho = c11.size, c12 / bound
            self.t = _t(v)
            self.piece, tau = _local(self.t)
            self.B, self.bins, self.G = _chebyshev(tau).T[:, :, None], _bin(self.t), _basis(self.t)
            self.edge = _edge(self.rho)
            self.flat = _flat(c11, c12, c22, bound)
            self.equal = self.flat & (c11 == c22)
            self.R = _powers(self.rho, 2)

    def powers(self, n):
        """rho^k, k < n, (n, M): rows of the same doubling whatever n (see _powers)."""
        if self.R.shape[0] < n:
            with np.errstate(all="ignore"):
                self.R = _powers(self.rho, max(n, 2 * self.R.shape[0]))
        return self.R[:n]


#: the last small batch's points and their _Points (the kernels of one right-hand side share them)
_LAST = [(b"", None)]


def _small_points(c11, c12, c22):
    return _remembered(_LAST, c11.tobytes() + c12.tobytes() + c22.tobytes(), lambda: _Points(c11, c12, c22))


def _at_pieces(table, n, piece, B):
    """h_k, k < n, (n, M) at points on the given pieces with local Chebyshev bases B (M, DEGREE, 1):
    the products _series takes, one small matrix product per point."""
    return np.matmul(table.local[piece, :n], B)[..., 0].T


def _small(derivatives, orders1, orders2, kernel, c11, c12, c22, P):
    """pair() for a few points with variances in the domain, in few numpy calls: the sums of
    _series (each point's own terms, the tables' local interpolants, the same powers), so that a
    value does not depend on the batch it comes in, then the points outside the fast domain."""
    M, t, piece, B, rho = P.M, P.t, P.piece, P.B, P.rho
    tables, terms, _ = kernel.state
    N = terms[P.bins[:M], P.bins[M:], P.edge]                             # (_lookup, the bins in one call)
    if N.min() < 0:
        N, tables = kernel.needed(t[:M], t[M:], rho)
    fast = N > 0
    n = int(N.max())
    out = np.zeros(M)
    if n > 0:
        H = _at_pieces(tables[0], n, piece[:M], B[:M]) * _at_pieces(tables[1], n, piece[M:], B[M:])
        R = np.where(np.arange(n)[:, None] < N, P.powers(n), 0.0)          # each point's own terms
        out = np.einsum("ij,ij->j", H, R)
    if fast.all():
        return out
    flat, done = ~fast & P.flat, fast
    if flat.any():
        diagonal = _mean_table(derivatives, orders1, orders2)
        if diagonal.ok:       # rho = +-1 at equal variances (the diagonal k = l): its table, as _Mean does
            equal = flat & P.equal
            values = diagonal.coef.T @ P.G[:, :M]
            out = np.where(equal, np.where(rho >= 0, values[0], values[1]), out)
            done, flat = fast | equal, flat & ~equal
    rest = ~(done | flat)
    beyond = rest.any()
    if not (beyond or flat.any()):
        return out
    with np.errstate(all="ignore"):
        if beyond:
            done = done | _corner(kernel, t[:M], t[M:], rho, rest, out)
        _degenerate_and_rest(derivatives, orders1, orders2, c11, c12, c22, done, flat, out)
    return out


_TABULATE = contextvars.ContextVar("tabulate", default=True)


@contextlib.contextmanager
def untabulated():
    """Within it tabulated_units gives nothing, so the caller's quadrature takes every average: for
    a few evaluations, where building the tables costs more (~0.2 s for erf's K = 2 signatures,
    against ~1.5 ms an evaluation by the quadrature)."""
    token = _TABULATE.set(False)
    try:
        yield
    finally:
        _TABULATE.reset(token)


def tabulated_units(derivatives, signatures, Q):
    """The averages quadrature.expect_units takes over one unit or one pair of units, every
    signature at once from the tables: Q (M, n, n) the units' covariances; for n = 1 the signatures
    are (orders,) and the averages E[prod_a g^(a)(x)] come from the _Mean tables (as mean()), for
    n = 2 they are (orders1, orders2) and the averages Mehler's series of pair() (each kernel's own
    terms a point, the tables' local interpolants), summed for all signatures in a few array
    operations. {signature: (M,)}, or None where a variance is outside [V_MIN, V_MAX], a table
    failed its checks, or a point is beyond some signature's series or needs more terms than its
    tables hold or than STACK_TERMS (the tables do not grow here: at the few points that would make
    them, the caller's quadrature, which then takes them all, is cheaper)."""
    if Q.shape[-1] > 2 or Q.shape[0] == 0 or not _TABULATE.get():
        return None
    with np.errstate(all="ignore"):
        v = np.diagonal(Q, axis1=-2, axis2=-1)
        if not (v.min() >= V_MIN and v.max() <= V_MAX):                   # (False with a NaN)
            return None
        if Q.shape[-1] == 1:
            return _tabulated_means(derivatives, tuple(signatures), v[:, 0])
        return _tabulated_pairs(derivatives, tuple(signatures), Q[:, 0, 0], Q[:, 0, 1], Q[:, 1, 1])


#: stacked tables of tabulated_units: {key: array}, cleared when it holds _STACK_ENTRIES
_STACKS, _STACK_ENTRIES = {}, 64
#: tabulated_units sums at most this many terms a point (the quadrature takes points that need more)
STACK_TERMS = 256


def _stacked(key, build):
    if key not in _STACKS:
        if len(_STACKS) >= _STACK_ENTRIES:
            _STACKS.clear()
        _STACKS[key] = build()
    return _STACKS[key]


def _tabulated_means(derivatives, signatures, v):
    def build():
        tables = [_mean_table(derivatives, sig[0]) for sig in signatures]
        return np.stack([t.coef[:, 0] for t in tables]) if all(t.ok for t in tables) else None
    C = _stacked((derivatives, signatures), build)
    return None if C is None else dict(zip(signatures, C @ _basis(_t(v))))


def _tabulated_pairs(derivatives, signatures, c11, c12, c22):
    kernels = _stacked(("kernels", derivatives, signatures),
                       lambda: [_pair(derivatives, o1, o2) for o1, o2 in signatures])
    M = c11.size
    rho = c12 / np.sqrt(c11 * c22)
    t = _t(np.concatenate((c11, c22)))
    t1, t2 = t[:M], t[M:]
    states = [k.state for k in kernels]
    key = tuple(map(id, states))
    terms = _stacked(("terms",) + key, lambda: (states, np.stack([s[1] for s in states])))[1]
    N = terms[:, _bin(t1), _bin(t2), _edge(rho)]                         # (S, M), as _lookup
    if (N <= 0).any() or N.max() > STACK_TERMS:           # (the tables do not grow here: the quadrature is cheaper)
        return None
    n = int(N.max())
    tables, i1, i2, _ = _stacked(("tables",) + key, lambda: _stack_tables(states))
    piece, tau = _local(t)
    B = _cosines(tau, DEGREE)                                             # (DEGREE, 2 M)
    if M == 1:                                       # (one point: the pieces' tables without a copy)
        H1, H2 = tables[:, piece[0], :n] @ B[:, :1], tables[:, piece[1], :n] @ B[:, 1:]
    else:
        H1 = np.einsum("fmkd,dm->fkm", tables[:, piece[:M], :n], B[:, :M])   # (factors, n, M)
        H2 = np.einsum("fmkd,dm->fkm", tables[:, piece[M:], :n], B[:, M:])
    P = np.where(np.arange(n)[:, None] < N[:, None, :], H1[i1] * H2[i2], 0.0)    # each point's own terms
    return dict(zip(signatures, np.einsum("skm,km->sm", P, _powers(rho, n))))


def _stack_tables(states):
    """(local (F, PIECES, STACK_TERMS at most, DEGREE): the distinct tables' first terms, zero
    beyond a table's size; the index in it of each state's first and second table; the states,
    kept with them so that their ids, the cache key, stay theirs), for _tabulated_pairs."""
    distinct = list({id(t): t for s in states for t in s[0]}.values())
    row = {id(t): i for i, t in enumerate(distinct)}
    width = min(max(t.n for t in distinct), STACK_TERMS)
    local = np.zeros((len(distinct), PIECES, width, DEGREE))
    for i, t in enumerate(distinct):
        m = min(width, t.n)
        local[i, :, :m] = t.local[:, :m]
    first, second = (np.array([row[id(s[0][j])] for s in states]) for j in (0, 1))
    return local, first, second, states
