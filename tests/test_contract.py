"""runtime.contract: an einsum with the batch axes last, on arrays moved by batch_last and moved
back by batch_first, equals numpy.einsum with the batch first, for random specs and shapes
(repeated indices, summed indices, operands with fewer batch axes or none, size-1 batch axes)."""
import types

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import contract

LETTERS = "ijklbc"


@st.composite
def problems(draw):
    sizes = {c: draw(st.integers(1, 3)) for c in LETTERS}
    batch = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    operands = []
    for _ in range(draw(st.integers(1, 4))):
        subs = "".join(draw(st.lists(st.sampled_from(LETTERS), min_size=0, max_size=4)))
        # each operand's batch: a suffix of the full batch, some axes of length 1 (broadcast)
        own = batch[len(batch) - draw(st.integers(0, len(batch))):]
        own = tuple(1 if draw(st.booleans()) else n for n in own)
        operands.append((subs, own))
    used = sorted(set("".join(s for s, _ in operands)))
    out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
    seed = draw(st.integers(0, 2**32 - 1))
    return sizes, batch, operands, out, seed


@settings(max_examples=300, deadline=None)
@given(problems())
def test_batch_last_einsum_equals_einsum(problem):
    sizes, batch, operands, out, seed = problem
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=own + tuple(sizes[c] for c in subs)) for subs, own in operands]
    first = np.einsum(",".join("..." + s for s, _ in operands) + "->..." + out, *arrays)
    E, full, moved = contract.batch_last(types.SimpleNamespace(), (),
                                         *((a, len(s)) for a, (s, _) in zip(arrays, operands)))
    assert full == np.broadcast_shapes(*(own for _, own in operands))
    assert all(m.shape == tuple(sizes[c] for c in s) + (1,) * (len(full) - len(own)) + own
               for m, (s, own) in zip(moved, operands))
    last = np.einsum(",".join(s + "..." for s, _ in operands) + "->" + out + "...", *moved)
    back = contract.batch_first(last, full)
    assert back.shape == first.shape
    np.testing.assert_allclose(back, first, rtol=1e-12, atol=1e-12)


def test_averages_and_constants_move_with_the_batch():
    """E's averages: the number of unit axes from the name (mean 1, pair 2, multi_a_b_c 3, unit 1);
    a constant gets one trailing axis of length 1 per batch axis."""
    rng = np.random.default_rng(0)
    E = types.SimpleNamespace(mean_1=rng.normal(size=(5, 2)), pair_2_0=rng.normal(size=(5, 2, 2)),
                              multi_1_0_0=rng.normal(size=(5, 2, 2, 2)), unit=np.array([0.0, 1.0]),
                              pair_1_1=None)
    E2, batch, (theta,) = contract.batch_last(E, ("mean_1", "pair_2_0", "multi_1_0_0"), (rng.normal(size=(3, 4)), 2))
    assert batch == (5,)
    assert E2.mean_1.shape == (2, 5) and E2.pair_2_0.shape == (2, 2, 5) and E2.multi_1_0_0.shape == (2, 2, 2, 5)
    assert E2.unit.shape == (2, 1) and theta.shape == (3, 4, 1) and not hasattr(E2, "pair_1_1")
    np.testing.assert_array_equal(E2.multi_1_0_0[..., 3], E.multi_1_0_0[3])
    assert contract.constant(np.eye(2), batch).shape == (2, 2, 1)
    assert contract.batch_first(E2.pair_2_0, batch).flags.c_contiguous


def test_generated_noise_on_a_batch_equals_one_state_at_a_time():
    """generated/rules.py's noise functions (batch axes moved last inside) on a batch of states
    equal the same functions called on each state alone, for every rule, K = 1..3."""
    import inspect

    from generated import rules
    rng = np.random.default_rng(1)
    for name in [f for f in vars(rules) if f.startswith(("noise_", "spike_noise_", "bias_noise_"))]:
        for K, J in ((1, 2), (2, 1), (3, 2)):
            P, F = 3, (K if name.endswith("tied") else 2 * K)
            E = {n: rng.normal(size=(P,) + (K,) * contract.core_ndim(n)) for n in rules.AVERAGES[name]}

            def sym(*shape):
                X = rng.normal(size=shape)
                return X + np.swapaxes(X, -1, -2)
            args = dict(Q=sym(P, K, K), R=rng.normal(size=(P, K, K)), T=sym(P, K, K), T0=rng.normal(size=(P, K, K)),
                        WW=sym(P, K, K), lr=0.7, D=300.0, S=sym(P, J, F, F), rho_hat=rng.uniform(size=J),
                        m_rho=rng.uniform(size=J), theta=rng.normal(size=(P, J, F)), b=rng.normal(size=(P, K)),
                        rho_eye=np.diag(rng.uniform(size=J)), kappa=0.3)
            params = [p for p in inspect.signature(getattr(rules, name)).parameters if p in args]
            unit = np.r_[0.0, np.ones(K - 1)]
            batched = getattr(rules, name)(types.SimpleNamespace(**E, unit=unit), **{p: args[p] for p in params})
            for i in range(P):
                alone = getattr(rules, name)(types.SimpleNamespace(**{n: v[i] for n, v in E.items()}, unit=unit),
                                             **{p: args[p][i] if p in ("Q", "R", "T", "T0", "WW", "S", "theta", "b")
                                                else args[p] for p in params})
                for x, y in zip(batched if isinstance(batched, tuple) else (batched,),
                                alone if isinstance(alone, tuple) else (alone,)):
                    np.testing.assert_allclose(x[i], y, rtol=1e-12, atol=1e-12 * np.abs(y).max())
