"""Piecewise activations with kinks off 0 or pieces that are not polynomials (issue 16, item 4):
ELU, Piecewise((x, x > 0), (exp(x) - 1, True)), and hard tanh, Max(-1, Min(1, x)), through
derive.build (their kernels against Monte Carlo and mpmath: tests/test_activation_zoo.py).

* The integrated equations against SGD in the zoo's setting (D = 500, K = 2, spikes (3, 2) D,
  lr 0.5, t <= 3, the mean of simulate over 6 seeds, within the seed spread at t = 1, 2, 3): ELU
  by test_activation_zoo.assert_sgd_within_spread (integrate(..., fluctuations=True)); hard tanh,
  which has no finite-D equations (kinks off 0), by integrate() within the measured spread.
* Hard tanh written as a Piecewise with conditions at -1 and 1 derives the same closed forms as
  the Max/Min form, and ELU with a parameter alpha (g' jumps at 0 unless alpha = 1) derives in
  closed form, its kernels against Monte Carlo.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from scipy.special import ndtr

from conftest import MC_SIGMAS, gaussian_samples, matrix2, mc_mean
from derive import activations
from derive import gaussian as G
from derive.activations import x
from derive.kernels import derive_kernel, from_name
from runtime.elementwise import bvn
from runtime.simulate import simulate
from runtime.spectrum import spiked_problem
from test_activation_zoo import assert_sgd_within_spread, built

alpha = sp.Symbol("alpha", positive=True)


def test_elu_equations_match_sgd():
    """integrate(..., fluctuations=True) of the derived ELU module against SGD, within the spread over
    seeds (the finite-D terms over the smoothed g_eps: ELU's kink is at 0, where runtime/quadrature.py
    resolves it)."""
    module = built("zoo_elu")
    assert module.CLOSED_FORM and module.NUMERIC_KERNELS == (), module.NUMERIC_KERNELS
    assert module.SMOOTHED and not module.FINITE_MISSING, module.FINITE_MISSING
    assert_sgd_within_spread(module)


def test_hard_tanh_equations_match_sgd():
    """Hard tanh has no finite-D equations (its kinks at +-1 are off 0: derive.smoothing.resolved_kinks),
    so its D^0 equations, integrate() without fluctuations, against the mean of SGD over 6 seeds,
    within their measured spread at t = 1, 2, 3."""
    module = built("zoo_hard_tanh")
    assert module.CLOSED_FORM and module.NUMERIC_KERNELS == (), module.NUMERIC_KERNELS
    assert module.FINITE_MISSING and not hasattr(module, "SMOOTHED")
    eigvals, eigvecs, W0, V0 = spiked_problem(500, 2, [3.0, 2.0], seed=0)
    run = dict(lr=0.5, times=np.linspace(0.0, 3.0, 4), progress=False)
    theory = module.integrate(eigvals, eigvecs, W0, V0, **run)
    sim = simulate(module, eigvals, eigvecs, W0, V0, seeds=6, test_samples=0, **run)
    assert theory.status == 0 and sim.status == 0, (theory.message, sim.message)
    gap, spread = np.abs(theory.error - sim.mean())[1:], sim.std()[1:]
    print(f"{module.NAME}: SGD gap / spread at t = 1, 2, 3: {np.round(gap / spread, 2).tolist()} "
          f"(gap {np.round(gap, 4).tolist()}, spread {np.round(spread, 4).tolist()})")
    assert np.all(gap <= spread), gap / spread
    assert sim.mean()[0] - sim.mean()[-1] > 10 * spread.max()


@pytest.mark.parametrize("kernel", ["mean_0", "mean_11", "mean_3", "pair_0_0", "pair_2_0"])
def test_hard_tanh_as_piecewise_is_the_max_min_form(kernel):
    """Piecewise((-1, x < -1), (x, x < 1), (1, True)) normalises to the Max/Min form's steps, so its
    kernels are the same closed forms."""
    forms = [sp.Max(-1, sp.Min(1, x)), sp.Piecewise((-1, x < -1), (x, x < 1), (1, True))]
    g, h = (G.normalize(f) for f in forms)
    assert sp.expand(g - h) == 0
    closed = [derive_kernel(f, from_name(kernel)) for f in (g, h)]
    assert closed[0] is not None and sp.simplify(closed[0] - closed[1]) == 0


def test_elu_with_alpha_in_closed_form():
    """ELU with alpha = 1/2: g' jumps at 0 (g'' = delta(x)/2 + ...), its kernels in closed form
    (derive/shifted.py at zero means) against a seeded Monte Carlo estimate within MC_SIGMAS
    standard errors; E[g''] by Gaussian integration by parts, E[g''(x)] = E[x g'(x)] / v."""
    elu = activations.Activation("elu_alpha", sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)),
                                 {alpha: sp.Rational(1, 2)})
    g = G.normalize(elu.bound())
    assert G.normalize(sp.diff(g, x, 2)).has(sp.DiracDelta)
    d0, d1 = (sp.lambdify(x, G.normalize(sp.diff(g, x, k)), modules=[{"Heaviside": lambda t, h0=0.5: np.heaviside(t, 0.5)}, "numpy"])
              for k in (0, 1))
    for kernel, (c11, c12, c22), samples in [
            ("mean_0", (1.0,) * 3, lambda x1, x2: d0(x1)), ("mean_11", (2.5,) * 3, lambda x1, x2: d1(x1) ** 2),
            ("mean_2", (0.7,) * 3, lambda x1, x2: x1 * d1(x1) / 0.7),
            ("pair_0_0", (1.0, 0.6, 2.0), lambda x1, x2: d0(x1) * d0(x2)),
            ("pair_1_0", (3.0, -1.2, 0.8), lambda x1, x2: d1(x1) * d0(x2)),
            ("pair_1_1", (1.0, 0.9, 1.0), lambda x1, x2: d1(x1) * d1(x2))]:
        closed = derive_kernel(g, from_name(kernel))
        assert closed is not None, kernel
        args = (G.v,) if kernel.startswith("mean_") else (G.c11, G.c12, G.c22)
        f = sp.lambdify(args, closed, modules=[{"bvn": bvn, "ndtr": ndtr, "div": np.divide}, "numpy"])
        value = float(f(*(c11, c12, c22)[:len(args)]))
        X = gaussian_samples(matrix2(c11, c12, c22))
        mean, se = mc_mean(samples(X[:, 0], X[:, 1]))
        assert abs(value - mean) <= MC_SIGMAS * se, (kernel, value, mean, se)



def test_smoothing_homogeneity_is_derived():
    """derive.smoothing.homogeneity on the closed-form g_eps: the degree of positively homogeneous
    activations (ReLU 1, leaky ReLU 1, ReLU^2 2), None for ELU (exp(x) - 1 on one side)."""
    from derive import smoothing
    from derive.activations import x
    cases = [(sp.Max(0, x), 1), (sp.Max(x, x / 10), 1), (sp.Max(0, x) ** 2, 2),
             (sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)), None)]
    for g, k in cases:
        assert smoothing.homogeneity(smoothing.smoothed(g)) == k, g
