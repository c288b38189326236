"""Recommenders: ``mpidml generate mf``, ``train --model mf``, and evaluate/predict on ratings.

The ratings layout and the generator are in :mod:`mpidml.data.ratings`, the
model and its objective in :mod:`mpidml.models.mf`, the ALS solver in
:mod:`mpidml.parallel.als`. This module is the job around them (the dense
models' job is :mod:`mpidml.train`): read this rank's ratings, agree on the
numbers of users and items and the global mean, train, evaluate the train and
held-out RMSE, write ``model.h5`` and ``summary.json``.

model.h5 for mf: datasets ``user_factors`` (U, k), ``item_factors`` (I, k),
``user_bias`` (U,), ``item_bias`` (I,); attributes ``model='mf'``, ``rank``,
``n_users``, ``n_items``, ``global_mean``, ``l2``, ``objective``,
``mpidml_version`` (and ``trained_on``, ``config_hash``). Written to a
temporary file, fsynced and renamed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import h5py
import numpy as np

from . import __version__
from .data.ratings import generate_ratings, read_ratings_shard
from .errors import ConfigError, DataError, MpidmlError
from .models.mf import MFModel

MF_GENERATE_OPTIONS = ("users", "items", "rank", "ratings", "test_ratings", "test_output")


# -- mpidml generate mf -----------------------------------------------------------------------
def reject_mf_options(args) -> None:
    """generate linear|logistic|softmax: the mf-only options are a mistake, say so."""
    given = [n for n in MF_GENERATE_OPTIONS if getattr(args, n, None) is not None]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} applies to 'mpidml generate mf' only "
                          f"(got kind {args.kind})")


def generate_mf_command(ctx, args) -> int:
    """Rank 0 writes the ratings (and held-out ratings); the others wait for the file."""
    def check():
        if args.classes is not None:
            raise ConfigError("--classes does not apply to 'mpidml generate mf'")
        if args.write == "collective":
            raise ConfigError("generate mf writes on rank 0 only; --write collective is not supported for it")
        if args.test_output and not args.test_ratings:
            raise ConfigError("--test-output needs --test-ratings M > 0")

    ctx.collective(check)
    options = dict(users=_default(args.users, 1000), items=_default(args.items, 500), rank=_default(args.rank, 5),
                   ratings=_default(args.ratings, 20000), noise=args.noise, seed=args.seed,
                   test_ratings=_default(args.test_ratings, 0), test_path=args.test_output,
                   overwrite=args.overwrite)
    meta = ctx.collective(lambda: generate_ratings(args.output, **options) if ctx.is_root else None)
    ctx.barrier()
    if ctx.is_root:
        meta["path"] = os.path.abspath(meta["path"])
        if meta["test_path"]:
            meta["test_path"] = os.path.abspath(meta["test_path"])
        print(json.dumps({"output": meta["path"], "ranks": ctx.size, **meta}))
    return 0


def _default(value, default):
    return default if value is None else value


# -- reading ratings ------------------------------------------------------------------------
def load_ratings(ctx, path: str, parts=None, n_users: int = 0, n_items: int = 0):
    """Collective: this rank's ratings, with n_users/n_items agreed by every rank.

    Sizes come from ``n_users``/``n_items`` when given (a trained model's), else from the
    file's attributes, else from the largest id + 1 over all ranks. ``parts`` as in
    :func:`mpidml.data.ratings.read_ratings_shard` (default: every rank holds ratings).
    """
    parts = (ctx.size, ctx.rank) if parts is None else parts
    t0 = time.perf_counter()
    shard = ctx.collective(read_ratings_shard, path, parts=parts)
    ctx.timers.add("io", time.perf_counter() - t0)
    sizes = np.array([shard.n_users, shard.n_items,
                      shard.user.max() + 1 if shard.n_local else 0,
                      shard.item.max() + 1 if shard.n_local else 0], dtype=np.int64)
    ctx.allreduce_array(sizes, op="max")
    file_users = shard.n_users or int(sizes[2])
    file_items = shard.n_items or int(sizes[3])
    error = None
    for what, have, want in (("user", int(sizes[2]), n_users), ("item", int(sizes[3]), n_items)):
        if want and have > want:
            error = DataError(f"{path} has {what} ids up to {have - 1} but the model knows only {want} {what}s "
                              f"(ids 0..{want - 1})")
    ctx.agree(error)
    shard.n_users = n_users or file_users
    shard.n_items = n_items or file_items
    return shard


def global_mean(ctx, shard) -> float:
    """Mean of all ratings: Reduce to rank 0 and Bcast, so every rank holds the same bits."""
    local = np.array([float(np.sum(shard.rating)), float(shard.n_local)])
    total = np.zeros(2)
    ctx.comm.Reduce(local, total, root=0)
    ctx.bcast_array(total)
    return float(total[0] / total[1])


def rmse(ctx, model, shard, params, mu: float) -> tuple[float, int]:
    """Collective: (root mean squared error over all ranks' ratings, number of ratings)."""
    t0 = time.perf_counter()
    buf = np.array([model.loss_sum(shard, params, mu), float(shard.n_local)])
    ctx.timers.add("compute", time.perf_counter() - t0)
    ctx.allreduce_array(buf)
    return math.sqrt(2.0 * buf[0] / buf[1]), int(round(buf[1]))


# -- model.h5 -------------------------------------------------------------------------------
def is_mf_model(path: str) -> bool:
    """True when ``path`` is an HDF5 model written by ``train --model mf`` (False on any doubt)."""
    try:
        with h5py.File(path, "r") as f:
            name = f.attrs.get("model")
    except Exception:
        return False
    return (name.decode() if isinstance(name, bytes) else str(name)) == "mf"


def save_mf_model(path: str, model: MFModel, params: np.ndarray, mu: float, **attrs) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        for name, value in model.factors(params).items():
            f.create_dataset(name, data=value)
        f.attrs.update({"model": "mf", "rank": model.rank, "n_users": model.n_users, "n_items": model.n_items,
                        "global_mean": mu, "mpidml_version": __version__, **attrs})
        f.flush()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_mf_model(path: str):
    """(model, params, attrs) from an mf model.h5; DataError if missing or malformed."""
    if not os.path.exists(path):
        raise DataError(f"model file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            arrays = {k: np.asarray(f[k][...], dtype=np.float64)
                      for k in ("user_factors", "item_factors", "user_bias", "item_bias")}
        model = MFModel(int(attrs["n_users"]), int(attrs["n_items"]), int(attrs["rank"]))
        params = model.params_from(arrays)
        mu = float(attrs["global_mean"])
    except (OSError, KeyError, ValueError, MpidmlError) as e:
        raise DataError(f"{path}: malformed mf model (expected user_factors, item_factors, user_bias, "
                        f"item_bias and attributes n_users, n_items, rank, global_mean): {e}") from None
    return model, params, mu, attrs
