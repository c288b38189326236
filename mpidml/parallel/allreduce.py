"""Synchronous data-parallel training with MPI Allreduce.

Every rank holds a replica of the flat parameter vector and the optimizer
state. Each step, every rank computes the loss and gradient SUMS over its
rows of the global batch into one buffer ``[grad_sum (P), correct, counted, loss_sum,
weight_sum]`` (correct/counted: a classifier's batch accuracy, on logged steps),
one ``Allreduce`` adds the buffers of all ranks, and every rank divides by the
global weight sum. Uneven shards are therefore weighted exactly, and N rows on
P ranks give the single-process answer for any N and P.

Mini-batches: each epoch has one seeded order of all N global rows; step s
takes the rows at positions ``[s*B, (s+1)*B)`` and each rank works on the rows
of that batch that it holds. The order is a keyed bijection row -> position
that a rank evaluates for its own rows only (:class:`EpochPlan`, O(N/P) per
epoch), so the trained model does not depend on the number of ranks.

Replicas stay identical by construction: full-batch evaluations (L-BFGS, GD)
reduce to the root and broadcast the root's sums, so every rank takes the same
line-search and stopping decisions; mini-batch SGD, whose control flow never
depends on reduced values, checks at each epoch end that all replicas agree
bitwise (a cheap checksum reduction) and re-broadcasts the root's state if a
reduction ever rounded differently on some rank.
"""

from __future__ import annotations

import math
import time

import numpy as np
from mpi4py import MPI

from .. import faults, kernels
from ..buffers import aligned_zeros
from ..errors import ConfigError, DivergedError
from ..kernels.shuffle import N_ROUNDS, PLAN_DONE, plan_advance, plan_begin, plan_state
from ..optim import LBFGS, SGD, Adam, make_schedule


class AllreduceTrainer:
    """Train ``model`` on this rank's ``shard`` with the options in ``cfg``.

    Parameters
    ----------
    ctx : mpidml.comm.Context
    model : mpidml.models.Model
    shard : this rank's data (``n_local`` rows, global offset ``lo``)
    cfg : mpidml.config.TrainConfig
    reporter : mpidml.metrics.Reporter
    weight_sum : float
        Global sum of sample weights (N for unit weights).
    """

    def __init__(self, ctx, model, shard, cfg, reporter, weight_sum):
        self.ctx, self.model, self.shard, self.cfg, self.reporter = ctx, model, shard, cfg, reporter
        self.comm = ctx.comm
        self.n_params = P = model.n_params
        self.weight_sum = float(weight_sum)
        self.l2 = float(cfg.l2)
        # [grad_sum (P), correct, counted, loss_sum, weight_sum]: the one buffer reduced per step.
        # correct/counted: a classifier's weighted hits and weight in the batch, filled on the
        # mini-batch steps that log (batch accuracy), 0 otherwise: no second collective for it.
        # on a cache line like the parameters (mpidml.buffers): the kernels add to grad_sum
        # in 8-lane vectors
        self.buf = aligned_zeros(P + _N_TAIL)
        self.grad_sum = self.buf[:P]
        self.grad = aligned_zeros(P)
        self._tmp = aligned_zeros(P)
        # --comm-dtype float32: the gradient sums travel as float32 (half the bytes) through
        # preallocated buffers (cast, reduce, cast back); parameters, optimizer state and the
        # objective stay float64. Mini-batch steps reduce the whole buffer in float32 (the batch
        # loss and accuracy are only logged; unit-weight counts are integers < 2^24, exact).
        # Full-batch evaluations send the tail [.., loss_sum, weight_sum] as float64 beside the
        # float32 gradient (_reduce_bcast_float32): the line search compares f values in the 10th digit.
        self.comm_dtype = getattr(cfg, "comm_dtype", "float64")
        self.buf32 = self._pack = None
        if self.comm_dtype == "float32":
            self.buf32 = np.zeros(P + _N_TAIL, dtype=np.float32)
            tail = 8 * _N_TAIL
            self._pack = np.zeros(tail + 4 * P, dtype=np.uint8)  # [float64 tail | float32 grad (P)]
            self._pack_sums = self._pack[:tail].view(np.float64)
            self._pack_grad = self._pack[tail:].view(np.float32)
        self.pen = model.penalized
        self.all_rows = np.arange(shard.n_local, dtype=np.int64)
        self.local_weight_sum = float(shard.sw.sum()) if shard.sw.size else float(shard.n_local)
        self.timers = ctx.timers
        self.steps = 0
        self.epochs_done = 0
        self.n_evals = 0
        self.replica_resyncs = 0
        self.checkpointer = None  # set by the caller (mpidml.train) to write checkpoints
        self._step_loop = False  # not decided yet (step_loop())
        self.step_loop_reason = "not a mini-batch run"
        self._reducer = False  # not decided yet (node_reducer())
        self.reduction_reason = "not a mini-batch run"

    @staticmethod
    def data_parts(ctx, cfg):
        """How rows are split: (n_parts, this rank's part); here over all ranks."""
        return ctx.size, ctx.rank

    def summary_section(self) -> dict:
        """Strategy-specific entries merged into summary.json (collective-free)."""
        itemsize = 4 if self.buf32 is not None else 8
        loop = "compiled" if self._step_loop not in (None, False) else "python"
        red = self._reducer if self._reducer not in (None, False) else None
        reduction = ({"reduction": "shared memory", "nodes": red.n_nodes, "ranks_per_node_here": red.local_size}
                     if red is not None else {"reduction": "mpi", "mpi_because": self.reduction_reason})
        return {"comm": {"dtype": self.comm_dtype, "gradient_bytes_per_reduction": self.n_params * itemsize,
                         **reduction},
                "step_loop": {"loop": loop, "python_because": self.step_loop_reason if loop == "python" else None}}

    # -- the objective ----------------------------------------------------
    def _finish(self, params, grad_out) -> float:
        """Turn reduced sums in self.buf into the mean gradient (grad_out) and objective."""
        w = self.buf[-1]
        mean_gradient(self.grad_sum, w, params, self.l2, self.pen, self._tmp, grad_out)
        return self.buf[-2] / w + l2_penalty(params, self.l2, self.pen)

    def objective(self, params, grad_out) -> float:
        """Full-batch objective f(params) and its gradient (written to grad_out), collectively.

        Reduces to the root and broadcasts the root's sums so every rank gets
        bitwise the same f and gradient (L-BFGS decisions must agree).
        """
        t0 = time.perf_counter()
        self.buf[:] = 0.0
        loss = self.model.loss_grad(self.shard, params, self.all_rows, self.grad_sum, True)
        self.buf[-2] = loss
        self.buf[-1] = self.local_weight_sum
        t1 = time.perf_counter()
        if self._pack is not None:
            self._reduce_bcast_float32()
        else:
            if self.ctx.is_root:
                self.comm.Reduce(MPI.IN_PLACE, self.buf, op=MPI.SUM, root=0)
            else:
                self.comm.Reduce(self.buf, None, op=MPI.SUM, root=0)
            self.comm.Bcast(self.buf, root=0)
        t2 = time.perf_counter()
        f = self._finish(params, grad_out)
        self.timers.add("compute", (t1 - t0) + (time.perf_counter() - t2))
        self.timers.add("comm", t2 - t1)
        self.n_evals += 1
        return f

    def lbfgs_h0(self) -> np.ndarray | None:
        """L-BFGS's diagonal D (--lbfgs-scaling features), bitwise the same on every rank; else None.

        Collective: one pass over the local rows for the column sums of squares (dense, CSR
        or streamed chunk by chunk: the same additions in the same order, so streaming gives
        the in-memory bits), one reduce + broadcast of [sums (D), row count], then
        ``model.lbfgs_h0(mean_sq, l2)``. Every rank takes the same branch (config, model
        and shard type agree), so the collective is entered by all or by none.
        """
        if getattr(self.cfg, "lbfgs_scaling", "none") != "features" or not hasattr(self.model, "lbfgs_h0"):
            return None
        shard, D = self.shard, int(self.model.n_features)
        if self.model.lbfgs_h0(np.ones(D), self.l2) is None:  # e.g. the MLP: no pass, no collective
            return None
        t0 = time.perf_counter()
        sums = np.zeros(D + 1, dtype=np.float64)
        sq = sums[:D]
        if hasattr(shard, "indices"):  # CSR
            kernels.csr_column_sq_sums(shard.indices, shard.data, sq)
        elif hasattr(shard, "chunks"):  # streamed from the file (--max-memory)
            for _start, _stop, X in shard.chunks():
                kernels.column_sq_sums(X, sq)
        elif getattr(shard, "X", None) is not None:
            kernels.column_sq_sums(shard.X, sq)
        else:
            return None
        sums[D] = shard.n_local
        t1 = time.perf_counter()
        self.ctx.agreed_sum(sums)
        self.timers.add("compute", t1 - t0)
        self.timers.add("comm", time.perf_counter() - t1)
        if not sums[D] > 0:
            return None
        return self.model.lbfgs_h0(sq / sums[D], self.l2)

    def _reduce_bcast_float32(self) -> None:
        """Full-batch sums in self.buf with the gradient as float32 on the wire (root's result everywhere).

        Two concurrent Reduces to the root: the float32 gradient sum (P values) and the
        float64 tail [correct, counted, loss_sum, weight_sum]; then one Bcast of the packed bytes
        [float64 sums | float32 gradient]. Every rank converts the same float32 values, so all
        ranks hold bitwise the same float64 sums (L-BFGS decisions agree).
        """
        P, buf, sums, g32 = self.n_params, self.buf, self._pack_sums, self._pack_grad
        g32[:] = buf[:P]
        sums[:] = buf[P:]
        if self.ctx.is_root:
            reqs = [self.comm.Ireduce(MPI.IN_PLACE, g32, op=MPI.SUM, root=0),
                    self.comm.Ireduce(MPI.IN_PLACE, sums, op=MPI.SUM, root=0)]
        else:
            reqs = [self.comm.Ireduce(g32, None, op=MPI.SUM, root=0),
                    self.comm.Ireduce(sums, None, op=MPI.SUM, root=0)]
        MPI.Request.Waitall(reqs)
        self.comm.Bcast(self._pack, root=0)
        buf[:P] = g32
        buf[P:] = sums

    def _allreduce_sums(self) -> None:
        """Sum self.buf over all ranks in place (a mini-batch step's sums): through the node
        reducer where the run has one (:meth:`node_reducer`; the compiled loop sums the same
        way), else one Allreduce (of float32 with --comm-dtype float32)."""
        b32 = self.buf32
        red = self._reducer if self._reducer is not False else None
        if red is not None:
            red.allreduce(self.buf, self.buf)
        elif b32 is None:
            self.comm.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
        else:
            b32[:] = self.buf
            self.comm.Allreduce(MPI.IN_PLACE, b32, op=MPI.SUM)
            self.buf[:] = b32

    # -- strategies ---------------------------------------------------------
    def fit(self, params: np.ndarray, resume: dict | None = None) -> dict:
        """Train in place from ``params`` (or from the checkpoint ``resume``); returns a status dict."""
        if resume is not None:
            params[:] = resume["params"]
        opt = self.cfg.optimizer
        if opt == "lbfgs":
            return self._fit_lbfgs(params, resume)
        if opt == "gd":
            return self._fit_gd(params, resume)
        return self._fit_minibatch(params, resume)

    def _check_finite(self, value, what):
        if not math.isfinite(value):
            raise _diverged(self.steps, what, value, self.checkpointer)

    def _step_done(self, step, epoch, params, state_fn):
        """After every step: heartbeat, test hook, checkpoint when due."""
        self.ctx.beat()
        if faults.active:
            faults.point("step", self.ctx.rank, step)
        if self.checkpointer is not None and self.checkpointer.due(step):
            t0 = time.perf_counter()
            self.checkpointer.save(step, epoch, params, state_fn())
            self.timers.add("io", time.perf_counter() - t0)

    def _final_checkpoint(self, step, epoch, params, state_fn):
        if self.checkpointer is not None and not self.checkpointer.due(step):
            t0 = time.perf_counter()
            self.checkpointer.save(step, epoch, params, state_fn())
            self.timers.add("io", time.perf_counter() - t0)

    def _fit_lbfgs(self, params, resume):
        cfg = self.cfg
        lb = LBFGS(self.n_params, memory=cfg.memory, tol=cfg.tol, max_iter=cfg.max_iter,
                   ftol=getattr(cfg, "ftol", 0.0), h0=self.lbfgs_h0())
        if resume is None:
            lb.reset(params, self.objective)
        else:
            lb.load_state_dict(resume["state"]["lbfgs"])
            self.n_evals = int(resume["state"]["trainer"]["n_evals"])
        self.steps = lb.n_iter
        self._check_finite(lb.f, "loss")
        log_every = cfg.log_every or 1

        def state():
            return {"lbfgs": lb.state_dict(), "trainer": {"n_evals": self.n_evals}}

        if resume is None:
            self.reporter.log({"iter": 0, "loss": lb.f, "grad_max": float(np.max(np.abs(lb.g))),
                               "evals": self.n_evals})
        logged = lb.n_iter  # logged above, or before the checkpoint it resumes from
        while not lb.converged and lb.n_iter < cfg.max_iter:
            stop = lb.step(self.objective)
            self.steps = lb.n_iter
            self._check_finite(lb.f, "loss")
            if (lb.n_iter % log_every == 0 or stop) and lb.n_iter != logged:
                logged = lb.n_iter
                self.reporter.log({"iter": lb.n_iter, "loss": lb.f, "grad_max": float(np.max(np.abs(lb.g))),
                                   "evals": self.n_evals})
            self._step_done(lb.n_iter, 0, lb.x, state)
            if stop:
                break
        params[:] = lb.x
        self._final_checkpoint(lb.n_iter, 0, params, state)
        message = lb.message
        if lb.line_search_failed and lb.n_iter == 0:  # not near an optimum: no step at all from the start
            message += (f"; it failed at the starting point, where max|grad| = {np.max(np.abs(lb.g)):.3g}: "
                        "features on very different scales? try --standardize")
        return {"converged": bool(lb.converged), "message": message, "iterations": lb.n_iter,
                "evaluations": self.n_evals}

    def _fit_gd(self, params, resume):
        """Full-batch gradient descent (optionally with momentum / Nesterov)."""
        cfg = self.cfg
        opt = SGD(self.n_params, cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        schedule = make_schedule(cfg.lr_schedule, cfg.lr, total_steps=cfg.max_iter)
        log_every = cfg.log_every or 1
        start = 0
        if resume is not None:
            opt.load_state_dict(resume["state"]["optimizer"])
            start = self.steps = int(resume["step"])
            self.n_evals = int(resume["state"]["trainer"]["n_evals"])

        def state():
            return {"optimizer": opt.state_dict(), "trainer": {"n_evals": self.n_evals}}

        converged = False
        for it in range(start, cfg.max_iter):
            f = self.objective(params, self.grad)
            self._check_finite(f, "loss")
            gmax = float(np.max(np.abs(self.grad)))
            if it % log_every == 0:
                self.reporter.log({"iter": it, "loss": f, "grad_max": gmax, "lr": schedule(it)})
            if gmax <= cfg.tol:
                converged = True
                break
            t0 = time.perf_counter()
            opt.step(params, self.grad, lr=schedule(it))
            self.timers.add("compute", time.perf_counter() - t0)
            self.steps = it + 1
            self._step_done(self.steps, 0, params, state)
        self._final_checkpoint(self.steps, 0, params, state)
        return {"converged": converged, "message": "max|grad| <= tol" if converged else "max_iter reached",
                "iterations": self.steps, "evaluations": self.n_evals}

    def _fit_minibatch(self, params, resume):
        cfg, shard, model = self.cfg, self.shard, self.model
        N = int(self.shard.n_total)
        B = int(cfg.batch_size)
        if B > N:
            raise ConfigError(f"--batch-size {B} is larger than the dataset ({N} rows)")
        if cfg.optimizer == "adam":
            opt = Adam(self.n_params, cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2)
        else:
            opt = SGD(self.n_params, cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        steps_per_epoch = -(-N // B)
        total = steps_per_epoch * cfg.epochs
        schedule = make_schedule(cfg.lr_schedule, cfg.lr, total_steps=total)
        log_every = cfg.log_every or max(1, steps_per_epoch // 10)
        start = 0
        if resume is not None:
            opt.load_state_dict(resume["state"]["optimizer"])
            start = self.steps = int(resume["step"])
            self.epochs_done = start // steps_per_epoch

        def state():
            # The shuffles are counter-based (seed, epoch): step and seed are the whole RNG state.
            return {"optimizer": opt.state_dict(), "trainer": {"seed": cfg.seed, "steps_per_epoch": steps_per_epoch}}

        plan = EpochPlan(shard, N, B, cfg.seed, cfg.shuffle)
        buf, grad, grad_sum = self.buf, self.grad, self.grad_sum
        allreduce_sums = self._allreduce_sums
        pen, l2, tmp = self.pen, self.l2, self._tmp
        sw = shard.sw
        timers = self.timers
        t_compute = t_comm = 0.0
        samples_since, t_log = 0, time.perf_counter()
        # Classifiers log the batch accuracy too (weighted like the loss): [correct, counted] of
        # the batch at the parameters its loss is computed at, in the step's one reduced buffer.
        n_cls = getattr(model, "n_classes", 0) if model.is_classifier else 0
        P = self.n_params
        n_pen = self._n_pen()
        # Runs of steps, logged ones included, go through the compiled loop (steploop) where
        # every rank can; steps with a checkpoint or test fault due, and every step of other
        # models, through Python below.
        self.node_reducer()  # collective, once: how the steps' sums are reduced (both loops)
        loop = self.step_loop()
        if loop is not None and not loop.compiled:  # not warmed up by mpidml.train: one rank first
            from ..train import compile_in_groups

            compile_in_groups(self.ctx, [loop.compile])
        ckpt = self.checkpointer

        def logs(step):  # step: 0-based
            return (step + 1) % log_every == 0 or step + 1 == total

        def python_only(step):  # this step checkpoints or has a test fault
            return (ckpt is not None and ckpt.due(step + 1)) or (faults.active and faults.at_step(step + 1))

        def penalty():
            """The objective's penalty at params: in the order the compiled loop sums it
            (kernels.penalty_norm2) where the penalised entries lead, so both loops log the same bits."""
            return 0.5 * l2 * kernels.penalty_norm2(params, n_pen) if n_pen >= 0 else l2_penalty(params, l2, pen)

        def log_step(step, epoch, s, lr, tail, pen_value, now=None):
            """The log record of 0-based ``step`` (step s of its epoch, taken with ``lr``; params
            already updated, their penalty ``pen_value``) from its reduced [correct, counted, loss,
            weight] ``tail`` (the reduced buffer's last four values); ``now``: when the step ended
            (perf_counter seconds; default: now)."""
            nonlocal samples_since, t_log
            f = tail[2] / tail[3] + pen_value
            if not math.isfinite(f):
                raise _diverged(step + 1, "loss", f, self.checkpointer)
            now = time.perf_counter() if now is None else now
            rec = {"step": step + 1, "epoch": epoch + (s + 1) / steps_per_epoch, "loss": f, "lr": lr,
                   "samples_per_s": samples_since / max(now - t_log, 1e-12)}
            if n_cls and tail[1] > 0:
                rec["accuracy"] = float(tail[0] / tail[1])
            self.reporter.log(rec, at=now)
            samples_since, t_log = 0, now

        run_cap = None  # steps per run of the compiled loop after the first (see below)
        for epoch in range(start // steps_per_epoch, cfg.epochs):
            t0 = time.perf_counter()
            plan.build(epoch)
            if loop is not None and loop.builds_plan_ahead and epoch + 1 < cfg.epochs:
                plan.begin_next(epoch + 1)  # built by the compiled loop while this rank waits (steploop)
            t_compute += time.perf_counter() - t0
            base = epoch * steps_per_epoch
            if loop is not None:  # the epoch's learning rates at once: the loop's runs take views
                lrs_epoch = schedule.values(base, steps_per_epoch)
            first = start - epoch * steps_per_epoch if epoch == start // steps_per_epoch else 0
            s = first
            while s < steps_per_epoch:
                step = epoch * steps_per_epoch + s
                if loop is not None and not python_only(step):
                    # A run of steps, logged ones included (their loss and batch accuracy are
                    # reduced in the loop and their records written from its sums afterwards): the
                    # fit's first run to its first logged step, later ones to the epoch's end or
                    # run_cap steps (about RUN_SECONDS, so that the log lines of a long epoch come
                    # out as it goes), and any run to the step before a checkpoint or test fault.
                    if run_cap is None:
                        next_log = (step // log_every + 1) * log_every - 1  # the first step >= step that logs
                        end = min(next_log - base + 1, steps_per_epoch)
                    else:
                        end = min(s + run_cap, steps_per_epoch)
                    if ckpt is not None or faults.active:
                        stop = s + 1
                        while stop < end and not python_only(base + stop):
                            stop += 1
                        end = stop
                    t0 = time.perf_counter()
                    done, comm_s, records = loop.run(params, plan, s, end, lrs_epoch[s:end], opt, base, log_every,
                                                     total)
                    t_run = time.perf_counter() - t0
                    t_compute += t_run - comm_s
                    t_comm += comm_s
                    self.steps = step + done
                    self.ctx.beat()
                    counted = s
                    for r in records:  # [correct, counted, loss, weight, ||w||^2, seconds, step of the epoch]
                        sl = int(r[6])
                        samples_since += plan.global_count(counted, sl + 1)
                        counted = sl + 1
                        log_step(base + sl, epoch, sl, float(lrs_epoch[sl]), r, 0.5 * l2 * r[4], t0 + r[5])
                    if counted < s + done:
                        samples_since += plan.global_count(counted, s + done)
                    s += done
                    if s < end:  # the reduced gradient of step s is not finite (loop.red holds its sums)
                        self._raise_diverged(self.steps, plan.rows(s), params)
                    if run_cap is None:  # agreed once (collective; every rank runs the same runs)
                        cap = np.array([RUN_SECONDS * done / max(t_run, 1e-9)])
                        self.comm.Allreduce(MPI.IN_PLACE, cap, op=MPI.MIN)
                        run_cap = max(1, int(min(cap[0], 2**40)))
                    continue
                log_now = logs(step)
                t0 = time.perf_counter()
                rows = plan.rows(s)
                buf[:] = 0.0
                if log_now and n_cls:  # the batch accuracy: the weight of the hits, and of the rows
                    buf[-2] = model.loss_grad_hits(shard, params, rows, grad_sum, buf[P:P + 1])
                    buf[-1] = buf[P + 1] = kernels.rows_weight_sum(sw, rows)
                else:
                    buf[-2] = model.loss_grad(shard, params, rows, grad_sum, log_now)
                    buf[-1] = kernels.rows_weight_sum(sw, rows)
                t1 = time.perf_counter()
                allreduce_sums()
                t2 = time.perf_counter()
                if n_pen >= 0:  # one fused call: bitwise mean_gradient, plus ||grad||^2
                    gnorm2 = kernels.mean_gradient_norm2(grad_sum, 1.0 / buf[-1], params, l2, n_pen, grad)
                else:
                    mean_gradient(grad_sum, buf[-1], params, l2, pen, tmp, grad)  # the objective only when logged
                    gnorm2 = float(np.dot(grad, grad))
                if not math.isfinite(gnorm2):
                    self._raise_diverged(step, rows, params)
                lr = schedule(step)
                opt.step(params, grad, lr=lr)
                t3 = time.perf_counter()
                t_compute += (t1 - t0) + (t3 - t2)
                t_comm += t2 - t1
                samples_since += plan.global_count(s)
                self.steps = step + 1
                if log_now:
                    log_step(step, epoch, s, lr, buf[P:], penalty())
                self._step_done(step + 1, epoch, params, state)
                s += 1
            self.epochs_done = epoch + 1
            t0 = time.perf_counter()
            self._check_replicas(params, opt)
            t_comm += time.perf_counter() - t0
        timers.add("compute", t_compute)
        timers.add("comm", t_comm)
        self._final_checkpoint(self.steps, self.epochs_done, params, state)
        return {"converged": None, "message": f"{cfg.epochs} epochs done", "iterations": self.steps,
                "evaluations": self.steps}

    def _n_pen(self) -> int:
        """The penalised entries as a leading count (every model's: coefficients first), else -1."""
        pen, P = self.pen, self.n_params
        if isinstance(pen, slice) and pen.start in (None, 0) and pen.step in (None, 1) and pen.stop is not None \
                and 0 <= pen.stop <= P:
            return pen.stop
        return -1

    def node_reducer(self):
        """Collective (once): the shared-memory reducer of the mini-batch steps' sums
        (:mod:`.nodereduce`), or None (MPI_Allreduce; ``reduction_reason`` says why).

        Used with ``--reduction auto`` when several ranks share a node and the gradient travels
        as float64 (float32 on the wire is for the network: it keeps MPI_Allreduce). Both step
        loops sum through it, so they still give bitwise the same parameters."""
        if self._reducer is not False:
            return self._reducer
        from . import native

        cfg = self.cfg
        reason = None
        if getattr(cfg, "reduction", "auto") != "auto":
            reason = f"--reduction {cfg.reduction}"
        elif self.ctx.size == 1:
            reason = "one rank"
        elif self.comm_dtype != "float64":
            reason = f"--comm-dtype {self.comm_dtype}"
        elif not isinstance(self.comm, MPI.Comm):  # e.g. a test's wrapper that records calls
            reason = "the communicator is not an mpi4py Comm"
        elif not native.AVAILABLE:
            reason = "MPI symbols not found in mpi4py's module"
        self._reducer = None
        if reason is not None:  # the same on every rank (options, size, build)
            self.reduction_reason = reason
            return None
        from .nodereduce import NodeReducer

        red = NodeReducer.shared(self.comm, self.n_params + _N_TAIL)  # made once per communicator and size
        if not red.available:
            self.reduction_reason = red.why_not
            return None
        if red.max_local_size < 2:
            self.reduction_reason = "one rank per node"
            return None
        self.reduction_reason = None
        self._reducer = red
        return red

    def step_loop(self):
        """Collective (once): the compiled mini-batch loop (:mod:`.steploop`) if every rank can run it, else None.

        All ranks take the same loop, so the same steps go through Python on all of them (its
        logged steps and error paths issue the same collectives). Not compiled here: the
        warm-up compiles it beside the kernels (mpidml.train.warm_up_kernels), or
        :meth:`_fit_minibatch` does, on one rank first. The reason for the Python loop, if
        any, goes into summary.json.
        """
        if self._step_loop is not False:
            return self._step_loop
        from .steploop import StepLoop, why_not

        reason = why_not(self.model, self.shard, self.cfg, self._n_pen())
        if reason is None and not isinstance(self.comm, MPI.Comm):  # e.g. a test's wrapper that records calls
            reason = "the communicator is not an mpi4py Comm"
        every = self.ctx.allreduce_scalar(0.0 if reason else 1.0, op="min") > 0
        self._step_loop = None
        if not every:
            self.step_loop_reason = reason or "another rank cannot run it"
            return None
        loop = StepLoop(self.model, self.shard, self.comm, self.n_params, _N_TAIL, self.comm_dtype, self.l2,
                        self._n_pen(), reducer=self.node_reducer())
        if self.ctx.watchdog is not None:
            self.ctx.watchdog.watch(loop.progress)
        self.step_loop_reason = None
        self._step_loop = loop
        return loop

    def _raise_diverged(self, step, rows, params):
        """The reduced gradient of 0-based ``step`` is not finite: raise DivergedError with the batch's loss.

        Every rank sees the same reduced gradient, so all get here together: one more
        collective to report the batch's loss in the error.
        """
        buf = self.buf
        buf[:] = 0.0
        buf[-2] = self.model.loss_grad(self.shard, params, rows, self.grad_sum, True)
        buf[-1] = kernels.rows_weight_sum(self.shard.sw, rows)
        self._allreduce_sums()
        raise _diverged(step + 1, "loss", self._finish(params, self.grad), self.checkpointer)

    def _check_replicas(self, params, opt) -> None:
        """Collective: make sure every rank holds bitwise the same parameters.

        Allreduce of (checksum, -checksum) with MAX: equal on all ranks iff the
        max and min checksums agree. If not, the root's parameters and optimizer
        state are broadcast (counted in summary.json as replica_resyncs).
        """
        if self.ctx.size == 1:
            return
        c = np.array([_checksum(params)], dtype=np.int64)
        both = np.array([c[0], -c[0]], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
        if both[0] == -both[1]:
            return
        self.replica_resyncs += 1
        self.comm.Bcast(params, root=0)
        state = opt.state_dict()
        for value in state.values():
            if isinstance(value, np.ndarray):
                self.comm.Bcast(value, root=0)
        opt.load_state_dict(state)
        self.reporter.message(f"warning: replicas differed after epoch {self.epochs_done}; re-synchronised from rank 0")


_N_TAIL = 4  # scalars after the gradient sum in the reduced buffer: correct, counted, loss_sum, weight_sum


def mean_gradient(grad_sum, weight_sum, params, l2, pen, tmp, out) -> None:
    """The objective's gradient from reduced sums: ``out = grad_sum / weight_sum + l2 * params[pen]``.

    All arrays float64 of one length (``tmp`` is scratch); ``pen`` is the slice of the
    penalised entries. Elementwise, so it applies unchanged to a contiguous slice of the
    parameter vector with the matching part of ``pen`` (the parameter server's shards).
    """
    np.multiply(grad_sum, 1.0 / weight_sum, out=out)
    np.multiply(params[pen], l2, out=tmp[pen])
    out[pen] += tmp[pen]


def l2_penalty(params, l2, pen) -> float:
    """``(l2/2) * ||params[pen]||^2``, the penalty term of the objective."""
    wp = params[pen]
    return 0.5 * l2 * float(np.dot(wp, wp))


def _checksum(arr: np.ndarray) -> int:
    """Order-sensitive 63-bit checksum of the bits of a float64 array."""
    bits = arr.view(np.uint64)
    mix = bits * np.uint64(0x9E3779B97F4A7C15) + np.arange(bits.size, dtype=np.uint64)
    return int(np.bitwise_xor.reduce(mix) >> np.uint64(1)) if bits.size else 0


def epoch_permutation(n_rows: int, seed: int, epoch: int, shuffle: str = "global") -> np.ndarray:
    """The global row order of one epoch (row at each position), the same on every rank.

    O(N): for references and tests. Training never builds it: :class:`EpochPlan` evaluates the
    same order for this rank's rows only.
    """
    return kernels.epoch_order(n_rows, seed, epoch, shuffle == "none")


class EpochPlan:
    """This rank's rows of each mini-batch step of an epoch, for one global order of all N rows.

    Step s of an epoch takes the rows at positions ``[s*B, (s+1)*B)`` of the epoch's order
    (:func:`epoch_permutation`); each rank finds which of its own rows those are by evaluating
    the keyed bijection for its rows only (:func:`mpidml.kernels.epoch_batches`): O(N/P) per
    rank and epoch instead of drawing the whole permutation on every rank. Buffers are
    allocated once. ``rows(s)`` is a view: local row offsets, ascending.

    The next epoch's plan can be built ahead into a second buffer (:meth:`begin_next`): the
    compiled step loop advances it while the rank waits for a slower one
    (:meth:`next_args`), and :meth:`build` finishes what is left and swaps the two. Every
    result is the same as a build from scratch (:func:`mpidml.kernels.shuffle.plan_advance`).
    """

    def __init__(self, shard, n_rows: int, batch: int, seed: int, shuffle: str):
        self.n_rows, self.batch, self.seed = int(n_rows), int(batch), int(seed)
        self.identity = shuffle == "none"
        self.steps = -(-self.n_rows // self.batch)
        gids = getattr(shard, "gids", None)  # --shard stratified|shuffled: a sorted set of global rows
        self.gids = np.ascontiguousarray(gids, dtype=np.int64).reshape(-1) if gids is not None \
            else np.empty(0, dtype=np.int64)
        if not self.gids.flags.writeable:  # one array type for the compiled step loop's next_args
            self.gids = self.gids.copy()
        self.lo, self.n_local = int(shard.lo), int(shard.n_local)
        self.bits = kernels.domain_bits(self.n_rows)
        # each row's step: int32 halves that scratch's memory traffic (the int64 variant is a
        # second compiled specialisation, for more than 2^31 - 1 steps per epoch only)
        self.step_of = np.empty(self.n_local, dtype=np.int32 if self.steps < 2**31 else np.int64)
        self.order = np.empty(self.n_local, dtype=np.int64)
        self.starts = np.zeros(self.steps + 1, dtype=np.int64)
        self.raw, self.walk = kernels.plan_scratch()
        self.epoch = -1
        # the next epoch's plan, built ahead (begin_next); its buffers allocated on first use
        self.next_epoch = -1
        self._next_order = self._next_starts = None
        self._next_keys = np.zeros(N_ROUNDS, dtype=np.uint64)
        self._next_state = plan_state()
        self._idle = (np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64))  # next_args' before begin_next

    def build(self, epoch: int) -> None:
        """Make ``rows(s)`` the rows of ``epoch``'s steps: nothing if they are already, the rest
        of the build :meth:`begin_next` started for that epoch, or a whole build."""
        if epoch == self.epoch:
            return
        if epoch == self.next_epoch:
            self._advance_next(2**62)
            self.order, self._next_order = self._next_order, self.order
            self.starts, self._next_starts = self._next_starts, self.starts
            self.next_epoch = -1
        else:
            self._next_state[0] = PLAN_DONE  # a build under way shares step_of: dropped
            self.next_epoch = -1
            kernels.epoch_batches(self.gids, self.lo, self.n_local, self.n_rows, self.batch, self.bits,
                                  kernels.shuffle_keys(self.seed, epoch), self.identity, self.step_of,
                                  self.order, self.starts, self.raw, self.walk)
        self.epoch = epoch

    def begin_next(self, epoch: int) -> None:
        """Start building ``epoch``'s plan into the second buffer (the current one stays usable):
        :meth:`next_args` lets the compiled step loop go on with it, :meth:`build` finishes it.
        The second buffer costs 8 bytes per local row (order) and 8 per step."""
        if self._next_order is None:
            self._next_order = np.empty_like(self.order)
            self._next_starts = np.zeros_like(self.starts)
        self._next_keys[:] = kernels.shuffle_keys(self.seed, epoch)
        plan_begin(self._next_starts, self._next_state)
        self.next_epoch = epoch

    def _advance_next(self, budget: int) -> bool:
        return plan_advance(*self.next_args()[:13], self._next_state, budget)

    def next_args(self) -> tuple:
        """:func:`mpidml.kernels.shuffle.plan_advance`'s arguments (all but the budget) for the build
        :meth:`begin_next` started; its state is PLAN_DONE when none is under way or it is done."""
        order, starts = (self._next_order, self._next_starts) if self._next_order is not None else self._idle
        return (self.gids, self.lo, self.n_local, self.n_rows, self.batch, self.bits, self._next_keys, self.identity,
                self.step_of, order, starts, self.raw, self.walk, self._next_state)

    def rows(self, s: int) -> np.ndarray:
        return self.order[self.starts[s]:self.starts[s + 1]]

    def global_count(self, s: int, s_end: int | None = None) -> int:
        """Rows of step s over all ranks (B, or fewer in an epoch's last step); with ``s_end``,
        of steps s .. s_end-1 together (a run of the compiled loop: no per-step sum)."""
        s_end = s + 1 if s_end is None else s_end
        return min(s_end * self.batch, self.n_rows) - s * self.batch


# Seconds of steps in one call of the compiled step loop (after a fit's first, which ends at its
# first logged step): the log records of its logged steps are written when it returns, so
# this bounds how late a log line comes out. One call per epoch of a small epoch instead of one
# per logged step (~10 per epoch): ~30 us of Python and call overhead less per logged step.
RUN_SECONDS = 1.0


def _diverged(step, what, value, checkpointer=None):
    last = checkpointer.last_path if checkpointer is not None and checkpointer.last_path else "none"
    return DivergedError(f"diverged at step {step} ({what}={value}); last good checkpoint: {last} "
                         "(try a smaller --lr or a larger --l2)")
