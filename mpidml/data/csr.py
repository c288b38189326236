"""Sparse (CSR) HDF5 datasets: layout, metadata checks, per-rank shard reads, a chunked writer.

Layout: the features are a *group* (default name ``X``) holding three 1-D datasets, as in
scipy.sparse.csr_matrix, and the labels stay a dataset ``y`` (N,) at the top level::

    X/            group, attribute shape = (N, D)
      indptr      int64 (N+1,), indptr[0] = 0, non-decreasing, indptr[N] = nnz
      indices     int32 or int64 (nnz,), column of each stored value, 0 <= j < D
      data        float32 or float64 (nnz,), the stored values (finite)
    y             (N,) numeric

Row i's values are ``data[indptr[i]:indptr[i+1]]`` in columns ``indices[...]``. Columns
need not be sorted within a row; a repeated column means the sum (scipy's convention).
A file is sparse when ``X`` is a group: no option is needed.

Reading: each rank takes the same balanced contiguous block of rows ``[lo, hi)`` as for
dense data (:func:`~mpidml.data.partition.shard_bounds`), reads ``indptr[lo:hi+1]``, then
only its slice ``[indptr[lo], indptr[hi])`` of ``indices`` and ``data`` (plain read-only
h5py opens: the slices differ in size from rank to rank, so there is no collective
read). Problems (non-monotone indptr, an index out of range, NaN/Inf in data) raise
DataError naming the global row; the caller agrees on errors collectively.

This module never imports mpi4py and never communicates.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ConfigError, DataError, MpidmlError
from .hdf5 import _attrs, _check_vec, _convert_labels, _first_line, _fspath, _get_dataset, _open_serial
from .partition import shard_bounds

__all__ = ["CSRShard", "CSRWriter", "is_csr", "inspect_csr", "read_csr_shard", "write_csr"]

# Entries per read when checking data/indices (2**24 float64 = 128 MiB of temporaries at most).
_READ_ELEMENTS = 1 << 24


@dataclass
class CSRShard:
    """The rows ``[lo, hi)`` of a CSR dataset held by this rank (indptr rebased to 0)."""

    indptr: np.ndarray  # (n_local+1,) int64, indptr[0] == 0
    indices: np.ndarray  # (nnz_local,) int32 or int64
    data: np.ndarray  # (nnz_local,) float32 or float64
    y: np.ndarray  # (n_local,) float64 or int64 (as requested)
    sw: np.ndarray  # (n_local,) float64 sample weights, or size 0 = all ones
    lo: int
    hi: int
    n_total: int
    n_features: int
    nnz_total: int
    driver: str  # always "independent" (per-rank slices of different sizes)
    path: str
    is_sparse = True

    @property
    def n_local(self) -> int:
        return self.hi - self.lo

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])


def is_csr(path, x_name: str = "X") -> bool:
    """True when ``x_name`` in the HDF5 file ``path`` is a group (the CSR layout).

    Missing or unreadable files answer False; the dense reader then reports the problem.
    """
    path = _fspath(path)
    if not os.path.isfile(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get(x_name), h5py.Group)
    except Exception:
        return False


def _shape_attr(path: str, x_name: str, g: h5py.Group) -> tuple[int, int]:
    shape = g.attrs.get("shape")
    try:
        shape = tuple(int(s) for s in np.asarray(shape).ravel())
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < 0:
        raise DataError(f"{path}: CSR group '{x_name}' needs an attribute shape = (rows, features), "
                        f"got {g.attrs.get('shape')!r}")
    n, d = shape
    if n == 0:
        raise DataError(f"{path}: CSR group '{x_name}' has zero rows; nothing to train on")
    if d == 0:
        raise DataError(f"{path}: CSR group '{x_name}' has zero features (shape {shape})")
    return n, d


def _member(path: str, g: h5py.Group, x_name: str, name: str, kinds: str) -> h5py.Dataset:
    obj = g.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: CSR group '{x_name}' has no dataset '{name}' "
                        "(expected indptr, indices, data)")
    if obj.ndim != 1 or obj.dtype.kind not in kinds or obj.dtype.names is not None:
        raise DataError(f"{path}: '{x_name}/{name}' must be a 1-D "
                        f"{'float32/float64' if kinds == 'f' else 'integer'} dataset, "
                        f"got shape {obj.shape} dtype {obj.dtype}")
    if kinds == "f" and obj.dtype.itemsize not in (4, 8):
        raise DataError(f"{path}: '{x_name}/data' has dtype {obj.dtype}; use float32 or float64")
    return obj


def _inspect_open(path: str, x_name: str, y_name: str) -> dict:
    with _open_serial(path) as f:
        g = f.get(x_name)
        if not isinstance(g, h5py.Group):
            raise DataError(f"{path}: '{x_name}' is not a CSR group")
        n, d = _shape_attr(path, x_name, g)
        indptr = _member(path, g, x_name, "indptr", "iu")
        indices = _member(path, g, x_name, "indices", "iu")
        data = _member(path, g, x_name, "data", "f")
        if indptr.shape[0] != n + 1:
            raise DataError(f"{path}: '{x_name}/indptr' has {indptr.shape[0]} entries; shape {(n, d)} needs {n + 1}")
        nnz = int(data.shape[0])
        if indices.shape[0] != nnz:
            raise DataError(f"{path}: '{x_name}/indices' has {indices.shape[0]} entries but "
                            f"'{x_name}/data' has {nnz}; they must match")
        y_dtype = None
        if y_name is not None:  # None: features only (mpidml predict)
            y = _get_dataset(f, path, y_name, "y")
            _check_vec(path, y_name, y, "y", n, x_name)
            y_dtype = np.dtype(y.dtype)
        return {"n_rows": n, "n_features": d, "nnz": nnz, "x_dtype": np.dtype(data.dtype),
                "index_dtype": np.dtype(indices.dtype), "y_dtype": y_dtype, "attrs": _attrs(f),
                "sparse": True}


def inspect_csr(path, x_name: str = "X", y_name: str = "y") -> dict:
    """Check a CSR file's metadata without reading the data (serial, read-only).

    Returns ``{'n_rows', 'n_features', 'nnz', 'x_dtype', 'index_dtype', 'y_dtype', 'attrs',
    'sparse': True}``. DataError for a missing shape attribute, missing or mistyped
    indptr/indices/data, lengths that do not fit together, or a bad y (not checked, and
    ``y_dtype`` None, when ``y_name`` is None).
    """
    path = _fspath(path)
    try:
        return _inspect_open(path, x_name, y_name)
    except MpidmlError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read the metadata of {path} (corrupt HDF5 file?): "
                        f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _check_indptr(path: str, x_name: str, ptr: np.ndarray, lo: int, n_total: int, nnz: int) -> None:
    """ptr = indptr[lo:hi+1] of the file; DataError naming the first bad global row."""
    if lo == 0 and ptr[0] != 0:
        raise DataError(f"{path}: '{x_name}/indptr' must start at 0, found {ptr[0]}")
    bad = np.flatnonzero(ptr[1:] < ptr[:-1])
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{path}: '{x_name}/indptr' decreases at global row {lo + r} "
                        f"({ptr[r]} then {ptr[r + 1]}); indptr must be non-decreasing")
    if ptr[0] < 0 or ptr[-1] > nnz:
        r = 0 if ptr[0] < 0 else ptr.size - 2
        raise DataError(f"{path}: '{x_name}/indptr' points outside data ({nnz} values) at global row {lo + r}")
    if lo + ptr.size - 1 == n_total and ptr[-1] != nnz:
        raise DataError(f"{path}: '{x_name}/indptr' ends at {ptr[-1]} but data has {nnz} values; "
                        "indptr[N] must equal nnz")


def _row_of(ptr: np.ndarray, k: int) -> int:
    """Local row holding local entry k (ptr rebased to 0)."""
    return int(np.searchsorted(ptr, k, side="right")) - 1


def read_csr_shard(path, *, x_name: str = "X", y_name: str = "y", y_dtype=np.float64,
                   parts: tuple[int, int] = (1, 0), check_finite: bool = True,
                   x_dtype=None) -> CSRShard:
    """Read the rows ``shard_bounds(N, *parts)`` of a CSR file (part -1: no rows).

    Independent read-only opens; reads indptr[lo:hi+1], then only this block's slice of
    indices and data (in pieces of at most 2**24 entries, each checked: 0 <= index < D and,
    with ``check_finite``, finite values). ``x_dtype=None`` keeps the file's float dtype.
    Indices are kept as int32 when the file stores int32 (half the memory), else int64.
    Fewer rows than parts raises DataError. ``y_dtype`` as for the dense reader;
    ``y_name=None`` reads no labels (y is then zeros).
    """
    path = _fspath(path)
    y_dt = np.dtype(y_dtype)
    n_parts, part = int(parts[0]), int(parts[1])
    info = inspect_csr(path, x_name, y_name)
    n_total, n_features, nnz_total = info["n_rows"], info["n_features"], info["nnz"]
    if n_total < n_parts:
        raise DataError(f"{path} has {n_total} rows but there are {n_parts} data-holding ranks; every "
                        "such rank needs at least one row: use fewer ranks or more data")
    data_dt = info["x_dtype"] if x_dtype is None else np.dtype(x_dtype)
    if data_dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"x_dtype must be float32 or float64, got {data_dt}")
    idx_dt = np.dtype(np.int32) if info["index_dtype"] == np.dtype(np.int32) else np.dtype(np.int64)
    if idx_dt == np.dtype(np.int32) and n_features > np.iinfo(np.int32).max:
        idx_dt = np.dtype(np.int64)
    lo, hi = shard_bounds(n_total, n_parts, part) if part >= 0 else (0, 0)
    n_local = hi - lo
    try:
        with _open_serial(path) as f:
            g = f[x_name]
            ptr = np.asarray(g["indptr"][lo:hi + 1], dtype=np.int64) if n_local else np.zeros(1, np.int64)
            if n_local:
                _check_indptr(path, x_name, ptr, lo, n_total, nnz_total)
            a, b = int(ptr[0]), int(ptr[-1])
            indices = np.empty(b - a, dtype=idx_dt)
            data = np.empty(b - a, dtype=data_dt)
            local_ptr = ptr - a
            for s in range(0, b - a, _READ_ELEMENTS):
                e = min(s + _READ_ELEMENTS, b - a)
                idx = g["indices"][a + s:a + e]
                bad = np.flatnonzero((idx < 0) | (idx >= n_features))
                if bad.size:
                    k = int(bad[0])
                    raise DataError(f"{path}: '{x_name}/indices' has column {idx[k]} at global row "
                                    f"{lo + _row_of(local_ptr, s + k)}, outside 0..{n_features - 1}")
                indices[s:e] = idx
                vals = g["data"][a + s:a + e]
                if check_finite:
                    bad = np.flatnonzero(~np.isfinite(vals))
                    if bad.size:
                        k = int(bad[0])
                        raise DataError(f"{path}: '{x_name}/data' has a non-finite value ({vals[k]}) at "
                                        f"global row {lo + _row_of(local_ptr, s + k)}, column {idx[k]}; "
                                        "remove or impute it")
                data[s:e] = vals
            yraw = f[y_name][lo:hi] if y_name is not None else np.zeros(n_local)
    except MpidmlError:
        raise
    except Exception as exc:  # truncated/corrupt data blocks
        raise DataError(f"error reading rows {lo}..{hi - 1} of {path} (corrupt file?): "
                        f"{type(exc).__name__}: {_first_line(exc)}") from exc
    ybuf = np.asarray(yraw).astype({"f": np.float64, "b": np.bool_}.get(yraw.dtype.kind, np.int64), copy=False)
    y = _convert_labels(ybuf, y_dt, path, y_name, lo, check_finite)
    return CSRShard(indptr=np.ascontiguousarray(local_ptr), indices=indices, data=data, y=y,
                    sw=np.empty(0), lo=lo, hi=hi, n_total=n_total, n_features=n_features,
                    nnz_total=nnz_total, driver="independent", path=path)


def csr_fingerprint(group: h5py.Group, y: h5py.Dataset, n_samples: int = 32) -> dict:
    """Like checkpoint.data_fingerprint for a CSR group: shape, dtypes and a SHA-256 of
    ``n_samples`` evenly spaced entries of indptr, indices, data and y (a few reads)."""
    h = hashlib.sha256()
    shape = [int(s) for s in np.asarray(group.attrs.get("shape", [0, 0])).ravel()]
    h.update(np.asarray(shape, dtype=np.int64).tobytes())
    for name in ("indptr", "indices", "data"):
        ds = group[name]
        n = int(ds.shape[0])
        if n:
            idx = np.unique(np.linspace(0, n - 1, min(n, n_samples)).astype(np.int64))
            h.update(np.ascontiguousarray(ds[idx]).tobytes())
    n = int(y.shape[0])
    if n:
        h.update(np.ascontiguousarray(y[np.unique(np.linspace(0, n - 1, min(n, n_samples)).astype(np.int64))]).tobytes())
    return {"shape": shape, "x_dtype": str(group["data"].dtype), "y_dtype": str(y.dtype), "sparse": True,
            "nnz": int(group["data"].shape[0]), "sha256": h.hexdigest()[:32]}


class CSRWriter:
    """Append CSR rows chunk by chunk to a new HDF5 file (X group + y), for converters.

    ``open()``, then ``append(indptr_chunk, indices, data, y)`` any number of times (each
    chunk's indptr starts at 0), then ``finish(n_features, attrs)``. indptr, indices, data
    and y are resizable chunked datasets, so the row and value counts need not be known up
    front. Writes to ``path`` as given (the caller renames a temporary file into place).
    """

    def __init__(self, path: str, data_dtype, index_dtype=np.int32, x_name: str = "X", y_name: str = "y",
                 y_dtype=np.float64):
        self.path, self.x_name, self.y_name = path, x_name, y_name
        self.data_dtype, self.index_dtype, self.y_dtype = np.dtype(data_dtype), np.dtype(index_dtype), np.dtype(y_dtype)
        self.f = None
        self.n_rows = 0
        self.nnz = 0

    def open(self):
        self.f = h5py.File(self.path, "w")
        g = self.f.create_group(self.x_name)
        chunk = 1 << 16
        self.ptr = g.create_dataset("indptr", shape=(1,), maxshape=(None,), dtype=np.int64, chunks=(chunk,))
        self.ptr[0] = 0
        self.idx = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=self.index_dtype, chunks=(chunk,))
        self.val = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=self.data_dtype, chunks=(chunk,))
        self.yds = self.f.create_dataset(self.y_name, shape=(0,), maxshape=(None,), dtype=self.y_dtype,
                                         chunks=(chunk,))
        return self

    @staticmethod
    def _put(ds, start: int, values) -> None:
        ds.resize((start + len(values),))
        if len(values):
            ds[start:start + len(values)] = values

    def append(self, indptr, indices, data, y) -> None:
        m = len(indptr) - 1
        self._put(self.ptr, self.n_rows + 1, np.asarray(indptr[1:], dtype=np.int64) + self.nnz)
        self._put(self.idx, self.nnz, np.asarray(indices, dtype=self.index_dtype))
        self._put(self.val, self.nnz, np.asarray(data, dtype=self.data_dtype))
        self._put(self.yds, self.n_rows, np.asarray(y, dtype=self.y_dtype))
        self.n_rows += m
        self.nnz += len(data)

    def finish(self, n_features: int, attrs: dict | None = None) -> None:
        self.f[self.x_name].attrs["shape"] = np.array([self.n_rows, int(n_features)], dtype=np.int64)
        for key, value in (attrs or {}).items():
            if value is not None:
                self.f.attrs[key] = value
        self.f.flush()
        self.f.close()
        self.f = None

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def write_csr(path, indptr, indices, data, y, n_features: int, *, x_name: str = "X", y_name: str = "y",
              attrs: dict | None = None) -> None:
    """Write a whole CSR matrix (e.g. a scipy.sparse.csr_matrix's arrays) and labels to ``path``."""
    indices = np.asarray(indices)
    w = CSRWriter(os.fspath(path), np.asarray(data).dtype,
                  np.int32 if indices.dtype == np.int32 else np.int64, x_name, y_name, np.asarray(y).dtype)
    try:
        w.open()
        w.append(np.asarray(indptr, dtype=np.int64) - int(indptr[0]), indices, data, y)
        w.finish(n_features, attrs)
    finally:
        w.close()
