"""The ``mpidml`` command line: train, evaluate, generate, convert, report, info.

This module imports nothing heavy at the top: ``--threads`` must reach
NUMBA_NUM_THREADS / OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS
before NumPy and Numba load their thread pools. One process per core is the
MPI way, so the default is one thread per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .metrics import print_json  # light (json, os): strict JSON for every line the commands print

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _launcher_rank() -> int:
    """This process's rank from the launcher's environment, without initialising MPI."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


def _launched_with_others() -> bool:
    """True when a launcher started this process as one of several ranks (no MPI initialised)."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


class _Parser(argparse.ArgumentParser):
    """argparse that prints usage errors on rank 0 only (every rank still exits 2)."""

    def error(self, message):
        if _launcher_rank() == 0:
            self.print_usage(sys.stderr)
            sys.stderr.write(f"mpidml: error: {message}\n")
            sys.stderr.flush()
        if _launched_with_others():
            # Every rank parsed the same command line and is here. The launcher ends the job at
            # the first non-zero exit, so a rank that exits at once (before rank 0 has even
            # started) would swallow rank 0's message: meet rank 0 first.
            try:
                from mpi4py import MPI

                MPI.COMM_WORLD.Barrier()
            except Exception:  # no usable MPI: exiting is still right
                pass
        sys.exit(2)


def parse_bytes(text: str) -> int:
    """'512M', '2G', '1.5e9', '4096' -> bytes (K/M/G/T are powers of 1024)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in "KMGT" else ""
    try:
        value = float(t[:-1] if unit else t) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 512M, 2G)") from None
    if not (value >= 0):
        raise argparse.ArgumentTypeError(f"size must be >= 0, got {text!r}")
    return int(value)


def positive_int(text: str) -> int:
    """An integer > 0 (``--threads``: checked before any thread pool sees it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _flag(p, name, type_, help_, metavar=None):
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), type=type_, default=None, help=help_, metavar=metavar)


def _switch(p, name, help_):
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action="store_const", const=True, default=None, help=help_)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mpidml", description="Distributed machine learning on MPI. "
                     "Launch training with: mpirun -n N mpidml train DATA.h5 --out RUN")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mpidml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model on an HDF5 dataset (run under mpirun/srun)",
                       description="Train on an HDF5 dataset with datasets X (N, D) and y (N,). "
                       "Flags override the --config TOML file, which overrides the defaults. "
                       "Objective: (1/N) sum_i loss_i + (l2/2)||W||^2 (intercepts not penalised).")
    t.add_argument("data", nargs="?", default=None, help="HDF5 file with X and y")
    t.add_argument("--config", help="TOML file with options (same names as the flags, _ for -)")
    _flag(t, "out", str, "run directory to create (config.toml, metrics.jsonl, summary.json, model.h5)", "RUN")
    _flag(t, "model", str, "linear | logistic | softmax | mlp | mf (matrix factorization of ratings; "
          "default logistic)")
    _flag(t, "rank", int, "mf: number of latent factors k", "K")
    _flag(t, "holdout", str, "mf: held-out ratings file; its RMSE goes into summary.json", "FILE")
    _flag(t, "classes", int, "softmax/mlp: number of classes (default: max label + 1)")
    _flag(t, "hidden", str, "mlp: hidden layer sizes, one or two ReLU layers, e.g. 64 or 128,64 (default 64)", "H[,H2]")
    _flag(t, "class-weight", str, "classifiers: balanced (n / (n_classes * count_c), global counts) or explicit "
          "weights like 0:1,1:5 (default none)", "balanced|C:W,...")
    _flag(t, "shard", str, "which rows each rank holds: contiguous (default) | stratified (every rank gets the class "
          "mix) | shuffled (seeded permutation); the trained model does not depend on it")
    _flag(t, "l2", float, "L2 penalty on the coefficients (default 1e-4)")
    _flag(t, "impute", str, "mean: NaN in X is a missing value, filled with its column's mean over all rows "
          "(stored in model.h5); none (default): NaN is an error")
    _switch(t, "standardize", "scale X to zero mean and unit variance per column (global mean and std, after "
            "--impute; constant columns only centred); stored in model.h5 and applied by evaluate and predict")
    _flag(t, "strategy", str, "allreduce (default) | ps (parameter server on rank 0; sgd/adam only)")
    _flag(t, "comm-dtype", str, "allreduce: float64 (default) | float32: gradients travel as float32 (half "
          "the bytes); parameters, optimizer state and the objective stay float64")
    _flag(t, "step-loop", str, "allreduce sgd/adam: auto (default; linear/logistic/softmax steps run in one compiled "
          "loop that calls MPI itself) | python (every step in Python; bitwise the same result)")
    _flag(t, "reduction", str, "allreduce sgd/adam steps: auto (default; ranks on one node sum the step's gradient "
          "through shared memory in a fixed order, nodes through one MPI_Allreduce among their first ranks; "
          "--comm-dtype float32 keeps MPI_Allreduce) | mpi (MPI_Allreduce)")
    _flag(t, "optimizer", str, "sgd | adam | gd | lbfgs | als (mf only) (default lbfgs)")
    _flag(t, "lr", float, "learning rate for sgd, adam and gd (default 0.1)")
    _flag(t, "lr-schedule", str, "constant | inverse_sqrt | step | cosine (default constant)")
    _flag(t, "momentum", float, "sgd/gd momentum in [0, 1) (default 0)")
    _switch(t, "nesterov", "Nesterov momentum")
    _flag(t, "beta1", float, "adam beta1 (default 0.9)")
    _flag(t, "beta2", float, "adam beta2 (default 0.999)")
    _flag(t, "batch-size", int, "global mini-batch size over all ranks (default 256)")
    _flag(t, "epochs", int, "sgd/adam epochs (default 10)")
    _flag(t, "max-iter", int, "lbfgs iterations / gd steps (default 1000)")
    _flag(t, "tol", float, "lbfgs/gd: stop when max|gradient| <= tol (default 1e-8)")
    _flag(t, "ftol", float, "lbfgs: also stop when (f_old - f) / max(|f_old|, |f|, 1) <= ftol, as SciPy's "
                            "and scikit-learn's L-BFGS (which use 64 * 2.2e-16); default 0: off")
    _flag(t, "memory", int, "lbfgs history size (default 10)")
    _flag(t, "lbfgs-scaling", str, "lbfgs initial inverse Hessian: features (default: a diagonal from each "
                                   "feature's mean square, so features in different units cost no extra "
                                   "iterations) | none (s'y/y'y times the identity, as SciPy)")
    _flag(t, "shuffle", str, "global (one seeded permutation of all rows per epoch; default) | none")
    _flag(t, "seed", int, "seed of the epoch shuffles (default 0)")
    _flag(t, "ps-mode", str, "ps: sync (same updates as allreduce; default) | async | ssp (bounded staleness)")
    _flag(t, "staleness", int, "ps ssp: clocks a worker may run ahead of the slowest (default 0)", "S")
    _flag(t, "servers", int, "ps: ranks 0..K-1 each hold a slice of the parameters (default 1)", "K")
    _flag(t, "threads", positive_int, "threads per rank for Numba/OpenMP/BLAS (default 1)")
    _flag(t, "x-name", str, "name of the features dataset (default X)")
    _flag(t, "y-name", str, "name of the labels dataset (default y)")
    _flag(t, "driver", str, "auto | mpio | independent: how ranks read HDF5 (default auto)")
    _flag(t, "log-every", int, "steps between metric lines (default: ~10 per epoch; every L-BFGS iteration)")
    _flag(t, "progress", str, "auto | bar | log | none (default auto: bar on a terminal)")
    _flag(t, "max-memory", parse_bytes, "bytes of X per rank (e.g. 512M, 2G); a larger shard is streamed from "
          "the file chunk by chunk, reading ahead while computing (default: no limit)", "BYTES")
    _flag(t, "checkpoint-every", int, "steps (L-BFGS/GD: iterations) between checkpoints (default 0: only at the end)")
    _flag(t, "timeout", float, "abort the whole job if no step completes in this many seconds (default 0: off; "
          "the kernels' compilation at start-up gets at least 600)", "SECONDS")
    _flag(t, "resume", str, "continue RUN from its newest checkpoint (options default to RUN/config.toml)", "RUN")
    _switch(t, "overwrite", "replace the contents of an existing run directory")
    _switch(t, "verbose", "let every rank print its log lines")

    e = sub.add_parser("evaluate", help="objective, accuracy and per-class counts of a model on data (JSON)")
    e.add_argument("model", help="model.h5 written by mpidml train")
    e.add_argument("data", help="HDF5 file with X and y")
    _flag(e, "x-name", str, "features dataset (default X)")
    _flag(e, "y-name", str, "labels dataset (default y)")
    _flag(e, "driver", str, "auto | mpio | independent")
    _flag(e, "threads", positive_int, "threads per rank (default 1)")

    pr = sub.add_parser("predict", help="write labels and probabilities (or predictions) for every row",
                        description="Each rank predicts its block of rows; PRED.h5 gets labels (N,) and proba (N, K) "
                        "for classifiers, prediction (N,) for linear, in row order. DATA needs X only.")
    pr.add_argument("model", help="model.h5 written by mpidml train")
    pr.add_argument("data", help="HDF5 file with X")
    pr.add_argument("-o", "--output", required=True, help="HDF5 file to write")
    _flag(pr, "x-name", str, "features dataset (default X)")
    pr.add_argument("--overwrite", action="store_true")
    _flag(pr, "threads", positive_int, "threads per rank (default 1)")

    g = sub.add_parser("generate", help="write a synthetic dataset with known true parameters")
    g.add_argument("kind", choices=("linear", "logistic", "softmax", "mf"))
    g.add_argument("-o", "--output", required=True, help="HDF5 file to write")
    g.add_argument("--rows", type=int, default=100_000)
    g.add_argument("--features", type=int, default=32)
    g.add_argument("--classes", type=int, default=None, help="softmax classes (default 3)")
    g.add_argument("--noise", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    g.add_argument("--overwrite", action="store_true")
    _write_options(g)
    _mf_generate_options(g)

    c = sub.add_parser("convert", help="convert .npy/.npz, CSV or svmlight/LIBSVM text to the HDF5 layout")
    c.add_argument("src", help="input file (.npy .npz .csv .tsv .txt .svm .svmlight .libsvm)")
    c.add_argument("-o", "--output", required=True, help="HDF5 file to write")
    c.add_argument("--format", dest="fmt", default="auto", choices=("auto", "npy", "npz", "csv", "svmlight"))
    c.add_argument("--labels", dest="y_src", default=None, help=".npy file with the labels (for .npy input)")
    c.add_argument("--label-col", type=int, default=0, help="CSV: the label column (default 0: the first; negative counts from the end, -1: the last)")
    c.add_argument("--delimiter", default=None, help="CSV delimiter (default: ',' or tab for .tsv)")
    c.add_argument("--features", dest="n_features", type=int, default=None, help="svmlight: number of features")
    c.add_argument("--zero-based", default="auto", choices=("auto", "true", "false"))
    c.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    c.add_argument("--chunk-rows", type=int, default=65536, help="rows read and written per step (memory)")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--sparse", action="store_true", help="svmlight: write the CSR layout (group X with indptr, "
                   "indices, data) instead of a dense X")
    c.add_argument("--hash-features", default=None, metavar="2^K", help="input is label<TAB>text lines: write "
                   "hashed bag-of-words counts as CSR with 2^K columns (tokenizer and hash: see README)")
    _write_options(c)

    s = sub.add_parser("scaling", help="combine a scaling sweep (slurm/scaling.sbatch) into scaling.json + scaling.png",
                       description="Read OUT/strong/n*/summary.json and OUT/weak/n*/summary.json; write "
                       "OUT/scaling.json and OUT/scaling.png (time per epoch, speed-up, efficiency vs tasks). "
                       "Runs without MPI.")
    s.add_argument("out", help="the sweep's output directory")
    s.add_argument("--json", default=None, help="where to write the JSON (default OUT/scaling.json)")
    s.add_argument("--plot", default=None, help="where to write the PNG (default OUT/scaling.png)")
    s.add_argument("--no-plot", action="store_true", help="write the JSON only")

    r = sub.add_parser("report", help="PNGs and a Markdown/HTML page of a finished run (no MPI)",
                       description="Write RUN/report/ (or --out DIR): loss and accuracy curves, time per phase "
                       "and rank, confusion matrix, top coefficients with feature names, and the staleness "
                       "histogram of a parameter-server run, plus index.md and index.html. Needs matplotlib.")
    r.add_argument("run", help="run directory written by mpidml train")
    r.add_argument("--out", default=None, help="directory for the report (default RUN/report)")
    r.add_argument("--top-k", type=int, default=10, help="coefficients shown per sign and class (default 10)")

    i = sub.add_parser("info", help="versions, MPI library, parallel HDF5 support, thread settings")
    _flag(i, "threads", positive_int, "threads per rank (default 1)")
    return parser


def _mf_generate_options(p) -> None:
    """Options of ``mpidml generate mf`` (ratings with a known low-rank truth; see mpidml.data.ratings)."""
    for name, help_ in (("users", "mf: number of users (default 1000)"), ("items", "mf: number of items (default 500)"),
                        ("rank", "mf: rank k of the true factors (default 5)"),
                        ("ratings", "mf: number of observed (user, item) ratings (default 20000)"),
                        ("test-ratings", "mf: further held-out ratings written to --test-output (default 0)")):
        _flag(p, name, int, help_)
    _flag(p, "test-output", str, "mf: HDF5 file for the held-out ratings", "FILE")


def _write_options(p) -> None:
    p.add_argument("--write", choices=("auto", "collective", "root"), default="auto",
                   help="auto (default): under mpirun/srun with several ranks and a parallel h5py, every rank "
                   "writes its rows collectively through MPI-IO; root: rank 0 writes alone; collective: require it")
    p.add_argument("--layout", choices=("contiguous", "chunked"), default=None,
                   help="HDF5 layout of X and y (default contiguous; convert: chunked for CSV, whose row count "
                   "is unknown up front)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="ROWS",
                   help="rows per HDF5 chunk with --layout chunked (default: about 4 MiB of X)")


def set_threads(n: int | None) -> int:
    """Pin thread pools before NumPy/Numba load (explicit --threads wins over the environment)."""
    if n is not None:
        for var in THREAD_VARS:
            os.environ[var] = str(n)
        return n
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")
    return int(os.environ["NUMBA_NUM_THREADS"])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("scaling", "report") and _launcher_rank() != 0:
        return 0  # started by mpirun/srun on several ranks: one writes the files, as `info` prints once
    if args.command == "scaling":  # post-processing only: no MPI
        from .scaling import main as scaling_main

        return scaling_main([args.out] + (["--json", args.json] if args.json else [])
                            + (["--plot", args.plot] if args.plot else []) + (["--no-plot"] if args.no_plot else []))
    if args.command == "report":  # post-processing only: no MPI
        from .report import main as report_main

        return report_main([args.run, "--top-k", str(args.top_k)] + (["--out", args.out] if args.out else []))
    set_threads(getattr(args, "threads", None))
    from .jitcache import configure_numba_cache

    configure_numba_cache()  # before Numba is imported

    from .comm import install_abort_hook
    from .errors import MpidmlError
    from mpi4py import MPI

    install_abort_hook()
    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    try:
        return COMMANDS[args.command](args)
    except MpidmlError as e:
        if getattr(e, "agreed", False) or size == 1:
            if rank == 0:
                sys.stderr.write(f"mpidml: error: {e}\n")
            sys.stderr.flush()
            sys.exit(e.exit_code)
        # Found on this rank alone: the others may be waiting in a collective, so abort.
        sys.stderr.write(f"mpidml: error: [rank {rank}] {e}\n")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"mpidml: interrupted on rank {rank}\n")
        MPI.COMM_WORLD.Abort(130)


def cmd_train(args) -> int:
    from .comm import Context
    from .train import run_train

    ctx = Context()
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    cfg = ctx.collective(resolve_train_config, args, cli)
    summary = run_train(cfg, ctx)
    if ctx.is_root:
        keys = ("objective", "accuracy", "rmse", "holdout_rmse", "r2", "converged", "steps")
        result = {k: summary.get(k) for k in keys if summary.get(k) is not None}
        result["wall_seconds"] = round(summary["time"]["wall"], 3)
        result["run_dir"] = summary["run_dir"]
        print_json(result)
    return 0


def resolve_train_config(args, cli: dict):
    """Defaults < --config file (or RUN/config.toml with --resume) < flags."""
    from .config import build_config, read_toml
    from .errors import ConfigError

    if args.resume:
        run = args.resume
        if args.config:
            raise ConfigError("--resume takes its options from RUN/config.toml; do not give --config too")
        if args.out and os.path.abspath(args.out) != os.path.abspath(run):
            raise ConfigError(f"--resume {run} continues that run in place; --out {args.out} differs")
        path = os.path.join(run, "config.toml")
        if not os.path.isfile(path):
            raise ConfigError(f"--resume {run}: {path} not found (not an mpidml run directory?)")
        file_options = read_toml(path)
        cli = dict(cli, out=run, overwrite=None)
        file_options.pop("overwrite", None)
    else:
        file_options = read_toml(args.config) if args.config else {}
    return build_config(file_options, cli)


def cmd_evaluate(args) -> int:
    from .recommend import evaluate_mf_command, is_mf_model

    if is_mf_model(args.model):  # ratings (user, item, rating): mpidml.recommend
        return evaluate_mf_command(args)
    from .comm import Context
    from .errors import DataError
    from .modelio import load_model
    from .preprocess import apply_preprocessing, load_preprocessing, warm_up
    from .train import evaluate_params, load_training_data, warm_up_kernels

    ctx = Context()
    model, params, attrs = ctx.collective(load_model, args.model)
    preprocessing = ctx.collective(load_preprocessing, args.model)

    class _Cfg:  # the few options load_training_data reads
        data = args.data
        x_name = args.x_name or "X"
        y_name = args.y_name or "y"
        driver = args.driver or "auto"
        impute = "mean" if preprocessing.impute_mean is not None else "none"

    meta, shard = load_training_data(ctx, _Cfg, model.y_dtype)
    if meta["n_features"] != model.n_features:
        ctx.agree(DataError(f"{args.data} has {meta['n_features']} features but the model expects {model.n_features}"))
    if preprocessing.active:  # the transform stored at training time, not statistics of this data
        warm_up(ctx, shard.X.dtype)
        apply_preprocessing(preprocessing, shard)
    ctx.collective(model.check_labels, shard.y, shard.lo)
    warm_up_kernels(ctx, model, shard, training=False)  # each kernel compiled by one rank (cold cache)
    result = evaluate_params(ctx, model, shard, params, float(attrs.get("l2", 0.0)))
    if ctx.is_root:
        out = {"model": model.name, "data": os.path.abspath(args.data), "ranks": ctx.size,
               "io_driver": shard.driver, **result}
        print_json(out)
    return 0


def cmd_predict(args) -> int:
    from .comm import Context
    from .predict import run_predict
    from .recommend import is_mf_model, predict_mf_command

    if is_mf_model(args.model):
        return predict_mf_command(args)  # checks the output path as run_predict does
    ctx = Context()
    result = run_predict(ctx, args.model, args.data, args.output, x_name=args.x_name or "X", overwrite=args.overwrite)
    if ctx.is_root:
        print_json(result)
    return 0


def cmd_generate(args) -> int:
    from .comm import Context
    from .data import generate

    ctx = Context()
    if args.kind == "mf":  # ratings for matrix factorization (mpidml.data.ratings)
        from .recommend import generate_mf_command

        return generate_mf_command(ctx, args)
    from .recommend import reject_mf_options

    ctx.collective(reject_mf_options, args)
    # Every rank takes part: a collective MPI-IO write, or rank 0 alone while the others wait.
    meta = ctx.collective(generate, args.kind, args.output, rows=args.rows, features=args.features,
                          classes=args.classes or (2 if args.kind != "softmax" else 3),
                          noise=args.noise, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite,
                          comm=ctx.comm, write=args.write, layout=args.layout or "contiguous",
                          chunk_size=args.chunk_size)
    if ctx.is_root:
        _note_root_write(ctx, args, meta)
        print_json({"output": os.path.abspath(args.output), "ranks": ctx.size, **_jsonable(meta)})
    return 0


def _note_root_write(ctx, args, meta: dict) -> None:
    """Several ranks but one writer: say why (parallel writes degrade loudly, not silently)."""
    if ctx.size == 1 or args.write != "auto" or meta.get("write") != "root":
        return
    from .data import h5py_has_mpi

    if not h5py_has_mpi():
        why = "h5py was built without MPI (see scripts/install-parallel-hdf5.sh)"
    elif meta.get("format") == "npz":
        why = "X in the .npz is deflated and in Fortran order, so ranks cannot read their rows"
    else:
        why = f"{meta.get('format')} text is converted on rank 0 (row offsets are only known after parsing)"
    sys.stderr.write(f"mpidml: note: rank 0 wrote {args.output} alone on {ctx.size} ranks: {why}\n")


def cmd_convert(args) -> int:
    from .comm import Context
    from .data import convert

    zero_based = {"auto": "auto", "true": True, "false": False}[args.zero_based]

    ctx = Context()
    if args.sparse or args.hash_features is not None:
        from .data.sparse_convert import convert_sparse

        given = [flag for flag, on in (("--write collective", args.write == "collective"), ("--layout", args.layout),
                                       ("--chunk-size", args.chunk_size), ("--labels", args.y_src),
                                       ("--delimiter", args.delimiter)) if on]
        # Text has no random access to rows: rank 0 converts alone, the others wait for the result.
        meta = ctx.collective(lambda: convert_sparse(
            args.src, args.output, fmt=args.fmt, hash_features=args.hash_features, n_features=args.n_features,
            zero_based=zero_based, dtype=args.dtype, chunk_rows=args.chunk_rows, overwrite=args.overwrite,
            unsupported=given) if ctx.is_root else {"write": "root"})
        if ctx.is_root:
            print_json({"output": os.path.abspath(args.output), "ranks": ctx.size, **_jsonable(meta)})
        return 0
    # npy/npz: every rank writes its rows collectively (when h5py has MPI); text: rank 0 alone.
    meta = ctx.collective(convert, args.src, args.output, fmt=args.fmt, y_src=args.y_src, label_col=args.label_col,
                          delimiter=args.delimiter, n_features=args.n_features, zero_based=zero_based,
                          dtype=args.dtype, chunk_rows=args.chunk_rows, overwrite=args.overwrite,
                          comm=ctx.comm, write=args.write, layout=args.layout, chunk_size=args.chunk_size)
    if ctx.is_root:
        _note_root_write(ctx, args, meta)
        print_json({"output": os.path.abspath(args.output), "ranks": ctx.size, **_jsonable(meta)})
    return 0


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[k] = v
    return out


def cmd_info(args) -> int:
    import numba
    from mpi4py import MPI

    from . import kernels
    from .comm import mpi_vendor
    from .data import h5py_has_mpi
    from .train import huge_pages, thread_settings, versions

    if MPI.COMM_WORLD.Get_rank() != 0:
        return 0
    info = {
        "versions": versions(),
        "mpi_vendor": mpi_vendor(),
        "mpi_ranks": MPI.COMM_WORLD.Get_size(),
        "h5py_mpi": h5py_has_mpi(),
        "io_driver_default": "mpio" if h5py_has_mpi() else "independent",
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
        "threads": {"numba": numba.get_num_threads(), "numba_layer": numba.config.THREADING_LAYER,
                    **thread_settings()},
        "huge_pages": huge_pages(),
        "kernels": kernels.cpu_choices(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version")} for p in threadpool_info()]
    except ImportError:
        pass
    print_json(info, indent=2)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "generate": cmd_generate, "convert": cmd_convert,
            "info": cmd_info}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
