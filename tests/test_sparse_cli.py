"""Sparse (CSR) data end to end through the command line: train, evaluate, predict (mpirun, timeouts)."""

import json

import h5py
import numpy as np
import pytest

from mpidml.data import write_csr

from helpers import objective_numpy
from sparse_helpers import sparse_problem
from test_cli import MPIDML, run


@pytest.fixture(scope="module")
def text_h5(tmp_path_factory):
    A, y = sparse_problem("softmax", n=401, d=300, density=0.03, seed=4)
    path = tmp_path_factory.mktemp("data") / "text.h5"
    write_csr(path, A.indptr, A.indices, A.data.astype(np.float32), y, A.shape[1])
    return path, A, y


def test_train_evaluate_predict_on_csr(text_h5, tmp_path):
    path, A, y = text_h5
    out = tmp_path / "run"
    proc = run(MPIDML + ["train", str(path), "--model", "softmax", "--optimizer", "lbfgs", "--tol", "1e-9",
                         "--l2", "1e-3", "--progress", "log", "--out", str(out)], ranks=3)
    assert "CSR" in proc.stderr + proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "softmax" and s["n_features"] == 300 and s["io"]["sparse_nnz"] == A.nnz
    assert s["shard_rows"] == [134, 134, 133]
    with h5py.File(out / "model.h5") as f:
        coef, intercept = f["coef"][...], f["intercept"][...]
    X = A.astype(np.float32).toarray().astype(np.float64)
    assert s["objective"] == pytest.approx(objective_numpy("softmax", X, y, coef, intercept, 1e-3), rel=1e-12)
    assert s["accuracy"] == pytest.approx(np.mean(np.argmax(X @ coef.T + intercept, axis=1) == y), abs=1e-12)

    ev = json.loads(run(MPIDML + ["evaluate", str(out / "model.h5"), str(path)], ranks=2).stdout.strip().splitlines()[-1])
    assert ev["objective"] == pytest.approx(s["objective"], rel=1e-12)

    run(MPIDML + ["predict", str(out / "model.h5"), str(path), "-o", str(tmp_path / "pred.h5")], ranks=2)
    with h5py.File(tmp_path / "pred.h5") as f:
        proba = f["proba"][...]
    Z = X @ coef.T + intercept
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, P / P.sum(axis=1, keepdims=True), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("extra,flag", [(["--model", "mlp"], "--model mlp"),
                                        (["--standardize"], "--standardize"),
                                        (["--impute", "mean"], "--impute mean")])
def test_unsupported_options_on_csr_are_one_clear_error(text_h5, tmp_path, extra, flag):
    path, _, _ = text_h5
    proc = run(MPIDML + ["train", str(path), "--out", str(tmp_path / "r")] + extra, ranks=2, check=False)
    assert proc.returncode == 2 and proc.stderr.count("mpidml: error:") == 1, proc.stderr
    assert f"sparse (CSR) X, which {flag} does not support" in proc.stderr


def test_bad_csr_file_is_one_clear_error(text_h5, tmp_path):
    path, A, y = text_h5
    bad = tmp_path / "bad.h5"
    write_csr(bad, A.indptr, A.indices, A.data, y, A.shape[1])
    with h5py.File(bad, "r+") as f:
        k = int(f["X/indptr"][350])  # the first stored value of row 350 (the last of 2 ranks)
        f["X/data"][k] = np.nan
    assert A.indptr[351] > A.indptr[350]
    proc = run(MPIDML + ["train", str(bad), "--model", "softmax", "--out", str(tmp_path / "r")], ranks=2, check=False)
    assert proc.returncode == 2 and proc.stderr.count("mpidml: error:") == 1
    assert "non-finite value (nan) at global row 350" in proc.stderr


def test_parameter_server_on_csr_uses_sparse_messages(text_h5, tmp_path):
    path, A, y = text_h5
    out = tmp_path / "ps"
    run(MPIDML + ["train", str(path), "--model", "softmax", "--strategy", "ps", "--optimizer", "adam", "--lr", "0.05",
                  "--batch-size", "32", "--epochs", "2", "--out", str(out)], ranks=3)
    s = json.loads((out / "summary.json").read_text())
    assert s["ps"]["messages"] == "sparse" and s["ps"]["workers"] == 2
    n = 3 * 301
    assert s["ps"]["bytes_sent"] < 0.5 * 8 * n * s["ps"]["gradients"]  # replies: needed coordinates only
    with h5py.File(out / "model.h5") as f:
        coef, intercept = f["coef"][...], f["intercept"][...]
    X = A.astype(np.float32).toarray().astype(np.float64)
    assert s["objective"] == pytest.approx(objective_numpy("softmax", X, y, coef, intercept, 1e-4), rel=1e-12)
    assert s["objective"] < 0.9 * np.log(3)


def test_sparse_ps_resume_is_bitwise(text_h5, tmp_path):
    path, _, _ = text_h5
    out = tmp_path / "ps"
    args = ["train", str(path), "--model", "softmax", "--strategy", "ps", "--optimizer", "sgd", "--momentum", "0.9",
            "--batch-size", "40", "--epochs", "2", "--checkpoint-every", "7", "--out", str(out)]
    run(MPIDML + args, ranks=3)
    with h5py.File(out / "model.h5") as f:
        ref = f["coef"][...]
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.h5"))
    assert len(ckpts) >= 2
    for c in ckpts[1:]:
        c.unlink()  # as if killed after the first checkpoint
    run(MPIDML + ["train", "--resume", str(out)], ranks=3)
    with h5py.File(out / "model.h5") as f:
        np.testing.assert_array_equal(f["coef"][...], ref)
