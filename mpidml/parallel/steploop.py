"""The mini-batch step loop of the allreduce trainer, compiled: kernel, Allreduce, optimizer.

A mini-batch step of a linear, logistic or softmax model (dense or CSR
rows) does nothing but: the loss kernel on this rank's rows of the batch, one Allreduce of
``[grad_sum (P), correct, counted, loss_sum, weight_sum]``, the gradient finish and the
optimizer update. In Python each step also ran the interpreter, mpi4py's and NumPy's call
overhead and the trainer's bookkeeping, all cache-cold after the kernel's sweep through L2
(``scripts/bench_step.py``: ~50 us per step at a global batch of 4096, a sixth of the step).
:func:`_make_steps`' loops run a whole run of such steps in one Numba call that calls MPI itself
(:mod:`mpidml.parallel.native`), logged steps included (their loss sum and a classifier's batch
accuracy are reduced with the gradient and kept in a table; Python writes the records from it
after the call): a fit's first run ends at its first logged step, later ones at the epoch's end
or after about a second (``mpidml.parallel.allreduce.RUN_SECONDS``). Python takes over at steps
with a checkpoint or test fault due, and for every model, shard or option the compiled loop
does not cover.

It is the Python loop's arithmetic in the same order with the same kernels (the model's
``loss_grad`` kernel: ``logistic_loss_grad_hits``, ``softmax_loss_grad_hits`` and their CSR twins
without hits, ``linear_loss_grad``, ``csr_linear_loss_grad``; on logged steps the classifiers'
same kernels with hits (their ``loss_grad_hits``: the hits from the loss kernel's pass);
``rows_weight_sum``, ``mean_gradient_norm2``, ``sgd_update`` / ``adam_update``) and the same
reduction (the trainer's node reducer, :mod:`mpidml.parallel.nodereduce`, where ranks share a node, else one
MPI_Allreduce of the same buffer, float64 or float32 on the wire), so both loops give
bitwise the same parameters (``tests/test_steploop_mpi.py``); ``--step-loop python``
keeps the Python loop. Heartbeats: the loop counts finished steps in ``progress[0]``,
which the ``--timeout`` watchdog reads (:meth:`mpidml.comm.Watchdog.watch`); the GIL is
released while it runs.
"""

from __future__ import annotations

import math

import numpy as np
from mpi4py import MPI
from numba import njit

from .. import kernels
from ..buffers import aligned_zeros
from ..kernels import shuffle, update
from ..kernels.util import FASTMATH, LINEAR, LOGISTIC
from . import native
from . import nodereduce

__all__ = ["StepLoop", "why_not", "SGD_KIND", "ADAM_KIND"]

SGD_KIND = 0
ADAM_KIND = 1
# The model's kernel, a compile-time constant of each loop (the data tuple: dense (X,), CSR
# (indptr, indices, data)).
DENSE_LINEAR, DENSE_LOGISTIC, DENSE_SOFTMAX, CSR_LINEAR, CSR_LOGISTIC, CSR_SOFTMAX = LINEAR, LOGISTIC, 2, 3, 4, 5
NO_KERNEL = -1  # no kernel call: the loop's own cost (scripts/bench_step.py)
# The loop's ``node`` argument without a node reducer (local_size 0: MPI_Allreduce); the same
# types as NodeReducer.args, so both share one compiled loop.
NO_NODE = (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), 0, 0, 0, 0, 0, 0, 0)

# The loop calls the model's loss kernel and, on logged steps, its margin / logit and batch-
# accuracy kernels (the dispatchers the Python loop calls: their compiled code is linked in), so
# it compiles after both warm-up groups (mpidml.train.warm_up_kernels), on one rank. The strict
# per-step kernels are private, uncached copies (same source, fastmath=False): the loop's
# cache entry is then the only file it writes.
_rows_weight_sum = njit(nogil=True, fastmath=False)(update.rows_weight_sum.py_func)
_mean_gradient_norm2 = njit(nogil=True, fastmath=False)(update.mean_gradient_norm2.py_func)
_sgd_update = njit(nogil=True, fastmath=False)(update.sgd_update.py_func)
_adam_update = njit(nogil=True, fastmath=False)(update.adam_update.py_func)
_penalty_norm2 = njit(nogil=True, fastmath=False)(update.penalty_norm2.py_func)
_node_allreduce = njit(nogil=True)(nodereduce.node_allreduce.py_func)  # the Python loop's sum, same source
# Rows' worth of the next epoch's batch plan built between two looks at the node reducer's flags
# while a rank waits for the slower one (~0.3-0.6 us of work: a rank whose last peer has arrived
# goes on at most that late).
PLAN_SLICE = 256


@njit(nogil=True, fastmath=False)
def _log_objective(loss_sum, weight_sum, l2, pn):
    """A log record's objective, as the trainer's log_step computes it (same operations, same
    order, no contraction): loss_sum / weight_sum + 0.5 * l2 * pn."""
    return loss_sum / weight_sum + 0.5 * l2 * pn


def _make_steps(kind: int):
    """The compiled loop for one kernel ``kind`` (DENSE_LOGISTIC, ...), a compile-time constant of
    the closure: the other kinds' branches are pruned before typing, so only this kernel is
    linked in. (Numba keys a closure's cache entries by its captured values, so the loops share
    one index file, not an entry.) NO_KERNEL: the loop without a kernel call."""

    @njit(cache=True, nogil=True, fastmath=FASTMATH)
    def steps(data, y, sw, params, order, starts, s0, s1, lrs, opt_kind, velocity, momentum, nesterov,
              m, v, beta1, beta2, bias1, bias2, eps, l2, n_pen, sums, send32, recv32, red, grad,
              dtype_h, op_h, comm_h, progress, stats, work, n_classes, base, log_every, total, logs, node, nxt):
        """Mini-batch steps ``s0 .. s1-1`` of an epoch, each: kernel, Allreduce, gradient finish, update.

        data: dense (X,) with X (n, D) float32/float64 C-contiguous, or CSR (indptr, indices,
        data); y: float64 (n,) (softmax: int64 labels); sw: float64 (n,) or size 0;
        params: float64 (P,), updated in place; work, n_classes: the softmax kernels' scratch
        (model._work) and K.
        order, starts: the epoch's batch plan (:class:`mpidml.parallel.allreduce.EpochPlan`):
        step s uses the local rows ``order[starts[s]:starts[s+1]]``. lrs: float64, the learning
        rate of step s at ``lrs[s - s0]``. Optimizer: opt_kind SGD_KIND (velocity: float64 (P,)
        or size 0, momentum, nesterov) or ADAM_KIND (m, v: float64 (P,); bias1/bias2[s - s0] =
        1 - beta**t of the step's count t; eps). l2 on ``params[:n_pen]``.
        Buffers: sums, red float64 (P+4,) (local and reduced [grad_sum, correct, counted,
        loss_sum, weight_sum]); send32/recv32 float32 (P+4,) for float32 on the wire, else size
        0 (float64: sums -> red directly); grad float64 (P,). dtype_h, op_h, comm_h: MPI handles
        (the datatype matches the wire buffers, the op is MPI_SUM). node: the node reducer's
        arguments (:class:`mpidml.parallel.nodereduce.NodeReducer`'s ``args``: sums -> red through
        shared memory, float64) or :data:`NO_NODE` (MPI_Allreduce).
        nxt: the next epoch's batch plan under way (:meth:`mpidml.parallel.allreduce.EpochPlan.next_args`:
        :func:`mpidml.kernels.shuffle.plan_advance`'s arguments; its state PLAN_DONE: none). With
        the node reducer, a rank that has published its sums builds it, PLAN_SLICE rows at a
        time, until the node's other ranks have published theirs (time it would spin away).
        progress: int64 (1,), incremented after each step (the watchdog's heartbeat);
        stats: float64 (6,): stats[0] += seconds inside the reduction (with the float32 casts),
        stats[1] = the MPI error code of a failed call (0 otherwise; -1: an lr is negative or not
        finite, no step taken), stats[2] += seconds in the kernel and the batch's weight sum
        (MPI_Wtime, ~20 ns a call), stats[3] = MPI_Wtime at the loop's start, stats[4] = the
        rows of ``logs`` written, stats[5] += seconds spent on ``nxt`` while waiting (inside
        stats[0]).

        Logged steps: step s logs when its 0-based step of the fit, g = base + s, has
        ``(g + 1) % log_every == 0`` or ``g + 1 == total`` (log_every >= 1). Its kernel adds the
        loss sum, and a classifier's batch accuracy goes into the reduced [correct, counted] (the
        loss kernel counts the hits, counted is the batch's weight sum, as
        ``model.loss_grad_hits``). After its update, the next row of ``logs`` (float64 (L, 7), L
        at least the run's logged steps) gets [correct, counted, loss_sum, weight_sum,
        ||params[:n_pen]||^2 (``kernels.penalty_norm2``: the log record's penalty, as the Python
        loop computes it), MPI_Wtime, s]; the run stops after a logged step whose objective
        loss_sum / weight_sum + 0.5 l2 ||params[:n_pen]||^2 is not finite (the Python loop
        raises there).

        Returns the number of steps completed. Fewer than ``s1 - s0``: the reduced gradient of
        step ``s0 + returned`` was not finite (red holds its sums; params not updated), the
        Allreduce failed (stats[1] != 0), or the last completed step logged a non-finite objective.
        """
        P = params.size
        n_tail = sums.size - P
        wire32 = send32.size != 0
        for k in range(s1 - s0):  # checked here: no NumPy call per run between two kernels
            if not (lrs[k] >= 0.0 and math.isfinite(lrs[k])):
                stats[1] = -1.0
                return 0
        stats[3] = native.mpi_wtime()
        n_logged = 0
        for s in range(s0, s1):
            rows = order[starts[s]:starts[s + 1]]
            for j in range(sums.size):
                sums[j] = 0.0
            grad_sum = sums[:P]
            tk = native.mpi_wtime()
            # with_loss: a run-time bool, never a literal False, which would make Numba compile a
            # second specialisation of the kernel for Literal[bool](False) (~6 s)
            wl = (base + s + 1) % log_every == 0 or base + s + 1 == total
            hits = sums[P:P + 1] if wl else sums[P:P]  # a classifier's logged step: its hits (sums[P])
            if kind == DENSE_LOGISTIC:  # a logged step's hits from the same pass (sums[P]; none: size 0)
                sums[P + n_tail - 2] = kernels.logistic_loss_grad_hits(data[0], y, sw, params, rows, grad_sum, wl,
                                                                       hits)
            elif kind == DENSE_LINEAR:
                sums[P + n_tail - 2] = kernels.linear_loss_grad(data[0], y, sw, params, rows, grad_sum, wl)
            elif kind == DENSE_SOFTMAX:  # as DENSE_LOGISTIC
                sums[P + n_tail - 2] = kernels.softmax_loss_grad_hits(data[0], y, sw, params, rows, grad_sum, wl, work,
                                                                      hits)
            elif kind == CSR_LOGISTIC:  # as DENSE_LOGISTIC
                sums[P + n_tail - 2] = kernels.csr_logistic_loss_grad_hits(data[0], data[1], data[2], y, sw, params,
                                                                           rows, grad_sum, wl, hits)
            elif kind == CSR_LINEAR:
                sums[P + n_tail - 2] = kernels.csr_linear_loss_grad(data[0], data[1], data[2], y, sw, params, rows,
                                                                    grad_sum, wl)
            elif kind == CSR_SOFTMAX:  # as DENSE_LOGISTIC
                sums[P + n_tail - 2] = kernels.csr_softmax_loss_grad_hits(data[0], data[1], data[2], y, sw, params,
                                                                          rows, grad_sum, wl, n_classes, work, hits)
            sums[P + n_tail - 1] = _rows_weight_sum(sw, rows)
            if wl and (kind == DENSE_LOGISTIC or kind == DENSE_SOFTMAX or kind == CSR_LOGISTIC
                       or kind == CSR_SOFTMAX):
                # a logged step of a classifier: the hits came with the loss (at the parameters the
                # loss is computed at), counted is the weight of the rows
                sums[P + 1] = sums[P + n_tail - 1]
            t0 = native.mpi_wtime()
            stats[2] += t0 - tk
            if node[4] > 0 and nxt[13][0] != shuffle.PLAN_DONE:
                # the node reducer, with the next epoch's batch plan under way: this rank builds it
                # in slices while the node's slower ranks have not published their sums yet
                seq = nodereduce.node_publish(sums, node[0], node[1], node[2], node[3], node[4], node[5])
                tw = native.mpi_wtime()
                while not nodereduce.node_arrived(node[1], seq, node[3], node[4], node[6]):
                    # EpochPlan's compiled build itself (np.int64 budget: the same specialisation)
                    if shuffle.plan_advance(nxt[0], nxt[1], nxt[2], nxt[3], nxt[4], nxt[5], nxt[6], nxt[7], nxt[8],
                                            nxt[9], nxt[10], nxt[11], nxt[12], nxt[13], np.int64(PLAN_SLICE)):
                        break
                stats[5] += native.mpi_wtime() - tw
                rc = nodereduce.node_complete(sums.size, red, node[0], node[1], seq, node[3], node[4], node[5],
                                              node[6], node[7], node[8], node[9])
            elif node[4] > 0:  # local_size: the node reducer
                rc = _node_allreduce(sums, red, *node)
            elif wire32:
                for j in range(sums.size):
                    send32[j] = sums[j]
                rc = native.mpi_allreduce(send32, recv32, sums.size, dtype_h, op_h, comm_h)
                for j in range(sums.size):
                    red[j] = recv32[j]
            else:
                rc = native.mpi_allreduce(sums, red, sums.size, dtype_h, op_h, comm_h)
            stats[0] += native.mpi_wtime() - t0
            if rc != 0:
                stats[1] = rc
                return s - s0
            gnorm2 = _mean_gradient_norm2(red[:P], 1.0 / red[P + n_tail - 1], params, l2, n_pen, grad)
            if not math.isfinite(gnorm2):
                return s - s0
            k = s - s0
            if opt_kind == ADAM_KIND:
                _adam_update(params, grad, m, v, lrs[k], beta1, beta2, bias1[k], bias2[k], eps)
            else:
                _sgd_update(params, grad, velocity, lrs[k], momentum, nesterov)
            progress[0] += 1
            if wl:
                pn = _penalty_norm2(params, n_pen)
                for j in range(4):
                    logs[n_logged, j] = red[P + j]
                logs[n_logged, 4] = pn
                logs[n_logged, 5] = native.mpi_wtime()
                logs[n_logged, 6] = s
                n_logged += 1
                stats[4] = n_logged
                if not math.isfinite(_log_objective(red[P + n_tail - 2], red[P + n_tail - 1], l2, pn)):
                    return s - s0 + 1
        return s1 - s0

    return steps


def _no_plan() -> tuple:
    """The loop's ``nxt`` argument when no plan is under way: EpochPlan.next_args()'s types
    (its step_of int32: fewer than 2^31 steps per epoch), state PLAN_DONE."""
    return (np.zeros(0, dtype=np.int64), 0, 0, 1, 1, 1, np.zeros(shuffle.N_ROUNDS, dtype=np.uint64), False,
            np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64),
            np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), shuffle.plan_state())


_LOOPS = {k: _make_steps(k) for k in (DENSE_LINEAR, DENSE_LOGISTIC, DENSE_SOFTMAX, CSR_LINEAR, CSR_LOGISTIC,
                                      CSR_SOFTMAX, NO_KERNEL)}
_COMPILED: set = set()  # (kind, argument dtypes) compiled or loaded by this process


def _kind_of(model, shard) -> int | None:
    from ..data.csr import CSRShard
    from ..models.linear import LinearRegression, LogisticRegression
    from ..models.softmax import SoftmaxRegression

    # exact types: a wrapper (a streamed shard's model, a benchmark's timed model) keeps the Python loop
    dense = {LinearRegression: DENSE_LINEAR, LogisticRegression: DENSE_LOGISTIC, SoftmaxRegression: DENSE_SOFTMAX}
    kind = dense.get(type(model))
    if kind is not None and type(shard) is CSRShard:
        kind += CSR_LINEAR - DENSE_LINEAR
    return kind


def _data_of(shard) -> tuple:
    return (shard.indptr, shard.indices, shard.data) if hasattr(shard, "indptr") else (shard.X,)


def why_not(model, shard, cfg, n_pen: int) -> str | None:
    """Why this rank cannot run the compiled loop (None: it can). Local, no communication."""
    from ..data.csr import CSRShard
    from ..data.hdf5 import DenseShard

    if getattr(cfg, "step_loop", "auto") == "python":
        return "--step-loop python"
    if not native.AVAILABLE:
        return "MPI symbols not found in mpi4py's module"
    if cfg.optimizer not in ("sgd", "adam"):
        return f"optimizer {cfg.optimizer}"
    if getattr(shard, "X", 0) is None:  # a StreamingShard (--max-memory): X stays in the file
        return "the shard is streamed from the file (--max-memory)"
    kind = _kind_of(model, shard)
    if kind is None:
        return f"model {getattr(model, 'name', type(model).__name__)} (compiled: linear, logistic, softmax)"
    if type(shard) is DenseShard:
        X = shard.X
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.flags.c_contiguous
                and X.dtype in (np.float32, np.float64)):
            return "X not a C-contiguous float32/float64 array"
    elif type(shard) is CSRShard:
        if not (shard.indptr.dtype == np.int64 and shard.indices.dtype in (np.int32, np.int64)
                and shard.data.dtype in (np.float32, np.float64)):
            return "CSR arrays of unexpected dtypes"
    else:
        return "not an in-memory dense or CSR shard"
    y_dtype = np.int64 if kind in (DENSE_SOFTMAX, CSR_SOFTMAX) else np.float64
    if shard.y.dtype != y_dtype or shard.sw.dtype != np.float64:
        return "labels or weights of unexpected dtypes"
    if n_pen < 0:
        return "penalised entries not a leading block"
    return None


class StepLoop:
    """State and buffers of the compiled loop for one trainer and optimizer.

    Parameters
    ----------
    model, shard : the trainer's (see :func:`why_not`)
    comm : mpi4py communicator of the trainer
    n_params, n_tail : lengths of the gradient and of the reduced scalars after it
    comm_dtype : "float64" or "float32" (on the wire)
    l2, n_pen : the penalty on params[:n_pen]
    reducer : the trainer's :class:`mpidml.parallel.nodereduce.NodeReducer` or None (MPI_Allreduce)
    no_kernel : benchmarks only: the loop without its kernel (its own cost; wrong gradients)

    ``seconds``: totals over all :meth:`run` calls: "kernel" (the kernel and the batch's weight
    sum), "allreduce" (inside the reduction, waiting for the slowest rank included), "plan_in_waits"
    (the part of "allreduce" spent building the next epoch's batch plan while waiting) and "steps".
    """

    def __init__(self, model, shard, comm, n_params: int, n_tail: int, comm_dtype: str, l2: float, n_pen: int,
                 reducer=None, no_kernel: bool = False):
        self.shard, self.kind = shard, NO_KERNEL if no_kernel else _kind_of(model, shard)
        self.fn = _LOOPS[self.kind]
        self.data = _data_of(shard)
        self.work = getattr(model, "_work", None)
        if self.work is None:
            self.work = np.zeros(0)
        self.n_classes = int(getattr(model, "n_classes", 0) or 0)
        n = n_params + n_tail
        if n >= 2**31:
            raise ValueError(f"{n} values exceed one MPI_Allreduce's int count")
        self.sums = aligned_zeros(n)  # the kernel adds its gradient sum to sums[:n_params]
        self.red = aligned_zeros(n)
        self.grad = aligned_zeros(n_params)
        wire = np.float32 if comm_dtype == "float32" else np.float64
        self.send32 = np.zeros(n if wire == np.float32 else 0, dtype=np.float32)
        self.recv32 = np.zeros_like(self.send32)
        self.handles = (native.dtype_handle(wire), native.handle(MPI.SUM), native.handle(comm))
        if reducer is not None and (wire != np.float64 or reducer.n != n):
            raise ValueError("StepLoop: the node reducer sums float64 buffers of n_params + n_tail values")
        self.node = reducer.args if reducer is not None else NO_NODE
        # waits for a slower rank happen in the node reducer's own spin, where the loop can work:
        # on the next epoch's batch plan (EpochPlan.begin_next; MPI_Allreduce blocks instead)
        self.builds_plan_ahead = reducer is not None
        self.l2, self.n_pen = float(l2), int(n_pen)
        self.progress = np.zeros(1, dtype=np.int64)
        self.stats = np.zeros(6)
        self.logs = np.zeros((1, 7))  # the logged steps' sums (run: grown to a run's logged steps)
        self.seconds = {"kernel": 0.0, "allreduce": 0.0, "plan_in_waits": 0.0, "steps": 0}
        self._empty = np.zeros(0)
        # compiled (or loaded) in this process already: for these dtypes, every rank has it too
        self._key = (self.kind, tuple(a.dtype for a in self.data), shard.y.dtype)
        self.compiled = self._key in _COMPILED

    def compile(self) -> None:
        """Compile (or load) the loop for this shard's dtypes: a call with no steps (no MPI call).

        It links the model's loss kernel in, so it runs after that kernel's warm-up on the
        same rank (mpidml.train.warm_up_groups) and shares no cached function with the rest."""
        P = self.grad.size
        e = self._empty
        self.fn(self.data, self.shard.y, self.shard.sw, np.zeros(P), np.zeros(0, dtype=np.int64),
                np.zeros(1, dtype=np.int64), 0, 0, e, SGD_KIND, e, 0.0, False, e, e, 0.9, 0.999, e, e, 1e-8,
                self.l2, self.n_pen, self.sums, self.send32, self.recv32, self.red, self.grad, *self.handles,
                self.progress, self.stats, self.work, self.n_classes, 0, 1, 0, self.logs, self.node, _no_plan())
        self.compiled = True
        _COMPILED.add(self._key)

    def run(self, params, plan, s0: int, s1: int, lrs, opt, base: int = 0, log_every: int = 0,
            total: int = 0) -> tuple[int, float, np.ndarray]:
        """Steps s0 .. s1-1 of ``plan``'s epoch with ``opt`` (optim.SGD or optim.Adam, updated in place).

        ``lrs``: the learning rates of those steps. Logged steps (``log_every`` >= 1): step s
        logs when ``g = base + s`` (its 0-based step of the fit) has ``(g + 1) % log_every == 0``
        or ``g + 1 == total``; its loss sum and a classifier's [correct, counted] are reduced with
        its gradient. ``log_every`` 0: no step logs.

        Returns (steps completed, seconds in MPI_Allreduce, records): records float64 (L, 7),
        one row per logged step completed, in order: [correct, counted, loss_sum, weight_sum,
        ||params[:n_pen]||^2 after its update (``kernels.penalty_norm2``), seconds since the
        run started (MPI_Wtime), the step s (of the epoch)]. Raises ValueError for a negative or non-finite lr (no step
        taken), mpi4py.MPI.Exception if an Allreduce failed. Fewer steps than asked and no
        exception: the next step's reduced gradient is not finite (``self.red`` holds its sums),
        or the last completed step logged a non-finite objective.
        """
        n = s1 - s0
        lrs = np.asarray(lrs, dtype=np.float64)  # the caller's float64 array itself: no copy
        if lrs.shape != (n,):
            raise ValueError(f"run: {n} learning rates expected, got shape {lrs.shape}")
        e = self._empty
        if getattr(opt, "name", "") == "adam":
            pairs = [opt.bias_corrections(t) for t in range(opt.t + 1, opt.t + 1 + n)]  # optim.Adam's own values
            bias1 = np.array([p[0] for p in pairs], dtype=np.float64)
            bias2 = np.array([p[1] for p in pairs], dtype=np.float64)
            kind, vel, mom, nest, m, v, b1, b2, eps = ADAM_KIND, e, 0.0, False, opt.m, opt.v, opt.beta1, opt.beta2, opt.eps
        else:
            bias1 = bias2 = e
            kind, vel, mom, nest, m, v, b1, b2, eps = (SGD_KIND, opt._velocity, opt.momentum, opt.nesterov, e, e,
                                                       0.9, 0.999, 1e-8)
        if log_every < 1:  # no step logs
            log_every, total = 2**62, -1
        n_logs = n // log_every + 2  # at most: every log_every-th step, and the fit's last
        if self.logs.shape[0] < n_logs:
            self.logs = np.zeros((n_logs, 7))
        self.stats[:] = 0.0
        sh = self.shard
        nxt = plan.next_args() if hasattr(plan, "next_args") else _no_plan()
        done = self.fn(self.data, sh.y, sh.sw, params, plan.order, plan.starts, s0, s1, lrs, kind, vel, mom,
                       nest, m, v, b1, b2, bias1, bias2, eps, self.l2, self.n_pen, self.sums, self.send32,
                       self.recv32, self.red, self.grad, *self.handles, self.progress, self.stats, self.work,
                       self.n_classes, int(base), int(log_every), int(total), self.logs, self.node, nxt)
        opt.t += done
        self.seconds["kernel"] += float(self.stats[2])
        self.seconds["allreduce"] += float(self.stats[0])
        self.seconds["plan_in_waits"] += float(self.stats[5])
        self.seconds["steps"] += int(done)
        if self.stats[1] == -1.0:
            raise ValueError("step lr must be finite and >= 0")
        if self.stats[1] != 0:
            raise MPI.Exception(int(self.stats[1]))
        records = self.logs[:int(self.stats[4])].copy()
        records[:, 5] -= self.stats[3]
        return int(done), float(self.stats[0]), records
