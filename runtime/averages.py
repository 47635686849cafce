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

import types

import numpy as np

from generated import rules
from runtime import quadrature
from runtime.elementwise import broadcast


def _diagonal(Q):
    return np.diagonal(Q, axis1=-2, axis2=-1)


class Equations:
    """The shared equations of generated/rules.py bound to one activation's module globals."""

    def __init__(self, namespace):
        self.act = _Namespace(namespace)      # read at call time: the module defines its kernels first
        self._last = (None, None)

    # -- averages --------------------------------------------------------------------------

    def kernels(self, names, Q, b=None):
        """{name: array} by the activation's kernel functions (shifted_* with a bias b)."""
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

    def numerical(self, names, Q, b=None):
        """{name: array} of the averages by one expect_units call: over the smoothed activation
        where g'' is a delta, else over g (exact Gauss-Hermite for a polynomial g)."""
        if not names:
            return {}
        orders = tuple(_orders(n) for n in names)
        means = () if b is None else (b,)
        if getattr(self.act, "SMOOTHED", None):
            values = quadrature.smoothed(quadrature.expect_units, self.act.SMOOTHED, self.act.SMOOTHING, orders, Q,
                                         *((None,) + means if means else ()))
        else:
            values = quadrature.expect_units(self.act.DERIVATIVES, orders, Q, self.act.POLYNOMIAL_DEGREE, *means)
        return dict(zip(names, values))

    def _finite_averages(self, rule, Q, b):
        """(E, E_limit) for the finite-D functions of `rule` at Q (and bias b), every one of their
        numerical averages in one expect_units call, remembered for the next call at the same Q, b."""
        key = (rule, Q.shape, Q.tobytes(), None if b is None else (b.shape, b.tobytes()))
        if self._last[0] == key:
            return self._last[1]
        parts = (("noise", "spike_noise", "bias_noise") if b is not None else
                 ("finite_drift", "noise", "spike_noise"))
        names = sorted({n for p in parts for n in rules.AVERAGES.get(f"{p}_{rule}", ())})
        limit = rules.AVERAGES.get(f"drift_{rule}", ()) if b is None else ()
        if b is not None or getattr(self.act, "SMOOTHED", None):
            values = self.numerical(names, Q, b)
            E, E_limit = types.SimpleNamespace(**values), types.SimpleNamespace(**self.kernels(limit, Q))
        else:
            multi = [n for n in names if n.startswith("multi_")]
            kernels = sorted((set(names) | set(limit)) - set(multi))
            E = E_limit = types.SimpleNamespace(**self.kernels(kernels, Q), **self.numerical(multi, Q))
        self._last = (key, (E, E_limit))
        return E, E_limit

    # -- the module's functions ---------------------------------------------------------------

    def tables(self):
        """DRIFTS, BIAS_DRIFTS, FINITE, SPIKE_NOISE, BIAS_NOISE of the module (SPEC section 6)."""
        finite = not getattr(self.act, "FINITE_MISSING", "")
        bias_noise = finite and not getattr(self.act, "BIAS_NOISE_MISSING", "")
        return ({r: self._drift(r) for r in rules.LIMITS},
                {r: self._bias_drift(r) for r in rules.BIASED},
                {r: (self._finite_drift(r), self._noise(r, "noise")) for r in rules.RULES} if finite else {},
                {r: self._noise(r, "spike_noise") for r in rules.RULES} if finite else {},
                {r: (self._noise(r, "noise", bias=True), self._noise(r, "spike_noise", bias=True),
                     self._bias_noise(r)) for r in rules.BIASED} if bias_noise else {})

    def _drift(self, rule):
        shared = getattr(rules, f"drift_{rule}")

        def drift(Q, R, T, T0, lr):
            return shared(types.SimpleNamespace(**self.kernels(rules.AVERAGES[f"drift_{rule}"], Q)), Q, R, T, T0, lr)
        return _named(drift, shared, f"drift_{rule}")

    def _bias_drift(self, rule):
        shared = getattr(rules, f"bias_drift_{rule}")

        def bias_drift(Q, R, T, T0, b, lr):
            E = types.SimpleNamespace(**self.kernels(rules.AVERAGES[f"bias_drift_{rule}"], Q, b))
            return shared(E, Q, R, T, T0, b, lr)
        return _named(bias_drift, shared, f"drift_{rule}_bias")

    def _finite_drift(self, rule):
        shared = getattr(rules, f"finite_drift_{rule}")

        def finite_drift(Q, R, T, T0, WW, lr, D):
            return shared(*self._finite_averages(rule, Q, None), Q, R, T, T0, WW, lr, D)
        return _named(finite_drift, shared, f"finite_drift_{rule}")

    def _noise(self, rule, kind, bias=False):
        """noise_<rule> or spike_noise_<rule> (`kind`); with `bias`, its averages over N(b, Q)."""
        shared = getattr(rules, f"{kind}_{rule}")
        if bias:
            def noise_bias(Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho, b):
                return shared(self._finite_averages(rule, Q, b)[0], Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho)
            return _named(noise_bias, shared, f"{kind}_{rule}_bias", "\nAverages over lambda ~ N(b, Q): b (..., K).")

        def noise(Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho):
            return shared(self._finite_averages(rule, Q, None)[0], Q, R, T, T0, WW, lr, D, S, rho_hat, m_rho)
        return _named(noise, shared, f"{kind}_{rule}")

    def _bias_noise(self, rule):
        shared = getattr(rules, f"bias_noise_{rule}")

        def bias_noise(Q, R, T, T0, WW, lr, D, b, theta, rho_hat):
            return shared(self._finite_averages(rule, Q, b)[0], Q, R, T, T0, WW, lr, D, b, theta, rho_hat)
        return _named(bias_noise, shared, f"bias_noise_{rule}")

    def averages(self, *literature):
        """The literature's averages `literature` of generated/rules.py (J2, I2, ...) over this
        activation's kernels, and population_error, population_error_tied."""
        def bind(name):
            shared = getattr(rules, name)
            return _named(lambda C: shared(self.act, C), shared, name)

        def population_error(Q, R, T, T0, half_trace, b=None):
            Q, R, T0 = (np.asarray(a, dtype=float) for a in (Q, R, T0))
            b = None if b is None else np.asarray(b, dtype=float)
            E = types.SimpleNamespace(**self.kernels(rules.AVERAGES["population_error"], Q, b))
            return rules.population_error(E, Q, R, T, T0, half_trace)

        def population_error_tied(Q, WW, half_trace, D):
            Q, WW = np.asarray(Q, dtype=float), np.asarray(WW, dtype=float)
            E = types.SimpleNamespace(**self.kernels(rules.AVERAGES["population_error_tied"], Q))
            return rules.population_error_tied(E, Q, WW, half_trace, D)
        return (*(bind(n) for n in literature),
                _named(population_error, rules.population_error, "population_error",
                       "\nb (..., K): an encoder bias (kernels over N(b, Q)) or None."),
                _named(population_error_tied, rules.population_error_tied, "population_error_tied"))


def _orders(name):
    """The derivative orders per unit that an average's name spells (derive.kernels, derive.drift):
    'mean_11' -> ((1, 1),), 'pair_2_0' -> ((2,), (0,)), 'multi_21_0_0' -> ((2, 1), (0,), (0,))."""
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
    form, by double-exponential quadrature over `derivatives` = (g, g', ...) (runtime.quadrature):
    mean_o(v), pair_o1_o2(c11, c12, c22), shifted_mean_o(m, v), shifted_pair_o1_o2(m1, m2, c11, c12, c22)."""
    def kernel(name):
        shifted = name.startswith("shifted_")
        kind, *digits = name[len("shifted_") if shifted else 0:].split("_")
        orders = [tuple(int(c) for c in d) for d in digits]
        if kind == "mean":
            def mean(*args):
                m, v = args if shifted else (0.0, args[0])
                return quadrature.expect1(derivatives, orders[0], v, m)
            f = mean
        else:
            def pair(*args):
                m1, m2, c11, c12, c22 = args if shifted else (0.0, 0.0, *args)
                return quadrature.expect2(derivatives, orders[0], orders[1], c11, c12, c22, m1, m2)
            f = pair
        f.__name__ = f.__qualname__ = name
        factors = " ".join(f"g^({a})(x{i + 1})" for i, o in enumerate(orders) for a in o)
        f.__doc__ = (f"E[{factors}] over a {'shifted ' if shifted else ''}Gaussian, by double-exponential quadrature "
                     "(runtime.quadrature).")
        return f
    return tuple(kernel(n) for n in names)


def _named(function, shared, name, note=""):
    """`function` named `name` with the docstring of the shared function it calls."""
    function.__name__ = function.__qualname__ = name
    function.__doc__ = (shared.__doc__ or "") + note
    return function
