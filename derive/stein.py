"""Stein's lemma on symbolic averages: reduce E[polynomial(x) * prod g^(a)(x_i)] to kernels.

For x ~ N(0, C): E[x_i F(x)] = sum_j C_ij E[d_j F(x)] (Stein). Applied until no bare coordinate
is left, an average of g-factors on one variable is a ``mean_`` kernel and on two variables a
``pair_`` kernel (`derive.kernels`). On three or more variables, factors that are Gaussians,
g^(a)(x) = A exp(-alpha x^2), are absorbed into the covariance:
E[exp(-x_S^T P x_S / 2) F(x_R)] = det(I + P C_SS)^(-1/2) E'[F(x_R)] with
C'_RR = C_RR - C_RS (I + P C_SS)^(-1) P C_SR. That gives I4 for erf and linear.
"""
from __future__ import annotations

from collections import defaultdict

import sympy as sp

from derive import gaussian as G
from derive.activations import x
from derive.kernels import Kernel

g = sp.Function("g")
X = sp.symbols("x1:7", real=True)


def cov(i, j):
    """The covariance symbol c_ij (1-based indices, c_ij = c_ji); diagonal entries are positive."""
    i, j = sorted((i, j))
    return sp.Symbol(f"c{i}{j}", positive=True) if i == j else sp.Symbol(f"c{i}{j}", real=True)


def cov_matrix(dim):
    return sp.Matrix(dim, dim, lambda i, j: cov(i + 1, j + 1))


def average(expr, dim, activation=None):
    """E[expr] over (x1..x_dim) ~ N(0, cov_matrix(dim)), in covariance symbols and kernel calls.

    `activation` (the expression of g in x) is needed only to absorb Gaussian factors when an
    average involves three or more variables."""
    C = cov_matrix(dim)
    return _average(sp.expand(expr), C, list(X[:dim]), activation)


def _average(expr, C, xs, activation):
    total = sp.S.Zero
    for term in sp.Add.make_args(expr):
        total += _average_term(term, C, xs, activation)
    return total


def _average_term(term, C, xs, activation):
    for i, xi in enumerate(xs):
        power = _bare_power(term, xi)
        if power:
            rest = term / xi
            return sum((C[i, j] * _average(sp.expand(sp.diff(rest, xj)), C, xs, activation)
                        for j, xj in enumerate(xs) if C[i, j] != 0), sp.S.Zero)
    coeff, orders = _g_factors(term, xs)
    used = sorted(orders)
    if not used:
        return coeff
    if len(used) == 1:
        (i,) = used
        return coeff * Kernel((tuple(orders[i]),)).symbol()(C[i, i])
    if len(used) == 2:
        i, j = used
        return coeff * Kernel((tuple(orders[i]), tuple(orders[j]))).symbol()(C[i, i], C[i, j], C[j, j])
    if activation is None:
        raise G.NoClosedForm(f"an average over {len(used)} variables")
    return coeff * _absorb(orders, C, activation)


def _bare_power(term, xi):
    for factor in sp.Mul.make_args(term):
        if factor == xi:
            return 1
        if factor.is_Pow and factor.base == xi:
            return int(factor.exp)
    return 0


def _g_factors(term, xs):
    """term = coeff * prod over variables of g-derivative factors -> (coeff, {index: [orders]})."""
    coeff, orders = sp.S.One, defaultdict(list)
    for factor in sp.Mul.make_args(term):
        base, times = (factor.base, int(factor.exp)) if factor.is_Pow else (factor, 1)
        if isinstance(base, sp.Derivative) and base.expr.func == g:
            var, order = base.expr.args[0], sum(n for _, n in base.variable_count)
        elif getattr(base, "func", None) == g:
            var, order = base.args[0], 0
        elif not base.free_symbols & set(xs):
            coeff *= factor
            continue
        else:
            raise G.NoClosedForm(f"factor {factor} is not a derivative of g")
        orders[xs.index(var)].extend([order] * times)
    return coeff, dict(orders)


def _gaussian_factor(activation, orders):
    """(A, alpha) with prod g^(a)(x) = A exp(-alpha x^2), or None."""
    f = sp.Mul(*(sp.diff(activation, x, a) for a in orders))
    try:
        terms = G._exp_polynomial_terms(G.normalize(f), x)
    except G.NoClosedForm:
        return None
    if len(terms) != 1 or terms[0][1] != 0 or terms[0][3] != 0:
        return None
    A, _, a2, _ = terms[0]
    alpha = -sp.sympify(a2)
    return (A, alpha) if alpha.is_nonnegative else None


def _absorb(orders, C, activation):
    gaussians = {i: _gaussian_factor(activation, o) for i, o in orders.items()}
    S = [i for i in sorted(orders) if gaussians[i] is not None]
    R = [i for i in sorted(orders) if gaussians[i] is None]
    if len(R) > 2 or not S:
        raise G.NoClosedForm("no Gaussian factors to absorb")
    P = sp.diag(*(2 * gaussians[i][1] for i in S))
    CSS, CRS = C.extract(S, S), C.extract(R, S)
    M = sp.eye(len(S)) + P * CSS
    Cp = (C.extract(R, R) - CRS * M.inv() * P * CRS.T).applyfunc(lambda e: sp.factor(sp.together(e)))
    scale = sp.Mul(*(gaussians[i][0] for i in S)) / sp.sqrt(sp.factor(M.det()))
    if not R:
        return scale
    inner = sp.Mul(*(_factor_symbol(orders[i], X[k]) for k, i in enumerate(R)))
    return scale * _average_term(inner, Cp, list(X[:len(R)]), activation)


def _factor_symbol(orders, var):
    return sp.Mul(*(sp.diff(g(var), var, a) for a in orders))


def gfun(order, var):
    """g^(order)(var) as an expression in the undefined function g."""
    return sp.diff(g(var), var, order)


x1, x2, x3, x4 = X[:4]

#: The literature's averages (SPEC section 4): name -> (number of variables, integrand).
LITERATURE = {
    "J2": (2, x1 * gfun(0, x2)),
    "I2": (2, gfun(0, x1) * gfun(0, x2)),
    "I21": (2, gfun(1, x1) * x1 * x2),
    "I22": (2, gfun(1, x1) * x2**2),
    "I3": (3, gfun(1, x1) * x2 * gfun(0, x3)),
    "I4": (4, gfun(1, x1) * gfun(1, x2) * gfun(0, x3) * gfun(0, x4)),
}
