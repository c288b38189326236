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

import math
import os
import sys
import time

import h5py
import numpy as np

from . import __version__
from .data.ratings import generate_ratings, read_ratings_shard
from .errors import ConfigError, DataError, DivergedError, MpidmlError
from .metrics import print_json
from .modelio import write_h5_atomically
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
        if args.layout or args.chunk_size:
            raise ConfigError("--layout and --chunk-size do not apply to 'mpidml generate mf'")
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
        print_json({"output": meta["path"], "ranks": ctx.size, **meta})
    return 0


def _default(value, default):
    return default if value is None else value


# -- reading ratings ------------------------------------------------------------------------
def load_ratings(ctx, path: str, parts=None, n_users: int = 0, n_items: int = 0, with_rating: bool = True):
    """Collective: this rank's ratings, with n_users/n_items agreed by every rank.

    Sizes come from ``n_users``/``n_items`` when given (a trained model's), else from the
    file's attributes, else from the largest id + 1 over all ranks. ``parts`` as in
    :func:`mpidml.data.ratings.read_ratings_shard` (default: every rank holds ratings).
    """
    parts = (ctx.size, ctx.rank) if parts is None else parts
    t0 = time.perf_counter()
    shard = ctx.collective(read_ratings_shard, path, parts=parts, with_rating=with_rating)
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
    total = ctx.agreed_sum(np.array([float(np.sum(shard.rating)), float(shard.n_local)]))
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
    write_h5_atomically(path, model.factors(params),
                        {"model": "mf", "rank": model.rank, "n_users": model.n_users, "n_items": model.n_items,
                         "global_mean": mu, "mpidml_version": __version__, **attrs})


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


# -- mpidml train --model mf ----------------------------------------------------------------
def check_mf_config(cfg) -> None:
    """The mf rules of TrainConfig.validate (ConfigError with one actionable line)."""
    if cfg.model != "mf":
        for given, flag in ((cfg.optimizer == "als", "--optimizer als"), (cfg.rank, "--rank"),
                            (cfg.holdout, "--holdout")):
            if given:
                raise ConfigError(f"{flag} applies to --model mf only (got --model {cfg.model})")
        return
    if cfg.rank < 1:
        raise ConfigError(f"--model mf needs --rank K >= 1 (the number of latent factors), got {cfg.rank}")
    if cfg.strategy == "ps":
        if cfg.optimizer != "sgd":
            raise ConfigError(f"--model mf with --strategy ps trains with --optimizer sgd, not {cfg.optimizer}")
        if cfg.ps_mode != "async":
            raise ConfigError(f"--model mf with --strategy ps runs --ps-mode async only (item rows are updated "
                              f"as pushes arrive), got --ps-mode {cfg.ps_mode}")
        if cfg.momentum or cfg.lr_schedule != "constant":
            raise ConfigError("--model mf with --strategy ps uses plain SGD: no --momentum, --lr-schedule constant")
        if not (cfg.l2 >= 0):
            raise ConfigError(f"--l2 must be >= 0, got {cfg.l2}")
    elif cfg.optimizer != "als":
        raise ConfigError(f"--model mf trains with --optimizer als (alternating least squares), not "
                          f"{cfg.optimizer}")
    if cfg.optimizer == "als" and not (cfg.l2 > 0):
        raise ConfigError(f"--optimizer als needs --l2 > 0 (the ridge N*l2 keeps every user's and item's "
                          f"system positive definite), got {cfg.l2}")
    unsupported = {"class_weight": cfg.class_weight, "hidden": cfg.hidden, "classes": cfg.classes,
                   "shard": cfg.shard != "contiguous", "max_memory": cfg.max_memory,
                   "comm_dtype": cfg.comm_dtype != "float64", "checkpoint_every": cfg.checkpoint_every,
                   "resume": cfg.resume, "x_name": cfg.x_name != "X", "y_name": cfg.y_name != "y",
                   "driver": cfg.driver != "auto",  # ratings: plain read-only opens (three small vectors)
                   "impute": getattr(cfg, "impute", "none") != "none",  # features only: mf has none
                   "standardize": getattr(cfg, "standardize", False)}
    for name, given in unsupported.items():
        if given:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to --model mf "
                              "(ratings are read from the datasets user, item, rating)")


def warm_up_mf_kernels(ctx) -> float:
    """Compile (or load from the cache) the mf kernels on rank 0 first, then on the others."""
    from .kernels import mf as mfk

    def compile_once():
        ids, r, block = np.zeros(1, dtype=np.int64), np.ones(1), np.zeros((1, 2))
        systems, out = np.zeros((1, 5)), np.zeros((1, 2))  # k = 1: 3 packed entries of A + 2 of g
        mfk.mf_normal_equations(ids, ids, r, 0.0, block, systems)
        mfk.mf_solve_systems(systems, 1.0, out)
        mfk.mf_loss(ids, ids, r, 0.0, block, block)
        mfk.mf_predict(ids, ids, 0.0, block, block, np.empty(1))
        mfk.mf_sgd_gradients(ids, ids, r, 0.0, block, block, r, r, out, out.copy())

    t0 = time.perf_counter()
    if ctx.is_root:
        compile_once()
    ctx.barrier()
    if not ctx.is_root:
        compile_once()
    ctx.barrier()
    return time.perf_counter() - t0


def mf_ps_trainer(ctx, model, shard, mu, cfg):
    """Global rating counts per user and item, ratings moved to their users' workers, the trainer."""
    from .data.partition import all_shard_bounds
    from .parallel.mf_ps import MFParameterServer, reshard_by_user

    t0 = time.perf_counter()
    counts = np.concatenate([np.bincount(shard.user, minlength=model.n_users),
                             np.bincount(shard.item, minlength=model.n_items)]).astype(np.int64)
    ctx.allreduce_array(counts)
    n_workers = ctx.size - cfg.servers
    user, item, rating = reshard_by_user(ctx.comm, shard, all_shard_bounds(model.n_users, n_workers), n_workers,
                                         cfg.servers)
    ctx.timers.add("comm", time.perf_counter() - t0)
    return MFParameterServer(ctx, model, user, item, rating, mu=mu, n_total=shard.n_total,
                             user_counts=counts[:model.n_users], item_counts=counts[model.n_users:], cfg=cfg)


def run_train_mf(cfg, ctx) -> dict:
    """``mpidml train --model mf`` collectively; returns the summary (on rank 0, None elsewhere)."""
    from .train import RunDir

    run_dir = RunDir(ctx, cfg)
    try:
        return _run_train_mf(cfg, ctx, run_dir)
    except MpidmlError:
        run_dir.discard()  # failed before its first step: the same --out works for the next try
        raise


def _run_train_mf(cfg, ctx, run_dir) -> dict:
    from .comm import Watchdog
    from .launcher import launcher_info
    from .metrics import Reporter, write_json_atomic
    from .parallel.als import ALSTrainer
    from .train import thread_settings, versions

    t_start = time.perf_counter()
    ctx.start_watchdog(cfg.timeout)
    ps = cfg.strategy == "ps"
    if ps:  # ranks 0..K-1 serve the item rows and read no ratings; workers K..P-1 read them all
        from .parallel.mf_ps import check_mf_ps_layout

        ctx.collective(check_mf_ps_layout, ctx.size, cfg.servers)
        n_workers = ctx.size - cfg.servers
        parts = (n_workers, ctx.rank - cfg.servers if ctx.rank >= cfg.servers else -1)
    else:
        parts = None
    run_dir.prepare()
    prefix = f"[rank {ctx.rank}] " if (ctx.size > 1 and cfg.verbose) else ""
    shard = load_ratings(ctx, cfg.data, parts=parts)
    holdout = load_ratings(ctx, cfg.holdout, n_users=shard.n_users, n_items=shard.n_items) if cfg.holdout else None
    model = ctx.collective(MFModel, shard.n_users, shard.n_items, cfg.rank)
    mu = global_mean(ctx, shard)
    ctx.beat("reading the data", allowance=Watchdog.COMPILE_ALLOWANCE)  # a cold Numba cache takes tens of seconds
    compile_seconds = warm_up_mf_kernels(ctx)
    ctx.beat("compiling the kernels")

    reporter = Reporter(cfg.out if ctx.is_root else None, total=cfg.epochs if ps else cfg.max_iter,
                        unit="epoch" if ps else "iter", mode=cfg.progress, prefix=prefix,
                        enabled=ctx.is_root or cfg.verbose)
    reporter.message(f"mf: {shard.n_total} ratings of {model.n_users} users x {model.n_items} items, rank "
                     f"{model.rank}, global mean {mu:.6g}; {ctx.size} rank(s), {shard.n_local} ratings here")
    if ps:
        trainer = mf_ps_trainer(ctx, model, shard, mu, cfg)
    else:
        trainer = ALSTrainer(ctx, model, shard, l2=cfg.l2, mu=mu, n_total=shard.n_total, max_iter=cfg.max_iter,
                             tol=cfg.tol, reporter=reporter)
    params = model.init_params(cfg.seed)
    t_fit = time.perf_counter()
    run_dir.started()
    ctx.beat("start of training")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected explicitly (exit 3)
            fit = trainer.fit(params)
    except MpidmlError as e:  # raised from reduced values that every rank holds identically
        e.agreed = True
        raise
    finally:
        reporter.close()
    fit_seconds = time.perf_counter() - t_fit

    train_rmse, _ = rmse(ctx, model, shard, params, mu)
    if not math.isfinite(train_rmse):  # the same reduced value on every rank: all raise together
        err = DivergedError(f"mf training diverged (train RMSE {train_rmse}); lower --lr")
        err.agreed = True
        raise err
    if ps:  # the objective at the end (ALS computes it every iteration)
        fit["objective"] = 0.5 * train_rmse ** 2 + model.penalty(params, cfg.l2)
        reporter.log({"epoch": cfg.epochs, "loss": fit["objective"], "objective": fit["objective"],
                      "train_rmse": train_rmse})
    holdout_rmse, n_holdout = rmse(ctx, model, holdout, params, mu) if holdout is not None else (None, 0)
    model_path = os.path.join(cfg.out, "model.h5")
    t0 = time.perf_counter()
    if ctx.is_root:
        save_mf_model(model_path, model, params, mu, l2=cfg.l2, objective=fit["objective"],
                      trained_on=os.path.abspath(cfg.data), config_hash=cfg.training_hash())
    ctx.timers.add("io", time.perf_counter() - t0)
    times = ctx.timers.snapshot()
    n_here = trainer.rating.shape[0] if ps else shard.n_local  # ps: after moving ratings to their users' workers
    per_rank = ctx.gather_floats([times[k] for k in ("wall", "io", "compute", "comm", "other")] + [n_here])
    hostnames = ctx.gather_hostnames()
    if ctx.watchdog is not None:
        ctx.watchdog.stop()
    if not ctx.is_root:
        return None
    summary = {
        "command": "train", "model": "mf", "optimizer": cfg.optimizer, "strategy": cfg.strategy,
        "objective": fit["objective"], "rmse": train_rmse, "holdout_rmse": holdout_rmse,
        "metrics": {"objective": fit["objective"], "train_rmse": train_rmse, "holdout_rmse": holdout_rmse,
                    "n_holdout": n_holdout, "holdout": os.path.abspath(cfg.holdout) if cfg.holdout else None},
        "converged": fit["converged"], "message": fit["message"],
        "steps": fit["ps"]["batches"] if ps else fit["iterations"],
        "objective_history": None if ps else trainer.history,
        "ps": {"servers": cfg.servers, "workers": ctx.size - cfg.servers, **fit["ps"]} if ps else None,
        "n_ratings": shard.n_total, "n_users": model.n_users, "n_items": model.n_items, "rank": model.rank,
        "n_params": model.n_params, "global_mean": mu, "l2": cfg.l2,
        "ranks": ctx.size, "hostnames": hostnames, "launcher": launcher_info(hostnames),
        "shard_rows": [int(r) for r in per_rank[:, 5]],
        "io": {"driver": shard.driver, "path": os.path.abspath(cfg.data)},
        "time": {"wall": times["wall"], "io": times["io"], "compute": times["compute"], "comm": times["comm"],
                 "other": times["other"], "fit": fit_seconds, "jit_compile": compile_seconds,
                 "since_start": time.perf_counter() - t_start},
        "time_per_rank": {k: per_rank[:, i].tolist() for i, k in enumerate(("wall", "io", "compute", "comm", "other"))},
        "config_hash": cfg.training_hash(), "threads": thread_settings(), "versions": versions(),
        "run_dir": os.path.abspath(cfg.out), "model_path": os.path.abspath(model_path), "argv": sys.argv,
    }
    write_json_atomic(os.path.join(cfg.out, "summary.json"), summary)
    return summary


# -- mpidml evaluate / predict with an mf model.h5 ---------------------------------------------
def _refuse_dense_options(args, names) -> None:
    for name in names:
        if getattr(args, name, None):
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to an mf model "
                              "(ratings are read from the datasets user, item, rating)")


def evaluate_mf_command(args) -> int:
    """JSON on rank 0: rmse, mae, objective (with the model's l2) of an mf model on a ratings file."""
    from .comm import Context

    ctx = Context()
    ctx.collective(_refuse_dense_options, args, ("x_name", "y_name"))
    model, params, mu, attrs = ctx.collective(load_mf_model, args.model)
    shard = load_ratings(ctx, args.data, n_users=model.n_users, n_items=model.n_items)
    warm_up_mf_kernels(ctx)
    err = model.predict(shard.user, shard.item, params, mu) - shard.rating
    sums = ctx.allreduce_array(np.array([float(np.dot(err, err)), float(np.abs(err).sum()), float(shard.n_local)]))
    if ctx.is_root:
        n = sums[2]
        l2 = float(attrs.get("l2", 0.0))
        print_json({"model": "mf", "data": os.path.abspath(args.data), "ranks": ctx.size, "n_ratings": int(n),
                    "rmse": math.sqrt(sums[0] / n), "mae": sums[1] / n,
                    "objective": 0.5 * sums[0] / n + model.penalty(params, l2), "l2": l2})
    return 0


def predict_mf_command(args) -> int:
    """PRED.h5 with ``prediction`` (N,) float64 for every (user, item) row of DATA, in row order.

    Each rank predicts its block of rows; :func:`mpidml.predict.write_predictions` writes
    them (collectively with parallel HDF5, else in turn) into a temporary file that rank 0
    renames into place, as ``mpidml predict`` does for dense models.
    """
    from .comm import Context
    from .predict import check_output, write_predictions

    ctx = Context()
    t0 = time.perf_counter()
    ctx.collective(_refuse_dense_options, args, ("x_name",))
    model, params, mu, _ = ctx.collective(load_mf_model, args.model)
    ctx.collective(lambda: check_output(args.output, args.overwrite, {"data": args.data, "model": args.model})
                   if ctx.is_root else None)
    shard = load_ratings(ctx, args.data, n_users=model.n_users, n_items=model.n_items, with_rating=False)
    warm_up_mf_kernels(ctx)
    prediction = model.predict(shard.user, shard.item, params, mu)
    attrs = {"model": "mf", "source": os.path.abspath(args.data), "n_rows": shard.n_total}
    how = write_predictions(ctx, args.output, {"prediction": prediction}, shard.lo, shard.n_total, attrs)
    if ctx.is_root:
        print_json({"output": os.path.abspath(args.output), "model": "mf", "n_rows": shard.n_total,
                    "ranks": ctx.size, "write": how, "datasets": ["prediction"], "seconds": time.perf_counter() - t0})
    return 0


