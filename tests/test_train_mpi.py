"""Allreduce training on P ranks equals the single-process result (run under mpirun -n 1, 2, 3).

The reference is computed on every rank in-process on MPI.COMM_SELF with all
rows, so each run compares P ranks against 1 rank; N = 1003 is not divisible
by 2 or 3, so shards are uneven.
"""

import socket

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context

from helpers import make_problem, train

pytestmark = pytest.mark.mpi

CASES = [
    ("logistic", dict(optimizer="lbfgs", tol=1e-10)),
    ("softmax", dict(optimizer="lbfgs", tol=1e-10)),
    ("linear", dict(optimizer="lbfgs", tol=1e-10)),
    ("logistic", dict(optimizer="gd", lr=0.5, max_iter=60)),
    ("softmax", dict(optimizer="gd", lr=0.5, max_iter=40, momentum=0.5, nesterov=True)),
    ("logistic", dict(optimizer="sgd", lr=0.2, batch_size=64, epochs=3)),
    ("logistic", dict(optimizer="sgd", lr=0.1, batch_size=100, epochs=3, momentum=0.9)),
    ("linear", dict(optimizer="sgd", lr=0.05, batch_size=50, epochs=2, momentum=0.9, nesterov=True)),
    ("softmax", dict(optimizer="adam", lr=0.05, batch_size=128, epochs=3)),
    ("logistic", dict(optimizer="adam", lr=0.01, batch_size=1003, epochs=5, lr_schedule="cosine")),
]


@pytest.mark.parametrize("kind,options", CASES, ids=[f"{k}-{o['optimizer']}-{i}" for i, (k, o) in enumerate(CASES)])
def test_p_ranks_equal_one_rank(kind, options):
    X, y = make_problem(kind, n=1003, d=7, k=4, seed=3)
    world = Context(MPI.COMM_WORLD)
    params, trainer = train(world, X, y, model=kind, l2=1e-3, seed=7, **options)
    ref, _ = train(Context(MPI.COMM_SELF), X, y, model=kind, l2=1e-3, seed=7, **options)
    assert trainer.steps > 0
    np.testing.assert_allclose(params, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())

    # Replicas are bitwise identical on every rank.
    gathered = np.empty((world.size, params.size)) if world.rank == 0 else None
    world.comm.Gather(params, gathered, root=0)
    if world.rank == 0:
        assert all(np.array_equal(gathered[0], g) for g in gathered)


def test_uneven_weighted_shards_give_global_mean():
    """Sample weights: the global gradient divides by the global weight sum on any P."""
    X, y = make_problem("logistic", n=1003, d=5, seed=4)
    sw = np.random.default_rng(0).uniform(0.1, 3.0, len(y))
    params, _ = train(Context(MPI.COMM_WORLD), X, y, sw=sw, model="logistic", optimizer="lbfgs", tol=1e-11, l2=1e-2)
    ref, _ = train(Context(MPI.COMM_SELF), X, y, sw=sw, model="logistic", optimizer="lbfgs", tol=1e-11, l2=1e-2)
    np.testing.assert_allclose(params, ref, rtol=1e-10)


def test_error_on_one_rank_is_agreed_by_all():
    """A local expected error on the last rank becomes the same error on every rank."""
    from mpidml.errors import DataError

    ctx = Context(MPI.COMM_WORLD)

    def fails_on_last():
        if ctx.rank == ctx.size - 1:
            raise DataError("bad row 17")
        return "ok"

    with pytest.raises(DataError, match="bad row 17") as info:
        ctx.collective(fails_on_last)
    assert info.value.agreed
    # which rank and node, unless it is rank 0 (the job-wide checks run there)
    where = f"[rank {ctx.size - 1} on {socket.gethostname()}] " if ctx.size > 1 else ""
    assert str(info.value) == where + "bad row 17"
    assert ctx.collective(lambda: 42) == 42
