"""Batch axes last, for the second-order terms of generated/rules.py.

The noise functions (noise_<rule>, spike_noise_<rule>, bias_noise_<rule>) are sums of a few
hundred numpy.einsum contractions over tiny unit and spike axes (K, J = 2..4). Called on many
states at once (sample paths: a batch of 256), numpy's einsum with the batch first ('...kl')
runs its inner loops over the unit axes, of length K: ~90-190 us per call at a batch of 256.
With the batch last ('kl...') every inner loop runs over the batch, contiguous: ~5-7 us, the
same arithmetic. The generated functions take and return arrays with the batch first, as every
other function does; they move it last on entry (`batch_last`) and back on return
(`batch_first`).
"""
from __future__ import annotations

import functools
import types

import numpy

try:                                            # numpy >= 2
    from numpy._core.multiarray import c_einsum as einsum
except ImportError:                             # numpy 1.x
    from numpy.core.multiarray import c_einsum as einsum
#: `einsum` is the C function numpy.einsum calls when it is not asked to optimize (its default), without
#: numpy.einsum's Python wrapper and __array_function__ dispatch: the same result, ~0.6 us less a call,
#: which is a fifth of a call on these tiny operands (a fluctuation right-hand side makes ~350 of them;
#: ReLU K = 2's fluctuations 2.73 -> 2.51 s). The generated functions call it as _einsum.


@functools.lru_cache(maxsize=None)
def core_ndim(name):
    """The number of unit axes of an average E.<name>: mean_* and unit 1, pair_* 2, multi_<o1>_..._<on> n."""
    if name.startswith(("mean_", "unit")):
        return 1
    if name.startswith("pair_"):
        return 2
    if name.startswith("multi_"):
        return name.count("_")
    raise ValueError(f"not an average: {name!r}")


def _last(a, core, n):
    """a (batch..., core...) -> (core..., 1..., batch...) with n batch axes, contiguous."""
    shape, b = a.shape, a.ndim - core
    if all(s == 1 for s in shape[:b]):              # no batch to move: a view
        return a.reshape(shape[b:] + (1,) * n)
    moved = a.transpose(tuple(range(b, a.ndim)) + tuple(range(b)))
    return numpy.asarray(moved.reshape(shape[b:] + (1,) * (n - b) + shape[:b]), order="C")


def batch_last(E, names, *arrays):
    """(E', batch, arrays'): the averages `names` of E (and E.unit, if it has one) and the
    (array, number of unit axes) pairs `arrays`, their leading batch axes broadcast to one batch
    shape and moved last, each array with len(batch) trailing axes (1 where it had fewer), so
    that einsum's '...' at the end and numpy's broadcasting agree."""
    names = tuple(names) + (("unit",) if hasattr(E, "unit") else ())
    items = [(numpy.asarray(getattr(E, n)), core_ndim(n)) for n in names] + \
        [(numpy.asarray(a), core) for a, core in arrays]
    batches = {a.shape[:a.ndim - core] for a, core in items}
    batch = batches.pop() if len(batches) == 1 else numpy.broadcast_shapes(*batches)
    moved = [_last(a, core, len(batch)) for a, core in items]
    return types.SimpleNamespace(**dict(zip(names, moved))), batch, moved[len(names):]


def constant(a, batch):
    """An array without batch axes, with len(batch) trailing axes of length 1."""
    return a.reshape(a.shape + (1,) * len(batch))


def swapped(a, axes):
    """a with its leading len(axes) axes transposed by `axes`, the batch axes after them kept:
    N[:, v, w] from N[:, w, v] of a symmetric noise matrix."""
    return a.transpose(tuple(axes) + tuple(range(len(axes), a.ndim)))


def mirrored(axes, a):
    """a + swapped(a, axes): a block symmetric under that transpose from half of its terms
    (derive.contraction.mirrored; the axes first, where a reader of the generated block sees them)."""
    return a + swapped(a, axes)


def batch_first(a, batch):
    """a (core..., batch...) -> (batch..., core...): the layout of the functions' callers."""
    core = a.ndim - len(batch)
    return numpy.asarray(a.transpose(tuple(range(core, a.ndim)) + tuple(range(core))), order="C")
