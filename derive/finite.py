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

and the remaining averages over the fields reduce to kernels as in derive.drift. Averages over
three or more units have no kernel; they are left as multi_* factors, evaluated numerically
(runtime.quadrature.expect_units, for K <= 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import sympy as sp

from derive.drift import Monomial, _average, families
from derive.rules import D, Rule, k, lam, nu

j = sp.Symbol("j", integer=True)            # the atom
k2 = sp.Symbol("k2", integer=True)          # the unit of the second factor
rho_hat, m_rho = sp.IndexedBase("rho_hat"), sp.IndexedBase("m_rho")   # rho_j/D and m_j rho_j
FIELD = {"w": lam, "v": nu}
_fresh = (sp.Symbol(f"s{n}", integer=True) for n in count())

#: einsum letters of the free indices of N_j[(f, k), (h, k2)]
FREE = {j: "j", k: "k", k2: "l"}


def S(f, h):
    """The block S_j[(f, .), (h, .)] of the per-atom matrix."""
    return sp.IndexedBase(f"S_{f}{h}")


@dataclass
class Noise:
    """N_j blocks: N[(f, h)] = monomials with free indices (j, k, k2)."""

    rule: Rule
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


def _second_copy(terms):
    """The same update for unit k2, with fresh summation indices."""
    out = []
    for basis, c, summed in terms:
        ren = {s: next(_fresh) for s in summed}
        ren[k] = k2
        basis = basis if basis == ("x",) else (basis[0], ren.get(basis[1], basis[1]))
        out.append((basis, c.xreplace(ren), tuple(ren[s] for s in summed)))
    return out


def _d(expr, f, b):
    return sp.diff(expr, FIELD[f][b])


def _wick(b1, b2, c, fams):
    """sum_{tau in j} E_x_tau[ (basis b1)(basis b2) c ], as an expression in S_j and the
    fields, with the new summation indices."""
    if b1 == ("x",) and b2 == ("x",):
        expr, new = m_rho[j] * c, []
        for f1 in fams:
            for f2 in fams:
                b, cc = next(_fresh), next(_fresh)
                expr += rho_hat[j] ** 2 * D * S(f1, f2)[j, b, cc] * _d(_d(c, f1, b), f2, cc)
                new += [b, cc]
        return expr, new
    if b1 == ("x",) or b2 == ("x",):
        (h, i), first = (b2, True) if b1 == ("x",) else (b1, False)
        expr, new = sp.S.Zero, []
        for f1 in fams:
            b = next(_fresh)
            block = S(f1, h)[j, b, i] if first else S(h, f1)[j, i, b]
            expr += rho_hat[j] * sp.sqrt(D) * block * _d(c, f1, b)
            new.append(b)
        return expr, new
    (h1, i1), (h2, i2) = b1, b2
    return S(h1, h2)[j, i1, i2] * c, []


def derive_noise(rule: Rule) -> Noise:
    """N_j = D sum_{tau in j} E[d theta_tau d theta_tau^T] per unit of time, exact at finite D."""
    fams = families(rule)
    noise = Noise(rule)
    proj = {f: _projected(rule, f) for f in fams}
    for f in fams:
        for h in fams:
            monomials = noise.N.setdefault((f, h), [])
            for b1, c1, s1 in proj[f]:
                for b2, c2, s2 in _second_copy(proj[h]):
                    expr, new = _wick(b1, b2, sp.expand(c1 * c2), fams)
                    for coeff, factors in _average(sp.expand(D * expr), set(s1) | set(s2) | set(new)):
                        monomials.append(Monomial(sp.powsimp(coeff), tuple(factors)))
    return noise
