"""Sums of einsum monomials -> numpy source with the common factors pulled out.

A block of the equations (derive.drift, derive.finite) is a sum of monomials
coeff * prod_f X_f[indices_f], summed over every index not in the output. Printed one einsum per
monomial (a hundred or more per noise block) it is unreadable and slow. Here the sum is factored
greedily, as one would by hand: the factor shared by the most terms -- a power of D, or an array
whose indices are all free (a kernel E.pair_1_1[k, l], rho_hat[j], ...) -- is pulled out of those
terms, and the rest is factored again:

    c X[kl] Y[jkl] + c X[kl] Y[jlk] + c Z[j] W[kl]  ->  c (X[kl] (Y[jkl] + Y[jlk]) + Z[j] W[kl]).

A factor is pulled out of a term only if what remains still carries every free index, so each
node of the tree is one einsum over '...'-broadcast operands with the block's output indices.
Each node is one numpy.einsum call in numpy's own single loop: at K <= 3 units an explicit
contraction path (numpy.einsum(..., optimize=path), paths chosen by opt_einsum) measured 2-4x
slower per right-hand side, its pairwise steps costing more in Python than they save.

The noise functions are printed with the batch axes last (`last`, runtime/contract.py), for many
states at once (sample paths): there numpy's einsum is fast up to three operands and slow beyond,
so a term of four or more is contracted in pairs first (_pairwise, the order fixed here), and a
contraction of named operands that several terms compute is named at its first evaluation and
read by that name after (Shared). At a batch of 256 that is 6-20x faster than the batch-first
code; for one state it costs about the same.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import sympy as sp

from derive.printer import NumpyPrinter

#: operands read from the averages E (the activation's kernels, evaluated by runtime.averages)
AVERAGE_PREFIXES = ("mean_", "pair_", "multi_")


@dataclass(frozen=True)
class Term:
    """coeff * einsum(subscripts of factors -> output) of the named operands."""

    coeff: sp.Expr
    factors: tuple            # ((operand, subscripts), ...), sorted


def terms(monomials, output, free=None, eta=None):
    """Monomials (derive.drift.Monomial) as Terms with einsum subscripts over `output`; eta -> 1."""
    out = []
    for m in monomials:
        subscripts, names = m.einsum(output, free)
        ins = subscripts.split("->")[0].split(",")
        coeff = m.coeff.subs(eta, 1) if eta is not None else m.coeff
        out.append(Term(sp.nsimplify(coeff), tuple(sorted(zip(names, ins)))))
    return out


# -- like terms, and blocks symmetric under a swap of output indices -----------------------

#: operands symmetric in their last two indices (S_ww, S_vv and S per atom j)
SYMMETRIC = ("Q", "T", "WW", "S", "S_ww", "S_vv", "rho_eye")


def _forms(name, subs):
    """The ways to write operand[subs] that its symmetries allow: S_vw[jab] = S_wv[jba]; SYMMETRIC
    operands and pair_<o>_<o> under a swap of their last two indices; multi_<o1>_..._<on> under any
    permutation of units with equal derivative orders."""
    if name == "S_vw":
        name, subs = "S_wv", subs[0] + subs[2] + subs[1]
    forms = {(name, subs)}
    orders = name.split("_")[1:]
    if name in SYMMETRIC or (name.startswith("pair_") and orders[0] == orders[1]):
        forms.add((name, subs[:-2] + subs[-1] + subs[-2]))
    elif name.startswith("multi_"):
        for perm in itertools.permutations(range(len(orders))):
            if all(orders[p] == orders[i] for i, p in enumerate(perm)):
                forms.add((name, "".join(subs[p] for p in perm)))
    return forms


def _key(term, output):
    """What a term computes, up to the names of its summed indices and its operands' symmetries:
    the smallest sorted factors over every naming of the summed indices A, B, ..."""
    summed = sorted({c for _, s in term.factors for c in s} - set(output))
    keys = []
    for perm in itertools.permutations("ABCDEFGH"[:len(summed)]):
        names = dict(zip(summed, perm))
        keys.append(tuple(sorted(min(_forms(n, "".join(names.get(c, c) for c in s))) for n, s in term.factors)))
    return min(keys)


def collected(terms_, output):
    """The terms with like terms (equal _key) added: the first one's factors, the coefficients'
    sum; terms that cancel dropped."""
    sums, first = {}, {}
    for t in terms_:
        k = _key(t, output)
        first.setdefault(k, t)
        sums[k] = sums.get(k, 0) + t.coeff
    return [Term(sp.nsimplify(c), first[k].factors) for k, c in sums.items() if c != 0]


def _swapped_term(term, swap):
    return Term(term.coeff, tuple(sorted((n, "".join(swap.get(c, c) for c in s)) for n, s in term.factors)))


def mirrored(terms_, output, swap):
    """(half, rest) of collected terms whose sum is X + X^T + rest, X = sum of `half` and X^T its
    transpose under the output-index swap `swap` ({'k': 'l', 'l': 'k'}): a term whose swap is another
    term with the same coefficient goes into half once for both, a term equal to its own swap into
    half at half its coefficient, any other into rest. Correct for any sum; for a symmetric block
    (the noise: N = D E[d theta d theta^T]) rest is empty and half has about half the terms."""
    keys = [_key(t, output) for t in terms_]
    index = {(k, t.coeff): i for i, (k, t) in enumerate(zip(keys, terms_))}
    used, half, rest = set(), [], []
    for i, t in enumerate(terms_):
        if i in used:
            continue
        used.add(i)
        k = _key(_swapped_term(t, swap), output)
        if k == keys[i]:
            half.append(Term(t.coeff / 2, t.factors))
            continue
        j = index.get((k, t.coeff))
        if j is None or j in used:
            rest.append(t)
            continue
        used.add(j)
        half.append(t)
    return half, rest


def transposes(a, b, output, free=None, eta=None, swap=None):
    """Whether the sum of monomials `b` is that of `a` under the output-index swap `swap`, term by
    term (the noise's (v, w) block and its (w, v) block)."""
    def table(ts):
        return {_key(t, output): t.coeff for t in collected(ts, output)}
    return table([_swapped_term(t, swap) for t in terms(a, output, free, eta)]) == table(terms(b, output, free, eta))


def axes(output, swap):
    """The transpose of the output axes that the index swap `swap` is: 'jkl', k <-> l -> (0, 2, 1)."""
    return tuple(output.index(swap.get(c, c)) for c in output)


# -- the factor tree ----------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    term: Term


@dataclass(frozen=True)
class Pulled:
    """coeff * prod(factors) * (sum of children), factors with free indices only."""

    coeff: sp.Expr
    factors: tuple
    children: tuple


def _magnitude(coeff):
    return -coeff if coeff.could_extract_minus_sign() else coeff


def _candidates(term, output):
    """What can be pulled out of a term: its coefficient's magnitude (if not 1), and each factor
    with free indices only whose removal leaves the free indices covered."""
    out = []
    if _magnitude(term.coeff) != 1:
        out.append(("coeff", _magnitude(term.coeff)))
    for i, (name, subs) in enumerate(term.factors):
        rest = term.factors[:i] + term.factors[i + 1:]
        if rest and set(subs) <= set(output) and set(output) <= set("".join(s for _, s in rest)):
            out.append(("factor", (name, subs)))
    return list(dict.fromkeys(out))


def _without(term, item):
    kind, value = item
    if kind == "coeff":
        return Term(sp.nsimplify(term.coeff / value), term.factors)
    factors = list(term.factors)
    factors.remove(value)
    return Term(term.coeff, tuple(factors))


def factor(terms_, output):
    """The terms as a list of tree nodes (Leaf, Pulled) whose sum they are."""
    counts = Counter(item for t in terms_ for item in _candidates(t, output))
    best = [(n, item) for item, n in counts.items() if n >= 2]
    if not best:
        return [Leaf(t) for t in terms_]
    # most shared first; a power of D before an array (the expansion's orders stay visible)
    _, item = min(best, key=lambda b: (-b[0], b[1][0] != "coeff", str(b[1][1])))
    inside = [t for t in terms_ if item in _candidates(t, output)]
    rest = [t for t in terms_ if item not in _candidates(t, output)]
    children = factor([_without(t, item) for t in inside], output)
    coeff, factors = (item[1], ()) if item[0] == "coeff" else (sp.S.One, (item[1],))
    if len(children) == 1 and isinstance(children[0], Pulled):
        child = children[0]
        node = Pulled(coeff * child.coeff, factors + child.factors, child.children)
    else:
        node = Pulled(coeff, factors, tuple(children))
    return [node] + factor(rest, output)


# -- printing -----------------------------------------------------------------------------

def operand(name):
    return f"E.{name}" if name.startswith(AVERAGE_PREFIXES) else name


def _coeff(coeff):
    return sp.pycode(coeff) if not coeff.free_symbols else f"({NumpyPrinter().doprint(coeff)})"


#: the most operands of one numpy.einsum call: numpy has fast inner loops for up to three; with
#: four or more its generic loop took 40-150 us a call at a batch of 256 (batch last), against
#: 3-7 us for each of the two or three calls of the same contraction split in pairs
MAX_OPERANDS = 3


def _pairwise(operands, output):
    """Contract pairs of operands until at most MAX_OPERANDS remain: each time the pair whose
    product keeps the fewest indices (those the other operands or the output still need), then
    the fewest indices to loop over, then the first in the term's order. Fixed at derive time."""
    ops = list(operands)
    while len(ops) > MAX_OPERANDS:
        best = None
        for i in range(len(ops)):
            for j in range(i + 1, len(ops)):
                needed = "".join(s for k, (_, s) in enumerate(ops) if k not in (i, j)) + output
                letters = ops[i][1] + ops[j][1]
                kept = "".join(dict.fromkeys(c for c in letters if c in needed))
                key = (len(kept), len(set(letters)), i, j)
                if best is None or key < best[0]:
                    best = key, kept
        (_, _, i, j), kept = best
        pair = ops[i], ops[j]
        ops[i] = (pair, kept)
        del ops[j]
    return ops


def _canonical(operands, output):
    """A contraction of named operands with its indices renamed in order of first appearance:
    R[kb] T0[lb] -> kbl and R[lb] T0[kb] -> lbk are the same array."""
    names = {}
    for c in "".join(s for _, s in operands) + output:
        names.setdefault(c, chr(ord("a") + len(names)))
    return tuple(e for e, _ in operands), ",".join("".join(names[c] for c in s) for _, s in operands), \
        "".join(names[c] for c in output)


class Shared:
    """The contractions of named operands (arguments, averages, or products already named) that
    several terms of one function compute: in a first pass over the function's sums (`counting`)
    each is counted; in the second, each counted twice or more is computed once, named where it
    is first evaluated, `(sub1 := _einsum(...))`, and read by that name after. Batch axes last."""

    def __init__(self, prefix="sub"):
        self.counts, self.names, self.counting, self.prefix = Counter(), {}, True, prefix

    def use(self, operands, output, text):
        key = _canonical(operands, output)
        if self.counting:
            self.counts[key] += 1
            return text
        if self.counts[key] < 2:
            return text
        if key not in self.names:
            self.names[key] = f"{self.prefix}{len(self.names) + 1}"
            return f"({self.names[key]} := {text})"
        return self.names[key]


def _named(expr):
    return expr.replace("_", "a").replace(".", "a").isalnum()


def _einsum(operands, output, last=False):
    """_einsum (runtime.contract.einsum: numpy.einsum's C loop) over [(expression, subscripts)] -> '...' +
    output (output + '...': `last`);
    with `last`, more than MAX_OPERANDS operands are contracted in pairs first (_pairwise), and
    `last` a Shared: a contraction of named operands that several terms compute is computed once."""
    if len(operands) == 1 and operands[0][1] == output:
        return operands[0][0]
    if last and len(operands) > MAX_OPERANDS:
        def text(op):
            expr, subs = op
            return (_einsum([text(o) for o in expr], subs, last), subs) if isinstance(expr, tuple) else op
        return _einsum([text(o) for o in _pairwise(operands, output)], output, last)
    subscripts = ",".join(s + "..." if last else "..." + s for _, s in operands) + "->" + \
        (output + "..." if last else "..." + output)
    call = f"_einsum({subscripts!r}, {', '.join(e for e, _ in operands)})"
    if isinstance(last, Shared) and all(_named(e) for e, _ in operands):
        return last.use(operands, output, call)
    return call


def _signed(node, output, last=False):
    """(sign, source of the node without its sign)."""
    if isinstance(node, Leaf):
        t = node.term
        negative = t.coeff.could_extract_minus_sign()
        mag = _magnitude(t.coeff)
        body = _einsum([(operand(n), s) for n, s in t.factors], output, last)
        return ("-" if negative else "+"), (body if mag == 1 else f"{_coeff(mag)} * {body}")
    inner = _sum(node.children, output, nested=True, last=last)
    negative = node.coeff.could_extract_minus_sign()
    mag = _magnitude(node.coeff)
    body = _einsum([(operand(n), s) for n, s in node.factors] + [(inner, output)], output, last) \
        if node.factors else inner
    return ("-" if negative else "+"), (body if mag == 1 else f"{_coeff(mag)} * {body}")


def _sum(nodes, output, nested=False, last=False):
    parts = [_signed(n, output, last) for n in nodes]
    text = " ".join(f"{s} {b}" for s, b in parts)
    text = text[2:] if text.startswith("+ ") else "-" + text[2:]
    return f"({text})" if nested and len(parts) > 1 else text


def source(monomials, output, free=None, eta=None, indent=None, last=False, mirror=None):
    """The sum of the monomials (like terms collected) as one numpy expression over '...' + output,
    factored; '0.0' if there are none. `indent`: its top-level terms one per line, in parentheses, at
    that indent. `last`: the batch axes last, output + '...' (runtime.contract: every operand moved
    so), or a Shared that also names the contractions several terms compute (see Shared).
    `mirror`: an output-index swap under which the sum is symmetric, printed as
    _mirrored(axes, X) + rest (runtime.contract.mirrored; see `mirrored`)."""
    ts = collected(terms(monomials, output, free, eta), output)
    if mirror is not None:
        half, rest = mirrored(ts, output, mirror)
        if half:
            text = f"_mirrored({axes(output, mirror)}, {_printed(half, output, indent, last)})"
            return text + (f" + {_printed(rest, output, indent, last)}" if rest else "")
    return _printed(ts, output, indent, last)


def _printed(ts, output, indent=None, last=False):
    """source() of Terms."""
    if not ts:
        return "0.0"
    nodes = factor(ts, output)
    if indent is None or len(nodes) == 1:
        return _sum(nodes, output, last=last)
    lines = [_sum([n], output, last=last) for n in nodes]
    lines = [lines[0]] + [line if line.startswith("-") else "+ " + line for line in lines[1:]]
    lines = [line.replace("-", "- ", 1) if line.startswith("-") and i else line for i, line in enumerate(lines)]
    return "(\n" + "\n".join(indent + line for line in lines) + "\n" + indent[:-4] + ")"
