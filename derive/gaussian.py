"""The symbolic Gaussian-average engine.

Every average is reduced to one primitive, the standard-normal expectation of a sum of terms
`c * z**n * exp(A z**2 + B z)` (completing the square), by three identities:

* conditioning (Cholesky): for (x1, x2) ~ N(0, C), `x2 = kappa x1 + s z` with
  `kappa = C12/C11`, `s**2 = C22 - C12**2/C11` and z ~ N(0, 1) independent of x1;
* Price: `d/dC12 E[f1(x1) f2(x2)] = E[f1'(x1) f2'(x2)]`, and at C12 = 0 the average factorises;
  used until the derivatives fall into the primitive's class (erf: g' is a Gaussian; ReLU: g'' = delta);
* parity: odd integrands average to zero, and f(x) + f(-x) = 2 f(0) gives E[f] = f(0).

Piecewise activations are rewritten with Heaviside steps, whose derivatives are DiracDelta;
`E[delta(x1) F(x2)] = p1(0) E[F(x2) | x1 = 0]`. Whatever does not reduce raises `NoClosedForm`,
and the code generator emits a numerical kernel instead.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from derive.activations import x

z = sp.Symbol("z", real=True)
v = sp.Symbol("v", positive=True)
c11, c22 = sp.symbols("c11 c22", positive=True)
c12 = sp.Symbol("c12", real=True)
_c = sp.Symbol("c", real=True)          # integration variable for C12
_u = sp.Symbol("u", positive=True)      # a conditional variance
_sd1, _s = sp.symbols("sd1 s", positive=True)   # sqrt(C11) and the conditional std
_kappa = sp.Symbol("kappa", real=True)
DET = c11 * c22 - c12**2

MAX_PRICE_DEPTH = 3
SMOOTH, STEP_UP, STEP_DOWN, DELTA = "smooth", "H(x)", "H(-x)", "delta(x)"


class NoClosedForm(Exception):
    """The engine found no closed form for this average."""


# ----------------------------------------------------------------------------------------
# Normal form of an activation: smooth + H(x) a(x) + H(-x) b(x) + delta(x) c(x)

def _step_of(arg, var):
    """Heaviside(k*var) -> H(var) or H(-var); anything else is not a step at 0."""
    k = sp.simplify(arg / var)
    if k.free_symbols & {var}:
        raise NoClosedForm(f"step at a non-zero point: Heaviside({arg})")
    if k.is_positive:
        return sp.Heaviside(var)
    if k.is_negative:
        return sp.Heaviside(-var)
    raise NoClosedForm(f"cannot tell the sign of {k} in Heaviside({arg})")


def normalize(expr, var=x):
    """Rewrite Max, Min, Abs, sign and Piecewise in `var` with Heaviside(+-var) and DiracDelta(var);
    a g with kinks or jumps off 0 (hard tanh) in steps at those points (`normalize_steps`)."""
    expr = sp.sympify(expr)
    try:
        return _normalize_at_zero(expr, var)
    except NoClosedForm as at_zero:
        try:
            return normalize_steps(expr, var)
        except NoClosedForm:
            raise at_zero from None


def _normalize_at_zero(expr, var):
    expr = expr.rewrite(sp.Heaviside)
    expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: _piecewise_to_steps(e, var))
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: _step_of(e.args[0], var))
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta),
                        lambda e: _delta_of(e, var))
    return sp.Add(*(_reduce_delta_moment(t, var) for t in sp.Add.make_args(sp.expand(expr))))


def _delta_of(e, var):
    arg, order = e.args[0], (e.args[1] if len(e.args) > 1 else 0)
    k = sp.simplify(arg / var)
    if k.free_symbols & {var}:
        raise NoClosedForm(f"delta at a non-zero point: {e}")
    return sp.DiracDelta(var, order) / (sp.Abs(k) * k**order)


def _reduce_delta_moment(term, var):
    """x^n delta^(k)(x) = (-1)^n k!/(k-n)! delta^(k-n)(x) for n <= k, and 0 for n > k."""
    deltas = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.DiracDelta)]
    if len(deltas) != 1:
        return term
    delta = deltas[0]
    k = int(delta.args[1]) if len(delta.args) > 1 else 0
    power = sp.Mul(*(f for f in sp.Mul.make_args(term / delta) if f == var or (f.is_Pow and f.base == var)))
    n = sp.degree(power, var) if power != 1 else 0
    if n > k:
        return sp.S.Zero
    rest = term / delta / power
    if _smooth_in(rest, var):
        # f(x) delta^(k)(x) by the product rule, f's derivatives at 0 (ELU: (e^x - 1) delta(x) = 0)
        return _reduce_delta(term, var)
    return rest * (-1) ** n * sp.factorial(k) / sp.factorial(k - n) * sp.DiracDelta(var, k - n)


def _smooth_in(expr, var):
    """expr depends on var, and not through a step or a delta (those stay: H(x) delta(x) is split's)."""
    return expr.has(var) and not expr.has(sp.Heaviside, sp.DiracDelta)


# ----------------------------------------------------------------------------------------
# Steps at any constant points: g = smooth + sum_c H(+-(x - c)) a_c(x) + sum_c delta^(k)(x - c) b_c
#
# The normal form above has its steps at 0, which the one- and two-point engine below needs. An
# activation with kinks or jumps elsewhere (hard tanh: kinks at +-1) is written with one step per
# term, H(x - c) or H(c - x), and deltas delta^(k)(x - c) with constant coefficients; the
# shifted-Gaussian engine (derive/shifted.py) averages those, a step at c being a step at 0 of
# x - c. `split` refuses them (NoClosedForm), so derive.kernels takes that route instead.

_PIECEWISE_KINDS = (sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.sign)


def normalize_steps(expr, var=x):
    """expr with Piecewise, Max, Min, Abs and sign written as a sum of single steps at constant
    points, Heaviside(var - c) or Heaviside(c - var), products of steps reduced to single steps,
    and every delta^(k)(var - c) with a coefficient free of var (f(x) delta(x - c) = f(c) delta(x - c),
    H(0) = 1/2; its derivatives by the product rule). NoClosedForm if a condition or the argument
    of a step is not linear in var, or a point is not a real number."""
    expr = _intervals_in(sp.sympify(expr), var)
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: _step_at(e.args[0], var))
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: _delta_at(e, var))
    out = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(expr)):
        for reduced in sp.Add.make_args(sp.expand(_reduce_steps(term, var))):
            out += _reduce_delta(reduced, var)
    return out


def _point(arg, var):
    """(a, c) with arg = a (var - c), a and c real numbers; NoClosedForm otherwise."""
    arg = sp.expand(arg)
    a = arg.coeff(var)
    c = sp.simplify(-(arg - a * var) / a) if a != 0 else None
    if a == 0 or a.has(var) or c.has(var) or not (a.is_real and a.is_number and c.is_real and c.is_number):
        raise NoClosedForm(f"{arg} is not a linear function of {var} with real coefficients")
    return a, c


def _step_at(arg, var):
    if not arg.has(var):
        return sp.Heaviside(arg)
    a, c = _point(arg, var)
    return sp.Heaviside(var - c) if a > 0 else sp.Heaviside(c - var)


def _delta_at(e, var):
    arg, order = e.args[0], (e.args[1] if len(e.args) > 1 else 0)
    if not arg.has(var):
        return e
    a, c = _point(arg, var)
    return sp.DiracDelta(var - c, order) / (sp.Abs(a) * a**order)


def _side(step, var):
    """(+1, c) for H(var - c), (-1, c) for H(c - var) (normal form of _step_at)."""
    arg = step.args[0]
    if arg.has(var):
        a, c = _point(arg, var)
        return (1 if a > 0 else -1), c
    return None


def _intervals_in(expr, var):
    """Each outermost Piecewise / Max / Min / Abs / sign in var as a sum of single steps."""
    if isinstance(expr, _PIECEWISE_KINDS) and expr.has(var):
        return _intervals(expr, var)
    if not expr.args:
        return expr
    return expr.func(*(_intervals_in(a, var) for a in expr.args))


def _intervals(expr, var):
    """A piecewise expression as p_0(x) + sum_i (p_i(x) - p_(i-1)(x)) H(x - c_i): its breakpoints
    c_1 < ... < c_n from the conditions (each linear in var), p_i its value between c_i and c_(i+1)."""
    pw = sp.piecewise_fold(expr.rewrite(sp.Piecewise))
    if pw.has(sp.DiracDelta):
        raise NoClosedForm(f"a delta inside {expr}")
    points = set()
    for cond in pw.atoms(sp.Piecewise):
        for _, c in cond.args:
            for rel in c.atoms(sp.core.relational.Relational):
                if rel.has(var):
                    points.add(_point(rel.lhs - rel.rhs, var)[1])
    points = sorted(points, key=lambda c: float(c))
    if not points:
        return pw
    inside = [points[0] - 1, *((a + b) / 2 for a, b in zip(points, points[1:])), points[-1] + 1]
    pieces = [_piece_at(pw, var, t) for t in inside]
    out = pieces[0]
    for c, before, after in zip(points, pieces, pieces[1:]):
        jump = sp.expand(after - before)
        if jump != 0:
            out += jump * sp.Heaviside(var - c)
    return out


def _piece_at(pw, var, t):
    """The expression pw equals on the interval around t (each Piecewise's branch chosen at t)."""
    def pick(e):
        for value, cond in e.args:
            if cond.subs(var, t) == sp.true:
                return value
        raise NoClosedForm(f"no branch of {e} holds at {var} = {t}")
    piece = pw.replace(lambda e: isinstance(e, sp.Piecewise), pick)
    if piece.has(sp.Piecewise):
        raise NoClosedForm(f"cannot resolve {pw} at {var} = {t}")
    return piece


def _reduce_steps(term, var):
    """A product of steps in var as one step or a difference of two (indicator of an interval)."""
    steps = [f for f in sp.Mul.make_args(term) if isinstance(f.base if f.is_Pow else f, sp.Heaviside)
             and (f.base if f.is_Pow else f).has(var)]
    if len(steps) <= 1 and not any(f.is_Pow for f in steps):
        return term
    rest = term / sp.Mul(*steps)
    sides = [_side(f.base if f.is_Pow else f, var) for f in steps]
    ups = [c for side, c in sides if side > 0]
    downs = [c for side, c in sides if side < 0]
    lo = max(ups, key=float) if ups else None
    hi = min(downs, key=float) if downs else None
    if lo is None:
        return rest * sp.Heaviside(hi - var)
    if hi is None:
        return rest * sp.Heaviside(var - lo)
    if float(lo) >= float(hi):
        return sp.S.Zero                    # an empty interval (H(x) H(-x) = 0 almost everywhere)
    return rest * (sp.Heaviside(var - lo) - sp.Heaviside(var - hi))


def _reduce_delta(term, var):
    """rest * delta^(k)(var - c) with rest evaluated at c, H(0) = 1/2 (product rule for k > 0)."""
    deltas = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.DiracDelta) and f.has(var)]
    if not deltas:
        return term
    if len(deltas) > 1:
        if len({d.args[0] for d in deltas}) == len(deltas):
            return sp.S.Zero                    # deltas at distinct points
        raise NoClosedForm(f"a product of deltas in {term}")
    delta = deltas[0]
    k = int(delta.args[1]) if len(delta.args) > 1 else 0
    c = var - delta.args[0]
    rest = term / delta
    if k and any(isinstance(h, sp.Heaviside) and sp.simplify(h.args[0].subs(var, c)) == 0
                 for h in rest.atoms(sp.Heaviside)):
        raise NoClosedForm(f"a step times a derivative of a delta at the same point: {term}")
    out = sp.S.Zero
    for j in range(k + 1):
        coefficient = sp.diff(rest, var, j).subs(var, c)
        out += (-1) ** j * sp.binomial(k, j) * coefficient * sp.DiracDelta(var - c, k - j)
    return out


def _piecewise_to_steps(pw, var):
    """Piecewise with conditions `var > 0`, `var < 0` (or >=, <=) and a default -> steps."""
    total, covered = sp.S.Zero, None
    for value, cond in pw.args:
        if cond is sp.true:
            if covered is None:
                return value
            return total + value * sp.Heaviside(-var if covered == "up" else var)
        if isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan)) and cond.lhs == var and cond.rhs == 0:
            step, side = sp.Heaviside(var), "up"
        elif isinstance(cond, (sp.StrictLessThan, sp.LessThan)) and cond.lhs == var and cond.rhs == 0:
            step, side = sp.Heaviside(-var), "down"
        else:
            raise NoClosedForm(f"Piecewise condition {cond} is not a sign condition on {var}")
        if covered is not None:
            raise NoClosedForm("Piecewise with more than one sign condition")
        total, covered = value * step, side
    raise NoClosedForm("Piecewise without a default branch")


def split(expr, var=x):
    """{kind: coefficient} with expr = smooth + H(var) a + H(-var) b + delta(var) c."""
    expr = normalize(expr, var)
    off = {h for h in expr.atoms(sp.Heaviside) if h.has(var)} - {sp.Heaviside(var), sp.Heaviside(-var)}
    if off:
        raise NoClosedForm(f"step at a non-zero point: {min(off, key=str)} (derive/shifted.py takes those)")
    if {d.args[0] for d in expr.atoms(sp.DiracDelta)} - {var}:
        raise NoClosedForm(f"delta at a non-zero point in {expr}")
    if expr.atoms(sp.DiracDelta) - {sp.DiracDelta(var)}:
        raise NoClosedForm(f"derivative of a delta in {expr}")
    up, down, delta = sp.Heaviside(var), sp.Heaviside(-var), sp.DiracDelta(var)
    parts = {SMOOTH: sp.S.Zero, STEP_UP: sp.S.Zero, STEP_DOWN: sp.S.Zero, DELTA: sp.S.Zero}
    for term in sp.Add.make_args(expr):
        n_up, n_down, n_delta = (sp.degree(term, w) if term.has(w) else 0 for w in (up, down, delta))
        rest = term.subs({up: 1, down: 1, delta: 1})
        if n_delta > 1:
            raise NoClosedForm("square of a delta")
        if n_delta:
            # H(0) = 1/2 on the support of the delta
            parts[DELTA] += rest * sp.Rational(1, 2) ** (n_up + n_down)
        elif n_up and n_down:
            continue                     # H(x) H(-x) = 0 almost everywhere
        elif n_up:
            parts[STEP_UP] += rest
        elif n_down:
            parts[STEP_DOWN] += rest
        else:
            parts[SMOOTH] += rest
    return {k: sp.expand(c) for k, c in parts.items() if c != 0}


def join(parts, var=x):
    kernel = {SMOOTH: 1, STEP_UP: sp.Heaviside(var), STEP_DOWN: sp.Heaviside(-var), DELTA: sp.DiracDelta(var)}
    return sp.Add(*(c * kernel[k] for k, c in parts.items()))


# ----------------------------------------------------------------------------------------
# The primitive: E_z[ sum c z^n exp(A z^2 + B z) ], z ~ N(0, 1), over R or a half line

def _exp_polynomial_terms(expr, var):
    """Terms (c, n, A, B) with expr = sum c var^n exp(A var^2 + B var), or NoClosedForm."""
    expr = sp.expand(sp.powsimp(sp.expand(expr.rewrite(sp.exp)), combine="exp"), power_exp=False)
    terms = []
    for term in sp.Add.make_args(expr):
        coeff, n, exponent = sp.S.One, 0, sp.S.Zero
        for factor in sp.Mul.make_args(term):
            if not factor.has(var):
                coeff *= factor
            elif factor == var:
                n += 1
            elif factor.is_Pow and factor.base == var and factor.exp.is_Integer and factor.exp > 0:
                n += int(factor.exp)
            elif isinstance(factor, sp.exp) or (factor.is_Pow and factor.base == sp.E):
                exponent += factor.exp if factor.is_Pow else factor.args[0]
            else:
                raise NoClosedForm(f"{factor} is not a polynomial times a Gaussian exponential")
        poly = sp.Poly(sp.expand(exponent), var) if exponent.has(var) else None
        if poly is not None and poly.degree() > 2:
            raise NoClosedForm(f"exponent {exponent} of degree > 2")
        a2 = poly.coeff_monomial(var**2) if poly is not None else 0
        a1 = poly.coeff_monomial(var) if poly is not None else 0
        a0 = poly.coeff_monomial(1) if poly is not None else exponent
        terms.append((coeff * sp.exp(a0), n, a2, a1))
    return terms


def _normal_moment(n, mean, sd):
    """E[(mean + sd y)^n], y ~ N(0,1)."""
    return sp.Add(*(sp.binomial(n, k) * mean ** (n - k) * sd**k * sp.factorial2(k - 1)
                    for k in range(0, n + 1, 2)))


def normal_expectation(expr, var=z, half=None):
    """E[expr] for var ~ N(0,1); half = +1 / -1 restricts to var > 0 / var < 0."""
    total = sp.S.Zero
    for coeff, n, A, B in _exp_polynomial_terms(expr, var):
        a = sp.Rational(1, 2) - A        # integrand weight exp(-a var^2 + B var)/sqrt(2 pi)
        if a.is_positive is False:
            raise NoClosedForm("integrand grows like a Gaussian")
        if half is None:
            total += coeff * sp.exp(B**2 / (4 * a)) / sp.sqrt(2 * a) * _normal_moment(n, B / (2 * a), 1 / sp.sqrt(2 * a))
        elif B == 0:
            sign = half ** n
            total += coeff * sign * sp.gamma(sp.Rational(n + 1, 2)) / (2 * sp.sqrt(2 * sp.pi) * a ** sp.Rational(n + 1, 2))
        else:
            raise NoClosedForm("half-line integral with a linear exponent")
    return total


def _tidy_radicals(expr):
    """Combine and cancel radicals; legitimate here because every radicand is a variance or a
    determinant of a covariance, hence non-negative."""
    expr = sp.powsimp(sp.powdenest(expr, force=True), force=True)
    return expr.replace(lambda e: e.is_Pow and not e.exp.is_Integer,
                        lambda e: sp.Pow(sp.factor(sp.cancel(e.base)), e.exp))


def tidy(expr):
    from derive import polynomial_erf
    if polynomial_erf.marked(expr):          # a polynomial-times-erf average: no sp.simplify
        tidied = polynomial_erf.tidy(expr)
        if tidied is not None:
            return tidied
    expr = sp.simplify(_tidy_radicals(sp.expand(expr)))
    if expr.has(sp.I):
        expr = sp.simplify(sp.expand_complex(expr))
        if expr.has(sp.I):
            raise NoClosedForm(f"complex result {expr}")
    return expr


# ----------------------------------------------------------------------------------------
# One-point averages: E[f(x)], x ~ N(0, var)

def one_point(f, var=v):
    """E[f(x)] for x ~ N(0, var), as a SymPy expression in `var`."""
    f = sp.sympify(f)
    closed = _polynomial_erf(lambda route: route.one_point(f, var), f)
    return tidy(closed if closed is not None else _one_point(f, var))


def _polynomial_erf(average, *fs):
    """average(derive.polynomial_erf) where that route applies to one of fs (a polynomial times
    erf), or None: the other paths then run as before."""
    from derive import polynomial_erf
    if not any(polynomial_erf.applies(f) for f in fs):
        return None
    try:
        return average(polynomial_erf)
    except NoClosedForm:
        return None


def _one_point(f, var):
    sd = sp.sqrt(var)
    total = sp.S.Zero
    for kind, coeff in split(f).items():
        if kind == DELTA:
            total += coeff.subs(x, 0) / sp.sqrt(2 * sp.pi * var)
            continue
        half = {SMOOTH: None, STEP_UP: 1, STEP_DOWN: -1}[kind]
        try:
            total += normal_expectation(coeff.subs(x, sd * z), z, half)
        except NoClosedForm:
            if kind != SMOOTH:
                raise
            total += _one_point_smooth(coeff)
    return total


def _one_point_smooth(f):
    """A smooth f outside the primitive's class: only symmetry helps, f(x) + f(-x) = 2 f(0)."""
    f0 = f.subs(x, 0)
    if _is_zero(f + f.subs(x, -x) - 2 * f0):
        return f0
    raise NoClosedForm(f"E[{f}]")


def _integrate(expr, var, lo, hi):
    result = sp.integrate(sp.simplify(expr), (var, lo, hi), conds="none")
    if result.has(sp.Integral):
        raise NoClosedForm(f"integral of {expr}")
    return result


# ----------------------------------------------------------------------------------------
# Two-point averages: E[f1(x1) f2(x2)], (x1, x2) ~ N(0, [[c11, c12], [c12, c22]])

def _is_zero(expr):
    """expr == 0 identically in x: a numerical screen at two points, then simplify."""
    for point in (sp.Rational(3, 10), sp.Rational(17, 10)):
        value = expr.subs(x, point).subs({s: 1 for s in expr.free_symbols - {x}}).evalf(30)
        if value.is_number and abs(value) > 1e-20:
            return False
    return sp.simplify(expr) == 0


def _parity(f):
    """+1 for even f, -1 for odd f, 0 otherwise."""
    mirrored = f.subs(x, -x)
    if _is_zero(f - mirrored):
        return 1
    if _is_zero(f + mirrored):
        return -1
    return 0


@lru_cache(maxsize=None)
def two_point(f1, f2, depth=0):
    """E[f1(x1) f2(x2)] as a SymPy expression in (c11, c12, c22); f1, f2 are expressions in x."""
    closed = _polynomial_erf(lambda route: route.two_point(f1, f2), f1, f2)
    if closed is not None:
        return tidy(closed)
    if _parity(f1) * _parity(f2) == -1:
        return sp.S.Zero                 # (x1, x2) -> (-x1, -x2) flips the sign
    total = sp.S.Zero
    for k1, a1 in split(f1).items():
        for k2, a2 in split(f2).items():
            total += _pair_part(k1, a1, k2, a2, depth)
    return tidy(total)


def _pair_part(k1, a1, k2, a2, depth):
    if k1 == DELTA and k2 == DELTA:
        return a1.subs(x, 0) * a2.subs(x, 0) / (2 * sp.pi * sp.sqrt(DET))
    if k1 == DELTA:
        # x2 | x1 = 0 ~ N(0, det/c11)
        return a1.subs(x, 0) / sp.sqrt(2 * sp.pi * c11) * _one_point(join({k2: a2}), _u).subs(_u, DET / c11)
    if k2 == DELTA:
        return _swap(_pair_part(k2, a2, k1, a1, depth))
    if k1 == SMOOTH and k2 == SMOOTH:
        try:
            return _direct(a1, a2)
        except NoClosedForm:
            pass
    return _price(join({k1: a1}), join({k2: a2}), depth)


def _swap(expr):
    return expr.subs({c11: c22, c22: c11}, simultaneous=True)


def _direct(f1, f2):
    """Condition x2 on x1: E[f1(x1) E_z[f2(kappa x1 + s z)]], both integrals by the primitive."""
    inner = normal_expectation(f2.subs(x, _kappa * x + _s * z), z)
    outer = normal_expectation((f1 * inner).subs(x, _sd1 * z), z)
    back = {_sd1: sp.sqrt(c11), _kappa: c12 / c11, _s: sp.sqrt(DET / c11)}
    return sp.simplify(_tidy_radicals(outer.subs(back)))


def _price(f1, f2, depth):
    """E[f1 f2](c12) = E[f1] E[f2] + int_0^c12 E[f1' f2'](c) dc."""
    if depth >= MAX_PRICE_DEPTH:
        raise NoClosedForm(f"E[{f1}(x1) {f2}(x2)]")
    start = one_point(f1, c11) * one_point(f2, c22)
    slope = two_point(sp.diff(f1, x), sp.diff(f2, x), depth + 1)
    return start + _integrate(slope.subs(c12, _c), _c, 0, c12)
