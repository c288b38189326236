"""Dense HDF5 datasets: metadata checks and per-rank shard reads.

Layout: ``X`` (N, D) float32/float64 (integers are accepted and converted to
float64 on load) and ``y`` (N,) numeric; dataset names are configurable.

Each rank reads only its own contiguous block of rows, given by
:func:`mpidml.data.partition.shard_bounds`. Two ways to read:

* ``"mpio"`` (reported as ``driver="mpio-collective"``): needs h5py built
  against parallel HDF5. The file is opened with ``driver='mpio', comm=comm``
  and every read is a *collective* MPI-IO read. Every rank makes the same
  number of read calls (ranks that have nothing left read an empty selection),
  and nothing raises while the file is open: problems such as a NaN are
  recorded and raised after the collective close, so an error on one rank can
  never leave the others waiting inside HDF5.
* ``"independent"``: every rank opens the file read-only with plain
  ``h5py.File(path, 'r')`` and reads only its rows. Works with any h5py and is
  fine on most parallel file systems for read-only access.

This module never creates a communicator, never imports mpi4py and never
communicates: if one rank raises (for example a NaN in its rows), the caller
agrees on errors collectively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ConfigError, DataError, MpidmlError
from ..buffers import aligned_empty
from .partition import shard_bounds

__all__ = ["DenseShard", "h5py_has_mpi", "inspect", "read_shard"]

# Upper bound on the number of elements in one read buffer / check temporary
# (2**24 float64 = 128 MiB); chunk_rows is lowered for very wide data.
_MAX_CHUNK_ELEMENTS = 1 << 24

_DRIVERS = ("auto", "mpio", "independent")


def h5py_has_mpi() -> bool:
    """True when h5py was built against parallel HDF5 (``driver='mpio'`` usable)."""
    try:
        return bool(h5py.get_config().mpi)
    except Exception:  # pragma: no cover - very old or broken h5py
        return False


@dataclass
class DenseShard:
    """The rows ``[lo, hi)`` of a dense dataset held by this rank."""

    X: np.ndarray  # (n_local, D) float32/float64, C-contiguous
    y: np.ndarray  # (n_local,) float64 or int64 (as requested)
    sw: np.ndarray  # (n_local,) float64 sample weights, or size 0 = all ones
    lo: int
    hi: int
    n_total: int
    n_features: int
    driver: str  # "mpio-collective" or "independent"
    path: str

    @property
    def n_local(self) -> int:
        return self.hi - self.lo


def _chunk_rows(chunk_rows, n_features: int) -> int:
    """Validated chunk_rows, lowered so one chunk holds at most _MAX_CHUNK_ELEMENTS."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)):
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    cap = max(1, _MAX_CHUNK_ELEMENTS // max(1, n_features))
    return int(min(chunk_rows, cap))


def _check_name(name, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a non-empty dataset name, got {name!r}")
    return name


def _fspath(path) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise ConfigError(f"data path must be a string or path, got {path!r}") from None


def _open_serial(path: str) -> h5py.File:
    """Open read-only without MPI; DataError with a clear reason on failure."""
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist; check the path")
    if os.path.isdir(path):
        raise DataError(f"data path {path} is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError (sometimes others) for bad files
        raise DataError(_open_failure(path, exc)) from None


def _open_failure(path: str, exc: BaseException) -> str:
    if not os.access(path, os.R_OK):
        return f"cannot read data file {path} (permission denied)"
    try:
        is_h5 = h5py.is_hdf5(path)
    except Exception:
        is_h5 = False
    if not is_h5:
        return (f"data file {path} is not an HDF5 file; "
                "convert it first with 'mpidml convert' (npy, npz, csv, svmlight)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "lock" in text.lower():
        return (f"cannot open HDF5 file {path}: {text}; on file systems without locking "
                "set HDF5_USE_FILE_LOCKING=FALSE")
    return f"cannot open HDF5 file {path} (corrupt or truncated?): {text}"


def _get_dataset(f: h5py.File, path: str, name: str, role: str) -> h5py.Dataset:
    try:
        obj = f.get(name)
    except Exception:  # broken links, odd names
        obj = None
    if obj is None:
        try:
            keys = sorted(f.keys())
        except Exception:
            keys = []
        avail = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise DataError(
            f"{path} has no dataset '{name}' for {role} (top-level entries: {avail or 'none'}); "
            f"pass the right {role} dataset name")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: '{name}' ({role}) is a group, not a dataset")
    return obj


def _dtype_str(ds: h5py.Dataset) -> str:
    try:
        if h5py.check_string_dtype(ds.dtype) is not None:
            return "string"
        return str(ds.dtype)
    except Exception:
        return "unknown"


def _check_x(path: str, name: str, X: h5py.Dataset) -> tuple[int, int]:
    if X.ndim != 2:
        raise DataError(f"{path}: dataset '{name}' (X) must be 2-D (rows, features), "
                        f"got shape {X.shape}")
    dt = X.dtype
    ok = (dt.kind == "f" and dt.itemsize in (4, 8)) or dt.kind in "iu"
    if not ok or dt.names is not None:
        raise DataError(f"{path}: dataset '{name}' (X) has dtype {_dtype_str(X)}; "
                        "X must be float32, float64 or integer")
    n, d = (int(s) for s in X.shape)
    if n == 0:
        raise DataError(f"{path}: dataset '{name}' (X) has zero rows; nothing to train on")
    if d == 0:
        raise DataError(f"{path}: dataset '{name}' (X) has zero features (shape {X.shape})")
    return n, d


def _check_vec(path: str, name: str, v: h5py.Dataset, role: str, n_rows: int, x_name: str):
    if v.ndim != 1:
        raise DataError(f"{path}: dataset '{name}' ({role}) must be 1-D with one value per row, "
                        f"got shape {v.shape}")
    dt = v.dtype
    if dt.kind not in "biuf" or dt.names is not None or (role == "weights" and dt.kind == "b"):
        raise DataError(f"{path}: dataset '{name}' ({role}) has dtype {_dtype_str(v)}; "
                        f"{role} must be numeric")
    if int(v.shape[0]) != n_rows:
        raise DataError(f"{path}: dataset '{name}' ({role}) has {v.shape[0]} rows but "
                        f"'{x_name}' (X) has {n_rows}; they must match")


def _attrs(obj) -> dict:
    out = {}
    try:
        for key, val in obj.attrs.items():
            if isinstance(val, bytes):
                val = val.decode("utf-8", "replace")
            elif isinstance(val, np.generic):
                val = val.item()
            out[key] = val
    except Exception:
        pass
    return out


def _inspect(path: str, x_name: str, y_name: str, w_name: str | None) -> dict:
    try:
        return _inspect_open(path, x_name, y_name, w_name)
    except MpidmlError:
        raise
    except Exception as exc:  # corrupt metadata: h5py may raise ValueError, KeyError, ...
        raise DataError(f"cannot read the metadata of {path} (corrupt HDF5 file?): "
                        f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _inspect_open(path: str, x_name: str, y_name: str, w_name: str | None) -> dict:
    with _open_serial(path) as f:
        X = _get_dataset(f, path, x_name, "X")
        n, d = _check_x(path, x_name, X)
        y = _get_dataset(f, path, y_name, "y")
        _check_vec(path, y_name, y, "y", n, x_name)
        info = {
            "n_rows": n,
            "n_features": d,
            "x_dtype": np.dtype(X.dtype),
            "y_dtype": np.dtype(y.dtype),
        }
        if w_name is not None:
            w = _get_dataset(f, path, w_name, "weights")
            _check_vec(path, w_name, w, "weights", n, x_name)
        info["attrs"] = _attrs(f)
    return info


def inspect(path, x_name: str = "X", y_name: str = "y") -> dict:
    """Check a dense HDF5 file's metadata without reading the data (serial, read-only).

    Returns ``{'n_rows', 'n_features', 'x_dtype', 'y_dtype', 'attrs'}`` (dtypes
    as ``np.dtype``, ``attrs`` the file's root attributes).

    Raises DataError for a missing file, a file that is not HDF5, a missing X
    or y, X not 2-D, y not 1-D or of a different length, non-numeric dtypes,
    zero rows or zero features.
    """
    path = _fspath(path)
    _check_name(x_name, "x_name")
    _check_name(y_name, "y_name")
    return _inspect(path, x_name, y_name, None)


def _read_rows(dset: h5py.Dataset, dest: np.ndarray | None, start: int, n: int,
               dxpl) -> None:
    """Read ``n`` rows starting at ``start`` into the contiguous array ``dest``.

    Always issues exactly one H5Dread, also for ``n == 0`` (empty selection), which
    is what collective MPI-IO needs. HDF5 converts to ``dest``'s dtype.
    """
    tail = tuple(int(s) for s in dset.shape[1:])
    fspace = dset.id.get_space()
    if n > 0:
        fspace.select_hyperslab((start,) + (0,) * len(tail), (n,) + tail)
        mspace = h5py.h5s.create_simple((n,) + tail)
        buf = dest
    else:
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,) + tail)
        mspace.select_none()
        buf = np.empty((1,) + tail, dtype=dest.dtype)
    mtype = h5py.h5t.py_create(buf.dtype)
    dset.id.read(mspace, fspace, buf, mtype, dxpl=dxpl)


def _collective_dxpl():
    """Dataset transfer property list for collective MPI-IO (what ``dset.collective`` sets)."""
    dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return dxpl


def _read_block(dset: h5py.Dataset, out: np.ndarray, lo: int, step: int, n_iter: int,
                dxpl, on_chunk=None) -> None:
    """Read rows ``[lo, lo + len(out))`` in ``n_iter`` calls of at most ``step`` rows.

    ``n_iter`` may exceed what this rank needs (collective mode): the extra calls
    read an empty selection. ``on_chunk(offset, view)`` is called for each
    non-empty chunk and must not raise.
    """
    n_local = out.shape[0]
    for it in range(n_iter):
        a = it * step
        n = max(0, min(step, n_local - a))
        view = out[a:a + n]
        _read_rows(dset, view, lo + a, n, dxpl)
        if n and on_chunk is not None:
            on_chunk(a, view)


def _first_nonfinite(block: np.ndarray, allow_nan: bool = False):
    """Index (row[, col]) of the first non-finite value in ``block`` (Inf only if allow_nan), or None."""
    if block.dtype.kind != "f":
        return None
    bad = np.isinf(block) if allow_nan else ~np.isfinite(block)
    if not bad.any():
        return None
    return np.unravel_index(int(np.flatnonzero(bad)[0]), block.shape)


def nonfinite_x_message(path, x_name: str, value, row: int, col: int, allow_nan: bool) -> str:
    """The one-line error for a NaN/Inf in X (with ``allow_nan``, only Inf gets here)."""
    if allow_nan:
        return (f"{path}: dataset '{x_name}' (X) has an infinite value ({value}) at global row {row}, "
                f"column {col}; --impute mean fills NaN only: remove or fix that value")
    if value == value:  # +-Inf: --impute mean would not help
        return (f"{path}: dataset '{x_name}' (X) has a non-finite value ({value}) at global row {row}, "
                f"column {col}; remove or fix that value (--impute mean fills NaN only)")
    return (f"{path}: dataset '{x_name}' (X) has a non-finite value ({value}) at global row {row}, "
            f"column {col}; remove it or use --impute mean to fill NaN with the column mean")


def _resolve_driver(driver, comm) -> bool:
    """True for collective MPI-IO, False for independent reads."""
    if driver not in _DRIVERS:
        raise ConfigError(f"driver must be one of {', '.join(_DRIVERS)}; got {driver!r}")
    if driver == "mpio":
        if not h5py_has_mpi():
            raise ConfigError("driver='mpio' requested but h5py was built without MPI support; "
                              "use driver 'independent' or 'auto', or install a parallel h5py")
        if comm is None:
            raise ConfigError("driver='mpio' needs an MPI communicator (comm)")
        return True
    if driver == "auto":
        return comm is not None and h5py_has_mpi()
    return False


def read_shard(path, comm, *, x_name: str = "X", y_name: str = "y", driver: str = "auto",
               y_dtype=np.float64, x_dtype=None, chunk_rows: int = 65536,
               check_finite: bool = True, w_name: str | None = None,
               parts: tuple[int, int] | None = None, allow_nan_x: bool = False) -> DenseShard:
    """Read this rank's rows ``shard_bounds(N, comm.Get_size(), comm.Get_rank())``.

    ``comm`` is an mpi4py communicator (``None`` means a single process). ``driver``:
    ``"auto"`` uses ``"mpio"`` when :func:`h5py_has_mpi` else ``"independent"``;
    ``"mpio"`` without MPI support raises ConfigError. With mpio this is a collective
    call: every rank of ``comm`` must call it with the same arguments.

    X is read in chunks of ``chunk_rows`` rows into one preallocated array (lowered
    for very wide data so a chunk holds at most 2**24 values). ``x_dtype=None`` keeps
    the file's float dtype (integers become float64); otherwise float32 or float64.
    ``y_dtype`` float (regression) or integer (class labels): float labels that are
    not whole numbers cannot be read as integers (DataError). With ``check_finite``
    a NaN/Inf in X or y raises DataError naming the global row. Labels are not
    otherwise validated (the model does that). ``allow_nan_x`` lets NaN (a missing
    value, for ``--impute mean``) through in X; Inf in X and NaN in y stay errors.

    ``w_name`` (optional, an addition): name of a 1-D dataset of non-negative sample
    weights; without it ``sw`` is an empty array meaning all ones.

    ``parts=(n_parts, part)`` partitions the rows over ``n_parts`` instead of the
    ranks of ``comm`` (e.g. the workers of a parameter server); ``part = -1`` holds
    no rows but still joins the collective reads.

    Fewer rows than parts raises DataError (on every rank, from metadata alone).
    The file is closed on return.
    """
    path = _fspath(path)
    _check_name(x_name, "x_name")
    _check_name(y_name, "y_name")
    if w_name is not None:
        _check_name(w_name, "w_name")
    try:
        y_dt = np.dtype(y_dtype)
    except TypeError:
        raise ConfigError(f"y_dtype must be a NumPy dtype, got {y_dtype!r}") from None
    if y_dt.kind not in "fi":
        raise ConfigError(f"y_dtype must be a float or signed integer dtype, got {y_dt}")
    if x_dtype is not None:
        try:
            x_dt = np.dtype(x_dtype)
        except TypeError:
            raise ConfigError(f"x_dtype must be float32 or float64, got {x_dtype!r}") from None
        if x_dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"x_dtype must be float32 or float64, got {x_dt}")
    use_mpio = _resolve_driver(driver, comm)
    if comm is None:
        rank, size = 0, 1
    else:
        rank, size = int(comm.Get_rank()), int(comm.Get_size())

    # Metadata from a plain read-only open on every rank: identical on all ranks,
    # so these errors are raised consistently before any collective operation.
    info = _inspect(path, x_name, y_name, w_name)
    n_total, n_features = info["n_rows"], info["n_features"]
    n_parts, part = (size, rank) if parts is None else (int(parts[0]), int(parts[1]))
    if n_total < n_parts:
        who = "MPI ranks" if parts is None else "data-holding ranks"
        raise DataError(f"{path} has {n_total} rows but there are {n_parts} {who}; every "
                        f"such rank needs at least one row: use fewer ranks or more data")
    file_x = info["x_dtype"]
    if x_dtype is None:
        x_dt = file_x if file_x.kind == "f" else np.dtype(np.float64)
    file_y = info["y_dtype"]
    y_buf_dt = {"f": np.float64, "b": np.bool_}.get(file_y.kind, np.int64)

    lo, hi = shard_bounds(n_total, n_parts, part) if part >= 0 else (0, 0)
    n_local = hi - lo
    step = _chunk_rows(chunk_rows, n_features)
    step_vec = _chunk_rows(chunk_rows, 1)
    if use_mpio:
        # Same number of collective calls on every rank: the largest part is part 0.
        lo0, hi0 = shard_bounds(n_total, n_parts, 0)
        n_max = hi0 - lo0
    else:
        n_max = n_local
    n_iter = -(-n_max // step)
    n_iter_vec = -(-n_max // step_vec)

    X = aligned_empty((n_local, n_features), x_dt)  # on a cache line: see buffers.py
    ybuf = np.empty(n_local, dtype=y_buf_dt)
    wbuf = np.empty(n_local if w_name is not None else 0, dtype=np.float64)
    problem: list[str] = []  # first problem found; raised after the file is closed

    def check_x(offset, view):
        if check_finite and not problem:
            where = _first_nonfinite(view, allow_nan_x)
            if where is not None:
                r, c = int(where[0]), int(where[1])
                problem.append(nonfinite_x_message(path, x_name, view[r, c], lo + offset + r, c, allow_nan_x))

    try:
        if use_mpio:
            try:
                f = h5py.File(path, "r", driver="mpio", comm=comm)
            except Exception as exc:
                raise DataError(f"cannot open {path} with the MPI-IO driver: {exc}") from None
            dxpl = _collective_dxpl()
        else:
            f = _open_serial(path)
            dxpl = None
        with f:
            _read_block(f[x_name], X, lo, step, n_iter, dxpl, check_x)
            _read_block(f[y_name], ybuf, lo, step_vec, n_iter_vec, dxpl)
            if w_name is not None:
                _read_block(f[w_name], wbuf, lo, step_vec, n_iter_vec, dxpl)
    except MpidmlError:
        raise
    except Exception as exc:  # truncated/corrupt data blocks
        raise DataError(f"error reading rows {lo}..{hi - 1} of {path} (corrupt file?): "
                        f"{type(exc).__name__}: {_first_line(exc)}") from exc

    if problem:
        raise DataError(problem[0])
    y = _convert_labels(ybuf, y_dt, path, y_name, lo, check_finite)
    if w_name is not None:
        bad = np.flatnonzero(~np.isfinite(wbuf) | (wbuf < 0))
        if bad.size:
            r = int(bad[0])
            raise DataError(f"{path}: dataset '{w_name}' (sample weights) has invalid value "
                            f"{wbuf[r]} at global row {lo + r}; weights must be finite and >= 0")
    return DenseShard(X=X, y=y, sw=wbuf, lo=lo, hi=hi, n_total=n_total,
                      n_features=n_features,
                      driver="mpio-collective" if use_mpio else "independent", path=path)


def _convert_labels(ybuf: np.ndarray, y_dt: np.dtype, path: str, y_name: str, lo: int,
                    check_finite: bool) -> np.ndarray:
    if ybuf.dtype.kind == "f":
        if check_finite or y_dt.kind == "i":
            bad = np.flatnonzero(~np.isfinite(ybuf))
            if bad.size:
                r = int(bad[0])
                raise DataError(f"{path}: dataset '{y_name}' (y) has a non-finite value "
                                f"({ybuf[r]}) at global row {lo + r}; remove or fix that row")
        if y_dt.kind == "i":
            bad = np.flatnonzero(ybuf != np.floor(ybuf))
            if bad.size:
                r = int(bad[0])
                raise DataError(f"{path}: dataset '{y_name}' (y) has value {ybuf[r]} at global "
                                f"row {lo + r}, which is not a whole-number class label; "
                                "use a regression model or integer labels")
    return np.ascontiguousarray(ybuf.astype(y_dt, copy=False))
