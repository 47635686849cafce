"""Gaussian averages over shifted Gaussians N(m, C): the kernels of a network with a bias.

With an encoder bias the local field lambda_k = w_k.x/sqrt(D) + b_k has mean b_k, so every kernel
E[prod g^(a)(x)] becomes a function of the means too (`shifted_mean_<orders>(m, v)`,
`shifted_pair_<o1>_<o2>(m1, m2, c11, c12, c22)`). The engine works on y ~ N(mu, Sigma) in one or
two dimensions with integrands

    coeff * y^n * exp(y^T A y + B^T y) * prod_j step_j(y) * prod_i density_i(y)

where a *step* is P(l.y + b + s Y > 0) with Y ~ N(0, 1) independent: s = 0 is the Heaviside
step H(l.y + b) (ReLU), s = 1 is the normal CDF Phi(l.y + b) (erf(x/sqrt2) = 2 Phi(x) - 1), and
a *density* is its derivative (s = 0: DiracDelta). Four identities reduce every term:

* tilt (completing the square): E[exp(e^T A e + c^T e)] = det(M)^(-1/2) exp(c^T M^-1 Sigma c / 2),
  M = I - 2 Sigma A, and the tilted Gaussian has mean mu + M^-1 Sigma c, covariance M^-1 Sigma;
* Stein: E[y_i F] = mu_i E[F] + sum_k Sigma_ik E[d_k F] (the mean term is what a bias adds);
  d_k step_j = l_jk density_j;
* conditioning: E[density(u) G] = p_u(0) E[G | u = 0] for u = l.y + b + s Y;
* orthant probabilities: E[step] = ndtr(h), E[step_1 step_2] = bvn(h1, h2, rho), with
  h_j = E u_j / sd(u_j) and rho = corr(u_1, u_2) -- the normal CDF and the bivariate normal
  CDF (runtime.elementwise.bvn, by Owen's T function).

So erf and ReLU kernels (and linear, leaky ReLU, quadratic, sin) come out in closed form,
including erf's E[g(x1) g(x2)], the Price integral of SPEC section 4 done once and for all as a
bivariate normal CDF. Whatever is outside this class raises `NoClosedForm` (tanh, sigmoid): the
generated module then calls the double-exponential quadrature with means (runtime/quadrature.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import gaussian as G
from derive.activations import x
from derive.kernels import Kernel

m, m1, m2 = sp.symbols("m m1 m2", real=True)


class ndtr(sp.Function):
    """The standard normal CDF Phi(h) (printed scipy.special.ndtr)."""


class bvn(sp.Function):
    """P(X < h, Y < k) for standard normals X, Y with correlation rho (printed runtime.elementwise.bvn)."""


@dataclass(frozen=True)
class Step:
    """P(l.y + b + s Y > 0), Y ~ N(0, 1) independent of y (s = 0: the Heaviside step H(l.y + b))."""

    l: tuple
    b: sp.Expr
    s: sp.Expr


def args(kernel: Kernel):
    """The symbols of a shifted kernel: (m, v) or (m1, m2, c11, c12, c22)."""
    return (m, G.v) if len(kernel.orders) == 1 else (m1, m2, G.c11, G.c12, G.c22)


def name(kernel: Kernel):
    return "shifted_" + kernel.name


def describe(kernel: Kernel):
    return kernel.describe().replace("N(0, v)", "N(m, v)").replace("N(0, [[", "N((m1, m2), [[")


def derive_kernel(g, kernel: Kernel):
    """Closed form of the shifted `kernel` for activation g (a SymPy expression in x), or None."""
    try:
        if len(kernel.orders) == 1:
            return _finish(_one(g, kernel.orders[0]))
        o1, o2 = kernel.orders
        terms = [(c1 * c2, _join(t1, t2)) for c1, t1 in _terms(product(g, o1), 0, 2)
                 for c2, t2 in _terms(product(g, o2), 1, 2)]
        mu, Sigma = (m1, m2), sp.Matrix([[G.c11, G.c12], [G.c12, G.c22]])
        return _finish(sp.Add(*(c * _expect(t, mu, Sigma) for c, t in terms)))
    except G.NoClosedForm:
        return None


def product(g, orders):
    """prod_a g^(a)(x), each factor normalised first (x delta(x) = 0 before squaring)."""
    return sp.Mul(*(G.normalize(sp.diff(g, x, a)) for a in orders))


def _one(g, orders):
    f = product(g, orders)
    try:
        return sp.Add(*(c * _expect(t, (m,), sp.Matrix([[G.v]])) for c, t in _terms(f, 0, 1)))
    except G.NoClosedForm:
        if orders != (3,):
            raise
    # g''' = delta' (ReLU): Stein, E[g'''(x)] = E[(x - m) g''(x)] / v
    f = (x - m) * sp.diff(g, x, 2)
    return sp.Add(*(c * _expect(t, (m,), sp.Matrix([[G.v]])) for c, t in _terms(f, 0, 1))) / G.v


def _finish(expr):
    """Top-level expansion only: function arguments stay whole, so that a conditional mean over a
    vanishing conditional standard deviation stays one ratio (0/0 -> 0 at perfect correlation,
    runtime.elementwise.div) and a Gaussian exponent stays minus a square over a variance."""
    expr = sp.expand(expr, deep=False, power_base=False, power_exp=False, log=False, multinomial=False)
    if expr.has(sp.I):
        expr = sp.simplify(sp.expand_complex(expr))
        if expr.has(sp.I):
            raise G.NoClosedForm(f"complex result {expr}")
    return expr


# ----------------------------------------------------------------------------------------
# Integrands: (coeff, Term) with coeff free of the integration variables

@dataclass(frozen=True)
class Term:
    powers: tuple            # n_i per coordinate
    A: tuple                 # diagonal of the quadratic exponent (factors are one-variable)
    B: tuple                 # linear exponent
    steps: tuple             # Steps
    densities: tuple         # Steps whose density (d/du of the step, s = 0: delta(u)) multiplies the integrand


def _join(t1, t2):
    return Term(tuple(a + b for a, b in zip(t1.powers, t2.powers)), tuple(a + b for a, b in zip(t1.A, t2.A)),
                tuple(a + b for a, b in zip(t1.B, t2.B)), t1.steps + t2.steps, t1.densities + t2.densities)


def _terms(f, i, dim):
    """f(x) (an expression in x) as [(coeff, Term)] in coordinate i of `dim`."""
    unit = tuple(sp.S.One if j == i else sp.S.Zero for j in range(dim))
    f = G.normalize(f)
    marks = {}

    def mark(step, density=False):
        key = (step, density)
        if key not in marks:
            marks[key] = sp.Dummy(f"s{len(marks)}")
        return marks[key]

    def erf_to_step(e):
        a, b = _affine(e.args[0], "erf")
        return 2 * mark(Step(tuple(sp.sqrt(2) * a * u for u in unit), sp.sqrt(2) * b, sp.S.One)) - 1

    f = f.replace(lambda e: isinstance(e, sp.erfc), lambda e: 1 - sp.erf(e.args[0]))
    f = f.replace(lambda e: isinstance(e, sp.erf), erf_to_step)
    f = f.replace(lambda e: isinstance(e, sp.DiracDelta),
                  lambda e: _delta(e, unit, mark))
    f = f.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: mark(_step(e.args[0], unit)))
    if f.has(x) and f.atoms(sp.Function) - f.atoms(sp.exp) - f.atoms(sp.sin) - f.atoms(sp.cos):
        raise G.NoClosedForm(f"E[{f}] over a shifted Gaussian")
    inverse = {d: key for key, d in marks.items()}
    out = []
    for coeff, n, a2, a1 in G._exp_polynomial_terms(sp.expand(f), x):
        steps, densities, rest = [], [], sp.S.One
        for factor in sp.Mul.make_args(coeff):
            base, times = (factor.base, int(factor.exp)) if factor.is_Pow and factor.exp.is_Integer else (factor, 1)
            if base not in inverse:
                rest *= factor
                continue
            step, density = inverse[base]
            if density:
                if times > 1:
                    raise G.NoClosedForm("square of a delta")
                densities.append(step)
            else:
                # a Heaviside step is idempotent; a normal CDF is not (independent Y's)
                steps += [step] * (1 if step.s == 0 else times)
        if any(st.s == 0 and Step(tuple(-a for a in st.l), st.b, st.s) in steps for st in steps):
            continue                     # H(x) H(-x) = 0 almost everywhere
        steps, rest = _on_deltas(steps, densities, rest)
        if rest == 0:
            continue
        out.append((rest, Term(tuple(n * u for u in unit), tuple(a2 * u for u in unit),
                               tuple(a1 * u for u in unit), tuple(steps), tuple(densities))))
    return out


def _affine(arg, what):
    """(k, c) with arg = k x + c, k and c free of x (else NoClosedForm, naming `what`)."""
    arg = sp.expand(arg)
    k = arg.coeff(x)
    c = sp.expand(arg - k * x)
    if k.has(x) or c.has(x):
        raise G.NoClosedForm(f"{what} of a non-linear argument: {arg}")
    return k, c


def _step(arg, unit):
    """H(k x + c) = H(sign(k) x + c/|k|): a step at any constant point (hard tanh: x = +-1)."""
    k, c = _affine(arg, "Heaviside")
    if k == 0:
        raise G.NoClosedForm(f"Heaviside of a constant argument: {arg}")
    return Step(tuple(sp.sign(k) * u for u in unit), c / sp.Abs(k) if c != 0 else sp.S.Zero, sp.S.Zero)


def _delta(e, unit, mark):
    """delta(k x + c) = delta(x + c/k) / |k|: the density at 0 of u = x + c/k."""
    if len(e.args) > 1 and e.args[1] != 0:
        raise G.NoClosedForm(f"derivative of a delta: {e}")
    k, c = _affine(e.args[0], "DiracDelta")
    if k == 0:
        raise G.NoClosedForm(f"DiracDelta of a constant argument: {e}")
    return mark(Step(unit, c / k if c != 0 else sp.S.Zero, sp.S.Zero), density=True) / sp.Abs(k)


def _on_deltas(steps, densities, coeff):
    """H(+-x) delta(x) = delta(x)/2 on one variable (Heaviside(0) = 1/2, as in derive.gaussian)."""
    if not densities:
        return steps, coeff
    sharp = [st for st in steps if st.s == 0]
    return [st for st in steps if st.s != 0], coeff * sp.Rational(1, 2) ** len(sharp)


# ----------------------------------------------------------------------------------------
# E[Term] over y ~ N(mu, Sigma)

def _expect(term: Term, mu, Sigma):
    n = len(mu)
    mu = sp.Matrix(mu)
    if any(a != 0 for a in term.A) or any(b != 0 for b in term.B):
        return _tilt(term, mu, Sigma)
    if term.densities:
        d, *rest = term.densities
        u_mean, V, Sl = _linear_form(d, mu, Sigma)
        density = sp.exp(sp.factor(-u_mean**2 / (2 * V))) / sp.sqrt(2 * sp.pi * V)
        mu_c = (mu - Sl * u_mean / V).applyfunc(sp.factor)
        Sigma_c = (Sigma - Sl * Sl.T / V).applyfunc(sp.factor)
        return density * _expect(Term(term.powers, term.A, term.B, term.steps, tuple(rest)), mu_c, Sigma_c)
    for i in range(n):
        if term.powers[i]:
            return _stein(term, i, mu, Sigma)
    if not term.steps:
        return sp.S.One
    if len(term.steps) == 1:
        u_mean, V, _ = _linear_form(term.steps[0], mu, Sigma)
        return ndtr(u_mean / sp.sqrt(V))
    if len(term.steps) == 2:
        (h1, V1, S1), (h2, V2, _) = (_linear_form(st, mu, Sigma) for st in term.steps)
        l2 = sp.Matrix(term.steps[1].l)
        return bvn(h1 / sp.sqrt(V1), h2 / sp.sqrt(V2), (S1.T * l2)[0, 0] / sp.sqrt(V1 * V2))
    raise G.NoClosedForm(f"orthant probability of {len(term.steps)} steps")


def _linear_form(step, mu, Sigma):
    """(E u, Var u, Sigma l) of u = l.y + b + s Y."""
    l = sp.Matrix(step.l)
    Sl = Sigma * l
    return (l.T * mu)[0, 0] + step.b, (l.T * Sl)[0, 0] + step.s**2, Sl


def _stein(term, i, mu, Sigma):
    """E[y_i F] = mu_i E[F] + sum_k Sigma_ik E[d_k F]."""
    n = len(mu)
    powers = list(term.powers)
    powers[i] -= 1
    base = Term(tuple(powers), term.A, term.B, term.steps, term.densities)
    total = mu[i] * _expect(base, mu, Sigma)
    for k in range(n):
        if powers[k]:
            lowered = list(powers)
            lowered[k] -= 1
            total += Sigma[i, k] * powers[k] * _expect(Term(tuple(lowered), term.A, term.B, term.steps,
                                                            term.densities), mu, Sigma)
    for j, st in enumerate(term.steps):
        Sl = (Sigma * sp.Matrix(st.l))[i]
        if Sl == 0:
            continue
        others = term.steps[:j] + term.steps[j + 1:]
        total += Sl * _expect(Term(tuple(powers), term.A, term.B, others, term.densities + (st,)), mu, Sigma)
    return total


def _tilt(term, mu, Sigma):
    """Absorb exp(y^T A y + B^T y) into the Gaussian (completing the square)."""
    n = len(mu)
    A, B = sp.diag(*term.A), sp.Matrix(term.B)
    c = B + 2 * A * mu
    M = sp.eye(n) - 2 * Sigma * A
    Minv = M.inv()
    MS = (Minv * Sigma).applyfunc(sp.cancel)
    exponent = sp.factor(sp.cancel((B.T * mu + mu.T * A * mu + (c.T * MS * c) / 2)[0, 0]))
    factor = sp.exp(exponent) / sp.sqrt(sp.factor(M.det()))
    mu_t = (mu + MS * c).applyfunc(sp.cancel)
    zero = tuple(sp.S.Zero for _ in range(n))
    return factor * _expect(Term(term.powers, zero, zero, term.steps, term.densities), mu_t, MS)
