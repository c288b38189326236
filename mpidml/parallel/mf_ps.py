"""Asynchronous SGD for matrix factorization through a parameter server (``--strategy ps --model mf``).

Roles
-----
Ranks ``0..K-1`` (``--servers K``) are servers: server s holds the item rows
``[q_i, c_i]`` of a balanced contiguous block of items, and nothing else. Ranks
``K..P-1`` are the W workers. Each worker owns a balanced contiguous block of
users: after the ratings are read (balanced blocks of rows over the workers),
one ``Alltoallv`` moves every rating to the worker that owns its user, so a
user's factors and bias live on exactly one worker and never travel.

Messages (typed buffers, uppercase mpi4py, no pickle)::

    worker -> server s   TAG_PULL  int64 (n,)         the distinct items of a mini-batch that s holds
    server s -> worker   TAG_ROWS  float64 (n, k+1)   their current rows
    worker -> server s   TAG_PUSH  float64 (n, k+1)   additive updates for the rows of that pull
    worker -> server s   TAG_DONE  (empty)            this worker sends nothing more

A push always follows its worker's pull to that server, so its row indices are
the pull's (they travel once). A worker has at most one pull outstanding per
server and waits for its rows; a server never waits for a particular worker
(``Probe`` on any source), so the loop cannot deadlock, and it ends when every
worker has sent DONE.

Updates
-------
SGD on the objective of mpidml.models.mf written as a mean over ratings,
``f = (1/N) sum_j l_j`` with ``l_j = 0.5 e_j^2 + (l2 N / 2)(||theta_u||^2 / n_u +
||theta_i||^2 / n_i)`` (n_u, n_i: global rating counts, from one Allreduce), so a
mini-batch mean of grad l_j is an unbiased estimate of grad f and touches only
the batch's rows. Each worker passes ``--epochs`` times over its ratings in
mini-batches of ``max(1, --batch-size // W)`` (a seeded permutation per epoch);
per batch it pulls the touched item rows, computes both sides' gradients at the
values it holds (kernels/mf.py), steps its users by ``-lr * mean`` and pushes
``-lr * mean`` for the items, which the server adds on arrival (async: other
workers' pushes may land in between; the result depends on timing). ``--lr``
constant; no momentum.

At the end the item blocks (servers) and user blocks (workers) are gathered on
every rank with one ``Allgatherv`` each, so every rank holds the whole model.
"""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from ..data.partition import all_shard_bounds
from ..kernels import mf as mfk
from .parameter_server import check_servers

TAG_PULL, TAG_ROWS, TAG_PUSH, TAG_DONE = 201, 202, 203, 204

__all__ = ["check_mf_ps_layout", "reshard_by_user", "MFParameterServer"]


def check_mf_ps_layout(size: int, servers: int) -> None:
    check_servers(size, servers, "--strategy allreduce --optimizer als")


def reshard_by_user(comm, shard, owners: np.ndarray, n_workers: int, first_worker: int):
    """Move every rating to the rank that owns its user; returns (user, item, rating) of mine.

    ``owners`` (n_workers + 1,) int64: worker w owns users ``[owners[w], owners[w+1])`` and is
    rank ``first_worker + w``. One Alltoall of counts, then one Alltoallv per array; the
    received ratings keep the senders' rank order, then file order.
    """
    size = comm.Get_size()
    dest = np.searchsorted(owners, shard.user, side="right") - 1 + first_worker
    order = np.argsort(dest, kind="stable")
    send_counts = np.bincount(dest, minlength=size).astype(np.int64)
    recv_counts = np.empty(size, dtype=np.int64)
    comm.Alltoall([send_counts, MPI.INT64_T], [recv_counts, MPI.INT64_T])
    sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
    rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
    n_mine = int(recv_counts.sum())
    out = []
    for values, mpitype in ((shard.user, MPI.INT64_T), (shard.item, MPI.INT64_T), (shard.rating, MPI.DOUBLE)):
        send = np.ascontiguousarray(values[order])
        recv = np.empty(n_mine, dtype=values.dtype)
        comm.Alltoallv([send, send_counts.tolist(), sdispl.tolist(), mpitype],
                       [recv, recv_counts.tolist(), rdispl.tolist(), mpitype])
        out.append(recv)
    return tuple(out)


class MFParameterServer:
    """Train an MFModel with async SGD: servers hold items, workers own users (see module doc).

    ``user``, ``item``, ``rating``: this rank's ratings after :func:`reshard_by_user`
    (empty on servers). ``user_counts``/``item_counts``: global counts per user/item.
    """

    def __init__(self, ctx, model, user, item, rating, *, mu: float, n_total: int, user_counts, item_counts,
                 cfg):
        self.ctx, self.model, self.comm = ctx, model, ctx.comm
        self.user, self.item, self.rating = user, item, rating
        self.mu, self.n_total = float(mu), int(n_total)
        self.K = int(cfg.servers)
        self.W = ctx.size - self.K
        self.lr, self.epochs, self.seed = float(cfg.lr), int(cfg.epochs), int(cfg.seed)
        self.batch = max(1, int(cfg.batch_size) // self.W)
        self.k1 = model.rank + 1
        scale = float(cfg.l2) * self.n_total
        # Per-rating penalty weights l2 N / n (entities without ratings never appear in a batch).
        self.ucoef_all = scale / np.maximum(user_counts, 1)
        self.icoef_all = scale / np.maximum(item_counts, 1)
        self.item_owners = all_shard_bounds(model.n_items, self.K)
        self.user_owners = all_shard_bounds(model.n_users, self.W)
        self.stats = {"pulls": 0, "pushes": 0, "bytes_to_workers": 0, "bytes_from_workers": 0, "batches": 0}

    @property
    def is_server(self) -> bool:
        return self.ctx.rank < self.K

    def fit(self, params: np.ndarray) -> dict:
        """Train in place; afterwards every rank holds the whole trained ``params``."""
        ublock, iblock = self.model.blocks(params)
        t0 = time.perf_counter()
        if self.is_server:
            lo, hi = (int(x) for x in self.item_owners[self.ctx.rank:self.ctx.rank + 2])
            self._serve(iblock[lo:hi])
        else:
            w = self.ctx.rank - self.K
            lo, hi = (int(x) for x in self.user_owners[w:w + 2])
            self._work(ublock[lo:hi], lo)
        self.ctx.timers.add("compute", time.perf_counter() - t0)  # includes waiting for messages
        t1 = time.perf_counter()
        self._gather(ublock, iblock)
        self.ctx.timers.add("comm", time.perf_counter() - t1)
        totals = np.array([self.stats[k] for k in ("pulls", "pushes", "bytes_to_workers", "bytes_from_workers",
                                                   "batches")], dtype=np.float64)
        self.ctx.allreduce_array(totals)
        return {"converged": None, "message": f"{self.epochs} epochs done (async parameter server)",
                "ps": dict(zip(("pulls", "pushes", "bytes_to_workers", "bytes_from_workers", "batches"),
                               (int(x) for x in totals)))}

    def _serve(self, rows: np.ndarray) -> None:
        """Answer pulls and apply pushes until every worker is done (rows: my item block, in place)."""
        comm, k1 = self.comm, self.k1
        item_lo = int(self.item_owners[self.ctx.rank])
        ids = np.empty(self.batch, dtype=np.int64)
        values = np.empty((self.batch, k1))
        pending = {}  # worker rank -> local row indices of its last pull
        status = MPI.Status()
        done = 0
        while done < self.W:
            comm.Probe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            src, tag = status.Get_source(), status.Get_tag()
            if tag == TAG_PULL:
                n = status.Get_count(MPI.INT64_T)
                comm.Recv([ids, n, MPI.INT64_T], source=src, tag=TAG_PULL)
                local = ids[:n] - item_lo
                pending[src] = local
                np.take(rows, local, axis=0, out=values[:n])
                comm.Send([values, n * k1, MPI.DOUBLE], dest=src, tag=TAG_ROWS)
                self.stats["pulls"] += 1
                self.stats["bytes_to_workers"] += n * k1 * 8
                self.stats["bytes_from_workers"] += n * 8
            elif tag == TAG_PUSH:
                n = status.Get_count(MPI.DOUBLE) // k1
                comm.Recv([values, n * k1, MPI.DOUBLE], source=src, tag=TAG_PUSH)
                rows[pending.pop(src)] += values[:n]  # distinct ids: no two deltas for one row
                self.ctx.beat("mf ps push")  # servers count as alive while pushes arrive (--timeout)
                self.stats["pushes"] += 1
                self.stats["bytes_from_workers"] += n * k1 * 8
            elif tag == TAG_DONE:
                comm.Recv([values, 0, MPI.DOUBLE], source=src, tag=TAG_DONE)
                done += 1
            else:  # pragma: no cover - nothing else is ever sent on this communicator here
                raise RuntimeError(f"parameter server: unexpected tag {tag} from rank {src}")

    def _work(self, my_users: np.ndarray, user_lo: int) -> None:
        """Epochs of mini-batches over my ratings; my_users: my user block, updated in place."""
        comm, k1, m = self.comm, self.k1, self.batch
        n = self.rating.shape[0]
        w = self.ctx.rank - self.K
        irows = np.empty((m, k1))
        igrad = np.empty((m, k1))
        ugrad = np.empty((m, k1))
        for epoch in range(self.epochs):
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(9, epoch, w)))
            perm = rng.permutation(n)
            for start in range(0, n, m):
                batch = perm[start:start + m]
                users, upos = np.unique(self.user[batch], return_inverse=True)
                items, ipos = np.unique(self.item[batch], return_inverse=True)
                ni, nu = items.shape[0], users.shape[0]
                # Pull the touched item rows from their servers (items are sorted, so each server's
                # share is one contiguous run of them).
                cuts = np.searchsorted(items, self.item_owners)
                for s in range(self.K):
                    a, b = int(cuts[s]), int(cuts[s + 1])
                    if b > a:
                        comm.Send([items[a:b], MPI.INT64_T], dest=s, tag=TAG_PULL)
                        comm.Recv([irows[a:b], MPI.DOUBLE], source=s, tag=TAG_ROWS)
                urows = my_users[users - user_lo]
                mfk.mf_sgd_gradients(upos.astype(np.int64), ipos.astype(np.int64), self.rating[batch], self.mu,
                                     urows, irows[:ni], self.ucoef_all[users], self.icoef_all[items],
                                     ugrad[:nu], igrad[:ni])
                step = self.lr / batch.shape[0]
                my_users[users - user_lo] = urows - step * ugrad[:nu]
                igrad[:ni] *= -step
                for s in range(self.K):
                    a, b = int(cuts[s]), int(cuts[s + 1])
                    if b > a:
                        comm.Send([igrad[a:b], MPI.DOUBLE], dest=s, tag=TAG_PUSH)
                self.stats["batches"] += 1
            self.ctx.beat(f"mf ps epoch {epoch + 1}")
        for s in range(self.K):
            comm.Send([igrad, 0, MPI.DOUBLE], dest=s, tag=TAG_DONE)

    def _gather(self, ublock: np.ndarray, iblock: np.ndarray) -> None:
        """Every rank gets the servers' item blocks and the workers' user blocks."""
        size, k1 = self.ctx.size, self.k1
        for block, owners, first in ((iblock, self.item_owners, 0), (ublock, self.user_owners, self.K)):
            counts = np.zeros(size, dtype=np.int64)
            counts[first:first + len(owners) - 1] = np.diff(owners) * k1
            displs = np.zeros(size, dtype=np.int64)
            displs[first:first + len(owners) - 1] = owners[:-1] * k1
            r = self.ctx.rank
            mine = block.reshape(-1)[displs[r]:displs[r] + counts[r]].copy()
            self.comm.Allgatherv([mine, MPI.DOUBLE], [block, counts.tolist(), displs.tolist(), MPI.DOUBLE])
