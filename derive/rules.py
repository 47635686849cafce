"""Learning rules as data: each rule is its per-sample SGD update, written once in SymPy.

Weights and the input are vectors in R^D, built from the basis X (the input x), W[i] (w_i) and
V[i] (v_i) with scalar SymPy coefficients; `dot` turns inner products into the order
parameters of SPEC section 3, exactly as they are defined:

    w_i.x = sqrt(D) lambda_i      v_i.x = D nu_i       v_i.v_j = D T0_ij
    w_i.w_j = D WW_ij             w_i.v_j = D WV_ij

A rule gives, for unit k, the updates `dw` (and `dv`) as vectors. `derive.drift` takes their
expectation over x ~ N(0, Omega) and returns the equations of motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

D, eta = sp.symbols("D eta", positive=True)
k, l = sp.symbols("k l", integer=True)
lam, nu = sp.IndexedBase("lambda"), sp.IndexedBase("nu")
T0, WW, WV = sp.IndexedBase("T0"), sp.IndexedBase("WW"), sp.IndexedBase("WV")
TRIL = sp.IndexedBase("tril")   # tril[k, l] = 1 for l <= k, else 0
g = sp.Function("g")


def act(i, order=0):
    """g^(order)(lambda_i)."""
    return sp.diff(g(lam[i]), lam[i], order)


@dataclass(frozen=True)
class Term:
    """coeff * basis, summed over the index symbols in `summed`; basis is ('x',), ('w', i) or ('v', i)."""

    coeff: sp.Expr
    basis: tuple
    summed: tuple = ()


class Vec:
    """A vector of R^D as a finite sum of Terms."""

    def __init__(self, terms):
        self.terms = tuple(terms)

    def __add__(self, other):
        return Vec(self.terms + other.terms)

    def __sub__(self, other):
        return self + (-1) * other

    def __mul__(self, scalar):
        return Vec(Term(sp.sympify(scalar) * t.coeff, t.basis, t.summed) for t in self.terms)

    __rmul__ = __mul__

    def __truediv__(self, scalar):
        return self * (1 / sp.sympify(scalar))


X = Vec([Term(sp.S.One, ("x",))])


class _Family:
    def __init__(self, name):
        self.name = name

    def __getitem__(self, i):
        return Vec([Term(sp.S.One, (self.name, i))])


W, V = _Family("w"), _Family("v")


def sum_over(index, vec):
    """sum_{index=1..K} vec."""
    return Vec(Term(t.coeff, t.basis, t.summed + (index,)) for t in vec.terms)


def _inner(b1, b2):
    kinds = (b1[0], b2[0])
    if kinds == ("x", "x"):
        raise ValueError("|x|^2 appears in the rule: not supported")
    if "x" in kinds:
        other = b1 if b2[0] == "x" else b2
        return sp.sqrt(D) * lam[other[1]] if other[0] == "w" else D * nu[other[1]]
    (f1, i), (f2, j) = b1, b2
    if f1 == f2:
        return D * (WW if f1 == "w" else T0)[i, j]
    return D * (WV[i, j] if f1 == "w" else WV[j, i])


def dot(a: Vec, b: Vec):
    """a.b as a list of (scalar, summed indices) pairs, a sum over both expansions."""
    out = []
    for ta in a.terms:
        for tb in b.terms:
            fresh = {i: sp.Symbol(f"{i}_", integer=True) for i in tb.summed if i in ta.summed}
            basis_b = tuple(fresh.get(i, i) for i in tb.basis)
            out.append((ta.coeff * tb.coeff.xreplace(fresh) * _inner(ta.basis, basis_b),
                        ta.summed + tuple(fresh.get(i, i) for i in tb.summed)))
    return out


def scalar_times(pairs, vec: Vec) -> Vec:
    """(sum of scalars from `dot`) * vec."""
    return Vec(Term(c * t.coeff, t.basis, t.summed + s) for c, s in pairs for t in vec.terms)


@dataclass(frozen=True)
class Rule:
    """Per-sample updates of unit k: dw (and dv, None when V is tied to W). `db`: the update of
    the encoder bias b_k as a scalar, a list of (coeff, summed indices) pairs as `dot` returns
    them, or None for a rule that trains no bias; it is used only when a bias is given (b0)."""

    name: str
    dw: Vec
    dv: Vec | None
    description: str
    db: tuple | None = None


def _vanilla(truncated=False):
    mask = TRIL[k, l] if truncated else 1
    e_k = X - sum_over(l, V[l] * (mask * act(l)))          # e (or e_k = x - sum_{l<=k} v_l g_l)
    dw = scalar_times(dot(V[k], e_k), X) * (eta / D**2 * act(k, 1) / sp.sqrt(D))
    dv = e_k * (eta / D * act(k))
    return dw, dv


def _tied():
    """w_k += (eta/D)[g(lambda_k) e + (w_k.e) g'(lambda_k) x/sqrt(D)], V = W (SPEC section 1, tied)."""
    e = X - sum_over(l, W[l] * act(l))
    dw = (e * act(k) + scalar_times(dot(W[k], e), X) * (act(k, 1) / sp.sqrt(D))) * (eta / D)
    return dw, None


def _vanilla_bias():
    """b_k += (eta/D^2)(v_k.e) g'(lambda_k) (SPEC section 1, vanilla + bias)."""
    e = X - sum_over(l, V[l] * act(l))
    return tuple((c * eta / D**2 * act(k, 1), s) for c, s in dot(V[k], e))


RULES = {
    "vanilla": Rule("vanilla", *_vanilla(),
                    "w_k += (eta/D^2)(v_k.e) g'(lambda_k) x/sqrt(D);  v_k += (eta/D) g(lambda_k) e",
                    db=_vanilla_bias()),
    "truncated": Rule("truncated", *_vanilla(truncated=True),
                      "as vanilla with e_k = x - sum_{l<=k} v_l g(lambda_l) for unit k"),
    "tied": Rule("tied", *_tied(),
                 "V = W; w_k += (eta/D)[g(lambda_k) e + (w_k.e) g'(lambda_k) x/sqrt(D)]"),
}


def get(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}") from None
