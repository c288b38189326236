"""Sparse messages for ``--strategy ps`` on CSR data: push touched coordinates, pull needed ones.

On bag-of-words data a mini-batch touches a few thousand of 2^18 or more columns, so the
gradient of a linear model is zero almost everywhere and a worker reads almost none of the
parameters. With a CSR shard and one server (``--servers 1``) the parameter server
therefore exchanges only those coordinates (:class:`SparseServer`, :func:`work_sparse`);
with ``--servers K > 1`` it keeps the dense messages (correct, more bytes).

Coordinates of a batch: for each column j stored in the batch's rows, k*D + j for every
output k, and the K intercepts (:func:`mpidml.kernels.csr.csr_touched_coords`); the
gradient sum is exactly zero elsewhere and the kernels read the parameters nowhere else.

Messages (float64 buffers, uppercase mpi4py API; coordinates are integers < 2^53, so
exact as float64)::

    worker -> server  TAG_GRAD    [5 scalars, m, p, coords (m), gradient sums at coords (m),
                                   coords needed for the next batch (p)]
    server -> worker  TAG_PARAMS  the current parameters at those p coordinates
    server -> worker  TAG_STOP    (empty), as for dense messages

The server scatters each gradient into its dense per-worker buffer and then runs the
unchanged server logic (sync rounds, async, ssp), so every update is the dense one: in
sync mode the parameters are bitwise those of dense messages. The server updates its
whole slice (the l2 term and the optimizer state change every coordinate), then answers
with the values at the coordinates the worker's next batch needs; the worker's own
vector is current exactly there, which is all its next gradient reads. The penalty term
of a logged loss is computed by the server (the worker's vector is stale elsewhere).

Memory: the server holds per worker a receive buffer of 3n + 7 values, an int64 scratch
and a reply buffer (about 5x the dense server's per-worker buffer).
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
from mpi4py import MPI

from .. import faults, kernels
from .allreduce import EpochPlan, l2_penalty
from .parameter_server import (DELAY_ENV, HAS_LOSS, LOSS, N_SCALARS, PEN, ROWS, TAG_DONE, TAG_GRAD, TAG_PARAMS,
                               TAG_STOP, WSUM, Server, _worker_permutation, async_log_now, parse_delays)

M_AT, P_AT, HEAD = N_SCALARS, N_SCALARS + 1, N_SCALARS + 2  # counts after the scalars; then the arrays


class SparseServer(Server):
    """A :class:`Server` (K = 1) whose messages carry coordinates and values (module docstring)."""

    def _requests(self, comm, W: int):
        nk = self.nk
        self.raw = np.zeros((W, HEAD + 3 * nk))
        self.out = np.zeros((W, nk))
        self.want = np.zeros(nk, dtype=np.int64)  # scratch: coordinates of one message
        recv = [comm.Recv_init([self.raw[i], MPI.DOUBLE], source=self.layout.K + i, tag=MPI.ANY_TAG)
                for i in range(W)]
        return recv, [MPI.REQUEST_NULL] * W

    def _received(self, i: int, status) -> None:
        raw, buf, nk = self.raw[i], self.bufs[i], self.nk
        self.bytes_recv += 8 * status.Get_count(MPI.DOUBLE)
        m = int(raw[M_AT])
        idx = self.want[:m]
        np.copyto(idx, raw[HEAD:HEAD + m], casting="unsafe")
        buf[:nk] = 0.0
        buf[idx] = raw[HEAD + m:HEAD + 2 * m]
        buf[nk:] = raw[:N_SCALARS]
        if raw[HAS_LOSS]:  # the same value a dense worker computes from its (then current) vector
            buf[nk + PEN] = l2_penalty(self.pslice, self.l2, self.pen)

    def _start_reply(self, i: int) -> None:
        raw = self.raw[i]
        m, p = int(raw[M_AT]), int(raw[P_AT])
        idx = self.want[:p]
        np.copyto(idx, raw[HEAD + 2 * m:HEAD + 2 * m + p], casting="unsafe")
        np.take(self.pslice, idx, out=self.out[i, :p])
        self.send[i] = self.comm.Isend([self.out[i], p, MPI.DOUBLE], dest=self.layout.K + i, tag=TAG_PARAMS)
        self.bytes_sent += 8 * p


class SparseWorkerLink:
    """A worker's side of the sparse messages (one server, rank 0)."""

    def __init__(self, comm, n: int):
        self.comm = comm
        self.out = np.zeros(HEAD + 3 * n)
        self.inbox = np.zeros(n)
        self.status = MPI.Status()
        self.bytes_sent = self.bytes_recv = 0

    def exchange(self, scalars, push, gsum, pull, params) -> bool:
        """Push gsum at ``push``, pull params at ``pull`` (in place); False if told to stop."""
        m, p, out = push.size, pull.size, self.out
        out[:N_SCALARS] = scalars
        out[M_AT], out[P_AT] = m, p
        out[HEAD:HEAD + m] = push
        np.take(gsum, push, out=out[HEAD + m:HEAD + 2 * m])
        out[HEAD + 2 * m:HEAD + 2 * m + p] = pull
        req = self.comm.Irecv([self.inbox, MPI.DOUBLE], source=0, tag=MPI.ANY_TAG)
        self.comm.Send([out, HEAD + 2 * m + p, MPI.DOUBLE], dest=0, tag=TAG_GRAD)
        req.Wait(self.status)
        self.bytes_sent += 8 * (HEAD + 2 * m + p)
        if self.status.Get_tag() == TAG_STOP:
            return False
        params[pull] = self.inbox[:p]
        self.bytes_recv += 8 * p
        return True

    def finish(self) -> None:
        self.comm.Send([np.zeros(0), 0, MPI.DOUBLE], dest=0, tag=TAG_DONE)


def work_sparse(tr, params, layout, plan) -> None:
    """The worker loop of ParameterServerTrainer._work with sparse messages (same batches, same sums)."""
    cfg, shard, model = tr.cfg, tr.shard, tr.model
    n, K, W = layout.n, layout.K, layout.W
    me = tr.ctx.rank - K
    delay = parse_delays(os.environ.get(DELAY_ENV, ""), tr.ctx.size, K).get(tr.ctx.rank, 0.0)
    gsum = np.zeros(n)  # only the coordinates of the current batch are zeroed, summed and read
    scal = np.zeros(N_SCALARS)
    tr.link = link = SparseWorkerLink(tr.comm, n)
    N, B, spe, T = int(shard.n_total), int(cfg.batch_size), plan["steps_per_epoch"], plan["steps"]
    log_every, sync = plan["log_every"], cfg.ps_mode == "sync"
    n_local, sw = shard.n_local, shard.sw
    D, n_out = model.n_features, model.n_outputs
    coord_bufs = np.empty((2, n), dtype=np.int64)
    seen = np.full(D, -1, dtype=np.int64)
    cols = np.empty(D, dtype=np.int64)
    cuts = (np.arange(spe + 1, dtype=np.int64) * n_local) // spe
    perms: dict = {}
    # sync: the allreduce batches (EpochPlan). The next step's rows are prepared while the current
    # step's are still in use, which may be across an epoch boundary: one plan per epoch parity.
    epoch_plans = [EpochPlan(shard, N, B, cfg.seed, cfg.shuffle) for _ in range(2)] if sync else None
    beat = getattr(tr.ctx, "beat", None)

    def rows_of(t, which):
        epoch, s = divmod(t, spe)
        if sync:
            plan_e = epoch_plans[epoch % 2]
            plan_e.build(epoch)
            return plan_e.rows(s)
        perm = perms.get(epoch)
        if perm is None:
            for old in [e for e in perms if e < epoch]:
                del perms[old]
            perm = perms[epoch] = _worker_permutation(n_local, cfg.seed, epoch, me, cfg.shuffle)
        return perm[cuts[s]:cuts[s + 1]]

    def coords_of(rows, which, stamp):
        c = kernels.csr_touched_coords(shard.indptr, shard.indices, rows, n_out, D, seen, stamp, cols,
                                       coord_bufs[which])
        return coord_bufs[which, :c]

    t_compute = t_wait = t_delay = 0.0
    samples = 0
    t = tr.start_step
    cur = 0
    rows = rows_of(t, cur)
    coords = coords_of(rows, cur, t)
    try:
        for t in itertools.count(tr.start_step):  # until the server answers STOP
            t0 = time.perf_counter()
            if sync:
                log_now = (t + 1) % log_every == 0 or t + 1 == T
            else:
                log_now = async_log_now(t, me, W, T, log_every)
            gsum[coords] = 0.0
            scal[LOSS] = model.loss_grad(shard, params, rows, gsum, log_now)
            scal[WSUM] = float(sw[rows].sum()) if sw.size else float(rows.size)
            scal[PEN] = 0.0  # the server adds it
            scal[HAS_LOSS] = 1.0 if log_now else 0.0
            scal[ROWS] = rows.size
            samples += rows.size
            nxt = 1 - cur
            rows_next = rows_of(t + 1, nxt)
            coords_next = coords_of(rows_next, nxt, t + 1)
            t1 = time.perf_counter()
            t_compute += t1 - t0
            if delay:
                time.sleep(delay)
                t_delay += time.perf_counter() - t1
                t1 = time.perf_counter()
            ok = link.exchange(scal, coords, gsum, coords_next, params)
            t_wait += time.perf_counter() - t1
            if beat is not None:
                beat("ps worker step")
            if faults.active:
                faults.point("step", tr.ctx.rank, t + 1)
            tr.steps = t + 1
            if not ok:
                break
            rows, coords, cur = rows_next, coords_next, nxt
    finally:
        link.finish()
    tr._worker_stats = (t_compute, t_wait, t_delay, samples)
    tr.timers.add("compute", t_compute + t_delay)
    tr.timers.add("comm", t_wait)
