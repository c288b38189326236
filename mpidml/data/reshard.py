"""Which rows each rank holds: contiguous blocks, or a stratified / shuffled set of rows.

The file is always *read* in balanced contiguous blocks (the fast way, see :mod:`.hdf5`);
``--shard stratified|shuffled`` then moves rows between ranks with one ``Alltoallv`` per
array, so each rank ends up with a set of global rows, kept in increasing global order with
their ids in ``RowSetShard.gids``:

* ``stratified``: order all N rows by (class, global row) and deal them out round-robin:
  the row at position q of that order goes to rank q mod P. Every rank gets each class's
  rows to within one row (the class mix), and shard sizes differ by at most one.
* ``shuffled``: a seeded permutation of the N rows (``seed``), cut into balanced
  contiguous pieces: rank r holds the rows at permutation positions [lo_r, hi_r). Needs
  one int64 per row on every rank while assigning (8 bytes x N).

The trained model does not depend on the assignment: mini-batches come from one order of
*global* row ids (each rank places its own rows' global ids in it:
:class:`mpidml.parallel.allreduce.EpochPlan`), and full-batch sums add the same rows. Like the
rest of the data layer this never creates a communicator and never imports mpi4py: it uses
the caller's ``comm`` with NumPy buffers (uppercase mpi4py API).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..buffers import aligned_empty
from .hdf5 import DenseShard
from .partition import all_shard_bounds

SHARD_MODES = ("contiguous", "stratified", "shuffled")

__all__ = ["SHARD_MODES", "RowSetShard", "assign_ranks", "reshard"]


@dataclass
class RowSetShard(DenseShard):
    """A shard holding the global rows ``gids`` (int64, strictly increasing), not a block.

    ``lo = 0`` and ``hi = n_local`` only keep ``n_local`` meaningful: code that selects rows
    by global id must use ``gids`` (the allreduce trainer does).
    """

    gids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def assign_ranks(y_local: np.ndarray, lo: int, n_total: int, mode: str, seed: int, n_classes: int,
                 comm) -> np.ndarray:
    """Destination rank (int64 (n_local,)) of each row of this rank's block [lo, lo + n_local).

    Collective over ``comm`` (one Allgather of the class counts for ``stratified``).
    """
    size = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    n_local = y_local.shape[0]
    if mode == "stratified":
        y = y_local.astype(np.int64)
        counts = np.bincount(y, minlength=n_classes).astype(np.int64)
        all_counts = np.zeros((size, n_classes), dtype=np.int64)
        if comm is None:
            all_counts[0] = counts
        else:
            comm.Allgather(counts, all_counts)
        totals = all_counts.sum(axis=0)
        class_start = np.concatenate([[0], np.cumsum(totals)[:-1]])
        before_me = all_counts[:rank].sum(axis=0)
        # Position of each local row among the rows of its class on this rank (stable order).
        order = np.argsort(y, kind="stable")
        within = np.empty(n_local, dtype=np.int64)
        local_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        within[order] = np.arange(n_local, dtype=np.int64) - local_start[y[order]]
        q = class_start[y] + before_me[y] + within
        return q % size
    if mode == "shuffled":
        perm = np.random.default_rng([int(seed), 0x5348]).permutation(n_total)
        pos = np.empty(n_total, dtype=np.int64)
        pos[perm] = np.arange(n_total, dtype=np.int64)
        offsets = all_shard_bounds(n_total, size)
        return np.searchsorted(offsets, pos[lo:lo + n_local], side="right") - 1
    return np.full(n_local, rank, dtype=np.int64)


def _exchange(comm, send: np.ndarray, send_counts, recv_counts, tail: int) -> np.ndarray:
    """Alltoallv of rows (each ``tail`` elements) already ordered by destination rank."""
    recv = aligned_empty((int(recv_counts.sum()),) + send.shape[1:], send.dtype)  # X's rows: see buffers.py
    if comm is None:
        recv[...] = send
        return recv
    sc, rc = send_counts * tail, recv_counts * tail
    sd = np.concatenate([[0], np.cumsum(sc)[:-1]])
    rd = np.concatenate([[0], np.cumsum(rc)[:-1]])
    comm.Alltoallv([np.ascontiguousarray(send).reshape(-1), (sc, sd)], [recv.reshape(-1), (rc, rd)])
    return recv


def reshard(shard: DenseShard, mode: str, seed: int, n_classes: int, comm) -> RowSetShard:
    """Collective: move rows so that this rank holds its ``mode`` set of rows (see the module doc).

    ``shard`` is this rank's contiguous block (read by :func:`.hdf5.read_shard`); the result
    holds the same columns for the new rows, in increasing global order. ``contiguous``
    returns the same rows with ``gids = lo..hi-1``.
    """
    size = 1 if comm is None else comm.Get_size()
    dest = assign_ranks(shard.y, shard.lo, shard.n_total, mode, seed, n_classes, comm)
    order = np.argsort(dest, kind="stable")  # by destination; within one, increasing global id
    send_counts = np.bincount(dest, minlength=size).astype(np.int64)
    recv_counts = np.zeros(size, dtype=np.int64)
    if comm is None:
        recv_counts[:] = send_counts
    else:
        comm.Alltoall(send_counts, recv_counts)
    gids = np.arange(shard.lo, shard.hi, dtype=np.int64)[order]
    D = shard.n_features
    X = _exchange(comm, shard.X[order], send_counts, recv_counts, D)
    y = _exchange(comm, shard.y[order], send_counts, recv_counts, 1)
    g = _exchange(comm, gids, send_counts, recv_counts, 1)
    sw = _exchange(comm, shard.sw[order], send_counts, recv_counts, 1) if shard.sw.size else np.empty(0)
    # Sources are contiguous blocks in rank order, so the received ids already increase.
    return RowSetShard(X=np.ascontiguousarray(X), y=y, sw=sw, lo=0, hi=int(g.size), n_total=shard.n_total,
                       n_features=D, driver=shard.driver, path=shard.path, gids=g)
