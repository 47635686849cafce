"""Equations of motion from a learning rule (SPEC section 5), derived symbolically.

For an update of unit k written as a vector (`derive.rules`), project on an eigendirection
u_tau and take the expectation over x ~ N(0, Omega). The input enters linearly, through x_tau
and through the weights, so each direction evolves linearly given the order parameters:

    d theta_tau / dt = (rho_hat_tau A + B) theta_tau,    theta_tau = (omega_tau, upsilon_tau/sqrt(D))

with rho_hat = rho/D. The x_tau-terms give A by Stein's lemma on the single component x_tau,
Cov(x_tau, lambda_a) = rho_hat sqrt(D) omega_a and Cov(x_tau, nu_a) = rho_hat sqrt(D) upsilon_a/sqrt(D);
the weight terms give B. Every remaining average over the local fields (lambda, nu), jointly
Gaussian with covariance [[Q, R^T], [R, T]], is reduced by Stein's lemma on lambda and nu to
the activation's kernels (`derive.kernels`). Each block entry is a sum of einsum monomials in
K x K arrays; the limit D -> infinity keeps the D^0 terms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import sympy as sp

from derive import gaussian as G
from derive.kernels import Kernel, from_name
from derive.rules import D, X, Rule, V, W, act, dot, g, k, l, lam, nu, sum_over

a = sp.Symbol("a", integer=True)            # column index of the blocks
Q, R, T = sp.IndexedBase("Q"), sp.IndexedBase("R"), sp.IndexedBase("T")
FAMILIES = ("w", "v")
_dummies = (sp.Symbol(f"i{n}", integer=True) for n in count())


@dataclass(frozen=True)
class Monomial:
    """coeff * prod_f array_f[indices_f], summed over every index but k and a."""

    coeff: sp.Expr
    factors: tuple            # ((array name, (index symbols...)), ...)

    def einsum(self, output="ka", free=None):
        """(subscripts, operand names) for numpy.einsum with the given output indices;
        `free` maps the free index symbols to letters (default k -> 'k', a -> 'a')."""
        letters = dict(free or {k: "k", a: "a"})
        pool = iter(c for c in "bcdefghijlmnopqrstuvwxyz" if c not in letters.values())
        subs = []
        for _, idx in self.factors:
            for i in idx:
                if i not in letters:
                    letters[i] = next(pool)
            subs.append("".join(letters[i] for i in idx))
        return ",".join(subs) + "->" + output, [name for name, _ in self.factors]


@dataclass
class Drift:
    """Blocks A[f, h] and B[f, h] (f, h in 'w', 'v') as lists of Monomials."""

    rule: Rule
    finite: bool = False      # every D-order kept (exact at finite D), else the D^0 terms
    A: dict = field(default_factory=dict)
    B: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)   # (block, D-order) of terms that vanish

    def monomials(self):
        return [m for blocks in (self.A, self.B) for ms in blocks.values() for m in ms]

    def kernels(self):
        return sorted(from_name(n) for n in kernel_names(self.monomials()))


def kernel_names(monomials):
    """Names of the kernels (mean_*, pair_*) among the monomials' factors."""
    return {n for m in monomials for n, _ in m.factors if n.startswith(("mean_", "pair_"))}


def multi_names(monomials):
    """Names of the averages over three or more units (multi_*) among the monomials' factors."""
    return {n for m in monomials for n, _ in m.factors if n.startswith("multi_")}


def multi_orders(name):
    """Inverse of the multi_* naming: 'multi_21_0_0' -> ((2, 1), (0,), (0,)), one tuple per unit."""
    return tuple(tuple(int(c) for c in part) for part in name[len("multi_"):].split("_"))


def families(rule: Rule):
    """The weight families of theta: ('w', 'v'), or ('w',) when V is tied to W."""
    return ("w", "v") if rule.dv is not None else ("w",)


def _keep(coeff, finite, what):
    """The part of coeff kept: D^0 as D -> infinity, or everything at finite D; None if dropped.
    Returns (kept coefficient or None, D-order)."""
    lead, order = sp.powsimp(coeff).as_coeff_exponent(D)
    if finite:
        return sp.powsimp(coeff), order
    if order > 0:
        raise G.NoClosedForm(f"{what} grows like D^{order}")
    return (lead if order == 0 else None), order


def derive_error(rule: Rule, finite=False):
    """Population error eps = E|x - x_hat|^2/(2D) minus its constant tr(Omega)/(2D), as
    monomials with no free index (SPEC section 3); exact at finite D when `finite`."""
    x_hat = sum_over(l, (V if rule.dv is not None else W)[l] * act(l))
    pairs = [(c, s) for c, s in dot(x_hat, x_hat) + [(-2 * c, s) for c, s in dot(X, x_hat)]]
    out = []
    for c, summed in pairs:
        for coeff, factors in _average(sp.expand(c / (2 * D)), set(summed)):
            kept, _ = _keep(coeff, finite, f"rule {rule.name!r}: the error")
            if kept is not None:
                out.append(Monomial(kept, tuple(factors)))
    return out


def derive_drift(rule: Rule, finite=False) -> Drift:
    """E[d theta_tau]/dt = (rho_hat A + B) theta_tau: the D^0 terms, or every term at finite D.
    Tied weights (no O(1) limit, SPEC section 5) have finite-D equations only."""
    if rule.dv is None and not finite:
        raise G.NoClosedForm(f"rule {rule.name!r}: tied weights need the finite-D equations")
    drift = Drift(rule, finite=finite)
    for f in families(rule):
        update = rule.dw if f == "w" else rule.dv
        scale_f = 1 if f == "w" else 1 / sp.sqrt(D)
        for term in update.terms:
            c, summed = term.coeff, term.summed
            if term.basis == ("x",):
                for h, var in zip(families(drift.rule), (lam, nu)):
                    deriv = sp.diff(c, var[a])
                    _add(drift, drift.A, (f, h), D * sp.sqrt(D) * scale_f * deriv, summed)
            else:
                h, i = term.basis
                scale_h = 1 if h == "w" else sp.sqrt(D)
                coeff = c * (sp.KroneckerDelta(i, a) if i not in summed else 1)
                coeff = coeff.subs(i, a) if i in summed else coeff
                summed = tuple(s for s in summed if s != i)
                _add(drift, drift.B, (f, h), D * scale_f * scale_h * coeff, summed)
    return drift


def _add(drift, blocks, key, expr, summed):
    """Average expr over the local fields, keep the D^0 part, append its monomials."""
    monomials = blocks.setdefault(key, [])
    for coeff, factors in _average(sp.expand(expr), set(summed)):
        kept, order = _keep(coeff, drift.finite, f"rule {drift.rule.name!r}: block {key}")
        if kept is None:
            drift.dropped.append((key, order))
            continue
        monomials.append(Monomial(kept, tuple(factors)))


def _average(expr, summed):
    """E[expr] as [(scalar coeff, [(array, indices), ...])]."""
    out = []
    for term in sp.Add.make_args(expr):
        out += _average_monomial(term, set(summed))
    return out


def _random_linear_factor(term):
    for f in sp.Mul.make_args(term):
        base = f.base if f.is_Pow else f
        if isinstance(base, sp.Indexed) and base.base in (lam, nu):
            return base
    return None


def _average_monomial(term, summed):
    term = _eliminate_deltas(term, summed)
    if term == 0:
        return []
    field_ = _random_linear_factor(term)
    if field_ is not None:
        # Stein on the local fields: E[lambda_j H] = sum_b Q_jb E[d_lambda_b H] + R_bj E[d_nu_b H]
        j, b = field_.indices[0], next(_dummies)
        rest = sp.expand(term / field_)
        cov_lam, cov_nu = (Q[j, b], R[b, j]) if field_.base == lam else (R[j, b], T[j, b])
        new = cov_lam * sp.diff(rest, lam[b]) + cov_nu * sp.diff(rest, nu[b])
        return _average(sp.expand(new), summed | {b})
    return [_kernel_monomial(term)]


def _eliminate_deltas(term, summed):
    """Contract KroneckerDeltas that involve a summed index (substituting it away)."""
    while True:
        deltas = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.KroneckerDelta)]
        for d in deltas:
            i, j = d.args
            drop = i if i in summed else j if j in summed else None
            if drop is not None:
                keep = j if drop == i else i
                term = (term / d).subs(drop, keep)
                summed.discard(drop)
                break
        else:
            return term


def _kernel_monomial(term):
    """A product of g-factors, globals and deltas -> (coeff, [(array, indices)])."""
    coeff, factors, orders = sp.S.One, [], {}
    for f in sp.Mul.make_args(term):
        base, times = (f.base, int(f.exp)) if f.is_Pow and f.exp.is_Integer and f.exp > 0 else (f, 1)
        if isinstance(base, sp.KroneckerDelta):
            factors.append(("eye", base.args))
        elif isinstance(base, sp.Indexed):
            factors += [(str(base.base), base.indices)] * times
        elif isinstance(base, sp.Derivative) and base.expr.func == g:
            orders.setdefault(base.expr.args[0].indices[0], []).extend([base.derivative_count] * times)
        elif getattr(base, "func", None) == g:
            orders.setdefault(base.args[0].indices[0], []).extend([0] * times)
        elif base.has(lam) or base.has(nu):
            raise G.NoClosedForm(f"cannot average {f}")
        else:
            coeff *= f
    if len(orders) > 2:
        # over three or more units: evaluated numerically (runtime.quadrature.expect_units)
        units = sorted(orders.items(), key=lambda kv: (sorted(kv[1], reverse=True), str(kv[0])), reverse=True)
        name = "multi_" + "_".join("".join(map(str, sorted(o, reverse=True))) for _, o in units)
        factors.append((name, tuple(i for i, _ in units)))
    elif len(orders) == 1:
        ((i, o),) = orders.items()
        factors.append((Kernel((tuple(o),)).name, (i,)))
    elif len(orders) == 2:
        (i, oi), (j, oj) = sorted(orders.items(), key=lambda kv: sorted(kv[1], reverse=True), reverse=True)
        factors.append((Kernel((tuple(oi), tuple(oj))).name, (i, j)))
    return coeff, sorted(factors, key=str)


@dataclass
class BiasDrift:
    """The equations of motion with a trained encoder bias b (lambda_k = w_k.x/sqrt(D) + b_k).

    A and B are the blocks of `derive_drift` unchanged, read with shifted kernels (averages over
    lambda ~ N(b, Q)): a rule's inner products w_k.x/sqrt(D) are the centred fields lambda_k - b_k,
    and Stein's lemma on x_tau and on those centred fields is the same as without a bias, so the
    mean enters only through the kernels. `db` is db_k/dt as monomials with output index k."""

    drift: Drift
    db: list

    def monomials(self):
        return self.drift.monomials() + self.db

    def kernels(self):
        return sorted(from_name(n) for n in kernel_names(self.monomials()))


def derive_bias_drift(rule: Rule) -> BiasDrift:
    """db_k/dt = D E[db_k] (D steps per unit of time), and the drift of the weights."""
    if rule.db is None:
        raise G.NoClosedForm(f"rule {rule.name!r} trains no bias")
    db = []
    for c, summed in rule.db:
        for coeff, factors in _average(sp.expand(D * c), set(summed)):
            kept, _ = _keep(coeff, False, f"rule {rule.name!r}: the bias drift")
            if kept is not None:
                db.append(Monomial(kept, tuple(factors)))
    return BiasDrift(derive_drift(rule), db)
