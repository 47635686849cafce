"""One activation's equations: the shared assembly (generated/rules.py) read with its averages.

generated/rules.py writes each learning rule's drift and noise once, for every activation, in
terms of Gaussian averages E.<name> over the local fields; an activation's module
(generated/NAME.py) holds what depends on g: its derivatives and kernels. `Equations` joins them,
evaluating the averages a function reads (rules.AVERAGES) at the order parameters:

* mean_o(q_k), pair_o1_o2(q_k, Q_kl, q_l) by the activation's kernels (closed forms, or their
  own quadrature), shifted_* ones over lambda ~ N(b, Q) with a trained bias;
* the averages over several units (multi_*), every average of the finite-D equations of an
  activation whose g'' is a delta (over the smoothed g_eps, SMOOTHED), and those with a trained
  bias, numerically by runtime.quadrature.expect_units.

A right-hand side at finite D calls the drift, then the noise of the atoms and of the spikes at
the same order parameters: the first call evaluates every average the three read, in one
expect_units call, and the others reuse them (the last order parameters are remembered).
"""
from __future__ import annotations

import functools
import types

import numpy as np

from generated import rules
from runtime import fast_kernels, quadrature
from runtime.elementwise import broadcast


def _diagonal(Q):
    return np.diagonal(Q, axis1=-2, axis2=-1)


class Equations:
    """The shared equations of generated/rules.py bound to one activation's module globals."""

    def __init__(self, namespace):
        self.act = _Namespace(namespace)      # read at call time: the module defines its kernels first
        #: generated/rules.py, or the rules a module built in memory was derived with (derive.build)
        self.rules = namespace.get("_rules", rules)
        self._last = (None, None)

    # -- averages --------------------------------------------------------------------------

    def kernels(self, names, Q, b=None, constant=0):
        """{name: array} by the activation's kernel functions (shifted_* with a bias b). The first
        `constant` units have g = 1 (the output bias: derive.rules): an average is then the one over
        the other units, or 0 where a derivative of g falls on a constant unit."""
        if constant:
            return {n: self._with_constant(n, Q, b, constant) for n in names}
        q, out = _diagonal(Q), {}
        for n in names:
            if b is None:
                f = getattr(self.act, n)
                out[n] = f(q) if n.startswith("mean_") else f(q[..., :, None], Q, q[..., None, :])
            else:
                f = getattr(self.act, "shifted_" + n)
                out[n] = f(b, q) if n.startswith("mean_") else \
                    f(b[..., :, None], b[..., None, :], q[..., :, None], Q, q[..., None, :])
        return out

    def _with_constant(self, name, Q, b, n):
        """Kernel `name` over units whose first n have g = 1: pair_o1_o2[c, l] = mean_o2(q_l) when
        o1 has no derivative (else 0), and 1 or 0 where both units are constant."""
        orders = _orders(name)
        flat = [not any(o) for o in orders]        # the factor on a constant unit: 1, else 0
        Qh, bh = Q[..., n:, n:], None if b is None else b[..., n:]

        def one(o):
            mean = "mean_" + "".join(map(str, o))
            return self.kernels([mean], Qh, bh)[mean]
        out = np.zeros(Q.shape[:-2] + (Q.shape[-1],) * len(orders))
        if len(orders) == 1:
            out[..., n:], out[..., :n] = self.kernels([name], Qh, bh)[name], float(flat[0])
            return out
        out[..., n:, n:] = self.kernels([name], Qh, bh)[name]
        if flat[0]:
            out[..., :n, n:] = one(orders[1])[..., None, :]
        if flat[1]:
            out[..., n:, :n] = one(orders[0])[..., :, None]
        out[..., :n, :n] = float(flat[0] and flat[1])
        return out

    def numerical(self, names, Q, b=None, constant=0):
        """{name: array} of the averages by one expect_units call: over the smoothed activation
        where g'' is a delta, else over g (exact Gauss-Hermite for a polynomial g; without a bias,
        the averages on one unit and on a pair of units from runtime.fast_kernels' tables where
        they cover Q: tabulated_units); the first `constant` units have g = 1."""
        if not names:
            return {}
        orders = tuple(_orders(n) for n in names)
        if getattr(self.act, "SMOOTHED", None):
            values = quadrature.smoothed_units(self.act.SMOOTHED, self.act.SMOOTHING, orders, Q, b, constant,
                                               getattr(self.act, "smoothed_derivatives", None),
                                               getattr(self.act, "HOMOGENEITY", None))
        else:
            tables = None if b is not None else functools.partial(fast_kernels.tabulated_units, self.act.DERIVATIVES)
            values = quadrature.expect_units(self.act.DERIVATIVES, orders, Q, self.act.POLYNOMIAL_DEGREE, b,
                                             constant=constant, tabulated=tables,
                                             inner=self._inner())
        return dict(zip(names, values))

    def _inner(self):
        """The module's closed-form one-unit averages (inner_means, INNER_ORDERS) as one
        quadrature.InnerMeans, or None."""
        if not hasattr(self, "_inner_means"):
            orders = getattr(self.act, "INNER_ORDERS", None)
            self._inner_means = None if orders is None else quadrature.InnerMeans(orders, self.act.inner_means)
        return self._inner_means

    @staticmethod
    def _namespace(values, Q, constant):
        """The averages as E.<name>, and E.unit (K,): 0 on the output bias' (constant) units, else 1."""
        unit = np.ones(Q.shape[-1])
        unit[:constant] = 0.0
        return types.SimpleNamespace(**values, unit=unit)

    def _averages(self, function, Q, b=None, constant=0):
        """E for one function of the shared rules (its AVERAGES) by the kernels."""
        return self._namespace(self.kernels(self.rules.AVERAGES[function], Q, b, constant), Q, constant)

    def _finite_averages(self, rule, Q, b, constant):
        """(E, E_limit) for the finite-D functions of `rule` at Q (and bias b), every one of their
        numerical averages in one expect_units call, remembered for the next call at the same Q, b."""
        key = (rule, Q.shape, Q.tobytes(), None if b is None else (b.shape, b.tobytes()), constant)
        if self._last[0] == key:
            return self._last[1]
        parts = (("noise", "spike_noise", "bias_noise") if b is not None else
                 ("finite_drift", "noise", "spike_noise"))
        names = sorted({n for p in parts for n in self.rules.AVERAGES.get(f"{p}_{rule}", ())})
        limit = self.rules.AVERAGES.get(f"drift_{rule}", ()) if b is None else ()
        if b is not None or getattr(self.act, "SMOOTHED", None):
            E = self._namespace(self.numerical(names, Q, b, constant), Q, constant)
            E_limit = self._namespace(self.kernels(limit, Q, None, constant), Q, constant)
        else:
            multi = [n for n in names if n.startswith("multi_")]
            kernels = sorted((set(names) | set(limit)) - set(multi))
            E = E_limit = self._namespace({**self.kernels(kernels, Q, None, constant),
                                           **self.numerical(multi, Q, None, constant)}, Q, constant)
        self._last = (key, (E, E_limit))
        return E, E_limit

    # -- the module's functions ---------------------------------------------------------------
    # Each takes the rule's parameters (generated/rules.py's PARAMS) as keywords, and output_bias=True
    # when the first unit is the output bias (g = 1, w = 0: derive.rules).

    def tables(self):
        """DRIFTS, BIAS_DRIFTS, FINITE, SPIKE_NOISE, BIAS_NOISE of the module (SPEC section 6)."""
        finite = not getattr(self.act, "FINITE_MISSING", "")
        bias_noise = finite and not getattr(self.act, "BIAS_NOISE_MISSING", "")
        return ({r: self._drift(r) for r in self.rules.LIMITS},
                {r: self._bias_drift(r) for r in self.rules.BIASED},
                {r: (self._finite_drift(r), self._noise(r, "noise")) for r in self.rules.RULES} if finite else {},
                {r: self._noise(r, "spike_noise") for r in self.rules.RULES} if finite else {},
                {r: (self._noise(r, "noise", bias=True), self._noise(r, "spike_noise", bias=True),
                     self._bias_noise(r)) for r in self.rules.BIASED} if bias_noise else {})

    def _drift(self, rule):
        shared = getattr(self.rules, f"drift_{rule}")

        def drift(Q, R, T, T0, lr, output_bias=False, **params):
            return shared(self._averages(f"drift_{rule}", Q, None, int(output_bias)), Q, R, T, T0, lr, **params)
        return _named(drift, shared, f"drift_{rule}")

    def _bias_drift(self, rule):
        shared = getattr(self.rules, f"bias_drift_{rule}")

        def bias_drift(Q, R, T, T0, b, lr, output_bias=False, **params):
            return shared(self._averages(f"bias_drift_{rule}", Q, b, int(output_bias)), Q, R, T, T0, b, lr, **params)
        return _named(bias_drift, shared, f"drift_{rule}_bias")

    def _finite_drift(self, rule):
        shared = getattr(self.rules, f"finite_drift_{rule}")

        def finite_drift(Q, R, T, T0, WW, lr, D, output_bias=False, **params):
            return shared(*self._finite_averages(rule, Q, None, int(output_bias)), Q, R, T, T0, WW, lr, D, **params)
        return _named(finite_drift, shared, f"finite_drift_{rule}")

    def _noise(self, rule, kind, bias=False):
        """noise_<rule> or spike_noise_<rule> (`kind`); with `bias`, its averages over N(b, Q)."""
        shared = getattr(self.rules, f"{kind}_{rule}")
        if bias:
            def noise_bias(Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho, b, output_bias=False, **params):
                E = self._finite_averages(rule, Q, b, int(output_bias))[0]
                return shared(E, Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho, **params)
            return _named(noise_bias, shared, f"{kind}_{rule}_bias", "\nAverages over lambda ~ N(b, Q): b (..., K).")

        def noise(Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho, output_bias=False, **params):
            E = self._finite_averages(rule, Q, None, int(output_bias))[0]
            return shared(E, Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho, **params)
        return _named(noise, shared, f"{kind}_{rule}")

    def _bias_noise(self, rule):
        shared = getattr(self.rules, f"bias_noise_{rule}")

        def bias_noise(Q, R, T, T0, WW, lr, D, b, theta, rho_hat, output_bias=False, **params):
            E = self._finite_averages(rule, Q, b, int(output_bias))[0]
            return shared(E, Q, R, T, T0, WW, lr, D, b, theta, rho_hat, **params)
        return _named(bias_noise, shared, f"bias_noise_{rule}")

    def averages(self, *literature):
        """The literature's averages `literature` of generated/rules.py (J2, I2, ...) over this
        activation's kernels, and population_error, population_error_tied."""
        def bind(name):
            shared = getattr(self.rules, name)
            return _named(lambda C: shared(self.act, C), shared, name)

        def population_error(Q, R, T, T0, half_trace, b=None, output_bias=False):
            Q, R, T0 = (np.asarray(a, dtype=float) for a in (Q, R, T0))
            b = None if b is None else np.asarray(b, dtype=float)
            E = self._averages("population_error", Q, b, int(output_bias))
            return self.rules.population_error(E, Q, R, T, T0, half_trace)

        def population_error_tied(Q, WW, half_trace, D):
            Q, WW = np.asarray(Q, dtype=float), np.asarray(WW, dtype=float)
            return self.rules.population_error_tied(self._averages("population_error_tied", Q), Q, WW, half_trace, D)
        return (*(bind(n) for n in literature),
                _named(population_error, self.rules.population_error, "population_error",
                       "\nb (..., K): an encoder bias (kernels over N(b, Q)) or None; output_bias: the first unit is "
                       "the output bias c (g = 1, w = 0)."),
                _named(population_error_tied, self.rules.population_error_tied, "population_error_tied"))


@functools.lru_cache(maxsize=None)
def _orders(name):
    """The derivative orders per unit that an average's name spells (derive.kernels, derive.drift):
    'mean_11' -> ((1, 1),), 'pair_2_0' -> ((2,), (0,)), 'multi_21_0_0' -> ((2, 1), (0,), (0,)).
    Remembered: a finite-D right-hand side reads ~15 names (50 us of parsing a call)."""
    return tuple(tuple(int(c) for c in part) for part in name.split("_")[1:])


class _Namespace:
    """Attribute access to a module's globals."""

    def __init__(self, namespace):
        self.__dict__ = namespace


def constant(value):
    """A kernel (or derivative of g) that is the constant `value`: a new float array of the
    broadcast shape of its arguments."""
    def kernel(*args):
        return broadcast(value, *args)
    kernel.__doc__ = f"The constant {value!r} (derived), of the broadcast shape of the arguments."
    return kernel


def numerical_kernels(derivatives, names):
    """The kernels `names` (mean_*, pair_*, shifted_mean_*, shifted_pair_*) that have no closed
    form, numerically over `derivatives` = (g, g', ...): mean_o(v), pair_o1_o2(c11, c12, c22),
    shifted_mean_o(m, v), shifted_pair_o1_o2(m1, m2, c11, c12, c22), each family by the method
    runtime.fast_kernels.METHODS states (and the generated modules' headers repeat):

    pair_* by runtime.fast_kernels.pair: Mehler's series in the correlation over Hermite
    coefficients tabulated (lazily, per factor, in ~5-60 ms) in log(variance), for variances in
    [1e-2, 1e2] and |rho| up to the series' per-point reach, error <= 1e-9 of the value + 1e-10 of
    the Cauchy-Schwarz scale; beyond that reach (1 - |rho| < 2^-4) Chebyshev cells in (log
    variances, 1 - |rho|) tabulated by quadrature; tabulated or one-dimensional rules at rho = +-1;
    every other point by the double-exponential quadrature of runtime.quadrature.expect2 (~1e-10).
    mean_* by a tabulated Chebyshev series in log(variance) on [1e-2, 1e2] (equal to
    runtime.quadrature.expect1 to ~1e-14), expect1 outside; shifted_* by double-exponential
    quadrature (runtime.quadrature.expect1, expect2)."""
    def evaluate(family, orders):
        if family == "shifted_mean":
            return lambda m, v: quadrature.expect1(derivatives, orders[0], v, m)
        if family == "mean":
            return lambda v: fast_kernels.mean(derivatives, orders[0], v)
        if family == "shifted_pair":
            return lambda m1, m2, c11, c12, c22: quadrature.expect2(derivatives, orders[0], orders[1],
                                                                   c11, c12, c22, m1, m2)
        return lambda c11, c12, c22: fast_kernels.pair(derivatives, orders[0], orders[1], c11, c12, c22)

    def kernel(name):
        family = fast_kernels.family(name)
        orders = [tuple(int(c) for c in d) for d in name[len(family) + 1:].split("_")]
        f = evaluate(family, orders)
        f.__name__ = f.__qualname__ = name
        factors = " ".join(f"g^({a})(x{i + 1})" for i, o in enumerate(orders) for a in o)
        shifted = family.startswith("shifted_")
        f.__doc__ = f"E[{factors}] over a {'shifted ' if shifted else ''}Gaussian, by {fast_kernels.METHODS[family]}."
        return f
    return tuple(kernel(n) for n in names)


def _named(function, shared, name, note=""):
    """`function` named `name` with the docstring of the shared function it calls."""
    function.__name__ = function.__qualname__ = name
    function.__doc__ = (shared.__doc__ or "") + note
    return function
