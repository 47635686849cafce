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
kappa = sp.Symbol("kappa", nonnegative=True)   # weight decay: a rule parameter, default 0
k, l = sp.symbols("k l", integer=True)
lam, nu = sp.IndexedBase("lambda"), sp.IndexedBase("nu")
T0, WW, WV = sp.IndexedBase("T0"), sp.IndexedBase("WW"), sp.IndexedBase("WV")
TRIL = sp.IndexedBase("tril")   # tril[k, l] = 1 for l <= k, else 0
UNIT = sp.IndexedBase("unit")   # unit[k] = 1 for a hidden unit, 0 for the output bias (below)
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


# The output bias c (x_hat = V^T g + c) enters the equations as one more unit, the first, whose g is
# the constant 1 and whose encoder weight is 0: c is its decoder vector, and every sum over units
# (sum_over) includes it. That is exact when the rule's updates at such a unit are c's update dc
# (dv there) and zero (dw, which then keeps w = 0): `output_bias_unit` checks both.


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
    params: tuple = ()        # ((SymPy symbol, default value), ...): the rule's parameters
    dc: Vec | None = None     # the update of a trained output bias c, x_hat = sum_l v_l g(lambda_l) + c

    def defaults(self):
        """{parameter name: default value}."""
        return {str(p): float(v) for p, v in self.params}


def decay(vec, i=k):
    """Weight decay of unit i's weight vector: -(eta kappa/D) vec per step (L2 penalty kappa |w|^2/2),
    not of the output bias (unit[i] = 0 there)."""
    return vec * (-eta * kappa / D * UNIT[i])


DECAY = ((kappa, 0),)


def _vanilla(truncated=False):
    mask = TRIL[k, l] if truncated else 1
    e_k = X - sum_over(l, V[l] * (mask * act(l)))          # e (or e_k = x - sum_{l<=k} v_l g_l)
    dw = scalar_times(dot(V[k], e_k), X) * (eta / D**2 * act(k, 1) / sp.sqrt(D)) + decay(W[k])
    dv = e_k * (eta / D * act(k)) + decay(V[k])
    return dw, dv


def _tied():
    """w_k += (eta/D)[g(lambda_k) e + (w_k.e) g'(lambda_k) x/sqrt(D)], V = W (SPEC section 1, tied)."""
    e = X - sum_over(l, W[l] * act(l))
    dw = (e * act(k) + scalar_times(dot(W[k], e), X) * (act(k, 1) / sp.sqrt(D))) * (eta / D) + decay(W[k])
    return dw, None


def _vanilla_bias():
    """b_k += (eta/D^2)(v_k.e) g'(lambda_k) (SPEC section 1, vanilla + bias)."""
    e = X - sum_over(l, V[l] * act(l))
    return tuple((c * eta / D**2 * act(k, 1), s) for c, s in dot(V[k], e))


_DECAY_TEXT = "; weight decay: w_k, v_k -= (eta kappa/D) w_k, v_k"
def _vanilla_output_bias():
    """c += (eta/D) e (SPEC section 5, the output bias)."""
    return (X - sum_over(l, V[l] * act(l))) * (eta / D)


def at_output_bias(expr):
    """expr at the output bias' unit k: g(lambda_k) = 1, its derivatives 0, w_k = 0, unit[k] = 0."""
    expr = expr.replace(lambda e: isinstance(e, sp.Derivative) and e.expr == g(lam[k]), lambda e: sp.S.Zero)
    return expr.subs({g(lam[k]): 1, UNIT[k]: 0})


def output_bias_unit(rule: Rule):
    """Whether the rule's output bias is exactly a unit with g = 1 and w = 0 (see above): its dv
    there is dc, and its dw there vanishes (or is along w_k, which is 0). ValueError if not."""
    def terms(vec):
        return [(sp.expand(at_output_bias(t.coeff)), t.basis, t.summed) for t in vec.terms]

    def nonzero(ts):
        return sorted((str(c), str(b), str(s)) for c, b, s in ts if c != 0 and b != ("w", k))
    if rule.dc is None:
        return False
    if nonzero(terms(rule.dw)):
        raise ValueError(f"rule {rule.name!r}: dw at a unit with g = 1, w = 0 is not zero, so the output bias "
                         "is not such a unit")
    difference = Vec([Term(*t) for t in terms(rule.dv)]) - rule.dc
    collected = {}
    for t in difference.terms:
        key = (t.basis, t.summed)
        collected[key] = sp.expand(collected.get(key, 0) + t.coeff)
    if any(c != 0 for c in collected.values()):
        raise ValueError(f"rule {rule.name!r}: dv at a unit with g = 1, w = 0 is not its dc")
    return True


RULES = {
    "vanilla": Rule("vanilla", *_vanilla(),
                    "w_k += (eta/D^2)(v_k.e) g'(lambda_k) x/sqrt(D);  v_k += (eta/D) g(lambda_k) e" + _DECAY_TEXT,
                    db=_vanilla_bias(), params=DECAY, dc=_vanilla_output_bias()),
    "truncated": Rule("truncated", *_vanilla(truncated=True),
                      "as vanilla with e_k = x - sum_{l<=k} v_l g(lambda_l) for unit k" + _DECAY_TEXT, params=DECAY),
    "tied": Rule("tied", *_tied(),
                 "V = W; w_k += (eta/D)[g(lambda_k) e + (w_k.e) g'(lambda_k) x/sqrt(D)]; weight decay: "
                 "w_k -= (eta kappa/D) w_k", params=DECAY),
}


BUILT_IN = tuple(RULES)
_ARRAYS = {lam, nu, T0, WW, WV, TRIL, UNIT}


def register_rule(name, dw, dv=None, *, description="", db=None, dc=None, params=None) -> Rule:
    """Add a learning rule from its per-sample updates of unit k, written as vectors (Vec) in the
    algebra above: dw (and dv; None ties V to W), the encoder bias' update db (as `dot` returns
    scalars) and the output bias' update dc, optional; params {symbol or name: default}, the
    rule's parameters (integrate's and simulate's rule_params). `derive.build(activation)` then
    derives its equations in memory, `make derive` writes them once the rule is in RULES above.
    ValueError names what is wrong: a name taken or not an identifier, an update that is not a
    Vec, a symbol that is neither an order parameter, a local field, g, an index nor a parameter,
    or equations the engine cannot derive (|x|^2 terms, updates that grow with D)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a rule's name must be a Python identifier, got {name!r}")
    if name in RULES:
        raise ValueError(f"rule {name!r} is already registered")
    for what, vec in (("dw", dw), ("dv", dv), ("dc", dc)):
        if vec is not None and not isinstance(vec, Vec):
            raise ValueError(f"{what} must be a vector of the rule algebra (derive.rules.Vec: sums of X, W[i], V[i] "
                             f"times scalars), got {type(vec).__name__}")
    if dw is None:
        raise ValueError("dw (the encoder's update) is required")
    symbols = {}
    for key, default in dict(params or {}).items():
        symbol = sp.Symbol(key) if isinstance(key, str) else key
        if not isinstance(symbol, sp.Symbol):
            raise ValueError(f"a rule parameter must be a SymPy symbol or a name, got {key!r}")
        symbols[symbol] = float(default)
    rule = Rule(name, dw, dv, description or name, db=None if db is None else tuple(db),
                params=tuple(symbols.items()), dc=dc)
    _check_symbols(rule)
    coefficients = [t.coeff for v in (dw, dv, dc) if v is not None for t in v.terms] + [c for c, _ in rule.db or ()]
    if any(sp.expand(c).diff(eta, 2) != 0 or sp.expand(c).subs(eta, 0) != 0 for c in coefficients):
        raise ValueError(f"rule {name!r}: every term of the update must be proportional to eta (the learning rate)")
    from derive import drift, finite
    from derive.gaussian import NoClosedForm
    try:
        drift.derive_drift(rule, finite=True)
        finite.derive_noise(rule)
        output_bias_unit(rule)
    except NoClosedForm as error:
        raise ValueError(f"rule {name!r}: {error}") from None
    RULES[name] = rule
    return rule


def _check_symbols(rule):
    """ValueError for a symbol in the updates that the engine does not know."""
    allowed = {D, eta, k, *(p for p, _ in rule.params)}
    vectors = [v for v in (rule.dw, rule.dv, rule.dc) if v is not None]
    scalars = [(t.coeff, t.summed, t.basis) for v in vectors for t in v.terms]
    scalars += [(c, s, ()) for c, s in rule.db or ()]
    for coeff, summed, basis in scalars:
        coeff = sp.sympify(coeff)
        known = allowed | set(summed) | {i for i in basis[1:]}
        for base in coeff.atoms(sp.Indexed):
            if base.base not in _ARRAYS:
                raise ValueError(f"rule {rule.name!r}: unknown array {base.base} (known: lambda, nu, T0, WW, WV, tril, unit)")
        indices = {i for base in coeff.atoms(sp.Indexed) for i in base.indices}
        for symbol in coeff.free_symbols - indices - {b.label for b in _ARRAYS} - known:
            if isinstance(symbol, sp.Indexed):
                continue
            raise ValueError(f"rule {rule.name!r}: unknown symbol {symbol} (not D, eta, an index or a parameter; "
                             f"declare parameters in params=)")
        for function in coeff.atoms(sp.core.function.AppliedUndef):
            if function.func != g:
                raise ValueError(f"rule {rule.name!r}: unknown function {function.func} (only g and its derivatives)")


def get(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}") from None
