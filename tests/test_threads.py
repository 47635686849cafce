"""runtime.threads: the solvers' BLAS on one thread, the caller's setting back afterwards."""
from threadpoolctl import threadpool_info, threadpool_limits

from runtime.threads import one_blas_thread


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_inside_and_the_callers_setting_after():
    import numpy  # noqa: F401  (its OpenBLAS)
    import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS)
    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas_threads() and set(_blas_threads()) == {2}
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}
