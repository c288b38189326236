"""The training job, from a validated config to a run directory.

    prepare RUN/  ->  read this rank's rows  ->  --impute/--standardize (global
    statistics, applied in place)  ->  check labels  ->  build model
    ->  strategy.fit  ->  final objective and metrics on all rows  ->  model.h5,
    summary.json

Every step that can fail on bad input runs locally and then agrees across
ranks (:meth:`Context.collective`), so a problem on one rank ends the job on
every rank with the same one-line message instead of a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

from . import __version__, faults
from .checkpoint import Checkpointer, checkpoint_path, data_fingerprint, list_checkpoints, load_checkpoint
from .comm import Context, Watchdog, mpi_library_version
from .config import TrainConfig
from .data import h5py_has_mpi, inspect, read_shard
from .data.csr import inspect_csr, is_csr, read_csr_shard
from .data.stream import StreamingShard, open_streaming_shard, x_bytes_per_rank
from .errors import ConfigError, DataError, MpidmlError
from .imbalance import prepare_rows
from .launcher import launcher_info
from .metrics import Reporter, write_json_atomic
from .modelio import save_model
from .models import make_model
from .models.streamed import StreamedModel
from .parallel import STRATEGIES
from .preprocess import apply_preprocessing, fit_preprocessing


def prepare_run_dir(path: str, overwrite: bool, resume: bool = False) -> None:
    """Root only: create RUN/, refusing to mix a new run into an old one."""
    if resume:
        if not list_checkpoints(path):
            raise ConfigError(f"--resume {path}: no checkpoint found in {os.path.join(path, 'checkpoints')}")
    elif os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"--out {path} exists and is not a directory")
        if os.listdir(path) and not overwrite:
            raise ConfigError(f"run directory {path} is not empty; use --overwrite to replace it "
                              "or --resume to continue it")
        for name in ("metrics.jsonl", "summary.json", "model.h5", "config.toml"):
            if os.path.exists(os.path.join(path, name)):
                os.remove(os.path.join(path, name))
        shutil.rmtree(os.path.join(path, "checkpoints"), ignore_errors=True)
    else:
        try:
            os.makedirs(path)
        except OSError as e:
            raise ConfigError(f"cannot create run directory {path}: {e.strerror}") from None
    probe = os.path.join(path, f".write-test.{os.getpid()}")
    try:
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"run directory {path} is not writable: {e.strerror}") from None


class RunDir:
    """The run directory of a run, prepared on root; undone if the run fails before its first step.

    A new run writes config.toml (and soon metrics.jsonl) before its data is read. When the data
    or an option only the data can refute stops it (a NaN, a wrong dataset name, a batch larger
    than the data), the corrected command must be able to use the same ``--out``:
    :meth:`discard` removes what this run wrote, and the directory itself if this run created it.
    A resumed run, or a run past :meth:`started`, keeps everything (its checkpoints matter).
    """

    WRITTEN = ("config.toml", "metrics.jsonl", "summary.json", "model.h5")

    def __init__(self, ctx: Context, cfg, resuming: bool = False):
        self.ctx, self.cfg, self.resuming = ctx, cfg, resuming
        self.created = False
        self.armed = False  # root only: this run wrote into the directory and has not started

    def prepare(self) -> None:
        """Collective: create (or clear, with --overwrite) RUN/ and write RUN/config.toml."""
        def on_root():
            self.created = not os.path.exists(self.cfg.out)
            prepare_run_dir(self.cfg.out, self.cfg.overwrite, self.resuming)
            if not self.resuming:  # a resumed run keeps the config it was started with
                self.armed = True
                with open(os.path.join(self.cfg.out, "config.toml"), "w") as fh:
                    fh.write(config_toml(self.cfg))
        self.ctx.collective(lambda: on_root() if self.ctx.is_root else None)

    def started(self) -> None:
        self.armed = False

    def discard(self) -> None:
        """Root: remove what this not-yet-started run wrote (no-op elsewhere and after started())."""
        if not self.armed:
            return
        self.armed = False
        out = self.cfg.out
        for name in self.WRITTEN:
            try:
                os.remove(os.path.join(out, name))
            except OSError:
                pass
        shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
        if self.created:
            try:
                os.rmdir(out)  # only if empty: nothing of the user's is removed
            except OSError:
                pass


def config_toml(cfg) -> str:
    """RUN/config.toml: the resolved options, with the input files as absolute paths, so that
    ``--resume RUN`` finds them from any working directory (a requeued batch job)."""
    paths = {k: os.path.abspath(getattr(cfg, k)) for k in ("data", "holdout") if getattr(cfg, k, "")}
    return dataclasses.replace(cfg, **paths).to_toml()


def versions() -> dict:
    import h5py
    import mpi4py
    import numba

    return {"mpidml": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "mpi4py": mpi4py.__version__, "mpi_library": mpi_library_version()}


def thread_settings() -> dict:
    keys = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return {k: os.environ.get(k) for k in keys}


def huge_pages() -> dict:
    """Transparent huge pages: the kernel's setting and whether NumPy asks for them.

    X is a NumPy array; NumPy calls madvise(MADV_HUGEPAGE) on large allocations, which takes
    effect when the setting is ``always`` or ``madvise``. With 4 KiB pages a pass over X reads
    at about half the bandwidth (``scripts/bench_kernels.py --pages 4k`` vs ``--pages huge``).
    """
    setting = None
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
        setting = text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()
    except (OSError, ValueError):
        pass
    try:
        from numpy._core.multiarray import _get_madvise_hugepage
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core.multiarray import _get_madvise_hugepage
        except ImportError:
            _get_madvise_hugepage = None
    numpy_asks = bool(_get_madvise_hugepage()) if _get_madvise_hugepage is not None else None
    return {"transparent_hugepage": setting, "numpy_madvise_hugepage": numpy_asks,
            "large_arrays_get_huge_pages": bool(numpy_asks and setting in ("always", "madvise")) if setting else None}


def load_training_data(ctx: Context, cfg: TrainConfig, y_dtype, parts=None):
    """Metadata check, then this rank's rows; both agreed across ranks.

    ``parts=(n_parts, part)`` splits the rows over n_parts data-holding ranks
    (default: all ranks); part -1 holds no rows (a parameter server).
    When X is a group (the CSR layout, mpidml.data.csr) the shard is a CSRShard.
    """
    if ctx.collective(is_csr, cfg.data, cfg.x_name):
        return load_csr_training_data(ctx, cfg, y_dtype, parts)
    meta = ctx.collective(inspect, cfg.data, x_name=cfg.x_name, y_name=cfg.y_name)
    n_parts = ctx.size if parts is None else parts[0]
    if meta["n_rows"] < n_parts:
        who = "ranks" if n_parts == ctx.size else "data-holding ranks (workers)"
        ctx.agree(DataError(f"{cfg.data} has {meta['n_rows']} row(s), fewer than the {n_parts} {who}; "
                            f"use fewer ranks"))
    t0 = time.perf_counter()
    max_memory = getattr(cfg, "max_memory", 0)
    allow_nan_x = getattr(cfg, "impute", "none") == "mean"  # NaN in X is a missing value, filled later
    if max_memory and x_bytes_per_rank(meta["n_rows"], meta["n_features"], np.dtype(meta["x_dtype"]).itemsize,
                                       n_parts) > max_memory:
        # Decided from metadata alone, so every rank streams (no rank waits in a collective read).
        shard = ctx.collective(open_streaming_shard, cfg.data, x_name=cfg.x_name, y_name=cfg.y_name,
                               y_dtype=y_dtype, parts=parts or (ctx.size, ctx.rank), max_memory=max_memory,
                               allow_nan_x=allow_nan_x)
    else:
        shard = ctx.collective(read_shard, cfg.data, ctx.comm, x_name=cfg.x_name, y_name=cfg.y_name,
                               driver=cfg.driver, y_dtype=y_dtype, parts=parts, allow_nan_x=allow_nan_x)
    if faults.active:
        faults.point("load", ctx.rank)
    ctx.timers.add("io", time.perf_counter() - t0)
    return meta, shard


def load_csr_training_data(ctx: Context, cfg: TrainConfig, y_dtype, parts=None):
    """Metadata check, then this rank's CSR rows (independent reads of its slice); agreed."""
    meta = ctx.collective(inspect_csr, cfg.data, x_name=cfg.x_name, y_name=cfg.y_name)
    unsupported = [(flag, fix) for flag, on, fix in (
        ("--model mlp", getattr(cfg, "model", "") == "mlp", "use --model logistic|softmax|linear"),
        (f"--shard {getattr(cfg, 'shard', '')}", getattr(cfg, "shard", "contiguous") != "contiguous",
         "use --shard contiguous"),
        ("--max-memory", getattr(cfg, "max_memory", 0), "drop it: a CSR shard is read whole"),
        # centring would make every row dense; hashed counts have no missing values
        ("--standardize", getattr(cfg, "standardize", False), "drop it (or scale the counts when converting)"),
        ("--impute mean", getattr(cfg, "impute", "none") != "none", "drop it: CSR has no NaN to fill")) if on]
    if unsupported:
        flag, fix = unsupported[0]
        ctx.agree(ConfigError(f"{cfg.data} holds sparse (CSR) X, which {flag} does not support; {fix}"))
    t0 = time.perf_counter()
    shard = ctx.collective(read_csr_shard, cfg.data, x_name=cfg.x_name, y_name=cfg.y_name, y_dtype=y_dtype,
                           parts=parts or (ctx.size, ctx.rank))
    if faults.active:
        faults.point("load", ctx.rank)
    ctx.timers.add("io", time.perf_counter() - t0)
    return meta, shard


def infer_classes(ctx: Context, cfg: TrainConfig, shard) -> int:
    if cfg.model not in ("softmax", "mlp"):
        return 2
    if cfg.classes:
        return cfg.classes
    local_max = float(np.max(shard.y)) if shard.n_local else -1.0
    return int(ctx.allreduce_scalar(local_max, op="max")) + 1


def warm_up_groups(model, shard, training: bool = True) -> tuple:
    """The kernels a run calls, as callables that share no compiled Numba function.

    The first compiles the model's loss/gradient kernel, the last everything else (the
    evaluation and batch-accuracy kernels and, when ``training``, the batch plan, the gradient
    finish, the optimizer steps, the L-BFGS scaling sums, the sparse parameter server's
    coordinates). The compiled mini-batch loop links kernels of both groups (the loss kernel;
    the logged steps' margin and batch-accuracy kernels) and compiles after them
    (:func:`warm_up_kernels`). A model
    whose evaluation shares a compiled function with its loss kernel (``eval_shares_loss_kernel``,
    the MLP's forward pass) has its evaluation calls in the first group. Calling all compiles
    (or loads) everything the training loop (or ``mpidml evaluate``) and the final evaluation call.
    """
    rows = np.arange(min(1, shard.n_local), dtype=np.int64)
    scratch = np.zeros(model.n_params)
    shared = bool(getattr(model, "eval_shares_loss_kernel", False))

    def evaluation():
        model.stats(shard, model.init_params(), rows)
        if model.is_classifier:  # the batch accuracy a mini-batch loop logs
            model.batch_hits(shard, model.init_params(), rows)

    def compile_loss_grad():
        model.loss_grad(shard, model.init_params(), rows, scratch, True)
        model.loss_grad(shard, model.init_params(), rows, scratch, False)
        if model.is_classifier and model.fused_hits(shard):  # a logged step's loss, gradient and hits
            model.loss_grad_hits(shard, model.init_params(), rows, scratch, np.zeros(1))
        if shared:
            evaluation()

    def compile_the_rest():
        # what the first mini-batch step and the final evaluation call, which every rank
        # would otherwise compile at once on a cold cache (seen with NUMBA_DEBUG_CACHE=1).
        from types import SimpleNamespace

        from . import kernels
        from .parallel.allreduce import EpochPlan

        if not shared:
            evaluation()
        if not training:
            return
        one = np.zeros(1, dtype=np.int64)
        plan = EpochPlan(SimpleNamespace(lo=0, n_local=1), 1, 1, 0, "global")
        plan.build(0)  # the batch plan, its dtypes
        plan.begin_next(1)  # and the next epoch's, built ahead and finished from Python (EpochPlan.build)
        plan.build(1)
        g = np.zeros(model.n_params)  # the mini-batch loop's fused gradient finish
        kernels.mean_gradient_norm2(g, 1.0, g, 0.0, 0, g.copy())
        kernels.penalty_norm2(g, 0)  # a logged mini-batch step's penalty (the Python loop's log record)
        kernels.rows_weight_sum(g, one[:0])  # the batch's weight (a mini-batch step in Python)
        kernels.sgd_update(g, g.copy(), g[:0], 0.0, 0.0, False)  # optim.SGD / optim.Adam's step
        kernels.adam_update(g, g.copy(), g.copy(), g.copy(), 0.0, 0.9, 0.999, 0.1, 0.001, 1e-8)
        sq = np.zeros(getattr(model, "n_features", 0) or 1)  # L-BFGS's feature-scaled H0 (allreduce.lbfgs_h0)
        if hasattr(shard, "indices"):
            kernels.csr_column_sq_sums(shard.indices[:0], shard.data[:0], sq)
        elif getattr(shard, "X", None) is not None:
            kernels.column_sq_sums(shard.X[:0], sq)
        elif hasattr(shard, "x_dtype"):  # streamed (X is None)
            kernels.column_sq_sums(np.zeros((0, sq.size), dtype=shard.x_dtype), sq)
        if getattr(shard, "is_sparse", False):  # what the sparse parameter server calls per step
            D = shard.n_features
            kernels.csr_touched_coords(shard.indptr, shard.indices, rows, model.n_outputs, D,
                                       np.full(D, -1, dtype=np.int64), 0, np.empty(D, dtype=np.int64),
                                       np.empty(model.n_outputs * (D + 1), dtype=np.int64))

    return compile_loss_grad, compile_the_rest


def warm_up_kernels(ctx: Context, model, shard, training: bool = True, step_loop=None) -> None:
    """Compile (or load from Numba's cache) every kernel a run calls, each on one rank only.

    With ``cache=True`` every rank would otherwise compile at once and race to write the
    same cache files. The kernels come in two groups that share no compiled function
    (:func:`warm_up_groups`): the model's loss/gradient kernel (the largest: ~5.4 s of a cold
    start's ~9 s for dense logistic regression) and everything else. On a cold cache rank 0
    compiles the first group while rank 1 compiles the second (one rank: both in turn); then
    every rank calls both groups, which loads what the other rank saved. So each cache file is
    written by one rank, and a cold start costs the larger group instead of the sum. Then, when
    the run uses the compiled step loop (``step_loop``), rank 0 compiles it (~1.5 s; it links
    kernels of both groups) and the others load it. ``training=False``: only what ``mpidml
    evaluate`` calls.
    """
    compile_in_groups(ctx, warm_up_groups(model, shard, training))
    if step_loop is not None:  # links kernels of both groups: compiled after them, on one rank
        compile_in_groups(ctx, [step_loop.compile])


def compile_in_groups(ctx: Context, groups) -> None:
    """Collective: call every callable of ``groups`` on every rank, each first on one rank only.

    ``groups``: callables that compile (or load) Numba functions and share none (a function
    two groups reach would be compiled by two ranks at once on a cold cache). Group i runs on
    rank i first (one rank: all in turn; groups past the last rank: on rank 0), then every
    rank runs the ones it has not, which loads what the others saved.
    """
    groups = tuple(groups)

    # Numba's one-time set-up (its CPU target's registries import numba.np and SciPy's BLAS,
    # ~0.4 s) touches no cache file: every rank does it at once, not one after the other.
    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    except Exception:  # pragma: no cover - a Numba without this internal API: the first compile does it
        pass
    mine = [g for i, g in enumerate(groups) if (i if i < ctx.size else 0) == ctx.rank]
    for group in mine:
        group()
    ctx.barrier()
    for group in groups:
        if group not in mine:
            group()
    ctx.barrier()  # so the first training collective does not absorb the others' cache loads


def evaluate_params(ctx: Context, model, shard, params, l2: float) -> dict:
    """Objective on all rows (loss + (l2/2)||W||^2) and model metrics, collectively."""
    rows = np.arange(shard.n_local, dtype=np.int64)
    scratch = np.zeros(model.n_params)
    n_stats = model.n_stats()
    buf = np.zeros(2 + n_stats)
    t0 = time.perf_counter()
    buf[0] = model.loss_grad(shard, params, rows, scratch, True)
    buf[1] = float(shard.sw.sum()) if shard.sw.size else float(shard.n_local)
    buf[2:] = model.stats(shard, params, rows)
    t1 = time.perf_counter()
    ctx.allreduce_array(buf)
    ctx.timers.add("compute", t1 - t0)
    ctx.timers.add("comm", time.perf_counter() - t1)
    wp = params[model.penalized]
    out = {"objective": float(buf[0] / buf[1] + 0.5 * l2 * np.dot(wp, wp)),
           "mean_loss": float(buf[0] / buf[1]), "n_rows": int(round(buf[1])) if not shard.sw.size else None,
           "weight_sum": float(buf[1])}
    out.update(model.metrics_from_stats(buf[2:], buf[1]))
    return out


def load_resume_state(ctx: Context, cfg: TrainConfig, ckpt_meta: dict, reporter) -> dict:
    """Collective: the newest checkpoint of cfg.out, validated on root, read on every rank."""
    step = np.array([-1], dtype=np.int64)

    def pick_and_check():
        found = list_checkpoints(cfg.out)
        state = load_checkpoint(found[-1][1], ckpt_meta)  # raises on another config/dataset or a bad file
        step[0] = state["step"]
        return state

    state = ctx.collective(lambda: pick_and_check() if ctx.is_root else None)
    ctx.bcast_array(step)
    if not ctx.is_root:
        state = ctx.collective(load_checkpoint, checkpoint_path(cfg.out, int(step[0])), None)
    else:
        ctx.collective(lambda: None)
        _truncate_metrics(os.path.join(cfg.out, "metrics.jsonl"), int(step[0]))
    reporter.message(f"resuming from {state['path']} (step {state['step']})")
    return state


def _truncate_metrics(path: str, step: int) -> None:
    """Drop metric lines logged after the checkpoint (the resumed run logs them again)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if rec.get("step", rec.get("iter", 0)) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
    with open(path, "w") as fh:
        fh.writelines(keep)


def run_train(cfg: TrainConfig, ctx: Context) -> dict:
    """Run ``mpidml train`` collectively; returns the summary (on every rank)."""
    if cfg.model == "mf":  # ratings (user, item, rating), not X and y: the recommender job
        from .recommend import run_train_mf

        return run_train_mf(cfg, ctx)
    run_dir = RunDir(ctx, cfg, bool(cfg.resume))
    try:
        return _run_train(cfg, ctx, run_dir)
    except MpidmlError:
        run_dir.discard()  # failed before its first step: the same --out works for the next try
        raise


def _run_train(cfg: TrainConfig, ctx: Context, run_dir: RunDir) -> dict:
    t_start = time.perf_counter()
    ctx.start_watchdog(cfg.timeout)
    resuming = bool(cfg.resume)
    strategy = STRATEGIES[cfg.strategy]
    # The strategy checks the options against the number of ranks before anything is written.
    parts = ctx.collective(strategy.data_parts, ctx, cfg)
    run_dir.prepare()
    verbose_prefix = f"[rank {ctx.rank}] " if (ctx.size > 1 and cfg.verbose) else ""
    say = Reporter(None, mode=cfg.progress if cfg.progress != "bar" else "log", prefix=verbose_prefix,
                   enabled=ctx.is_root or cfg.verbose)

    y_dtype = np.int64 if cfg.model in ("softmax", "mlp") else np.float64
    meta, shard = load_training_data(ctx, cfg, y_dtype, parts)
    if cfg.optimizer in ("sgd", "adam") and cfg.batch_size > meta["n_rows"]:
        # (the trainers check it too) before anything compiles: the same N on every rank
        err = ConfigError(f"--batch-size {cfg.batch_size} is larger than the dataset ({meta['n_rows']} rows)")
        err.agreed = True
        raise err
    # From here to the first step the kernels compile (the preprocessing, label and plan kernels
    # on first use, then warm_up_kernels): tens of seconds with a cold Numba cache.
    ctx.beat("reading the data", allowance=Watchdog.COMPILE_ALLOWANCE)
    io_reason = ("h5py built with MPI" if h5py_has_mpi() else "h5py built without MPI") if cfg.driver == "auto" \
        else f"forced with --driver {cfg.driver}"
    if meta.get("sparse"):
        io_reason = f"CSR, {meta['nnz']} stored values: each rank reads only its rows' slices"
    say.message(f"io: {shard.driver} reads of {meta['n_rows']} x {meta['n_features']} {meta['x_dtype']} "
                f"from {cfg.data} ({io_reason}); {ctx.size} rank(s), {shard.n_local} rows here")

    preprocessing = None
    if cfg.impute != "none" or cfg.standardize:
        preprocessing = fit_preprocessing(ctx, shard, cfg.impute, cfg.standardize, cfg.data)
        apply_preprocessing(preprocessing, shard)
        say.message(preprocessing.describe(meta["n_rows"]))

    n_classes = infer_classes(ctx, cfg, shard)
    model = ctx.collective(make_model, cfg.model, meta["n_features"], n_classes, cfg.hidden)
    ctx.collective(model.check_labels, shard.y, shard.lo)
    streamed = isinstance(shard, StreamingShard)
    class_weights, base_sw = None, shard.sw
    if cfg.shard != "contiguous" or cfg.class_weight:
        if streamed:
            ctx.agree(ConfigError("--shard and --class-weight need the shard in memory; raise --max-memory"))
        t0 = time.perf_counter()
        shard, class_weights, base_sw = prepare_rows(ctx, shard, n_classes, cfg.shard, cfg.class_weight, cfg.seed)
        ctx.timers.add("comm", time.perf_counter() - t0)
    if streamed:
        model = StreamedModel(model, shard, max_batch=cfg.batch_size if cfg.optimizer in ("sgd", "adam") else 1)
        say.message(f"io: shard of {shard.n_local} x {shard.n_features} exceeds --max-memory {cfg.max_memory}; "
                    f"streaming it in chunks of {shard.chunk_rows} rows (read-ahead)")
    weight_sum = ctx.allreduce_scalar(float(shard.sw.sum()) if shard.sw.size else float(shard.n_local))

    cfg_total = cfg.max_iter if cfg.optimizer in ("lbfgs", "gd") else -(-meta["n_rows"] // cfg.batch_size) * cfg.epochs
    reporter = Reporter(cfg.out if ctx.is_root else None, total=cfg_total,
                        unit="iter" if cfg.optimizer in ("lbfgs", "gd") else "step",
                        mode=cfg.progress, prefix=verbose_prefix, enabled=ctx.is_root or cfg.verbose)
    trainer = strategy(ctx, model, shard, cfg, reporter, weight_sum)

    t0 = time.perf_counter()
    # the allreduce trainer's compiled step loop, if the run uses it (collective decision)
    step_loop = trainer.step_loop() if hasattr(trainer, "step_loop") else None
    warm_up_kernels(ctx, model, shard, step_loop=step_loop)
    ctx.beat("compiling the kernels")
    compile_seconds = time.perf_counter() - t0
    reporter.t0 = time.perf_counter()  # metrics times count from here, after the warm-up
    ckpt_meta = {"config_hash": cfg.training_hash(), "config": cfg.training_options(), "n_params": model.n_params,
                 "data": ctx.collective(lambda: data_fingerprint(cfg.data, cfg.x_name, cfg.y_name)
                                        if ctx.is_root else None)}
    resume = load_resume_state(ctx, cfg, ckpt_meta, reporter) if resuming else None
    # allreduce: every rank saves the same steps, so a failed write is agreed on (one line, exit 2
    # everywhere); the parameter server's rank 0 saves alone (its failure aborts the job, exit 2)
    trainer.checkpointer = Checkpointer(cfg.out, cfg.checkpoint_every, ckpt_meta, ctx.is_root, ctx.rank,
                                        ctx=ctx if cfg.strategy == "allreduce" else None)
    params = model.init_params(cfg.seed)  # zeros, or the MLP's seeded random start (same on every rank)
    t_fit = time.perf_counter()
    fit_start_unix = time.time()  # wall clock, so benchmarks can measure launch -> first step
    run_dir.started()
    ctx.beat("start of training")
    try:
        # Overflow to Inf/NaN is detected explicitly (exit code 3), not warned about.
        with np.errstate(over="ignore", invalid="ignore"):
            fit = trainer.fit(params, resume)
    except MpidmlError as e:
        # Raised from values every rank holds identically (global N, reduced sums), unless the
        # error says otherwise (checkpoint.RootOnlyError: a write only rank 0 made).
        if getattr(e, "agreed", None) is None:
            e.agreed = True
        raise
    finally:
        reporter.close()
    fit_seconds = time.perf_counter() - t_fit

    final = evaluate_params(ctx, model, shard, params, cfg.l2)
    if class_weights is not None:
        # The objective is the class-weighted one that was minimised; the metrics count rows as they are.
        final_rows = evaluate_params(ctx, model, dataclasses.replace(shard, sw=base_sw), params, cfg.l2)
        final.update({k: v for k, v in final_rows.items() if k not in ("objective", "mean_loss", "weight_sum")})
        final["class_weight"] = class_weights.tolist()
    t0 = time.perf_counter()
    model_path = os.path.join(cfg.out, "model.h5")
    if ctx.is_root:
        save_model(model_path, model, params, l2=cfg.l2, objective=final["objective"],
                   trained_on=os.path.abspath(cfg.data), config_hash=cfg.training_hash(),
                   extra_arrays=preprocessing.model_arrays(model, params) if preprocessing else None)
    ctx.timers.add("io", time.perf_counter() - t0)

    times = ctx.timers.snapshot()
    per_rank = ctx.gather_floats([times[k] for k in ("wall", "io", "compute", "comm", "other")] + [shard.n_local,
                                                                                            compile_seconds])
    hostnames = ctx.gather_hostnames()
    summary = None
    if ctx.is_root:
        from .kernels import cpu_choices

        summary = {
            "command": "train",
            "model": model.name, "optimizer": cfg.optimizer, "strategy": cfg.strategy,
            "objective": final["objective"],
            **{k: final[k] for k in ("accuracy", "rmse", "r2") if k in final},
            "metrics": final,
            "converged": fit["converged"], "message": fit["message"],
            "steps": trainer.steps, "epochs": trainer.epochs_done if cfg.optimizer in ("sgd", "adam") else None,
            "evaluations": fit["evaluations"],
            "n_rows": meta["n_rows"], "n_features": meta["n_features"], "n_params": model.n_params,
            "n_classes": getattr(model, "n_classes", None),
            "shard": cfg.shard, "class_weight": final.get("class_weight"),
            "preprocess": preprocessing.summary() if preprocessing else None,
            "ranks": ctx.size, "hostnames": hostnames, "launcher": launcher_info(hostnames),
            "shard_rows": [int(r) for r in per_rank[:, 5]],
            "io": {"driver": shard.driver, "reason": io_reason, "path": os.path.abspath(cfg.data),
                   "streamed": {"chunk_rows": shard.chunk_rows, "buffer_bytes": shard.memory_bytes,
                                "bytes_read": shard.bytes_read} if streamed else None,
                   "x_dtype": str(meta["x_dtype"]), "sparse_nnz": meta.get("nnz")},
            "time": {"wall": times["wall"], "io": times["io"], "compute": times["compute"],
                     "comm": times["comm"], "other": times["other"], "fit": fit_seconds,
                     "jit_compile": compile_seconds, "since_start": time.perf_counter() - t_start,
                     "run_start_unix": fit_start_unix - (t_fit - t_start), "fit_start_unix": fit_start_unix,
                     "metrics_t0_unix": fit_start_unix - (t_fit - reporter.t0)},
            "time_per_rank": {k: per_rank[:, i].tolist() for i, k in enumerate(("wall", "io", "compute", "comm", "other"))},
            # seconds of kernel warm-up (compile or cache load, and waiting for rank 0's), part of "other"
            "warm_up_per_rank": per_rank[:, 6].tolist(),
            "replica_resyncs": getattr(trainer, "replica_resyncs", 0),
            "resumed_from": resume["path"] if resume else None,
            "checkpoint": trainer.checkpointer.last_path,
            **trainer.summary_section(),
            "config_hash": cfg.training_hash(),
            "threads": thread_settings(),
            "huge_pages": huge_pages(),  # rank 0's node: 4 KiB pages make passes over X slower
            "kernels": cpu_choices(),  # rank 0's CPU: the kernels' CPU-dependent variants
            "versions": versions(),
            "run_dir": os.path.abspath(cfg.out),
            "model_path": os.path.abspath(model_path),
            "argv": sys.argv,
        }
        write_json_atomic(os.path.join(cfg.out, "summary.json"), summary)
    if ctx.watchdog is not None:
        ctx.watchdog.stop()
    if streamed:
        shard.close()
    return summary
