"""runtime.elementwise.power (what the generated modules print for x**3, x**(3/2), ...) against
mpmath at 50 digits, its edges against numpy's **, and runtime.allocator's switch."""
import os
import subprocess
import sys

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.elementwise import power

EXPONENTS = [1.5, 2, 2.5, 3, 3.5, 4, 5, 7, 7.5]
#: x*x*...*x (n - 1 roundings) times sqrt(x): within this many ulp of the exact power
ULP = 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-100, 1e30), min_size=1, max_size=20), st.sampled_from(EXPONENTS))
def test_power_matches_mpmath(xs, p):
    x = np.array(xs)
    got = power(x, p)
    with mp.workdps(50):
        exact = np.array([float(mp.mpf(v) ** mp.mpf(p)) for v in xs])
    finite = np.isfinite(exact) & (exact > np.finfo(float).tiny)
    np.testing.assert_array_less(np.abs(got - exact)[finite], ULP * np.spacing(exact[finite]) + 1e-300)


@pytest.mark.parametrize("p", EXPONENTS)
def test_power_edges_as_numpy(p):
    """0, -0, inf, negative bases (integer p: signed; half-integer: nan, as **; -inf only for an
    integer p: pow takes (-inf)**1.5 as inf, the generated code's half-integer powers have bases >= 0)
    and scalars."""
    x = np.array([0.0, -0.0, np.inf, -2.0, 1.0] + ([-np.inf] if p == int(p) else []))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(power(x, p), x ** p)
    assert power(2.0, p) == pytest.approx(2.0 ** p, rel=1e-15)


def test_allocator_switch():
    """On glibc (Linux) importing runtime sets the thresholds; AE_DYNAMICS_MALLOC=default leaves them."""
    code = "import runtime.allocator as a; print(a.keep_freed_memory())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "AE_DYNAMICS_MALLOC": "default"}).stdout.strip()
    assert off == "False"
    assert on == ("True" if sys.platform.startswith("linux") else on)
