#!/usr/bin/env python3
"""Benchmark matrix factorization (ALS and the parameter server); prints ONE JSON document.

Run it under MPI itself::

    mpirun -n 2 python scripts/bench_mf.py                         # + --oversubscribe beyond the cores
    mpirun -n 3 python scripts/bench_mf.py --users 20000 --items 5000 --ratings 1000000 --rank 10

Rank 0 generates the ratings (``mpidml generate mf``'s generator) into a temporary file;
every rank reads its block. Sections:

``als``
    ``--iterations`` ALS iterations (a user and an item half-step each) on all ranks:
    ``seconds_per_iteration`` (min / median), the per-iteration ``compute`` (normal
    equations, Cholesky solves, objective) and ``comm`` (Reduce_scatter, Allgatherv,
    objective reduction) seconds of rank 0, ``ratings_per_s`` (ratings / median
    iteration, both half-steps pass over them), ``reduce_scatter_bytes`` per iteration
    and rank, and ``numpy_half_step_seconds``: one user half-step written plainly in NumPy
    (per-user ``np.linalg.solve``, on rank 0 over all ratings, capped at ``--numpy-users``
    users and scaled up) for scale.
``ps`` (2 ranks or more)
    One epoch of async SGD through the parameter server (rank 0 the server): batches/s,
    ratings/s, bytes/s in both directions at the server.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from mpidml.jitcache import configure_numba_cache  # noqa: E402

configure_numba_cache()

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from mpidml.comm import Context  # noqa: E402
from mpidml.config import TrainConfig  # noqa: E402
from mpidml.data.ratings import generate_ratings  # noqa: E402
from mpidml.models.mf import MFModel  # noqa: E402
from mpidml.parallel.als import ALSTrainer  # noqa: E402
from mpidml.recommend import global_mean, load_ratings, mf_ps_trainer, warm_up_mf_kernels  # noqa: E402


def numpy_user_half_step(shard, mu, iblock, ridge, max_users):
    """The user half-step in plain NumPy on (at most) max_users users; returns seconds per user."""
    k1 = iblock.shape[1]
    users = np.unique(shard.user)[:max_users]
    t0 = time.perf_counter()
    order = np.argsort(shard.user, kind="stable")
    starts = np.searchsorted(shard.user[order], users)
    ends = np.searchsorted(shard.user[order], users, side="right")
    for a, b in zip(starts, ends):
        sel = order[a:b]
        X = np.hstack([iblock[shard.item[sel], :k1 - 1], np.ones((b - a, 1))])
        t = shard.rating[sel] - mu - iblock[shard.item[sel], k1 - 1]
        np.linalg.solve(X.T @ X + ridge * np.eye(k1), X.T @ t)
    return (time.perf_counter() - t0) / max(1, len(users))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--ratings", type=int, default=200_000)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--numpy-users", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()

    ctx = Context(MPI.COMM_WORLD)
    path = None
    if ctx.is_root:
        folder = tempfile.mkdtemp(prefix="bench_mf_")
        path = os.path.join(folder, "r.h5")
        generate_ratings(path, users=args.users, items=args.items, rank=args.rank, ratings=args.ratings,
                         noise=0.1, seed=0)
    name = np.zeros(4096, dtype=np.uint8)
    if ctx.is_root:
        encoded = path.encode()
        name[:len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    ctx.bcast_array(name)
    path = bytes(name).rstrip(b"\0").decode()

    shard = load_ratings(ctx, path)
    model = MFModel(shard.n_users, shard.n_items, args.rank)
    mu = global_mean(ctx, shard)
    warm_up_mf_kernels(ctx)
    l2 = 1e-5
    trainer = ALSTrainer(ctx, model, shard, l2=l2, mu=mu, n_total=shard.n_total)
    params = model.init_params(0)
    seconds, compute, comm = [], [], []
    for _ in range(args.iterations):
        ctx.barrier()
        before = dict(ctx.timers.seconds)
        t0 = time.perf_counter()
        trainer.half_step(params, "users")
        trainer.half_step(params, "items")
        trainer.objective(params)
        seconds.append(time.perf_counter() - t0)
        compute.append(ctx.timers.seconds["compute"] - before["compute"])
        comm.append(ctx.timers.seconds["comm"] - before["comm"])
    width = trainer.width
    out = {"ranks": ctx.size, "users": model.n_users, "items": model.n_items, "ratings": shard.n_total,
           "rank": args.rank, "als": {
               "seconds_per_iteration": {"min": min(seconds), "median": statistics.median(seconds)},
               "compute_seconds": statistics.median(compute), "comm_seconds": statistics.median(comm),
               "ratings_per_s": shard.n_total / statistics.median(seconds),
               "reduce_scatter_bytes": (model.n_users + model.n_items) * width * 8}}
    if ctx.is_root:
        whole = load_ratings(Context(MPI.COMM_SELF), path)
        _, iblock = model.blocks(params)
        per_user = numpy_user_half_step(whole, mu, iblock, shard.n_total * l2, args.numpy_users)
        out["als"]["numpy_half_step_seconds"] = per_user * model.n_users

    if ctx.size >= 2:
        cfg = TrainConfig(data=path, out="-", model="mf", rank=args.rank, strategy="ps", ps_mode="async",
                          optimizer="sgd", lr=1.0, epochs=1, batch_size=args.batch_size, l2=l2)
        ps_shard = load_ratings(ctx, path, parts=(ctx.size - 1, ctx.rank - 1 if ctx.rank else -1))
        ps = mf_ps_trainer(ctx, model, ps_shard, mu, cfg)
        ps_params = model.init_params(0)
        ctx.barrier()
        t0 = time.perf_counter()
        fit = ps.fit(ps_params)
        wall = time.perf_counter() - t0
        stats = fit["ps"]
        out["ps"] = {"workers": ctx.size - 1, "seconds": wall, "batches_per_s": stats["batches"] / wall,
                     "ratings_per_s": shard.n_total / wall,
                     "server_bytes_per_s": (stats["bytes_to_workers"] + stats["bytes_from_workers"]) / wall,
                     **stats}
    ctx.barrier()
    if ctx.is_root:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
