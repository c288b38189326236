"""Matrix factorization: kernels against NumPy, exact ALS half-steps, monotone objective, held-out RMSE.

Every reference here is built independently in NumPy from the documented objective
f = (1/N) sum 0.5 (r - mu - b_u - c_i - p_u.q_i)^2 + (l2/2)(||P||^2 + ||Q||^2 + ||b||^2 + ||c||^2).
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context
from mpidml.data.partition import shard_bounds
from mpidml.data.ratings import RatingsShard, generate_ratings, read_ratings_shard
from mpidml.kernels import mf as mfk
from mpidml.models.mf import MFModel
from mpidml.parallel.als import ALSTrainer


def small_ratings(n_users=23, n_items=17, k=3, n=260, seed=0, noise=0.3):
    """Random distinct pairs with a low-rank signal; some users/items may have no ratings."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = flat // n_items, flat % n_items
    P, Q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    r = 2.0 + P[u].dot(np.ones(k)) * 0.1 + np.sum(P[u] * Q[i], axis=1) + noise * rng.standard_normal(n)
    return u.astype(np.int64), i.astype(np.int64), r


def shard_from(u, i, r, n_users, n_items, rank=0, size=1):
    lo, hi = shard_bounds(len(r), size, rank)
    return RatingsShard(user=u[lo:hi].copy(), item=i[lo:hi].copy(), rating=r[lo:hi].copy(), lo=lo, hi=hi,
                        n_total=len(r), n_users=n_users, n_items=n_items, path="<memory>")


def numpy_objective(u, i, r, mu, P, Q, b, c, l2):
    pred = mu + b[u] + c[i] + np.sum(P[u] * Q[i], axis=1)
    penalty = np.sum(P ** 2) + np.sum(Q ** 2) + np.sum(b ** 2) + np.sum(c ** 2)
    return 0.5 * np.mean((r - pred) ** 2) + 0.5 * l2 * penalty


def unpack(model, params):
    f = model.factors(params)
    return f["user_factors"], f["item_factors"], f["user_bias"], f["item_bias"]


def numpy_block_solution(ent, other, r, mu, fixed_factors, fixed_bias, n_ent, ridge):
    """Solve each entity's ridge problem from scratch: (X^T X + ridge I) theta = X^T t, X = [f_o, 1]."""
    k = fixed_factors.shape[1]
    out = np.zeros((n_ent, k + 1))
    for e in range(n_ent):
        sel = ent == e
        X = np.hstack([fixed_factors[other[sel]], np.ones((sel.sum(), 1))])
        t = r[sel] - mu - fixed_bias[other[sel]]
        out[e] = np.linalg.solve(X.T @ X + ridge * np.eye(k + 1), X.T @ t)
    return out


def test_predict_and_loss_kernels_match_numpy(rng):
    u, i, r = small_ratings()
    ublock, iblock = rng.normal(size=(23, 4)), rng.normal(size=(17, 4))
    want = 1.5 + ublock[u, 3] + iblock[i, 3] + np.sum(ublock[u, :3] * iblock[i, :3], axis=1)
    out = np.empty(len(r))
    mfk.mf_predict(u, i, 1.5, ublock, iblock, out)
    np.testing.assert_allclose(out, want, rtol=1e-14)
    assert mfk.mf_loss(u, i, r, 1.5, ublock, iblock) == pytest.approx(0.5 * np.sum((r - want) ** 2), rel=1e-13)


def test_normal_equations_and_solver_match_numpy(rng):
    u, i, r = small_ratings()
    iblock = rng.normal(size=(17, 4))
    systems = np.zeros((23, 14))  # k + 1 = 4: 10 packed entries of A's upper triangle, then 4 of g
    mfk.mf_normal_equations(u, i, r, 2.0, iblock, systems)
    upper = np.triu_indices(4)  # NumPy's row-by-row order of the upper triangle = the packed order

    def unpack_matrix(row):
        A = np.zeros((4, 4))
        A[upper] = row[:10]
        return A + np.triu(A, 1).T

    assert [mfk.packed_index(a, b, 4) for a, b in zip(*upper)] == list(range(10))
    for e in range(23):
        sel = u == e
        X = np.hstack([iblock[i[sel], :3], np.ones((sel.sum(), 1))])
        np.testing.assert_allclose(unpack_matrix(systems[e]), X.T @ X, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(systems[e, 10:], X.T @ (r[sel] - 2.0 - iblock[i[sel], 3]), rtol=1e-13, atol=1e-13)
    out = np.zeros((23, 4))
    assert mfk.mf_solve_systems(systems, 0.7, out) == 0
    for e in range(23):
        A = unpack_matrix(systems[e]) + 0.7 * np.eye(4)
        np.testing.assert_allclose(out[e], np.linalg.solve(A, systems[e, 10:]), rtol=1e-11, atol=1e-12)
    # A non-positive-definite system is reported and its row left alone.
    bad = np.zeros((1, 14))
    bad[0, 0] = -5.0
    keep = np.full((1, 4), 9.0)
    assert mfk.mf_solve_systems(bad, 1.0, keep) == 1 and np.all(keep == 9.0)


def test_each_als_half_step_is_the_exact_block_minimiser():
    n_users, n_items, k, l2 = 23, 17, 3, 3e-3
    u, i, r = small_ratings()
    model = MFModel(n_users, n_items, k)
    shard = shard_from(u, i, r, n_users, n_items)
    mu = float(r.mean())
    trainer = ALSTrainer(Context(MPI.COMM_SELF), model, shard, l2=l2, mu=mu, n_total=len(r))
    params = model.init_params(seed=5)
    ridge = len(r) * l2
    for step in range(4):
        which = ("users", "items")[step % 2]
        P, Q, b, c = unpack(model, params)
        before = numpy_objective(u, i, r, mu, P, Q, b, c, l2)
        if which == "users":
            want = numpy_block_solution(u, i, r, mu, Q, c, n_users, ridge)
        else:
            want = numpy_block_solution(i, u, r, mu, P, b, n_items, ridge)
        trainer.half_step(params, which)
        ublock, iblock = model.blocks(params)
        got = ublock if which == "users" else iblock
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        P, Q, b, c = unpack(model, params)
        after = numpy_objective(u, i, r, mu, P, Q, b, c, l2)
        assert after <= before + 1e-15
        # Minimiser of its block: the NumPy gradient of f w.r.t. the block vanishes, and random
        # moves of the block only increase f.
        e = r - (mu + b[u] + c[i] + np.sum(P[u] * Q[i], axis=1))
        n = len(r)
        if which == "users":
            grad = np.zeros((n_users, k + 1))
            np.add.at(grad, u, -np.hstack([Q[i], np.ones((n, 1))]) * e[:, None] / n)
            grad += l2 * np.hstack([P, b[:, None]])
        else:
            grad = np.zeros((n_items, k + 1))
            np.add.at(grad, i, -np.hstack([P[u], np.ones((n, 1))]) * e[:, None] / n)
            grad += l2 * np.hstack([Q, c[:, None]])
        assert np.abs(grad).max() < 1e-12
        rng = np.random.default_rng(step)
        for _ in range(5):
            moved = params.copy()
            mu_block, mi_block = model.blocks(moved)
            (mu_block if which == "users" else mi_block)[...] += 1e-3 * rng.standard_normal(got.shape)
            assert numpy_objective(u, i, r, mu, *unpack(model, moved), l2) > after


def test_objective_never_increases_and_matches_numpy():
    n_users, n_items, k, l2 = 23, 17, 3, 1e-3
    u, i, r = small_ratings(seed=1)
    model = MFModel(n_users, n_items, k)
    shard = shard_from(u, i, r, n_users, n_items)
    mu = float(r.mean())
    trainer = ALSTrainer(Context(MPI.COMM_SELF), model, shard, l2=l2, mu=mu, n_total=len(r), max_iter=25, tol=0)
    params = model.init_params(seed=2)
    fit = trainer.fit(params)
    h = np.array(trainer.history)
    assert fit["iterations"] == 25 and len(h) == 26
    assert np.all(np.diff(h) <= 1e-15 * h[:-1]), np.diff(h).max()
    assert h[-1] < 0.5 * h[0]
    assert h[-1] == pytest.approx(numpy_objective(u, i, r, mu, *unpack(model, params), l2), rel=1e-12)


def test_entities_without_ratings_get_zero_factors_and_bias():
    u, i, r = small_ratings(n_users=30, n_items=20)
    u[u == 29] = 0  # user 29 has no ratings
    i[i == 19] = 1  # item 19 has none either
    # keep pairs distinct enough for the test: duplicates are allowed by the model anyway
    model = MFModel(30, 20, 2)
    shard = shard_from(u, i, r, 30, 20)
    trainer = ALSTrainer(Context(MPI.COMM_SELF), model, shard, l2=1e-3, mu=float(r.mean()), n_total=len(r),
                         max_iter=3, tol=0)
    params = model.init_params(seed=0)
    trainer.fit(params)
    ublock, iblock = model.blocks(params)
    assert np.all(ublock[29] == 0) and np.all(iblock[19] == 0)
    assert np.abs(ublock[:29]).max() > 0


def test_held_out_rmse_is_near_the_noise_level(tmp_path):
    noise = 0.1
    train, test = tmp_path / "r.h5", tmp_path / "t.h5"
    generate_ratings(train, users=300, items=200, rank=3, ratings=20000, noise=noise, seed=11,
                     test_ratings=3000, test_path=test)
    shard, held = read_ratings_shard(train), read_ratings_shard(test)
    model = MFModel(300, 200, 3)
    mu = float(shard.rating.mean())
    trainer = ALSTrainer(Context(MPI.COMM_SELF), model, shard, l2=1e-5, mu=mu, n_total=shard.n_total, max_iter=30)
    params = model.init_params(seed=0)
    trainer.fit(params)
    P, Q, b, c = unpack(model, params)
    pred = mu + b[held.user] + c[held.item] + np.sum(P[held.user] * Q[held.item], axis=1)
    held_rmse = np.sqrt(np.mean((held.rating - pred) ** 2))
    assert held_rmse < 1.15 * noise, held_rmse
    # The factors matter: biases alone (the best rank-0 model) are far off the noise level.
    assert np.sqrt(np.mean((held.rating - mu - b[held.user] - c[held.item]) ** 2)) > 5 * noise


def test_sgd_gradient_kernel_matches_numpy_and_finite_differences(rng):
    u, i, r = small_ratings(n=40)
    users, upos = np.unique(u, return_inverse=True)
    items, ipos = np.unique(i, return_inverse=True)
    urows, irows = rng.normal(size=(len(users), 4)), rng.normal(size=(len(items), 4))
    ucoef, icoef = rng.uniform(0.1, 1.0, len(users)), rng.uniform(0.1, 1.0, len(items))
    ugrad, igrad = np.full((len(users), 4), 7.0), np.full((len(items), 4), 7.0)  # overwritten, not added to

    def batch_loss(U, I):
        e = r - (1.0 + U[upos, 3] + I[ipos, 3] + np.sum(U[upos, :3] * I[ipos, :3], axis=1))
        return (0.5 * np.sum(e ** 2) + 0.5 * np.sum(ucoef[upos] * np.sum(U[upos] ** 2, axis=1))
                + 0.5 * np.sum(icoef[ipos] * np.sum(I[ipos] ** 2, axis=1)))

    loss = mfk.mf_sgd_gradients(upos.astype(np.int64), ipos.astype(np.int64), r, 1.0, urows, irows, ucoef, icoef,
                                ugrad, igrad)
    e = r - (1.0 + urows[upos, 3] + irows[ipos, 3] + np.sum(urows[upos, :3] * irows[ipos, :3], axis=1))
    assert loss == pytest.approx(0.5 * np.sum(e ** 2), rel=1e-13)
    h = 1e-6
    for rows, grad, other in ((urows, ugrad, "u"), (irows, igrad, "i")):
        for a in range(0, rows.shape[0], 5):
            for f in range(4):
                plus, minus = rows.copy(), rows.copy()
                plus[a, f] += h
                minus[a, f] -= h
                if other == "u":
                    fd = (batch_loss(plus, irows) - batch_loss(minus, irows)) / (2 * h)
                else:
                    fd = (batch_loss(urows, plus) - batch_loss(urows, minus)) / (2 * h)
                assert grad[a, f] == pytest.approx(fd, rel=1e-6, abs=1e-7)


def test_als_stops_when_the_relative_decrease_reaches_tol():
    u, i, r = small_ratings(seed=2)
    model = MFModel(23, 17, 3)
    shard = shard_from(u, i, r, 23, 17)
    tol = 1e-3
    trainer = ALSTrainer(Context(MPI.COMM_SELF), model, shard, l2=1e-3, mu=float(r.mean()), n_total=len(r),
                         max_iter=500, tol=tol)
    fit = trainer.fit(model.init_params(seed=0))
    h = np.array(trainer.history)
    rel = (h[:-1] - h[1:]) / h[1:]
    assert fit["converged"] and fit["iterations"] == len(h) - 1 < 500
    assert rel[-1] <= tol and np.all(rel[:-1] > tol)
