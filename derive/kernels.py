"""Kernels: the one- and two-point Gaussian averages of products of derivatives of g.

A kernel is named by the derivative orders it averages:

* ``mean_<orders>(v)``: E[prod_a g^(a)(x)], x ~ N(0, v); e.g. ``mean_1`` = E[g'(x)], ``mean_11`` = E[g'(x)^2];
* ``pair_<orders1>_<orders2>(c11, c12, c22)``: E[prod_a g^(a)(x1) prod_b g^(b)(x2)] for
  (x1, x2) ~ N(0, [[c11, c12], [c12, c22]]); e.g. ``pair_2_0`` = E[g''(x1) g(x2)].

`derive_kernel` returns the closed form from the engine (`derive.gaussian`), or None where the
engine finds none (the code generator then emits a numerical kernel).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import gaussian as G
from derive.activations import x


@dataclass(frozen=True, order=True)
class Kernel:
    """orders: one tuple of derivative orders per variable (one variable: mean_, two: pair_)."""

    orders: tuple

    def __post_init__(self):
        orders = tuple(tuple(sorted(o, reverse=True)) for o in self.orders)
        if len(orders) not in (1, 2) or any(not o for o in orders):
            raise ValueError(f"kernel orders {self.orders} must be one or two non-empty tuples")
        object.__setattr__(self, "orders", orders)

    @property
    def name(self) -> str:
        digits = ["".join(map(str, o)) for o in self.orders]
        return ("mean_" if len(digits) == 1 else "pair_") + "_".join(digits)

    @property
    def args(self):
        return (G.v,) if len(self.orders) == 1 else (G.c11, G.c12, G.c22)

    def describe(self) -> str:
        def factors(orders, var):
            return " ".join(f"g{chr(39) * a if a < 4 else f'^({a})'}({var})" for a in orders)
        if len(self.orders) == 1:
            return f"E[{factors(self.orders[0], 'x')}], x ~ N(0, v)"
        return (f"E[{factors(self.orders[0], 'x1')} {factors(self.orders[1], 'x2')}], "
                f"(x1, x2) ~ N(0, [[c11, c12], [c12, c22]])")

    def symbol(self):
        """The kernel as an undefined SymPy function, to appear in derived formulas."""
        return sp.Function(self.name)


def with_constant_unit(kernels):
    """The kernels and the one-point kernels their two-point ones reduce to when one unit's g is
    the constant 1 (the output bias, a unit with g = 1: derive.rules): pair_<o1>_<0...0> -> mean_<o1>."""
    out = set(kernels)
    for kernel in kernels:
        if len(kernel.orders) == 2:
            for mine, other in (kernel.orders, kernel.orders[::-1]):
                if not any(other):
                    out.add(Kernel((mine,)))
    return out


def product(g, orders):
    return sp.Mul(*(sp.diff(g, x, a) for a in orders))


def derive_kernel(g, kernel: Kernel):
    """Closed form of `kernel` for the activation expression g, or None."""
    if affine_erf(g):
        # erf(a x + c) = 2 Phi(sqrt 2 (a x + c)) - 1: a step of the shifted-Gaussian engine (issue 16,
        # item 1), its kernels those of a shifted Gaussian at zero means, in seconds (the Price
        # route below would integrate bivariate normal CDFs at non-zero thresholds)
        closed = _at_zero_mean(g, kernel, steps=False)
        if closed is not None:
            return closed
    try:
        if len(kernel.orders) == 1:
            return _mean(g, kernel.orders[0])
        return _pair(g, *kernel.orders)
    except G.NoClosedForm:
        return _at_zero_mean(g, kernel)


def affine_erf(g):
    """Whether g has an erf (or erfc) of an affine argument a x + c, c != 0 (erf(x + 1/2), Phi(x - 1))."""
    for e in sp.sympify(g).atoms(sp.erf, sp.erfc):
        arg = sp.expand(e.args[0])
        if arg.has(x) and arg.is_polynomial(x) and sp.degree(arg, x) == 1 and arg.subs(x, 0) != 0:
            return True
    return False


def _at_zero_mean(g, kernel: Kernel, steps=True):
    """A piecewise g the engine above refuses (steps off 0, as hard tanh's at +-1, or pieces that
    are not polynomials, as ELU's e^x - 1): the shifted-Gaussian engine (derive/shifted.py, normal
    CDFs and the bivariate normal CDF at the shifted points) at zero means; None if it fails too."""
    from derive import shifted
    if steps and not G.normalize(g).has(sp.Heaviside):
        return None
    closed = shifted.derive_kernel(g, kernel)
    if closed is None:
        return None
    closed = closed.subs({shifted.m: 0, shifted.m1: 0, shifted.m2: 0})
    return closed.replace(lambda e: isinstance(e, (shifted.ndtr, shifted.bvn, sp.exp)),
                          lambda e: e.func(*(_whole_ratio(a) for a in e.args)))


def _whole_ratio(arg):
    """A conditional mean over the conditional standard deviation, (c22 - c12)/sqrt(c22 det) at a
    kink at 1, as one guarded ratio div(numerator, denominator): the printer expands arguments, and
    the terms c22/sqrt(c22 det) - c12/sqrt(c22 det) would be inf - inf at perfect correlation
    (the diagonal of the pair kernels), where the ratio has its limit (+-inf, or 0/0 -> 0)."""
    from derive.printer import div
    num, den = sp.fraction(sp.together(arg))
    if not den.has(G.c12):
        return arg
    return div(sp.expand(num), den)


def _mean(g, orders):
    if orders == (3,):
        # Stein: E[g'''(x)] = E[x g''(x)] / v, which also covers g'' = delta (ReLU)
        return G.tidy(G.one_point(x * sp.diff(g, x, 2)) / G.v)
    try:
        return G.one_point(product(g, orders))
    except G.NoClosedForm:
        if len(orders) != 2:
            raise
        # a product of two factors at one point is the pair kernel at c11 = c12 = c22 = v
        pair = _pair(g, orders[:1], orders[1:])
        return G.tidy(pair.subs({G.c11: G.v, G.c12: G.v, G.c22: G.v}))


def _pair(g, o1, o2):
    if len(o1) == 1 and len(o2) == 1:
        (a,), (b,) = o1, o2
        if a < b:
            return G.tidy(G._swap(_pair(g, o2, o1)))
        if b > 0:       # Price: E[g^(a) g^(b)] = d/dc12 E[g^(a-1) g^(b-1)]
            return G.tidy(sp.diff(_pair(g, (a - 1,), (b - 1,)), G.c12))
        if a >= 2:      # heat equation: E[g^(a)(x1) g(x2)] = 2 d/dc11 E[g^(a-2)(x1) g(x2)]
            return G.tidy(2 * sp.diff(_pair(g, (a - 2,), (0,)), G.c11))
    return G.two_point(product(g, o1), product(g, o2))


def from_name(name: str) -> Kernel:
    """Inverse of Kernel.name: 'pair_2_0' -> Kernel(((2,), (0,)))."""
    kind, *digits = name.split("_")
    if kind not in ("mean", "pair") or len(digits) != (1 if kind == "mean" else 2):
        raise ValueError(f"{name!r} is not a kernel name")
    return Kernel(tuple(tuple(int(d) for d in ds) for ds in digits))


#: kernels every generated module carries (SPEC section 4 and the issue's list)
BASE = [from_name(n) for n in ("mean_0", "mean_1", "mean_3", "mean_00", "mean_11",
                               "pair_0_0", "pair_1_0", "pair_1_1", "pair_2_0")]
