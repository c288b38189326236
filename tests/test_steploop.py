"""Pieces of the compiled step loop that need no second rank: MPI calls from Numba, the watchdog's
step counter, and when the loop is (not) used. The loop's results: tests/test_steploop_mpi.py."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mpi4py import MPI
from numba import njit

from mpidml.config import TrainConfig
from mpidml.models import make_model
from mpidml.parallel import native
from mpidml.parallel.steploop import why_not

from helpers import make_problem, shard_of


@njit(cache=False)
def _reduce(send, recv, count, dtype_h, op_h, comm_h):
    return native.mpi_allreduce(send, recv, count, dtype_h, op_h, comm_h)


@njit(cache=False)
def _wtime():
    return native.mpi_wtime()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_allreduce_from_numba_sums_like_mpi4py(dtype):
    comm = MPI.COMM_SELF.Dup()
    send = (np.arange(7) * 1.5 - 3).astype(dtype)
    recv = np.zeros_like(send)
    rc = _reduce(send, recv, send.size, native.dtype_handle(dtype), native.handle(MPI.MAX), native.handle(comm))
    ref = np.zeros_like(send)
    comm.Allreduce(send, ref, op=MPI.MAX)
    assert rc == 0 and np.array_equal(recv, ref) and np.array_equal(recv, send)
    # only `count` values travel
    recv[:] = -1
    assert _reduce(send, recv, 3, native.dtype_handle(dtype), native.handle(MPI.SUM), native.handle(comm)) == 0
    assert np.array_equal(recv[:3], send[:3]) and np.all(recv[3:] == -1)
    comm.Free()


def test_allreduce_from_numba_returns_the_mpi_error_code():
    """mpi4py's communicators return errors (MPI_ERRORS_RETURN): a bad call gives a code, no abort."""
    comm = MPI.COMM_SELF.Dup()
    x = np.zeros(4)
    rc = _reduce(x, x.copy(), -1, native.dtype_handle(np.float64), native.handle(MPI.SUM), native.handle(comm))
    assert rc != 0
    assert MPI.Get_error_class(rc) == MPI.ERR_COUNT
    comm.Free()


def test_wtime_from_numba_is_mpi_wtime():
    a = MPI.Wtime()
    b = _wtime()
    c = MPI.Wtime()
    assert a <= b <= c


def test_dtype_handles():
    assert native.dtype_handle(np.float64) == native.handle(MPI.DOUBLE)
    assert native.dtype_handle(np.float32) == native.handle(MPI.FLOAT)
    assert native.AVAILABLE


WATCHDOG = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    from mpidml.comm import Watchdog
    progress = np.zeros(1, dtype=np.int64)
    dog = Watchdog(0.6, 0)
    if sys.argv[1] == "counting":
        dog.watch(progress)
        def count():  # what the compiled loop does: +1 per step, no beat() call
            for _ in range(25):
                progress[0] += 1
                time.sleep(0.1)
        t = threading.Thread(target=count)
        t.start(); t.join()
    else:
        time.sleep(2.5)
    dog.stop()
    print("survived")
""")


@pytest.mark.parametrize("mode", ["counting", "silent"])
def test_watchdog_counts_compiled_steps_as_beats(mode):
    """A compiled run of steps calls no beat(); its step counter keeps the watchdog quiet (2.5 s with
    a 0.6 s timeout), and without it the watchdog aborts."""
    proc = subprocess.run([sys.executable, "-c", WATCHDOG, mode], capture_output=True, text=True, timeout=60)
    if mode == "counting":
        assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr
    else:
        assert proc.returncode != 0 and "no training step completed" in proc.stderr


def _cfg(**kw):
    base = dict(data="<memory>", out="<none>", progress="none", model="logistic", optimizer="sgd")
    return TrainConfig(**{**base, **kw})


def test_which_runs_use_the_compiled_loop():
    X, y = make_problem("logistic", n=40, d=5)
    shard = shard_of(X, y, 0, 1)
    logistic, linear = make_model("logistic", 5, 2), make_model("linear", 5, 2)
    assert why_not(logistic, shard, _cfg(), 5) is None
    assert why_not(logistic, shard, _cfg(optimizer="adam"), 5) is None
    assert why_not(linear, shard, _cfg(model="linear"), 5) is None
    assert why_not(logistic, shard_of(X.astype(np.float32), y, 0, 1), _cfg(), 5) is None
    assert why_not(logistic, shard, _cfg(step_loop="python"), 5) == "--step-loop python"
    assert why_not(logistic, shard, _cfg(optimizer="lbfgs"), 5) == "optimizer lbfgs"
    Xs, ys = make_problem("softmax", n=40, d=5, k=3)
    assert why_not(make_model("softmax", 5, 3), shard_of(Xs, ys, 0, 1), _cfg(model="softmax"), 15) is None
    assert "labels" in why_not(make_model("softmax", 5, 3), shard, _cfg(model="softmax"), 15)  # float64 labels
    assert "model mlp" in why_not(make_model("mlp", 5, 3, "4"), shard_of(Xs, ys, 0, 1), _cfg(model="mlp"), 20)
    from sparse_helpers import csr_shard_of, sparse_problem

    A, ya = sparse_problem("logistic", n=40, d=30)
    assert why_not(logistic, csr_shard_of(A, ya, 0, 1), _cfg(), 30) is None
    fortran = shard_of(X, y, 0, 1)
    fortran.X = np.asfortranarray(fortran.X)
    assert "C-contiguous" in why_not(logistic, fortran, _cfg(), 5)
    assert why_not(logistic, shard, _cfg(), -1) == "penalised entries not a leading block"

    class Wrapped:  # e.g. a benchmark's timing wrapper: not the model class itself
        def __getattr__(self, name):
            return getattr(logistic, name)

    assert "model" in why_not(Wrapped(), shard, _cfg(), 5)


def test_step_loop_option_is_validated():
    from mpidml.errors import ConfigError

    with pytest.raises(ConfigError, match="step_loop"):
        _cfg(step_loop="fast").validate()
    assert "step_loop" in TrainConfig.RUN_ONLY  # the same model either way: not in the config hash


def test_cache_key_covers_the_compiled_loop_sources():
    """The Numba cache directory is keyed by the kernels' sources and the loop's (which inlines
    and links kernels), so editing either never loads stale machine code."""
    from mpidml import jitcache

    root = os.path.dirname(os.path.abspath(jitcache.__file__))
    for parts in jitcache._COMPILED_ELSEWHERE:
        assert os.path.exists(os.path.join(root, *parts)), parts


@pytest.mark.parametrize("wire", ["float64", "float32"])
def test_step_loop_reduces_in_the_wire_dtype(wire):
    from mpidml.parallel.steploop import StepLoop

    X, y = make_problem("logistic", n=40, d=5)
    loop = StepLoop(make_model("logistic", 5, 2), shard_of(X, y, 0, 1), MPI.COMM_SELF, 6, 4, wire, 1e-4, 5)
    dtype_h = loop.handles[0]
    if wire == "float32":
        assert dtype_h == native.handle(MPI.FLOAT) and loop.send32.size == loop.recv32.size == 10
    else:
        assert dtype_h == native.handle(MPI.DOUBLE) and loop.send32.size == 0


def test_step_loop_refuses_bad_learning_rates_before_any_step():
    """The loop checks the run's learning rates itself (no NumPy call per run): a NaN or a
    negative one raises ValueError and no step is taken."""
    from mpidml.optim import SGD
    from mpidml.parallel.allreduce import EpochPlan
    from mpidml.parallel.steploop import StepLoop

    X, y = make_problem("logistic", n=40, d=5)
    shard = shard_of(X, y, 0, 1)
    model = make_model("logistic", 5, 2)
    loop = StepLoop(model, shard, MPI.COMM_SELF, 6, 4, "float64", 1e-4, 5)
    plan = EpochPlan(shard, 40, 8, 0, "global")
    plan.build(0)
    params = model.init_params(0)
    before = params.copy()
    for bad in (np.nan, -0.1, np.inf):
        with pytest.raises(ValueError, match="finite and >= 0"):
            loop.run(params, plan, 0, 3, np.array([0.1, bad, 0.1]), SGD(6, 0.1))
        assert np.array_equal(params, before) and int(loop.progress[0]) == 0
    with pytest.raises(ValueError, match="3 learning rates"):
        loop.run(params, plan, 0, 3, [0.1, 0.1], SGD(6, 0.1))
    assert loop.run(params, plan, 0, 3, [0.1, 0.1, 0.1], SGD(6, 0.1))[0] == 3
    assert not np.array_equal(params, before)


def _linear_loop(n=400, d=5, batch=20, zero_column=None):
    from mpidml.parallel.allreduce import EpochPlan
    from mpidml.parallel.steploop import StepLoop

    X, y = make_problem("linear", n=n, d=d, seed=4)
    if zero_column is not None:
        X[:, zero_column] = 0.0
    shard = shard_of(X, y, 0, 1)
    model = make_model("linear", d)
    plan = EpochPlan(shard, n, batch, 0, "global")
    plan.build(0)
    return X, y, model, plan, StepLoop(model, shard, MPI.COMM_SELF, d + 1, 4, "float64", 1e-3, d)


def test_step_loop_logs_several_steps_in_one_run():
    """One run through several logged steps: a record per logged step, in order, each the sums
    of its own step: the loss sum at the parameters the step started from (NumPy, from a
    step-by-step replay of the same loop), its batch's weight, the penalty after its update."""
    from mpidml.optim import SGD

    X, y, model, plan, loop = _linear_loop()
    steps, log_every, lr = 20, 3, 0.05
    params = model.init_params(0)
    start = params.copy()
    done, _, records = loop.run(params, plan, 0, steps, np.full(steps, lr), SGD(6, lr), base=0, log_every=log_every,
                                total=steps)
    assert done == steps
    logged = [g for g in range(steps) if (g + 1) % log_every == 0 or g + 1 == steps]  # 2, 5, ..., 17, 19
    assert records.shape == (len(logged), 7) and records[:, 6].tolist() == logged  # each row names its step
    # replay one step at a time (runs of one step, nothing logged), keeping the parameters
    replay, before = start.copy(), {}
    opt = SGD(6, lr)
    for g in range(steps):
        before[g] = replay.copy()
        assert loop.run(replay, plan, g, g + 1, [lr], opt)[0] == 1
        if g in logged:
            r = records[logged.index(g)]
            rows = plan.rows(g)
            z = X[rows] @ before[g][:5] + before[g][5]
            assert r[2] == pytest.approx(0.5 * np.sum((z - y[rows]) ** 2), rel=1e-12)
            assert r[3] == len(rows) and r[0] == r[1] == 0.0  # weight = rows (unweighted); no accuracy
            assert r[4] == pytest.approx(np.dot(replay[:5], replay[:5]), rel=1e-12)
    assert np.array_equal(params, replay)  # the same steps either way
    t = records[:, 5]
    assert np.all(t >= 0) and np.all(np.diff(t) >= 0)


def test_step_loop_stops_after_a_logged_step_with_a_non_finite_objective():
    """A logged step whose objective is not finite ends the run right after it, its record
    last (the trainer raises there, as the Python loop does); without logging the same steps
    go on. Here the penalty overflows and nothing else: w_0 = 1e155 on a feature that is zero
    everywhere, so the loss and the gradient (l2 w_0 = 1e152, squared 1e304) stay finite while
    ||w||^2 = 1e310; lr 0 keeps every step the same."""
    from mpidml.optim import SGD

    X, y, model, plan, loop = _linear_loop(zero_column=0)
    steps = 20
    params = model.init_params(0)
    params[0] = 1e155
    quiet = params.copy()
    done, _, records = loop.run(params, plan, 0, steps, np.zeros(steps), SGD(6, 0.1), base=0, log_every=5,
                                total=steps)
    assert done == 5 and records.shape == (1, 7) and records[0, 6] == 4  # the first logged step: g = 4
    assert np.isfinite(records[0, 2]) and records[0, 4] == np.inf
    assert loop.run(quiet, plan, 0, steps, np.zeros(steps), SGD(6, 0.1))[0] == steps
