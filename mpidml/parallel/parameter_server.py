"""Parameter-server training (``--strategy ps``): servers hold the parameters, workers push gradients.

Roles
-----
With ``--servers K`` (default 1) ranks ``0..K-1`` are servers and ranks ``K..P-1`` are the
``W = P - K`` workers; the dataset rows are partitioned over the workers only (servers read
no rows). The flat parameter vector (length ``n``) is cut into K contiguous, balanced slices;
server k owns slice k and the optimizer state for it (the same :mod:`mpidml.optim` SGD/Adam
as ``--strategy allreduce``) and applies every update to it. The l2 penalty and both
optimizers are elementwise, so slices update independently and K does not change the result.

Messages
--------
Typed float64 buffers, uppercase mpi4py API, no pickle. Every buffer and every request is
allocated once (persistent requests: ``Send_init``/``Recv_init`` + ``Start``)::

    worker -> server k   TAG_GRAD    [grad_sum[slice k] (n_k), loss_sum, weight_sum, penalty, has_loss, rows]
    server k -> worker   TAG_PARAMS  params[slice k] (n_k), received in place into the worker's vector
    server k -> worker   TAG_STOP    (empty) training is over (update budget reached, divergence or a
                                     benchmark deadline): finish now
    worker -> server k   TAG_DONE    (empty) this worker sends nothing more

The gradient message is sent straight from the worker's ``[grad_sum (n), 5 scalars]`` buffer
with an indexed datatype (slice k + the scalars), so nothing is copied. Every server gets
the same 5 scalars, so each one divides by the right weight sum on its own.

Each worker has at most one gradient in flight per server and every gradient gets exactly
one reply (PARAMS or STOP). A server keeps one posted receive per worker (any tag) and
serves whichever completes first (``Waitany``), so a slow worker holds up nobody unless
the mode asks for it. The servers count the updates: training is a budget of updates
(``epochs`` passes over the data, see Modes), and once a server has applied them it answers
every further gradient, and every withheld reply, with STOP (a gradient that arrives after
the last update is dropped). A worker stops at its first STOP and sends DONE to every
server; a server's loop ends when every worker has sent DONE. At that point no message is
left unmatched, and all ranks meet in the closing collectives: agree on divergence, gather
the slices on rank 0, ``Bcast`` the final parameters to every rank, gather the per-rank
statistics for ``summary.json``.

Modes
-----
``sync``
    Exactly the updates of ``--strategy allreduce``: global step s takes the next B entries
    of the seeded epoch permutation of all N rows, every worker sends the sums over the rows
    of that batch it holds (possibly none), and the server adds the W buffers in a fixed
    order (worker 0, 1, ...), divides by the global weight sum, adds the l2 term, steps the
    optimizer and sends the new slice to every worker. Only the order of the floating-point
    additions differs from the Allreduce, so parameters agree to rounding (~1e-15 relative).
    Budget: ``ceil(N / B) * epochs`` rounds, as allreduce's steps.
``async``
    Each worker draws its own mini-batches of about ``b = B // W`` rows (so W workers together
    still see about B rows per "global step") from a seeded permutation of its own shard
    (seed, worker epoch, worker): its shard is cut into ``spe = ceil(min shard rows / b)``
    nearly equal batches per pass, and it starts another pass when one ends. The server
    applies each gradient on arrival, scaled as that batch's mean (``sum / batch weight sum``;
    the l2 term is added at the server's current parameters), with the learning rate of its
    update count, and replies with its current slice. Budget: ``W * spe * epochs`` updates
    (the schedule spans them), about ``epochs`` passes over the data: an epoch is W times as
    many updates as in sync mode, each on a batch W times smaller. Faster workers contribute
    more updates; a straggler slows nobody (with a fixed share per worker instead, the end of
    the run would be the straggler's shard alone, biasing the result towards it).
``ssp`` (``--staleness S``)
    async with a staleness bound. A worker's clock is the number of its gradients the server
    has applied. The server withholds the reply to a worker whose clock c exceeds the smallest
    clock of the active (not yet DONE) workers by more than S, and releases it when the slowest
    catches up: a worker computes its step c+1 only once every worker has pushed at least
    c - S gradients. ``S = 0`` is bulk-synchronous: every worker's step c is computed from the
    parameters holding exactly the c*W updates of steps 0..c-1 of all workers (applied one by
    one on arrival, not averaged as in ``sync``). The slowest worker is never withheld, so
    the bound cannot deadlock. With a persistent straggler the others settle at its pace
    (plus S steps); the bound absorbs transient delays, not permanent ones.

Staleness of an update: how many updates the server applied to its slice between sending
the parameters the gradient was computed from and applying it (0 in sync mode).

Checkpoints (``--checkpoint-every``, ``--resume``): sync mode with one server only. Rank 0 then
holds all of the state (parameters and optimizer) and the workers' only state is the round
number (their batches come from the counter-based (seed, epoch) permutation), so the server
writes the checkpoint after a round's replies and a resumed run repeats the uninterrupted one
bitwise. async/ssp are refused (their result depends on message timing), and so is K > 1.

Straggler hook (tests and benchmarks only): ``MPIDML_PS_DELAY="RANK:SECONDS[,RANK:SECONDS...]"``
makes those worker ranks sleep that long after computing each gradient.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
from mpi4py import MPI

from .. import faults
from ..buffers import aligned_zeros
from ..data import all_shard_bounds
from ..errors import ConfigError
from ..optim import SGD, Adam, make_schedule
from .allreduce import EpochPlan, _diverged, l2_penalty, mean_gradient

TAG_GRAD, TAG_PARAMS, TAG_STOP, TAG_DONE = 101, 102, 103, 104
# Scalars after the gradient slice in every TAG_GRAD message.
LOSS, WSUM, PEN, HAS_LOSS, ROWS = range(5)


def async_log_now(t: int, me: int, W: int, T: int, log_every: int) -> bool:
    """async/ssp: does worker ``me`` (of W) send the loss of its step ``t`` (of T) to be logged?

    About one line every ``log_every`` updates, the workers taking turns: worker me logs step t
    when t+1 is a multiple of log_every // W and it is me's turn; and the very last update.
    (With "(t*W + me + 1) % log_every", a log_every sharing a factor with W never showed some
    workers' losses.)
    """
    lw = max(1, log_every // W)
    return ((t + 1) % lw == 0 and ((t + 1) // lw) % W == me) or t * W + me + 1 == T * W
N_SCALARS = 5
MODES = ("sync", "async", "ssp")
DELAY_ENV = "MPIDML_PS_DELAY"
# Bins of the staleness histogram in summary.json: bin s counts gradients applied s updates
# late; the last bin counts STALENESS_BINS - 1 or more (bounded memory however long the run).
STALENESS_BINS = 64
_WHAT = ("gradient norm^2", "loss")  # divergence kinds, by code


# -- set-up checks shared by data_parts, fit and the benchmark ------------------------

def check_servers(size: int, servers: int, alternative: str) -> None:
    """ConfigError unless ``size`` ranks leave at least one worker beside ``servers`` servers.

    ``alternative``: what to use instead with one rank (e.g. "--strategy allreduce")."""
    if size < 2:
        raise ConfigError(f"--strategy ps needs at least 2 ranks (a server and a worker), got {size}; "
                          f"launch with mpirun -n 2 or more, or use {alternative}")
    if not 1 <= servers < size:
        raise ConfigError(f"--servers {servers} must be >= 1 and leave at least one worker: "
                          f"with {size} ranks use --servers 1..{size - 1}")


def check_layout(size: int, cfg) -> None:
    """ConfigError unless ``size`` ranks can run this PS configuration."""
    servers = int(cfg.servers)
    check_servers(size, servers, "--strategy allreduce")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"--strategy ps trains with the mini-batch optimizers sgd and adam, "
                          f"not {cfg.optimizer}; use --optimizer sgd|adam or --strategy allreduce")
    if cfg.ps_mode not in MODES:
        raise ConfigError(f"unknown ps_mode {cfg.ps_mode!r}; choose from {', '.join(MODES)}")
    if getattr(cfg, "checkpoint_every", 0) and (cfg.ps_mode != "sync" or servers != 1):
        # sync with one server: rank 0 holds all the state and the run is deterministic, so a
        # checkpoint resumes bitwise. async/ssp results depend on message timing (a resume could
        # not reproduce the run), and K > 1 would need the slices gathered mid-loop.
        raise ConfigError(f"--checkpoint-every with --strategy ps needs --ps-mode sync and --servers 1 "
                          f"(got --ps-mode {cfg.ps_mode}, --servers {servers})")
    if getattr(cfg, "shard", "contiguous") != "contiguous":
        # reshard deals rows out over every rank, servers included
        raise ConfigError(f"--shard {cfg.shard} is not supported with --strategy ps yet (use contiguous)")


def parse_delays(text: str, size: int, servers: int) -> dict:
    """``"RANK:SECONDS[,RANK:SECONDS...]"`` -> {rank: seconds}; ConfigError on a bad entry."""
    out: dict = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        try:
            r, sec = item.split(":")
            rank, seconds = int(r), float(sec)
        except ValueError:
            raise ConfigError(f"{DELAY_ENV}={text!r}: expected RANK:SECONDS[,RANK:SECONDS...]") from None
        if not (servers <= rank < size) or not (seconds >= 0 and math.isfinite(seconds)):
            raise ConfigError(f"{DELAY_ENV}={text!r}: {item} must name a worker rank ({servers}..{size - 1}) "
                              "and seconds >= 0")
        out[rank] = seconds
    return out


class Layout:
    """Who is who: K servers (ranks 0..K-1) own the parameter slices, W workers (ranks K..P-1)."""

    def __init__(self, n_params: int, size: int, servers: int):
        self.n, self.size, self.K = int(n_params), int(size), int(servers)
        self.W = self.size - self.K
        if self.K > self.n:
            raise ConfigError(f"--servers {self.K} is more than the model's {self.n} parameters")
        self.offsets = all_shard_bounds(self.n, self.K)  # slice k = [offsets[k], offsets[k+1])
        self.workers = range(self.K, self.size)

    def slice(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def size_of(self, k: int) -> int:
        return int(self.offsets[k + 1] - self.offsets[k])

    def penalized_in(self, k: int, pen: slice) -> slice:
        """The penalised entries of slice k, relative to its start (``pen`` starts at 0)."""
        lo, hi = self.slice(k).start, self.slice(k).stop
        return slice(0, int(min(max(pen.stop - lo, 0), hi - lo)))


# -- the server loop ---------------------------------------------------------------

class Server:
    """One server rank: owns ``pslice`` (a view of its parameter slice) and its optimizer.

    ``run()`` serves the workers until all have sent DONE. After ``budget`` updates (None: no
    limit) it answers every further gradient, and every withheld reply, with STOP. ``log(version,
    f, lr, worker_index, staleness, samples)`` is called after each update whose message carried
    a loss (rank 0 only). ``deadline`` (a ``time.perf_counter()`` value) also makes the server
    answer STOP once passed (benchmarks). ``after_round(version)`` (sync mode) is called after
    each round's update has been applied and answered, unless it diverged (checkpoints and the
    test hook). Statistics are left in attributes.
    """

    def __init__(self, comm, layout: Layout, k: int, pslice, opt, schedule, mode: str, staleness: int,
                 l2: float, pen: slice, budget: int | None = None, log=None, beat=None,
                 deadline: float | None = None, trace: bool = False, after_round=None, start_version: int = 0):
        self.comm, self.layout, self.k = comm, layout, k
        self.pslice, self.opt, self.schedule = pslice, opt, schedule
        self.mode, self.S = mode, int(staleness)
        self.l2, self.pen = float(l2), layout.penalized_in(k, pen)
        self.log, self.beat, self.deadline, self.trace = log, beat, deadline, trace
        self.budget = budget
        self.after_round = after_round
        W, nk = layout.W, layout.size_of(k)
        self.nk = nk
        self.bufs = np.zeros((W, nk + N_SCALARS))  # one receive buffer per worker
        self.acc = np.zeros(nk + N_SCALARS)  # sync: the round's sum
        self.grad = np.zeros(nk)
        self.tmp = np.zeros(nk)
        self.version = int(start_version)  # updates applied to this slice (a resumed run starts later)
        # per worker (index i = rank - K)
        self.clock = np.full(W, self.version, dtype=np.int64)  # gradients applied (sync: rounds taken part in)
        self.sent_version = np.full(W, self.version, dtype=np.int64)
        self.stale_sum = np.zeros(W, dtype=np.int64)
        self.stale_max = np.zeros(W, dtype=np.int64)
        self.stale_hist = np.zeros(STALENESS_BINS, dtype=np.int64)  # async/ssp, all workers together
        self.done = np.zeros(W, dtype=bool)
        self.max_spread = 0  # max over replies of (clock of the worker - min active clock)
        self.reply_log: list = []  # with trace: (worker index, its clock, min active clock, version sent)
        # None, "done" (budget reached: a run resumed from its last checkpoint starts there), "diverged"
        # or "deadline"
        self.stopped: str | None = "done" if budget is not None and self.version >= budget else None
        self.diverged: tuple | None = None  # (step, what code, value)
        self.bytes_sent = self.bytes_recv = 0
        self.t_wait = self.t_loop = 0.0
        self.samples = 0

    # -- replies ----------------------------------------------------------
    def _reply(self, i: int) -> None:
        """Send the current slice to worker i (persistent send, completed before the next update)."""
        if self._sending[i]:  # (never in practice: each update flushes first)
            self.send[i].Wait()
        self._start_reply(i)
        self._sending[i] = True
        self._active_sends.append(i)
        self.sent_version[i] = self.version
        active = ~self.done
        lo = int(self.clock[active].min()) if active.any() else int(self.clock[i])
        self.max_spread = max(self.max_spread, int(self.clock[i]) - lo)
        if self.trace:
            self.reply_log.append((i, int(self.clock[i]), lo, self.version))

    # -- message hooks (sparse_ps.SparseServer replaces these three) ---------
    def _requests(self, comm, W: int):
        """Persistent receives (one per worker, any tag) and sends of the whole slice."""
        K = self.layout.K
        return ([comm.Recv_init([self.bufs[i], MPI.DOUBLE], source=K + i, tag=MPI.ANY_TAG) for i in range(W)],
                [comm.Send_init([self.pslice, MPI.DOUBLE], dest=K + i, tag=TAG_PARAMS) for i in range(W)])

    def _received(self, i: int, status) -> None:
        """A TAG_GRAD message from worker i is in self.bufs[i] (dense: nothing to decode)."""
        self.bytes_recv += 8 * (self.nk + N_SCALARS)

    def _start_reply(self, i: int) -> None:
        self.send[i].Start()
        self.bytes_sent += 8 * self.nk

    def _stop_reply(self, i: int) -> None:
        self._stop_reqs.append(self.comm.Isend([self._empty, 0, MPI.DOUBLE], dest=self.layout.K + i, tag=TAG_STOP))

    def _flush(self) -> None:
        """Complete the replies in flight before the slice they read from changes."""
        if self._active_sends:
            MPI.Request.Waitall([self.send[i] for i in self._active_sends])
            self._sending[self._active_sends] = False
            self._active_sends.clear()

    def _min_active_clock(self) -> int:
        active = ~self.done
        return int(self.clock[active].min()) if active.any() else 0

    def _release(self) -> None:
        """ssp: answer the withheld workers that are now within S clocks of the slowest."""
        if not self.pending:
            return
        if self.stopped:
            for i in sorted(self.pending):
                self._stop_reply(i)
            self.pending.clear()
            return
        lo = self._min_active_clock()
        ready = sorted(i for i in self.pending if self.clock[i] - lo <= self.S)
        for i in ready:
            self.pending.discard(i)
            self._reply(i)

    # -- updates ----------------------------------------------------------
    def _apply(self, msg, worker: int, staleness: int) -> None:
        """One optimizer step on this slice from a message [grad_sum, scalars] (a worker's or a round's sum)."""
        nk = self.nk
        w = msg[nk + WSUM]
        if not w > 0:  # a batch whose weights are all 0: its gradient sum is 0 too
            w = 1.0
        mean_gradient(msg[:nk], w, self.pslice, self.l2, self.pen, self.tmp, self.grad)
        with np.errstate(over="ignore", invalid="ignore"):
            gnorm2 = float(np.dot(self.grad, self.grad))
        if not math.isfinite(gnorm2):
            self._diverge(self.version + 1, 0, gnorm2)
            return
        lr = self.schedule(self.version)
        self._flush()
        self.opt.step(self.pslice, self.grad, lr=lr)
        self.version += 1
        if self.budget is not None and self.version >= self.budget:
            self.stopped = "done"
        rows = int(msg[nk + ROWS])
        self.samples += rows
        if msg[nk + HAS_LOSS]:
            f = msg[nk + LOSS] / w + msg[nk + PEN]
            if not math.isfinite(f):
                self._diverge(self.version, 1, f)
                return
            if self.log is not None:
                self.log(self.version, f, lr, worker, staleness, self.samples)

    def _diverge(self, step, code, value) -> None:
        if self.diverged is None:
            self.diverged = (step, code, value)
        self.stopped = "diverged"

    def _on_grad_sync(self, i: int) -> None:
        self.arrived[i] = True
        self._check_round()

    def _check_round(self) -> None:
        """sync: once every active worker's gradient is in, add them in worker order and update."""
        waiting = self.arrived & ~self.done
        if not waiting.any() or np.any(~self.arrived & ~self.done):
            return
        idx = np.flatnonzero(self.arrived)
        applied = not self.stopped
        if applied:
            acc = self.acc
            np.copyto(acc, self.bufs[idx[0]])
            for i in idx[1:]:
                np.add(acc, self.bufs[i], out=acc)
            # The penalty and the loss flag are the same in every message (same parameters, same step).
            acc[self.nk + PEN] = self.bufs[idx[0], self.nk + PEN]
            acc[self.nk + HAS_LOSS] = self.bufs[idx[0], self.nk + HAS_LOSS]
            self._apply(acc, -1, 0)
            self.clock[idx] += 1
        for i in idx:
            self.arrived[i] = False
            self.recv[i].Start()
            if self.stopped:
                self._stop_reply(i)
            else:
                self._reply(i)
        if applied and self.diverged is None and self.after_round is not None:
            self.after_round(self.version)

    def _on_grad_async(self, i: int) -> None:
        if self.stopped:
            self.recv[i].Start()
            self._stop_reply(i)
            return
        staleness = int(self.version - self.sent_version[i])
        self.stale_sum[i] += staleness
        self.stale_max[i] = max(self.stale_max[i], staleness)
        self.stale_hist[min(staleness, STALENESS_BINS - 1)] += 1
        self._apply(self.bufs[i], i, staleness)
        self.clock[i] += 1
        self.recv[i].Start()  # its buffer has been used
        if self.stopped:
            self._stop_reply(i)
        elif self.mode == "async" or self.clock[i] - self._min_active_clock() <= self.S:
            self._reply(i)
        else:
            self.pending.add(i)
        if self.mode == "ssp":
            self._release()

    # -- the loop ---------------------------------------------------------
    def run(self) -> None:
        comm, K, W = self.comm, self.layout.K, self.layout.W
        self._empty = np.zeros(0)
        self.recv, self.send = self._requests(comm, W)
        self._active_sends: list = []
        self._sending = np.zeros(W, dtype=bool)
        self._stop_reqs: list = []
        self.pending: set = set()
        self.arrived = np.zeros(W, dtype=bool)
        status = MPI.Status()
        on_grad = self._on_grad_sync if self.mode == "sync" else self._on_grad_async
        n_active = W
        t_start = time.perf_counter()
        MPI.Prequest.Startall(self.recv)
        try:
            while n_active:
                t0 = time.perf_counter()
                i = MPI.Request.Waitany(self.recv, status)
                t1 = time.perf_counter()
                self.t_wait += t1 - t0
                if i == MPI.UNDEFINED:  # cannot happen: every active worker has a receive posted
                    raise RuntimeError(f"parameter server {self.k}: no receive posted while {n_active} "
                                       "worker(s) are still active")
                tag = status.Get_tag()
                if tag == TAG_GRAD:
                    self._received(i, status)
                    if self.deadline is not None and not self.stopped and t1 > self.deadline:
                        self.stopped = "deadline"
                        self._release()
                    on_grad(i)
                elif tag == TAG_DONE:
                    self.done[i] = True
                    n_active -= 1
                    if self.mode == "sync":
                        self._check_round()
                    else:
                        self._release()
                else:
                    raise RuntimeError(f"parameter server {self.k}: unexpected tag {tag} from rank {K + i}")
                if self.beat is not None:
                    self.beat("ps server")
            self._flush()
            if self._stop_reqs:
                MPI.Request.Waitall(self._stop_reqs)
        finally:
            self.t_loop = time.perf_counter() - t_start
            for r in self.recv + self.send:
                if r:  # (a completed non-persistent request is already freed)
                    r.Free()


# -- the worker side ---------------------------------------------------------------

class WorkerLink:
    """A worker's connection to the K servers: push ``gbuf``, pull ``params`` slices in place.

    ``gbuf`` is ``[grad_sum (n), 5 scalars]`` float64; ``params`` (n,) float64. Requests and
    datatypes are created once; ``exchange()`` is one push/pull round, ``finish()`` says DONE.
    """

    def __init__(self, comm, layout: Layout, params, gbuf):
        self.comm, self.layout = comm, layout
        n, K = layout.n, layout.K
        self.types = []
        reqs = []
        for k in range(K):
            reqs.append(comm.Recv_init([params[layout.slice(k)], MPI.DOUBLE], source=k, tag=MPI.ANY_TAG))
        for k in range(K):
            if K == 1:
                spec = [gbuf, MPI.DOUBLE]
            else:  # slice k of the gradient followed by the scalars, straight from gbuf
                dt = MPI.DOUBLE.Create_indexed([layout.size_of(k), N_SCALARS], [layout.slice(k).start, n]).Commit()
                self.types.append(dt)
                spec = [gbuf, 1, dt]
            reqs.append(comm.Send_init(spec, dest=k, tag=TAG_GRAD))
        self.reqs = reqs
        self.statuses = [MPI.Status() for _ in reqs]
        self.bytes_sent = self.bytes_recv = 0
        self._msg_out = 8 * (n + K * N_SCALARS)
        self._msg_in = 8 * n

    def exchange(self) -> bool:
        """Push the gradient to every server and receive the new slices; False if told to stop."""
        MPI.Prequest.Startall(self.reqs)  # receives first: they are posted before any server can answer
        MPI.Request.Waitall(self.reqs, self.statuses)
        self.bytes_sent += self._msg_out
        stop = any(st.Get_tag() == TAG_STOP for st in self.statuses[: self.layout.K])
        if not stop:
            self.bytes_recv += self._msg_in
        return not stop

    def finish(self) -> None:
        empty = np.zeros(0)
        reqs = [self.comm.Isend([empty, 0, MPI.DOUBLE], dest=k, tag=TAG_DONE) for k in range(self.layout.K)]
        MPI.Request.Waitall(reqs)
        for r in self.reqs:
            r.Free()
        for t in self.types:
            t.Free()


# -- the training strategy ---------------------------------------------------------

# Per-rank statistics gathered on rank 0 at the end of fit (fixed-length float64 rows).
_STATS = ("is_worker", "steps", "busy_s", "wait_s", "loop_s", "bytes_sent", "bytes_recv", "delay_s", "samples",
          "diverged", "div_step", "div_what", "div_value")


class ParameterServerTrainer:
    """``--strategy ps``: see the module docstring. Same constructor and ``fit`` contract as
    :class:`~mpidml.parallel.allreduce.AllreduceTrainer`; ``fit`` leaves the final parameters
    in ``params`` on every rank."""

    def __init__(self, ctx, model, shard, cfg, reporter, weight_sum):
        self.ctx, self.model, self.shard, self.cfg, self.reporter = ctx, model, shard, cfg, reporter
        self.comm = ctx.comm
        self.n_params = model.n_params
        self.weight_sum = float(weight_sum)
        self.timers = ctx.timers
        self.K = int(cfg.servers)
        self.W = ctx.size - self.K
        self.is_server = ctx.rank < self.K
        self.steps = 0
        self.epochs_done = 0
        self.checkpointer = None  # set by the caller (mpidml.train); used in sync mode with one server
        self.start_step = 0  # a resumed run: the checkpoint's step (sync rounds = updates)
        self.server: Server | None = None
        self.link: WorkerLink | None = None
        self._section: dict = {}
        self.trace = False  # tests: keep the server's per-reply clock log (Server.reply_log)
        # CSR data with one server: push/pull only the coordinates a batch touches (sparse_ps);
        # tests may set it False to compare with dense messages on the same shards.
        self.sparse_messages = bool(getattr(shard, "is_sparse", False)) and self.K == 1

    @staticmethod
    def data_parts(ctx, cfg):
        """Rows go to the workers only: (W, rank - K); servers get part -1 (no rows)."""
        check_layout(ctx.size, cfg)
        parse_delays(os.environ.get(DELAY_ENV, ""), ctx.size, int(cfg.servers))
        K = int(cfg.servers)
        return ctx.size - K, (ctx.rank - K if ctx.rank >= K else -1)

    def summary_section(self) -> dict:
        """The ``ps`` section of summary.json (rank 0, after fit)."""
        return self._section

    # -- plan ---------------------------------------------------------------
    def _plan(self) -> dict:
        cfg, W = self.cfg, self.W
        N, B = int(self.shard.n_total), int(cfg.batch_size)
        if B > N:
            raise ConfigError(f"--batch-size {B} is larger than the dataset ({N} rows)")
        if cfg.ps_mode == "sync":
            spe = -(-N // B)
            return {"steps_per_epoch": spe, "steps": spe * cfg.epochs, "updates": spe * cfg.epochs,
                    "updates_per_epoch": spe, "batch": B,
                    "log_every": cfg.log_every or max(1, spe // 10)}
        b = max(1, B // W)
        n_min = N // W  # the smallest worker shard (>= 1 row: load_training_data checked N >= W)
        spe = -(-n_min // b)
        upe = W * spe
        return {"steps_per_epoch": spe, "steps": spe * cfg.epochs, "updates": upe * cfg.epochs,
                "updates_per_epoch": upe, "batch": b, "log_every": cfg.log_every or max(1, upe // 10)}

    # -- fit ----------------------------------------------------------------
    def fit(self, params: np.ndarray, resume: dict | None = None) -> dict:
        cfg, ctx = self.cfg, self.ctx
        check_layout(ctx.size, cfg)
        if resume is not None and not self._checkpoints_on():
            raise ConfigError(f"--resume with --strategy ps needs --ps-mode sync and --servers 1 "
                              f"(this run has --ps-mode {cfg.ps_mode}, --servers {self.K})")
        layout = Layout(self.n_params, ctx.size, self.K)
        plan = self._plan()
        if resume is not None:
            # Every rank read the same checkpoint. The server restores the optimizer; the workers
            # need only the step: their mini-batches come from the counter-based (seed, epoch) shuffle.
            params[:] = resume["params"]
            self.start_step = self.steps = int(resume["step"])
            if not 0 <= self.start_step <= plan["updates"]:
                raise ConfigError(f"checkpoint step {self.start_step} is outside this run's "
                                  f"{plan['updates']} updates")
        self.comm.Bcast(params, root=0)  # every worker starts from the server's parameters
        if self.is_server:
            self._serve(params, layout, plan, resume)
        else:
            self._work(params, layout, plan)
        return self._close(params, layout, plan)

    def _checkpoints_on(self) -> bool:
        return self.cfg.ps_mode == "sync" and self.K == 1

    def _make_optimizer(self, n):
        cfg = self.cfg
        if cfg.optimizer == "adam":
            return Adam(n, cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2)
        return SGD(n, cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)

    def _serve(self, params, layout, plan, resume=None) -> None:
        cfg, k = self.cfg, self.ctx.rank
        sl = layout.slice(k)
        schedule = make_schedule(cfg.lr_schedule, cfg.lr, total_steps=plan["updates"])
        log = self._logger(plan) if self.ctx.is_root else None
        if self.ctx.is_root:
            self.reporter.total = plan["updates"]
        beat = getattr(self.ctx, "beat", None)
        opt = self._make_optimizer(layout.size_of(k))
        if resume is not None:
            opt.load_state_dict(resume["state"]["optimizer"])
        if self._checkpoints_on() and self.checkpointer is not None:
            ckpt, spe, total = self.checkpointer, plan["steps_per_epoch"], plan["updates"]

            def state():  # the shuffles are counter-based: the step and the seed are the whole RNG state
                return {"optimizer": opt.state_dict(),
                        "trainer": {"seed": cfg.seed, "steps_per_epoch": spe, "strategy": "ps", "mode": "sync"}}

            def after_round(version):  # K = 1: rank 0 holds all of the state
                faults.point("step", 0, version)
                if ckpt.due(version) or version == total:
                    # every --checkpoint-every rounds, and at the end (the allreduce strategy's rule)
                    ckpt.save(version, version // spe, params, state())
        else:
            after_round = None
        server_cls = Server
        if self.sparse_messages:
            from .sparse_ps import SparseServer as server_cls
        self.server = srv = server_cls(self.comm, layout, k, params[sl], opt,
                                   schedule, cfg.ps_mode, cfg.staleness, cfg.l2, self.model.penalized,
                                   budget=plan["updates"], log=log, beat=beat, trace=self.trace,
                                   after_round=after_round, start_version=self.start_step)
        srv.run()
        self.steps = srv.version
        self.timers.add("compute", srv.t_loop - srv.t_wait)
        self.timers.add("comm", srv.t_wait)

    def _logger(self, plan):
        upe = plan["updates_per_epoch"]
        state = {"t": time.perf_counter(), "samples": 0}

        def log(version, f, lr, worker, staleness, samples):
            now = time.perf_counter()
            rec = {"step": version, "epoch": version / upe, "loss": f, "lr": lr,
                   "samples_per_s": (samples - state["samples"]) / max(now - state["t"], 1e-12)}
            if worker >= 0:
                rec["worker"] = self.K + worker
                rec["staleness"] = staleness
            state["t"], state["samples"] = now, samples
            self.reporter.log(rec)

        return log

    def _work(self, params, layout, plan) -> None:
        if self.sparse_messages:
            from .sparse_ps import work_sparse

            return work_sparse(self, params, layout, plan)
        cfg, shard, model = self.cfg, self.shard, self.model
        n, K, W = layout.n, layout.K, layout.W
        me = self.ctx.rank - K  # worker index
        delay = parse_delays(os.environ.get(DELAY_ENV, ""), self.ctx.size, K).get(self.ctx.rank, 0.0)
        gbuf = aligned_zeros(n + N_SCALARS)  # the kernel adds its gradient sum in vectors
        gsum, scal = gbuf[:n], gbuf[n:]
        self.link = link = WorkerLink(self.comm, layout, params, gbuf)
        N, B, spe, T = int(shard.n_total), int(cfg.batch_size), plan["steps_per_epoch"], plan["steps"]
        log_every, sync = plan["log_every"], cfg.ps_mode == "sync"
        n_local, sw, pen, l2 = shard.n_local, shard.sw, model.penalized, float(cfg.l2)
        epoch_plan = EpochPlan(shard, N, B, cfg.seed, cfg.shuffle) if sync else None
        cuts = (np.arange(spe + 1, dtype=np.int64) * n_local) // spe  # async: batch j = perm[cuts[j]:cuts[j+1]]
        beat = getattr(self.ctx, "beat", None)
        t_compute = t_wait = t_delay = 0.0
        samples = 0
        perm, perm_epoch = None, -1
        t = self.start_step
        try:
            for t in itertools.count(self.start_step):  # until a server answers STOP (it counts the updates)
                t0 = time.perf_counter()
                epoch, s = divmod(t, spe)
                if sync:  # allreduce's batches: this worker's rows of step s of the epoch's global order
                    epoch_plan.build(epoch)
                    rows = epoch_plan.rows(s)
                    log_now = (t + 1) % log_every == 0 or t + 1 == T
                else:
                    if epoch != perm_epoch:
                        perm = _worker_permutation(n_local, cfg.seed, epoch, me, cfg.shuffle)
                        perm_epoch = epoch
                    rows = perm[cuts[s]:cuts[s + 1]]
                    log_now = async_log_now(t, me, W, T, log_every)
                gsum[:] = 0.0
                scal[LOSS] = model.loss_grad(shard, params, rows, gsum, log_now)
                scal[WSUM] = float(sw[rows].sum()) if sw.size else float(rows.size)
                scal[PEN] = l2_penalty(params, l2, pen) if log_now else 0.0
                scal[HAS_LOSS] = 1.0 if log_now else 0.0
                scal[ROWS] = rows.size
                samples += rows.size
                t1 = time.perf_counter()
                t_compute += t1 - t0
                if delay:
                    time.sleep(delay)
                    t_delay += time.perf_counter() - t1
                    t1 = time.perf_counter()
                ok = link.exchange()
                t_wait += time.perf_counter() - t1
                if beat is not None:
                    beat("ps worker step")
                if faults.active:
                    faults.point("step", self.ctx.rank, t + 1)
                self.steps = t + 1  # gradients pushed (the last one or few may be answered by STOP)
                if not ok:
                    break
        finally:
            link.finish()
        self._worker_stats = (t_compute, t_wait, t_delay, samples)
        self.timers.add("compute", t_compute + t_delay)
        self.timers.add("comm", t_wait)

    # -- the closing collectives -------------------------------------------------
    def _close(self, params, layout, plan) -> dict:
        ctx, comm, K = self.ctx, self.comm, self.K
        row = np.zeros(len(_STATS))
        if self.is_server:
            s = self.server
            row[1:7] = (s.version, s.t_loop - s.t_wait, s.t_wait, s.t_loop, s.bytes_sent, s.bytes_recv)
            row[8] = s.samples
            if s.diverged is not None:
                row[9:13] = (1.0, *s.diverged)
        else:
            t_compute, t_wait, t_delay, samples = self._worker_stats
            row[0:9] = (1.0, self.steps, t_compute, t_wait, t_compute + t_wait + t_delay,
                        self.link.bytes_sent, self.link.bytes_recv, t_delay, samples)
        table = ctx.gather_floats(row)
        # Agree on divergence: the earliest one any server saw, decided on rank 0.
        verdict = np.zeros(4)
        if ctx.is_root:
            bad = table[table[:, 9] > 0]
            if len(bad):
                first = bad[np.argmin(bad[:, 10])]
                verdict[:] = (1.0, first[10], first[11], first[12])
        comm.Bcast(verdict, root=0)
        if verdict[0]:
            raise _diverged(int(verdict[1]), _WHAT[int(verdict[2])], float(verdict[3]), self.checkpointer)
        # The final parameters: slices to rank 0, then to everyone.
        counts = [layout.size_of(k) if k < K else 0 for k in range(ctx.size)]
        displs = [int(layout.offsets[k]) if k < K else 0 for k in range(ctx.size)]
        if ctx.is_root:
            comm.Gatherv(MPI.IN_PLACE, [params, counts, displs, MPI.DOUBLE], root=0)
        else:
            mine = params[layout.slice(ctx.rank)] if self.is_server else params[:0]
            comm.Gatherv([mine, MPI.DOUBLE], None, root=0)
        comm.Bcast(params, root=0)
        if ctx.is_root:
            self._section = self._summarise(table, layout, plan)
            self.epochs_done = self.server.version // plan["updates_per_epoch"]
        return {"converged": None, "message": f"{self.cfg.epochs} epochs done ({self.cfg.ps_mode} parameter server)",
                "iterations": self.steps, "evaluations": int(table[K:, 1].sum()) if ctx.is_root else 0}

    def _summarise(self, table, layout, plan) -> dict:
        srv, K, cfg = self.server, self.K, self.cfg
        servers, workers = table[:K], table[K:]
        loop = max(srv.t_loop, 1e-12)
        per_worker = []
        for i, r in enumerate(workers):
            n_steps = int(srv.clock[i])  # gradients applied; r[1] also counts ones answered by STOP
            per_worker.append({
                "rank": K + i, "steps": n_steps, "gradients_sent": int(r[1]),
                "mean_staleness": float(srv.stale_sum[i] / n_steps) if n_steps else 0.0,
                "max_staleness": int(srv.stale_max[i]),
                "steps_per_s": n_steps / max(r[4], 1e-12),
                "compute_seconds": float(r[2]), "wait_seconds": float(r[3]), "delay_seconds": float(r[7]),
                "bytes_sent": int(r[5]), "bytes_received": int(r[6]), "samples": int(r[8]),
            })
        n_grads = int(srv.clock.sum())
        out = {
            "mode": cfg.ps_mode, "servers": K, "workers": layout.W,
            "messages": "sparse" if self.sparse_messages else "dense",
            "staleness_bound": int(cfg.staleness) if cfg.ps_mode == "ssp" else None,
            "batch_per_update": plan["batch"], "updates": int(srv.version), "gradients": n_grads,
            "updates_per_s": srv.version / loop, "gradients_per_s": n_grads / loop,
            "server_busy_fraction": float((servers[0, 4] - servers[0, 3]) / loop),
            "server_busy_fraction_per_server": [float((s[4] - s[3]) / max(s[4], 1e-12)) for s in servers],
            "bytes_sent": int(servers[:, 5].sum()), "bytes_received": int(servers[:, 6].sum()),
            "bytes_per_s": float((servers[:, 5].sum() + servers[:, 6].sum()) / loop),
            "mean_staleness": float(srv.stale_sum.sum() / max(n_grads, 1)) if cfg.ps_mode != "sync" else 0.0,
            "max_staleness": int(srv.stale_max.max()) if layout.W else 0,
            "max_clock_spread": int(srv.max_spread),
            # counts of gradients by staleness 0, 1, ... (trailing zeros cut; the bin at index
            # staleness_histogram_last_bin counts that staleness or more; [0] in sync mode, never stale)
            "staleness_histogram": np.trim_zeros(srv.stale_hist, "b").tolist() or [0],
            "staleness_histogram_last_bin": STALENESS_BINS - 1,
            "server_seconds": loop,
            "per_worker": per_worker,
        }
        return {"ps": out}


def _worker_permutation(n_local: int, seed: int, epoch: int, worker: int, shuffle: str) -> np.ndarray:
    """async/ssp: the order in which one worker visits its own rows in one epoch (seeded)."""
    if shuffle == "none":
        return np.arange(n_local, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch), 0x5053, int(worker)])
    return rng.permutation(n_local).astype(np.int64, copy=False)


__all__ = ["ParameterServerTrainer", "Server", "WorkerLink", "Layout", "parse_delays", "check_layout",
           "TAG_GRAD", "TAG_PARAMS", "TAG_STOP", "TAG_DONE"]
