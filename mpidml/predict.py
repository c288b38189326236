"""``mpidml predict MODEL DATA -o PRED.h5``: predictions for every row, in row order.

Each rank reads its balanced contiguous block of X (plain read-only h5py opens: labels
are not needed, and files without ``y`` work) and predicts it. The output holds, for
classifiers, ``labels`` (N,) int64 and ``proba`` (N, K) float64 (class probabilities; for
binary logistic regression column 1 is P(y = 1)); for linear regression ``prediction``
(N,) float64. Attributes: ``model``, ``source`` (the data file), ``n_rows``. A model
trained with ``--impute mean`` / ``--standardize`` gets its stored transform applied
to X first (NaN in X is then allowed; see :mod:`mpidml.preprocess`).

Writing goes to a temporary file that rank 0 renames into place at the end, so no rank ever
holds more than its own rows and a crash never leaves a half-written PRED.h5. When h5py has
MPI and there are several ranks, every rank opens it with the ``mpio`` driver, the datasets
are created collectively and each rank writes its rows with one collective H5Dwrite per
dataset (``write: collective`` in the JSON). Otherwise rank 0 creates the datasets and the
ranks write their rows in turn (rank 0, 1, ...; each opens the file, writes one hyperslab and
closes it; ``write: serial``).
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from . import kernels
from .data import shard_bounds
from .data.csr import inspect_csr, is_csr, read_csr_shard
from .data.hdf5 import nonfinite_x_message
from .data.writer import check_output_path, collective_dxpl, create_rows_dataset, resolve_write, write_rows
from .errors import ConfigError, DataError


class _Rows:
    """The few shard attributes the models' predict methods read."""

    def __init__(self, X):
        self.X = X
        self.n_local = X.shape[0]


def read_x_block(path: str, x_name: str, n_rows: int, size: int, rank: int, allow_nan: bool = False):
    """This rank's block of X; NaN/Inf is an error naming the row (with allow_nan: Inf only)."""
    lo, hi = shard_bounds(n_rows, size, rank)
    with h5py.File(path, "r") as f:
        X = f[x_name][lo:hi]
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    X = np.ascontiguousarray(X)
    bad = np.isinf(X) if allow_nan else ~np.isfinite(X)
    if bad.any():
        r, c = np.unravel_index(int(np.flatnonzero(bad)[0]), X.shape)
        raise DataError(nonfinite_x_message(path, x_name, X[r, c], lo + r, c, allow_nan))
    return lo, hi, X


def predict_block(model, params, X, rows=None) -> dict:
    """{dataset name: array} for the rows of X (a dense array or a CSRShard): all, or the
    local row offsets ``rows`` (int64)."""
    view = X if getattr(X, "is_sparse", False) else _Rows(X)
    if rows is None:
        rows = np.arange(view.n_local, dtype=np.int64)
    if not model.is_classifier:
        if view is X:
            return {"prediction": model.predict(view, params, rows)}
        out = np.empty(rows.size)
        kernels.linear_predict(X, params, rows, out)
        return {"prediction": out}
    proba = model.predict_proba(view, params, rows)
    return {"labels": np.argmax(proba, axis=1).astype(np.int64) if proba.shape[1] > 2
            else (proba[:, 1] > proba[:, 0]).astype(np.int64), "proba": proba}


def check_output(output: str, overwrite: bool, inputs: dict) -> None:
    """ConfigError/DataError unless PRED.h5 can be written to ``output``: not one of the
    ``inputs`` ({role: path}, e.g. the data and model files, even with ``overwrite``), not a
    directory, not an existing file without ``overwrite``, in an existing directory where a
    file can be created (tried: the temporary file next to ``output`` is created and removed).
    Run on one rank (the root, which renames the temporary file into place at the end)."""
    for role, path in inputs.items():
        if path and os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path):
            raise ConfigError(f"output {output} is the same file as the input {role} {path}; give another name")
    check_output_path(output, overwrite, "use --overwrite to replace it")
    probe = temporary_name(output, os.getpid())
    try:
        with open(probe, "wb"):
            pass
    except OSError as exc:
        raise DataError(f"cannot write predictions to {output}: {exc.strerror or exc}") from None
    try:
        os.remove(probe)
    except OSError:
        pass


def temporary_name(output: str, pid: int) -> str:
    """The file the ranks write before the root renames it onto ``output`` (the root's pid)."""
    return f"{output}.tmp{int(pid)}"


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isfile(path):
            os.remove(path)
    except OSError:
        pass


def run_predict(ctx, model_path: str, data: str, output: str, x_name: str = "X", overwrite: bool = False) -> dict:
    """Collective over ctx: predictions for every row of ``data`` into ``output``."""
    from .modelio import load_model
    from .preprocess import load_preprocessing, warm_up
    from .train import compile_in_groups

    t0 = time.perf_counter()
    model, params, _ = ctx.collective(load_model, model_path)
    preprocessing = ctx.collective(load_preprocessing, model_path)

    def check():
        meta = _inspect_x(data, x_name)
        if meta[1] != model.n_features:
            raise DataError(f"{data} has {meta[1]} features but the model expects {model.n_features}")
        if meta[0] < ctx.size:
            raise DataError(f"{data} has {meta[0]} rows, fewer than the {ctx.size} ranks; use fewer ranks")
        if ctx.is_root:  # before any work: a bad output path must not cost the whole prediction
            check_output(output, overwrite, {"data": data, "model": model_path})
        return meta

    n_rows, _ = ctx.collective(check)
    if is_csr(data, x_name):
        if preprocessing.active:  # training refuses this pair too: centring would densify the rows
            raise ConfigError(f"{data} is CSR (sparse) but the model was trained with --impute/--standardize")
        X = ctx.collective(read_csr_shard, data, x_name=x_name, y_name=None, parts=(ctx.size, ctx.rank))
        lo, hi = X.lo, X.hi
    else:
        lo, hi, X = ctx.collective(read_x_block, data, x_name, n_rows, ctx.size, ctx.rank,
                                   preprocessing.impute_mean is not None)
        if preprocessing.active:  # exactly the transform stored at training time
            warm_up(ctx, X.dtype)
            preprocessing.apply(X)
    first = np.arange(min(1, hi - lo), dtype=np.int64)  # each kernel compiled by one rank (cold cache)
    compile_in_groups(ctx, [lambda: predict_block(model, params, X, first)])
    arrays = predict_block(model, params, X)
    attrs = {"model": model.name, "source": os.path.abspath(data), "n_rows": n_rows}
    how = write_predictions(ctx, output, arrays, lo, n_rows, attrs)
    return {"output": os.path.abspath(output), "model": model.name, "n_rows": n_rows, "ranks": ctx.size,
            "write": how, "datasets": sorted(arrays), "seconds": time.perf_counter() - t0}


def write_predictions(ctx, output: str, arrays: dict, lo: int, n_rows: int, attrs: dict, write: str = "auto") -> str:
    """Collective over ctx: PRED.h5 at ``output`` with one dataset per entry of ``arrays``.

    arrays: {name: (n_local,) or (n_local, K) array}, this rank's rows ``lo .. lo + n_local - 1``
    of each dataset (N = ``n_rows`` rows in all; every rank passes the same names, dtypes and
    K); attrs: the file's attributes. The ranks write a temporary file next to ``output``
    (:func:`temporary_name`, the root's pid) that the root renames onto ``output`` at the end,
    so a failure never leaves a half-written PRED.h5 or a stray temporary file. ``write``:
    ``auto`` (collective MPI-IO when h5py has MPI and there are several ranks), ``root`` (the
    root creates the datasets, the ranks write their rows in turn; an OSError there, e.g. disk
    full, is an agreed DataError ``cannot write predictions to OUTPUT: REASON`` on every rank),
    or ``collective``. Returns ``"collective"`` or ``"serial"``.
    """
    collective = resolve_write(write, ctx.comm)
    tmp = temporary_name(output, ctx.bcast_array(np.array([os.getpid()], dtype=np.int64))[0])
    hi = lo + (len(next(iter(arrays.values()))) if arrays else 0)

    def write_collective():
        # Every rank makes the same calls in the same order (datasets sorted by name).
        dxpl = collective_dxpl()
        with h5py.File(tmp, "w", driver="mpio", comm=ctx.comm) as f:
            for name in sorted(arrays):
                a = arrays[name]
                dset = create_rows_dataset(f, name, n_rows, a.shape[1] if a.ndim == 2 else None, a.dtype, None)
                write_rows(dset, lo, a, dxpl)
            for key, value in attrs.items():
                f.attrs[key] = value

    def create():
        if not ctx.is_root:
            return
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(name, shape=(n_rows,) + a.shape[1:], dtype=a.dtype)
            f.attrs.update(attrs)

    def one_writer(step):
        """``step`` (I/O on one rank at a time, so an error cannot leave another rank waiting)
        with an OSError (disk full, directory removed meanwhile) as an agreed DataError."""
        def run():
            try:
                step()
            except OSError as exc:
                raise DataError(f"cannot write predictions to {output}: {exc.strerror or exc}") from None
        return run

    try:
        if collective:  # an error here is not agreed (the other ranks may be inside H5Dwrite): it aborts
            ctx.collective(write_collective)
        else:
            ctx.collective(one_writer(create))
            for turn in range(ctx.size):
                def write_turn():
                    if ctx.rank == turn:
                        with h5py.File(tmp, "r+") as f:
                            for name, a in arrays.items():
                                f[name][lo:hi] = a
                ctx.collective(one_writer(write_turn))

        def finish():
            if ctx.is_root:
                os.replace(tmp, output)

        ctx.collective(one_writer(finish))
    except BaseException:  # no stray temporary file, whatever ends the write
        if ctx.is_root:
            _remove_quietly(tmp)
        raise
    return "collective" if collective else "serial"


def _inspect_x(path: str, x_name: str) -> tuple[int, int]:
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist; check the path")
    if is_csr(path, x_name):
        meta = inspect_csr(path, x_name, None)
        return meta["n_rows"], meta["n_features"]
    try:
        with h5py.File(path, "r") as f:
            X = f[x_name]
            if X.ndim != 2:
                raise DataError(f"{path}: '{x_name}' must be 2-D (rows, features), got shape {X.shape}")
            return int(X.shape[0]), int(X.shape[1])
    except (OSError, KeyError) as e:
        raise DataError(f"cannot read dataset '{x_name}' of {path}: {e}") from None
