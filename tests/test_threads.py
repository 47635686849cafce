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


def test_integrate_steps_its_solver_on_one_thread(monkeypatch):
    """integrate's solver steps inside one_blas_thread, whatever the caller's setting."""
    from scipy.integrate import RK45

    import generated
    from runtime import integrate
    from runtime import spectrum as spec
    seen = []

    class Recorded(RK45):
        def step(self):
            seen.append(set(_blas_threads()))
            return super().step()

    monkeypatch.setitem(integrate._METHODS, "RK45", Recorded)
    spectrum = spec.Spectrum.spiked(100, [3.0, 2.0])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    with threadpool_limits(limits=2, user_api="blas"):
        generated.load("erf").integrate(spectrum=spectrum, init=init, times=[0.0, 1.0], method="RK45", progress=False)
        assert set(_blas_threads()) == {2}
    assert seen and all(s == {1} for s in seen)
