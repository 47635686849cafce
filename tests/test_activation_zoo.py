"""An activation zoo (issue 16, items 3 and 4): activations registered only here, derived in
memory by derive.build, their kernels checked against Monte Carlo and mpmath, and for three of
them the integrated equations checked against SGD.

Each zoo member is registered under a test-local name for the duration of its derivation (and
removed again, so the registry other tests see is unchanged) and built once per process. Its
test checks g, g', ... of the built module against the expression, and every mean_* and pair_*
kernel the module has and the literature's I2 and I3

* against a seeded Monte Carlo estimate (conftest: 2e5 samples) within 5 standard errors, at
  small and large variances and correlations near +-1;
* against mpmath at 30 digits, in conditional coordinates as in tests/reference.py: an outer
  Gauss-Legendre quadrature (reference.NESTED's rule and panels) of a textbook inner average
  where one is known (sin, cos, the cubic, leaky ReLU), else of an inner quadrature (GELU, SiLU,
  softplus: seconds a covariance in mpmath, so at two covariances, every average on the same
  nodes). Closed forms must agree to 1e-10 relative (plus 1e-13 of a Cauchy-Schwarz scale),
  numerical kernels (NUMERIC_KERNELS) to 1e-8 of that scale.

Past the ordinary derivatives (the leaky ReLU's g'' = jump delta(x), and g''') one-point
averages use Gaussian integration by parts, E[g^(n+k)(x)] = E[g^(n)(x) He_k(x/sd)] / sd^k; the
two-point ones condition on the other variable, where the Monte Carlo estimate integrates by
parts in the conditional variable and mpmath takes the delta's inner average, jump p(0 | x2).

Whether the engine finds a closed form or falls back to quadrature may change with derive/;
the checks are on values, with the tolerance of the path the module reports. For the
polynomials times erf (GELU, x erf(x), x^2 Phi(x): CLOSED) the module must report every
kernel closed; tests/test_polynomial_erf.py checks those closed forms at the edges. The kernel checks
and, for GELU and softplus, the comparison with SGD run in one test per activation so that each
is derived once per pytest-xdist worker.

SGD: D = 500, K = 2, spikes (3, 2) D, lr 0.5, t <= 3: integrate(..., fluctuations=True) against
the mean of simulate over 6 seeds, within the seed spread (the larger of the measured and the
predicted one) at every recorded time after 0, for GELU, softplus and tanh (generated/tanh.py).
"""
from __future__ import annotations

import contextlib
import math
import time

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import reference as R
from conftest import MC_SIGMAS, gaussian_samples, kernel_names, kernel_orders, matrix2, mc_mean, standard_normals
from derive import activations, build
from derive.activations import x
from runtime.simulate import simulate
from runtime.spectrum import spiked_problem

#: name -> (g(x), parameters with their values); the leaky ReLU is the registry's, slope 0.2
ZOO = {
    "zoo_gelu": (x * (1 + sp.erf(x / sp.sqrt(2))) / 2, {}),
    "zoo_x_erf": (x * sp.erf(x), {}),
    "zoo_x2_phi": (x**2 * (1 + sp.erf(x / sp.sqrt(2))) / 2, {}),
    "zoo_silu": (x / (1 + sp.exp(-x)), {}),
    "zoo_softplus": (sp.log(1 + sp.exp(x)), {}),
    "zoo_elu": (sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)), {}),
    "zoo_hard_tanh": (sp.Max(-1, sp.Min(1, x)), {}),
    "zoo_leaky_relu": (activations.REGISTRY["leaky_relu"].expr, {activations.slope: sp.Rational(1, 5)}),
    "zoo_sin": (sp.sin(x), {}),
    "zoo_cos": (sp.cos(x), {}),
    "zoo_cubic": (x**3 / 3 + x, {}),
}

#: activations whose every kernel is in closed form (derive/polynomial_erf.py: a polynomial times
#: erf; the module says so in CLOSED_FORM and an empty NUMERIC_KERNELS), with the kernels the
#: equations need (the module's mean_*/pair_* functions)
CLOSED = {
    name: ("mean_0", "mean_00", "mean_1", "mean_11", "mean_2", "mean_3", "mean_4", "pair_0_0", "pair_1_0",
           "pair_1_1", "pair_2_0", "pair_2_2", "pair_3_1", "pair_3_3", "pair_4_0", "pair_4_2", "pair_5_1")
    for name in ("zoo_gelu", "zoo_x_erf", "zoo_x2_phi")
}

#: activations whose SGD runs are compared with the equations (tanh: generated/tanh.py)
SGD_CHECKED = ("zoo_gelu", "zoo_softplus")

#: oscillating activations: quadrature panels at most this long in x (reference.OSCILLATING)
OSCILLATING = {"zoo_sin": mp.mpf("1.5"), "zoo_cos": mp.mpf("1.5")}

VARIANCES = (0.02, 1.0, 50.0)
#: (var1, correlation, var2): moderate; small against large, correlation near 1; large, near 1;
#: small, negative
_PAIRS = ((1.0, 0.3, 2.0), (0.02, 0.995, 30.0), (50.0, 0.999, 80.0), (0.05, -0.6, 0.02))
PAIR_COVS = tuple((v1, r * math.sqrt(v1 * v2), v2) for v1, r, v2 in _PAIRS)


def _corr3(r12, r13, r23, variances):
    sd = np.sqrt(variances)
    return np.array([[1, r12, r13], [r12, 1, r23], [r13, r23, 1]]) * np.outer(sd, sd)


#: 3 x 3 covariances of I3 = E[g'(x1) x2 g(x3)] whose (x1, x3) block is PAIR_COVS[i]
COVS3 = {i: _corr3(r12, r13, r23, [v1, v2, v3]) for i, (v1, r13, v3), (r12, r23, v2) in
         zip(range(3), _PAIRS, [(0.5, -0.4, 0.7), (0.9, 0.93, 5.0), (0.5, 0.5, 1.0)])}

CLOSED_RTOL, CLOSED_SCALE_ATOL, NUMERIC_SCALE_ATOL = 1e-10, 1e-13, 1e-8


# ----------------------------------------------------------------------------------------
# Registration and derivation (once per process)

_BUILT: dict = {}


@contextlib.contextmanager
def registered(name):
    """`name` in the activation registry for the duration of the block only."""
    expr, params = ZOO[name]
    activations.register(name, expr, params, description=f"test zoo: g(x) = {expr}")
    try:
        yield
    finally:
        activations.REGISTRY.pop(name, None)


def built(name):
    """derive.build(name), cached."""
    if name not in _BUILT:
        with registered(name):
            _BUILT[name] = build(name)
    return _BUILT[name]


def _hermite(k, z):
    """The probabilists' Hermite polynomial He_k(z) (numpy arrays or mpmath numbers)."""
    previous, current = 0 * z + 1, z
    if k == 0:
        return previous
    for j in range(1, k):
        previous, current = current, z * current - j * previous
    return current


# ----------------------------------------------------------------------------------------
# The module's g, g', ... against the expression (the Monte Carlo estimates use them)

#: points off the kinks (x = 0; Heaviside(0) is a convention)
POINTS = np.concatenate([np.linspace(-12.0, 12.0, 96), [-2.9, -1e-3, 1e-3, 0.37]])


def derivative_errors(name, module):
    """[(k, largest relative error of g^(k) at POINTS)] for the module's DERIVATIVES."""
    expr, params = ZOO[name]
    g = activations.Activation(name, expr, params).bound()
    out = []
    for k, f in enumerate(module.DERIVATIVES):
        exact = np.broadcast_to(sp.lambdify(x, sp.diff(g, x, k), modules=["scipy", "numpy"])(POINTS), POINTS.shape)
        out.append((k, float(np.max(np.abs(f(POINTS) - exact) / np.maximum(np.abs(exact), 1.0)))))
    return out


# ----------------------------------------------------------------------------------------
# Monte Carlo (the module's own g, g', ...)

def _mc_mean_samples(module, orders, v):
    derivatives, x1 = module.DERIVATIVES, np.sqrt(v) * standard_normals(1)[:, 0]
    n = len(derivatives)
    if max(orders) < n:
        return np.prod([derivatives[a](x1) for a in orders], axis=0)
    (a,) = orders                          # E[g^(a)(x)] = E[g^(n-1)(x) He_k(x/sd)] / sd^k
    k = a - n + 1
    return derivatives[n - 1](x1) * _hermite(k, x1 / np.sqrt(v)) / v ** (k / 2)


def _mc_pair_samples(module, a, b, c11, c12, c22):
    derivatives = module.DERIVATIVES
    n = len(derivatives)
    if a < n and b < n:
        X = gaussian_samples(matrix2(c11, c12, c22))
        return derivatives[a](X[:, 0]) * derivatives[b](X[:, 1])
    if a < n:
        a, b, c11, c22 = b, a, c22, c11
    if b >= n:
        raise AssertionError(f"no Monte Carlo estimator for pair ({a}, {b}) of {module.NAME}")
    # x2 ~ N(0, c22), x1 | x2 = m + s z: E[g^(a)(x1) | x2] = E[g^(n-1)(m + s z) He_k(z)] / s^k
    Z = standard_normals(2)
    x2 = np.sqrt(c22) * Z[:, 0]
    s, k = np.sqrt(c11 - c12**2 / c22), a - n + 1
    return derivatives[b](x2) * derivatives[n - 1](c12 / c22 * x2 + s * Z[:, 1]) * _hermite(k, Z[:, 1]) / s**k


def _monte_carlo_cases(module):
    """(label, value, samples) for every kernel at VARIANCES / PAIR_COVS, and I2, I3."""
    for kernel in kernel_names(module):
        orders = kernel_orders(kernel)
        if kernel.startswith("mean_"):
            for v in VARIANCES:
                yield f"{kernel}({v})", getattr(module, kernel)(v), _mc_mean_samples(module, orders[0], v)
        else:
            for c in PAIR_COVS:
                yield (f"{kernel}{tuple(round(t, 4) for t in c)}", getattr(module, kernel)(*c),
                       _mc_pair_samples(module, orders[0][0], orders[1][0], *c))
    g, dg = module.g, module.dg
    for c in PAIR_COVS:
        X = gaussian_samples(matrix2(*c))
        yield f"I2{tuple(round(t, 4) for t in c)}", module.I2(matrix2(*c)), g(X[:, 0]) * g(X[:, 1])
    for i, C in COVS3.items():
        X = gaussian_samples(C)
        yield f"I3{tuple(round(t, 4) for t in PAIR_COVS[i])}", module.I3(C), dg(X[:, 0]) * X[:, 1] * g(X[:, 2])


def monte_carlo_deviations(module):
    """[(deviation in standard errors, label, value, mean, se)], failures flagged by the caller."""
    out = []
    for label, value, samples in _monte_carlo_cases(module):
        value = float(value)
        mean, se = mc_mean(samples)
        if se == 0.0:
            # every sample equal: a constant integrand, or one whose other values lie where no
            # sample fell (hard tanh's g' = 1 on |x| < 1 at v = 0.02: E = 1 - 2 Phi(-7.07) = 1 - 1.5e-12),
            # whose mass is below ~1/n; the mpmath check (1e-10 relative) is the sharp one there
            unseen = 1e-12 + MC_SIGMAS / len(samples)
            deviation = 0.0 if abs(value - mean) <= unseen * max(1.0, abs(mean)) else math.inf
        else:
            deviation = abs(value - mean) / se
        out.append((deviation if np.isfinite(value) else math.inf, label, value, mean, se))
    return out


# ----------------------------------------------------------------------------------------
# mpmath reference at 30 digits. Two-point averages in conditional coordinates x2 = kappa x1 + s z
# (tests/reference.py): an outer Gauss-Legendre quadrature over x1 of a textbook inner average
# E[x2^q g^(b)(x2) | x1] where one is known (polynomials, sin/cos, leaky ReLU), else a nested
# quadrature (reference.NESTED rule and panels; every average of one covariance on the same
# nodes, since one nested value costs seconds in mpmath).

def _trigonometric_inner(phase):
    """g^(b)(y) = cos(y + phase + b pi/2): E[cos(y + t)] = e^{-s^2/2} cos(m + t), and
    E[y cos(y + t)] = e^{-s^2/2} (m cos(m + t) - s^2 sin(m + t)) (Stein)."""
    def inner(b, q, m, s):
        theta, damping = m + phase + b * mp.pi / 2, mp.exp(-s * s / 2)
        return damping * (mp.cos(theta) if q == 0 else m * mp.cos(theta) - s * s * mp.sin(theta))
    return inner


def _polynomial_inner(g):
    """E[y^q g^(b)(y)], y = m + s Z, for a polynomial g: its expansion in Z with E[Z^(2j)] = (2j-1)!!."""
    m, s, z = sp.symbols("m s z", real=True)
    table = {}
    for b in range(6):
        for q in (0, 1):
            poly = sp.Poly(sp.expand((m + s * z) ** q * sp.diff(g, x, b).subs(x, m + s * z)), z)
            expr = sum((c * sp.factorial2(k - 1) for (k,), c in poly.terms() if k % 2 == 0), sp.S.Zero)
            table[b, q] = sp.lambdify((m, s), expr, modules="mpmath")
    return lambda b, q, m_, s_: table[b, q](m_, s_)


def _leaky_relu_inner(slope):
    """g = slope y + (1 - slope) relu(y): the textbook averages of reference.py (b, q <= 1), and
    g'' = (1 - slope) delta(y): E[g''(y)] = (1 - slope) phi(m/s) / s."""
    def inner(b, q, m, s):
        if b == 2 and q == 0:
            return (1 - slope) * mp.npdf(m / s) / s
        return slope * R._linear_inner(b, q, m, s) + (1 - slope) * R._relu_inner(b, q, m, s)
    return inner


#: textbook inner averages E[y^q g^(b)(y)], y ~ N(m, s^2), by activation
INNER = {
    "zoo_sin": lambda: _trigonometric_inner(-mp.pi / 2),
    "zoo_cos": lambda: _trigonometric_inner(mp.mpf(0)),
    "zoo_cubic": lambda: _polynomial_inner(ZOO["zoo_cubic"][0]),
    "zoo_leaky_relu": lambda: _leaky_relu_inner(mp.mpf(ZOO["zoo_leaky_relu"][1][activations.slope])),
}


class Reference:
    """Gaussian averages of one zoo activation in mpmath. g^(k), k < n (n: the module's number of
    ordinary derivatives), from the expression by SymPy; higher orders in a one-point average by
    Gaussian integration by parts, in a two-point one by the textbook inner average."""

    def __init__(self, name, n):
        expr, params = ZOO[name]
        g = activations.Activation(name, expr, params).bound()
        self.n, self.xcap = n, OSCILLATING.get(name)
        self.inner = INNER[name]() if name in INNER else None
        self._derivatives = sp.lambdify(
            x, [sp.diff(g, x, k) for k in range(n)], cse=True,
            modules=["mpmath", {"Heaviside": R._heaviside, "Max": max, "Min": min}])
        self._norms = {}

    def nodes(self, mean, sd, rule=R.NESTED, extra_breaks=(), xcap=None):
        """[(point, weight)]: E[f(mean + sd Z)] ~ sum weight f(point), panels of tests/reference.py
        (breaks where the point crosses 0, +-2^k or extra_breaks, at most xcap long in x)."""
        mean, sd = mp.mpf(mean), mp.mpf(sd)
        xcap = self.xcap if xcap is None else xcap
        cap = rule.zcap if xcap is None else min(rule.zcap, xcap / sd)
        zbreaks = [mp.mpf(0)] + [(b - mean) / sd for b in (*rule.breaks, *extra_breaks)]
        out = []
        for lo, hi in R._panels(-rule.tail, rule.tail, zbreaks, cap):
            mid, half = (lo + hi) / 2, (hi - lo) / 2
            for t, w in rule.nodes:
                z = mid + half * t
                out.append((mean + sd * z, half * w * mp.exp(-z * z / 2) / R.SQRT_2PI))
        return out

    def means(self, orders_list, v):
        """{orders: E[prod_a g^(a)(x)]}, x ~ N(0, v); a single order >= n by parts:
        E[g^(n-1+k)(x)] = E[g^(n-1)(x) He_k(x/sd)] / sd^k."""
        sd = mp.sqrt(mp.mpf(v))
        totals = dict.fromkeys(orders_list, mp.mpf(0))
        for point, weight in self.nodes(0, sd, rule=R.FINE):
            d = self._derivatives(point)
            for orders in orders_list:
                if max(orders) < self.n:
                    totals[orders] += weight * mp.fprod(d[a] for a in orders)
                else:
                    (a,) = orders
                    k = a - self.n + 1
                    totals[orders] += weight * d[self.n - 1] * _hermite(k, point / sd) / sd**k
        return totals

    def norm(self, order, v):
        """sqrt(E[g^(order)(x)^2]), x ~ N(0, v), a Cauchy-Schwarz scale; past the ordinary
        derivatives the bound sqrt(E[g^(n-1)^2] k!) / sd^k of the integration by parts."""
        key = (order, float(v))
        if key not in self._norms:
            base = min(order, self.n - 1)
            k = order - base
            second = self.means([(base, base)], v)[base, base]
            self._norms[key] = mp.sqrt(second * math.factorial(k)) / mp.mpf(v) ** (k / 2)
        return self._norms[key]

    def pairs(self, specs, c11, c12, c22):
        """{(a, p, b, q): E[x1^p g^(a)(x1) x2^q g^(b)(x2)]} for (x1, x2) ~ N(0, C), a < n: the
        outer quadrature over x1 (breaks where kappa x1 meets the activation's structure, as in
        reference._outer) of the inner average over x2 | x1 ~ N(kappa x1, s^2)."""
        if not specs:
            return {}
        c11, c12, c22 = (mp.mpf(c) for c in (c11, c12, c22))
        kappa, s = c12 / c11, mp.sqrt(c22 - c12**2 / c11)
        rule = R.NESTED
        scales = {s, max(s, mp.mpf(1))}
        extra = [b * scale / kappa for b in rule.breaks for scale in scales] if kappa != 0 else []
        xcap = None if self.xcap is None else self.xcap / max(abs(kappa), mp.mpf(1))
        totals = dict.fromkeys(specs, mp.mpf(0))
        for y, weight in self.nodes(0, mp.sqrt(c11), rule=rule, extra_breaks=extra, xcap=xcap):
            d = self._derivatives(y)
            inner = self._inner(specs, kappa * y, s)
            for a, p, b, q in specs:
                totals[a, p, b, q] += weight * y**p * d[a] * inner[b, q]
        return totals

    def _inner(self, specs, m, s):
        """{(b, q): E[x2^q g^(b)(x2)]}, x2 ~ N(m, s^2); by nested quadrature without a textbook
        form (orders b >= n then by parts in the conditional variable)."""
        wanted = {(b, q) for _, _, b, q in specs}
        if self.inner is not None:
            return {(b, q): self.inner(b, q, m, s) for b, q in wanted}
        out = dict.fromkeys(wanted, mp.mpf(0))
        for u, weight in self.nodes(m, s):
            d = self._derivatives(u)
            for b, q in wanted:
                if b < self.n:
                    out[b, q] += weight * u**q * d[b]
                else:
                    k = b - self.n + 1
                    out[b, q] += weight * d[self.n - 1] * _hermite(k, (u - m) / s) / s**k
        return out


def mpmath_errors(name, module):
    """[(error / tolerance, label, value, reference, error)] for every kernel, I2 and I3."""
    ref = Reference(name, len(module.DERIVATIVES))
    kernels = kernel_names(module)
    numeric = set(module.NUMERIC_KERNELS)
    out = []

    def compare(label, value, exact, scale, is_numeric):
        value, exact, scale = float(value), float(exact), float(scale)
        tol = NUMERIC_SCALE_ATOL * max(1.0, scale) if is_numeric else \
            CLOSED_RTOL * abs(exact) + CLOSED_SCALE_ATOL * scale
        error = abs(value - exact) if np.isfinite(value) else math.inf
        ratio = error / tol if tol > 0 else 0.0 if error == 0 else math.inf     # tol 0: an exact 0
        out.append((ratio, label, value, exact, error))

    means = [k for k in kernels if k.startswith("mean_")]
    for v in VARIANCES:
        wanted = [kernel_orders(k)[0] for k in means]
        values = ref.means(wanted, v)
        for kernel, orders in zip(means, wanted):
            scale = ref.norm(orders[0], v) if len(orders) == 1 else \
                mp.sqrt(ref.means([orders * 2], v)[orders * 2])
            compare(f"{kernel}({v})", getattr(module, kernel)(v), values[orders], scale, kernel in numeric)

    pairs = [(k, *(o for (o,) in kernel_orders(k))) for k in kernel_names(module) if k.startswith("pair_")]
    # a nested quadrature costs seconds a covariance: the moderate one and the edge one only
    covs = PAIR_COVS if ref.inner is not None else PAIR_COVS[:2]
    for i, c in enumerate(covs):
        c11, c12, c22 = c
        direct = {(a, 0, b, 0) for _, a, b in pairs if a < ref.n} | {(0, 0, 0, 0)}
        if i in COVS3:                                   # I3 shares the (x1, x3) block C
            direct |= {(1, 1, 0, 0), (1, 0, 0, 1)}
        values = ref.pairs(sorted(direct), c11, c12, c22)
        # g^(a) not a function (a >= n): condition x1 on x2 instead
        swapped = ref.pairs(sorted({(b, 0, a, 0) for _, a, b in pairs if a >= ref.n}), c22, c12, c11)
        values.update({(a, 0, b, 0): value for (b, _, a, _), value in swapped.items()})
        label = tuple(round(t, 4) for t in c)
        for kernel, a, b in pairs:
            compare(f"{kernel}{label}", getattr(module, kernel)(*c), values[a, 0, b, 0],
                    ref.norm(a, c11) * ref.norm(b, c22), kernel in numeric)
        compare(f"I2{label}", module.I2(matrix2(*c)), values[0, 0, 0, 0],
                ref.norm(0, c11) * ref.norm(0, c22), not module.CLOSED_FORM)
        if i in COVS3:
            # I3 = E[g'(x1) x2 g(x3)], E[x2 | x1, x3] = alpha x1 + beta x3 (regression)
            C = COVS3[i]
            alpha, beta = mp.lu_solve(mp.matrix([[C[0, 0], C[0, 2]], [C[2, 0], C[2, 2]]]),
                                      mp.matrix([C[1, 0], C[1, 2]]))
            exact = alpha * values[1, 1, 0, 0] + beta * values[1, 0, 0, 1]
            fourth = ref.means([(0, 0, 0, 0)], C[2, 2])[0, 0, 0, 0]       # ||g'||_2 ||x2||_4 ||g||_4
            scale = ref.norm(1, C[0, 0]) * (3 * mp.mpf(C[1, 1]) ** 2 * fourth) ** mp.mpf(0.25)
            compare(f"I3{label}", module.I3(C), exact, scale, not module.CLOSED_FORM)
    return out


# ----------------------------------------------------------------------------------------
# SGD

def sgd_gaps(module):
    """(|theory - SGD mean|, seed spread) at t = 1, 2, 3 (D = 500, K = 2, spikes (3, 2) D), and the
    fall of SGD's mean error over the run."""
    eigvals, eigvecs, W0, V0 = spiked_problem(500, 2, [3.0, 2.0], seed=0)
    run = dict(lr=0.5, times=np.linspace(0.0, 3.0, 4), progress=False)
    theory = module.integrate(eigvals, eigvecs, W0, V0, fluctuations=True, **run)
    sim = simulate(module, eigvals, eigvecs, W0, V0, seeds=6, test_samples=0, **run)
    assert theory.status == 0 and sim.status == 0, (theory.message, sim.message)
    assert theory.error[0] == pytest.approx(sim.mean()[0], rel=1e-10)          # the same initial state
    spread = np.maximum(sim.std(), theory.error_spread)[1:]
    return np.abs(theory.error - sim.mean())[1:], spread, sim.mean()[0] - sim.mean()[-1]


def assert_sgd_within_spread(module):
    gap, spread, fall = sgd_gaps(module)
    print(f"{module.NAME}: SGD gap / spread at t = 1, 2, 3: {np.round(gap / spread, 2).tolist()} "
          f"(gap {np.round(gap, 4).tolist()}, spread {np.round(spread, 4).tolist()})")
    assert np.all(gap <= spread), f"{module.NAME}: |theory - SGD| / spread = {gap / spread}"
    assert fall > 10 * spread.max(), f"{module.NAME}: the error hardly moved ({fall})"


# ----------------------------------------------------------------------------------------
# Tests

@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_activation(name):
    """g and its derivatives against the expression; every kernel and I2, I3 of the derived module
    against Monte Carlo (5 standard errors) and mpmath (closed forms 1e-10, numerical kernels 1e-8
    of their scale); GELU and softplus also against SGD."""
    clock = [time.perf_counter()]
    module = built(name)
    clock.append(time.perf_counter())
    if name in CLOSED:
        assert module.CLOSED_FORM and module.NUMERIC_KERNELS == (), \
            f"{name}: CLOSED_FORM {module.CLOSED_FORM}, NUMERIC_KERNELS {module.NUMERIC_KERNELS}"
        assert tuple(kernel_names(module)) == CLOSED[name], kernel_names(module)
    wrong = [(k, error) for k, error in derivative_errors(name, module) if not error <= 1e-12]
    assert not wrong, f"{name}: g^(k) differs from the expression's (k, relative error): {wrong}"
    mc = monte_carlo_deviations(module)
    clock.append(time.perf_counter())
    quad = mpmath_errors(name, module)
    clock.append(time.perf_counter())
    worst_mc, worst_quad = max(mc), max(quad)
    print(f"{name}: CLOSED_FORM {module.CLOSED_FORM}, NUMERIC_KERNELS {module.NUMERIC_KERNELS}; "
          f"Monte Carlo: largest deviation {worst_mc[0]:.2f} SE ({worst_mc[1]}); "
          f"mpmath: worst {worst_quad[0]:.2g} of the tolerance ({worst_quad[1]}: error {worst_quad[4]:.2g}, "
          f"relative {worst_quad[4] / max(abs(worst_quad[3]), 1e-300):.2g}); seconds: derive (or cache) "
          f"{clock[1] - clock[0]:.1f}, Monte Carlo {clock[2] - clock[1]:.1f}, mpmath {clock[3] - clock[2]:.1f}")
    bad = [f"{label}: {value!r}, Monte Carlo {mean!r} +- {se!r} ({dev:.1f} SE)"
           for dev, label, value, mean, se in mc if dev > MC_SIGMAS]
    bad += [f"{label}: {value!r} vs mpmath {exact!r} (error {error:.3g}, {ratio:.3g} x the tolerance)"
            for ratio, label, value, exact, error in quad if ratio > 1]
    assert not bad, f"{name}:\n" + "\n".join(bad)
    if name in SGD_CHECKED:
        assert_sgd_within_spread(module)


def test_tanh_equations_match_sgd():
    """generated/tanh.py (numerical kernels) against SGD in the zoo's setting."""
    from generated import tanh
    assert_sgd_within_spread(tanh)

