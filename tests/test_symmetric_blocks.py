"""derive.contraction's like terms and mirrored blocks: the printed sum of a noise block (like terms
added, a diagonal block as X + X^T + rest, an off-diagonal block as the transpose of its partner)
equals the plain sum of its monomials, one numpy.einsum each, on random operands that have the
symmetries the collection assumes (S, Q, T, WW symmetric, S_vw = S_wv^T, E.pair_o_o symmetric,
E.multi_* invariant under permuting units of equal derivative orders). Also for a sum that is not
symmetric (some terms dropped), where the mirrored form must keep every unmatched term."""
import itertools
import types

import numpy as np
import pytest
import sympy as sp

from derive import contraction, finite, rules
from runtime import contract

N = 3          # atoms J = units K = 3: every axis has one length
VALUES = {"D": 7.0, "kappa": 0.3, "lr": 0.7}
SWAP = {False: {"k": "l", "l": "k"}, True: {"j": "i", "i": "j", "k": "l", "l": "k"}}


def _symmetrised(a, groups):
    """a averaged over the permutations of each group of axes."""
    for group in groups:
        perms = list(itertools.permutations(group))
        out = np.zeros_like(a)
        for p in perms:
            axes = list(range(a.ndim))
            for src, dst in zip(group, p):
                axes[src] = dst
            out += a.transpose(axes)
        a = out / len(perms)
    return a


def _operands(ts, rng):
    names = {n: len(s) for t in ts for n, s in t.factors}
    ops = {}
    for name, ndim in sorted(names.items()):
        a = rng.normal(size=(N,) * ndim)
        if name in contraction.SYMMETRIC or (name.startswith("pair_") and len(set(name.split("_")[1:])) == 1):
            a = _symmetrised(a, [(ndim - 2, ndim - 1)])
        elif name.startswith("multi_"):
            orders = name.split("_")[1:]
            a = _symmetrised(a, [tuple(i for i, o in enumerate(orders) if o == order) for order in set(orders)])
        elif name == "rho_eye":
            a = np.diag(rng.normal(size=N))
        ops[name] = a
    if "S_vw" in ops:
        ops["S_vw"] = np.swapaxes(ops["S_wv"], 1, 2)
    return ops


def _namespace(ops):
    averages = {n: a for n, a in ops.items() if n.startswith(contraction.AVERAGE_PREFIXES)}
    return {"numpy": np, "E": types.SimpleNamespace(**averages), "_mirrored": contract.mirrored,
            "_swapped": contract.swapped, "_einsum": contract.einsum, **VALUES, **{n: a for n, a in ops.items() if n not in averages}}


def _plain(ts, output, ops):
    total = 0.0
    for t in ts:
        coeff = float(t.coeff.subs({s: VALUES[s.name] for s in t.coeff.free_symbols}))
        total = total + coeff * np.einsum(",".join(s for _, s in t.factors) + "->" + output,
                                          *(ops[n] for n, _ in t.factors))
    return total


def _blocks(rule, cross):
    noise = finite.derive_noise(rules.get(rule), cross=cross)
    output, free = ("jikl", finite.FREE_CROSS) if cross else ("jkl", finite.FREE)
    return noise, output, free


@pytest.mark.parametrize("rule, cross", [("vanilla", False), ("vanilla", True), ("tied", False), ("tied", True)])
def test_mirrored_blocks_equal_the_plain_sum(rule, cross):
    noise, output, free = _blocks(rule, cross)
    blocks = {fh: contraction.terms(ms, output, free, rules.eta) for fh, ms in noise.N.items()}
    ops = _operands([t for ts in blocks.values() for t in ts], np.random.default_rng(0))
    axes = contraction.axes(output, SWAP[cross])
    for (f, h), ts in sorted(blocks.items()):
        expected = _plain(ts, output, ops)
        atol = 1e-12 * np.abs(expected).max()
        if f == h:
            half, rest = contraction.mirrored(contraction.collected(ts, output), output, SWAP[cross])
            assert not rest and len(half) < 0.65 * len(ts)          # symmetric: about half the terms
            printed = contraction.source(noise.N[(f, h)], output, free, rules.eta, last=True, mirror=SWAP[cross])
            np.testing.assert_allclose(eval(printed, _namespace(ops)), expected, rtol=1e-12, atol=atol)
        else:
            assert contraction.transposes(noise.N[(h, f)], noise.N[(f, h)], output, free, rules.eta, SWAP[cross])
            np.testing.assert_allclose(contract.swapped(_plain(blocks[(h, f)], output, ops), axes), expected,
                                       rtol=1e-12, atol=atol)


def test_mirrored_keeps_what_has_no_mirror():
    """A sum that is not symmetric (every third monomial of the vanilla (w, w) block dropped): the
    mirrored form still equals it, with the unmatched terms in rest; the off-diagonal test says no."""
    noise, output, free = _blocks("vanilla", False)
    ms = [m for i, m in enumerate(noise.N[("w", "w")]) if i % 3]
    ts = contraction.terms(ms, output, free, rules.eta)
    half, rest = contraction.mirrored(contraction.collected(ts, output), output, SWAP[False])
    assert rest
    ops = _operands(ts, np.random.default_rng(2))
    expected = _plain(ts, output, ops)
    assert np.abs(expected - np.swapaxes(expected, 1, 2)).max() > 1e-3 * np.abs(expected).max()
    got = eval(contraction.source(ms, output, free, rules.eta, last=True, mirror=SWAP[False]), _namespace(ops))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    wv = noise.N[("w", "v")]
    assert not contraction.transposes(noise.N[("v", "w")], wv[1:], output, free, rules.eta, SWAP[False])


def test_collected_adds_like_terms_only():
    """R[kb] T0[lb] and T0[lc] R[kc] are one term; Q[kb] X[bl] and Q[bk] X[bl] are one (Q
    symmetric); R[kb] Y[bl] and R[bk] Y[bl] are two (R is not)."""
    T = contraction.Term
    one = sp.Integer(1)
    same = [T(one, (("R", "kb"), ("T0", "lb"))), T(one, (("R", "kc"), ("T0", "lc")))]
    assert [t.coeff for t in contraction.collected(same, "kl")] == [2]
    sym = [T(one, (("Q", "kb"), ("X", "bl"))), T(one, (("Q", "bk"), ("X", "bl")))]
    assert len(contraction.collected(sym, "kl")) == 1
    not_sym = [T(one, (("R", "kb"), ("Y", "bl"))), T(one, (("R", "bk"), ("Y", "bl")))]
    assert len(contraction.collected(not_sym, "kl")) == 2
