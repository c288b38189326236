"""Alternating least squares for matrix factorization, exact on any number of ranks.

With the item block fixed, the objective of mpidml.models.mf separates into one
ridge regression per user; with the user block fixed, one per item. A half-step
solves all of them exactly:

1. every rank adds the terms of ITS ratings to the normal equations
   ``A_e, g_e`` of every entity e (kernels/mf.py, one pass, no communication);
   a user's ratings may live on several ranks;
2. one ``Reduce_scatter`` sums the systems over ranks and leaves each rank the
   summed systems of a balanced contiguous block of entities (with the
   ``Allgatherv`` of step 4 this is an Allreduce split in its two halves, so no
   rank solves what another solves);
3. each rank solves its block, ``(A_e + N l2 I) theta_e = g_e`` (Cholesky);
4. one ``Allgatherv`` gives every rank the whole new block.

Every rank ends each half-step with bitwise the same parameters (each entity
is solved once, then copied), whatever MPI's reduction order. The systems are
sums over ranks, so P ranks differ from one rank only by rounding in those sums
(the tests check 1 vs 3 ranks to 1e-10). A user sweep then an item sweep is
one iteration; every iteration computes the objective (Reduce to rank 0, then
Bcast of its value, so every rank takes the same stopping decision) and stops
when its relative decrease is at most ``tol`` or after ``max_iter`` iterations.
Each half-step minimises f exactly over its block, so f never increases.

Memory: each rank holds one system per user and per item, (k+1)(k+4)/2 float64
each (A's packed upper triangle and g; for 10^6 users and k = 10: 616 MB), and
the Reduce_scatter moves that many per entity; the buffers are allocated once.
"""

from __future__ import annotations

import math
import time

import numpy as np
from mpi4py import MPI

from ..data.partition import all_shard_bounds
from ..errors import DivergedError
from ..kernels import mf as mfk

__all__ = ["ALSTrainer"]


class ALSTrainer:
    """ALS on this rank's ratings ``shard`` for ``model`` (an MFModel).

    ``mu`` is the global mean rating and ``n_total`` the global number of
    ratings N (both identical on every rank); ``l2`` the penalty of the
    objective. ``reporter`` (optional) gets one metrics line per iteration.
    """

    def __init__(self, ctx, model, shard, *, l2: float, mu: float, n_total: int, max_iter: int = 20,
                 tol: float = 1e-8, reporter=None):
        self.ctx, self.model, self.shard, self.reporter = ctx, model, shard, reporter
        self.comm = ctx.comm
        self.l2, self.mu, self.n_total = float(l2), float(mu), int(n_total)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.ridge = self.n_total * self.l2  # (1/N) loss + (l2/2)||theta||^2, times N
        k1 = model.rank + 1
        self.k1 = k1
        self.width = (k1 * (k1 + 1)) // 2 + k1  # packed upper triangle of A + right-hand side g
        self.side = {}
        for which, n_ent in (("users", model.n_users), ("items", model.n_items)):
            offsets = all_shard_bounds(n_ent, ctx.size)
            lo, hi = int(offsets[ctx.rank]), int(offsets[ctx.rank + 1])
            self.side[which] = {
                "systems": np.zeros((n_ent, self.width)),
                "mine": np.zeros((hi - lo, self.width)),  # summed systems of my entities
                "solved": np.zeros((hi - lo, k1)),
                "lo": lo, "hi": hi,
                "sys_counts": np.diff(offsets) * self.width,
                "par_counts": np.diff(offsets) * k1,
                "par_displs": offsets[:-1] * k1,
            }
        self.failed_solves = 0
        self.iterations = 0
        self.history: list[float] = []  # objective after each iteration (the start first)

    def half_step(self, params: np.ndarray, which: str) -> None:
        """Replace the ``which`` ('users' or 'items') block of ``params`` by its exact minimiser."""
        s = self.side[which]
        ublock, iblock = self.model.blocks(params)
        t0 = time.perf_counter()
        s["systems"].fill(0.0)
        if which == "users":
            mfk.mf_normal_equations(self.shard.user, self.shard.item, self.shard.rating, self.mu, iblock,
                                    s["systems"])
            target = ublock
        else:
            mfk.mf_normal_equations(self.shard.item, self.shard.user, self.shard.rating, self.mu, ublock,
                                    s["systems"])
            target = iblock
        t1 = time.perf_counter()
        self.comm.Reduce_scatter([s["systems"], MPI.DOUBLE], [s["mine"], MPI.DOUBLE],
                                 recvcounts=s["sys_counts"].tolist(), op=MPI.SUM)
        t2 = time.perf_counter()
        s["solved"][...] = target[s["lo"]:s["hi"]]  # rows whose solve fails keep their value
        self.failed_solves += int(mfk.mf_solve_systems(s["mine"], self.ridge, s["solved"]))
        t3 = time.perf_counter()
        self.comm.Allgatherv([s["solved"], MPI.DOUBLE],
                             [target, s["par_counts"].tolist(), s["par_displs"].tolist(), MPI.DOUBLE])
        t4 = time.perf_counter()
        self.ctx.timers.add("compute", (t1 - t0) + (t3 - t2))
        self.ctx.timers.add("comm", (t2 - t1) + (t4 - t3))

    def objective(self, params: np.ndarray) -> tuple[float, float, int]:
        """Collective: (f, loss sum over all ratings, failed Cholesky solves on all ranks so far).

        Reduced to rank 0 and broadcast, so every rank gets bitwise the same values.
        """
        t0 = time.perf_counter()
        buf = np.array([self.model.loss_sum(self.shard, params, self.mu), float(self.failed_solves)])
        t1 = time.perf_counter()
        total = np.zeros(2)
        self.comm.Reduce([buf, MPI.DOUBLE], [total, MPI.DOUBLE], op=MPI.SUM, root=0)
        self.comm.Bcast([total, MPI.DOUBLE], root=0)
        self.ctx.timers.add("compute", t1 - t0)
        self.ctx.timers.add("comm", time.perf_counter() - t1)
        loss_sum = float(total[0])
        return loss_sum / self.n_total + self.model.penalty(params, self.l2), loss_sum, int(total[1])

    def fit(self, params: np.ndarray) -> dict:
        """Run ALS in place on ``params`` (identical on every rank); returns a fit summary."""
        f_prev, _, _ = self.objective(params)
        self.history = [f_prev]
        converged, message = False, f"reached --max-iter {self.max_iter}"
        for it in range(1, self.max_iter + 1):
            self.half_step(params, "users")
            self.half_step(params, "items")
            f, loss_sum, failed = self.objective(params)
            self.iterations = it
            self.history.append(f)
            self.ctx.beat(f"ALS iteration {it}")
            if failed or not math.isfinite(f):
                raise DivergedError(f"ALS diverged at iteration {it} (objective={f}, {failed} singular "
                                    "systems); check the ratings for huge values")
            if self.reporter is not None:
                self.reporter.log({"iter": it, "loss": f, "objective": f,
                                   "train_rmse": math.sqrt(2.0 * loss_sum / self.n_total)})
            decrease = f_prev - f
            f_prev = f
            if decrease <= self.tol * max(abs(f), 1e-300):
                converged, message = True, f"relative decrease of f <= --tol {self.tol:g}"
                break
        return {"converged": converged, "message": message, "iterations": self.iterations,
                "objective": f_prev}
