"""Elementwise helpers the generated kernels print in place of /, sqrt and asin.

They give the closed forms their correct limits on the boundary of the PSD cone, where a
formula is a ratio of vanishing quantities or rounding pushes an argument just outside its
domain (inputs are validated before they get here, see `runtime.check`):

* `div(a, b)`: a/b, with 0/0 -> 0 (a Stein term whose covariance vanishes) and a/0 -> +-inf;
* `sqrt0(a)`: sqrt(max(a, 0)) for a radicand that is a determinant or a conditional variance;
* `arcsin(a)`: arcsin(clip(a, -1, 1)) for a correlation coefficient.
"""
import numpy as np


def div(a, b):
    """a / b elementwise, 0/0 -> 0, a/0 -> sign(a) inf."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = a / b
    zero = b == 0
    if np.any(zero):
        q = np.where(zero & (a == 0), 0.0, q)
    return q


def sqrt0(a):
    """sqrt(max(a, 0))."""
    return np.sqrt(np.maximum(a, 0.0))


def arcsin(a):
    """arcsin(clip(a, -1, 1))."""
    return np.arcsin(np.clip(a, -1.0, 1.0))


def broadcast(value, *args):
    """`value` as a float array of the broadcast shape of `args` (for constant kernels)."""
    shape = np.broadcast_shapes(*(np.shape(a) for a in args))
    return np.broadcast_to(np.asarray(value, dtype=float), shape).copy() if np.shape(value) != shape else value
