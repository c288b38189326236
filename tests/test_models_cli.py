"""End to end through the command line for the issue-7 models and options (mpirun with timeouts)."""

import json

import h5py
import numpy as np
import pytest

from test_cli import MPIDML, run


@pytest.fixture(scope="module")
def classes_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sm.h5"
    run(MPIDML + ["generate", "softmax", "--rows", "1201", "--features", "5", "--classes", "3", "--seed", "2",
                  "-o", str(path)])
    return path


def numpy_mlp_proba(model_path, X):
    with h5py.File(model_path) as f:
        L = len(f.attrs["hidden"]) + 1
        a = X
        for l in range(1, L + 1):
            a = a @ f[f"W{l}"][...].T + f[f"b{l}"][...]
            if l < L:
                a = np.maximum(a, 0)
    p = np.exp(a - a.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_mlp_train_and_evaluate(classes_h5, tmp_path):
    out = tmp_path / "run"
    run(MPIDML + ["train", str(classes_h5), "--model", "mlp", "--hidden", "16,8", "--optimizer", "adam", "--lr", "0.01",
                  "--batch-size", "64", "--epochs", "3", "--seed", "4", "--out", str(out)], ranks=2)
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "mlp" and s["n_classes"] == 3 and s["n_params"] == 5 * 16 + 16 * 8 + 8 * 3 + 16 + 8 + 3
    with h5py.File(classes_h5) as f:
        X, y = f["X"][...], f["y"][...]
    acc = np.mean(np.argmax(numpy_mlp_proba(out / "model.h5", X), axis=1) == y)
    assert abs(acc - s["accuracy"]) < 1e-12
    proc = run(MPIDML + ["evaluate", str(out / "model.h5"), str(classes_h5)], ranks=3)
    ev = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ev["model"] == "mlp" and abs(ev["accuracy"] - acc) < 1e-12
    assert ev["objective"] == pytest.approx(s["objective"], rel=1e-12)


def test_hidden_without_mlp_is_one_clear_error(classes_h5, tmp_path):
    proc = run(MPIDML + ["train", str(classes_h5), "--model", "softmax", "--hidden", "8", "--out", str(tmp_path / "r")],
               ranks=2, check=False)
    assert proc.returncode == 2 and proc.stderr.count("--hidden applies to --model mlp only") == 1


@pytest.fixture(scope="module")
def logistic_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "1501", "--features", "4", "--seed", "5", "-o", str(path)])
    return path


def test_class_weight_and_stratified_shards_report_metrics(logistic_h5, tmp_path):
    from sklearn import metrics as skm
    from sklearn.utils.class_weight import compute_class_weight

    out = tmp_path / "run"
    run(MPIDML + ["train", str(logistic_h5), "--model", "logistic", "--class-weight", "balanced", "--shard",
                  "stratified", "--l2", "1e-3", "--out", str(out)], ranks=3)
    s = json.loads((out / "summary.json").read_text())
    with h5py.File(logistic_h5) as f:
        X, y = f["X"][...], f["y"][...]
    with h5py.File(out / "model.h5") as f:
        z = X @ f["coef"][0] + f["intercept"][0]
    assert s["shard"] == "stratified"
    np.testing.assert_allclose(s["class_weight"], compute_class_weight("balanced", classes=np.array([0, 1]), y=y))
    m = s["metrics"]
    assert m["n_rows"] == len(y) and m["class_counts"] == np.bincount(y.astype(int)).tolist()  # rows, not weights
    assert abs(m["roc_auc"] - skm.roc_auc_score(y, z)) <= 1e-3
    pred = (z > 0).astype(int)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), rel=1e-9)
    np.testing.assert_allclose(m["f1"], skm.f1_score(y, pred, average=None), rtol=1e-9)
    proc = run(MPIDML + ["evaluate", str(out / "model.h5"), str(logistic_h5)], ranks=2)
    ev = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ev["roc_auc"] == pytest.approx(m["roc_auc"], rel=1e-12)
    assert ev["recall"] == pytest.approx(m["recall"], rel=1e-12)


@pytest.mark.parametrize("ranks", [1, 3])
def test_predict_writes_every_row_in_order(classes_h5, logistic_h5, tmp_path, ranks):
    """mlp and linear models: PRED.h5 equals NumPy predictions from model.h5."""
    run_mlp = tmp_path / "mlp"
    run(MPIDML + ["train", str(classes_h5), "--model", "mlp", "--hidden", "6", "--optimizer", "sgd", "--lr", "0.1",
                  "--epochs", "1", "--out", str(run_mlp)], ranks=1)
    pred = tmp_path / "pred.h5"
    proc = run(MPIDML + ["predict", str(run_mlp / "model.h5"), str(classes_h5), "-o", str(pred)], ranks=ranks)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n_rows"] == 1201
    with h5py.File(classes_h5) as f:
        X = f["X"][...]
    ref = numpy_mlp_proba(run_mlp / "model.h5", X)
    with h5py.File(pred) as f:
        np.testing.assert_allclose(f["proba"][...], ref, rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(f["labels"][...], np.argmax(ref, axis=1))
    # An existing output needs --overwrite (one clear error).
    proc = run(MPIDML + ["predict", str(run_mlp / "model.h5"), str(classes_h5), "-o", str(pred)], ranks=ranks,
               check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr

    run_lin = tmp_path / "lin"
    run(MPIDML + ["train", str(logistic_h5), "--model", "linear", "--out", str(run_lin)], ranks=1)
    run(MPIDML + ["predict", str(run_lin / "model.h5"), str(logistic_h5), "-o", str(pred), "--overwrite"], ranks=ranks)
    with h5py.File(run_lin / "model.h5") as f, h5py.File(logistic_h5) as d, h5py.File(pred) as p:
        expected = d["X"][...] @ f["coef"][0] + f["intercept"][0]
        np.testing.assert_allclose(p["prediction"][...], expected, rtol=1e-12, atol=1e-12)
        assert "labels" not in p
