"""Elementwise helpers the generated kernels print in place of /, sqrt and asin.

They give the closed forms their correct limits on the boundary of the PSD cone, where a
formula is a ratio of vanishing quantities or rounding pushes an argument just outside its
domain (inputs are validated before they get here, see `runtime.check`):

* `div(a, b)`: a/b, with 0/0 -> 0 (a Stein term whose covariance vanishes) and a/0 -> +-inf;
* `sqrt0(a)`: sqrt(max(a, 0)) for a radicand that is a determinant or a conditional variance;
* `arcsin(a)`: arcsin(clip(a, -1, 1)) for a correlation coefficient;
* `atan2(c, s)`, `angle(c, s)`: asin(c/sqrt(X)) printed as atan2(c, sqrt(X - c^2)) or, where
  that is shorter, pi/2 + asin as atan2(sqrt(X - c^2), -c): exact near |correlation| 1;
* `bvn(h, k, rho)`: the bivariate normal CDF of the shifted-Gaussian kernels (derive/shifted.py),
  with its limits at infinite h, k and at rho = +-1;
* `standardised(m1, m2, c11, c12, c22)`: the standardised means, correlation and conditional means
  that the shifted pair kernels' normal CDFs and densities take (derive/codegen.py writes them so).
"""
import numpy as np
from scipy.special import ndtr, owens_t


def div(a, b):
    """a / b elementwise, 0/0 -> 0, a/0 -> sign(a) inf."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nonzero = b != 0
    q = np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=nonzero)
    if not nonzero.all():
        q = np.where(nonzero | (a == 0), q, np.copysign(np.inf, a))
    return q


def sqrt0(a):
    """sqrt(max(a, 0))."""
    return np.sqrt(np.maximum(a, 0.0))


def arcsin(a):
    """arcsin(clip(a, -1, 1))."""
    return np.arcsin(np.clip(a, -1.0, 1.0))


def atan2(y, x):
    """arctan2(y, x); with the guarded sqrt as x >= 0 this is asin(y/sqrt(x^2 + y^2)), 0 at 0/0."""
    return np.arctan2(y, x)


def angle(c, s):
    """pi/2 + atan2(c, s) = atan2(s, -c) for s >= 0, accurate as c/sqrt(c^2 + s^2) -> -1;
    pi/2 at c = s = 0 (a vanishing variance: correlation 0)."""
    return np.where((c == 0) & (s == 0), np.pi / 2, np.arctan2(s, -c))


def broadcast(value, *args):
    """`value` as a new float array of the broadcast shape of `args` (a constant kernel, an
    integer result, or an argument returned as is are copied; a fresh float result is not)."""
    shape = np.broadcast(*args).shape if len(args) > 1 else np.shape(args[0])
    if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == shape \
            and not any(value is a for a in args):
        return value
    return np.array(np.broadcast_to(np.asarray(value, dtype=float), shape))


def bvn(h, k, rho):
    """P(X < h, Y < k) for standard normals with correlation rho (Owen 1956, eq. 3.1):
    Phi(h)/2 + Phi(k)/2 - T(h, (k - rho h)/(h r)) - T(k, (h - rho k)/(k r)) - beta,
    r = sqrt(1 - rho^2), beta = 1/2 where h k < 0 (h = 0 read as 0+), T = Owen's T function.
    Limits: rho = 1 gives Phi(min(h, k)), rho = -1 gives max(Phi(h) + Phi(k) - 1, 0),
    h = k = 0 gives 1/4 + asin(rho)/(2 pi); h, k = +-inf give Phi of the other or 0.
    A correlation within 4 ulp of +-1 is taken as +-1: it is what c12/(sqrt(c11) sqrt(c22))
    rounds to at c11 = c12 = c22 (the diagonal of the pair kernels), and near rho = 1 the CDF
    moves like sqrt(1 - rho), so the rounding alone would cost 1e-8."""
    h, k, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (h, k, rho)))
    rho = np.clip(rho, -1.0, 1.0)
    r = np.sqrt((1.0 - rho) * (1.0 + rho))
    general = (1.0 - np.abs(rho) > 4 * np.finfo(float).eps) & np.isfinite(h) & np.isfinite(k)
    with np.errstate(all="ignore"):
        hs = np.where(h == 0, 1e-300, h)
        ks = np.where(k == 0, 1e-300, k)
        value = (0.5 * (ndtr(h) + ndtr(k)) - owens_t(hs, (ks - rho * hs) / (hs * r))
                 - owens_t(ks, (hs - rho * ks) / (ks * r)) - 0.5 * (hs * ks < 0))
        value = np.where((h == 0) & (k == 0), 0.25 + np.arcsin(rho) / (2 * np.pi), value)
        edge = np.where(rho > 0, ndtr(np.minimum(h, k)), np.maximum(ndtr(h) + ndtr(k) - 1.0, 0.0))
    value = np.clip(np.where(general, value, edge), 0.0, 1.0)
    tail = general & (value < TAIL)
    if tail.any():
        value = np.array(value, dtype=float)
        value[tail] = [_bvn_tail(*point) for point in zip(h[tail], k[tail], rho[tail])]
    return value


#: below this, bvn recomputes its value by `_bvn_tail`: Owen's formula is a difference of O(1)
#: terms, accurate to ~1e-16 absolutely, not relatively; the exp-tilted kernels of derive/shifted.py
#: (ELU: E[e^(x1 + x2) H(-x1) H(-x2)] = e^(...) bvn(...)) multiply a tail probability by a large
#: exponential, e^128 bvn(-16, -16, 0.999) at variances 50 and 80
TAIL = 1e-4


def _bvn_tail(h, k, rho):
    """P(X < h, Y < k) to ~1e-12 relative: phi(a) int_0^inf exp(a t - t^2/2) Phi((b - rho (a - t))/r) dt,
    a = min(h, k), b the other (x = a - t), split where the normal CDF steps (width r/|rho|)."""
    from scipy.integrate import quad
    a, b = min(h, k), max(h, k)
    r = np.sqrt((1.0 - rho) * (1.0 + rho))

    def f(t):
        return np.exp(a * t - t * t / 2) * ndtr((b - rho * (a - t)) / r)
    step = a - b / rho if rho != 0 else -1.0
    options = dict(epsabs=0.0, epsrel=1e-13, limit=400)
    if step > 0:
        total = quad(f, 0.0, step, **options)[0] + quad(f, step, np.inf, **options)[0]
    else:
        total = quad(f, 0.0, np.inf, **options)[0]
    return float(np.exp(-a * a / 2) / np.sqrt(2 * np.pi) * total)


def standardised(m1, m2, c11, c12, c22):
    """(h1, h2, r, k1, k2) for (x1, x2) ~ N((m1, m2), [[c11, c12], [c12, c22]]): the standardised
    means h1 = m1/sqrt(c11), h2 = m2/sqrt(c22), the correlation r = c12/sqrt(c11 c22), and the
    standardised conditional means k1 = (c22 m1 - c12 m2)/sqrt(c22 det) (of x1 given x2 = 0) and
    k2 = (c11 m2 - c12 m1)/sqrt(c11 det), det = c11 c22 - c12^2 (sqrt0), each a div (0/0 -> 0).
    derive/codegen.py writes the shifted pair kernels in these (derive.codegen._standardisation)."""
    s1, s2, sd = np.sqrt(c11), np.sqrt(c22), sqrt0(c11 * c22 - c12 ** 2)
    return (div(m1, s1), div(m2, s2), div(c12, s1 * s2),
            div(c22 * m1 - c12 * m2, s2 * sd), div(c11 * m2 - c12 * m1, s1 * sd))
