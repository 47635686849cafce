"""Direct online-SGD simulation of the shallow autoencoder (SPEC section 1).

x ~ N(0, Omega) fresh at every step, loss |x - x_hat|^2 / (2D), time t = steps / D. Rules:

    vanilla    w_k += (lr/D^2)(v_k.e) g'(lam_k) x/sqrt(D),  v_k += (lr/D) g(lam_k) e
               (+ b_k += (lr/D^2)(v_k.e) g'(lam_k) when a bias b0 is given)
               (+ an output bias, x_hat = V^T g + c, c += (lr/D) e, when c0 is given)
    truncated  as vanilla with e_k = x - sum_{l<=k} v_l g(lam_l) in both updates of unit k
    tied       w_k += (lr/D)[g(lam_k) e + (w_k.e) g'(lam_k) x/sqrt(D)]   (V = W)
    sanger     y = W x/sqrt(D), W += (lr/D^2)(y x^T - tril(y y^T) W)   (linear g, V = W)

Every rule is equivariant under W -> W U, V -> V U, x -> U^T x, so the simulation runs in the
eigenbasis of Omega: it evolves omega = W U, upsilon = V U with x_tau = sqrt(rho_tau) xi_tau
(independent components). This is the same stochastic process as SGD on x = U x' (the same
trajectory up to rounding for the same xi), without any D x D work per step; the final W, V
are rotated back. Seeds are a leading array axis, each seed with its own random streams
(SeedSequence(seed).spawn(2): training samples, test set), so a seed's trajectory does not
depend on the other seeds in the batch. Samples are drawn in blocks of BLOCK per seed (with
several seeds a background thread draws the next block while the current one is used);
every update uses a fresh sample.

Real data (SPEC section 2, universality): with `samples` X (N, D) every step instead draws one
row of X uniformly with replacement (training stream), rotated into the eigenbasis once
up front (X U); the test error is then on `test_set` (held-out rows) if given, else on
`test_samples` rows of X drawn with replacement (test stream): the empirical distribution
the training draws from.
"""
import itertools
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from runtime import progress as _progress
from runtime.check import rule_params
from runtime.progress import DIVERGED, Interrupted, divergence_limit
from runtime.schedules import Schedule, resolve
from runtime.spectrum import Spectrum, eigenvalues, eigenvectors, encoder_weights, weights

RULES = ("vanilla", "truncated", "tied", "sanger")
#: samples drawn per block and seed
BLOCK = 256
#: the test set is kept in memory up to this many numbers (all seeds), else redrawn per record
TEST_MEMORY = 1 << 25
_TEST_CHUNK = 2048


@dataclass
class SimulationResult:
    """Recorded trajectories; leading axis = seed, second = record time.

    t (n,): record times (steps / D); error (S, n): population error from the order
    parameters; test_error (S, n): mean |x - x_hat|^2 / (2D) on a fixed held-out set per seed;
    Q, R, T, T0 (S, n, K, K); b (S, n, K) or None; c (S, D): the final output bias, or None;
    overlap (S, n, K, n_overlap): w_k . u_tau / |w_k|
    for the eigen-directions overlap_index (decreasing eigenvalue); pca_errors (K + 1,):
    eps_PCA(m), m = 0..K; W, V (S, K, D): final weights (V = W for tied and sanger), or the
    weights at which a seed was stopped. diverged (S,): the seeds stopped because their error
    passed DIVERGED x max(eps_PCA(0), their initial error) or a weight became non-finite; their
    later records are NaN, the other seeds ran on. status 0: ok; -1: some seed diverged
    (`message` says which and when, and a RuntimeWarning was issued); -2: interrupted (Ctrl-C).
    """
    t: np.ndarray
    error: np.ndarray
    test_error: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    T0: np.ndarray
    b: object
    overlap: np.ndarray
    overlap_index: np.ndarray
    pca_errors: np.ndarray
    W: np.ndarray
    V: np.ndarray
    c: object
    seeds: tuple
    diverged: np.ndarray
    rule: str
    activation: str
    lr: object                    # a float, or the runtime.schedules schedule SGD followed
    status: int = 0
    message: str = ""
    steps_per_second: float = float("nan")

    def mean(self, what="error"):
        """Mean over seeds of the recorded array `what` ("error", "test_error", "Q", ...)."""
        return np.mean(getattr(self, what), axis=0)

    def std(self, what="error"):
        """Sample standard deviation over seeds (ddof = 1; zeros for a single seed)."""
        a = getattr(self, what)
        return np.std(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1:])


def error_from_order_parameters(act, Q, R, T0, total_variance_over_2D, b=None):
    """Population error eps = sum_tau rho_tau / (2D) - sum_k R_kk E[g'(lam_k)]
    + 1/2 sum_kl T0_kl E[g(lam_k) g(lam_l)], lam ~ N(b, Q) (SPEC section 3; Stein gives
    E[nu_k g(lam_k)] = R_kk E g'(lam_k)). Q, R, T0 of shape (..., K, K), b (..., K) or None.

    The activation's derived `population_error`, with the shifted kernels when b is given (the
    same formulas the equations of motion use). For tied weights pass the order parameters of V = W.
    """
    Q, R, T0 = (np.asarray(a, dtype=float) for a in (Q, R, T0))
    with np.errstate(all="ignore"):
        return act.population_error(Q, R, None, T0, total_variance_over_2D,
                                    b=None if b is None else np.asarray(b, dtype=float))


def output_bias_error(act, Q, b, CV, CC):
    """What an output bias c adds to the population error (x_hat = V^T g(lambda) + c, E x = 0):
    |c|^2/(2D) + c.V^T E[g(lambda)]/D = CC/2 + sum_k CV_k E[g(lambda_k)], lambda_k ~ N(b_k, Q_kk),
    with CV_k = v_k.c/D and CC = |c|^2/D. Q (..., K, K), b (..., K) or None, CV (..., K), CC (...)."""
    q = np.diagonal(Q, axis1=-2, axis2=-1)
    with np.errstate(all="ignore"):
        mean = act.mean_0(q) if b is None else act.shifted_mean_0(b, q)
    return CC / 2 + np.sum(CV * mean, axis=-1)


def simulate(activation, eigvals, eigvecs, W0, V0, lr=1.0, times=None, rule="vanilla", b0=None,
             seeds=1, test_samples=10000, progress=True, n_overlap=8, prefetch=None,
             samples=None, test_set=None, c0=None, rule_params=None):
    """Online SGD from (W0, V0) on x ~ N(0, U diag(eigvals) U^T), recorded at `times`.

    activation: a generated module (e.g. generated.erf) or its name. eigvecs: (D, D) with
    orthonormal columns, or None for U = I. W0, V0: (K, D) (V0 is ignored, and may be None,
    for tied and sanger). times: sorted times >= 0 (default 0, 1, ..., 10), each recorded
    after round(t D) steps. lr: a positive number, or a schedule eta(t) (runtime.schedules: a
    callable of t, constant / inverse_time / cosine or their config form): step n (n = 0, 1,
    ...) uses eta(n / D). b0: initial encoder bias (K,), trains a bias (vanilla only).
    c0: initial output bias (D,), trained by SGD on the same loss (x_hat = V^T g + c,
    c += (lr/D) e; vanilla only). rule_params: the rule's parameters, as integrate takes them
    (weight decay {"kappa": 0.01}: w_k, v_k -= (lr kappa/D) w_k, v_k per step). rule: one of
    RULES, or a rule added with derive.rules.register_rule, whose update derive.update runs
    as written.
    seeds: a count n (seeds 0..n-1) or a sequence of seeds. test_samples: held-out samples per
    seed (0: no test error). n_overlap: eigen-directions kept in `overlap`. progress: a
    progress bar on stderr once a run has taken a few seconds. prefetch: draw the next block of samples in
    a background thread (default: with several seeds, where drawing dominates).
    samples: (N, D) real samples to train on instead of x ~ N(0, Omega), each step one row
    drawn with replacement; `error` stays the Gaussian population error of the weights on
    eigvals (pass the samples' own spectrum, e.g. runtime.data.Dataset). test_set: (M, D)
    held-out samples for the test error (the same set for every seed; test_samples is then
    ignored); without it, with `samples`, the test set is test_samples rows of `samples`.

    Returns a SimulationResult. A diverging seed (error above DIVERGED x max(eps_PCA(0), its
    initial error), or non-finite weights; checked after every block of samples and at every
    record) does not raise: it is stopped (NaN from then on, `diverged` True), the others run
    on, status is -1, the message names the seed and the time, and a RuntimeWarning is issued.
    Ctrl-C raises runtime.progress.Interrupted, whose `.result` holds the records so far.
    Bad input raises ValueError naming the problem.
    """
    registered = _registered_rule(rule)
    act = _activation(activation)
    kappa = _decay(rule, rule_params, registered)
    if rule == "sanger" and act.NAME != "linear":
        raise ValueError(f"rule 'sanger' is defined for the linear activation only, got {act.NAME!r}")
    rho = eigenvalues(eigvals)
    D = rho.size
    U = None if eigvecs is None else eigenvectors(eigvecs, D)
    W0 = encoder_weights(W0, D)
    K = W0.shape[0]
    tied = ties_v_to_w(rule, registered)
    if not tied:
        if V0 is None:
            raise ValueError(f"rule {rule!r} needs V0 of shape ({K}, {D})")
        V0 = weights(np.asarray(V0, dtype=float), (K, D), "V0")
    if callable(lr) or isinstance(lr, (dict, tuple, list)):
        lr = resolve(lr)              # a schedule, or the float of a constant one (the same arithmetic)
    if not isinstance(lr, Schedule):
        lr = _positive(lr, "lr")
    t = _times(np.arange(11.0) if times is None else times)
    if b0 is not None:
        if rule != "vanilla" and (registered is None or registered.db is None):
            raise ValueError(f"a trained bias (b0) is implemented for rule 'vanilla' only, not {rule!r}")
        b0 = weights(np.asarray(b0, dtype=float), (K,), "b0")
    if c0 is not None:
        if rule != "vanilla" and (registered is None or registered.dc is None):
            raise ValueError(f"a trained output bias (c0) is implemented for rule 'vanilla' only, not {rule!r}")
        c0 = weights(np.asarray(c0, dtype=float), (D,), "c0")
    seeds = _seeds(seeds)
    if int(test_samples) != test_samples or test_samples < 0:
        raise ValueError(f"test_samples must be a non-negative integer, got {test_samples!r}")
    if int(n_overlap) != n_overlap or n_overlap < 0:
        raise ValueError(f"n_overlap must be a non-negative integer, got {n_overlap!r}")
    rotate = (lambda X: X) if U is None else (lambda X: X @ U)
    if samples is not None:
        samples = rotate(_samples(samples, D, "samples"))
    if test_set is not None:
        test_set = rotate(_samples(test_set, D, "test_set"))

    S = len(seeds)
    prefetch = S > 1 if prefetch is None else bool(prefetch)
    steps = np.rint(t * D).astype(np.int64)
    t = steps / D
    sqrt_rho = np.sqrt(rho)
    total_2D = float(np.sum(rho)) / (2 * D)
    top = np.argsort(-rho, kind="stable")[:min(int(n_overlap), D)]

    # state of the running seeds in the eigenbasis, leading axis = position in `live`
    live = np.arange(S)
    W = np.repeat((W0 if U is None else W0 @ U)[None], S, axis=0)
    V = W if tied else np.repeat((V0 if U is None else V0 @ U)[None], S, axis=0)
    b = None if b0 is None else np.repeat(b0[None], S, axis=0)
    c = None if c0 is None else np.repeat((c0 if U is None else c0 @ U)[None], S, axis=0)
    streams = [np.random.SeedSequence(s).spawn(2) for s in seeds]
    draw = _gaussian(sqrt_rho) if samples is None else _rows(samples)
    test = _TestSet([ss[1] for ss in streams], int(test_samples), draw, D, test_set)
    advance = _steps(rule, registered)(act, W, V, b, lr, D, c, 0, kappa)

    n = t.size
    rec = dict(error=np.full((S, n), np.nan), test_error=np.full((S, n), np.nan),
               Q=np.full((S, n, K, K), np.nan), R=np.full((S, n, K, K), np.nan),
               T=np.full((S, n, K, K), np.nan), T0=np.full((S, n, K, K), np.nan),
               b=None if b is None else np.full((S, n, K), np.nan),
               overlap=np.full((S, n, K, top.size), np.nan))
    final = dict(W=np.empty((S, K, D)), V=np.empty((S, K, D)), c=None if c is None else np.empty((S, D)))
    died = {}                         # seed position -> (time, reason)
    limit = None                      # error above which a seed has diverged (set at t = 0)

    def keep_final(pos, Ws, Vs, cs):
        final["W"][pos], final["V"][pos] = Ws, Vs
        if cs is not None:
            final["c"][pos] = cs

    def check(step):
        """Stop the seeds whose weights are non-finite or whose error passed `limit`."""
        nonlocal W, V, b, c, live, advance, gens
        finite = np.all(np.isfinite(W), axis=(1, 2)) & np.all(np.isfinite(V), axis=(1, 2))
        for extra in (b, c):
            if extra is not None:
                finite &= np.all(np.isfinite(extra), axis=1)
        with np.errstate(all="ignore"):
            err = _errors(act, W, V, b, c, rho, D, total_2D)
        bad = ~finite | ~(err <= limit)
        if not bad.any():
            return
        for i in np.flatnonzero(bad):
            died[int(live[i])] = (step / D, "weights became non-finite" if not finite[i]
                                  else f"error {err[i]:.3g} passed {limit:.3g} = {DIVERGED} x max(eps_PCA(0), initial error)")
        keep_final(live[bad], W[bad], V[bad], None if c is None else c[bad])
        ok = ~bad
        live, W, b, c = live[ok], W[ok], None if b is None else b[ok], None if c is None else c[ok]
        V = W if tied else V[ok]
        gens = [g for g, k in zip(gens, ok) if k]
        advance = _steps(rule, registered)(act, W, V, b, lr, D, c, step, kappa)

    def record(i):
        _record(rec, i, live, W, V, b, c, rho, D, act, total_2D, top, test)

    gens = [np.random.default_rng(ss[0]) for ss in streams]
    bufs = [np.empty((S, BLOCK, D)), np.empty((S, BLOCK, D))]

    def fill(buf, rngs, owners):
        for s, gen in enumerate(rngs):
            draw(gen, BLOCK, buf[s])
        return buf[:len(rngs)], owners

    def block():
        """The next block of samples and the seed positions its rows belong to (drawn ahead in a
        thread with prefetch, so rows of seeds stopped meanwhile may be among them)."""
        nonlocal pending, which
        if not prefetch:
            return fill(bufs[0], gens, live)
        X, owners = pending.result()
        which ^= 1
        if step + BLOCK < total:
            pending = pool.submit(fill, bufs[which], list(gens), live)
        return X, owners

    total = int(steps[-1])
    interrupted = None
    step = i = which = 0
    loop_time = 0.0
    with np.errstate(all="ignore"), ThreadPoolExecutor(1) as pool, \
            _progress.bar(total, f"simulate {act.NAME}/{rule}", progress, unit="step", unit_scale=True) as bar:
        initial = _errors(act, W, V, b, c, rho, D, total_2D)
        limit = divergence_limit(np.max(initial), total_2D)
        while i < n and steps[i] == 0:
            record(i)
            i += 1
        pending = pool.submit(fill, bufs[0], list(gens), live) if (total > 0 and prefetch) else None
        try:
            while step < total and live.size:
                tic = time.perf_counter()
                X, owners = block()
                j = 0
                B = min(BLOCK, total - step)
                while j < B and live.size:
                    if owners.size != live.size:
                        X, owners = X[np.isin(owners, live)], live
                    stop = min(B, j + int(steps[i]) - step) if i < n else B
                    advance(X, j, stop)
                    step += stop - j
                    j = stop
                    if i < n and steps[i] == step:
                        loop_time += time.perf_counter() - tic
                        check(step)
                        while i < n and steps[i] == step:
                            record(i)
                            i += 1
                        tic = time.perf_counter()
                loop_time += time.perf_counter() - tic
                if live.size:
                    check(step)
                bar.update(step - bar.n)
        except KeyboardInterrupt:
            interrupted = step / D
        finally:
            if pending is not None:
                pending.cancel()
    keep_final(live, W, V, c)

    diverged = np.zeros(S, dtype=bool)
    diverged[list(died)] = True
    notes = [f"seed {seeds[s]} diverged at t = {tt:g}: {why}" for s, (tt, why) in sorted(died.items())]
    if notes:
        warnings.warn("; ".join(notes), RuntimeWarning, stacklevel=2)
    if interrupted is not None:
        notes.append(f"interrupted at t = {interrupted:g}; records after it are NaN")
    Wf, Vf, cf = final["W"], final["V"], final["c"]
    if U is not None:
        Wf = Wf @ U.T
        Vf = Wf if tied else Vf @ U.T
        cf = None if cf is None else cf @ U.T
    result = SimulationResult(
        t=t, pca_errors=Spectrum.from_eigvals(rho)[0].pca_errors(K), overlap_index=top,
        W=Wf, V=Wf if tied else Vf, c=cf, seeds=tuple(seeds), diverged=diverged,
        rule=rule, activation=act.NAME, lr=lr, status=-2 if interrupted is not None else -1 if notes else 0,
        message="; ".join(notes) or "ok",
        steps_per_second=step / loop_time if loop_time > 0 else float("nan"), **rec)
    if interrupted is not None:
        raise Interrupted(f"simulate {act.NAME}/{rule} interrupted at t = {interrupted:g}; "
                          "the records so far are in .result", result)
    return result


# -- update rules: each returns advance(X, j0, j1) applying samples X[:, j0:j1] in order --------
# (steps n0, n0 + 1, ... of the run, which a schedule's learning rate eta(n / D) follows)

def _coefficients(lr, D, n0, *powers):
    """rates(m): the coefficients lr / D**p of each of the next m steps, one tuple per step. A
    float lr gives the same tuple at every step; a schedule (runtime.schedules) gives
    eta(n / D) / D**p at step n, counting from n0, from one vectorised call per block."""
    if not isinstance(lr, Schedule):
        same = itertools.repeat(tuple(lr / D ** p for p in powers))
        return lambda m: same
    n = n0

    def rates(m):
        nonlocal n
        eta = lr.rates((n + np.arange(m)) / D)
        n += m
        return zip(*[(eta / D ** p).tolist() for p in powers])
    return rates


def _vanilla(act, W, V, b, lr, D, c=None, n0=0, kappa=0.0):
    g_, dg_, mm = act.g, act.dg, np.matmul
    isq, rates = D ** -0.5, _coefficients(lr, D, n0, 2.5, 1, 2)

    def advance(X, j0, j1):
        nonlocal W, V, b, c
        for j, (cw, cv, cb) in zip(range(j0, j1), rates(j1 - j0)):
            x = X[:, j, :]
            lam = mm(W, x[:, :, None])[:, :, 0]
            lam *= isq
            if b is not None:
                lam += b
            g, gp = g_(lam), dg_(lam)
            e = x - mm(g[:, None, :], V)[:, 0, :]
            if c is not None:
                e -= c
            a = mm(V, e[:, :, None])[:, :, 0] * gp          # (v_k . e) g'_k
            if b is not None:
                b += cb * a
            a *= cw
            if kappa:                                       # weight decay, from the weights before the step
                W *= 1 - cv * kappa
                V *= 1 - cv * kappa
            W += a[:, :, None] * x[:, None, :]
            V += (cv * g)[:, :, None] * e[:, None, :]
            if c is not None:
                c += cv * e
    return advance


def _truncated(act, W, V, b, lr, D, c=None, n0=0, kappa=0.0):
    g_, dg_, mm = act.g, act.dg, np.matmul
    isq, rates = D ** -0.5, _coefficients(lr, D, n0, 2.5, 1)

    def advance(X, j0, j1):
        nonlocal W, V
        for j, (cw, cv) in zip(range(j0, j1), rates(j1 - j0)):
            x = X[:, j, :]
            lam = mm(W, x[:, :, None])[:, :, 0]
            lam *= isq
            g, gp = g_(lam), dg_(lam)
            E = g[:, :, None] * V
            np.cumsum(E, axis=1, out=E)
            np.subtract(x[:, None, :], E, out=E)            # e_k = x - sum_{l<=k} v_l g_l
            a = np.einsum("skd,skd->sk", V, E) * gp
            a *= cw
            if kappa:
                W *= 1 - cv * kappa
                V *= 1 - cv * kappa
            W += a[:, :, None] * x[:, None, :]
            V += (cv * g)[:, :, None] * E
    return advance


def _tied(act, W, V, b, lr, D, c=None, n0=0, kappa=0.0):
    g_, dg_, mm = act.g, act.dg, np.matmul
    isq, rates = D ** -0.5, _coefficients(lr, D, n0, 1.5, 1)

    def advance(X, j0, j1):
        nonlocal W
        for j, (cx, ce) in zip(range(j0, j1), rates(j1 - j0)):
            x = X[:, j, :]
            lam = mm(W, x[:, :, None])[:, :, 0]
            lam *= isq
            g, gp = g_(lam), dg_(lam)
            e = x - mm(g[:, None, :], W)[:, 0, :]
            a = mm(W, e[:, :, None])[:, :, 0] * gp          # (w_k . e) g'_k
            a *= cx
            upd = (ce * g)[:, :, None] * e[:, None, :]
            upd += a[:, :, None] * x[:, None, :]
            if kappa:
                W *= 1 - ce * kappa
            W += upd
    return advance


def _sanger(act, W, V, b, lr, D, c=None, n0=0, kappa=0.0):
    mm = np.matmul
    isq, rates = D ** -0.5, _coefficients(lr, D, n0, 2)

    def advance(X, j0, j1):
        nonlocal W
        for j, (c,) in zip(range(j0, j1), rates(j1 - j0)):
            x = X[:, j, :]
            y = mm(W, x[:, :, None])[:, :, 0]
            y *= isq
            upd = y[:, :, None] * x[:, None, :]
            upd -= mm(np.tril(y[:, :, None] * y[:, None, :]), W)
            upd *= c
            W += upd
    return advance


_RULE_STEPS = {"vanilla": _vanilla, "truncated": _truncated, "tied": _tied, "sanger": _sanger}


def _registered_rule(rule):
    """The derive.rules.Rule of a rule added with register_rule, None for the built-in RULES;
    ValueError for a rule neither knows."""
    if rule in RULES:
        return None
    try:
        from derive import rules as symbolic
    except ImportError:          # SymPy absent: only the built-in rules
        symbolic = None
    if symbolic is None or rule not in symbolic.RULES or rule in symbolic.BUILT_IN:
        extra = [] if symbolic is None else [r for r in symbolic.RULES if r not in symbolic.BUILT_IN]
        raise ValueError(f"unknown rule {rule!r}; known rules: {', '.join(list(RULES) + extra)}")
    return symbolic.RULES[rule]


def ties_v_to_w(rule, registered):
    """Whether `rule`'s update keeps V = W (tied, sanger, or a registered rule without dv);
    registered: _registered_rule(rule)."""
    return rule in ("tied", "sanger") or (registered is not None and registered.dv is None)


def _decay(rule, params, registered):
    """The built-in rules' weight decay kappa from rule_params, or a registered rule's parameters
    (derive.update takes them as they are); ValueError for an unknown or non-finite parameter."""
    if registered is not None:
        return rule_params(rule, registered.defaults(), params)
    return rule_params(rule, {} if rule == "sanger" else {"kappa": 0.0}, params).get("kappa", 0.0)


def _steps(rule, registered):
    """The step factory of a rule: its hand-written update, or a registered rule's (derive.update)."""
    return _RULE_STEPS[rule] if registered is None else _compiled(registered)


def _compiled(rule):
    """advance() for a rule added with register_rule, its update compiled by derive.update; `kappa`
    carries the rule's parameters."""
    def factory(act, W, V, b, lr, D, c=None, n0=0, params=None):
        from derive.update import Update
        update, rates = Update(rule, 1.0, D, params), _coefficients(lr, D, n0, 0)
        tied = rule.dv is None

        def advance(X, j0, j1):
            nonlocal W, V, b, c
            for j, (eta,) in zip(range(j0, j1), rates(j1 - j0)):
                dW, dV, db, dc = update(X[:, j, :], W, W if tied else V, b, c, act.DERIVATIVES, np)
                W += eta * dW
                if not tied:
                    V += eta * dV
                if db is not None:
                    b += eta * db
                if dc is not None:
                    c += eta * dc
        return advance
    return factory


# -- recording ---------------------------------------------------------------------------------

def _order_parameters(W, V, rho, D):
    """(Q, R, T, T0) of SPEC section 3 from the eigenbasis projections W, V (S, K, D)."""
    Wr, Vr = W * rho, V * rho
    Wt, Vt = W.transpose(0, 2, 1), V.transpose(0, 2, 1)
    return Wr @ Wt / D, Vr @ Wt / D ** 1.5, Vr @ Vt / D ** 2, V @ Vt / D


def _population_errors(act, Q, R, T0, V, b, c, D, total_2D):
    """The population error of each seed, the output bias's share included."""
    err = error_from_order_parameters(act, Q, R, T0, total_2D, b)
    if c is not None:
        err = err + output_bias_error(act, Q, b, np.matmul(V, c[:, :, None])[..., 0] / D,
                                      np.sum(c ** 2, axis=1) / D)
    return err


def _errors(act, W, V, b, c, rho, D, total_2D):
    """The population error of each running seed (S,)."""
    Q, R, _, T0 = _order_parameters(W, V, rho, D)
    return _population_errors(act, Q, R, T0, V, b, c, D, total_2D)


def _record(rec, i, live, W, V, b, c, rho, D, act, total_2D, top, test):
    """Order parameters (SPEC section 3, from the eigenbasis projections), errors, overlaps of
    the running seeds (positions `live`) at record i; the stopped seeds keep NaN."""
    Q, R, T, T0 = _order_parameters(W, V, rho, D)
    for name, val in (("Q", Q), ("R", R), ("T", T), ("T0", T0), ("b", b)):
        if val is not None:
            rec[name][live, i] = val
    norm = np.linalg.norm(W, axis=2)
    rec["overlap"][live, i] = W[:, :, top] / np.where(norm > 0, norm, 1.0)[:, :, None]
    rec["error"][live, i] = _population_errors(act, Q, R, T0, V, b, c, D, total_2D)
    if test.N:
        for pos, s in enumerate(live):
            rec["test_error"][s, i] = test.error(s, act, W[pos], V[pos], None if b is None else b[pos],
                                                 None if c is None else c[pos])


def _gaussian(sqrt_rho):
    """draw(gen, n, out): n samples x_tau = sqrt(rho_tau) xi_tau (eigenbasis) into out (n, D)."""
    def draw(gen, n, out):
        gen.standard_normal(out=out)
        out *= sqrt_rho
        return out
    return draw


def _rows(X):
    """draw(gen, n, out): n rows of X (N, D) chosen uniformly with replacement, into out."""
    def draw(gen, n, out):
        return np.take(X, gen.integers(X.shape[0], size=n), axis=0, out=out)
    return draw


class _TestSet:
    """A fixed held-out set per seed (in the eigenbasis), drawn by draw(gen, n, out) from the
    seed's test stream; kept in memory up to TEST_MEMORY numbers in all, else redrawn
    (identically) at every record. A given array `fixed` (M, D) is the test set of every seed."""

    def __init__(self, seqs, N, draw, D, fixed=None):
        self.seqs, self.N, self.draw, self.D = seqs, N, draw, D
        self.stored = None
        if fixed is not None:
            self.N = fixed.shape[0]
            chunks = [fixed[lo:lo + _TEST_CHUNK] for lo in range(0, self.N, _TEST_CHUNK)]
            self.stored = [[(X, np.einsum("nd,nd->n", X, X)) for X in chunks]] * len(seqs)
        elif N and len(seqs) * N * self.D <= TEST_MEMORY:
            self.stored = [list(self._draw(s)) for s in range(len(seqs))]

    def _draw(self, s):
        gen = np.random.default_rng(self.seqs[s])
        for lo in range(0, self.N, _TEST_CHUNK):
            n = min(_TEST_CHUNK, self.N - lo)
            X = self.draw(gen, n, np.empty((n, self.D)))
            yield X, np.einsum("nd,nd->n", X, X)

    def error(self, s, act, W, V, b, c=None):
        """mean |x - x_hat|^2 / (2D) = mean (|x|^2 - 2 g.(V x) + g^T V V^T g) / (2D), with an
        output bias c also + |c|^2 - 2 c.x + 2 g.(V c)."""
        G = V @ V.T
        total = 0.0
        for X, xx in (self.stored[s] if self.stored is not None else self._draw(s)):
            lam = X @ (W.T / np.sqrt(self.D))
            if b is not None:
                lam += b
            g = act.g(lam)
            P = X @ V.T
            total += np.sum(xx - 2 * np.sum(g * P, axis=1) + np.einsum("nk,kl,nl->n", g, G, g))
            if c is not None:
                total += np.sum(c @ c - 2 * (X @ c) + 2 * (g @ (V @ c)))
        return total / (self.N * 2 * self.D)


# -- input checks ------------------------------------------------------------------------------

def _activation(activation):
    if isinstance(activation, str):
        import generated
        return generated.load(activation)
    for attr in ("g", "dg", "NAME", "mean_1", "pair_0_0"):
        if not hasattr(activation, attr):
            raise ValueError(f"activation must be a generated module or its name; {activation!r} has no {attr!r}")
    return activation


def _samples(X, D, what):
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array of shape (N, D)") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != D:
        raise ValueError(f"{what} has shape {X.shape}, expected (N, D) with N >= 1 and D = {D}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contains NaN or inf")
    return X


def _positive(value, what):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return value


def _times(times):
    try:
        t = np.atleast_1d(np.array(times, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"times must be a numeric sequence, got {times!r}") from None
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times contains NaN or inf")
    if np.any(t < 0):
        raise ValueError(f"times must be >= 0, got {t[t < 0][0]!r}")
    if np.any(np.diff(t) < 0):
        raise ValueError("times must be sorted in increasing order")
    return t


def _seeds(seeds):
    if np.ndim(seeds) == 0:
        if int(seeds) != seeds or seeds < 1:
            raise ValueError(f"seeds must be a positive count or a sequence of seeds, got {seeds!r}")
        return list(range(int(seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    return seeds


# -- speed ---------------------------------------------------------------------------------------

def steps_per_second(D=1000, K=4, seeds=1, steps=20000, activation="erf", rule="vanilla",
                     reference=False, prefetch=None):
    """Measured SGD steps per second (each step updates every seed) on a two-spike problem.

    reference=True times a plain single-seed numpy loop in the original basis instead: one
    x = U (sqrt(rho) xi) per step (a D x D product), no blocking, no seed axis.
    """
    rng = np.random.default_rng(12345)
    rho = np.ones(D)
    rho[:2] = (2.0 * D, 1.0 * D)
    U, _ = np.linalg.qr(rng.standard_normal((D, D)))
    W0 = rng.standard_normal((K, D))
    V0 = rng.standard_normal((K, D))
    if not reference:
        res = simulate(activation, rho, U, W0, V0, times=[0, steps / D], rule=rule, seeds=seeds,
                       test_samples=0, prefetch=prefetch)
        return res.steps_per_second
    import generated
    act = generated.load(activation) if isinstance(activation, str) else activation
    W, V = W0.copy(), V0.copy()
    sq = np.sqrt(rho)
    gen = np.random.default_rng(0)
    tic = time.perf_counter()
    for _ in range(steps):
        x = U @ (sq * gen.standard_normal(D))
        lam = W @ x / np.sqrt(D)
        g, gp = act.g(lam), act.dg(lam)
        e = x - g @ V
        W += (1.0 / D ** 2.5) * np.outer((V @ e) * gp, x)
        V += (1.0 / D) * np.outer(g, e)
    return steps / (time.perf_counter() - tic)
