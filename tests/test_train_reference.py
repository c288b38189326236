"""Training reaches independent optima: scikit-learn's solvers and the closed-form ridge solution.

Objective: f = (1/N) sum_i loss_i + (l2/2)||W||^2, intercepts not penalised,
which is scikit-learn's LogisticRegression objective with C = 1/(l2*N).
"""

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.linear_model import LogisticRegression

from mpidml.comm import Context

from helpers import make_problem, objective_numpy, train

L2 = 1e-3


def rel_gap(f, f_ref):
    return (f - f_ref) / abs(f_ref)


def sklearn_logistic(X, y, l2, sw=None):
    W = len(y) if sw is None else sw.sum()
    clf = LogisticRegression(C=1.0 / (l2 * W), tol=1e-14, max_iter=100_000, solver="lbfgs")
    clf.fit(X, y, sample_weight=sw)
    return clf.coef_, clf.intercept_


def test_logistic_lbfgs_reaches_sklearn_optimum():
    X, y = make_problem("logistic", n=2000, d=10, seed=1)
    params, _ = train(Context(MPI.COMM_SELF), X, y, model="logistic", optimizer="lbfgs", tol=1e-10, l2=L2)
    coef_ref, b_ref = sklearn_logistic(X, y, L2)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], L2)
    f_ref = objective_numpy("logistic", X, y, coef_ref, b_ref, L2)
    assert rel_gap(f, f_ref) <= 1e-8
    np.testing.assert_allclose(params[:-1], coef_ref.ravel(), rtol=1e-4, atol=1e-6)


def test_logistic_ill_conditioned_reaches_sklearn_optimum():
    d = 12
    scales = np.logspace(-1, 1, d)  # feature scales spread over two orders of magnitude
    X, y = make_problem("logistic", n=3000, d=d, seed=2, scales=scales)
    X[:, 1] = X[:, 0] * 0.9 + 0.1 * X[:, 1]  # correlated columns
    params, trainer = train(Context(MPI.COMM_SELF), X, y, model="logistic", optimizer="lbfgs", tol=1e-10, l2=1e-4,
                            max_iter=5000)
    coef_ref, b_ref = sklearn_logistic(X, y, 1e-4)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], 1e-4)
    f_ref = objective_numpy("logistic", X, y, coef_ref, b_ref, 1e-4)
    assert rel_gap(f, f_ref) <= 1e-8


@pytest.mark.parametrize("model", ["logistic", "softmax", "linear"])
def test_lbfgs_feature_scaling_same_optimum_far_fewer_iterations(model):
    # Features in units 1e4 apart: the default diagonal (1 / mean x_j^2) removes that part of
    # the conditioning; --lbfgs-scaling none is SciPy's scalar H0. Both must reach the
    # independent reference; the scaled run in a fraction of the iterations.
    d = 10
    scales = np.logspace(-2, 2, d)
    X, y = make_problem(model, n=2000, d=d, k=3, seed=6, scales=scales)
    runs = {}
    for scaling in ("features", "none"):
        params, trainer = train(Context(MPI.COMM_SELF), X, y, model=model, optimizer="lbfgs", tol=1e-9, l2=1e-4,
                                max_iter=20000, lbfgs_scaling=scaling)
        K = 3 if model == "softmax" else 1
        coef, intercept = params[:K * d].reshape(K, d), params[K * d:]
        runs[scaling] = (objective_numpy(model, X, y, coef, intercept, 1e-4), trainer.steps)
    if model == "linear":
        xm, ym = X.mean(axis=0), y.mean()
        w = np.linalg.solve((X - xm).T @ (X - xm) / len(y) + 1e-4 * np.eye(d), (X - xm).T @ (y - ym) / len(y))
        f_ref = objective_numpy("linear", X, y, w, ym - xm @ w, 1e-4)
    elif model == "logistic":
        f_ref = objective_numpy("logistic", X, y, *sklearn_logistic(X, y, 1e-4), 1e-4)
    else:
        clf = LogisticRegression(C=1.0 / (1e-4 * len(y)), tol=1e-14, max_iter=100_000).fit(X, y)
        f_ref = objective_numpy("softmax", X, y, clf.coef_, clf.intercept_, 1e-4)
    for scaling, (f, _) in runs.items():
        assert rel_gap(f, f_ref) <= 1e-8, scaling
    assert runs["features"][1] * 5 < runs["none"][1], runs


def test_weighted_logistic_matches_sklearn_sample_weight():
    X, y = make_problem("logistic", n=1500, d=6, seed=5)
    sw = np.random.default_rng(1).uniform(0.2, 2.0, len(y))
    params, _ = train(Context(MPI.COMM_SELF), X, y, sw=sw, model="logistic", optimizer="lbfgs", tol=1e-10, l2=L2)
    coef_ref, b_ref = sklearn_logistic(X, y, L2, sw)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], L2, sw)
    f_ref = objective_numpy("logistic", X, y, coef_ref, b_ref, L2, sw)
    assert rel_gap(f, f_ref) <= 1e-8


@pytest.mark.parametrize("k,d", [(4, 8), (10, 20)])  # 10 classes: the kernel's vector path, masked last features
def test_softmax_lbfgs_reaches_sklearn_multinomial_optimum(k, d):
    X, y = make_problem("softmax", n=2000, d=d, k=k, seed=3)
    params, _ = train(Context(MPI.COMM_SELF), X, y, model="softmax", optimizer="lbfgs", tol=1e-10, l2=L2)
    clf = LogisticRegression(C=1.0 / (L2 * len(y)), tol=1e-14, max_iter=100_000).fit(X, y)
    coef, intercept = params[: k * d].reshape(k, d), params[k * d:]
    f = objective_numpy("softmax", X, y, coef, intercept, L2)
    f_ref = objective_numpy("softmax", X, y, clf.coef_, clf.intercept_, L2)
    assert rel_gap(f, f_ref) <= 1e-8


def test_linear_lbfgs_matches_closed_form_ridge():
    X, y = make_problem("linear", n=1500, d=9, seed=4)
    n = len(y)
    params, _ = train(Context(MPI.COMM_SELF), X, y, model="linear", optimizer="lbfgs", tol=1e-12, l2=L2)
    # Closed form: minimise (1/2N)||Xw + b - y||^2 + (l2/2)||w||^2 -> centre, then solve.
    xm, ym = X.mean(axis=0), y.mean()
    Xc, yc = X - xm, y - ym
    w = np.linalg.solve(Xc.T @ Xc / n + L2 * np.eye(X.shape[1]), Xc.T @ yc / n)
    b = ym - xm @ w
    np.testing.assert_allclose(params, np.append(w, b), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("optimizer,options", [
    ("gd", dict(lr=1.0, max_iter=3000, tol=1e-7)),
    # lr 0.1, not 0.5: at 0.5 the final gap depends on the shuffle's luck (0.4e-3 .. 5.4e-3 over
    # seeds 0-7); at 0.1 it is 0.05e-3 .. 0.36e-3 for every seed, so 1e-3 tests convergence.
    ("sgd", dict(lr=0.1, batch_size=100, epochs=40, momentum=0.9, lr_schedule="inverse_sqrt")),
    ("adam", dict(lr=0.02, batch_size=200, epochs=60, lr_schedule="cosine")),
])
def test_first_order_optimizers_approach_the_optimum(optimizer, options):
    X, y = make_problem("logistic", n=2000, d=6, seed=6)
    params, _ = train(Context(MPI.COMM_SELF), X, y, model="logistic", optimizer=optimizer, l2=1e-2, seed=1, **options)
    coef_ref, b_ref = sklearn_logistic(X, y, 1e-2)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], 1e-2)
    f_ref = objective_numpy("logistic", X, y, coef_ref, b_ref, 1e-2)
    assert 0 <= rel_gap(f, f_ref) + 1e-12 and rel_gap(f, f_ref) <= 1e-3


def test_minibatch_uses_every_row_once_per_epoch():
    from mpidml.parallel import epoch_permutation

    p0, p1 = epoch_permutation(1003, 5, 0), epoch_permutation(1003, 5, 1)
    assert np.array_equal(np.sort(p0), np.arange(1003))
    assert not np.array_equal(p0, p1)
    assert np.array_equal(p0, epoch_permutation(1003, 5, 0))


@pytest.mark.parametrize("n_rows", [1, 2, 3, 7, 64, 65, 1003, 4096, 100_003])
def test_epoch_order_is_a_permutation_for_any_n(n_rows):
    from mpidml.parallel import epoch_permutation

    for seed, epoch in ((0, 0), (5, 1), (2**31, 7)):
        assert np.array_equal(np.sort(epoch_permutation(n_rows, seed, epoch)), np.arange(n_rows))
    assert np.array_equal(epoch_permutation(n_rows, 3, 0, "none"), np.arange(n_rows))


def test_epoch_order_looks_random():
    """Statistics a uniformly random permutation has (each would fail for a weak mixing)."""
    from mpidml.parallel import epoch_permutation

    N, B = 100_000, 1000
    orders = [epoch_permutation(N, 0, e) for e in range(3)]
    pos = [np.argsort(o) for o in orders]
    rows = np.arange(N)
    for p in pos:
        assert abs(np.corrcoef(rows, p)[0, 1]) < 0.02
        # neighbouring rows land far apart: E|U - V| = N/3 for independent uniform positions
        assert abs(np.abs(np.diff(p)).mean() / N - 1 / 3) < 0.01
        # Every batch draws from every tenth of the file about equally (multinomial counts).
        counts = np.zeros((N // B, 10))
        np.add.at(counts, (p // B, rows * 10 // N), 1)
        chi2 = ((counts - B / 10) ** 2 / (B / 10)).sum()
        dof = counts.size - (N // B) - 10 + 1
        assert abs(chi2 - dof) < 4 * np.sqrt(2 * dof), (chi2, dof)  # one round of mixing: -4.7
    # epochs are independent orders
    assert abs(np.corrcoef(pos[0], pos[1])[0, 1]) < 0.02 and abs(np.corrcoef(pos[1], pos[2])[0, 1]) < 0.02


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("N", [1003, 4097, 5000])
@pytest.mark.parametrize("B", [64, 49])
def test_epoch_plan_gives_each_rank_its_rows_of_each_global_batch(shuffle, N, B):
    """Block shards and row-set shards: step s on rank r = the rows of perm[s*B:(s+1)*B] it holds.

    The reference order is row_position's, one row at a time; the plan hashes PLAN_CHUNK rows at
    a time and walks the out-of-range values as a list. N = 1003: 2 % of the values walk; 4097
    (2^12 + 1): half of them, some several times; both > PLAN_CHUNK rows on one rank. B = 49: the
    step pos // B from pos * (1 / B) in float64 is one low at some multiples of B (corrected)."""
    from types import SimpleNamespace

    from mpidml.data import shard_bounds
    from mpidml.parallel import epoch_permutation
    from mpidml.parallel.allreduce import EpochPlan

    seed, epoch = 9, 2
    perm = epoch_permutation(N, seed, epoch, shuffle)
    rng = np.random.default_rng(0)
    for P in (1, 2, 3):
        for r in range(P):
            lo, hi = shard_bounds(N, P, r)
            shards = [SimpleNamespace(lo=lo, n_local=hi - lo)]
            if P == 3:
                gids = np.sort(rng.choice(N, size=300 if N < 2000 else 2500, replace=False)).astype(np.int64)
                shards.append(SimpleNamespace(lo=0, n_local=gids.size, gids=gids))
            for sh in shards:
                plan = EpochPlan(sh, N, B, seed, shuffle)
                plan.build(epoch)
                held = getattr(sh, "gids", np.arange(sh.lo, sh.lo + sh.n_local))
                for s in range(plan.steps):
                    want = np.flatnonzero(np.isin(held, perm[s * B:(s + 1) * B]))
                    assert np.array_equal(plan.rows(s), want), (P, r, s)
                    assert plan.global_count(s) == perm[s * B:(s + 1) * B].size
                for s0, s1 in ((0, plan.steps), (1, plan.steps - 1), (plan.steps - 2, plan.steps), (2, 2)):
                    assert plan.global_count(s0, s1) == perm[s0 * B:s1 * B].size  # a run of steps


@pytest.mark.parametrize("shuffle", ["global", "none"])
@pytest.mark.parametrize("N,B", [(1003, 49), (4097, 64), (2**20 + 1, 4096)])
def test_epoch_plan_built_ahead_in_slices_is_the_epochs_plan(shuffle, N, B):
    """EpochPlan.begin_next + plan_advance in slices of any size (as the compiled step loop
    calls it while it waits) + build: each step's rows are those of the epoch's global order
    (epoch_permutation, row_position's one row at a time), for a block and a row-set shard;
    build() finishes a build left part way (in each of its phases), and a build of another
    epoch drops one under way (they share the scratch)."""
    from types import SimpleNamespace

    from mpidml.kernels import shuffle as plan_kernels
    from mpidml.parallel import epoch_permutation
    from mpidml.parallel.allreduce import EpochPlan

    seed = 4
    rng = np.random.default_rng(N)
    gids = np.sort(rng.choice(N, size=N // 3, replace=False)).astype(np.int64)
    for shard in (SimpleNamespace(lo=N // 5, n_local=N // 2), SimpleNamespace(lo=0, n_local=gids.size, gids=gids)):
        held = getattr(shard, "gids", np.arange(shard.lo, shard.lo + shard.n_local))

        def check(plan, epoch):
            perm = epoch_permutation(N, seed, epoch, shuffle)
            for s in range(plan.steps):
                assert np.array_equal(plan.rows(s), np.flatnonzero(np.isin(held, perm[s * B:(s + 1) * B]))), (epoch, s)

        plan = EpochPlan(shard, N, B, seed, shuffle)
        plan.build(0)
        assert plan_kernels.plan_advance(*plan.next_args(), 5)  # nothing under way: done at once
        epoch = 0
        # budgets: one row's worth at a time (small N), a step loop's slices, more than a build
        for budget in ([1] if N < 5000 else []) + [7, 256, 10**9]:
            epoch += 1
            plan.begin_next(epoch)
            calls = 0
            while not plan_kernels.plan_advance(*plan.next_args(), budget):
                calls += 1
            assert budget < 10**9 or calls == 0
            check(plan, epoch - 1)  # the current epoch's rows untouched meanwhile
            plan.build(epoch)
            check(plan, epoch)
        for stop_after in (1, 3, 2 * shard.n_local // 256 + 4):  # left in the hashing, scatter, later phases
            epoch += 1
            plan.begin_next(epoch)
            for _ in range(stop_after):
                plan_kernels.plan_advance(*plan.next_args(), 256)
            plan.build(epoch)
            check(plan, epoch)
        plan.begin_next(epoch + 1)
        plan_kernels.plan_advance(*plan.next_args(), 256)
        plan.build(epoch + 5)  # not the one under way
        check(plan, epoch + 5)
        assert plan.next_epoch == -1 and plan_kernels.plan_advance(*plan.next_args(), 1)


@pytest.mark.parametrize("N", [2**32, 2**32 + 1, 2**33 + 5])
def test_epoch_plan_of_huge_datasets_matches_row_position(N):
    """The plan's hash takes a 32 x 32 -> 64-bit multiply path while the domain has <= 32 bits
    (N <= 2^32) and the full 64-bit one beyond: both against row_position, one row at a time,
    for a row-set shard of a few rows spread over the whole range (N = 2^33 + 5: half of the
    values walk)."""
    from types import SimpleNamespace

    from mpidml import kernels
    from mpidml.parallel.allreduce import EpochPlan

    B, seed, epoch = 2**27, 3, 1
    rng = np.random.default_rng(N % 1000)
    gids = np.unique(np.concatenate([rng.integers(0, N, 3000), [0, N - 1, 2**32 - 1]])).astype(np.int64)
    gids = gids[gids < N]
    plan = EpochPlan(SimpleNamespace(lo=0, n_local=gids.size, gids=gids), N, B, seed, "global")
    plan.build(epoch)
    assert (plan.bits <= 32) == (N <= 2**32)
    keys = kernels.shuffle_keys(seed, epoch)
    step = np.array([kernels.row_position(int(g), N, plan.bits, keys) // B for g in gids])
    for s in range(plan.steps):
        assert np.array_equal(plan.rows(s), np.flatnonzero(step == s)), s


@pytest.mark.parametrize("u64_lanes", [False, True])
@pytest.mark.parametrize("N", [1003, 4097, 2**20 + 1, 2**32])
def test_plan_hash_in_either_lane_width_matches_row_position(N, u64_lanes):
    """Both forms of the plan's rounds for N <= 2^32 (uint32 lanes, or uint64 lanes with
    32 x 32 -> 64-bit products: shuffle.ROUNDS_IN_U64_LANES picks one by CPU, so the tests run
    both on any CPU) give row_position's values, for contiguous rows and for a row set, the
    walking values included (N = 4097 and 2^20 + 1: about half and 5 % of them walk)."""
    from mpidml import kernels
    from mpidml.kernels import shuffle

    keys, bits = kernels.shuffle_keys(5, 3), kernels.domain_bits(N)
    mask = (1 << bits) - 1
    u = np.uint32
    k32 = [u(int(k) & mask) for k in keys]
    s1, s2 = u(max(1, bits // 2)), u(max(1, (bits + 2) // 3))
    raw, walk = kernels.plan_scratch()
    raw32 = raw.view(np.uint32)
    rng = np.random.default_rng(N % 997)
    first = N - shuffle.PLAN_CHUNK if N > shuffle.PLAN_CHUNK else 0
    m = min(N, shuffle.PLAN_CHUNK)
    for gids in (np.empty(0, np.int64), np.sort(rng.choice(N, size=m, replace=False)).astype(np.int64)):
        rows = gids if gids.size else np.arange(first, first + m)
        shuffle._hash_chunk32(gids, np.int64(first), 0, m, np.uint64(N), *k32, u(mask), s1, s2, raw32, walk,
                              u64_lanes)
        want = [kernels.row_position(int(g), N, bits, keys) for g in rows]
        assert np.array_equal(raw32[:m], want), (N, u64_lanes, bool(gids.size))


def test_model_lbfgs_h0_layout():
    from mpidml.models import make_model

    soft = make_model("softmax", 3, 2)  # params: coef (2, 3) row-major, then 2 intercepts
    h0 = soft.lbfgs_h0(np.array([4.0, 0.0, 1.0]), 0.5)
    np.testing.assert_array_equal(h0, [1 / 4.5, 1 / 0.5, 1 / 1.5] * 2 + [1.0, 1.0])
    logi = make_model("logistic", 3, 2)
    h0 = logi.lbfgs_h0(np.array([4.0, 0.0, 1.0]), 0.0)  # a zero column: clipped, not infinite
    np.testing.assert_array_equal(h0, [0.25, 1 / 4e-12, 1.0, 1.0])
    assert make_model("mlp", 3, 2).lbfgs_h0(np.ones(3), 0.0) is None
