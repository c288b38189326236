"""Helpers for the sparse (CSR) tests: a sparse text-like problem and in-memory CSR shards."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpidml.config import TrainConfig
from mpidml.data import CSRShard, shard_bounds
from mpidml.metrics import Reporter
from mpidml.models import make_model
from mpidml.parallel import AllreduceTrainer


def sparse_problem(kind="logistic", n=301, d=500, k=3, density=0.02, seed=0):
    """Bag-of-words-like data: nonnegative counts, a few per row, the same on every rank."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=density, format="csr", random_state=seed,
                  data_rvs=lambda m: rng.integers(1, 4, m).astype(np.float64))
    A.sort_indices()
    W = rng.standard_normal((k if kind == "softmax" else 1, d)) * 1.5
    Z = A @ W.T + 0.2
    if kind == "logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-Z[:, 0]))).astype(np.float64)
    else:
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        y = np.array([rng.choice(k, p=p) for p in P], dtype=np.int64)
    return A, y


def csr_shard_of(A, y, rank, size, sw=None):
    lo, hi = shard_bounds(A.shape[0], size, rank)
    B = A[lo:hi]
    return CSRShard(indptr=B.indptr.astype(np.int64), indices=B.indices.astype(np.int32), data=B.data.copy(),
                    y=np.ascontiguousarray(y[lo:hi]), sw=np.empty(0) if sw is None else np.ascontiguousarray(sw[lo:hi]),
                    lo=lo, hi=hi, n_total=A.shape[0], n_features=A.shape[1], nnz_total=A.nnz,
                    driver="memory", path="<memory>")


def train_shard(ctx, shard, n_classes, weight_sum, **options):
    """Allreduce training on an already built shard (CSR or dense); returns (params, trainer)."""
    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", **options)
    model = make_model(cfg.model, shard.n_features, n_classes)
    trainer = AllreduceTrainer(ctx, model, shard, cfg, Reporter(None, enabled=False), weight_sum)
    params = model.init_params(cfg.seed)
    trainer.fit(params)
    return params, trainer
