"""runtime.spectrum: atoms, PCA errors, per-atom matrices and the order parameters of SPEC section 3."""
import numpy as np
import pytest

from runtime.spectrum import (Spectrum, atom_matrices, order_parameters, projections,
                              random_init_matrices)


def _orthonormal(D, seed=0):
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, D)))
    return U


def _direct(W, V, rho, U):
    """SPEC section 3 from the weights: Q = W Om W^T/D, R = V Om W^T/D^3/2, T = V Om V^T/D^2, T0 = V V^T/D."""
    D = rho.size
    Om = (U * rho) @ U.T
    return W @ Om @ W.T / D, V @ Om @ W.T / D ** 1.5, V @ Om @ V.T / D ** 2, V @ V.T / D


# -- grouping ---------------------------------------------------------------------------------

def test_distinct_eigenvalues_give_one_atom_each():
    ev = np.random.default_rng(1).uniform(0.1, 5, 30)
    sp, atom_of = Spectrum.from_eigvals(ev)
    assert sp.J == 30 and np.all(sp.mult == 1) and sp.D == 30
    assert np.array_equal(sp.rho[atom_of], ev)
    assert np.all(np.diff(sp.rho) < 0)                   # decreasing


def test_repeated_eigenvalues_are_grouped():
    ev = [3.0, 1.0, 1.0, 2.0, 3.0, 1.0, 0.0, 0.0]
    sp, atom_of = Spectrum.from_eigvals(ev)
    assert np.array_equal(sp.rho, [3.0, 2.0, 1.0, 0.0])
    assert np.array_equal(sp.mult, [2, 1, 3, 2])
    assert np.array_equal(sp.rho[atom_of], ev)
    # round-off of eigh does not split an atom
    sp2, _ = Spectrum.from_eigvals([1.0, 1.0 + 1e-15, 1.0 - 1e-15, 5.0])
    assert sp2.J == 2 and np.array_equal(sp2.mult, [1, 3])


def test_eigh_of_spiked_covariance_groups_into_m_plus_1_atoms():
    D = 60
    U = _orthonormal(D, 3)
    rho = np.ones(D)
    rho[:2] = [2 * D, D]
    ev, _ = np.linalg.eigh((U * rho) @ U.T)
    sp, _ = Spectrum.from_eigvals(ev)            # the default floor rtol * max(ev) absorbs round-off
    assert sp.J == 3 and np.array_equal(sp.mult, [1, 1, D - 2])


# -- PCA errors -------------------------------------------------------------------------------

def test_spiked_pca_errors_match_formula():
    D, s, bulk = 100, [3.0, 2.0, 1.0], 0.5
    sp = Spectrum.spiked(D, s, bulk)
    assert sp.J == 4 and np.array_equal(sp.rho, [300, 200, 100, 0.5]) and np.array_equal(sp.mult, [1, 1, 1, 97])
    total = D * sum(s) + (D - 3) * bulk
    assert sp.total_variance == pytest.approx(total)
    want = [(total - sum(D * x for x in s[:m])) / (2 * D) for m in range(4)]
    want.append((total - D * sum(s) - bulk) / (2 * D))
    assert np.allclose(sp.pca_errors(4), want, rtol=1e-14)
    assert sp.pca_error(3.5) == pytest.approx((total - D * sum(s) - 0.5 * bulk) / (2 * D))
    # the same spectrum as D explicit eigenvalues
    sp2, _ = Spectrum.from_eigvals(np.concatenate([np.multiply(s, D), np.full(D - 3, bulk)]))
    assert np.allclose(sp2.pca_errors(4), want, rtol=1e-14)
    assert sp.pca_error(D) == pytest.approx(0.0, abs=1e-14)


def test_spectrum_is_immutable_and_comparable():
    sp = Spectrum.spiked(10, [2.0])
    assert sp == Spectrum([20.0, 1.0], [1, 9], 10) and hash(sp) == hash(Spectrum([20.0, 1.0], [1, 9], 10))
    assert sp != Spectrum.spiked(10, [3.0])
    with pytest.raises(ValueError):
        sp.rho[0] = 1.0
    assert sp.rho_hat.tolist() == [2.0, 0.1]


def test_spiked_has_m_plus_1_atoms_at_any_D():
    for D in (10, 1000, 1e6):
        assert Spectrum.spiked(D, [2.0, 1.0]).J == 3


# -- order parameters from atoms ----------------------------------------------------------------

def _problem(D=40, K=3, seed=0):
    rng = np.random.default_rng(seed)
    ev = np.concatenate([[2.0 * D, 1.5 * D], np.full(D // 2, 1.0), np.full(D - 2 - D // 2, 0.25)])
    rng.shuffle(ev)
    return ev, _orthonormal(D, seed + 1), rng.standard_normal((K, D)), rng.standard_normal((K, D))


def test_order_parameters_from_atoms_match_spec_definitions():
    ev, U, W, V = _problem()
    sp, atom_of = Spectrum.from_eigvals(ev)
    assert sp.J == 4
    got = order_parameters(sp, *atom_matrices(sp, atom_of, W, V, U))
    for a, b in zip(got, _direct(W, V, ev, U)):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_lumping_directions_into_atoms_changes_nothing():
    ev, U, W, V = _problem(D=30, K=2, seed=5)
    D = ev.size
    single = Spectrum(ev, np.ones(D), D)
    lumped, atom_of = Spectrum.from_eigvals(ev)
    a = order_parameters(single, *atom_matrices(single, np.arange(D), W, V, U))
    b = order_parameters(lumped, *atom_matrices(lumped, atom_of, W, V, U))
    for x, y in zip(a, b):
        assert np.allclose(x, y, rtol=1e-12, atol=1e-14)


def test_per_direction_projections():
    ev, U, W, V = _problem(D=20, K=2, seed=2)
    om, up = projections(W, V, U)
    assert om.shape == up.shape == (2, 20)
    D = ev.size
    Q, R, T, T0 = _direct(W, V, ev, U)
    assert np.allclose((om * ev) @ om.T / D, Q)
    assert np.allclose((up * ev) @ om.T / D, R)
    assert np.allclose((up * ev) @ up.T / D, T)
    assert np.allclose(up @ up.T, T0)


def test_order_parameters_vectorise_over_leading_axes():
    sp = Spectrum.spiked(50, [2.0])
    rng = np.random.default_rng(0)
    q, r, t = (rng.standard_normal((5, 2, 3, 3)) for _ in range(3))
    Q, R, T, T0 = order_parameters(sp, q, r, t)
    assert Q.shape == (5, 3, 3)
    for i in range(5):
        Qi, Ri, Ti, T0i = order_parameters(sp, q[i], r[i], t[i])
        for a, b in ((Q[i], Qi), (R[i], Ri), (T[i], Ti), (T0[i], T0i)):
            assert np.allclose(a, b)


# -- continuous bulk --------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.7, 1.0])
def test_marchenko_pastur_quadrature_moments(ratio):
    sigma2, D = 1.7, 500.0
    sp = Spectrum.marchenko_pastur(D, ratio, strengths=[3.0], sigma2=sigma2, nodes=48)
    assert sp.J == 49 and sp.rho[0] == 3.0 * D
    x, w = sp.rho[1:], sp.mult[1:] / (D - 1)
    assert np.sum(w) == pytest.approx(1.0, abs=1e-12)
    assert abs(np.sum(w * x) - sigma2) < 1e-10
    assert abs(np.sum(w * x ** 2) - sigma2 ** 2 * (1 + ratio)) < 1e-10
    assert abs(np.sum(w * x ** 3) - sigma2 ** 3 * (1 + 3 * ratio + ratio ** 2)) < 1e-10
    a, b = sigma2 * (1 - np.sqrt(ratio)) ** 2, sigma2 * (1 + np.sqrt(ratio)) ** 2
    assert np.all(x >= a) and np.all(x <= b)


def test_from_density_normalises_and_integrates_sqrt_edges():
    ratio, D = 0.25, 1000
    a, b = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    sp = Spectrum.from_density(lambda x: np.sqrt((b - x) * (x - a)) / x, (a, b), D, nodes=64)
    w, x = sp.mult / D, sp.rho
    assert np.sum(w) == pytest.approx(1.0, abs=1e-13)
    assert abs(np.sum(w * x) - 1.0) < 1e-10
    assert abs(np.sum(w * x ** 2) - (1 + ratio)) < 1e-10
    # semicircle on [0, 4] (mean 2, variance 1) and the uniform density with spikes
    sc = Spectrum.from_density(lambda x: np.sqrt(np.maximum(4 - (x - 2) ** 2, 0)), (0, 4), D, nodes=32)
    w, x = sc.mult / D, sc.rho
    assert abs(np.sum(w * x) - 2) < 1e-12 and abs(np.sum(w * (x - 2) ** 2) - 1) < 1e-12
    un = Spectrum.from_density(lambda x: np.ones_like(x), (1, 3), D, nodes=32, strengths=[2.0, 1.0])
    w, x = un.mult[2:] / (D - 2), un.rho[2:]
    assert abs(np.sum(w * x) - 2) < 1e-12 and abs(np.sum(w * x ** 2) - 13 / 3) < 1e-12
    assert np.array_equal(un.rho[:2], [2 * D, D])


# -- random initial conditions ---------------------------------------------------------------------

def test_random_init_statistics_match_sampled_weights():
    D, K, sw, sv = 4000, 3, 0.7, 1.3
    sp = Spectrum.spiked(D, [2.0, 1.0], 1.0)
    atom_of = np.concatenate([[0, 1], np.full(D - 2, 2)])
    rng = np.random.default_rng(7)
    W, V = sw * rng.standard_normal((K, D)), sv * rng.standard_normal((K, D))
    q, r, t = atom_matrices(sp, atom_of, W, V, np.eye(D))
    q0, r0, t0 = random_init_matrices(sp, K, sw, sv, seed=3)
    m = D - 2
    # the bulk: law of large numbers, within 5 standard errors of the sample
    se_q = sw ** 2 * np.sqrt((1 + np.eye(K)) / m) * m
    se_t = sv ** 2 * np.sqrt((1 + np.eye(K)) / m) * m / D
    se_r = sw * sv * np.sqrt(m / D)
    assert np.all(np.abs(q[2] - q0[2]) < 5 * se_q)
    assert np.all(np.abs(t[2] - t0[2]) < 5 * se_t)
    assert np.all(np.abs(r[2] - r0[2]) < 5 * se_r)
    assert np.array_equal(r0[2], np.zeros((K, K)))
    # the spikes are sampled: rank one, and the mean over seeds is sigma^2 I
    assert np.linalg.matrix_rank(q0[0]) == 1
    n = 400
    samples = [random_init_matrices(sp, K, sw, sv, seed=s) for s in range(n)]
    qs = np.array([s[0][0] for s in samples])
    ts = np.array([s[2][1] for s in samples])
    assert np.all(np.abs(qs.mean(0) - sw ** 2 * np.eye(K)) < 5 * qs.std(0) / np.sqrt(n))
    assert np.all(np.abs(ts.mean(0) - sv ** 2 / D * np.eye(K)) < 5 * ts.std(0) / np.sqrt(n))
    # order parameters: the bulk parts agree within their fluctuations
    Q, R, T, T0 = order_parameters(sp, q, r, t)
    Qs, Rs, Ts, T0s = order_parameters(sp, q0, r0, t0)
    assert np.all(np.abs(T0 - T0s - (t[:2].sum(0) - t0[:2].sum(0))) < 5 * se_t)
    assert np.allclose(np.diag(T0s), sv ** 2, rtol=0.01)


# -- bad input -------------------------------------------------------------------------------------

def test_bad_input_raises():
    with pytest.raises(ValueError, match="negative eigenvalue"):
        Spectrum([1.0, -0.5], [1, 1], 2)
    with pytest.raises(ValueError, match="negative eigenvalue"):
        Spectrum.from_eigvals([1.0, 2.0, -0.5])
    with pytest.raises(ValueError, match="same length"):
        Spectrum([1.0, 2.0], [1.0], 3)
    with pytest.raises(ValueError, match="not positive"):
        Spectrum([1.0, 2.0], [1.0, 0.0], 3)
    with pytest.raises(ValueError, match="NaN"):
        Spectrum([1.0, np.nan], [1.0, 1.0], 3)
    with pytest.raises(ValueError, match="one-dimensional"):
        Spectrum(np.ones((2, 2)), np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="ratio"):
        Spectrum.marchenko_pastur(100, 1.5)
    with pytest.raises(ValueError, match="exceed"):
        Spectrum.spiked(2, [1.0, 2.0])
    with pytest.raises(ValueError, match="exceeds the total multiplicity"):
        Spectrum.spiked(10, [1.0]).pca_error(11)
    U = _orthonormal(6)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(6, 6\)"):
        projections(np.ones((3, 5)), np.ones((3, 5)), U)
    with pytest.raises(ValueError, match="V0 of shape"):
        projections(np.ones((3, 6)), np.ones((2, 6)), U)
    W = np.ones((2, 6))
    W[0, 0] = np.nan
    with pytest.raises(ValueError, match="W0 contains NaN"):
        projections(W, np.ones((2, 6)), U)
    with pytest.raises(ValueError, match="orthonormal"):
        projections(np.ones((2, 6)), np.ones((2, 6)), 2 * U)
    sp, atom_of = Spectrum.from_eigvals([2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="assigns"):
        atom_matrices(sp, np.zeros(6, dtype=int), np.ones((2, 6)), np.ones((2, 6)), U)
    with pytest.raises(ValueError, match="shape"):
        order_parameters(sp, np.ones((3, 2, 2)), np.ones((3, 2, 2)), np.ones((3, 2, 2)))
