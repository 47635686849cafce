"""Finite-D equations: the exact expected change of the per-atom matrices (SPEC section 5).

Per SGD step the update of theta_tau = (omega_tau, upsilon_tau/sqrt(D)) is linear in x_tau and
theta_tau, d theta_tau = x_tau c + P theta_tau, with c and P functions of the local fields. So

    E[d(theta theta^T)] = E[d theta] theta^T + theta E[d theta]^T + E[d theta d theta^T],

and, with D steps per unit of time and S_j = sum_{tau in j} theta_tau theta_tau^T,

    dS_j/dt = M_j S_j + S_j M_j^T + N_j,    M_j = rho_hat_j A + B   (derive.drift, finite=True),
    N_j = D sum_{tau in j} E[d theta_tau d theta_tau^T]      (the second-order, eta^2, terms).

N_j follows from Wick's theorem on x_tau, Cov(x_tau, field_b) = rho_hat_j sqrt(D) theta_b,tau for
the fields (lambda, nu) (Gaussian integration by parts, once or twice):

    sum_tau E[x_tau^2 F]              = m_j rho_j E[F] + rho_hat_j^2 D sum_bc S_j[b, c] E[d_b d_c F]
    sum_tau E[x_tau F] theta_c,tau    = rho_hat_j sqrt(D) sum_b S_j[b, c] E[d_b F]
    sum_tau E[F] theta_b,tau theta_c,tau = S_j[b, c] E[F]

and the remaining averages over the fields reduce to kernels as in derive.drift. Between two
spikes j, j2 (cross=True) the same steps give D E[d theta_j d theta_j2^T]: each S_j[b, c] becomes
theta_b,j theta_c,j2, with rho_hat of the spike whose x it came from, and m_j rho_j becomes
rho_j delta_(j j2); runtime.fluctuations drives the spikes' fluctuations with it. A trained
encoder bias (derive_bias_noise) has an update db_k that is a function of the fields alone, so
D E[db_k db_k2] is a field average, and D E[db_k d theta_j] needs Stein's lemma once on x_j.
With a bias every field average is over lambda ~ N(b, Q): the steps above are unchanged. Averages over
three or more units have no kernel; they are left as multi_* factors, evaluated numerically
(runtime.quadrature.expect_units, for K <= 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import sympy as sp

from derive.drift import Monomial, _average, families
from derive.rules import D, Rule, k, lam, nu

j = sp.Symbol("j", integer=True)            # the atom
j2 = sp.Symbol("j2", integer=True)          # the second spike (cross noise)
k2 = sp.Symbol("k2", integer=True)          # the unit of the second factor
rho_hat, m_rho = sp.IndexedBase("rho_hat"), sp.IndexedBase("m_rho")   # rho_j/D and m_j rho_j
rho_eye = sp.IndexedBase("rho_eye")         # rho_j delta_(j j2)
FIELD = {"w": lam, "v": nu}
_fresh = (sp.Symbol(f"s{n}", integer=True) for n in count())

#: einsum letters of the free indices of N_j[(f, k), (h, k2)] (and of j2 in the cross noise)
FREE = {j: "j", k: "k", k2: "l"}
FREE_CROSS = {j: "j", j2: "i", k: "k", k2: "l"}


def S(f, h):
    """The block S_j[(f, .), (h, .)] of the per-atom matrix."""
    return sp.IndexedBase(f"S_{f}{h}")


def theta(f):
    """The part theta_(f, .) of a spike's direction vector (omega, or upsilon/sqrt(D))."""
    return sp.IndexedBase(f"theta_{f}")


@dataclass
class Noise:
    """N_j blocks: N[(f, h)] = monomials with free indices (j, k, k2), or (j, j2, k, k2) if cross."""

    rule: Rule
    cross: bool = False       # between two spikes: free indices (j, j2, k, k2)
    N: dict = field(default_factory=dict)

    def monomials(self):
        return [m for ms in self.N.values() for m in ms]


def _projected(rule: Rule, f):
    """d theta_(f,k),tau as [(basis, coefficient, summed)]: basis ('x',) for x_tau or (h, i)
    for theta_(h,i),tau, coefficients in theta's units (upsilon/sqrt(D))."""
    update = rule.dw if f == "w" else rule.dv
    scale_f = 1 if f == "w" else 1 / sp.sqrt(D)
    out = []
    for term in update.terms:
        if term.basis == ("x",):
            out.append((("x",), term.coeff * scale_f, term.summed))
        else:
            h, i = term.basis
            out.append(((h, i), term.coeff * scale_f * (1 if h == "w" else sp.sqrt(D)), term.summed))
    return out


def _renamed(c, summed, unit):
    """A coefficient for unit `unit` (k renamed) with fresh summation indices: (c, summed, renaming)."""
    ren = {s: next(_fresh) for s in summed}
    ren[k] = unit
    return c.xreplace(ren), tuple(ren[s] for s in summed), ren


def _second_copy(terms):
    """The same update for unit k2, with fresh summation indices."""
    out = []
    for basis, c, summed in terms:
        c, summed, ren = _renamed(c, summed, k2)
        out.append((basis if basis == ("x",) else (basis[0], ren.get(basis[1], basis[1])), c, summed))
    return out


def _d(expr, f, b):
    return sp.diff(expr, FIELD[f][b])


def _factor(f1, b1, f2, b2, x1, x2, cross):
    """sum_{tau in j} (Cov(x_tau, field_(f1,b1)) or theta_(f1,b1),tau) (the same for f2, b2), the
    covariance where x1 (x2) says that factor came from x_tau; rho_hat sqrt(D) theta per covariance,
    the sqrt(D) left to the caller. For a pair of spikes (cross) the factors are theta_j and theta_j2."""
    if not cross:
        return rho_hat[j] ** (x1 + x2) * S(f1, f2)[j, b1, b2]
    return rho_hat[j] ** x1 * theta(f1)[j, b1] * rho_hat[j2] ** x2 * theta(f2)[j2, b2]


def _wick(b1, b2, c, fams, cross=False):
    """sum_{tau in j} E_x_tau[ (basis b1)(basis b2) c ] (or, cross, E[(basis b1 on spike j)(basis b2
    on spike j2) c]), as an expression in S_j (theta) and the fields, with the new summation indices."""
    if b1 == ("x",) and b2 == ("x",):
        expr, new = (rho_eye[j, j2] if cross else m_rho[j]) * c, []
        for f1 in fams:
            for f2 in fams:
                b, cc = next(_fresh), next(_fresh)
                expr += D * _factor(f1, b, f2, cc, 1, 1, cross) * _d(_d(c, f1, b), f2, cc)
                new += [b, cc]
        return expr, new
    if b1 == ("x",) or b2 == ("x",):
        expr, new = sp.S.Zero, []
        for f1 in fams:
            b = next(_fresh)
            pair = (f1, b, *b2, 1, 0) if b1 == ("x",) else (*b1, f1, b, 0, 1)
            expr += sp.sqrt(D) * _factor(*pair, cross) * _d(c, f1, b)
            new.append(b)
        return expr, new
    return _factor(*b1, *b2, 0, 0, cross) * c, []


def _per_unit_time(expr, summed):
    """D E[expr] (D steps per unit of time) as Monomials, averaged over the fields."""
    return [Monomial(sp.powsimp(coeff), tuple(factors)) for coeff, factors in _average(sp.expand(D * expr), summed)]


def _bias_and_spike(b2, c, fams):
    """E_x_j[ db (basis b2 on spike j) ] for db = c(fields) alone: Stein's lemma once on x_j when b2
    is x_j, else theta_b2,j times the field average; returns (expression, new summation indices)."""
    if b2 != ("x",):
        return theta(b2[0])[j, b2[1]] * c, []
    expr, new = sp.S.Zero, []
    for f in fams:
        b = next(_fresh)
        expr += sp.sqrt(D) * rho_hat[j] * theta(f)[j, b] * _d(c, f, b)
        new.append(b)
    return expr, new


@dataclass
class BiasNoise:
    """Second moments of a trained encoder bias per unit of time: bb = D E[db_k db_k2] (free
    indices k, k2) and, per block h of a spike's theta, btheta[h] = D E[db_k d theta_(h,k2),j]
    (free indices j, k, k2)."""

    rule: Rule
    bb: list = field(default_factory=list)
    btheta: dict = field(default_factory=dict)

    def monomials(self):
        return self.bb + [m for ms in self.btheta.values() for m in ms]


def _bias_copy(db, unit):
    """The bias update of `unit` as [(coefficient, summed)] with fresh summation indices."""
    return [_renamed(c, summed, unit)[:2] for c, summed in db]


def derive_bias_noise(rule: Rule) -> BiasNoise:
    """D E[db_k db_k2] and D E[db_k d theta_(h,k2),j] for a spike j (rule.db, SPEC section 1)."""
    fams = families(rule)
    noise = BiasNoise(rule)
    first = _bias_copy(rule.db, k)
    for c1, s1 in first:
        for c2, s2 in _bias_copy(rule.db, k2):
            noise.bb += _per_unit_time(c1 * c2, set(s1) | set(s2))
    for h in fams:
        monomials = noise.btheta.setdefault(h, [])
        for c1, s1 in first:
            for b2, c2, s2 in _second_copy(_projected(rule, h)):
                expr, new = _bias_and_spike(b2, sp.expand(c1 * c2), fams)
                monomials += _per_unit_time(expr, set(s1) | set(s2) | set(new))
    return noise


def derive_noise(rule: Rule, cross=False) -> Noise:
    """N_j = D sum_{tau in j} E[d theta_tau d theta_tau^T] per unit of time, exact at finite D.
    cross: N_jj2 = D E[d theta_j d theta_j2^T] between two spikes (atoms of multiplicity one, j2 = j
    included), in terms of their direction vectors theta_j, theta_j2; with m_j rho_j replaced by
    rho_eye[j, j2] = rho_j delta_(j j2)."""
    fams = families(rule)
    noise = Noise(rule, cross)
    proj = {f: _projected(rule, f) for f in fams}
    for f in fams:
        for h in fams:
            monomials = noise.N.setdefault((f, h), [])
            for b1, c1, s1 in proj[f]:
                for b2, c2, s2 in _second_copy(proj[h]):
                    expr, new = _wick(b1, b2, sp.expand(c1 * c2), fams, cross)
                    monomials += _per_unit_time(expr, set(s1) | set(s2) | set(new))
    return noise
