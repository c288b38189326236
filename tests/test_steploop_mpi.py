"""The compiled mini-batch loop (mpidml.parallel.steploop) gives bitwise the Python loop's result.

Run under mpirun -n 1, 2, 3 (uneven shards: N = 1003). Each case trains twice on all ranks, with
``--step-loop auto`` (the compiled loop, logged steps included) and ``--step-loop python``
(every step in Python, the loop the other tests check against NumPy and the one-rank result),
and requires the same bits and the same log records, plus that the compiled loop really ran
every step.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context
from mpidml.errors import DivergedError

from helpers import make_problem, train

pytestmark = pytest.mark.mpi

# log_every: the default, ~10 lines per epoch, logs every step of these small epochs
CASES = {
    "logistic-sgd": ("logistic", dict(optimizer="sgd", lr=0.2, batch_size=64, epochs=3, log_every=7)),
    "logistic-momentum-f32wire": ("logistic", dict(optimizer="sgd", lr=0.1, batch_size=100, epochs=3, momentum=0.9,
                                                   comm_dtype="float32", log_every=5)),
    "linear-nesterov-step": ("linear", dict(optimizer="sgd", lr=0.05, batch_size=50, epochs=2, momentum=0.9,
                                            nesterov=True, lr_schedule="step", log_every=6)),
    "logistic-adam-cosine": ("logistic", dict(optimizer="adam", lr=0.01, batch_size=97, epochs=4,
                                              lr_schedule="cosine", log_every=4)),
    "linear-adam-f32wire-noshuffle": ("linear", dict(optimizer="adam", lr=0.02, batch_size=128, epochs=2,
                                                     comm_dtype="float32", shuffle="none", log_every=5)),
    "logistic-logevery3": ("logistic", dict(optimizer="sgd", lr=0.2, batch_size=40, epochs=2, log_every=3,
                                            momentum=0.5)),
    "logistic-momentum-mpireduce": ("logistic", dict(optimizer="sgd", lr=0.1, batch_size=100, epochs=2, momentum=0.9,
                                                     reduction="mpi", log_every=5)),
    "softmax-sgd": ("softmax", dict(optimizer="sgd", lr=0.2, batch_size=64, epochs=2, momentum=0.9, log_every=7)),
    "softmax-adam-f32wire": ("softmax", dict(optimizer="adam", lr=0.02, batch_size=100, epochs=2,
                                             comm_dtype="float32", log_every=4)),
}


def _logged(monkeypatch):
    """Every record the trainers log (Reporter.log), in a list, without the timing field."""
    from mpidml.metrics import Reporter

    records = []
    monkeypatch.setattr(Reporter, "log", lambda self, rec, at=None: records.append(
        {k: v for k, v in rec.items() if k != "samples_per_s"}))
    return records


def _both(kind, options, X, y, sw=None, monkeypatch=None):
    """Train with the compiled loop and with --step-loop python; with ``monkeypatch``, the
    trainers' log records are attached as ``trainer.logged``."""
    if monkeypatch is not None:
        records = _logged(monkeypatch)
        got, trainer, ref, ref_trainer = _both(kind, options, X, y, sw)
        n = len(records) // 2
        trainer.logged, ref_trainer.logged = records[:n], records[n:]
        return got, trainer, ref, ref_trainer
    ctx = Context(MPI.COMM_WORLD)
    if hasattr(X, "indptr"):  # scipy CSR: the sparse shards and kernels
        from sparse_helpers import csr_shard_of, train_shard

        shard = csr_shard_of(X, y, ctx.rank, ctx.size, sw)
        n_classes, w = int(y.max()) + 1 if kind == "softmax" else 2, float(len(y) if sw is None else sw.sum())
        got, trainer = train_shard(ctx, shard, n_classes, w, model=kind, l2=1e-3, seed=7, **options)
        ref, ref_trainer = train_shard(ctx, shard, n_classes, w, model=kind, l2=1e-3, seed=7, step_loop="python",
                                       **options)
        return got, trainer, ref, ref_trainer
    got, trainer = train(ctx, X, y, sw=sw, model=kind, l2=1e-3, seed=7, **options)
    ref, ref_trainer = train(ctx, X, y, sw=sw, model=kind, l2=1e-3, seed=7, step_loop="python", **options)
    return got, trainer, ref, ref_trainer


def _problem(name, x_dtype):
    kind, options = CASES[name]
    if x_dtype.startswith("csr"):
        from sparse_helpers import sparse_problem

        A, y = sparse_problem("softmax" if kind == "softmax" else "logistic", n=1003, d=300, k=4, seed=3)
        if kind == "linear":
            y = y + 0.1 * np.random.default_rng(2).standard_normal(len(y))
        A.data = A.data.astype(x_dtype.split("-")[1])
        return kind, options, A, y
    X, y = make_problem(kind, n=1003, d=7, k=4, seed=3)
    return kind, options, X.astype(x_dtype), y


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("x_dtype", ["float64", "float32", "csr-float64", "csr-float32"])
def test_compiled_loop_equals_python_loop_bitwise(name, weighted, x_dtype, monkeypatch):
    kind, options, X, y = _problem(name, x_dtype)
    sw = np.random.default_rng(5).uniform(0.1, 3.0, len(y)) if weighted else None
    got, trainer, ref, ref_trainer = _both(kind, options, X, y, sw, monkeypatch)
    assert trainer.summary_section()["step_loop"]["loop"] == "compiled"
    # several ranks, float64 sums: both loops sum through the node's shared memory (else MPI)
    shm = MPI.COMM_WORLD.size > 1 and options.get("comm_dtype", "float64") == "float64" \
        and options.get("reduction", "auto") == "auto"
    for t in (trainer, ref_trainer):
        assert t.summary_section()["comm"]["reduction"] == ("shared memory" if shm else "mpi")
    assert ref_trainer.summary_section()["step_loop"] == {"loop": "python", "python_because": "--step-loop python"}
    loop = trainer._step_loop
    # the compiled loop ran and counted its steps (all of them here: see below)
    assert loop.seconds["steps"] >= 0.5 * trainer.steps and int(loop.progress[0]) == loop.seconds["steps"]
    assert trainer.steps == ref_trainer.steps
    assert np.array_equal(got, ref), f"max |diff| {np.max(np.abs(got - ref))}"
    # the logged steps ran in the compiled loop too (all steps did: no checkpoints here), and
    # their records (loss, batch accuracy, lr, step, epoch) are the Python loop's, bit for bit
    assert loop.seconds["steps"] == trainer.steps
    assert len(trainer.logged) == len(ref_trainer.logged) >= trainer.steps // options["log_every"]
    assert trainer.logged == ref_trainer.logged
    assert all(("accuracy" in r) == (kind != "linear") for r in trainer.logged)
    # ... and the replicas are bitwise identical on every rank
    world = MPI.COMM_WORLD
    gathered = world.allgather(got.tobytes())
    assert all(g == gathered[0] for g in gathered)


@pytest.mark.parametrize("run_seconds", [None, 0.0])
def test_compiled_runs_span_logged_steps(run_seconds, monkeypatch):
    """After a fit's first run (to its first logged step) a run of the compiled loop goes to
    the epoch's end, through the logged steps, or to RUN_SECONDS of steps (0: one step per
    run); either way the parameters and log records are the Python loop's, bit for bit."""
    from mpidml.parallel import allreduce
    from mpidml.parallel.steploop import StepLoop

    if run_seconds is not None:
        monkeypatch.setattr(allreduce, "RUN_SECONDS", run_seconds)
    calls = []
    run = StepLoop.run
    monkeypatch.setattr(StepLoop, "run", lambda self, *a, **kw: calls.append(a[2:4]) or run(self, *a, **kw))
    X, y = make_problem("logistic", n=1003, d=7, seed=3)
    options = dict(optimizer="sgd", lr=0.2, batch_size=64, epochs=3, momentum=0.9, log_every=5)
    got, trainer, ref, ref_trainer = _both("logistic", options, X, y, monkeypatch=monkeypatch)
    assert np.array_equal(got, ref) and trainer.logged == ref_trainer.logged
    assert len(trainer.logged) == 48 // 5 + 1  # 16 steps per epoch, 3 epochs: steps 5, 10, ..., 45 and 48
    if run_seconds is None:  # [0, 5) to the first logged step, [5, 16), then one run per epoch
        assert calls == [(0, 5), (5, 16), (0, 16), (0, 16)]
    else:
        assert calls[0] == (0, 5) and len(calls) == 1 + 43 and all(b - a == 1 for a, b in calls[1:])


def test_log_records_carry_their_steps_time(tmp_path, monkeypatch):
    """Records written after a compiled run returns carry the time their step ended (Reporter.log's
    ``at``, from the loop's MPI_Wtime), not the moment they were written: before it returned,
    in step order; and metrics.jsonl's "time" is that moment."""
    import json
    import time

    from mpidml.config import TrainConfig
    from mpidml.metrics import Reporter
    from mpidml.models import make_model
    from mpidml.parallel import AllreduceTrainer

    from helpers import shard_of

    seen = []
    log = Reporter.log
    monkeypatch.setattr(Reporter, "log", lambda self, rec, at=None: (seen.append((at, time.perf_counter())),
                                                                    log(self, rec, at=at)))
    world = MPI.COMM_WORLD
    X, y = make_problem("logistic", n=1003, d=7, seed=3)
    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", model="logistic", optimizer="sgd", lr=0.2,
                      batch_size=64, epochs=3, l2=1e-3, seed=7, log_every=5)
    model = make_model("logistic", 7, 2)
    reporter = Reporter(str(tmp_path) if world.rank == 0 else None, mode="none")  # rank 0 writes metrics.jsonl
    trainer = AllreduceTrainer(Context(world), model, shard_of(X, y, world.rank, world.size), cfg, reporter,
                               float(len(X)))
    trainer.fit(model.init_params(7))
    reporter.close()
    assert trainer.summary_section()["step_loop"]["loop"] == "compiled" and len(seen) == 48 // 5 + 1
    ats = [a for a, _ in seen]
    assert all(a is not None for a in ats) and all(a <= w for a, w in seen)
    assert all(b >= a for a, b in zip(ats, ats[1:]))
    if world.rank == 0:
        times = [json.loads(line)["time"] for line in open(tmp_path / "metrics.jsonl")]
        assert times == [round(a - reporter.t0, 6) for a in ats]


@pytest.mark.parametrize("log_every", [1000, 1, 3])
def test_compiled_loop_reports_divergence_like_the_python_loop(log_every):
    """The same error at the same step: through a non-finite reduced gradient (log_every 1000:
    no step logs), or through a logged step's loss, which overflows (linear: (z - y)^2) steps
    before the gradient does; there the compiled run stops right after that logged step."""
    X, y = make_problem("linear", n=1003, d=7, seed=3)
    messages = []
    for loop in ("auto", "python"):
        with pytest.raises(DivergedError) as err:
            train(Context(MPI.COMM_WORLD), X, y, model="linear", optimizer="sgd", lr=1e6, batch_size=50, epochs=3,
                  log_every=log_every, step_loop=loop)
        messages.append(str(err.value))
    assert "diverged at step" in messages[0] and "loss=" in messages[0]
    assert messages[0] == messages[1]
    if log_every == 1:  # the loss overflowed first: an infinite objective, not a NaN gradient's
        assert "loss=inf" in messages[0], messages[0]


def test_one_rank_that_cannot_run_it_keeps_every_rank_in_python(monkeypatch):
    """The choice is collective: if any rank cannot run the compiled loop, none does."""
    from mpidml.parallel import steploop

    ctx = Context(MPI.COMM_WORLD)
    last = ctx.size - 1
    real = steploop.why_not
    monkeypatch.setattr(steploop, "why_not",
                        lambda *a: "test: not this rank" if ctx.rank == last else real(*a))
    X, y = make_problem("logistic", n=1003, d=7, seed=3)
    got, trainer = train(ctx, X, y, model="logistic", optimizer="sgd", lr=0.2, batch_size=64, epochs=2, l2=1e-3)
    section = trainer.summary_section()["step_loop"]
    assert section["loop"] == "python"
    assert section["python_because"] == ("test: not this rank" if ctx.rank == last else "another rank cannot run it")
    ref, _ = train(ctx, X, y, model="logistic", optimizer="sgd", lr=0.2, batch_size=64, epochs=2, l2=1e-3,
                   step_loop="python")
    assert np.array_equal(got, ref)


def test_next_epoch_plan_is_built_while_waiting_for_the_slower_rank(monkeypatch):
    """With the node reducer, a rank that waits for a slower one builds the next epoch's batch
    plan in that time (EpochPlan.begin_next, steploop's wait): here rank 0 holds 90 % of the
    rows, so the others wait at every step. The result is still the Python loop's, bit for bit
    (which builds every plan at its epoch's start), and the waiting ranks did build ahead."""
    import helpers
    from mpidml.data import shard_bounds

    world = MPI.COMM_WORLD
    N = 40_000

    def uneven(n, size, rank):  # rank 0: 90 % of the rows, the rest split evenly
        if size == 1:
            return 0, n
        big = n * 9 // 10
        if rank == 0:
            return 0, big
        lo, hi = shard_bounds(n - big, size - 1, rank - 1)
        return big + lo, big + hi

    monkeypatch.setattr(helpers, "shard_bounds", uneven)
    X, y = make_problem("logistic", n=N, d=32, seed=3)
    options = dict(optimizer="sgd", lr=0.2, batch_size=2000, epochs=3, momentum=0.9)
    got, trainer, ref, ref_trainer = _both("logistic", options, X, y)
    assert np.array_equal(got, ref), f"max |diff| {np.max(np.abs(got - ref))}"
    loop = trainer._step_loop
    assert loop.seconds["steps"] == trainer.steps == 3 * (N // 2000)
    assert loop.builds_plan_ahead == (world.size > 1)  # one rank: MPI_Allreduce, nothing to wait for
    waited = loop.seconds["plan_in_waits"]
    if world.rank > 0:
        assert waited > 0.0
    assert 0.0 <= waited <= loop.seconds["allreduce"]  # part of the time in the reduction
    if world.size == 1:
        assert waited == 0.0
