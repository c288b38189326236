"""--comm-dtype float32: gradients travel as float32, parameters and the objective stay float64.

The MPI tests run under mpirun -n 1, 2 and 3 (scripts/test.sh): on every size, L-BFGS with
float32 communication reaches the independent float64 optimum (scikit-learn's solver at a
tight tolerance, objective from a NumPy reference) within a relative objective gap of 1e-6,
the reduced buffers really are float32, and the replicas agree bitwise.
"""

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.linear_model import LogisticRegression

from mpidml.comm import Context
from mpidml.config import STRATEGIES, TrainConfig, build_config
from mpidml.errors import ConfigError

from helpers import make_problem, objective_numpy, train

L2 = 1e-3


class SpyComm:
    """Forwards to a communicator and records the dtype of every buffer that is reduced."""

    def __init__(self, comm):
        self._comm = comm
        self.reduced = []

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def _record(self, *bufs):
        for b in bufs:
            if isinstance(b, np.ndarray):
                self.reduced.append(b.dtype)

    def Allreduce(self, sendbuf, recvbuf, op=MPI.SUM):
        self._record(recvbuf)
        return self._comm.Allreduce(sendbuf, recvbuf, op=op)

    def Reduce(self, sendbuf, recvbuf, op=MPI.SUM, root=0):
        self._record(sendbuf, recvbuf)
        return self._comm.Reduce(sendbuf, recvbuf, op=op, root=root)

    def Ireduce(self, sendbuf, recvbuf, op=MPI.SUM, root=0):
        self._record(sendbuf, recvbuf)
        return self._comm.Ireduce(sendbuf, recvbuf, op=op, root=root)


def _train_spied(ctx, X, y, **options):
    """helpers.train with the trainer's communicator wrapped in a SpyComm."""
    from mpidml.metrics import Reporter
    from mpidml.models import make_model
    from mpidml.parallel import AllreduceTrainer

    from helpers import shard_of

    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", **options)
    model = make_model(cfg.model, X.shape[1], 2)
    trainer = AllreduceTrainer(ctx, model, shard_of(X, y, ctx.rank, ctx.size), cfg, Reporter(None, enabled=False),
                               float(len(X)))
    trainer.comm = spy = SpyComm(trainer.comm)
    params = model.init_params()
    trainer.fit(params)
    return params, trainer, spy


def _sklearn_optimum(X, y, l2):
    clf = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-14, max_iter=100_000, solver="lbfgs").fit(X, y)
    return objective_numpy("logistic", X, y, clf.coef_, clf.intercept_, l2)


def _assert_replicas_identical(comm, params):
    gathered = np.empty((comm.Get_size(), params.size)) if comm.Get_rank() == 0 else None
    comm.Gather(params, gathered, root=0)
    if comm.Get_rank() == 0:
        assert all(np.array_equal(gathered[0], g) for g in gathered)


@pytest.mark.mpi
@pytest.mark.parametrize("scales", [None, "ill"], ids=["standard", "ill-conditioned"])
def test_lbfgs_with_float32_comm_reaches_float64_optimum(scales):
    d = 8
    sc = np.logspace(-1, 1, d) if scales == "ill" else None
    X, y = make_problem("logistic", n=2003, d=d, seed=11, scales=sc)
    world = Context(MPI.COMM_WORLD)
    params, trainer, spy = _train_spied(world, X, y, model="logistic", optimizer="lbfgs", tol=1e-8, l2=L2,
                                        max_iter=2000, comm_dtype="float32")
    f_ref = _sklearn_optimum(X, y, L2)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], L2)
    gap = (f - f_ref) / abs(f_ref)
    assert gap <= 1e-6, (gap, trainer.steps)
    assert gap >= -1e-9  # not below the optimum beyond rounding
    # The gradient went over the wire as float32, the loss and weight sums as float64.
    assert sum(dt == np.float32 for dt in spy.reduced) == trainer.n_evals
    assert sum(dt == np.float64 for dt in spy.reduced) == trainer.n_evals
    assert trainer.summary_section()["comm"] == {"dtype": "float32", "gradient_bytes_per_reduction": 4 * 9,
                                                 "reduction": "mpi", "mpi_because": "not a mini-batch run"}
    _assert_replicas_identical(world.comm, params)


@pytest.mark.mpi
def test_sgd_with_float32_comm_stays_close_to_float64():
    X, y = make_problem("logistic", n=1003, d=7, seed=3)
    world = Context(MPI.COMM_WORLD)
    opts = dict(model="logistic", optimizer="sgd", lr=0.2, momentum=0.9, batch_size=64, epochs=3, l2=L2, seed=7)
    p32, trainer, spy = _train_spied(world, X, y, comm_dtype="float32", **opts)
    # the spy keeps the Python loop (the compiled loop's MPI calls bypass mpi4py); that loop's
    # float32 reduction is bitwise the same: tests/test_steploop_mpi.py
    assert trainer.summary_section()["step_loop"]["python_because"] == "the communicator is not an mpi4py Comm"
    p64, _ = train(world, X, y, **opts)
    # One float32 Allreduce per step (plus the per-epoch replica checksums, int64).
    assert sum(dt == np.float32 for dt in spy.reduced) == trainer.steps
    assert not any(dt == np.float64 for dt in spy.reduced)
    np.testing.assert_allclose(p32, p64, rtol=0, atol=1e-5 * np.abs(p64).max())
    _assert_replicas_identical(world.comm, p32)
    f32 = objective_numpy("logistic", X, y, p32[:-1], p32[-1:], L2)
    f64 = objective_numpy("logistic", X, y, p64[:-1], p64[-1:], L2)
    assert abs(f32 - f64) <= 1e-6 * abs(f64)


def test_comm_dtype_option_is_validated_and_hashed():
    base = dict(data="d.h5", out="r")
    assert build_config({}, base).comm_dtype == "float64"
    c32 = build_config({}, dict(base, comm_dtype="float32"))
    assert c32.comm_dtype == "float32"
    assert c32.training_hash() != build_config({}, base).training_hash()
    assert "comm_dtype" in c32.training_options()
    with pytest.raises(ConfigError, match="unknown comm_dtype 'float16'"):
        build_config({}, dict(base, comm_dtype="float16"))
    if "ps" in STRATEGIES:
        with pytest.raises(ConfigError, match="--comm-dtype float32 applies to --strategy allreduce"):
            build_config({}, dict(base, comm_dtype="float32", strategy="ps", optimizer="sgd"))
    assert 'comm_dtype = "float32"' in c32.to_toml()


def test_comm_dtype_flag_parses():
    from mpidml.cli import build_parser

    args = build_parser().parse_args(["train", "d.h5", "--out", "r", "--comm-dtype", "float32"])
    assert args.comm_dtype == "float32"
