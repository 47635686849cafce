"""One BLAS thread while a solver steps (threadpoolctl).

numpy and scipy each load their own OpenBLAS, and each pool's worker threads spin for a while after
a call. An implicit solver alternates scipy's LU factorisations with numpy's products and norms, so
on a machine with few cores the two pools' spinning threads take the cores from the thread doing
the work. Measured on the 2-core VM of docs/performance.md, a 172 x 172 lu_factor followed by the
norm of 16 384 numbers (StructuredBDF's capacitance matrix and scipy's error norm for 32x32 patches,
K = 8): 4.5 ms + 6.5 ms with OpenBLAS's default threads, 0.22 ms + 0.004 ms with one; StructuredBDF
on the patches 4.0-4.5 s against 1.8 s. The solvers' products are small (a few hundred numbers a
side), where a second thread gains nothing: the 10^4-eigenvalue case (K = 4) is within 5 %.
"""
from __future__ import annotations

import contextlib

_controller = None


@contextlib.contextmanager
def one_blas_thread():
    """Every loaded BLAS library (numpy's and scipy's OpenBLAS, MKL, ...) on one thread inside the
    block, its own setting restored on leaving."""
    global _controller
    if _controller is None:                 # inspecting the loaded libraries takes ~1 ms: once
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield
