"""The closed forms of SPEC section 4, digit for digit (relative error <= 1e-12).

Truth: the SPEC formulas (and Saad & Solla's I4 for erf), evaluated in mpmath at 30 digits from
the same double-precision inputs, so that the only error measured is the generated code's.
"""
import mpmath as mp
from hypothesis import example, given

from conftest import PROPERTY, assert_mc, cov2, covariance, gaussian_samples, load, matrix2, variances

RTOL = 1e-12
mp.mp.dps = 30

erf, relu, linear = load("erf"), load("relu"), load("linear")


def _mp(*values):
    return [mp.mpf(float(v)) for v in values]


def assert_digits(value, exact, what, atol=0):
    value, exact = float(value), mp.mpf(exact)
    err = abs(mp.mpf(value) - exact)
    rel = mp.nstr(err / abs(exact), 3) if exact else "-"
    assert err <= RTOL * abs(exact) + atol, f"{what}: {value!r} vs {mp.nstr(exact, 20)} (relative error {rel})"


# ----------------------------------------------------------------------------------------
# erf, g(x) = erf(x / sqrt 2)


@PROPERTY
@given(c=cov2())
def test_erf_I2(c):
    """erf: I2 = (2/pi) asin(C12 / sqrt((1+C11)(1+C22)))."""
    c11, c12, c22 = _mp(*c)
    exact = 2 / mp.pi * mp.asin(c12 / mp.sqrt((1 + c11) * (1 + c22)))
    assert_digits(erf.I2(matrix2(*c)), exact, f"erf I2 {c}")
    assert_digits(erf.pair_0_0(*c), exact, f"erf pair_0_0 {c}")


@PROPERTY
@given(c=cov2())
def test_erf_derivative_pair(c):
    """erf: E[g'(x1) g'(x2)] = (2/pi) / sqrt((1+C11)(1+C22) - C12^2)."""
    c11, c12, c22 = _mp(*c)
    exact = 2 / mp.pi / mp.sqrt((1 + c11) * (1 + c22) - c12**2)
    assert_digits(erf.pair_1_1(*c), exact, f"erf pair_1_1 {c}")


@PROPERTY
@given(v=variances)
def test_erf_mean_derivative(v):
    """erf: E[g'(x)] = sqrt(2/pi) / sqrt(1 + C11)."""
    (v_,) = _mp(v)
    assert_digits(erf.mean_1(v), mp.sqrt(2 / mp.pi) / mp.sqrt(1 + v_), f"erf mean_1({v})")


def saad_solla_I4(C):
    """Saad & Solla's closed form of E[g'(x1) g'(x2) g(x3) g(x4)] for erf, in mpmath."""
    c = [[mp.mpf(float(C[i][j])) for j in range(4)] for i in range(4)]
    c11, c12, c13, c14 = c[0]
    c22, c23, c24 = c[1][1:]
    c33, c34, c44 = c[2][2], c[2][3], c[3][3]
    A4 = (1 + c11) * (1 + c22) - c12**2
    A0 = A4 * c34 - c23 * c24 * (1 + c11) - c13 * c14 * (1 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    A1 = A4 * (1 + c33) - c23**2 * (1 + c11) - c13**2 * (1 + c22) + 2 * c12 * c13 * c23
    A2 = A4 * (1 + c44) - c24**2 * (1 + c11) - c14**2 * (1 + c22) + 2 * c12 * c14 * c24
    return 4 / (mp.pi**2 * mp.sqrt(A4)) * mp.asin(A0 / mp.sqrt(A1 * A2)), 2 / (mp.pi * mp.sqrt(A4))


@PROPERTY
@given(C=covariance(4))
def test_erf_I4_saad_solla(C):
    """erf: I4 = 4/(pi^2 sqrt(A4)) asin(A0 / sqrt(A1 A2)) (Saad & Solla); an I4 that is ~0
    next to its bound 2/(pi sqrt(A4)) is compared absolutely at 1e-14 of the bound."""
    exact, bound = saad_solla_I4(C)
    assert_digits(erf.I4(C), exact, f"erf I4 {C.tolist()}", atol=1e-14 * float(bound))


@PROPERTY
@given(C=covariance(4))
def test_erf_I4_monte_carlo(C):
    """erf: I4 = the sample mean of g'(x1) g'(x2) g(x3) g(x4) (5 SE)."""
    X = gaussian_samples(C)
    samples = erf.dg(X[:, 0]) * erf.dg(X[:, 1]) * erf.g(X[:, 2]) * erf.g(X[:, 3])
    assert_mc(erf.I4(C), samples, f"erf I4 {C.tolist()}")


# ----------------------------------------------------------------------------------------
# ReLU, g(x) = max(x, 0)

relu_cov = cov2()


@PROPERTY
@given(c=relu_cov)
@example(c=(0.01, -0.999 * 0.01, 0.01))
@example(c=(1.0, -0.999, 1.0))
@example(c=(100.0, -0.999, 0.01))
def test_relu_I2(c):
    """relu: I2 = (sqrt(C11 C22 - C12^2) + C12 (pi/2 + asin(C12/sqrt(C11 C22)))) / (2 pi)."""
    c11, c12, c22 = _mp(*c)
    exact = (mp.sqrt(c11 * c22 - c12**2) + c12 * (mp.pi / 2 + mp.asin(c12 / mp.sqrt(c11 * c22)))) / (2 * mp.pi)
    assert_digits(relu.I2(matrix2(*c)), exact, f"relu I2 {c}")


@PROPERTY
@given(v=variances)
def test_relu_second_moment(v):
    """relu: E[relu(x)^2] = C11/2 (mean_00, and I2 at C12 = C11 = C22)."""
    assert_digits(relu.mean_00(v), mp.mpf(v) / 2, f"relu mean_00({v})")
    assert_digits(relu.I2(matrix2(v, v, v)), mp.mpf(v) / 2, f"relu I2 at C11 = C12 = C22 = {v}")


@PROPERTY
@given(v1=variances, v2=variances)
def test_relu_I2_uncorrelated(v1, v2):
    """relu: at C12 = 0, I2 = sqrt(C11 C22) / (2 pi)."""
    a, b = _mp(v1, v2)
    assert_digits(relu.I2(matrix2(v1, 0.0, v2)), mp.sqrt(a * b) / (2 * mp.pi), f"relu I2 C12=0 {v1, v2}")


@PROPERTY
@given(c=relu_cov)
def test_relu_derivative_pair(c):
    """relu: E[g'(x1) g'(x2)] = 1/4 + asin(C12 / sqrt(C11 C22)) / (2 pi)."""
    c11, c12, c22 = _mp(*c)
    exact = mp.mpf(1) / 4 + mp.asin(c12 / mp.sqrt(c11 * c22)) / (2 * mp.pi)
    assert_digits(relu.pair_1_1(*c), exact, f"relu pair_1_1 {c}")


# ----------------------------------------------------------------------------------------
# linear, g(x) = x


@PROPERTY
@given(c=cov2())
def test_linear_two_point(c):
    """linear: I2 = J2 = C12."""
    C = matrix2(*c)
    assert_digits(linear.I2(C), mp.mpf(c[1]), f"linear I2 {c}", atol=1e-300)
    assert_digits(linear.J2(C), mp.mpf(c[1]), f"linear J2 {c}", atol=1e-300)


@PROPERTY
@given(C=covariance(3))
def test_linear_I3(C):
    """linear: I3 = C23."""
    assert_digits(linear.I3(C), mp.mpf(float(C[1, 2])), f"linear I3 {C.tolist()}", atol=1e-300)


@PROPERTY
@given(C=covariance(4))
def test_linear_I4(C):
    """linear: I4 = E[x3 x4] = C34."""
    assert_digits(linear.I4(C), mp.mpf(float(C[2, 3])), f"linear I4 {C.tolist()}", atol=1e-300)


def test_every_module_with_I4_is_covered():
    """I4 exists exactly for erf and linear (the modules tested above)."""
    from conftest import ACTIVATIONS
    assert sorted(a for a in ACTIVATIONS if "I4" in load(a).LITERATURE) == ["erf", "linear"]
    for a in ACTIVATIONS:
        assert hasattr(load(a), "I4") == ("I4" in load(a).LITERATURE)
