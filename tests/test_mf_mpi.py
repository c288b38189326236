"""ALS on P ranks gives the 1-rank factors (run under mpirun -n 1, 2, 3).

The reference runs in-process on MPI.COMM_SELF with all ratings. N = 2000 ratings
(not divisible by 3) and 61 users / 37 items, so the rating shards and the
Reduce_scatter blocks of users and items are all uneven; each user's ratings
are spread over several ranks (the pairs are in random order).
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context
from mpidml.models.mf import MFModel
from mpidml.parallel.als import ALSTrainer
from mpidml.recommend import global_mean

from test_mf import shard_from, small_ratings

pytestmark = pytest.mark.mpi


def fit(ctx, u, i, r, n_users, n_items, k):
    shard = shard_from(u, i, r, n_users, n_items, ctx.rank, ctx.size)
    model = MFModel(n_users, n_items, k)
    mu = global_mean(ctx, shard)
    trainer = ALSTrainer(ctx, model, shard, l2=2e-4, mu=mu, n_total=len(r), max_iter=15, tol=0)
    params = model.init_params(seed=3)
    trainer.fit(params)
    return params, mu, trainer


def test_als_on_p_ranks_equals_one_rank():
    n_users, n_items, k = 61, 37, 4
    u, i, r = small_ratings(n_users, n_items, k, n=2000, seed=9, noise=0.2)
    world = Context(MPI.COMM_WORLD)
    params, mu, trainer = fit(world, u, i, r, n_users, n_items, k)
    ref, mu_ref, ref_trainer = fit(Context(MPI.COMM_SELF), u, i, r, n_users, n_items, k)
    assert mu == pytest.approx(mu_ref, rel=1e-15)
    np.testing.assert_allclose(params, ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(trainer.history, ref_trainer.history, rtol=1e-12)
    # Replicas are identical by construction (each entity is solved on one rank, then gathered).
    everyone = np.empty((world.size, params.size))
    world.comm.Allgather(params, everyone)
    assert all(np.array_equal(everyone[0], row) for row in everyone)


def test_reshard_by_user_gives_each_worker_exactly_its_users():
    from mpidml.data.partition import all_shard_bounds
    from mpidml.parallel.mf_ps import reshard_by_user

    world = Context(MPI.COMM_WORLD)
    u, i, r = small_ratings(61, 37, 4, n=1001, seed=4)
    shard = shard_from(u, i, r, 61, 37, world.rank, world.size)
    owners = all_shard_bounds(61, world.size)
    mu, mi, mr = reshard_by_user(world.comm, shard, owners, world.size, 0)
    lo, hi = owners[world.rank], owners[world.rank + 1]
    assert np.all((mu >= lo) & (mu < hi))
    want = (u >= lo) & (u < hi)
    # Every rating of my users, each once, with its item and rating (file order is kept).
    np.testing.assert_array_equal(mu, u[want])
    np.testing.assert_array_equal(mi, i[want])
    np.testing.assert_array_equal(mr, r[want])
