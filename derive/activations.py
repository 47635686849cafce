"""The activation registry: an activation is a name plus a SymPy expression in `x`.

Adding an activation is one call::

    register("softsign", x / (1 + Abs(x)))

Parameters are extra SymPy symbols with default values, e.g. the slope of the leaky ReLU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

x = sp.Symbol("x", real=True)


@dataclass(frozen=True)
class Activation:
    """g(x) as a SymPy expression; `params` maps each parameter symbol to its default value."""

    name: str
    expr: sp.Expr
    params: dict = field(default_factory=dict)
    description: str = ""

    def bound(self) -> sp.Expr:
        """The expression with every parameter replaced by its (exact) default value."""
        return self.expr.subs({p: sp.nsimplify(v) for p, v in self.params.items()})


REGISTRY: dict[str, Activation] = {}


def register(name: str, expr, params: dict | None = None, description: str = "") -> Activation:
    """Register g(x) = expr under `name`: a SymPy expression or a string in x. Any symbol named x
    (sp.Symbol("x"), or the x of a string) is taken for `derive.activations.x`, the real x."""
    if not name.isidentifier():
        raise ValueError(f"activation name {name!r} must be a Python identifier")
    params = dict(params or {})
    expr = sp.sympify(expr, locals={"x": x, **{str(p): p for p in params}})
    expr = expr.subs({s: x for s in expr.free_symbols if s.name == "x" and s != x})
    free = expr.free_symbols - {x} - set(params)
    if free:
        raise ValueError(f"activation {name!r}: symbols {sorted(map(str, free))} are neither x nor parameters")
    REGISTRY[name] = Activation(name, expr, params, description)
    return REGISTRY[name]


def get(name: str) -> Activation:
    """The registered activation `name`; unknown names list the registered ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None


slope = sp.Symbol("slope", positive=True)

register("linear", x, description="g(x) = x")
register("erf", sp.erf(x / sp.sqrt(2)), description="g(x) = erf(x/sqrt(2)), the sigmoidal unit of the paper")
register("relu", sp.Max(x, 0), description="g(x) = max(x, 0)")
register("leaky_relu", sp.Max(x, slope * x), {slope: sp.Rational(1, 100)},
         description="g(x) = max(x, slope*x), 0 < slope < 1")
register("tanh", sp.tanh(x), description="g(x) = tanh(x)")
register("sigmoid", 1 / (1 + sp.exp(-x)), description="g(x) = 1/(1 + exp(-x)), the logistic function")
register("sin", sp.sin(x), description="g(x) = sin(x)")
register("quadratic", x**2, description="g(x) = x^2")
