"""Elementwise helpers the generated kernels print in place of /, sqrt and asin.

They give the closed forms their correct limits on the boundary of the PSD cone, where a
formula is a ratio of vanishing quantities or rounding pushes an argument just outside its
domain (inputs are validated before they get here, see `runtime.check`):

* `div(a, b)`: a/b, with 0/0 -> 0 (a Stein term whose covariance vanishes) and a/0 -> +-inf;
* `sqrt0(a)`: sqrt(max(a, 0)) for a radicand that is a determinant or a conditional variance;
* `power(x, p)`: x**p for an integer p >= 3 or a half-integer p >= 3/2, by multiplications (numpy's
  ** calls C's pow per element for these exponents, ~50x slower);
* `det(c11, c12, c22)`: c11 c22 - c12^2, 0 where `bvn` takes the correlation as +-1, so that the
  kernels that call bvn see one covariance, singular or not, in all their terms;
* `arcsin(a)`: arcsin(clip(a, -1, 1)) for a correlation coefficient;
* `atan2(c, s)`, `angle(c, s)`: asin(c/sqrt(X)) printed as atan2(c, sqrt(X - c^2)) or, where
  that is shorter, pi/2 + asin as atan2(sqrt(X - c^2), -c): exact near |correlation| 1;
* `bvn(h, k, rho)`: the bivariate normal CDF of the shifted-Gaussian kernels (derive/shifted.py),
  with its limits at infinite h, k and at rho = +-1;
* `standardised(m1, m2, c11, c12, c22)`: the standardised means, correlation and conditional means
  that the shifted pair kernels' normal CDFs and densities take (derive/codegen.py writes them so).
"""
import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr, owens_t


def div(a, b):
    """a / b elementwise, 0/0 -> 0, a/0 -> sign(a) inf."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if b.ndim == 0 and b != 0:        # a nonzero scalar (the smoothed kinks' powers of epsilon)
        return np.divide(a, b, out=np.empty(a.shape))
    nonzero = b != 0
    q = np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=nonzero)
    if not nonzero.all():
        q = np.where(nonzero | (a == 0), q, np.copysign(np.inf, a))
    return q


def sqrt0(a):
    """sqrt(max(a, 0))."""
    return np.sqrt(np.maximum(a, 0.0))


def power(x, p):
    """x**p for p an integer >= 2 or a half-integer >= 3/2 (then x >= 0, as the generated code's bases
    are): x x ... x (times sqrt(x)), within a few ulp of pow. The printer uses it from p = 3 (numpy's **
    has fast paths for the exponents 2, 1/2 and -1 only; for x**3 on 2e5 numbers it took 11.5 ms
    against 0.08 ms for x*x*x: the derivatives of g at the quadrature nodes)."""
    n, half = divmod(round(2 * p), 2)
    y = x
    for _ in range(n - 1):
        y = y * x
    return y * np.sqrt(x) if half else y


#: |correlation| within this of 1 is +-1 (bvn, det): what c12/(sqrt(c11) sqrt(c22)) rounds to at an
#: exactly singular covariance
SINGULAR = 4 * np.finfo(float).eps
#: two thresholds within ROUNDING of each other (relatively) are one: bvn's lines h = k at rho = 1
#: and h = -k at rho = -1
ROUNDING = 8 * np.finfo(float).eps


def det(c11, c12, c22):
    """c11 c22 - c12^2, exactly 0 where 1 - |c12/(sqrt(c11) sqrt(c22))| <= SINGULAR (bvn's +-1).

    A covariance singular up to rounding (c12 = +-sqrt(c11 c22) rounded) has a determinant of
    ~1e-16 c11 c22 of either sign; the shifted and exp-tilted kernels add terms in sqrt(det) to
    bvn terms that cancel them to ~1e-6 relatively at variances 1e6 (ELU's E[g''(x1) g(x2)]), so a
    determinant that disagrees with bvn's rho = +-1 put them 20x off."""
    c11, c12, c22 = (np.asarray(a, dtype=float) for a in (c11, c12, c22))
    return _det(div(c12, np.sqrt(c11) * np.sqrt(c22)), c11, c12, c22)


def _det(rho, c11, c12, c22):
    """det, given rho = c12/(sqrt(c11) sqrt(c22))."""
    return np.where(1.0 - np.abs(rho) <= SINGULAR, 0.0, c11 * c22 - c12 ** 2)


def _within_rounding(a, b):
    """|a - b| <= ROUNDING max(|a|, |b|)."""
    return np.abs(a - b) <= ROUNDING * np.maximum(np.abs(a), np.abs(b))


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


def bvn(h, k, rho, tilt=None, scaled_tilt=None, absolute=False):
    """P(X < h, Y < k) for standard normals with correlation rho (Owen 1956, eq. 3.1):
    Phi(h)/2 + Phi(k)/2 - T(h, (k - rho h)/(h r)) - T(k, (h - rho k)/(k r)) - beta,
    r = sqrt(1 - rho^2), beta = 1/2 where h k < 0 (h = 0 read as 0+), T = Owen's T function;
    below TAIL, where that difference of O(1) terms is accurate only absolutely, by the tail rule
    (`_bvn_tail`, relatively accurate however small the probability).
    Limits: rho = 1 gives Phi(min(h, k)), rho = -1 gives max(Phi(h) + Phi(k) - 1, 0),
    h = k = 0 gives 1/4 + asin(rho)/(2 pi); h, k = +-inf give Phi of the other or 0.
    A correlation within 4 ulp of +-1 is taken as +-1: it is what c12/(sqrt(c11) sqrt(c22))
    rounds to at c11 = c12 = c22 (the diagonal of the pair kernels), and near rho = 1 the CDF
    moves like sqrt(1 - rho), so the rounding alone would cost 1e-8.

    tilt: exp(tilt) bvn(h, k, rho) instead, the exp-tilted kernels of derive/shifted.py (ELU:
    E[e^(x1 + x2) H(-x1) H(-x2)] = e^(c11/2 + c12 + c22/2) bvn(...), e^(2e6) times e^(-2e6) at
    variances 1e6), computed as exp(tilt + log_bvn) (derive.printer.stable_tails prints them so);
    scaled_tilt, if given, is tilt - q/2 worked out symbolically, q = (h^2 - 2 rho h k + k^2)/(1 - rho^2)
    the exponent of the Gaussian density at (h, k) (0 for ELU's tilts; minus a density's exponent
    with means): in the tail the value is then exp(scaled_tilt + log(bvn e^(q/2))) with the scaled
    CDF computed as such, free of the cancellation of the exponents (~1e-16 of them relatively,
    1e-10 at variances 1e6).

    absolute: Owen's formula alone, also below TAIL (~1e-16 absolutely, ~5 us a point less there):
    for a bvn that enters a sum with a constant term (derive.printer.absolute_bvn), whose rounding
    the tail rule's relative accuracy cannot improve."""
    if tilt is None:
        h, k, rho, value, general = _owen(h, k, rho)
        if absolute:
            return value
        tail = general & (value < TAIL)
        if tail.any():
            value[tail] = np.exp(_bvn_tail(h[tail], k[tail], rho[tail])[1])
        return value
    h, k, rho, tilt = np.broadcast_arrays(*(np.asarray(u, dtype=float) for u in (h, k, rho, tilt)))
    log_p, (h, k, rho, general), tail, scaled = _log_bvn(h, k, rho)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(tilt + log_p)
        if scaled_tilt is None:
            return out
        scaled_tilt = np.broadcast_to(np.asarray(scaled_tilt, dtype=float), out.shape)
        finite = np.isfinite(scaled_tilt)
        out = np.array(out)
        out[tail & finite] = np.exp(scaled_tilt[tail & finite] + scaled[finite[tail]])
        # rho = 1 at h = k (to rounding): P = Phi(h), q = h^2 (ELU's pair kernels at c12 = -c11 = -c22)
        line = (~general & (rho > 0) & np.isfinite(h) & np.isfinite(k) & finite
                & _within_rounding(h, k))
        if line.any():
            out[line] = np.exp(scaled_tilt[line] + _scaled_log_ndtr(np.minimum(h, k)[line]))
        return out


def log_bvn(h, k, rho):
    """log P(X < h, Y < k) (see bvn), accurate relatively however small the probability: -inf where
    it is 0; the edges (rho = +-1, infinite h or k) by log_ndtr, values below TAIL by the tail rule."""
    return _log_bvn(h, k, rho)[0]


def _log_bvn(h, k, rho):
    """(log P, (h, k, rho, general) broadcast as `_owen` gives them, tail, scaled): log_bvn, the
    points the tail rule took (`tail`, a mask) and their log(P e^(q/2)) (`scaled`, one a point of
    the tail; `_bvn_tail`), for bvn's scaled tilt."""
    h, k, rho, value, general = _owen(h, k, rho)
    with np.errstate(all="ignore"):
        out = np.log(value)
        a, b = np.minimum(h, k), np.maximum(h, k)
        up = log_ndtr(a)
        # rho = -1: P(-b < X < a) = Phi(a) - Phi(-b) for a + b > 0, else 0; a sliver a + b within
        # rounding of 0 is 0 (k = -h up to rounding, as at rho = 1 h = k is the line in bvn)
        down = np.where(a <= 0, up + np.log1p(-np.minimum(np.exp(log_ndtr(-b) - up), 1.0)),
                        np.log1p(-(ndtr(-a) + ndtr(-b))))
        down = np.where((a + b > 0) & ~_within_rounding(a, -b), down, -np.inf)
    out = np.where(general, out, np.where(rho > 0, up, down))
    tail = general & (value < TAIL)
    scaled = np.empty(0)
    if tail.any():
        scaled, out[tail] = _bvn_tail(h[tail], k[tail], rho[tail])
    return out, (h, k, rho, general), tail, scaled


def _owen(h, k, rho):
    """(h, k, rho, value, general) broadcast: Owen's formula where rho is not +-1 and h, k are finite
    (`general`), the limits elsewhere (see bvn)."""
    h, k, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (h, k, rho)))
    rho = np.clip(rho, -1.0, 1.0)
    r = np.sqrt((1.0 - rho) * (1.0 + rho))
    general = (1.0 - np.abs(rho) > SINGULAR) & np.isfinite(h) & np.isfinite(k)
    with np.errstate(all="ignore"):
        hs = np.where(h == 0, 1e-300, h)
        ks = np.where(k == 0, 1e-300, k)
        value = (0.5 * (ndtr(h) + ndtr(k)) - owens_t(hs, (ks - rho * hs) / (hs * r))
                 - owens_t(ks, (hs - rho * ks) / (ks * r)) - 0.5 * (hs * ks < 0))
        value = np.where((h == 0) & (k == 0), 0.25 + np.arcsin(rho) / (2 * np.pi), value)
        edge = np.where(rho > 0, ndtr(np.minimum(h, k)), np.maximum(ndtr(h) + ndtr(k) - 1.0, 0.0))
    value = np.array(np.clip(np.where(general, value, edge), 0.0, 1.0), dtype=float)
    return h, k, rho, value, general


#: below this, bvn and log_bvn take the tail rule `_bvn_tail`: Owen's formula is a difference of
#: O(1) terms, accurate to ~1e-16 absolutely, not relatively, and the exp-tilted kernels of
#: derive/shifted.py multiply a tail probability by a large exponential
TAIL = 1e-4

#: the tail rule: Gauss-Legendre nodes per piece; the drop of the integrand's logarithm from its
#: mode where the range ends (e^-50: 2e-22 relative); the pieces' growth away from the mode
TAIL_NODES, TAIL_DROP, TAIL_GRADING = 16, 50.0, 4.0
_GL_T, _GL_W = np.polynomial.legendre.leggauss(TAIL_NODES)
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _mills(z):
    """phi(z)/Phi(z), stable for all z (0 at +inf, ~ -z at -inf)."""
    return np.sqrt(2 / np.pi) / erfcx(-z / np.sqrt(2))


def _scaled_log_ndtr(z):
    """log Phi(z) + z^2/2 without cancellation (log(erfcx(-z/sqrt 2)/2) for z < 0)."""
    return np.where(z < 0, np.log(erfcx(-np.minimum(z, 0.0) / np.sqrt(2)) / 2), log_ndtr(z) + z * z / 2)


def _bvn_tail(h, k, rho):
    """(log(P e^(q/2)), log P) for P = P(X < h, Y < k), q = (h^2 - 2 rho h k + k^2)/(1 - rho^2), to
    ~1e-13 relative, vectorised (no adaptive quadrature: the same few array operations for every
    point). With (a, b) = (h, k) or (k, h) (below), r = sqrt(1 - rho^2),

        P = phi(a) int_0^inf e^F(t) dt,  F(t) = a t - t^2/2 + log Phi(alpha + beta t)

    (x = a - t, alpha = (b - rho a)/r, beta = rho/r), and q/2 = a^2/2 + alpha^2/2, so that
    log(P e^(q/2)) = -log sqrt(2 pi) + log int e^(F + alpha^2/2), with F + alpha^2/2 =
    a t - t^2/2 + [log Phi(z) + z^2/2] - beta t (alpha + z)/2 at z = alpha + beta t, each term
    moderate (`_scaled_log_ndtr`; the same for the differences F(t) - F(t*) that weight the nodes).
    F is strictly concave (F'' <= -1: log Phi is concave), so the
    integrand has one mode t* (safeguarded Newton on F' within [0, F'(0)]) and falls monotonically
    on each side; Newton on F(t) = F(t*) - TAIL_DROP from outside (a tangent of a concave function
    lies above it) ends the range on each side, which is cut into pieces growing by TAIL_GRADING
    from the integrand's scale at t* (its curvature, or its slope at t* = 0), each summed by
    Gauss-Legendre: a step of width r/|rho| in Phi (correlations near 1) and an exponential
    decay of rate |a| are resolved alike."""
    h, k, rho = (np.asarray(u, dtype=float) for u in (h, k, rho))
    r = np.sqrt((1.0 - rho) * (1.0 + rho))
    beta = rho / r
    # which variable to integrate over: alpha <= 0 (q/2 = a^2/2 + alpha^2/2 then has no alpha^2/2 of
    # 1e16 to cancel, at correlations near 1), and of those the one whose integrand falls from t = 0
    # (the smaller F'(0): the Gaussian largest at the corner, F(t*) = F(0) without cancellation)
    with np.errstate(all="ignore"):
        alphas = [(k - rho * h) / r, (h - rho * k) / r]
        slopes = [u + beta * _mills(al) for u, al in zip((h, k), alphas)]
    fits = [al <= 0 for al in alphas]
    first = np.where(fits[0] == fits[1], slopes[0] <= slopes[1], fits[0])
    a, b, alpha = np.where(first, h, k), np.where(first, k, h), np.where(first, *alphas)
    a_, alpha_, beta_ = a[:, None, None], alpha[:, None, None], beta[:, None, None]

    def F(t):
        return a * t - t * t / 2 + log_ndtr(alpha + beta * t)

    def F_minus(t, at):
        """F(t) - F(at), without the cancellation of log Phi(z) ~ -z^2/2 (z <= 0 at both)."""
        z, z0 = alpha_ + beta_ * t, alpha_ + beta_ * at
        both = (z <= 0) & (z0 <= 0)
        cdfs = np.where(both, _scaled_log_ndtr(np.minimum(z, 0.0)) - _scaled_log_ndtr(np.minimum(z0, 0.0))
                        - (z - z0) * (z + z0) / 2, log_ndtr(z) - log_ndtr(z0))
        return (t - at) * (a_ - (t + at) / 2) + cdfs

    def dF(t):
        return a - t + beta * _mills(alpha + beta * t)

    def d2F(t):
        z = alpha + beta * t
        m = _mills(z)
        return -1.0 - beta * beta * m * (z + m)

    with np.errstate(all="ignore"):
        # the mode: F' decreases with slope <= -1, so its root lies in [0, F'(0)]; for beta > 0 also
        # below t_c + max(a, 0) + 1, t_c where z = c, beta Mills(c) <= 1 (the step of Phi is passed)
        slope0 = dF(np.zeros_like(a))
        c = np.sqrt(2 * np.log(np.maximum(beta, 1.0))) + 1
        past = np.maximum((c - alpha) / np.where(beta > 0, beta, 1.0), 0.0) + np.maximum(a, 0.0) + 1
        lo, hi = np.zeros_like(a), np.maximum(np.where(beta > 0, np.minimum(slope0, past), slope0), 0.0)
        t = np.where(beta > 0, np.clip(-alpha / np.where(beta > 0, beta, 1.0), lo, hi), hi / 2)
        interior = slope0 > 0
        for _ in range(100 if interior.any() else 0):
            d = dF(t)
            done = (np.abs(d) <= 1e-12 * (np.abs(a) + 1)) | (hi - lo <= 1e-15 * np.maximum(hi, 1.0))
            if np.all(done | ~interior):
                break
            lo, hi = np.where(d > 0, t, lo), np.where(d > 0, hi, t)
            step = t - d / d2F(t)
            t = np.where(done, t, np.where((step >= lo) & (step <= hi), step, (lo + hi) / 2))
        mode = np.where(interior, t, 0.0)
        top = F(mode)
        # the integrand's scale at the mode: its curvature there, or its slope at a mode at t = 0
        width = 1.0 / (np.sqrt(-d2F(mode)) + np.abs(np.where(interior, 0.0, slope0)))

        def end(start, side):
            s = start
            for _ in range(30):
                s_new = s - (F(s) - top + TAIL_DROP) / dF(s)
                if side < 0:
                    s_new = np.where(mode > 0, np.clip(s_new, 0.0, mode), 0.0)
                if np.all(np.abs(s_new - s) <= 1e-3 * width):
                    return s_new
                s = s_new
            return s
        right = end(mode + width, 1)
        left = np.where(mode > 0, end(np.maximum(mode - width, 0.0), -1), 0.0)
        total = np.zeros_like(a)
        for side, end_, extent in ((-1.0, left, mode - left), (1.0, right, right - mode)):
            # pieces [d_j, d_(j+1)] from the mode: d = 0, w, R w, R^2 w, ... up to the end, w the
            # smaller of the scales at the mode and at the end (the curvature grows to 1 + beta^2
            # left of a step of Phi: a half Gaussian of width r/rho there)
            w = np.minimum(width, 1.0 / np.sqrt(-d2F(end_)))
            ratio = np.where(extent > w, extent / w, 1.0)
            pieces = int(np.ceil(np.log(ratio.max()) / np.log(TAIL_GRADING))) + 1
            d = w[:, None] * TAIL_GRADING ** np.arange(-1.0, pieces)
            d[:, 0] = 0.0
            d = np.minimum(d, extent[:, None])
            lo_, half = d[:, :-1], (d[:, 1:] - d[:, :-1]) / 2
            nodes = mode[:, None, None] + side * (lo_[:, :, None] + half[:, :, None] * (1 + _GL_T))
            values = F_minus(nodes, mode[:, None, None])
            total += np.sum(half * np.sum(_GL_W * np.exp(values), axis=2), axis=1)
        # log P = -a^2/2 - log sqrt(2 pi) + F(t*) + log total, and log(P e^(q/2)) with
        # F(t*) + alpha^2/2 = a t* - t*^2/2 + [log Phi(z*) + z*^2/2] - beta t* (alpha + z*)/2
        z = alpha + beta * mode
        scaled_top = a * mode - mode * mode / 2 + np.where(
            z <= 0, _scaled_log_ndtr(np.minimum(z, 0.0)) - beta * mode * (alpha + z) / 2, log_ndtr(z) + alpha * alpha / 2)
        scaled = scaled_top - _LOG_SQRT_2PI + np.log(total)
        plain = top - a * a / 2 - _LOG_SQRT_2PI + np.log(total)
    # F's values lose every digit where they are beyond ~1e15 (rho within ~1e-15 of -1 and thresholds
    # of 1e2 or more): the probability is e^(-1e15) or less there, and 0 its value in double precision
    lost = np.isnan(scaled) | np.isnan(plain)
    return np.where(lost, -np.inf, scaled), np.where(lost, -np.inf, plain)


def standardised(m1, m2, c11, c12, c22):
    """(h1, h2, r, k1, k2) for (x1, x2) ~ N((m1, m2), [[c11, c12], [c12, c22]]): the standardised
    means h1 = m1/sqrt(c11), h2 = m2/sqrt(c22), the correlation r = c12/sqrt(c11 c22), and the
    standardised conditional means k1 = (c22 m1 - c12 m2)/sqrt(c22 det) (of x1 given x2 = 0) and
    k2 = (c11 m2 - c12 m1)/sqrt(c11 det), det = c11 c22 - c12^2 (`det`, 0 where bvn's rho is +-1),
    each a div (0/0 -> 0).
    derive/codegen.py writes the shifted pair kernels in these (derive.codegen._standardisation)."""
    s1, s2 = np.sqrt(c11), np.sqrt(c22)
    r = div(c12, s1 * s2)
    sd = sqrt0(_det(r, c11, c12, c22))
    return div(m1, s1), div(m2, s2), r, div(c22 * m1 - c12 * m2, s2 * sd), div(c11 * m2 - c12 * m1, s1 * sd)
