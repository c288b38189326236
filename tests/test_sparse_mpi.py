"""Training on CSR shards (run under mpirun -n 1, 2, 3).

* L-BFGS on P ranks reaches scikit-learn's LogisticRegression optimum on a sparse problem
  (scipy.sparse input, C = 1/(l2*N)): relative objective gap <= 1e-8, binary and multinomial.
* Every allreduce optimizer gives on CSR shards what it gives on the same rows densified
  (same trainer, dense kernels), to rounding.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context

from helpers import objective_numpy, shard_of
from sparse_helpers import csr_shard_of, sparse_problem, train_shard

pytestmark = pytest.mark.mpi

L2 = 1e-3


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_lbfgs_reaches_sklearn_optimum(kind):
    from sklearn.linear_model import LogisticRegression

    A, y = sparse_problem(kind, n=301, d=500, seed=11)
    N = A.shape[0]
    world = Context(MPI.COMM_WORLD)
    k = 3 if kind == "softmax" else 2
    params, trainer = train_shard(world, csr_shard_of(A, y, world.rank, world.size), k, float(N),
                                  model=kind, optimizer="lbfgs", tol=1e-10, max_iter=5000, l2=L2)
    assert trainer.steps > 5
    ref = LogisticRegression(C=1.0 / (L2 * N), tol=1e-12, max_iter=100000).fit(A, y)
    X = A.toarray()
    f_sk = objective_numpy(kind, X, y, ref.coef_, ref.intercept_, L2)
    D = A.shape[1]
    coef, intercept = (params[:D], params[D:]) if kind == "logistic" else (params[:k * D].reshape(k, D), params[k * D:])
    f_ours = objective_numpy(kind, X, y, coef, intercept, L2)
    gap = (f_ours - f_sk) / abs(f_sk)
    assert gap <= 1e-8, (f_ours, f_sk)
    assert gap >= -1e-8  # scikit-learn is converged too: neither may be far below the other

    gathered = np.empty((world.size, params.size)) if world.rank == 0 else None
    world.comm.Gather(params, gathered, root=0)
    if world.rank == 0:
        assert all(np.array_equal(gathered[0], g) for g in gathered)


CASES = [
    ("logistic", dict(optimizer="lbfgs", tol=1e-9)),
    ("logistic", dict(optimizer="gd", lr=0.5, max_iter=30, momentum=0.5)),
    ("logistic", dict(optimizer="sgd", lr=0.2, batch_size=32, epochs=2)),
    ("softmax", dict(optimizer="adam", lr=0.05, batch_size=50, epochs=2)),
    ("softmax", dict(optimizer="sgd", lr=0.1, batch_size=301, epochs=3, momentum=0.9, nesterov=True)),
    ("linear", dict(optimizer="gd", lr=0.05, max_iter=20)),
]


@pytest.mark.parametrize("kind,options", CASES, ids=[f"{k}-{o['optimizer']}-{i}" for i, (k, o) in enumerate(CASES)])
def test_csr_training_equals_dense_training(kind, options):
    A, y = sparse_problem("logistic" if kind == "linear" else kind, n=301, d=200, density=0.03, seed=5)
    world = Context(MPI.COMM_WORLD)
    sw = np.random.default_rng(2).uniform(0.5, 2.0, A.shape[0])
    k = 3 if kind == "softmax" else 2
    p_csr, _ = train_shard(world, csr_shard_of(A, y, world.rank, world.size, sw), k, float(sw.sum()),
                           model=kind, l2=L2, seed=3, **options)
    X = np.ascontiguousarray(A.toarray())
    p_dense, _ = train_shard(world, shard_of(X, y, world.rank, world.size, sw), k, float(sw.sum()),
                             model=kind, l2=L2, seed=3, **options)
    assert np.abs(p_dense).max() > 0.01
    np.testing.assert_allclose(p_csr, p_dense, rtol=1e-8, atol=1e-10 * np.abs(p_dense).max())
