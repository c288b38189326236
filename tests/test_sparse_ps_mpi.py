"""Parameter server on CSR data (run under mpirun -n 1, 2, 3): sparse push/pull messages.

Sync mode with sparse messages (workers push the touched coordinates, pull the ones their
next batch needs) gives bitwise the parameters of dense messages on the same shards, and
the allreduce result to rounding, with far fewer bytes. On 1 rank the PS refuses cleanly.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context
from mpidml.config import TrainConfig
from mpidml.data import CSRShard
from mpidml.errors import ConfigError
from mpidml.metrics import Reporter
from mpidml.models import make_model
from mpidml.parallel import ParameterServerTrainer

from helpers import objective_numpy
from sparse_helpers import csr_shard_of, sparse_problem, train_shard

pytestmark = pytest.mark.mpi


def csr_part(A, y, n_parts, part, sw=None):
    if part >= 0:
        return csr_shard_of(A, y, part, n_parts, sw)
    return CSRShard(indptr=np.zeros(1, dtype=np.int64), indices=np.zeros(0, dtype=np.int32), data=np.zeros(0),
                    y=y[:0].copy(), sw=np.empty(0) if sw is None else sw[:0].copy(), lo=0, hi=0, n_total=A.shape[0],
                    n_features=A.shape[1], nnz_total=A.nnz, driver="memory", path="<memory>")


def ps_train_csr(ctx, A, y, k, sw=None, sparse_messages=True, **options):
    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", strategy="ps", **options).validate()
    n_parts, part = ctx.collective(ParameterServerTrainer.data_parts, ctx, cfg)
    model = make_model(cfg.model, A.shape[1], k)
    weight_sum = float(A.shape[0] if sw is None else sw.sum())
    trainer = ParameterServerTrainer(ctx, model, csr_part(A, y, n_parts, part, sw), cfg,
                                     Reporter(None, enabled=False), weight_sum)
    assert trainer.sparse_messages == (cfg.servers == 1)
    trainer.sparse_messages = sparse_messages
    params = model.init_params()
    trainer.fit(params)
    return params, trainer


CASES = [
    ("logistic", dict(optimizer="sgd", lr=0.2, momentum=0.9, batch_size=16, epochs=2), True),
    ("softmax", dict(optimizer="adam", lr=0.05, batch_size=24, epochs=2, lr_schedule="cosine"), False),
]


@pytest.mark.parametrize("kind,options,weighted", CASES, ids=[c[0] for c in CASES])
def test_sparse_ps_sync_equals_dense_ps_sync(kind, options, weighted):
    ctx = Context(MPI.COMM_WORLD)
    A, y = sparse_problem(kind, n=203, d=2000, density=0.004, seed=8)
    k = 3 if kind == "softmax" else 2
    sw = np.random.default_rng(1).uniform(0.5, 2.0, A.shape[0]) if weighted else None
    opts = dict(model=kind, l2=1e-3, seed=5, log_every=3, **options)
    if ctx.size == 1:
        with pytest.raises(ConfigError, match="at least 2 ranks"):
            ps_train_csr(ctx, A, y, k, sw, **opts)
        return
    sparse, ps_sparse = ps_train_csr(ctx, A, y, k, sw, sparse_messages=True, **opts)
    dense, ps_dense = ps_train_csr(ctx, A, y, k, sw, sparse_messages=False, **opts)
    assert np.abs(dense).max() > 0.01
    np.testing.assert_array_equal(sparse, dense)
    # ... and the allreduce strategy on the same rows, to rounding (the order of the sums differs).
    # Adam divides by sqrt(v) + 1e-8: a coordinate whose batch gradient is rounding noise (1e-18
    # in one order, 0 in the other) moves by ~lr * 1e-10, so Adam agrees to ~1e-10, SGD to 1e-15.
    ar, trainer = train_shard(ctx, csr_shard_of(A, y, ctx.rank, ctx.size, sw), k,
                              float(A.shape[0] if sw is None else sw.sum()), **opts)
    tol = 1e-8 if options["optimizer"] == "adam" else 1e-12
    np.testing.assert_allclose(sparse, ar, rtol=tol, atol=tol * np.abs(ar).max())
    if ctx.is_root:
        s, d = ps_sparse.summary_section()["ps"], ps_dense.summary_section()["ps"]
        assert s["messages"] == "sparse" and d["messages"] == "dense"
        assert s["updates"] == d["updates"] == trainer.steps
        # a batch touches about 200 of the 2000 columns
        assert s["bytes_received"] < 0.5 * d["bytes_received"]
        assert s["bytes_sent"] < 0.5 * d["bytes_sent"]


def test_sparse_ps_async():
    """async with sparse messages: one worker is deterministic (equal to dense messages); more learn."""
    ctx = Context(MPI.COMM_WORLD)
    A, y = sparse_problem("logistic", n=203, d=1000, density=0.01, seed=9)
    opts = dict(model="logistic", optimizer="adam", lr=0.05, batch_size=16, epochs=4, l2=1e-3, ps_mode="async")
    if ctx.size == 1:
        with pytest.raises(ConfigError):
            ps_train_csr(ctx, A, y, 2, **opts)
        return
    sparse, _ = ps_train_csr(ctx, A, y, 2, **opts)
    gathered = np.empty((ctx.size, sparse.size)) if ctx.is_root else None
    ctx.comm.Gather(sparse, gathered, root=0)
    if ctx.is_root:
        assert all(np.array_equal(gathered[0], g) for g in gathered)
    if ctx.size == 2:
        dense, _ = ps_train_csr(ctx, A, y, 2, sparse_messages=False, **opts)
        np.testing.assert_array_equal(sparse, dense)
    X = A.toarray()
    f = objective_numpy("logistic", X, y, sparse[:-1], sparse[-1], 1e-3)
    assert f < 0.8 * np.log(2)  # the start (all zeros) has log 2


def test_sharded_servers_keep_dense_messages():
    ctx = Context(MPI.COMM_WORLD)
    A, y = sparse_problem("logistic", n=101, d=300, density=0.02, seed=2)
    opts = dict(model="logistic", optimizer="sgd", lr=0.1, batch_size=20, epochs=1, l2=1e-3, servers=2)
    if ctx.size < 3:  # two servers need a third rank to work: a clear error, not a skip or a hang
        expect = "at least 2 ranks" if ctx.size == 1 else "--servers 2 must be >= 1 and leave at least one worker"
        with pytest.raises(ConfigError, match=expect):
            ps_train_csr(ctx, A, y, 2, sparse_messages=False, **opts)
        return
    p2, tr = ps_train_csr(ctx, A, y, 2, sparse_messages=False, **opts)
    assert not tr.sparse_messages
    opts.pop("servers")
    ar, _ = train_shard(ctx, csr_shard_of(A, y, ctx.rank, ctx.size), 2, float(A.shape[0]), **opts)
    assert np.abs(ar).max() > 0.01
    np.testing.assert_allclose(p2, ar, rtol=1e-12, atol=1e-12 * np.abs(ar).max())
