"""Keep freed memory in the process for the next array (glibc's malloc; a no-op elsewhere).

glibc hands blocks above its mmap threshold (128 kB at first, raised as such blocks are freed) to
the kernel on free, and trims the heap's top above its trim threshold; the next temporary array of
that size then faults its pages in afresh. The quadrature's node arrays (1e5-1e6 numbers, 1-8 MB) are
such temporaries: on the 2-core VM of docs/performance.md, np.exp(-np.abs(x)) on 2e5 numbers took
1.66 ms, of which 1.45 ms were page faults (0.22 ms with the thresholds below), and erf's g'(x) 1.79
against 0.32 ms. Fixing the mmap threshold at MMAP_THRESHOLD (glibc's largest) and the trim threshold
at TRIM_THRESHOLD keeps up to that much freed memory for reuse. Set AE_DYNAMICS_MALLOC=default before
importing runtime to leave glibc's own thresholds (Dask's nanny sets MALLOC_TRIM_THRESHOLD_ for workers
that must return memory: these calls override it in the processes that import runtime).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

#: blocks below this come from the heap (glibc's maximum, 32 MB on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: freed memory at the heap's top kept up to this
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Set glibc's mmap and trim thresholds (mallopt); True where they were set, False on another C
    library or with AE_DYNAMICS_MALLOC=default."""
    if os.environ.get("AE_DYNAMICS_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
