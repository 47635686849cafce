"""Input validation of the literature averages (SPEC section 6: bad input raises ValueError
with a message naming the problem, nothing is silently changed), and the shapes and dtypes of
what the averages and kernels return."""
import numpy as np
import pytest

from conftest import ACTIVATIONS, LITERATURE_DIM, all_literature, kernel_names, load

NAN, INF = float("nan"), float("inf")


def _corr(n, r):
    return np.full((n, n), r) + (1 - r) * np.eye(n)


def bad_inputs(n):
    """(label, C, message pattern) for an average of n x n covariances."""
    good = np.eye(n) + 0.1 * (np.ones((n, n)) - np.eye(n))
    asym = good.copy()
    asym[0, 1] += 0.1
    corr_gt_1 = good.copy()
    corr_gt_1[0, 1] = corr_gt_1[1, 0] = 2.0
    neg_var = good.copy()
    neg_var[0, 0] = -1.0
    wrong = n + 1
    cases = [
        ("not symmetric", asym, "symmetric"),
        ("|correlation| > 1", corr_gt_1, "positive semi-definite"),
        ("negative variance", neg_var, "negative variance"),
        ("wrong trailing shape (n+1, n+1)", np.eye(wrong), "shape"),
        ("wrong trailing shape (n, n+1)", np.ones((n, wrong)), "shape"),
        ("one-dimensional", np.ones(n * n), "shape"),
        ("scalar", 1.0, "shape"),
        ("NaN variance", _with(good, 0, 0, NAN), "NaN"),
        ("NaN covariance", _with(good, 0, 1, NAN), "NaN"),
        ("inf variance", _with(good, 0, 0, INF), "inf"),
        ("inf covariance", _with(good, 0, 1, INF), "inf"),
        ("string", "C", "numeric"),
        ("array of strings", np.full((n, n), "a"), "numeric"),
        ("None", None, "numeric|shape"),
        ("one bad covariance in a batch", np.stack([good, corr_gt_1, good]), "positive semi-definite"),
    ]
    if n >= 3:
        # every 2x2 minor is a valid covariance, the determinant is negative
        cases.append(("negative determinant, valid 2x2 minors", _corr(n, -0.6), "positive semi-definite"))
    if n == 4:
        # every 3x3 minor is valid (det 0.392), the 4x4 has the eigenvalue -0.2
        cases.append(("negative eigenvalue, valid 3x3 minors", _corr(4, -0.4), "positive semi-definite"))
    return cases


def _with(C, i, j, value):
    C = C.copy()
    C[i, j] = C[j, i] = value
    return C


CASES = [(a, avg, label, C, pattern) for a, avg in all_literature()
         for label, C, pattern in bad_inputs(LITERATURE_DIM[avg])]


@pytest.mark.parametrize("activation, average, label, C, pattern", CASES,
                         ids=[f"{a}-{avg}-{label}" for a, avg, label, _, _ in CASES])
def test_bad_covariance_raises_value_error(activation, average, label, C, pattern):
    """Each kind of bad input raises ValueError whose message names the problem."""
    with pytest.raises(ValueError, match=pattern):
        getattr(load(activation), average)(C)


def test_bad_input_cases_are_really_bad():
    """The 'valid minors' cases are PSD-violating only through the full matrix (so the test
    exercises the determinant / eigenvalue checks)."""
    C3 = _corr(3, -0.6)
    assert all(np.linalg.det(C3[np.ix_(s, s)]) > 0 for s in ([0, 1], [0, 2], [1, 2]))
    assert np.linalg.det(C3) < 0
    C4 = _corr(4, -0.4)
    assert all(np.linalg.det(np.delete(np.delete(C4, k, 0), k, 1)) > 0 for k in range(4))
    assert np.linalg.eigvalsh(C4)[0] < 0


@pytest.mark.parametrize("average", load("erf").LITERATURE)
def test_complex_covariance_is_rejected(average):
    """A complex (Hermitian) matrix is not a real covariance: ValueError, not a cast that
    drops the imaginary part (every module shares runtime.check, so erf stands for all)."""
    n = LITERATURE_DIM[average]
    C = np.eye(n, dtype=complex)
    C[0, 1], C[1, 0] = 0.5j, -0.5j
    with pytest.raises(ValueError):
        getattr(load("erf"), average)(C)


@pytest.mark.parametrize("activation, average", all_literature())
def test_rounding_level_defects_are_accepted(activation, average):
    """Asymmetry and negative determinants at the level of rounding are not errors: perfect
    correlation computed as sqrt(C11 C22), and a 1e-15 relative asymmetry."""
    n = LITERATURE_DIM[average]
    variances = np.linspace(0.3, 3.0, n)
    sd = np.sqrt(variances)
    C = np.outer(sd, sd)                     # rank one: every variable perfectly correlated
    C[0, 1] *= 1 + 1e-15
    value = getattr(load(activation), average)(C)
    assert np.isfinite(value)


# ----------------------------------------------------------------------------------------
# Shapes and dtypes


def _random_covariances(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.standard_normal(shape + (n, n))
    return F @ np.swapaxes(F, -1, -2) / n + 0.1 * np.eye(n)


@pytest.mark.parametrize("activation, average", all_literature())
def test_batch_shape_and_values(activation, average):
    """C of shape (5, 7, n, n) gives a float array of shape (5, 7) equal to the element-wise
    results."""
    n = LITERATURE_DIM[average]
    f = getattr(load(activation), average)
    C = _random_covariances((5, 7), n)
    out = f(C)
    assert isinstance(out, np.ndarray) and out.shape == (5, 7) and out.dtype == np.float64
    single = np.array([[float(f(C[i, j])) for j in range(7)] for i in range(5)])
    np.testing.assert_allclose(out, single, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("activation, average", all_literature())
def test_single_covariance_gives_a_float_scalar(activation, average):
    """A single (n, n) covariance (array or nested list, ints allowed) gives a 0-d float."""
    n = LITERATURE_DIM[average]
    f = getattr(load(activation), average)
    C = (2 * np.eye(n, dtype=int) + np.ones((n, n), dtype=int))
    for arg in (C, C.tolist(), C.astype(float)):
        out = f(arg)
        assert np.ndim(out) == 0
        assert np.asarray(out).dtype == np.float64
        assert float(out) == float(f(C.astype(float)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernels_broadcast(activation):
    """Kernels broadcast their arguments like numpy: (5, 1), (), (1, 7) -> (5, 7); (4,) -> (4,);
    constant kernels too; the values are the element-wise ones."""
    module = load(activation)
    c11 = np.linspace(0.5, 3.0, 5)[:, None]
    c22 = np.linspace(0.7, 9.0, 7)[None, :]
    c12 = 0.3
    v = np.array([0.01, 0.5, 2.0, 100.0])
    for name in kernel_names(module):
        f = getattr(module, name)
        if name.startswith("pair_"):
            out = f(c11, c12, c22)
            assert np.shape(out) == (5, 7), name
            expected = [[float(f(float(a), c12, float(b))) for b in c22[0]] for a in c11[:, 0]]
        else:
            out = f(v)
            assert np.shape(out) == (4,), name
            expected = [float(f(float(t))) for t in v]
        assert np.asarray(out).dtype == np.float64, name
        np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernels_return_new_float_arrays(activation):
    """Given integer arrays, kernels return float arrays, never one of their arguments."""
    module = load(activation)
    c11, c12, c22 = np.array([2, 3]), np.array([1, 0]), np.array([4, 5])
    v = np.array([1, 2])
    for name in kernel_names(module):
        args = (c11, c12, c22) if name.startswith("pair_") else (v,)
        out = getattr(module, name)(*args)
        assert np.asarray(out).dtype.kind == "f", f"{activation}.{name} returned dtype {np.asarray(out).dtype}"
        assert not any(out is a or np.shares_memory(out, a) for a in args), (
            f"{activation}.{name} returned its argument")
