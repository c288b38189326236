"""Writing dense row datasets: layouts (contiguous / chunked) and collective MPI-IO writes.

Used by :mod:`.generate` and :mod:`.convert`. With ``write='collective'`` every rank of the
caller's ``comm`` opens the output with h5py's ``mpio`` driver, the datasets are created
collectively (same shapes on every rank) and each rank writes its own rows with collective
H5Dwrite calls: every rank makes the same number of calls, ranks with nothing left write an
empty selection. Like the rest of the data layer this never creates a communicator and never
imports mpi4py; the little agreement it needs (rank 0's temporary file name, a flag) uses the
caller's communicator with NumPy buffers.

Layouts:

* ``contiguous`` (default): X is one block of bytes, row-major; rank r's rows are one byte range.
  The fastest layout to read and write on parallel file systems (Lustre, GPFS) when the file is
  written once and read many times. Fill values are never written (``fill_time='never'``), so a
  collective write touches every byte once.
* ``chunked``: chunks of ``chunk_size`` rows x all features (default: about 4 MiB per chunk).
  Needed for resizable datasets and compression; choose chunks that are large (MiB) and divide
  the rows per rank of the intended runs, so each rank reads whole chunks.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import h5py
import numpy as np

from ..errors import ConfigError, DataError
from .hdf5 import h5py_has_mpi


def float_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)`` if it is float32 or float64, else ConfigError naming what was given."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt

__all__ = ["LAYOUTS", "WRITE_MODES", "DEFAULT_CHUNK_BYTES", "resolve_write", "resolve_layout",
           "create_rows_dataset", "write_rows", "collective_dxpl", "atomic_output", "shared_tmp_name",
           "any_rank", "layout_of"]

LAYOUTS = ("contiguous", "chunked")
WRITE_MODES = ("auto", "collective", "root")
DEFAULT_CHUNK_BYTES = 4 << 20  # 4 MiB: large enough for parallel file systems, small enough for RAM


def resolve_write(write, comm) -> bool:
    """True for a collective MPI-IO write by every rank of ``comm``, False for one writer.

    ``auto``: collective when ``comm`` has more than one rank and h5py has MPI; ``root``: rank 0
    (or the single process) writes; ``collective``: required (ConfigError if impossible).
    """
    if write not in WRITE_MODES:
        raise ConfigError(f"write must be one of {', '.join(WRITE_MODES)}; got {write!r}")
    if write == "root":
        return False
    if write == "collective":
        if not h5py_has_mpi():
            raise ConfigError("collective writes need h5py built with MPI (parallel HDF5); "
                              "use write 'root' or 'auto', or install a parallel h5py "
                              "(scripts/install-parallel-hdf5.sh)")
        if comm is None:
            raise ConfigError("collective writes need an MPI communicator (comm)")
        return True
    return comm is not None and comm.Get_size() > 1 and h5py_has_mpi()


def resolve_layout(layout, chunk_size, n_rows: int, n_features: int, itemsize: int):
    """Validated (layout, chunk rows or None). ``chunk_size`` is in rows."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or chunk_size < 1:
            raise ConfigError(f"chunk size must be a positive number of rows, got {chunk_size!r}")
        if layout != "chunked":
            raise ConfigError("a chunk size needs the chunked layout (--layout chunked)")
    if layout == "contiguous":
        return layout, None
    rows = int(chunk_size) if chunk_size is not None else \
        max(1, DEFAULT_CHUNK_BYTES // max(1, n_features * itemsize))
    if rows * max(1, n_features) * itemsize >= 1 << 32:
        raise ConfigError(f"chunks of {rows} rows x {n_features} features are 4 GiB or more, "
                          "HDF5's limit; use a smaller chunk size")
    return layout, int(max(1, min(rows, n_rows))) if n_rows else int(rows)


def create_rows_dataset(f: h5py.File, name: str, n_rows: int, n_features: int | None, dtype,
                        chunk_rows: int | None, resizable: bool = False) -> h5py.Dataset:
    """A (n_rows, n_features) or, with ``n_features=None``, (n_rows,) dataset.

    ``chunk_rows=None``: contiguous, fill values never written. Otherwise chunked with
    ``chunk_rows`` rows per chunk. ``resizable`` makes the row count unlimited (chunked only).
    """
    tail = () if n_features is None else (int(n_features),)
    shape = (int(n_rows),) + tail
    if chunk_rows is None:
        if resizable:
            raise ConfigError("a resizable dataset must be chunked")
        return f.create_dataset(name, shape=shape, dtype=dtype, fill_time="never")
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=(int(chunk_rows),) + tail,
                            maxshape=((None,) + tail) if resizable else None)


def collective_dxpl():
    """Dataset transfer property list for collective MPI-IO."""
    dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return dxpl


def write_rows(dset: h5py.Dataset, start: int, arr: np.ndarray | None, dxpl=None) -> None:
    """Write ``arr`` to rows ``[start, start + len(arr))`` with exactly one H5Dwrite.

    ``arr=None`` or empty writes an empty selection, which a collective write needs on ranks
    that have nothing (more) to write. HDF5 converts ``arr``'s dtype to the dataset's.
    """
    tail = tuple(int(s) for s in dset.shape[1:])
    fspace = dset.id.get_space()
    if arr is not None and arr.shape[0] > 0:
        buf = np.ascontiguousarray(arr)
        n = buf.shape[0]
        fspace.select_hyperslab((int(start),) + (0,) * len(tail), (n,) + tail)
        mspace = h5py.h5s.create_simple((n,) + tail)
    else:
        buf = np.zeros((1,) + tail, dtype=dset.dtype)
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,) + tail)
        mspace.select_none()
    dset.id.write(mspace, fspace, buf, h5py.h5t.py_create(buf.dtype), dxpl=dxpl)


def check_output_path(path: str, overwrite: bool, how_to_overwrite: str) -> None:
    """ConfigError unless a writer may create ``path``: not a directory, not an existing file
    (unless ``overwrite``; ``how_to_overwrite`` is the caller's hint, API or CLI wording), and
    its directory exists."""
    if os.path.isdir(path):
        raise ConfigError(f"output path {path} is a directory; give a file name")
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f"output file {path} exists; {how_to_overwrite}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"output directory {parent} does not exist; create it first")


@contextmanager
def atomic_output(path: str, what: str):
    """Yield a temporary name next to ``path`` to write one process's whole output into.

    On normal exit the file is renamed onto ``path`` (readers never see a half-written
    file); an OSError becomes ``DataError("cannot write {what} to {path}: ...")``; the
    temporary file is removed whatever happens.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"cannot write {what} to {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass


def shared_tmp_name(path: str, comm) -> str:
    """A temporary file name next to ``path`` that every rank agrees on (rank 0's pid)."""
    pid = np.array([os.getpid()], dtype=np.int64)
    if comm is not None:
        comm.Bcast(pid, root=0)
    return f"{path}.tmp{int(pid[0])}"


def any_rank(comm, flag: bool) -> bool:
    """Collective: True when ``flag`` is True on at least one rank."""
    if comm is None:
        return bool(flag)
    send = np.array([1 if flag else 0], dtype=np.int64)
    recv = np.zeros(1, dtype=np.int64)
    comm.Allreduce(send, recv)  # default op: sum
    return bool(recv[0])


def layout_of(dset: h5py.Dataset) -> dict:
    """``{'layout': 'contiguous'|'chunked', 'chunk_rows': int|None}`` of a dataset."""
    if dset.chunks is None:
        return {"layout": "contiguous", "chunk_rows": None}
    return {"layout": "chunked", "chunk_rows": int(dset.chunks[0])}
