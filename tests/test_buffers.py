"""X buffers start on a cache line (mpidml.buffers): the allocator itself, and every place
that allocates a shard's rows for the kernels (read_shard, the streaming chunks and batches,
reshard)."""

import h5py
import numpy as np
import pytest

from mpidml.data import read_shard
from mpi4py import MPI

from mpidml.buffers import ALIGN, aligned_empty, aligned_zeros
from mpidml.comm import Context
from mpidml.data.reshard import reshard
from mpidml.data.stream import ROW_ALIGN, open_streaming_shard
from mpidml.models import make_model
from mpidml.models.mf import MFModel
from mpidml.optim import LBFGS
from mpidml.models.streamed import StreamedModel

from helpers import make_problem, train


def _aligned(a, align=ALIGN):
    return a.ctypes.data % align == 0


@pytest.mark.parametrize("shape", [(0,), (1,), (7, 3), (1000, 64), (3, 5, 2), 11])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_aligned_empty_is_an_aligned_c_contiguous_writable_array(shape, dtype):
    a = aligned_empty(shape, dtype)
    want = (shape,) if isinstance(shape, int) else shape
    assert a.shape == want and a.dtype == np.dtype(dtype)
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.size == 0 or _aligned(a)  # an empty array's address means nothing (NumPy moves it)
    a[...] = 3  # the whole view is usable memory, and separate from a second buffer
    b = aligned_empty(shape, dtype)
    b[...] = 5
    assert np.all(a == 3) and np.all(b == 5)


@pytest.mark.parametrize("align", [8, 16, 128, 4096])
def test_aligned_empty_other_boundaries(align):
    for n in (1, 100, 100_000):
        assert _aligned(aligned_empty((n, 3), np.float64, align), align)


@pytest.mark.parametrize("align", [0, -64, 48, 4])
def test_aligned_empty_rejects_bad_boundaries(align):
    with pytest.raises(ValueError, match="power of two"):
        aligned_empty((4, 4), np.float64, align)  # 4: not a multiple of float64's 8 bytes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("buffers")
    out = {}
    rng = np.random.default_rng(3)
    for name, n, D, dt in (("f64", 5003, 64, np.float64), ("f32", 2001, 17, np.float32), ("int", 999, 5, np.int32)):
        X = (rng.standard_normal((n, D)) * 10).astype(dt)
        y = (rng.random(n) < 0.5).astype(np.float64)
        path = d / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["X"], f["y"] = X, y
        out[name] = (path, X, y)
    return out


@pytest.mark.parametrize("name", ["f64", "f32", "int"])
def test_read_shard_puts_x_on_a_cache_line(files, name):
    path, X, y = files[name]
    for parts in ((1, 0), (3, 1), (3, 2)):
        shard = read_shard(path, None, driver="independent", parts=parts)
        assert _aligned(shard.X) and shard.X.flags.c_contiguous
        np.testing.assert_array_equal(shard.X, X[shard.lo:shard.hi].astype(shard.X.dtype))


def test_reshard_keeps_x_on_a_cache_line(files):
    path, X, y = files["f64"]
    shard = read_shard(path, None, driver="independent")
    moved = reshard(shard, "random", 0, 2, None)
    assert _aligned(moved.X)
    np.testing.assert_array_equal(moved.X, X[moved.gids])


def test_streaming_chunks_and_batches_are_on_a_cache_line(files):
    path, X, y = files["f64"]
    shard = open_streaming_shard(path, parts=(2, 1), max_memory=2 * ROW_ALIGN * 64 * 8 * 3)
    try:
        starts = [Xc for _, _, Xc in shard.chunks()]
        assert len(starts) > 1 and all(_aligned(Xc) for Xc in starts)
        streamed = StreamedModel(make_model("logistic", 64, 2), shard, max_batch=300)
        assert _aligned(streamed._batch)
    finally:
        shard.close()


@pytest.mark.parametrize("shape", [0, 1, 65, (3, 7), 100_000])
def test_aligned_zeros_is_zeros_on_a_line(shape):
    a = aligned_zeros(shape)
    want = (shape,) if isinstance(shape, int) else shape
    assert a.shape == want and a.dtype == np.float64 and a.flags.c_contiguous
    assert a.size == 0 or _aligned(a)
    assert not np.any(a)


@pytest.mark.parametrize("name", ["linear", "logistic", "softmax", "mlp"])
def test_init_params_start_on_a_cache_line(name):
    for d in (1, 7, 64, 65):
        assert _aligned(make_model(name, d, 3).init_params(seed=1))


def test_mf_init_params_start_on_a_cache_line():
    assert _aligned(MFModel(11, 13, 4).init_params(seed=2))


def test_lbfgs_evaluates_every_trial_point_on_a_cache_line():
    """The iterates L-BFGS hands to the objective are the parameters the loss kernels read."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((80, 65))
    H = A.T @ A / 80 + 0.1 * np.eye(65)
    b = rng.standard_normal(65)
    seen = []

    def fun_grad(x, g):
        seen.append(x.ctypes.data % ALIGN + g.ctypes.data % ALIGN)
        g[:] = H @ x - b
        return 0.5 * x @ H @ x - b @ x

    res = LBFGS(65, tol=1e-10, max_iter=200).minimize(fun_grad, np.zeros(65))
    np.testing.assert_allclose(res.x, np.linalg.solve(H, b), rtol=1e-6, atol=1e-8)
    assert len(seen) > 10 and set(seen) == {0}


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_training_hands_the_kernels_params_and_grad_on_a_line(monkeypatch, optimizer):
    """Every loss_grad call of a one-rank training run (L-BFGS's full passes; SGD's mini-batch
    steps in the Python loop) gets params and grad on a cache line."""
    from mpidml.models.linear import LogisticRegression

    seen = []
    inner = LogisticRegression._loss_grad_hits

    def spy(self, shard, params, rows, grad, with_loss, hits):
        seen.append((params.ctypes.data % ALIGN, grad.ctypes.data % ALIGN))
        return inner(self, shard, params, rows, grad, with_loss, hits)

    monkeypatch.setattr(LogisticRegression, "_loss_grad_hits", spy)
    X, y = make_problem("logistic", n=300, d=65)
    extra = {"batch_size": 64, "epochs": 2, "step_loop": "python"} if optimizer == "sgd" else {"max_iter": 20}
    train(Context(MPI.COMM_SELF), X, y, model="logistic", optimizer=optimizer, **extra)
    assert len(seen) > 5 and set(seen) == {(0, 0)}
