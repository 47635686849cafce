"""Learning-rate schedules eta(t), t = steps / D (issue 14, item 3).

`integrate` and `simulate` take `lr` as a positive number or as a schedule; the equations of
motion are the same with eta(t) in place of lr (each right-hand side is evaluated at the lr of
its t), and SGD step n (n = 0, 1, ...; t = n / D) uses eta(n / D). `schedule(lr)` turns what a
user gives into a callable t -> eta(t), vectorised over numpy arrays of t:

    schedule(0.5)                                   # constant(lr=0.5)
    schedule(lambda t: 1.0 / (1 + t / 10))          # any function of t (numpy-vectorised or not)
    schedule(inverse_time(1.0, t0=10))              # eta = lr / (1 + t / t0)
    schedule(cosine(1.0, t_max=50))                 # cosine decay from lr to lr_min at t_max
    schedule({"schedule": "cosine", "lr": 1.0, "t_max": 50})    # the config form (a TOML inline table)
    schedule(("inverse_time", 1.0, 10))             # name, then the arguments in order

Bad input raises ValueError naming the problem. A constant schedule is kept as its float by
integrate and simulate (`constant_value`), so that lr = 0.7 and constant(0.7) are the same
arithmetic, bit for bit.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from runtime.check import number


class Schedule:
    """A learning rate eta(t): call it with a number (-> float) or an array of t (-> array)."""

    #: the name in the config form ({"schedule": name, ...}); None for a user's function
    name = None

    @property
    def constant_value(self):
        """The lr of a constant schedule, else None."""
        return None

    def __call__(self, t):
        t_arr = np.asarray(t, dtype=float)
        out = self._eval(t_arr)
        return float(out) if t_arr.ndim == 0 else out

    def _eval(self, t):               # t: a float array; returns an array of its shape
        raise NotImplementedError

    def rates(self, t):
        """eta at the array of times t, checked: finite and non-negative, else ValueError naming t."""
        eta = np.broadcast_to(np.asarray(self(np.asarray(t, dtype=float)), dtype=float), np.shape(t))
        bad = ~(np.isfinite(eta) & (eta >= 0))
        if np.any(bad):
            i = np.flatnonzero(bad.ravel())[0]
            raise ValueError(f"learning-rate schedule {self!r} gave lr = {float(eta.ravel()[i])!r} at "
                             f"t = {np.ravel(t)[i]:.6g} (expected a finite number >= 0)")
        return eta

    def rate(self, t):
        """eta(t) as a checked float (rates, for one t)."""
        return float(self.rates(np.array([float(t)]))[0])

    def config(self):
        """The config form, {"schedule": name, **parameters} (named schedules only)."""
        return {"schedule": self.name, **self._params()}

    def _params(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"

    def __format__(self, spec):
        """Any format (e.g. f"lr = {lr:g}" in messages) shows the repr; a constant one its number."""
        return repr(self) if self.constant_value is None else format(self.constant_value, spec)

    def __eq__(self, other):
        return type(other) is type(self) and other._params() == self._params()

    def __hash__(self):
        return hash((type(self).__name__, tuple(self._params().items())))


class constant(Schedule):
    """eta(t) = lr"""
    name = "constant"

    def __init__(self, lr):
        self.lr = _positive(lr, "lr")

    @property
    def constant_value(self):
        return self.lr

    def _params(self):
        return {"lr": self.lr}

    def _eval(self, t):
        return np.full(t.shape, self.lr)


class inverse_time(Schedule):
    """eta(t) = lr / (1 + t / t0)"""
    name = "inverse_time"

    def __init__(self, lr, t0):
        self.lr, self.t0 = _positive(lr, "lr"), _positive(t0, "t0")

    def _params(self):
        return {"lr": self.lr, "t0": self.t0}

    def _eval(self, t):
        return self.lr / (1 + t / self.t0)


class cosine(Schedule):
    """eta(t) = lr_min + (lr - lr_min) (1 + cos(pi min(t, t_max) / t_max)) / 2: from lr at t = 0
    down to lr_min at t_max, constant after it."""
    name = "cosine"

    def __init__(self, lr, t_max, lr_min=0.0):
        self.lr, self.t_max = _positive(lr, "lr"), _positive(t_max, "t_max")
        self.lr_min = number(lr_min, "lr_min")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr = {self.lr!r}], got {self.lr_min!r}")

    def _params(self):
        return {"lr": self.lr, "t_max": self.t_max, "lr_min": self.lr_min}

    def _eval(self, t):
        return self.lr_min + (self.lr - self.lr_min) * (1 + np.cos(np.pi * np.minimum(t, self.t_max) / self.t_max)) / 2


class function(Schedule):
    """eta(t) = fn(t) for a user's function of t: called with an array of t if it takes one
    (returns an array of that shape, or a number), else one t at a time."""

    def __init__(self, fn):
        if not callable(fn):
            raise ValueError(f"lr must be a positive number, a callable of t or a schedule, got {fn!r}")
        self.fn = fn
        self._vectorised = None       # found out on the first array call
        eta0 = self._scalar(0.0)
        if not (math.isfinite(eta0) and eta0 >= 0):
            raise ValueError(f"the learning-rate function {_describe(fn)} gave lr = {eta0!r} at t = 0 "
                             "(expected a finite number >= 0)")

    def _scalar(self, t):
        try:
            value = self.fn(t)
            return float(np.asarray(value, dtype=float).reshape(()))
        except Exception as exc:
            raise ValueError(f"the learning-rate function {_describe(self.fn)} at t = {t:g}: expected a number, "
                             f"got {type(exc).__name__}: {exc}") from None

    def _eval(self, t):
        if t.ndim == 0:
            return np.asarray(self._scalar(float(t)))
        if self._vectorised is not False:
            try:
                out = np.asarray(self.fn(t), dtype=float)
                if out.shape in ((), t.shape):
                    self._vectorised = True
                    return np.broadcast_to(out, t.shape).copy()
            except Exception:
                if self._vectorised:
                    raise
            self._vectorised = False
        return np.array([self._scalar(float(x)) for x in t.ravel()]).reshape(t.shape)

    def _params(self):
        return {"fn": self.fn}

    def __repr__(self):
        return f"function({_describe(self.fn)})"

    def __eq__(self, other):
        return type(other) is type(self) and other.fn is self.fn

    def __hash__(self):
        return hash(id(self.fn))


#: the named schedules, by their config name
NAMED = {cls.name: cls for cls in (constant, inverse_time, cosine)}


def schedule(lr):
    """A Schedule from a positive number, a callable of t, a Schedule, a dict
    {"schedule": name, **parameters} or a tuple (name, *arguments); ValueError otherwise."""
    if isinstance(lr, Schedule):
        return lr
    if isinstance(lr, dict):
        return _from_dict(lr)
    if isinstance(lr, (tuple, list)):
        if not lr or not isinstance(lr[0], str):
            raise ValueError(f"lr as a tuple is (schedule name, arguments...), got {lr!r}")
        return _build(lr[0], lr[1:], {})
    if callable(lr):
        return function(lr)
    if isinstance(lr, (str, bytes)):
        raise ValueError(f"lr must be a positive number, a callable of t or a schedule, got {lr!r}; "
                         f"a named schedule needs its parameters, e.g. {{'schedule': 'cosine', 'lr': 1.0, 't_max': 50}}")
    return constant(lr)


def resolve(lr):
    """What integrate and simulate keep: the float of a constant lr (a number, constant(...), or
    its config form), else the Schedule. ValueError on bad input."""
    s = schedule(lr)
    return s if s.constant_value is None else s.constant_value


def _from_dict(d):
    d = dict(d)
    name = d.pop("schedule", None)
    if name is None:
        raise ValueError(f"lr as a table needs a 'schedule' key naming one of {', '.join(NAMED)}, got {d!r}")
    return _build(name, (), d)


def _build(name, args, kwargs):
    if not isinstance(name, str) or name not in NAMED:
        raise ValueError(f"unknown learning-rate schedule {name!r}; known: {', '.join(NAMED)}")
    cls = NAMED[name]
    sig = inspect.signature(cls.__init__)
    params = [p for p in sig.parameters if p != "self"]
    required = [p for p in params if sig.parameters[p].default is inspect.Parameter.empty]
    unknown = [k for k in kwargs if k not in params]
    try:
        sig.bind(None, *args, **kwargs)
    except TypeError:
        raise ValueError(f"{name} schedule takes {', '.join(params)} (required: {', '.join(required)}); "
                         + (f"unknown: {', '.join(map(str, unknown))}" if unknown else
                            f"got {', '.join([*map(repr, args), *kwargs]) or 'nothing'}")) from None
    try:
        return cls(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{name} schedule: {exc}") from None


def _positive(value, what):
    value = number(value, what)
    if not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return value


def _describe(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)
