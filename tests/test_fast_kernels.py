"""runtime.fast_kernels (Mehler's series over tabulated Hermite coefficients) against mpmath at 30
digits (tests/reference.py) and against runtime.quadrature, for tanh and sigmoid (and softplus,
its derivatives written out here).

Stated bound (runtime/fast_kernels.py): |error| <= 1e-9 |value| + 1e-10 sqrt(E[f1^2] E[f2^2]) for
variances in [1e-2, 1e2] and every correlation (the fast path where its per-point truncation
bound holds, up to |rho| = 0.9999, a tabulated or one-dimensional rule at rho = +-1, the corner
cells beyond the series' reach with 1 - |rho| < 2^-4, expect2 elsewhere).
"""
import math
import subprocess
import sys

import mpmath as mp
import numpy as np
import pytest

import reference as R
from conftest import ROOT, load
from generated import rules
from runtime import fast_kernels as fk
from runtime import quadrature

RTOL, SCALE_TOL = 1e-9, 1e-10
KERNELS = [("pair_0_0", 0, 0), ("pair_1_1", 1, 1), ("pair_2_0", 2, 0)]


def _scale_mp(name, a, b, v1, v2):
    return float(mp.sqrt(R.mean(name, (a, a), v1) * R.mean(name, (b, b), v2)))


def _points(seed, n):
    """(v1, rho, v2): log-uniform variances in [1e-2, 1e2], |rho| uniform up to 0.999, plus the
    domain's corners and rho = +-1 at equal variances."""
    rng = np.random.default_rng(seed)
    out = [(10 ** rng.uniform(-2, 2), rng.uniform(-0.999, 0.999), 10 ** rng.uniform(-2, 2)) for _ in range(n)]
    v = 10 ** rng.uniform(-2, 2)
    corner = [(100.0, 0.92, 100.0), (0.01, -0.9, 100.0)][seed % 2]
    return out + [corner, (v, 1.0, v), (v, -1.0, v)]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("kernel, a, b", KERNELS, ids=[k[0] for k in KERNELS])
def test_pair_kernels_match_mpmath(activation, kernel, a, b):
    """Seeded random covariances over the whole domain (and its corners, rho = +-1): the module's
    kernel (the fast path where it applies) within the stated bound of mpmath."""
    _check(activation, kernel, a, b, _points(1000 * ["tanh", "sigmoid"].index(activation) + 10 * a + b, 2))


#: high correlations with variances at both ends of [1e-2, 1e2] (tanh's corner -- both variances
#: >~ 30, |rho| > 0.995 -- is beyond the series' reach for some kernels: expect2's value is checked there)
HIGH = [(100.0, 0.95, 100.0), (0.01, -0.99, 100.0), (100.0, 0.999, 30.0), (0.3, -0.999, 0.01), (100.0, -0.999, 100.0)]


def _check(activation, kernel, a, b, points):
    """The module's kernel at each point (v1, rho, v2) within the stated bound of mpmath; returns
    how many of the points the fast path took."""
    module = load(activation)
    o1, o2 = (a,), (b,)
    fast = 0
    for v1, r, v2 in points:
        c12 = r * math.sqrt(v1 * v2)
        value = float(getattr(module, kernel)(np.array(v1), np.array(c12), np.array(v2)))
        ref = float(R.pair(activation, a, b, v1, c12, v2))
        tol = RTOL * abs(ref) + SCALE_TOL * _scale_mp(activation, a, b, v1, v2)
        assert abs(value - ref) <= tol, (f"{activation}.{kernel}({v1}, {c12}, {v2}) = {value!r}, mpmath {ref!r}: "
                                         f"error {abs(value - ref):.2e} > {tol:.2e}")
        t1, t2 = fk._t(np.array([v1])), fk._t(np.array([v2]))
        fast += int(fk._pair(module.DERIVATIVES, o1, o2).needed(t1, t2, np.array([r]))[0][0] > 0)
    return fast


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("kernel, a, b", KERNELS, ids=[k[0] for k in KERNELS])
def test_high_correlations_match_mpmath(activation, kernel, a, b):
    """|rho| = 0.95, 0.99, 0.999 at the ends of the variance range, and a seeded random covariance
    with |rho| in [0.99, 0.999]: within the stated bound of mpmath, and on the fast path but for
    tanh's corner."""
    rng = np.random.default_rng(7000 + 1000 * ["tanh", "sigmoid"].index(activation) + 10 * a + b)
    points = HIGH + [(10 ** rng.uniform(-2, 2), rng.choice([-1, 1]) * rng.uniform(0.99, 0.999), 10 ** rng.uniform(-2, 2))]
    fast = _check(activation, kernel, a, b, points)
    corner = sum(activation == "tanh" and min(v1, v2) >= 30 and abs(r) > 0.995 for v1, r, v2 in points)
    assert fast >= len(points) - corner, (fast, corner)


def _corner_points(seed):
    """(v1, rho, v2) at tanh's corner: |rho| = 0.999 with variances in [60, 100], +-0.9999 and
    1 - 10^U(-9, -5) with variances in [10, 100], 1 - 10^U(-9, -5) over the whole domain (every
    kernel's corner: beyond the last edge, 0.9999), and rho = +-1 exactly at unequal variances."""
    rng = np.random.default_rng(seed)
    v = lambda lo, n=2: 10 ** rng.uniform(math.log10(lo), 2, n)          # noqa: E731
    sign = lambda: rng.choice([-1.0, 1.0])                               # noqa: E731
    near = lambda: 1 - 10 ** rng.uniform(-9, -5)                         # noqa: E731
    points = [(v(60), sign() * 0.999), (v(10), sign() * 0.9999), (v(10), sign() * near()),
              (v(1e-2), sign() * near()), (v(10), 1.0), (v(10), -1.0)]
    return [(float(a), r, float(b)) for (a, b), r in points]


CORNER = [("tanh", "pair_0_0", 0, 0), ("tanh", "pair_1_1", 1, 1), ("tanh", "pair_2_0", 2, 0),
          ("sigmoid", "pair_1_1", 1, 1)]


@pytest.mark.parametrize("activation, kernel, a, b", CORNER, ids=[f"{c[0]}-{c[1]}" for c in CORNER])
def test_corner_cells_match_mpmath(activation, kernel, a, b):
    """Points beyond the series' reach (fk._Pair.corner's cells: |rho| = 0.999 ... 1 - 1e-9 at
    large and small variances) and rho = +-1 exactly: within the stated bound of mpmath, and the
    points with |rho| > 0.9999 (rho = +-1 aside) on the cells."""
    points = _corner_points(9000 + 100 * ["tanh", "sigmoid"].index(activation) + 10 * a + b)
    _check(activation, kernel, a, b, points)
    module = load(activation)
    pair = fk._pair(module.DERIVATIVES, (a,), (b,))
    for v1, r, v2 in points:
        if 0.9999 < abs(r) < 1:
            c12 = np.array([r * math.sqrt(v1 * v2)])
            cell = fk._corner(pair, fk._t(np.array([v1])), fk._t(np.array([v2])), c12 / math.sqrt(v1 * v2),
                              np.array([True]), np.empty(1))
            assert cell[0], (v1, r, v2)


def test_corner_points_do_not_go_to_expect2(monkeypatch):
    """Once its cells are built, tanh's corner (|rho| 0.999 ... 1 - 1e-8, large variances, and
    beyond the last edge at small ones) is evaluated without expect2, alone, in a small batch and
    in a large one, with the same values up to rounding."""
    tanh = load("tanh")
    v1 = np.array([100.0, 30.0, 0.5, 50.0, 80.0])
    v2 = np.array([100.0, 80.0, 2.0, 20.0, 100.0])
    c12 = np.array([0.999, -0.9995, 0.99995, -(1 - 1e-8), 0.9999]) * np.sqrt(v1 * v2)
    first = tanh.pair_1_1(v1, c12, v2)
    kernel = fk._pair(tanh.DERIVATIVES, (1,), (1,))
    assert kernel.cells and all(C is not None for C in kernel.cells.values())

    def refuse(*args, **kwargs):
        raise AssertionError("expect2 called")
    monkeypatch.setattr(quadrature, "expect2", refuse)
    alone = np.array([tanh.pair_1_1(*x) for x in zip(v1, c12, v2)])
    large = tanh.pair_1_1(*(np.repeat(x, 100) for x in (v1, c12, v2)))
    assert np.array_equal(tanh.pair_1_1(v1, c12, v2), first)
    assert np.allclose(alone, first, rtol=1e-13, atol=0) and np.allclose(large[::100], first, rtol=1e-13, atol=0)


def _softplus():
    s = lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))               # noqa: E731  (sigmoid without overflow)
    return (lambda x: np.logaddexp(0.0, x), s, lambda x: s(x) * (1.0 - s(x)))


def test_softplus_at_high_correlations_matches_mpmath():
    """An activation that grows (softplus, derivatives written out): its tables are accepted and
    its pair_0_0 and pair_1_1 at |rho| = 0.99 and 0.999 are on the fast path and within the bound
    of mpmath (nested 12-node Gauss-Legendre in conditional coordinates, tests/reference.py)."""
    D = _softplus()
    f = [lambda y: mp.log(1 + mp.exp(y)), lambda y: 1 / (1 + mp.exp(-y))]
    for a, points in [(0, [(100.0, 0.999, 100.0), (0.01, -0.99, 1.0)]), (1, [(10.0, -0.999, 30.0)])]:
        for v1, r, v2 in points:
            c12 = r * math.sqrt(v1 * v2)
            kappa, s = R._conditional(*R._mp(v1, c12, v2))
            ref = float(R._outer(lambda y: f[a](y) * R.normal_average(f[a], kappa * y, s, rule=R.NESTED),
                                 mp.mpf(v1), kappa, s, "softplus", nested=True))
            scale = float(mp.sqrt(R.normal_average(lambda y: f[a](y) ** 2, 0, mp.sqrt(v1)) *
                                  R.normal_average(lambda y: f[a](y) ** 2, 0, mp.sqrt(v2))))
            kernel = fk._pair(D, (a,), (a,))
            assert kernel.needed(fk._t(np.array([v1])), fk._t(np.array([v2])), np.array([r]))[0][0] > 0, (a, v1, r, v2)
            value = float(fk.pair(D, (a,), (a,), v1, c12, v2))
            assert abs(value - ref) <= RTOL * abs(ref) + SCALE_TOL * scale, (a, v1, r, v2, value, ref)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_bin_bounds_hold_between_their_points(activation):
    """The truncation bound's block and tail energies are maxima over 9 points of each bin times
    SAFETY (2): on a grid 8x finer (65 points a bin) the block energies of every factor of the
    module's pair kernels stay below the bound, and above the rounding floor within 10 % of the
    9-point maxima (measured: 0.5 %)."""
    module = load(activation)
    orders = {tuple(int(c) for c in part) for n in module.NUMERIC_KERNELS if n.startswith("pair_")
              for part in n.split("_")[1:]}
    for o in sorted(orders):
        table = fk._table(module.DERIVATIVES, o, fk.N_MAX)
        assert table.ok, o
        basis = fk._basis(np.linspace(-1.0, 1.0, 64 * fk.N_BINS + 1)).T
        share = (basis @ table.coef) ** 2 / (basis @ table.norm2)[:, None]
        starts = [L for L in fk.LEVELS if L < table.n]
        blocks = np.sqrt(np.add.reduceat(share, np.array(starts), axis=1))
        fine = blocks[64 * np.arange(fk.N_BINS)[:, None] + np.arange(65)].max(axis=1)
        # (energies at the rounding floor, ~1e-15, scatter by 2x between points; 1e-13 of slack there
        # moves a truncation bound of 1e-11 by at most 23 blocks x 1e-13)
        assert np.all(fine <= table.energy + 1e-13), (o, (fine - table.energy).max())
        big = table.energy > 1e-10
        ratio = fine[big] * fk.SAFETY / table.energy[big]
        assert np.all(ratio <= 1.1), (o, ratio.max())


def _grid(limit):
    v = np.array([0.01, 0.1, 1.0, 10.0, 100.0])
    r = np.array([-limit, -0.75, -0.3, 0.0, 0.5, 0.85, limit])
    V1, R_, V2 = np.meshgrid(v, r, v, indexing="ij")
    return V1.ravel(), (R_ * np.sqrt(V1 * V2)).ravel(), V2.ravel()


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_fast_path_equals_expect2_on_a_grid(activation):
    """Every numerical pair kernel of the module: the Mehler series equals expect2 within the bound
    on a grid of variances (1e-2 ... 1e2) and correlations up to the kernel's fast limit."""
    module = load(activation)
    D = module.DERIVATIVES
    for name in (n for n in module.NUMERIC_KERNELS if n.startswith("pair_")):
        o1, o2 = (tuple(int(c) for c in part) for part in name.split("_")[1:])
        kernel = fk._pair(D, o1, o2)
        assert kernel.limit >= 0.995, (name, kernel.limit)
        c11, c12, c22 = _grid(kernel.limit)
        # and the grid's covered points at |rho| = 0.999 (beyond the uniform limit for tanh)
        V1, V2 = np.meshgrid([0.01, 1.0, 100.0], [0.01, 3.0, 100.0])
        extra = np.array([V1.ravel(), 0.999 * np.sqrt(V1 * V2).ravel(), V2.ravel()])
        extra = extra[:, kernel.needed(fk._t(extra[0]), fk._t(extra[2]), extra[1] / np.sqrt(extra[0] * extra[2]))[0] > 0]
        c11, c12, c22 = (np.concatenate([x, y, y]) for x, y in zip((c11, c12, c22), (extra[0], extra[1], extra[2])))
        c12[-extra.shape[1]:] *= -1
        fast = kernel.mehler(c11, c12, c22)
        slow = quadrature.expect2(D, o1, o2, c11, c12, c22)
        tol = RTOL * np.abs(slow) + SCALE_TOL * kernel.scale(c11, c22)
        bad = np.abs(fast - slow) > tol
        assert not bad.any(), (name, c11[bad], c12[bad], c22[bad], fast[bad] - slow[bad])
        # and the module's kernel (its small-batch path here) agrees
        assert np.all(np.abs(getattr(module, name)(c11, c12, c22) - slow) <= tol), name


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_means_and_degenerate_points_equal_quadrature(activation):
    """mean_* tables equal expect1 and rho = +-1 (equal or unequal variances) equals expect2, at
    1e-12; outside the domain both are the quadrature itself."""
    module = load(activation)
    D = module.DERIVATIVES
    v = np.concatenate([10 ** np.linspace(-2, 2, 17), [1e-3, 300.0]])
    for name in (n for n in module.NUMERIC_KERNELS if n.startswith("mean_")):
        orders = tuple(int(c) for c in name.split("_")[1])
        assert np.allclose(getattr(module, name)(v), quadrature.expect1(D, orders, v), rtol=0, atol=1e-12), name
    for sign in (1.0, -1.0):
        for c22 in (v, v[::-1]):                 # equal variances (tables), unequal (one-dimensional rule)
            c12 = sign * np.sqrt(v * c22)
            for o1, o2 in [((0,), (0,)), ((2,), (0,)), ((1,), (1,))]:
                fast = fk.pair(D, o1, o2, v, c12, c22)
                slow = quadrature.expect2(D, o1, o2, v, c12, c22)
                assert np.allclose(fast, slow, rtol=0, atol=1e-12), (o1, o2, sign)


def test_outside_the_domain_is_expect2_exactly():
    """Variances outside [1e-2, 1e2] (also with |rho| beyond fk.EDGES, where inside the domain
    the corner cells take over): the values are expect2's, bit for bit, in a batch mixed with fast
    points and alone; NaN stays NaN."""
    tanh = load("tanh")
    D = tanh.DERIVATIVES
    c11 = np.array([1e-3, 500.0, 1.0, 2.0, 5e-3, 1.0, np.nan])
    c22 = np.array([1.0, 2.0, 1e-4, 200.0, 0.7, 1.0, 1.0])
    rho = np.array([0.5, -0.3, 0.2, 0.99995, -0.99999, 0.4, 0.1])   # beyond the last edge, 0.9999
    c12 = rho * np.sqrt(c11 * c22)
    slow = quadrature.expect2(D, (0,), (0,), c11, c12, c22)
    for batch in (slice(None), slice(0, 5)):
        fast = fk.pair(D, (0,), (0,), c11[batch], c12[batch], c22[batch])
        out = [0, 1, 2, 3, 4, 6][: len(fast) - (1 if batch == slice(None) else 0)]
        assert np.array_equal(fast[out[:5]], slow[batch][out[:5]])
    assert np.isnan(fk.pair(D, (0,), (0,), c11, c12, c22)[-1])
    big = np.repeat(c11[:5], 80), np.repeat(c12[:5], 80), np.repeat(c22[:5], 80)      # the large-batch path
    assert np.array_equal(fk.pair(D, (0,), (0,), *big), quadrature.expect2(D, (0,), (0,), *big))


def test_shapes_and_determinism():
    tanh = load("tanh")
    C = np.array([[1.0, 0.3], [0.3, 2.0]])
    q = np.diagonal(C)
    a = tanh.pair_1_1(q[:, None], C, q[None, :])
    assert a.shape == (2, 2) and np.array_equal(a, tanh.pair_1_1(q[:, None], C, q[None, :]))
    assert np.isclose(a[0, 1], a[1, 0], rtol=0, atol=1e-15)
    assert np.ndim(tanh.pair_0_0(1.0, 0.2, 3.0)) == 0 and np.ndim(tanh.mean_1(2.0)) == 0
    rng = np.random.default_rng(3)                 # a large batch (grouped by terms and pieces): repeatable
    v1, v2 = 10 ** rng.uniform(-2, 2, 3000), 10 ** rng.uniform(-2, 2, 3000)
    c12 = rng.uniform(-0.999, 0.999, 3000) * np.sqrt(v1 * v2)
    assert np.array_equal(tanh.pair_1_1(v1, c12, v2), tanh.pair_1_1(v1.copy(), c12.copy(), v2.copy()))
    assert tanh.pair_2_0(np.ones((0,)), np.ones((0,)), np.ones((0,))).shape == (0,)


def test_import_builds_nothing_and_needs_no_sympy():
    """Importing a module with numerical kernels builds no table and does not import sympy; the
    first evaluation of every kernel builds its tables in well under a second."""
    code = ("import sys, time; sys.modules['sympy'] = None\n"
            "from generated import tanh\n"
            "from runtime import fast_kernels as fk\n"
            "assert not fk._PAIRS and not fk._TABLES and not fk._MEANS\n"
            "t = time.perf_counter()\n"
            "for n in tanh.NUMERIC_KERNELS:\n"
            "    f = getattr(tanh, n)\n"
            "    f(1.0) if n.startswith('mean') else f(1.0, 0.3, 2.0)\n"
            "print(time.perf_counter() - t)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) < 2.0, out.stdout


def test_values_do_not_change_when_the_tables_grow():
    """Deterministic: a batch's values are the same, bit for bit, before and after a point at
    large variances and high |rho| made the tables grow to 4096 terms (in a fresh
    process: the other tests grow them)."""
    code = ("import numpy as np\nfrom generated import tanh\nfrom runtime import fast_kernels as fk\n"
            "rng = np.random.default_rng(5)\n"
            "v1, v2 = 10 ** rng.uniform(-2, 1, 3000), 10 ** rng.uniform(-2, 1, 3000)\n"
            "c12 = rng.uniform(-0.95, 0.95, 3000) * np.sqrt(v1 * v2)\n"
            "a, s = tanh.pair_1_1(v1, c12, v2), tanh.pair_1_1(v1[:7], c12[:7], v2[:7])\n"
            "kernel = fk._pair(tanh.DERIVATIVES, (1,), (1,))\n"
            "assert kernel.size < fk.N_MAX, kernel.size\n"
            "tanh.pair_1_1(100.0, 99.9, 100.0)\n"
            "assert kernel.size == fk.N_MAX, kernel.size\n"
            "assert np.array_equal(a, tanh.pair_1_1(v1, c12, v2))\n"
            "assert np.array_equal(s, tanh.pair_1_1(v1[:7], c12[:7], v2[:7]))\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_small_batches_at_the_same_variances_share_only_what_they_should():
    """The kernels of one right-hand side share the points' bases and powers of rho (a small
    batch's cache keyed by its covariances): interleaving kernels and two correlations at the same
    variances (a K x K matrix with its diagonal at rho = 1, as the drift calls them) gives each call
    the values of the large-batch path."""
    tanh = load("tanh")
    q = np.array([1.3, 0.8, 40.0])
    matrices = [np.array([[1.3, c, 0.2], [c, 0.8, -1.1], [0.2, -1.1, 40.0]]) for c in (0.4, -0.9)]
    for name in ("pair_0_0", "pair_1_1", "pair_2_0", "pair_0_0"):
        f = getattr(tanh, name)
        for Q in matrices + matrices[::-1]:
            small = f(q[:, None], Q, q[None, :])
            args = (np.broadcast_to(a, (3, 3)).ravel() for a in (q[:, None], Q, q[None, :]))
            large = f(*(np.tile(a, fk._SMALL) for a in args))[:9].reshape(3, 3)
            np.testing.assert_allclose(small, large, rtol=1e-13, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("name", ["erf", "tanh", "sigmoid"])
def test_tabulated_units_match_the_quadrature(name):
    """The finite-D equations' averages on one unit and on a pair of units (every signature of
    the vanilla rule's noise at K = 2, both orientations) from the tables, against expect_units'
    double-exponential rule at random covariances of the fast domain: within 1e-9 of the value
    plus 1e-10 of the Cauchy-Schwarz scale; None outside the variance domain."""
    act = load(name)
    names = sorted({n for p in ("noise", "spike_noise") for n in rules.AVERAGES[f"{p}_vanilla"] if n.startswith("multi_")})
    orders = tuple(tuple((int(c),) for c in n.split("_")[1:]) for n in names)
    _, needed = quadrature._plan(2, orders, 0)
    rng = np.random.default_rng(3)
    v = 10 ** rng.uniform(-2, 2, (6, 2))
    r = rng.uniform(-0.95, 0.95, 6)
    Q = np.stack([[[a, c * np.sqrt(a * b)], [c * np.sqrt(a * b), b]] for (a, b), c in zip(v, r)])
    for units, signatures in needed.items():
        signatures = sorted(signatures)
        sub = Q[:, units][:, :, units]
        found = fk.tabulated_units(act.DERIVATIVES, signatures, sub)
        assert found is not None, (name, units)
        levels = quadrature._levels(Q, np.zeros((6, 2)), units, 1.0)
        at = quadrature._values_at(act.DERIVATIVES, [(range(6), x) for x, _ in levels])
        exact = quadrature._fold(levels, at, signatures)
        for sig in signatures:
            scale = np.prod([np.sqrt(quadrature.expect1(act.DERIVATIVES, o + o, Q[:, u, u])) for o, u in zip(sig, units)],
                            axis=0)
            np.testing.assert_array_less(np.abs(found[sig] - exact[sig]), 1e-9 * np.abs(exact[sig]) + 1e-10 * scale,
                                         err_msg=f"{name} {units} {sig}")
    outside = np.array([[[200.0, 1.0], [1.0, 2.0]]])
    assert fk.tabulated_units(act.DERIVATIVES, [((1,), (0,))], outside) is None
    with fk.untabulated():                       # (the D -> infinity run's three finite-D evaluations)
        assert fk.tabulated_units(act.DERIVATIVES, [((1,), (0,))], Q[:1]) is None
    assert fk.tabulated_units(act.DERIVATIVES, [((1,), (0,))], Q[:1]) is not None
    one = fk.tabulated_units(act.DERIVATIVES, [((1, 1),), ((0, 0),)], Q[:2, :1, :1])
    np.testing.assert_allclose(one[((1, 1),)], quadrature.expect1(act.DERIVATIVES, (1, 1), Q[:2, 0, 0]), rtol=1e-12)
