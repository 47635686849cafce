"""Fast two-point Gaussian averages (pair kernels) for activations without a closed form.

    pair(derivatives, orders1, orders2, c11, c12, c22)
        = E[prod_a g^(a)(x1) prod_b g^(b)(x2)],  (x1, x2) ~ N(0, [[c11, c12], [c12, c22]])

Method: Mehler's (Price's) series in the correlation rho = c12 / sqrt(c11 c22),

    E[f1(x1) f2(x2)] = sum_n rho^n h1_n(sigma1) h2_n(sigma2),
    h_n(sigma) = E[f(sigma z) He_n(z)] / sqrt(n!),  z ~ N(0, 1),

the normalised Hermite coefficients of f(sigma z). They depend on one variance only, so for each
unit factor f (an `orders` tuple of g's derivatives) they are tabulated once, lazily on the
first call, as Chebyshev series of degree < N_CHEB in log(sigma) over the domain
sigma^2 in [V_MIN, V_MAX], for n < N_MAX: built from a trapezoidal rule in z (step 0.02 on
[-14, 14], spectrally accurate for f analytic in a strip: tanh(sigma z) at sigma = 10 has its
poles 0.157 off the real axis, error ~exp(-2 pi 0.157 / 0.02) ~ 1e-21), ~10-50 ms per factor.
An evaluation is two small matrix products (Chebyshev basis @ table) and a weighted row sum.

Truncation. With A_n = max over the domain of |h_n| / ||f|| (||f||^2 = E[f(sigma z)^2]) and
the Parseval tail beyond N_MAX bounded by Cauchy-Schwarz, truncating after N terms errs by at
most ||f1|| ||f2|| (sum_{N <= n < N_MAX} |rho|^n A1_n A2_n + |rho|^N_MAX tail). The number of
terms is chosen per band of |rho| (BANDS) so that this bound is <= TRUNCATION (1e-11) times the
Cauchy-Schwarz scale ||f1|| ||f2|| >= |value|; the kernel's fast domain ends at the last band
that N_MAX terms cover (|rho| <= 0.92 for tanh's and sigmoid's kernels, 0.95 for sigmoid's
pair_0_0; see `domain`).

Domain and fallback. The fast path takes points with both variances in [V_MIN, V_MAX] and
|rho| up to the kernel's limit. Points with conditional variance c22 - c12^2/c11 <= DEGENERATE
(rho = +-1 up to rounding: the diagonal k = l of every kernel matrix) are one-dimensional,
E[f1(x1) f2(kappa x1)], by runtime.quadrature's outer rule (the value expect2 gives there, without
its collapsed inner rule). Every other point (higher |rho|, variances outside the domain, means,
NaN) goes to runtime.quadrature.expect2 unchanged: nothing is approximated outside the domain.

Accuracy (tests/test_fast_kernels.py, against mpmath at 30 digits): |error| <= 1e-9 |value| +
1e-10 sqrt(E[f1^2] E[f2^2]), i.e. 1e-9 relative, and absolute at 1e-10 of the Cauchy-Schwarz
scale where the value is ~0 (measured: ~1e-13 relative for tanh and sigmoid). A batch of fewer
than _SMALL points is summed with its largest band's terms, so a value can differ by ~1e-12 of the
scale between batches; for given inputs the result is deterministic. Each table checks itself when built: its Chebyshev series must
have converged (last coefficients < 1e-14 of the largest) and the fast path must agree with
expect2 at probe points at 1e-10 of the scale; a factor that fails either (an activation that is
not analytic near the real axis, say) is not accelerated -- every call goes to expect2.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from runtime import quadrature

V_MIN, V_MAX = 1e-2, 1e2
N_MAX = 320          # Hermite terms tabulated
N_CHEB = 80          # Chebyshev degree (+1) in log(sigma)
TRUNCATION = 1e-11   # truncation bound, relative to the Cauchy-Schwarz scale
#: |rho| bands: each gets the fewest terms (a multiple of 8) whose truncation bound holds at its edge
BANDS = (0.3, 0.5, 0.65, 0.75, 0.82, 0.88, 0.92, 0.95)
DEGENERATE = 1e-14   # conditional variance below which a point is treated as rho = +-1
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
             f"for variances in [{V_MIN:g}, {V_MAX:g}] and |rho| up to the kernel's limit, double-exponential "
             "quadrature elsewhere (runtime/quadrature.py)"),
    "shifted_mean": "double-exponential quadrature with the mean (runtime/quadrature.py)",
    "shifted_pair": "double-exponential quadrature with the means (runtime/quadrature.py)",
}


def family(name):
    """The family of a kernel's name, a key of METHODS: 'pair_1_1' -> 'pair', 'shifted_mean_0' -> 'shifted_mean'."""
    shifted = name.startswith("shifted_")
    return ("shifted_" if shifted else "") + name.split("_")[1 if shifted else 0]
_SMALL = 256         # below this many points: direct formulas with fewer numpy calls

_U0, _U1 = 0.5 * np.log(V_MIN), 0.5 * np.log(V_MAX)     # log(sigma) range
_LOCK = threading.RLock()     # re-entrant: a pair builds its two tables under it


@functools.lru_cache(maxsize=1)
def _hermite_rule():
    """Trapezoidal nodes z on [-14, 14] and the matrix P (N_MAX, nodes) of w(z) He_n(z)/sqrt(n!)."""
    z = _STEP * np.arange(-round(_ZMAX / _STEP), round(_ZMAX / _STEP) + 1)      # symmetric: f(-x) is a flip
    w = _STEP * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    P = np.empty((N_MAX, z.size))
    P[0], P[1] = 1.0, z
    for n in range(1, N_MAX - 1):
        P[n + 1] = (z * P[n] - np.sqrt(n) * P[n - 1]) / np.sqrt(n + 1)
    return z, w, P * w


_GRID = {}


def _on_grid(derivatives, orders, flip=False):
    """prod_a g^(a)(s sigma_j z_i) on the table's grid (nodes, N_CHEB), s = -1 if `flip` else 1; each
    derivative evaluated once per activation (the grid in z is symmetric: s = -1 reverses it)."""
    out = 1.0
    for a in orders:
        key = (derivatives, a)
        if key not in _GRID:
            z = _hermite_rule()[0]
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
    whether the series converged (last coefficients < 1e-14 of the largest)."""
    C = (2.0 / N_CHEB) * np.tensordot(_nodes()[2], values, axes=1)
    C[0] *= 0.5
    scale = np.abs(C).max() if np.all(np.isfinite(C)) else np.inf
    return C, bool(np.isfinite(scale) and np.abs(C[-6:]).max() <= 1e-14 * max(scale, 1e-300))


class _Mean:
    """E[f1(sigma z) f2(s sigma z)], f = prod g^(orders), for s = +1 and -1 (f2 = 1 when orders2 is
    empty) as Chebyshev series in log sigma, coef (N_CHEB, 2): one-point means and the pair kernels
    at rho = +-1 and equal variances. `ok`: converged and equal to quadrature.expect1 / the
    one-dimensional rule at probe points (1e-12 of E[f1^2]^(1/2) E[f2^2]^(1/2) + 1e-12)."""

    def __init__(self, derivatives, orders1, orders2=()):
        w = _hermite_rule()[1]
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
    """Chebyshev coefficients (N_CHEB, N_MAX) of h_n(sigma) in t = 2 (u - U0)/(U1 - U0) - 1,
    u = log sigma, for one factor f = prod g^(orders); `ok` False when it did not converge."""

    def __init__(self, derivatives, orders):
        z, w, P = _hermite_rule()
        with np.errstate(all="ignore"):
            F = _on_grid(derivatives, orders)                                # (nodes, N_CHEB)
            H = P @ F                                                        # (N_MAX, N_CHEB)
            norm2 = w @ (F * F)                                              # E[f(sigma z)^2]
        # column N_MAX: E[f^2], for the normalised bounds below
        C, self.ok = _transform(np.concatenate([H.T, norm2[:, None]], axis=1))
        self.coef = np.ascontiguousarray(C[:, :N_MAX])                      # (N_CHEB, N_MAX); column 0: E[f]
        self.ok = self.ok and bool(np.all(norm2 > 0))
        if not self.ok:
            return
        # normalised coefficient bounds A_n over the domain, on a grid finer than the table's nodes
        Hg = _basis(np.linspace(-1.0, 1.0, 2 * N_CHEB + 1)).T @ C           # (grid, N_MAX + 1)
        normalised = Hg[:, :N_MAX] / np.sqrt(Hg[:, N_MAX:])
        self.bound = np.abs(normalised).max(axis=0)
        self.tail = float(np.sqrt(np.maximum(1.0 - np.sum(normalised**2, axis=1), 0.0).max()))


def _basis(t):
    """Chebyshev basis T_k(t), k < N_CHEB, of t (M,): (N_CHEB, M)."""
    if t.size < _SMALL:
        return np.cos(np.multiply.outer(_K, np.arccos(np.minimum(np.maximum(t, -1.0), 1.0))))
    B = np.empty((N_CHEB, t.size))
    B[0], B[1] = 1.0, t
    t2 = 2.0 * t
    for k in range(2, N_CHEB):
        np.multiply(t2, B[k - 1], out=B[k])
        B[k] -= B[k - 2]
    return B


class _Pair:
    """The Mehler series of one kernel: terms per |rho| band, and its fast |rho| limit."""

    def __init__(self, derivatives, orders1, orders2):
        self.derivatives, self.orders = derivatives, (orders1, orders2)
        t1, t2 = _table(derivatives, orders1), _table(derivatives, orders2)
        self.tables = (t1, t2)
        self.edges, self.terms = [], []
        if not (t1.ok and t2.ok):
            self.limit = -1.0
            return
        A = t1.bound * t2.bound
        n = np.arange(N_MAX)
        for edge in BANDS:
            tail = edge ** N_MAX * t1.tail * t2.tail
            # bound(N) = sum_{N <= n < N_MAX} edge^n A_n + tail, for every N at once
            partial = np.cumsum((edge ** n * A)[::-1])[::-1]
            fits = np.nonzero(partial + tail <= TRUNCATION)[0]
            if tail > TRUNCATION or fits.size == 0:
                break
            self.edges.append(edge)
            self.terms.append(int(min(N_MAX, -(-max(int(fits[0]), 1) // 8) * 8)))
        self.limit = self.edges[-1] if self.edges else -1.0
        if self.limit > 0 and not self._probe():
            self.edges, self.terms, self.limit = [], [], -1.0

    def _probe(self):
        """The fast path against expect2 at points spread over the domain (1e-10 of the scale)."""
        v1 = np.array([V_MIN, V_MAX, 3.0])
        v2 = np.array([V_MIN, V_MAX, 0.5])
        r = self.limit * np.array([1.0, -1.0, 0.95])
        c12 = r * np.sqrt(v1 * v2)
        fast = self.mehler(v1, c12, v2)
        slow = quadrature.expect2(self.derivatives, *self.orders, v1, c12, v2)
        return bool(np.all(np.abs(fast - slow) <= PROBE_TOLERANCE * self.scale(v1, v2)))

    def scale(self, v1, v2):
        """sqrt(E[f1^2] E[f2^2]) (from the tables, to a few digits: enough for a tolerance)."""
        h1, h2 = (_coefficients(t, v) for t, v in zip(self.tables, (v1, v2)))
        return np.sqrt(np.sum(h1 * h1, axis=-1) * np.sum(h2 * h2, axis=-1))

    def mehler(self, c11, c12, c22):
        """The series at points in the fast domain (1-D arrays)."""
        rho = c12 / np.sqrt(c11 * c22)
        # (a point at the limit up to rounding takes the last band: the bound is continuous in rho)
        band = np.minimum(np.searchsorted(np.asarray(self.edges), np.abs(rho)), len(self.edges) - 1)
        if rho.size < _SMALL:
            return self._sum(c11, c22, rho, self.terms[int(band.max())])
        out = np.empty(rho.shape)
        for b in np.unique(band):
            sel = np.nonzero(band == b)[0]
            out[sel] = self._sum(c11[sel], c22[sel], rho[sel], self.terms[b])
        return out

    def _sum(self, c11, c22, rho, N):
        """sum_{n < N} rho^n h1_n h2_n, the coefficients (N, M) from the tables."""
        t1, t2 = self.tables
        H1 = t1.coef[:, :N].T @ _basis(_t(c11))
        H2 = H1 if (t2 is t1 and c22 is c11) else t2.coef[:, :N].T @ _basis(_t(c22))
        if rho.size < _SMALL:
            R = rho ** np.arange(N)[:, None]
        else:
            R = np.empty((N, rho.size))
            R[0] = 1.0
            R[1:] = rho
            np.cumprod(R, axis=0, out=R)
        H1 *= H2
        H1 *= R
        return H1.sum(axis=0)


def _t(v):
    return (np.log(v) * 0.5 - _U0) * (2.0 / (_U1 - _U0)) - 1.0


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


def _table(derivatives, orders):
    return _built(_TABLES, _Table, derivatives, orders)


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
    return (table.coef[:, 0] @ _basis(_t(flat))).reshape(shape)


def pair(derivatives, orders1, orders2, c11, c12, c22):
    """E[prod_a g^(a)(x1) prod_b g^(b)(x2)] for (x1, x2) ~ N(0, [[c11, c12], [c12, c22]]): the
    Mehler series in its domain, tabulated or one-dimensional rules at rho = +-1, else
    quadrature.expect2 (see the module docstring)."""
    orders1, orders2 = tuple(orders1), tuple(orders2)
    arrays = np.broadcast_arrays(*(np.asarray(c, dtype=float) for c in (c11, c12, c22)))
    shape = arrays[0].shape
    c11, c12, c22 = (a.ravel() for a in arrays)
    if c11.size == 0:
        return np.empty(shape)
    kernel = _pair(derivatives, orders1, orders2)
    with np.errstate(all="ignore"):
        bound = np.sqrt(c11 * c22)
        rho = c12 / bound
        if 0 < c11.size < _SMALL:
            v = np.concatenate((c11, c22))
            if v.min() >= V_MIN and v.max() <= V_MAX:         # (False with a NaN)
                return _small(derivatives, orders1, orders2, kernel, c11, c12, c22, rho, v).reshape(shape)
        inside = (c11 >= V_MIN) & (c11 <= V_MAX) & (c22 >= V_MIN) & (c22 <= V_MAX)
        fast = inside & (np.abs(rho) <= kernel.limit)
        if fast.all():
            return kernel.mehler(c11, c12, c22).reshape(shape)
        flat = inside & ~fast & _flat(c11, c12, c22, bound)
    out = np.empty(c11.shape)
    if fast.any():
        out[fast] = kernel.mehler(c11[fast], c12[fast], c22[fast])
    _degenerate_and_rest(derivatives, orders1, orders2, c11, c12, c22, fast, flat, out)
    return out.reshape(shape)


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


def _small(derivatives, orders1, orders2, kernel, c11, c12, c22, rho, v):
    """pair() for a few points with variances in the domain, in few numpy calls: one Chebyshev
    basis for both variances, the series at every point (its largest band's terms), then the
    points outside the fast |rho| range replaced."""
    M = c11.size
    B = _basis(_t(v))                                                      # (N_CHEB, 2M)
    a = np.abs(rho)
    fast = a <= kernel.limit
    out = np.zeros(M)
    if fast.any():
        N = kernel.terms[min(int(np.searchsorted(kernel.edges, a[fast].max())), len(kernel.edges) - 1)]
        t1, t2 = kernel.tables
        H1 = t1.coef[:, :N].T @ B[:, :M]
        H1 *= t2.coef[:, :N].T @ B[:, M:]
        H1 *= np.where(fast, rho, 0.0) ** np.arange(N)[:, None]
        out = H1.sum(axis=0)
    if fast.all():
        return out
    flat = ~fast & _flat(c11, c12, c22, np.sqrt(c11 * c22))
    done = fast
    if flat.any():
        diagonal = _mean_table(derivatives, orders1, orders2)
        if diagonal.ok:                  # rho = +-1 at equal variances: the diagonal's table, same basis
            equal = flat & (c11 == c22)
            values = diagonal.coef.T @ B[:, :M]
            out = np.where(equal, np.where(rho >= 0, values[0], values[1]), out)
            done, flat = fast | equal, flat & ~equal
    _degenerate_and_rest(derivatives, orders1, orders2, c11, c12, c22, done, flat, out)
    return out
