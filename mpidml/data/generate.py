"""Synthetic datasets with a known true model, written to dense HDF5.

Kinds:

* ``linear``: ``y = X w + b + noise * N(0, 1)``, y float64.
* ``logistic``: ``p = sigmoid(X w + b)``, ``y ~ Bernoulli(p)`` in {0, 1} (int64).
* ``softmax``: ``K = classes`` logits ``X W^T + b``, ``y`` sampled from
  ``softmax(logits)`` in {0, ..., K-1} (int64).

``noise`` is the noise standard deviation for ``linear``; for ``logistic`` and
``softmax`` it is an extra **label-flip probability**: after sampling, each
label is, with probability ``noise``, replaced by one of the *other* K-1
classes chosen uniformly (for K = 2 an exact flip). Must be in [0, 1].

``X ~ N(0, 1)``; true coefficients ``~ N(0, 2/sqrt(D))`` so the margins
``X w`` have standard deviation about 2; intercepts ``~ N(0, 0.5)``.

Determinism: the output depends only on (kind, rows, features, classes, noise,
seed, dtype), not on ``chunk_rows``. The random stream is cut into fixed
*stream blocks* of :func:`stream_block_rows` rows (65536 rows, fewer for very
wide data); block ``b`` draws from ``default_rng(SeedSequence(seed,
spawn_key=(1, b)))`` and the true model from ``spawn_key=(0,)``. Writes happen
in slices of at most ``chunk_rows`` rows inside a block, so memory stays at one
block whatever ``rows * features`` is. With ``dtype='float32'``, labels are
computed from the stored (rounded) X, so the true model describes the file.

File: datasets ``X`` (N, D), ``y`` (N,), ``true_coef`` (K, D) and
``true_intercept`` (K,) (K = 1 except softmax) and root attributes ``kind``,
``noise``, ``seed``, ``n_classes`` (0 for linear), ``rows``, ``features``.
The file is written to a temporary name next to ``path`` and renamed at the
end, so a failed run never leaves a half-written file.

Parallel writes (``write``): with ``'root'`` (the default) and a ``comm``,
only its rank 0 writes; the other ranks write nothing and return the same
metadata at once, and the caller must make them wait (e.g. ``comm.Barrier()``)
before reading the file. With ``'collective'`` (or ``'auto'`` on more than one
rank when h5py has MPI) every rank of ``comm`` must call :func:`generate` with
the same arguments: the file is opened with the ``mpio`` driver and each rank
generates and writes whole stream blocks (a balanced share of them) with
collective writes. The file is the same, byte for byte in its datasets,
whatever the number of ranks; every rank returns after the file is in place.

Layout (``layout``, ``chunk_size`` in rows): see :mod:`.writer`.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import ConfigError, DataError
from .partition import shard_bounds
from .writer import atomic_output, check_output_path, collective_dxpl, create_rows_dataset, float_dtype, resolve_layout, \
    resolve_write, shared_tmp_name, write_rows

__all__ = ["generate", "stream_block_rows", "KINDS"]

KINDS = ("linear", "logistic", "softmax")
_STREAM_BLOCK_ROWS = 65536
_STREAM_BLOCK_ELEMENTS = 1 << 21  # 16 MiB of float64 per stream block at most


def stream_block_rows(features: int) -> int:
    """Rows per random-stream block (a function of the feature count only)."""
    return int(max(1, min(_STREAM_BLOCK_ROWS, _STREAM_BLOCK_ELEMENTS // max(1, features))))


def _int_option(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _true_model(seed: int, kind: str, features: int, n_classes: int):
    k = n_classes if kind == "softmax" else 1
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    coef = rng.normal(0.0, 2.0 / np.sqrt(features), size=(k, features))
    intercept = rng.normal(0.0, 0.5, size=k)
    return coef, intercept


def _block(kind: str, seed: int, b: int, n: int, coef: np.ndarray, intercept: np.ndarray,
           noise: float, dtype: np.dtype):
    """Rows of stream block ``b`` (``n`` rows): X in ``dtype``, y."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, b)))
    X = rng.standard_normal((n, coef.shape[1]))
    if dtype != np.float64:
        X = X.astype(dtype)
    z = X.astype(np.float64, copy=False) @ coef.T
    z += intercept
    if kind == "linear":
        y = z[:, 0] + noise * rng.standard_normal(n)
        return X, y
    if kind == "logistic":
        p = _sigmoid(z[:, 0])
        y = (rng.random(n) < p).astype(np.int64)
        n_classes = 2
    else:
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        cum = np.cumsum(z, axis=1)
        u = rng.random(n)
        n_classes = coef.shape[0]
        y = np.minimum((cum < u[:, None]).sum(axis=1), n_classes - 1).astype(np.int64)
    flip = rng.random(n) < noise
    other = rng.integers(1, n_classes, size=n)  # shift to one of the other classes
    y = np.where(flip, (y + other) % n_classes, y)
    return X, y


def generate(kind, path, *, rows, features, classes=2, noise=0.1, seed=0, dtype="float64",
             chunk_rows=65536, comm=None, x_name="X", y_name="y", overwrite=True,
             write="root", layout="contiguous", chunk_size=None) -> dict:
    """Write a synthetic dataset to HDF5 and return its metadata.

    Returns ``{'kind', 'path', 'rows', 'features', 'n_classes', 'noise', 'seed',
    'dtype', 'x_name', 'y_name', 'true_coef', 'true_intercept', 'written'}``.
    ``written`` is False on ranks other than 0 of ``comm`` with ``write='root'``
    (see module docstring); ``write`` says which way it went (``'collective'`` or
    ``'root'``), ``layout`` and ``chunk_rows`` the HDF5 layout of X and y.
    ``overwrite=False`` (an addition) refuses to replace an existing file.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown synthetic data kind {kind!r}; choose one of {', '.join(KINDS)}")
    rows = _int_option(rows, "rows", 1)
    features = _int_option(features, "features", 1)
    seed = _int_option(seed, "seed", 0)
    chunk_rows = _int_option(chunk_rows, "chunk_rows", 1)
    if kind == "softmax":
        classes = _int_option(classes, "classes", 2)
    elif kind == "logistic":
        if classes != 2 or isinstance(classes, bool):
            raise ConfigError(f"logistic data has exactly 2 classes, got classes={classes!r}; "
                              "use kind 'softmax' for more classes")
        classes = 2
    n_classes = 0 if kind == "linear" else int(classes)
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ConfigError(f"noise must be a number, got {noise!r}") from None
    if not np.isfinite(noise) or noise < 0:
        raise ConfigError(f"noise must be finite and >= 0, got {noise}")
    if kind != "linear" and noise > 1:
        raise ConfigError(f"noise is a label-flip probability for {kind} data and must be in "
                          f"[0, 1], got {noise}")
    dt = float_dtype(dtype)
    for name, what in ((x_name, "x_name"), (y_name, "y_name")):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{what} must be a non-empty dataset name, got {name!r}")
    reserved = {"true_coef", "true_intercept"}
    if x_name == y_name or {x_name, y_name} & reserved:
        raise ConfigError(f"x_name and y_name must differ from each other and from "
                          f"true_coef/true_intercept, got {x_name!r}, {y_name!r}")
    try:
        path = os.fspath(path)
    except TypeError:
        raise ConfigError(f"output path must be a string or path, got {path!r}") from None

    collective = resolve_write(write, comm)
    layout, h5_chunk_rows = resolve_layout(layout, chunk_size, rows, features, dt.itemsize)
    coef, intercept = _true_model(seed, kind, features, n_classes)
    meta = {
        "kind": kind, "path": path, "rows": rows, "features": features,
        "n_classes": n_classes, "noise": noise, "seed": seed, "dtype": str(dt),
        "x_name": x_name, "y_name": y_name, "true_coef": coef, "true_intercept": intercept,
        "written": False, "write": "collective" if collective else "root",
        "layout": layout, "chunk_rows": h5_chunk_rows,
    }
    if comm is not None and comm.Get_rank() != 0 and not collective:
        return meta

    check_output_path(path, overwrite, "use --overwrite to replace it (overwrite=True in Python)")

    y_dt = np.float64 if kind == "linear" else np.int64
    block_rows = stream_block_rows(features)
    if collective:
        _generate_collective(comm, path, kind, rows, features, n_classes, noise, seed, dt, y_dt,
                             chunk_rows, block_rows, h5_chunk_rows, coef, intercept, x_name, y_name)
        meta["written"] = True
        return meta
    with atomic_output(path, "synthetic data") as tmp, h5py.File(tmp, "w") as f:
        X_ds = create_rows_dataset(f, x_name, rows, features, dt, h5_chunk_rows)
        y_ds = create_rows_dataset(f, y_name, rows, None, y_dt, h5_chunk_rows)
        f.create_dataset("true_coef", data=coef)
        f.create_dataset("true_intercept", data=intercept)
        f.attrs.update({"kind": kind, "noise": noise, "seed": seed,
                        "n_classes": n_classes, "rows": rows, "features": features})
        for b, start in enumerate(range(0, rows, block_rows)):
            n = min(block_rows, rows - start)
            Xb, yb = _block(kind, seed, b, n, coef, intercept, noise, dt)
            for a in range(0, n, chunk_rows):
                e = min(n, a + chunk_rows)
                X_ds[start + a:start + e] = Xb[a:e]
                y_ds[start + a:start + e] = yb[a:e]
    meta["written"] = True
    return meta


def _generate_collective(comm, path, kind, rows, features, n_classes, noise, seed, dt, y_dt,
                         chunk_rows, block_rows, h5_chunk_rows, coef, intercept, x_name, y_name):
    """Every rank of ``comm``: open ``mpio``, write a balanced share of whole stream blocks.

    Each rank makes the same number of collective H5Dwrite calls (empty selections when it
    has nothing left), so the blocks are generated exactly as in the serial path.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    n_blocks = -(-rows // block_rows)

    def slices_of(r):
        b0, b1 = shard_bounds(n_blocks, size, r)
        out = []
        for b in range(b0, b1):
            start = b * block_rows
            n = min(block_rows, rows - start)
            out.extend((b, start, a, min(n, a + chunk_rows)) for a in range(0, n, chunk_rows))
        return out

    mine = slices_of(rank)
    n_calls = max(len(slices_of(r)) for r in range(size))  # the same on every rank
    tmp = shared_tmp_name(path, comm)
    try:
        with h5py.File(tmp, "w", driver="mpio", comm=comm) as f:
            X_ds = create_rows_dataset(f, x_name, rows, features, dt, h5_chunk_rows)
            y_ds = create_rows_dataset(f, y_name, rows, None, y_dt, h5_chunk_rows)
            tc = f.create_dataset("true_coef", shape=coef.shape, dtype=np.float64)
            ti = f.create_dataset("true_intercept", shape=intercept.shape, dtype=np.float64)
            f.attrs.update({"kind": kind, "noise": noise, "seed": seed,
                            "n_classes": n_classes, "rows": rows, "features": features})
            if rank == 0:  # independent writes of the small true model
                tc[...] = coef
                ti[...] = intercept
            dxpl = collective_dxpl()
            block = (None, None, None)
            for i in range(n_calls):
                if i < len(mine):
                    b, start, a, e = mine[i]
                    if block[0] != b:
                        Xb, yb = _block(kind, seed, b, min(block_rows, rows - start), coef,
                                        intercept, noise, dt)
                        block = (b, Xb, yb)
                    write_rows(X_ds, start + a, block[1][a:e], dxpl)
                    write_rows(y_ds, start + a, block[2][a:e].astype(y_dt, copy=False), dxpl)
                else:
                    write_rows(X_ds, 0, None, dxpl)
                    write_rows(y_ds, 0, None, dxpl)
        comm.Barrier()  # every rank has closed the file (close is collective too)
        if rank == 0:
            os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"cannot write synthetic data to {path} with MPI-IO: {exc}") from None
    finally:
        if rank == 0 and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
    comm.Barrier()  # the file is in place before any rank returns
