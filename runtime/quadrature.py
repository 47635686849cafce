"""Numerical Gaussian averages for activations without a closed form (tanh, sigmoid, ...).

Gauss-Hermite quadrature in whitened coordinates converges too slowly here: at variance 100,
tanh(10 z) has poles at distance pi/20 from the real axis, and 320 nodes still leave an error
of 6e-3. Instead the averages use the double-exponential ("sinh") trapezoidal rule, whose
nodes resolve both scales of the integrand -- the Gaussian (width sigma) and the activation's
own structure (width ~1 around x = 0) -- and converge exponentially for analytic g:

* one point: E[f(x)], x = m + sigma z, z = b sinh(u), b = min(1, 1/sigma) (for a smoothed kink
  and a mean m off it, the nodes are centred on the kink at x = 0 instead: _sinh_rule);
* two points, conditioning x2 on x1 (x2 = m2 + kappa (x1 - m1) + s z):
  the outer integral over x1 as above (its scale also resolves the inner average, which
  varies on the scale max(1, s)/|kappa|), the inner one centred on the Gaussian when s <= 1
  or when the activation's structure lies in the far tail (|kappa x1| > 8 s), and centred on
  x2 = 0 with unit scale otherwise. In expect_units' pair rules the latter share their nodes across
  the outer nodes (_SharedLevel: the derivatives of g at ~150 points instead of 91 x 131, the sums
  one matrix product; each element's step at most its own rule's).

Every rule is truncated at 9 standard deviations (Gaussian weight < 1e-17). The node counts
below keep the error under 1e-10 for tanh and sigmoid at variances 1e-2 ... 1e2 and any
correlation (tests/test_kernels_quadrature.py checks them against mpmath at 30 digits).
"""
import functools
import itertools
from typing import NamedTuple

import numpy as np

N_OUTER = 91
N_INNER = 131
N_ONE = 131
_TAIL = 9.0
_FAR = 8.0
_CHUNK = 1 << 21  # integrand values per chunk
_FOLD = 1 << 16   # integrand values per numpy call of expect_units' sums
_SQRT_2PI = np.sqrt(2 * np.pi)


def _product(derivatives, orders, x):
    out = _at(derivatives[orders[0]], x)
    for a in orders[1:]:
        out = out * _at(derivatives[a], x)
    return out


def _at(f, x):
    """f(x) at the nodes x. The rules reach 9 standard deviations out, where an activation written
    with exponentials overflows on the way to its limit (sigmoid's g^(5) = 120/(e^(5x) + ...) -> 0:
    inf in a denominator is that limit, not an error), so overflow is not reported here; a value
    that is really infinite or NaN still reaches the average, and integrate's finiteness check."""
    with np.errstate(over="ignore"):
        return f(x)


def _nodes(U, n):
    """Trapezoidal nodes u in [-U, U] (U of shape (...,)) and the step."""
    t = np.linspace(-1.0, 1.0, n)
    return U[..., None] * t, 2.0 * U / (n - 1)


def _sinh_rule(m, sigma, b, n, sharp=False):
    """Nodes x (..., n) and weights for E[f(x)], x = m + sigma z ~ N(m, sigma^2), resolving the
    width b sigma (b <= 1): z = b sinh(u) - c, centred on x = m (c = 0), or, for a `sharp`
    activation (a smoothed kink, structure narrower than 1), on x = 0, where its kink is, when
    the mean is off it by up to _FAR standard deviations and the rule is finer than the Gaussian
    (c = m/sigma: a bias). A smooth activation keeps the nodes on the mean: its structure is not
    confined to 0 (sin), and there they resolve the Gaussian best."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(sharp & (b < 1) & (np.abs(m) <= _FAR * sigma), m / np.where(sigma > 0, sigma, 1.0), 0.0)
    U = np.arcsinh((np.abs(c) + _TAIL) / b)
    u, h = _nodes(U, n)
    z = b[..., None] * np.sinh(u) - c[..., None]
    w = np.exp(-0.5 * z * z) / _SQRT_2PI * b[..., None] * np.cosh(u) * h[..., None]
    return m[..., None] + sigma[..., None] * z, w


def _one_rule(v, m, scale=1.0):
    """Nodes x (..., N_ONE) and weights of the rule for x ~ N(m, v); `scale`: the width of the
    activation's structure around x = 0."""
    sigma = np.sqrt(v)
    with np.errstate(divide="ignore"):
        b = np.minimum(1.0, scale / sigma)
    return _sinh_rule(m, sigma, b, N_ONE, scale < 1)


def expect1(derivatives, orders, v, m=0.0, scale=1.0):
    """E[prod_a g^(a)(x)] for x ~ N(m, v); `derivatives` = (g, g', g'', ...)."""
    v, m = np.broadcast_arrays(np.asarray(v, dtype=float), np.asarray(m, dtype=float))
    x, w = _one_rule(v, m, scale)
    return np.sum(w * _product(derivatives, orders, x), axis=-1)


def expect2(derivatives, orders1, orders2, c11, c12, c22, m1=0.0, m2=0.0, scale=1.0):
    """E[prod_a g^(a)(x1) prod_b g^(b)(x2)] for (x1, x2) ~ N((m1, m2), [[c11, c12], [c12, c22]])."""
    arrays = np.broadcast_arrays(*(np.asarray(c, dtype=float) for c in (c11, c12, c22, m1, m2)))
    shape = arrays[0].shape
    c11, c12, c22, m1, m2 = (a.ravel() for a in arrays)
    out = np.empty(c11.shape)
    step = max(1, _CHUNK // (N_OUTER * N_INNER))
    for lo in range(0, c11.size, step):
        sl = slice(lo, lo + step)
        x1, w1, y, w = _pair_rule(c11[sl], c12[sl], c22[sl], m1[sl], m2[sl], scale=scale)
        inner = np.sum(w * _product(derivatives, orders2, y), axis=-1)
        out[sl] = np.sum(w1 * _product(derivatives, orders1, x1) * inner, axis=-1)
    return out.reshape(shape)


def _pair_rule(c11, c12, c22, m1, m2, n_outer=None, n_inner=None, scale=1.0, shared=False):
    """Outer nodes x1 (M, n_outer) with weights w1, and for each the inner nodes x2
    (M, n_outer, n_inner) with weights w of E[. | x1] (see the module docstring); the node counts
    default to N_OUTER and N_INNER as they are at the call. `shared`: where some inner rules are not
    centred, the inner level as a _SharedLevel (its nodes common to the outer nodes) in place of (x2, w)."""
    n_outer, n_inner = N_OUTER if n_outer is None else n_outer, N_INNER if n_inner is None else n_inner
    sigma1 = np.sqrt(c11)
    positive = c11 > 0
    kappa = np.where(positive, c12 / np.where(positive, c11, 1.0), 0.0)
    s = np.sqrt(np.maximum(c22 - kappa * c12, 0.0))
    with np.errstate(divide="ignore", over="ignore"):     # 1/0 and 1/subnormal: +inf, as meant
        b1 = np.minimum(np.minimum(1.0, scale / sigma1), np.maximum(scale, s) / np.abs(kappa * sigma1))
    x1, w1 = _sinh_rule(m1, sigma1, b1, n_outer, scale < 1)      # (M, n_outer)
    dx1 = x1 - m1[:, None]
    m = m2[:, None] + kappa[:, None] * dx1
    level = _shared_conditional_rule(m, s, n_inner, scale) if shared else None
    if level is not None:
        return x1, w1, level, level.w
    y, w = _conditional_rule(m, np.broadcast_to(s[:, None], dx1.shape), n_inner, scale)
    return x1, w1, y, w


class _SharedLevel(NamedTuple):
    """The inner level of a pair rule whose rules that are not centred share their nodes across the
    outer nodes (_shared_conditional_rule): y (M, 1, n) with weights w (M, n_outer, n), 0 at the
    centred elements, whose own nodes are yc (n_c, n_inner) with the centred weights wc (n_inner,),
    `where` their flat indices in (M, n_outer)."""

    y: np.ndarray
    w: np.ndarray
    where: np.ndarray
    yc: np.ndarray
    wc: np.ndarray


def _shared_conditional_rule(m, s, n, scale):
    """_conditional_rule for the inner level of a pair rule, m (M, n_outer), s (M,), with the nodes of the
    elements it does not centre shared by the outer nodes of each batch element: y = scale sinh(u), u in
    [-U, U], U = arcsinh((max |m| + _TAIL s) / scale) over them, with as many nodes as keep every element's
    step U / (n' - 1) at most that of its own rule (n' = n for equal |m|; ~1.1 n across a pair's outer
    nodes), so that g's derivatives are evaluated at n' points a batch element instead of n_outer n and the
    sums are one matrix product. A _SharedLevel, or None where every element is centred (_conditional_rule's
    one weight vector serves them)."""
    sd = s[:, None]
    centred = _centred(m, sd, scale)
    if centred.all():
        return None
    off = ~centred
    some = off.any(axis=1)
    far = np.where(some, np.where(off, np.abs(m), 0.0).max(axis=1), 0.0)
    near = np.where(some, np.where(off, np.abs(m), np.inf).min(axis=1), 0.0)
    U, U_own = (np.arcsinh((a + _TAIL * s) / scale) for a in (far, near))
    stretch = np.max(U[some] / U_own[some])
    if not np.isfinite(stretch):                    # NaN or inf in the covariance: the per-element rule passes it on
        return None
    shared = 1 + int(np.ceil((n - 1) * stretch))
    u, h = _nodes(U, shared)                                                    # (M, shared)
    y = scale * np.sinh(u)
    with np.errstate(divide="ignore", invalid="ignore"):                        # s = 0: centred, weight 0
        w = _off_centre_weights(y[:, None, :], u[:, None, :], h[:, None, None], m[:, :, None], sd[:, :, None],
                                scale)
    w[centred] = 0.0
    where = np.flatnonzero(centred)
    sinh, weights = _centred_nodes(n)
    yc = m.reshape(-1)[where, None] + np.broadcast_to(sd, m.shape).reshape(-1)[where, None] * sinh
    return _SharedLevel(y[:, None, :], w, where, yc, weights)


def _conditional_rule(m, s, n, scale=1.0):
    """Nodes y (..., n) and weights for E[f(m + s z)], z ~ N(0, 1), elementwise over m, s.
    Where every element is centred (the common case) the weights are one vector of n numbers,
    returned broadcast to y's shape (a read-only view: _fold sums with it as a matrix product)."""
    centred = _centred(m, s, scale)
    if np.all(centred):
        sinh, weights = _centred_nodes(n)
        y = m[..., None] + s[..., None] * sinh
        return y, np.broadcast_to(weights, y.shape)
    # centred: y = m + s sinh(u), z = sinh(u);  otherwise: y = scale sinh(u), z = (y - m)/s,
    # u in [-U, U] with U = arcsinh((|m| + _TAIL s) / scale), each element's rule on its own nodes
    m, s = np.broadcast_arrays(m, s)
    y, w = np.empty(m.shape + (n,)), np.empty(m.shape + (n,))
    sinh, weights = _centred_nodes(n)
    y[centred] = m[centred][:, None] + s[centred][:, None] * sinh
    w[centred] = weights
    off = ~centred
    mo, so = m[off], s[off]
    u, h = _nodes(np.arcsinh((np.abs(mo) + _TAIL * so) / scale), n)
    yo = scale * np.sinh(u)
    y[off] = yo
    w[off] = _off_centre_weights(yo, u, h[:, None], mo[:, None], so[:, None], scale)
    return y, w


def _centred(m, s, scale):
    """Where the conditional rule for E[f(m + s z)] is centred on the Gaussian: s <= scale, or the
    activation's structure (width `scale` at 0) in its far tail, |m| > _FAR s."""
    return (s <= scale) | (np.abs(m) > _FAR * s)


def _off_centre_weights(y, u, h, m, s, scale):
    """The weights phi((y - m)/s) scale cosh(u) h / s of E[f(m + s z)] on the nodes y = scale sinh(u)
    (step h in u) centred on the activation's structure, the arguments broadcast together; in place
    on one temporary, in the order of operations of the formula."""
    w = np.subtract(y, m)
    w /= s
    np.square(w, out=w)
    w *= -0.5
    np.exp(w, out=w)
    w /= _SQRT_2PI
    w *= scale * np.cosh(u) / s
    w *= h
    return w


@functools.lru_cache(maxsize=8)
def _centred_nodes(n):
    """sinh(u) and the weights of the centred conditional rule (the same numbers, operation for
    operation, as _conditional_rule's general branch computes for a centred element)."""
    u, h = _nodes(np.asarray(np.arcsinh(_TAIL)), n)
    sinh, cosh = np.sinh(u), np.cosh(u)
    weights = np.exp(-0.5 * sinh * sinh) / _SQRT_2PI * cosh * h
    sinh.flags.writeable = weights.flags.writeable = False
    return sinh, weights


#: nodes per level of the three-unit rule (N_TRIPLE^3 nodes per triple of units), and its relative
#: accuracy (error over tr(Q)^2), measured on the four-point moments of a linear g over 600 random
#: covariances with variances up to ~40: worst 1.2e-4 (61 nodes: 1.0e-6, at 2.5 times the cost).
#: These averages enter only the finite-D equations' O(1/D) terms for K = 3
#: (tests/test_quadrature_units.py). For an activation whose structure sits near 0 (erf, tanh,
#: sigmoid) the absolute error is below 1e-6 at variances up to ~30 (against 161 nodes, with
#: means); for an oscillatory g (sin) the far nodes, spaced ~|x|/5, undersample it: 4e-5 at
#: variances ~7, 1e-3 at ~16 and 4e-3 at ~30, so sin's K = 3 finite-D terms are approximate there.
N_TRIPLE = 45
THREE_UNIT_ACCURACY = 2e-4


def _triple_rule(C, m, scale=1.0, conditional=False):
    """Nodes and weights for (x1, x2, x3) ~ N(m, C), C (M, 3, 3), m (M, 3), by the same rule one
    level deeper with N_TRIPLE nodes per level: x1, x2 | x1 as in _pair_rule, x3 | (x1, x2) by
    _conditional_rule with the regression on (x1, x2) (a pseudo-inverse where they are degenerate).
    Returns x1 (M, n) with w1, x2 (M, n, n) with w2, x3 (M, n, n, n) with w3 (`conditional`: the
    mean and standard deviation of x3 | (x1, x2), (M, n, n) each, in place of x3 and w3)."""
    x1, w1, x2, w2 = _pair_rule(C[:, 0, 0], C[:, 0, 1], C[:, 1, 1], m[:, 0], m[:, 1], N_TRIPLE, N_TRIPLE, scale)
    k = np.einsum("mab,mb->ma", np.linalg.pinv(C[:, :2, :2], hermitian=True), C[:, :2, 2])
    s = np.sqrt(np.maximum(C[:, 2, 2] - np.einsum("ma,ma->m", k, C[:, :2, 2]), 0.0))
    mean = m[:, 2, None, None] + k[:, 0, None, None] * (x1 - m[:, :1])[:, :, None] \
        + k[:, 1, None, None] * (x2 - m[:, 1, None, None])
    sd = np.broadcast_to(s[:, None, None], mean.shape)
    if conditional:
        return x1, w1, x2, w2, mean, sd
    x3, w3 = _conditional_rule(mean, sd, N_TRIPLE, scale)
    return x1, w1, x2, w2, x3, w3


#: largest number of units K whose averages `expect_units` evaluates (K^n index tuples)
MAX_UNITS = 3
#: expect_units stacks its sets of one unit and of two into one rule each up to this batch of covariances
#: (a right-hand side's, a Jacobian's): beyond it the arithmetic outweighs a rule's Python, and the union of
#: the pairs' signatures and their shared nodes across the stack cost more (ReLU diffusion paths, 512
#: covariances a call: 9.0 -> 15.4 s stacked); there each set keeps its rule as before
STACK_BATCH = 32


def _polynomial_units(derivatives, orders_list, Q, degree, means, constant=0):
    """expect_units for a polynomial g: lambda = m + L z on the tensor Gauss-Hermite grid of
    z ~ N(0, I), L L^T = Q (eigen-square root, so a singular Q is fine); g = 1 on the first
    `constant` units."""
    K, batch = Q.shape[-1], Q.shape[:-2]
    z, w = np.polynomial.hermite_e.hermegauss(2 * degree + 1)
    grid = np.stack(np.meshgrid(*[z] * K, indexing="ij"), axis=-1).reshape(-1, K)      # (nodes, K)
    weight = np.prod(np.meshgrid(*[w / np.sqrt(2 * np.pi)] * K, indexing="ij"), axis=0).ravel()
    lam_, vec = np.linalg.eigh(Q)
    lam = np.einsum("...ab,nb->...na", vec * np.sqrt(np.maximum(lam_, 0.0))[..., None, :], grid)
    if means is not None:
        lam = lam + means[..., None, :]
    at = {a: derivatives[a](lam) for a in {a for orders in orders_list for o in orders for a in o}}
    for a in at:
        at[a][..., :constant] = float(a == 0)
    letters = "abcdefgh"
    outs = []
    for orders in orders_list:
        factors = [np.prod([at[a] for a in o], axis=0) for o in orders]                 # (..., nodes, K)
        subscripts = ",".join(f"...n{letters[i]}" for i in range(len(orders)))
        outs.append(np.einsum(f"n,{subscripts}->...{letters[:len(orders)]}", weight, *factors))
    return outs


class _Derivatives(tuple):
    """g's derivatives (functions of x), and `together(x)`, all of them at once, or None."""

    def __new__(cls, functions, together=None):
        out = super().__new__(cls, functions)
        out.together = together
        return out


@functools.lru_cache(maxsize=16)
def _at_width(family, eps, together=None):
    """The derivatives g_eps^(n)(x) = family[n](x, epsilon=eps) at one width (and all of them at
    once by together(x, epsilon), if given); the same object for the same arguments, so that
    expect_units' memory of its last call (_LAST) recognises them."""
    return _Derivatives(tuple(functools.partial(f, epsilon=eps) for f in family),
                        None if together is None else functools.partial(together, epsilon=eps))


def _values_at(derivatives, requests):
    """For each (orders, nodes x) of requests, {a: g^(a)(x)} for the orders a (at a _SharedLevel the pair
    of them at its shared nodes and at its centred elements' nodes), every node array evaluated in one
    call per derivative order on their concatenation, or in one call of `together` where the derivatives
    come with it (a smoothed kink's share a Gaussian and a normal CDF): ~10 node sets a call of
    expect_units, each call ~30 us of Python for a smoothed kink."""
    arrays = [a for _, x in requests for a in ((x.y, x.yc) if isinstance(x, _SharedLevel) else (x,))]
    if not arrays:
        return []
    flat = np.concatenate([a.ravel() for a in arrays])
    union = sorted({a for orders, _ in requests for a in orders})
    together = getattr(derivatives, "together", None)
    if together is not None and len(union) > 1:
        evaluated = _at(together, flat)
    else:
        evaluated = {a: _at(derivatives[a], flat) for a in union}
    bounds = np.cumsum([0] + [a.size for a in arrays])
    pieces = iter(range(len(arrays)))

    def piece(orders):
        i = next(pieces)
        return {a: evaluated[a][bounds[i]:bounds[i + 1]].reshape(arrays[i].shape) for a in orders}
    return [(piece(orders), piece(orders)) if isinstance(x, _SharedLevel) else piece(orders) for orders, x in requests]


def smoothed_units(family, eps, orders_list, Q, means=None, constant=0, together=None, homogeneity=None):
    """expect_units over a smoothed activation, extrapolated to width 0: 2 f(eps) - f(2 eps), error
    O(eps^2) (derive/smoothing.py). `family`: the smoothed derivatives as functions of (x, epsilon);
    `together(x, epsilon)`: all of them at once (the generated smoothed_derivatives), or None.

    For a positively homogeneous g of degree k (`homogeneity`, the generated HOMOGENEITY: ReLU's 1),
    g_(2 eps)^(a)(x) = 2^(k - a) g_eps^(a)(x / 2), so f(2 eps) is the average at width eps over
    N(means / 2, Q / 4), each factor g^(a) on a unit other than the first `constant` ones times
    2^(k - a): both widths in one expect_units call on Q and Q / 4 stacked (the rules scale with
    x, so the values are those of two calls)."""
    Q = np.asarray(Q, dtype=float)
    if homogeneity is None:
        near, far = (expect_units(_at_width(family, e, together), orders_list, Q, None, means, scale=e,
                                  constant=constant) for e in (eps, 2 * eps))
        return [2 * a - b for a, b in zip(near, far)]
    K = Q.shape[-1]
    if means is not None:
        means = np.broadcast_to(np.asarray(means, dtype=float), Q.shape[:-1])
        means = np.stack([means, means / 2])
    both = expect_units(_at_width(family, eps, together), orders_list, np.stack([Q, Q / 4]), None, means, scale=eps,
                        constant=constant)
    factors = _homogeneous_factors(tuple(orders_list), K, constant, homogeneity)
    return [2 * near - far * factor for (near, far), factor in zip(both, factors)]


@functools.lru_cache(maxsize=16)
def _homogeneous_factors(orders_list, K, constant, homogeneity):
    """Per orders, (K,) * len(orders): prod_i 2^(k - a) over the orders a on each index's unit, 1 on the
    first `constant` units (smoothed_units' factors of f(2 eps) from the average at width eps)."""
    out = []
    for orders in orders_list:
        factor = np.ones((K,) * len(orders))
        for i, unit in enumerate(orders):
            per_unit = np.full(K, 2.0 ** sum(homogeneity - a for a in unit))
            per_unit[:constant] = 1.0
            factor = factor * per_unit.reshape((K,) + (1,) * (len(orders) - i - 1))
        out.append(factor)
    return tuple(out)


class InnerMeans:
    """E[prod_a g^(a)(m + sqrt(v) z)] in closed form for each orders of `orders` (tuples of derivative
    orders on one unit, sorted decreasing), all at once by function(m, v) (the generated inner_means)."""

    def __init__(self, orders, function):
        self.index = {o: i for i, o in enumerate(orders)}
        self.function = function
        self._orders = {}              # _closed_order's answers by signature

    def order(self, signature):
        """_closed_order(signature, self), remembered."""
        out = self._orders.get(signature, False)
        if out is False:
            out = self._orders[signature] = _closed_order(signature, self)
        return out

    def __contains__(self, orders):
        return orders in self.index

    def at(self, heads, m, v):
        """The averages for the orders `heads` at the means m and variances v: (len(heads),) + m.shape."""
        values = self.function(m, v)
        return np.stack([values[self.index[o]] for o in heads])


def _closed_order(signature, inner):
    """An order of a signature's units (level indices) whose innermost unit carries orders that
    `inner` averages in closed form: the given order where it can, else the last such unit moved
    innermost; None where no unit's are."""
    n = len(signature)
    closed = [i for i in reversed(range(n)) if signature[i] in inner]
    if not closed:
        return None
    return tuple(j for j in range(n) if j != closed[0]) + (closed[0],)


def _levels(Qf, mf, units, scale, closed=False):
    """The nested rule over one, two or three distinct units of lambda ~ N(mf, Qf): [(nodes,
    weights)], outermost unit first, each level's arrays one axis deeper than the one before.
    `closed` (three units): the innermost level as ((the mean, the variance) of its unit given the
    outer two, None), for averages over it in closed form (expect_units' `inner`)."""
    if len(units) == 3:
        x1, w1, x2, w2, x3, w3 = _triple_rule(Qf[:, units][:, :, units], mf[:, units], scale, closed)
        # closed: x3 and w3 are the third unit's conditional mean and standard deviation
        return [(x1, w1), (x2, w2), ((x3, w3 * w3), None) if closed else (x3, w3)]
    if len(units) == 2:
        u1, u2 = units
        x1, w1, y, w = _pair_rule(Qf[:, u1, u1], Qf[:, u1, u2], Qf[:, u2, u2], mf[:, u1], mf[:, u2], scale=scale,
                                  shared=True)
        return [(x1, w1), (y, w)]
    (u,) = units
    return [_one_rule(Qf[:, u, u], mf[:, u], scale)]


_LAST = [None, {}]      # (derivatives, Q, means) of the last call and its averages


@functools.lru_cache(maxsize=64)
def _plan(K, orders_list, constant=0):
    """Per orders: [(tuple of units, its distinct units, their derivative orders)], and the
    signatures needed per set of distinct units. A pair's units are ordered by their derivative orders,
    the heavier outer (one rule per ordered pair): with a smoothed kink at small variances and a mean the
    other order errs by ~1e-7 (ReLU, Q ~ 1e-2, b = (0.3, -0.2): multi_4_1_0 1.6e-7 against 3e-10; one
    rule per unordered pair was 14 % faster and broke the diffusion paths' PSD check, session 18). A
    triple's are in increasing order, one rule for all its averages. The first `constant` units have
    g = 1: a tuple with a derivative on one of them averages to 0 (units None), the others drop out of
    the tuple (none left: the average is 1, units ())."""
    plan, needed = [], {}
    for orders in orders_list:
        entries = []
        for idx in itertools.product(range(K), repeat=len(orders)):
            by_unit = {}
            for unit, o in zip(idx, orders):
                by_unit.setdefault(unit, []).extend(o)
            if any(any(by_unit.pop(u, ())) for u in range(constant)):
                entries.append((idx, None, None))
                continue
            if not by_unit:
                entries.append((idx, (), ()))
                continue
            units = tuple(sorted(by_unit, key=lambda u: (sorted(by_unit[u], reverse=True), u), reverse=True)
                          if len(by_unit) < 3 else sorted(by_unit))     # one rule for every triple's averages
            signature = tuple(tuple(sorted(by_unit[u], reverse=True)) for u in units)
            entries.append((idx, units, signature))
            needed.setdefault(units, set()).add(signature)
        plan.append((len(orders), entries))
    return plan, needed


@functools.lru_cache(maxsize=256)
def _fold_plan(depth, signatures):
    """Per level of _fold, innermost first: (its distinct orders tuples (heads), the head of each
    suffix of the signatures from that level on, the next level's row of the suffix's rest (None
    at the innermost level)); and each signature's row at the outermost level. `signatures`:
    a sorted tuple."""
    steps, index = [], None
    for i in reversed(range(depth)):
        suffixes = sorted({sig[i:] for sig in signatures})
        heads = sorted({suffix[0] for suffix in suffixes})
        where = {h: k for k, h in enumerate(heads)}
        head = np.array([where[suffix[0]] for suffix in suffixes])
        rest = None if index is None else np.array([index[suffix[1:]] for suffix in suffixes])
        steps.append((tuple(heads), head, rest))
        index = {suffix: k for k, suffix in enumerate(suffixes)}
    return steps, [index[sig] for sig in signatures]


def _multiplier(values):
    """product(orders): prod_a values[a] over the orders tuple, each prefix's product computed once."""
    products = {}

    def product(orders):
        out = products.get(orders)
        if out is None:
            out = products[orders] = (values[orders[0]] if len(orders) == 1
                                      else product(orders[:-1]) * values[orders[-1]])
        return out
    return product


def _fold(levels, at, signatures, closed=None):
    """{signature: the nested rule's average of prod_a g^(a) at each level's nodes}, for the
    signatures (one tuple of orders per level) on one set of units: innermost level first, each
    sum leaving the next level's shape. Level by level, the product of each distinct orders tuple
    is computed once (from its prefix's) and the sums the signatures need are taken together:
    the innermost level's as one matrix product with its weights where they are one vector
    (_conditional_rule's centred case), the others _FOLD numbers to a numpy call (temporaries
    that stay in cache). The signatures share their inner levels, which hold most of the nodes.
    An innermost level given as its unit's conditional (mean, variance) (_levels, closed) is
    averaged by closed.at(orders, mean, variance) (InnerMeans) instead; `at` has no values for it."""
    signatures = tuple(sorted(signatures))
    steps, rows = _fold_plan(len(levels), signatures)
    inner = None
    for i, (heads, head, rest) in zip(reversed(range(len(levels))), steps):
        if levels[i][1] is None:                                    # the innermost level, closed
            inner = closed.at(heads, *levels[i][0])[head]
            continue
        w, values = levels[i][1], at[i]
        if isinstance(levels[i][0], _SharedLevel):                 # the innermost level, nodes shared
            level, (shared, own) = levels[i][0], (_multiplier(v) for v in values)
            P = np.stack([shared(orders)[:, 0] for orders in heads], axis=-1)      # (M, n, heads)
            sums = np.ascontiguousarray(np.moveaxis(np.matmul(w, P), -1, 0))      # (heads, M, n_outer)
            if level.where.size:
                sums.reshape(len(heads), -1)[:, level.where] = np.stack([own(orders) for orders in heads]) @ level.wc
            inner = sums[head]
            continue
        product = _multiplier(values)
        if inner is None:
            if w.ndim > 1 and not any(w.strides[:-1]):          # one weight vector, broadcast
                w0 = w[(0,) * (w.ndim - 1)]
                sums = np.stack([product(orders) @ w0 for orders in heads])
            elif w.size * len(heads) <= _FOLD:                     # small: one call
                sums = np.einsum("h...n,...n->h...", np.stack([product(orders) for orders in heads]), w)
            else:
                sums = np.stack([np.einsum("...n,...n->...", product(orders), w) for orders in heads])
            total = sums[head]
        else:
            WP = np.stack([w * product(orders) for orders in heads])
            step = max(1, _FOLD // w.size)
            total = np.empty((len(head),) + w.shape[:-1])
            for lo in range(0, len(head), step):
                sl = slice(lo, lo + step)
                total[sl] = np.einsum("s...n,s...n->s...", WP[head[sl]], inner[rest[sl]])
        inner = total
    return {sig: inner[row] for sig, row in zip(signatures, rows)}


def expect_units(derivatives, orders_list, Q, degree=None, means=None, scale=1.0, constant=0, tabulated=None,
                 inner=None):
    """For each `orders` of orders_list, E[prod_i prod_{a in orders[i]} g^(a)(lambda_(k_i))]
    for every tuple of units (k_1, ..., k_n), lambda ~ N(means, Q), Q of shape (..., K, K),
    means (..., K) or None (zero: no bias): a list of arrays (..., K, ..., K).

    The averages over several units of the finite-D equations (multi_* factors). Each tuple's
    factors are grouped by unit, and the average over its one, two or three distinct units is by
    the double-exponential rule above (_one_rule, _pair_rule, _triple_rule), built once for all the
    single units, once for all the ordered pairs (their covariances stacked: _stacks) and once per
    triple, and shared by every average on them. Four distinct units would need a
    four-dimensional rule, which is not here: K > 3 raises ValueError.

    For a polynomial g of `degree` p every average is a polynomial moment of degree <= 4p, exact
    by Gauss-Hermite quadrature with 2p + 1 nodes per unit in whitened coordinates, for any K.
    `scale`: the width of g's structure around 0 (a smoothed kink: derive.smoothing).
    The first `constant` units have g = 1 (the output bias: derive.rules); they do not count
    towards K's limit. `tabulated(signatures, Q_units)`, if given, is asked first for the averages
    on each unit and pair of units ({signature: values} or None, e.g. runtime.fast_kernels'
    tables: tabulated_units); the rule takes those it does not give. `inner`: an InnerMeans, the
    averages E[prod_a g^(a)(m + sqrt(v) z)] on one unit in closed form: for a signature over three
    units that include one with orders it has, that unit goes innermost and its level is averaged in
    closed form at the unit's conditional mean and variance instead of by its nodes (45^2 points, not
    45^3; and none of the innermost rule's error, up to 5e-5 where the outer rules' is ~1e-9). On one or
    two units the nodes cost less than inner's forms at every outer point (tied finite-D, erf, D = 400:
    1.6 -> 2.4 s with them)."""
    Q = np.asarray(Q, dtype=float)
    K, batch = Q.shape[-1], Q.shape[:-2]
    if means is not None:
        means = np.broadcast_to(np.asarray(means, dtype=float), batch + (K,))
    if degree is not None:
        return _polynomial_units(derivatives, orders_list, Q, degree, means, constant)
    if K - constant > MAX_UNITS:
        raise ValueError(f"averages over {K - constant} units: the finite-D equations are implemented for "
                         f"K <= {MAX_UNITS}")
    plan, needed = _plan(K, tuple(orders_list), constant)
    Qf = Q.reshape((-1, K, K))
    mf = np.zeros(Qf.shape[:2]) if means is None else means.reshape((-1, K))
    key = (derivatives, scale, Q.shape, Q.tobytes(), None if means is None else means.tobytes(), constant,
           None if inner is None else id(inner))
    if _LAST[0] != key:            # the noise of the atoms and of the spikes average at the same Q
        _LAST[:] = [key, {}]
    values = _LAST[1]
    pending = {units: [sig for sig in signatures if (units, sig) not in values] for units, signatures in needed.items()}
    if tabulated is not None:
        for n in (1, 2):
            for entry, value in _tabulate(tabulated, pending, Qf, n).items():
                values[entry] = value.reshape(-1)
    # rules: (the unit sets, the signatures, their orders in the rule's order, levels, nodes' count)
    rules, requests = [], []
    for members in _stacks(pending, values, Qf.shape[0]):
        if len(members) == 1:                  # a set's own rule, on its units of Q
            (rule_units, union), = members
            Qs, ms, union = Qf, mf, tuple(union)
        else:
            index = np.array([units for units, _ in members])                       # (sets, n)
            Qs, ms = _stacked(Qf, index), mf[:, index].swapaxes(0, 1).reshape(-1, index.shape[1])
            union = tuple(sorted({sig for _, signatures in members for sig in signatures}))
            rule_units = tuple(range(index.shape[1]))                    # of the stacked Qs
        for ordered, closed, group, permuted, wanted in _groups(rule_units, union, inner):
            levels = _levels(Qs, ms, ordered, scale, closed=closed)
            nodes = [(wanted[i], x) for i, (x, w) in enumerate(levels) if w is not None]
            rules.append((members, group, permuted, levels, len(nodes)))
            requests += nodes
    at = iter(_values_at(derivatives, requests))
    M = Qf.shape[0]
    for members, group, permuted, levels, count in rules:
        folded = _fold(levels, [next(at) for _ in range(count)], permuted, inner)
        for sig, key in zip(group, permuted):
            every_set = folded[key]                                  # the members' batches one after the other
            for g, (units, _) in enumerate(members):
                values[units, sig] = every_set[g * M:(g + 1) * M]
    keys, gather = _gather(K, tuple(orders_list), constant)
    stacked = np.empty((2 + len(keys), Qf.shape[0]))         # rows 0 and 1: the constants 0 and 1
    stacked[0], stacked[1] = 0.0, 1.0
    for row, key in enumerate(keys, 2):
        stacked[row] = values[key]
    return [np.ascontiguousarray(stacked[rows].T).reshape(batch + (K,) * n) for n, rows in gather]


@functools.lru_cache(maxsize=256)
def _groups(units, signatures, inner):
    """expect_units' rules over one set of units for its signatures: [(the units in the rule's order,
    whether its innermost level is closed, the signatures, their orders in that order, per level the
    derivative orders to evaluate)]. With `inner` (InnerMeans), a triple's signatures each with its
    units in an order whose innermost unit's orders it has (none, or one or two units: the rule's
    order, where the nodes cost less than evaluating inner's forms)."""
    by_order = {}
    for sig in signatures:
        by_order.setdefault(inner.order(sig) if inner is not None and len(units) == 3 else None, []).append(sig)
    out = []
    for closed, group in by_order.items():
        order = closed or tuple(range(len(units)))
        permuted = tuple(tuple(sig[i] for i in order) for sig in group)
        wanted = [sorted({a for sig in permuted for a in sig[i]}) for i in range(len(units))]
        out.append((tuple(units[i] for i in order), closed is not None, tuple(group), permuted, wanted))
    return out


def _stacks(pending, values, batch):
    """expect_units' rules: for a batch of at most STACK_BATCH covariances, the sets of one unit, and
    those of two, each stacked into one rule over the union of their signatures not in `values` (the
    batch of each set one after the other: one rule's Python, ~0.1-0.3 ms, instead of one per set, and for
    K = 2 the signatures of the pairs (k, l) and (l, k) nearly the same); a triple of units, and every
    set of a larger batch, a rule of its own: [[(units, signatures)]]."""
    stacks = {}
    for units, signatures in pending.items():
        signatures = [sig for sig in signatures if (units, sig) not in values]
        if signatures:
            stacks.setdefault(len(units) if len(units) < 3 and batch <= STACK_BATCH else units, []).append(
                (units, signatures))
    return list(stacks.values())


def _stacked(Qf, index):
    """The covariances (M, K, K) restricted to each set of units of index (sets, n), the sets' batches one
    after the other: (sets M, n, n)."""
    n = index.shape[1]
    return Qf[:, index[:, :, None], index[:, None, :]].swapaxes(0, 1).reshape(-1, n, n)


def _tabulate(tabulated, pending, Qf, n):
    """{(units, signature): (M,)} from `tabulated` for every set of n units in `pending` ({units:
    signatures}): one call for all of them, the union of their signatures at their covariances
    stacked (a call costs ~0.1 ms of Python at one point, and erf's K = 3 finite-D averages ask
    for three units and six ordered pairs), else, where that call gives nothing, one per set."""
    group = [units for units, signatures in pending.items() if len(units) == n and signatures]
    if not group:
        return {}
    M, index = Qf.shape[0], np.array(group)
    union = sorted({sig for units in group for sig in pending[units]})
    found = tabulated(union, _stacked(Qf, index))
    if found is not None:
        return {(units, sig): found[sig][g * M:(g + 1) * M] for g, units in enumerate(group) for sig in pending[units]}
    out = {}
    for units in group:
        found = tabulated(pending[units], Qf[:, units][:, :, units])
        out.update({} if found is None else {(units, sig): value for sig, value in found.items()})
    return out


@functools.lru_cache(maxsize=64)
def _gather(K, orders_list, constant=0):
    """_plan's entries as rows of one stacked array of the averages: (the (units, signature)
    keys of rows 2, 3, ..., per orders (n, the row of each index tuple in C order)), with row 0
    the average 0 and row 1 the average 1."""
    plan, needed = _plan(K, orders_list, constant)
    keys = sorted((units, sig) for units, signatures in needed.items() for sig in signatures)
    row = {key: r for r, key in enumerate(keys, 2)}
    return keys, [(n, np.array([0 if units is None else 1 if not units else row[units, sig]
                                for _, units, sig in entries])) for n, entries in plan]
