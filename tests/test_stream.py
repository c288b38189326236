"""--max-memory: a shard larger than the limit is streamed from HDF5 and gives the in-memory result."""

import json

import h5py
import numpy as np
import pytest

from mpidml.data.stream import ROW_ALIGN, open_streaming_shard
from mpidml.errors import DataError
from mpidml.models import make_model
from mpidml.models.streamed import StreamedModel

from helpers import make_problem, shard_of
from test_cli import MPIDML, run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = make_problem("softmax", n=3001, d=6, k=3, seed=9)
    path = tmp_path_factory.mktemp("stream") / "sm.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    return path, X, y


def test_chunks_and_gather_return_the_right_rows(data):
    path, X, y = data
    shard = open_streaming_shard(path, y_dtype=np.int64, parts=(3, 1), max_memory=2 * ROW_ALIGN * 6 * 8)
    lo, hi = shard.lo, shard.hi
    assert shard.chunk_rows == ROW_ALIGN and shard.X is None
    seen = np.concatenate([Xc.copy() for _, _, Xc in shard.chunks()])
    np.testing.assert_array_equal(seen, X[lo:hi])
    rows = np.random.default_rng(0).permutation(hi - lo)[:77]
    out = np.empty((100, 6))
    np.testing.assert_array_equal(shard.gather(rows, out), X[lo:hi][rows])
    np.testing.assert_array_equal(shard.y, y[lo:hi])
    shard.close()


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "gzip", "big-endian", "float32"])
def test_gather_through_the_map_or_hdf5_gives_the_rows(tmp_path, layout):
    """Mini-batch rows come through a memory map of the file where X is one contiguous block in
    native byte order of the training dtype, through HDF5 otherwise; the same rows either way,
    in the order asked (repeats included), the transform applied, and no row of another shard."""
    X = np.random.default_rng(3).standard_normal((1000, 5))
    path = tmp_path / f"{layout}.h5"
    with h5py.File(path, "w") as f:
        kw = {"contiguous": {}, "chunked": {"chunks": (64, 5)}, "gzip": {"chunks": (64, 5), "compression": "gzip"},
              "big-endian": {"dtype": ">f8"}, "float32": {"dtype": np.float32}}[layout]
        f.create_dataset("X", data=X, **kw)
        f["y"] = np.zeros(1000)
    ref = X.astype(np.float32 if layout == "float32" else np.float64)  # what was written, in the shard's dtype
    shard = open_streaming_shard(path, parts=(3, 1), max_memory=2 * ROW_ALIGN * 5 * 8)
    assert (shard._map is not None) == (layout in ("contiguous", "float32"))
    lo, hi = shard.lo, shard.hi
    rows = np.concatenate([np.random.default_rng(4).permutation(hi - lo)[:50], [0, hi - lo - 1, 7, 7]])
    out = np.empty((60, 5), dtype=shard.x_dtype)
    np.testing.assert_array_equal(shard.gather(rows, out), ref[lo:hi][rows])
    shard.transform = lambda block: np.multiply(block, 2, out=block)
    np.testing.assert_array_equal(shard.gather(rows[:9], out), 2 * ref[lo:hi][rows[:9]])
    for bad in ([hi - lo], [-1]):
        with pytest.raises((IndexError, ValueError)):
            shard.gather(np.array(bad), out)
    shard.close()


@pytest.mark.parametrize("full", [True, False])
def test_streamed_model_sums_equal_in_memory_sums(data, full):
    path, X, y = data
    shard = open_streaming_shard(path, y_dtype=np.int64, parts=(2, 0), max_memory=4 * ROW_ALIGN * 6 * 8)
    dense = shard_of(X, y, 0, 2)
    model = make_model("softmax", 6, 3)
    streamed = StreamedModel(model, shard, max_batch=500)
    params = np.random.default_rng(1).standard_normal(model.n_params)
    rows = np.arange(dense.n_local) if full else np.random.default_rng(2).permutation(dense.n_local)[:500]
    g1, g2 = np.zeros(model.n_params), np.zeros(model.n_params)
    f1 = model.loss_grad(dense, params, rows.astype(np.int64), g1)
    f2 = streamed.loss_grad(shard, params, rows.astype(np.int64), g2)
    assert f2 == pytest.approx(f1, rel=1e-13)
    np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(streamed.stats(shard, params, rows), model.stats(dense, params, rows))
    assert streamed.batch_hits(shard, params, rows) == model.batch_hits(dense, params, rows)
    h1, h2, g3, g4 = np.zeros(1), np.zeros(1), np.zeros(model.n_params), np.zeros(model.n_params)
    f3 = model.loss_grad_hits(dense, params, rows.astype(np.int64), g3, h1)
    f4 = streamed.loss_grad_hits(shard, params, rows.astype(np.int64), g4, h2)  # a logged step, chunk by chunk
    assert f4 == pytest.approx(f3, rel=1e-13) and h2[0] == h1[0] == model.batch_hits(dense, params, rows)[0]
    np.testing.assert_allclose(g4, g3, rtol=1e-12, atol=1e-12)
    shard.close()


def test_nan_is_found_while_streaming(tmp_path):
    X = np.ones((500, 3))
    X[321, 2] = np.nan
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, np.zeros(500)
    with pytest.raises(DataError, match="global row 321"):
        open_streaming_shard(path, parts=(1, 0), max_memory=2 * ROW_ALIGN * 3 * 8)


@pytest.mark.parametrize("options", [
    ["--optimizer", "lbfgs", "--tol", "1e-10"],
    ["--optimizer", "sgd", "--momentum", "0.9", "--batch-size", "128", "--epochs", "2"],
    ["--optimizer", "adam", "--lr", "0.01", "--batch-size", "300", "--epochs", "2"],
], ids=["lbfgs", "sgd", "adam"])
def test_training_streamed_equals_in_memory_on_two_ranks(data, tmp_path, options):
    path = data[0]
    base = MPIDML + ["train", str(path), "--model", "softmax", "--progress", "none"] + options
    run(base + ["--out", str(tmp_path / "mem")], ranks=2)
    run(base + ["--out", str(tmp_path / "stream"), "--max-memory", "16K"], ranks=2)
    with h5py.File(tmp_path / "mem" / "model.h5") as a, h5py.File(tmp_path / "stream" / "model.h5") as b:
        np.testing.assert_allclose(b["coef"][...], a["coef"][...], rtol=1e-10, atol=1e-13)
    s_mem = json.loads((tmp_path / "mem" / "summary.json").read_text())
    s = json.loads((tmp_path / "stream" / "summary.json").read_text())
    assert s["io"]["driver"] == "independent-streamed" and s["io"]["streamed"]["buffer_bytes"] < 16 * 1024 + 2 * 8 * 1501
    assert s["objective"] == pytest.approx(s_mem["objective"], rel=1e-12)
    assert s["accuracy"] == s_mem["accuracy"]
    # the same path, not just the same optimum (L-BFGS: its diagonal from the streamed column sums)
    assert (s["steps"], s["evaluations"]) == (s_mem["steps"], s_mem["evaluations"])
    if options[1] != "lbfgs":  # the mini-batch loop says why it is not the compiled one
        assert s["step_loop"] == {"loop": "python", "python_because": "the shard is streamed from the file (--max-memory)"}
