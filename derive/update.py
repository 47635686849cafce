"""A rule's per-sample update as numpy: what runtime.simulate runs for a registered rule.

`derive.rules` writes a rule as vectors with scalar SymPy coefficients in the local fields, the
order parameters and g; `Update` turns each term into one numpy.einsum over a batch of
independent runs (seeds), with the scalars (D, eta, the rule's parameters) evaluated once:

    dw_k = sum_terms sum_(summed indices) coeff(k, ...) * (x | w_i | v_i)

No derivation happens here: the coefficients are read literally, so simulating a rule checks
the equations derive.drift and derive.finite obtain from the same update.
"""
from __future__ import annotations

import sympy as sp

from derive import rules
from derive.rules import D, TRIL, UNIT, WV, WW, T0, eta, g, lam, nu

_ARRAYS = {lam: "lam", nu: "nu", T0: "T0", WW: "WW", WV: "WV", TRIL: "tril", UNIT: "unit"}
_PER_RUN = {"lam", "nu", "T0", "WW", "WV", "W", "V"} | {f"G{n}" for n in range(10)}


def _factors(term):
    """A product -> (scalar SymPy factor, [(array name, index symbols)])."""
    scalar, arrays = sp.S.One, []
    for f in sp.Mul.make_args(term):
        base, times = (f.base, int(f.exp)) if f.is_Pow and f.exp.is_Integer and f.exp > 0 else (f, 1)
        if isinstance(base, sp.Indexed) and base.base in _ARRAYS:
            arrays += [(_ARRAYS[base.base], base.indices)] * times
        elif isinstance(base, sp.Derivative) and base.expr.func == g:
            arrays += [(f"G{base.derivative_count}", base.expr.args[0].indices)] * times
        elif getattr(base, "func", None) == g:
            arrays += [("G0", base.args[0].indices)] * times
        elif isinstance(base, sp.KroneckerDelta):
            arrays += [("eye", base.args)] * times
        else:
            scalar *= f
    return scalar, arrays


class _Einsum:
    """One product: scalar * einsum(arrays..., basis) over the runs, keeping the output unit
    index `free` (k) when given and D when there is a basis vector (x, w_i or v_i)."""

    def __init__(self, scalar, arrays, basis=None, free=rules.k):
        letters = {} if free is None else {free: "k"}
        pool = iter("abcefghijlmnopqrtuvwxyz")
        subs = []
        for name, idx in list(arrays) + ([] if basis is None or basis[0] == "x" else [(basis[0].upper(), basis[1:])]):
            for i in idx:
                letters.setdefault(i, next(pool))
            subs.append(("s" if name in _PER_RUN else "") + "".join(letters[i] for i in idx))
        self.names = [name for name, _ in arrays]
        if basis is not None:
            subs[len(self.names):] = ["sd" if basis[0] == "x" else subs[-1] + "d"]
            self.names.append("x" if basis[0] == "x" else basis[0].upper())
        out = "s" + ("" if free is None else "k") + ("" if basis is None else "d")
        self.subscripts, self.scalar = ",".join(subs) + "->" + out, scalar

    def __call__(self, values, numpy):
        return self.scalar * numpy.einsum(self.subscripts, *(values[n] for n in self.names), optimize=True)


def _products(coeff, params):
    """A coefficient -> [(scalar value, arrays)] of its expanded products."""
    out = []
    for product in sp.Add.make_args(sp.expand(coeff)):
        scalar, arrays = _factors(product)
        out.append((float(scalar.subs(params)), arrays))
    return out


def _compile_vec(vec, params, free=rules.k):
    """A Vec -> [_Einsum] summing to (runs, K, D) (no free index: (runs, D))."""
    return [_Einsum(value, arrays, term.basis, free) for term in vec.terms
            for value, arrays in _products(term.coeff, params)]


def _compile_scalars(pairs, params):
    """A scalar update (rules.dot's (coeff, summed) pairs, like db) -> [_Einsum] summing to (runs, K)."""
    return [_Einsum(value, arrays) for coeff, _ in pairs for value, arrays in _products(coeff, params)]


class Update:
    """step(x, W, V, b, c, derivatives) -> (dW, dV, db, dc) of one SGD step for a batch of runs:
    x (runs, D), W, V (runs, K, D) (V is W for a tied rule), b (runs, K) or None, c (runs, D) or
    None; `derivatives` = (g, g', ...) of the activation. dV is None for a tied rule, db / dc None
    where the rule or the run has none."""

    def __init__(self, rule: rules.Rule, lr, D_value, params=None):
        values = {str(p): v for p, v in rule.params}
        values.update(params or {})
        subs = {eta: lr, D: D_value, **{p: values[str(p)] for p, _ in rule.params}}
        self.D = D_value
        self.dw = _compile_vec(rule.dw, subs)
        self.dv = None if rule.dv is None else _compile_vec(rule.dv, subs)
        self.db = None if rule.db is None else _compile_scalars(rule.db, subs)
        self.dc = None if rule.dc is None else _compile_vec(rule.dc, subs, free=None)

    def __call__(self, x, W, V, b, c, derivatives, numpy):
        D_ = self.D
        if c is not None:       # the output bias as the first unit: g = 1, w = 0 (derive.rules)
            W = numpy.concatenate([numpy.zeros_like(W[:, :1]), W], axis=1)
            V = numpy.concatenate([c[:, None], V], axis=1)
            b = None if b is None else numpy.concatenate([numpy.zeros_like(b[:, :1]), b], axis=1)
        lam_ = numpy.einsum("skd,sd->sk", W, x) / D_ ** 0.5 + (0.0 if b is None else b)
        n_units = W.shape[1]
        values = {"x": x, "W": W, "V": V, "lam": lam_, "nu": numpy.einsum("skd,sd->sk", V, x) / D_,
                  "T0": numpy.einsum("skd,sld->skl", V, V) / D_, "WW": numpy.einsum("skd,sld->skl", W, W) / D_,
                  "WV": numpy.einsum("skd,sld->skl", W, V) / D_, "tril": numpy.tril(numpy.ones((n_units, n_units))),
                  "eye": numpy.eye(n_units), "unit": numpy.ones(n_units)}
        for n, f in enumerate(derivatives):
            values[f"G{n}"] = f(lam_)
        if c is not None:
            values["unit"][0] = 0.0
            for n in range(len(derivatives)):
                values[f"G{n}"][:, 0] = float(n == 0)
        def total(terms):
            return None if terms is None else sum(t(values, numpy) for t in terms)
        dW, dV, db = total(self.dw), total(self.dv), None if b is None else total(self.db)
        if c is None:
            return dW, dV, db, None
        return dW[:, 1:], None if dV is None else dV[:, 1:], None if db is None else db[:, 1:], total(self.dc)
