"""Small shared helpers for the tests: synthetic data, an in-memory shard, a quiet trainer."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from mpidml.config import TrainConfig
from mpidml.data import DenseShard, shard_bounds
from mpidml.metrics import Reporter
from mpidml.models import make_model
from mpidml.parallel import AllreduceTrainer

BIN = os.path.dirname(sys.executable)


def make_problem(kind, n=1003, d=7, k=3, seed=0, scales=None):
    """Deterministic synthetic data (the same on every rank)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if scales is not None:
        X *= scales
    w = rng.standard_normal((k if kind == "softmax" else 1, d)) / np.sqrt(d)
    z = X @ w.T + 0.3
    if kind == "linear":
        y = z[:, 0] + 0.1 * rng.standard_normal(n)
    elif kind == "logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-z[:, 0]))).astype(np.float64)
    else:
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        y = np.array([rng.choice(k, p=pi) for pi in p], dtype=np.int64)
    return X, y


def shard_of(X, y, rank, size, sw=None):
    lo, hi = shard_bounds(len(X), size, rank)
    return DenseShard(X=np.ascontiguousarray(X[lo:hi]), y=np.ascontiguousarray(y[lo:hi]),
                      sw=np.empty(0) if sw is None else np.ascontiguousarray(sw[lo:hi]),
                      lo=lo, hi=hi, n_total=len(X), n_features=X.shape[1], driver="memory", path="<memory>")


def train(ctx, X, y, sw=None, **options):
    """Train with the allreduce strategy on ctx's ranks; returns (params, trainer)."""
    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", **options)
    shard = shard_of(X, y, ctx.rank, ctx.size, sw)
    model = make_model(cfg.model, X.shape[1], int(y.max()) + 1 if cfg.model in ("softmax", "mlp") else 2, cfg.hidden)
    weight_sum = float(len(X) if sw is None else sw.sum())
    trainer = AllreduceTrainer(ctx, model, shard, cfg, Reporter(None, enabled=False), weight_sum)
    params = model.init_params(cfg.seed)
    trainer.fit(params)
    return params, trainer


def objective_numpy(kind, X, y, coef, intercept, l2, sw=None):
    """Independent NumPy reference of f = (1/W) sum sw_i loss_i + (l2/2)||coef||^2."""
    sw = np.ones(len(X)) if sw is None else sw
    Z = X @ np.atleast_2d(coef).T + intercept
    if kind == "linear":
        loss = 0.5 * (Z[:, 0] - y) ** 2
    elif kind == "logistic":
        z = Z[:, 0]
        loss = np.logaddexp(0, z) - y * z
    else:
        m = Z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
        loss = lse - Z[np.arange(len(y)), y.astype(int)]
    return float(np.dot(sw, loss) / sw.sum() + 0.5 * l2 * np.sum(np.asarray(coef) ** 2))


def mpirun_exe():
    for cand in (os.path.join(BIN, "mpirun"), shutil.which("mpirun")):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("no mpirun found next to the test interpreter or on PATH")
