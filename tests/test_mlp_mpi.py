"""MLP training on P ranks equals the single-process result (run under mpirun -n 1, 2, 3).

Like tests/test_train_mpi.py: the reference is trained in-process on
MPI.COMM_SELF with all rows; N = 503 rows give uneven shards on 2 and 3 ranks.
The random start comes from --seed alone, so every rank starts identically.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context

from helpers import make_problem, train

pytestmark = pytest.mark.mpi

CASES = [
    dict(hidden="8", optimizer="sgd", lr=0.1, batch_size=32, epochs=2, momentum=0.9),
    dict(hidden="8,5", optimizer="adam", lr=0.01, batch_size=50, epochs=2),
    dict(hidden="6", optimizer="lbfgs", max_iter=25, tol=1e-10),
    dict(hidden="6,4", optimizer="gd", lr=0.3, max_iter=20),
]


@pytest.mark.parametrize("options", CASES, ids=[f"{o['hidden']}-{o['optimizer']}" for o in CASES])
def test_mlp_p_ranks_equal_one_rank(options):
    X, y = make_problem("softmax", n=503, d=7, k=3, seed=5)
    world = Context(MPI.COMM_WORLD)
    params, trainer = train(world, X, y, model="mlp", l2=1e-3, seed=11, **options)
    ref, _ = train(Context(MPI.COMM_SELF), X, y, model="mlp", l2=1e-3, seed=11, **options)
    assert trainer.steps > 0
    np.testing.assert_allclose(params, ref, rtol=1e-9, atol=1e-11 * np.abs(ref).max())

    gathered = np.empty((world.size, params.size)) if world.rank == 0 else None
    world.comm.Gather(params, gathered, root=0)
    if world.rank == 0:
        assert all(np.array_equal(gathered[0], g) for g in gathered)
