"""runtime.solver: BDF with the structured Jacobian (issue 13), against scipy's solvers on the same
right-hand side at tight tolerance, its Jacobian against finite differences, and its stiffness."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import generated
from conftest import slow_and_fast
from runtime import solver
from runtime import spectrum as spec

TIGHT = dict(rtol=1e-9, atol=1e-12, progress=False)


def distinct_problem(D, K, spikes, seed, scale=0.3):
    """Spikes s D over a bulk of distinct eigenvalues uniform in [0.2, 1.8], random eigenvectors."""
    rng = np.random.default_rng(seed)
    eigvals = np.concatenate([np.array(spikes) * D, np.sort(rng.uniform(0.2, 1.8, D - len(spikes)))[::-1]])
    eigvecs = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return eigvals, eigvecs, scale * rng.normal(size=(K, D)), scale * rng.normal(size=(K, D))


def spiked_bulk(D, K, spikes, seed, sigma=0.3):
    spectrum = spec.Spectrum.spiked(D, spikes)
    return dict(spectrum=spectrum, init=spec.random_init_matrices(spectrum, K, sigma_w=sigma, sigma_v=sigma, seed=seed))


CASES = {
    "distinct": ("erf", dict(zip(("eigvals", "eigvecs", "W0", "V0"), distinct_problem(24, 2, (3.0, 2.0), 1))), {}),
    "spikes and bulk": ("erf", spiked_bulk(200, 2, (3.0, 2.0), 2), {}),
    "truncated": ("erf", spiked_bulk(200, 2, (3.0, 2.0), 3), dict(rule="truncated")),
    "bias": ("relu", spiked_bulk(200, 2, (2.0, 1.0), 4), dict(b0=(0.3, -0.2))),
    "finite D": ("erf", spiked_bulk(200, 2, (2.0, 1.0), 5), dict(finite_size=True)),
    "finite D tied": ("erf", spiked_bulk(200, 2, (2.0, 1.0), 6), dict(rule="tied")),
    "finite D bias": ("linear", spiked_bulk(200, 2, (2.0, 1.0), 7), dict(b0=(0.3, -0.2), finite_size=True)),
    "fluctuations": ("erf", spiked_bulk(200, 2, (3.0, 2.0), 9), dict(fluctuations=True, check_spread=False)),
    "fluctuations bias": ("relu", spiked_bulk(200, 2, (2.0, 1.0), 10),
                          dict(b0=(0.3, -0.2), fluctuations=True, check_spread=False)),
}
FLUCTUATING = [case for case, (_, _, options) in CASES.items() if options.get("fluctuations")]


@pytest.mark.parametrize("case, method", [(case, "StructuredBDF") for case in CASES]
                         + [("spikes and bulk", "StructuredRadau"), ("bias", "StructuredRadau"),
                            ("fluctuations", "StructuredRadau")]
                         + [(case, "StructuredBDF, Woodbury") for case in ("distinct", "bias", "finite D")])
def test_agrees_with_scipy_at_tight_tolerance(case, method, monkeypatch):
    """These states (24-96 numbers) have their Newton matrices formed (solver.DENSE_MAX); 'Woodbury':
    solved by Woodbury as larger ones are."""
    if method.endswith("Woodbury"):
        monkeypatch.setattr(solver, "DENSE_MAX", 0)
        method = "StructuredBDF"
    name, problem, options = CASES[case]
    act = generated.load(name)
    # the finite-D right-hand sides cost 10-100x more (tied the most)
    times = np.array([0.0, 0.25, 0.75] if options.get("rule") == "tied" else [0.0, 0.5, 1.5, 3.0]
                     if options.get("finite_size") or options.get("fluctuations") else [0.0, 0.5, 2.0, 8.0])
    ours = act.integrate(**problem, **options, times=times, method=method, **TIGHT)
    ref = act.integrate(**problem, **options, times=times, method="DOP853", **TIGHT)
    assert ours.success and ref.success
    assert np.ptp(ref.error) > 0.05                  # the run goes somewhere
    # to 1e-6, relative where the order parameters are large (tied: Q grows like sqrt(D))
    np.testing.assert_allclose(ours.error, ref.error, rtol=1e-6, atol=1e-6)
    for x in "QRT" if options.get("rule") == "tied" else ("Q", "R", "T", "T0"):
        np.testing.assert_allclose(getattr(ours, x), getattr(ref, x), rtol=1e-6, atol=1e-6, err_msg=x)
    if "b0" in options:
        np.testing.assert_allclose(ours.b, ref.b, rtol=1e-6, atol=1e-6)
    if options.get("fluctuations"):                 # the predicted seed-to-seed spread, O(1/sqrt(D))
        assert np.all(ref.error_spread[1:] > 1e-4)
        np.testing.assert_allclose(ours.error_spread, ref.error_spread, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", FLUCTUATING)
def test_fluctuation_newton_solve_inverts_I_minus_cJ(case):
    """The mean-and-covariance Newton solve (an LU on <y>, Bartels-Stewart on C) against the dense
    (n + n^2)^2 matrix I - c blockdiag(J, I (x) J + J (x) I), for BDF's real and Radau's complex shift,
    and the Jacobian's covariance block against central differences of the right-hand side in C
    (C enters it only through J C + C J^T and, at O(C), the mean's 1/2 F'':C)."""
    name, problem, options = CASES[case]
    res = generated.load(name).integrate(**problem, **options, times=[0.0, 2.0], keep_atoms=True, progress=False)
    system, z = res.system, res.state[-1]
    n = system.n
    J = solver.FluctuationJacobian(system, 0.0, z)
    rng = np.random.default_rng(2)
    R = rng.normal(size=(n, n))
    r = np.concatenate([rng.normal(size=n), (R + R.T).ravel()])
    I = np.eye(n)
    dense = np.block([[J.J, np.zeros((n, n * n))], [np.zeros((n * n, n)), np.kron(J.J, I) + np.kron(I, J.J)]])
    for c in (0.7, 0.4 + 0.3j):
        x = solver._Lyapunov(1.0, c, J).solve(r)
        np.testing.assert_allclose((np.eye(n + n * n) - c * dense) @ x, r, rtol=0, atol=1e-10 * np.abs(r).max())
    # J against central differences of the right-hand side: along the mean, and along X = M C + C M^T
    # in C (C +- h X keeps C's rank to O(h^2), so the direction is one the run itself takes). J is the
    # D -> infinity Jacobian and the points' differences reach sqrt(lambda(C)) ~ 0.2
    # out, so they agree to what J leaves out (measured 2 % and 3.5 % for erf, 0.6 % and 0.2 % for ReLU
    # with a bias); a transposed J is 40-80 % off
    C, M = z[n:].reshape(n, n), rng.normal(size=(n, n))
    v, X = rng.normal(size=n) * np.abs(z[:n]).max(), M @ C + C @ M.T
    h = 1e-4
    for dz, block, predicted in ((np.concatenate([v, 0 * C.ravel()]), slice(None, n), J.J @ v),
                                 (np.concatenate([0 * v, X.ravel()]), slice(n, None), (J.J @ X + X @ J.J.T).ravel())):
        along = ((system(0.0, z + h * dz) - system(0.0, z - h * dz)) / (2 * h))[block]
        assert np.linalg.norm(along - predicted) <= 0.1 * np.linalg.norm(predicted)


@pytest.mark.parametrize("path", ["dense", "eigenbasis", "blocks"])
@pytest.mark.parametrize("case", ["distinct", "spikes and bulk", "truncated", "bias"])
def test_newton_solve_inverts_I_minus_cJ(case, path, monkeypatch):
    """(I - c J) x = r with J the finite-difference Jacobian of the right-hand side (directional,
    central): the structured Jacobian and the Newton solve together, the matrix formed and LU-factorised
    (these states are below solver.DENSE_MAX), or by Woodbury with the vector blocks inverted in their
    shared eigenbasis or one by one (solver.EIGENBASIS_CONDITION_MAX).
    (At finite D the matrices' N_j depend on S_j directly, a part J leaves out: see the module
    docstring.)"""
    if path != "dense":
        monkeypatch.setattr(solver, "DENSE_MAX", 0)
    if path == "blocks":
        monkeypatch.setattr(solver, "EIGENBASIS_CONDITION_MAX", 0.0)
    name, problem, options = CASES[case]
    res = generated.load(name).integrate(**problem, **options, times=[0.0, 3.0], keep_atoms=True, progress=False)
    system, y = res.system, res.state[-1]
    rng = np.random.default_rng(0)
    r = rng.normal(size=y.size) * (np.abs(y) + 1e-3)
    layout = solver._Layout(system)
    th, S, b = layout.pieces(r[None])
    r = np.concatenate([th.ravel(), (S + np.swapaxes(S, -1, -2)).ravel(), b.ravel()])   # symmetric, as BDF's iterates
    c = 0.7
    factors = solver._structured_factors(1.0, c, solver.StructuredJacobian(layout, y))
    kinds = {"dense": solver._Dense, "eigenbasis": solver._EigenWoodbury, "blocks": solver._Woodbury}
    assert type(factors) is kinds[path]
    x = factors.solve(r)
    eps = 1e-6 * np.linalg.norm(y) / np.linalg.norm(x)
    Jx = (system(0.0, y + eps * x) - system(0.0, y - eps * x)) / (2 * eps)
    np.testing.assert_allclose(x - c * Jx, r, rtol=0, atol=1e-6 * np.abs(r).max())


@pytest.mark.parametrize("eigenbasis", [True, False])
@pytest.mark.parametrize("case", ["spikes and bulk", "finite D bias"])
def test_newton_solve_inverts_the_dense_matrix_for_any_right_hand_side(case, eigenbasis, monkeypatch):
    """The Woodbury solve against the dense I - c (L + U W), both built from the layout's own apply
    (the right-hand side's S -> M S + (M S)^T) and dp, on a right-hand side with antisymmetric parts in
    its matrices (BDF's Newton iterates carry rounding-sized ones; a Newton matrix with M S + S M^T
    there amplified them and tripled the spiked model's late steps), real and complex c, to 1e-10."""
    monkeypatch.setattr(solver, "DENSE_MAX", 0)
    if not eigenbasis:
        monkeypatch.setattr(solver, "EIGENBASIS_CONDITION_MAX", 0.0)
    J, dense = _structured_and_dense(case)
    r = np.random.default_rng(3).normal(size=dense.shape[0])
    for c in (0.7, 3.0 + 2.0j):
        x = solver._structured_factors(1.0, c, J).solve(r)
        np.testing.assert_allclose(x - c * dense @ x, r, rtol=0, atol=1e-10 * np.abs(r).max())


def _structured_and_dense(case):
    """The structured Jacobian at the state of CASES[case] at t = 3, and the dense L + U W from the
    layout's own apply and dp."""
    name, problem, options = CASES[case]
    res = generated.load(name).integrate(**problem, **options, times=[0.0, 3.0], keep_atoms=True, progress=False)
    layout = solver._Layout(res.system)
    J = solver.StructuredJacobian(layout, res.state[-1])
    n = res.state.shape[1]
    unit = np.eye(n)
    th, S, _ = layout.pieces(unit)
    frozen = (np.repeat(J.A[None], n, axis=0), np.repeat(J.B[None], n, axis=0), 0.0, np.zeros((n, layout.n_bias)))
    L = layout.apply(frozen, th, S)                      # row k: L e_k (the biases' block is 0)
    return J, (L + layout.dp(J.weighted, J.S, unit) @ J.U).T


@pytest.mark.parametrize("case", ["distinct", "spikes and bulk", "finite D bias"])
def test_formed_jacobian_is_the_structured_one(case):
    """StructuredJacobian.dense (what _Dense factorises) equals the test's own L + U W, and its
    factorisation solves I - c J for BDF's real and Radau's complex shift, to 1e-10."""
    J, dense = _structured_and_dense(case)
    np.testing.assert_allclose(J.dense, dense, rtol=0, atol=1e-12 * np.abs(dense).max())
    r = np.random.default_rng(5).normal(size=dense.shape[0])
    for c in (0.7, 3.0 + 2.0j):
        factors = solver._structured_factors(2.0, 2.0 * c, J)
        assert isinstance(factors, solver._Dense)
        x = factors.solve(r)
        np.testing.assert_allclose(2.0 * (x - c * dense @ x), r, rtol=0, atol=1e-10 * np.abs(r).max())


@pytest.mark.parametrize("case", ["distinct", "bias"])
def test_newton_solve_next_to_a_singular_C(case, monkeypatch):
    """Where C = I - c B is (nearly) singular the blocks I - c (rho_tau A + B) need not be, and the shared
    eigenbasis erred by up to 9e-2 there (measured): at c = (1 + delta) / lambda for each real eigenvalue
    lambda of B, delta = 0 ... 1e-5, the solve matches the dense matrix's to 1e-9 relative (_structured_factors
    takes the blocks one by one while cond(C) cond(V) > EIGENBASIS_CONDITION_MAX)."""
    monkeypatch.setattr(solver, "DENSE_MAX", 0)
    J, dense = _structured_and_dense(case)
    n = dense.shape[0]
    r = np.random.default_rng(4).normal(size=n)
    eigenvalues = np.linalg.eigvals(J.B)
    real = eigenvalues.real[(np.abs(eigenvalues.imag) < 1e-12) & (np.abs(eigenvalues) > 1e-8)]
    assert real.size
    for lam in real:
        for delta in (0.0, 1e-14, 1e-10, 1e-7, 1e-5):
            c = (1 + delta) / lam
            x = solver._structured_factors(1.0, c, J).solve(r)
            expected = np.linalg.solve(np.eye(n) - c * dense, r)
            assert np.linalg.norm(x - expected) <= 1e-9 * np.linalg.norm(expected), (lam, delta)


@pytest.mark.parametrize("case", ["distinct", "spikes and bulk", "bias", "finite D bias"])
def test_both_solve_paths_agree(case, monkeypatch):
    """The Newton solve in the vector blocks' shared eigenbasis equals the one inverting each block
    and forming Pc^-1 U, to rounding (1e-10 of r), also with Radau's complex shift."""
    monkeypatch.setattr(solver, "DENSE_MAX", 0)
    name, problem, options = CASES[case]
    res = generated.load(name).integrate(**problem, **options, times=[0.0, 2.0], keep_atoms=True, progress=False)
    layout = solver._Layout(res.system)
    J = solver.StructuredJacobian(layout, res.state[-1])
    r = np.random.default_rng(1).normal(size=res.state.shape[1])
    for c in (0.7, 0.4 + 0.3j):
        x = {}
        for eigenbasis in (True, False):
            monkeypatch.setattr(solver, "EIGENBASIS_CONDITION_MAX", 1e6 if eigenbasis else 0.0)
            x[eigenbasis] = solver._structured_factors(1.0, c, J).solve(r)
        np.testing.assert_allclose(x[False], x[True], rtol=0, atol=1e-10 * np.abs(r).max())


def test_stiff_case_needs_100x_fewer_right_hand_sides_than_rk45():
    """erf, K = 1, D = 20, spike 4D over a bulk in [0.2, 1.8], weights 0.1 N(0, 1): once the decoder
    has grown (t >= 300) it relaxes fast next to the slow approach to the PCA error. From the state
    at t = 300, to t = 400: RK45 (on the same right-hand side) needs >= 100x the right-hand sides."""
    act = generated.load("erf")
    eigvals, eigvecs, W0, V0 = distinct_problem(20, 1, (4.0,), 0, scale=0.1)
    start = act.integrate(eigvals, eigvecs, W0, V0, times=[0.0, 300.0], keep_atoms=True, progress=False)
    system, y0 = start.system, start.state[-1]
    counts = {name: solve_ivp(system, (0.0, 100.0), y0, method=method, rtol=1e-6, atol=1e-9, vectorized=True).nfev
              for name, method in (("StructuredBDF", solver.StructuredBDF), ("RK45", "RK45"))}
    assert counts["StructuredBDF"] <= 60, counts
    assert counts["RK45"] >= 100 * counts["StructuredBDF"], counts


def test_auto_picks_structured_bdf_up_to_its_k_and_with_fluctuations(monkeypatch):
    from runtime import integrate
    used = []

    class Recorded(solver.StructuredBDF):
        def __init__(self, *args, **kwargs):
            used.append(True)
            super().__init__(*args, **kwargs)

    monkeypatch.setitem(integrate._METHODS, "StructuredBDF", Recorded)
    act = generated.load("erf")
    eigvals, eigvecs, W0, V0 = distinct_problem(130, 4, (3.0, 2.0), 8)       # 130 x 8 > 1000 numbers
    act.integrate(eigvals, eigvecs, W0, V0, times=[0.0, 1.0], progress=False)
    assert used
    used.clear()
    small = act.integrate(eigvals[:20], None, W0[:, :20], V0[:, :20], times=[0.0, 1.0], progress=False)
    assert used and small.method == "StructuredBDF"                          # 160 numbers, K = 4
    used.clear()
    rng = np.random.default_rng(0)
    wide = [0.3 * rng.standard_normal((9, 20)) for _ in range(2)]             # K = 9: BDF on 360 numbers
    assert act.integrate(eigvals[:20], None, *wide, times=[0.0, 1.0], progress=False).method == "BDF"
    assert not used
    for case in ("finite D", "fluctuations"):                                # any size
        name, problem, options = CASES[case]
        res = generated.load(name).integrate(**problem, **options, times=[0.0, 0.5], progress=False)
        assert used and res.method == "StructuredBDF"
        used.clear()


def test_fluctuations_stiff_case_needs_fewer_right_hand_sides_than_rk45():
    """linear, K = 2, D = 500, spikes (3, 2, 1.5) D over a bulk, t <= 50 (the bench's case): RK45 is
    held by stability on the mean-and-covariance system (3 566 right-hand sides measured), StructuredBDF
    takes 909 (measured); asserted: at most 1 200, and 3x fewer than RK45, the same error to 1e-6."""
    act = generated.load("linear")
    eigvals, eigvecs, W0, V0 = spec.spiked_problem(500, 2, (3.0, 2.0, 1.5), seed=2)
    runs = {m: act.integrate(eigvals, eigvecs, W0, V0, times=np.linspace(0, 50, 6), fluctuations=True,
                             check_spread=False, method=m, progress=False) for m in ("StructuredBDF", "RK45")}
    assert runs["StructuredBDF"].nfev <= 1200, runs["StructuredBDF"].nfev
    assert runs["RK45"].nfev >= 3 * runs["StructuredBDF"].nfev, (runs["RK45"].nfev, runs["StructuredBDF"].nfev)
    np.testing.assert_allclose(runs["StructuredBDF"].error, runs["RK45"].error, rtol=0, atol=1e-6)


def test_newton_matrices_refactorised_only_when_the_shift_moves(monkeypatch):
    """A Newton matrix I - cJ is reused while c stays within REUSE_SHIFT of a factorised one
    (CVODE's rule): about half the factorisations on a stiff run (erf, K = 1, D = 20, t <= 1000:
    69 -> 40), the same solution to the tolerance (BDF's global error is 10-30x its rtol; against
    StructuredBDF at rtol 1e-10, 2.4e-5 and 2.6e-5 measured with and without the reuse). The Jacobian
    is kept (no renewal after slow steps, REFRESH_ITERATIONS) and Newton's iteration not cut short by a
    carried rate (CARRY_RATE: its one-iteration steps leave more to later ones, whose failures renew the
    Jacobian and its factorisations, 19 -> 34 Jacobians here), so that only the reuse changes the count
    (with the renewal: 95 -> 68; with both: 95 -> 69)."""
    act = generated.load("erf")
    eigvals, eigvecs, W0, V0 = distinct_problem(20, 1, (4.0,), 0, scale=0.1)
    start = act.integrate(eigvals, eigvecs, W0, V0, times=[0.0], keep_atoms=True, progress=False)
    system, y0 = start.system, start.state[0]
    monkeypatch.setattr(solver, "REFRESH_ITERATIONS", 10**9)
    monkeypatch.setattr(solver, "CARRY_RATE", False)

    def run(shift, rtol=1e-6):
        monkeypatch.setattr(solver, "REUSE_SHIFT", shift)
        return solve_ivp(system, (0.0, 1000.0), y0, method=solver.StructuredBDF, rtol=rtol, atol=rtol * 1e-3,
                         vectorized=True, t_eval=[100.0, 300.0, 1000.0])
    reference, fresh, reused = run(0.0, 1e-10), run(0.0), run(0.3)
    assert reused.nlu < 0.7 * fresh.nlu, (reused.nlu, fresh.nlu)
    for sol in (fresh, reused):
        np.testing.assert_allclose(sol.y, reference.y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, K", [("linear", 2), ("erf", 3)])
def test_a_renewed_jacobian_saves_right_hand_sides(name, K, monkeypatch):
    """The Jacobian renewed after a step of more than REFRESH_ITERATIONS Newton iterations, against
    scipy's rule (renewed only when Newton fails), on the fluctuations' bench cases (D = 500, t <= 50,
    rtol 1e-6, atol 1e-9): measured 735 -> 544 (linear, K = 2) and 458 -> 333 (erf, K = 3) right-hand
    sides; asserted: 15 % fewer, and the same solution to within the tolerance's error (each within 1e-6 of the other).
    Newton's iteration is not cut short by a carried rate (CARRY_RATE), which saves right-hand sides of its
    own (with it: 324 -> 278 for erf)."""
    act = generated.load(name)
    monkeypatch.setattr(solver, "CARRY_RATE", False)
    eigvals, eigvecs, W0, V0 = spec.spiked_problem(500, K, (3.0, 2.0, 1.5), seed=K)
    runs = {}
    for refresh in (2, 10**9):
        monkeypatch.setattr(solver, "REFRESH_ITERATIONS", refresh)
        runs[refresh] = act.integrate(eigvals, eigvecs, W0, V0, times=np.linspace(0, 50, 11), fluctuations=True,
                                      check_spread=False, method="StructuredBDF", atol=1e-9, progress=False)
    assert runs[2].nfev <= 0.85 * runs[10**9].nfev, (runs[2].nfev, runs[10**9].nfev)
    np.testing.assert_allclose(runs[2].error, runs[10**9].error, rtol=0, atol=1e-6)


def test_carried_rate_saves_newton_iterations_and_keeps_the_solution(monkeypatch):
    """Newton's iteration stopped after one right-hand side where the rate carried from earlier steps
    allows (CARRY_RATE), against scipy's at least two, on the bench's finite-D case (erf K = 2 vanilla,
    D = 400, t <= 50, rtol 1e-6, atol 1e-9): measured 436 -> 292 right-hand sides; asserted 20 % fewer,
    and both within 3e-6 of a run at rtol 1e-10 (measured 7.5e-7 and 9.6e-7). The reference itself runs
    with the carried rate: one that fell at once to the 3e-9 a step measured accepted every first
    correction while the error test rejected every step, down to the smallest step (RATE_DECAY)."""
    act = generated.load("erf")
    spectrum = spec.Spectrum.spiked(400, [2.0, 1.0])
    init = spec.random_init_matrices(spectrum, 2, sigma_w=0.5, sigma_v=0.5, seed=0)
    times = np.linspace(0, 50, 11)

    def run(carry, rtol=1e-6):
        monkeypatch.setattr(solver, "CARRY_RATE", carry)
        return act.integrate(spectrum=spectrum, init=init, finite_size=True, times=times, method="StructuredBDF",
                             rtol=rtol, atol=1e-9 if rtol > 1e-9 else 1e-12, progress=False)
    reference, carried, scipys = run(True, 1e-10), run(True), run(False)
    assert reference.success
    assert carried.nfev <= 0.8 * scipys.nfev, (carried.nfev, scipys.nfev)
    for res in (carried, scipys):
        np.testing.assert_allclose(res.error, reference.error, rtol=0, atol=3e-6)


@pytest.mark.parametrize("case", FLUCTUATING)
def test_fluctuation_right_hand_side_is_smooth_across_the_psd_boundary(case):
    """A Newton iterate's covariance leaves the PSD cone along C's null directions; there the
    right-hand side must stay smooth (its second-order terms linear in C), or Newton converges slowly.
    Along X = -u u^T, u C's eigenvector of the smallest eigenvalue (~0: only the spikes have noise of their
    own), the one-sided differences on either side of C agree (they differ by X's whole effect when
    the points drop C's negative eigenvalues)."""
    name, problem, options = CASES[case]
    res = generated.load(name).integrate(**problem, **options, times=[0.0, 2.0], keep_atoms=True, progress=False)
    system, z = res.system, res.state[-1]
    n = system.n
    lam, vec = np.linalg.eigh(z[n:].reshape(n, n))
    assert abs(lam[0]) < 1e-6 * lam[-1]
    dz = np.concatenate([np.zeros(n), -np.outer(vec[:, 0], vec[:, 0]).ravel()]) * lam[-1]
    h = 1e-4
    f0 = system(0.0, z)
    ahead, behind = (system(0.0, z + h * dz) - f0) / h, (f0 - system(0.0, z - h * dz)) / h
    assert np.linalg.norm(ahead) > 1e-3 * np.linalg.norm(f0)
    assert np.linalg.norm(ahead - behind) <= 1e-3 * np.linalg.norm(ahead), (np.linalg.norm(ahead - behind), np.linalg.norm(ahead))


def test_block_bdf_agrees_with_radau_on_each_copy_and_beats_rk45_on_stiffness():
    """20 stiff copies (k = 1e4) from random starts, stacked: BlockBDF against scipy's Radau on each
    copy alone at rtol 1e-10, and against RK45 on the stack in right-hand sides."""
    flow, m = slow_and_fast(1e4), 20
    rng = np.random.default_rng(0)
    y0 = np.stack([rng.uniform(-1, 0.8, m), rng.uniform(-1, 1, m)], axis=1).ravel()
    times = np.array([0.01, 1.0, 2.0])
    ours = solve_ivp(flow, (0.0, 2.0), y0, method=solver.BlockBDF, blocks=m, rtol=1e-8, atol=1e-10, t_eval=times)
    assert ours.success
    for j in range(m):
        ref = solve_ivp(flow, (0.0, 2.0), y0[2 * j:2 * j + 2], method="Radau", rtol=1e-10, atol=1e-12, t_eval=times)
        np.testing.assert_allclose(ours.y[2 * j:2 * j + 2], ref.y, rtol=1e-6, atol=1e-8, err_msg=f"copy {j}")
    explicit = solve_ivp(flow, (0.0, 2.0), y0, method="RK45", rtol=1e-8, atol=1e-10)   # measured 43 286 vs 792
    assert explicit.nfev >= 30 * ours.nfev, (explicit.nfev, ours.nfev)
