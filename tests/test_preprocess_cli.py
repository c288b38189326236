"""--impute mean --standardize through the command line: train on 3 ranks, evaluate and predict
on new data with NaN, the streamed path, and the one-line errors.

The reference is scikit-learn's Pipeline(SimpleImputer, StandardScaler,
LogisticRegression(C = 1/(l2 N))) fitted on the full training data.
"""

import json

import h5py
import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from helpers import objective_numpy
from test_cli import MPIDML, run
from test_failures import assert_one_line_error

L2 = 1e-3
SCALES = np.array([1.0, 20.0, 0.05, 300.0, 1.0, 2.0])
OFFSETS = np.array([0.0, 40.0, -3.0, 1e4, 0.0, 5.0])
FAST = ["--progress", "none"]


def make_xy(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)) * SCALES + OFFSETS + shift * SCALES
    X[:, 5] = 5.0  # a constant column: centred, not scaled
    z = ((X - OFFSETS) / SCALES) @ np.array([1.0, -0.7, 0.5, 0.8, -1.2, 0.0]) + 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def write(path, X, y=None):
    with h5py.File(path, "w") as f:
        f["X"] = X
        if y is not None:
            f["y"] = y
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("impute")
    X, y = make_xy(1201, seed=1)
    Xt, yt = make_xy(301, seed=2, shift=1.5)  # shifted: its own statistics differ from the training ones
    write(d / "train.h5", X, y)
    write(d / "test.h5", Xt, yt)
    run(MPIDML + ["train", str(d / "train.h5"), "--impute", "mean", "--standardize", "--l2", str(L2),
                  "--tol", "1e-10", "--out", str(d / "run")] + FAST, ranks=3)
    pipe = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(),
                         LogisticRegression(C=1 / (L2 * len(y)), tol=1e-14, max_iter=100_000)).fit(X, y)
    with h5py.File(d / "run" / "model.h5") as f:
        model = {k: f[k][...] for k in f}
    return d, X, y, Xt, yt, pipe, model


def transform(pipe, X):
    return pipe[1].transform(pipe[0].transform(X))


def test_training_reaches_the_sklearn_pipeline_optimum(trained):
    d, X, y, _, _, pipe, model = trained
    np.testing.assert_allclose(model["impute_mean"], pipe[0].statistics_, rtol=1e-12)
    np.testing.assert_allclose(model["standardize_mean"], pipe[1].mean_, rtol=1e-12)
    np.testing.assert_allclose(model["standardize_scale"], pipe[1].scale_, rtol=1e-12)
    Z = transform(pipe, X)
    f = objective_numpy("logistic", Z, y, model["coef"], model["intercept"], L2)
    f_ref = objective_numpy("logistic", Z, y, pipe[2].coef_, pipe[2].intercept_, L2)
    assert (f - f_ref) / abs(f_ref) <= 1e-8
    summary = json.loads((d / "run" / "summary.json").read_text())
    assert summary["objective"] == pytest.approx(f, rel=1e-10)
    assert summary["preprocess"] == {"impute": "mean", "imputed_values": int(np.isnan(X).sum()),
                                     "standardize": True, "constant_columns": [5]}
    # The same model in raw units (NaN -> impute_mean): the decision values agree.
    raw = np.where(np.isnan(X), model["impute_mean"], X) @ model["coef_raw"].T + model["intercept_raw"]
    np.testing.assert_allclose(raw, Z @ model["coef"].T + model["intercept"], rtol=1e-9, atol=1e-9)


def test_evaluate_and_predict_apply_the_stored_transform(trained):
    d, _, _, Xt, yt, pipe, model = trained
    out = json.loads(run(MPIDML + ["evaluate", str(d / "run" / "model.h5"), str(d / "test.h5")], ranks=2).stdout)
    Zt = transform(pipe, Xt)  # the training statistics, applied to the new data
    f = objective_numpy("logistic", Zt, yt, model["coef"], model["intercept"], L2)
    assert out["objective"] == pytest.approx(f, rel=1e-12)
    refit = make_pipeline(SimpleImputer(), StandardScaler()).fit_transform(Xt)  # what it must NOT do
    assert abs(objective_numpy("logistic", refit, yt, model["coef"], model["intercept"], L2) - f) > 1e-3

    run(MPIDML + ["predict", str(d / "run" / "model.h5"), str(d / "test.h5"), "-o", str(d / "pred.h5")], ranks=2)
    with h5py.File(d / "pred.h5") as fh:
        proba, labels = fh["proba"][...], fh["labels"][...]
    z = Zt @ model["coef"][0] + model["intercept"][0]
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(proba, pipe.predict_proba(Xt), atol=1e-6)  # the pipeline's own optimum
    sure = np.abs(proba[:, 1] - 0.5) > 1e-6
    np.testing.assert_array_equal(labels[sure], pipe.predict(Xt)[sure])
    assert out["accuracy"] == pytest.approx(np.mean(labels == yt), rel=1e-12)


def test_streamed_training_equals_in_memory(trained):
    d, X, y, *_ = trained
    # 16 KiB of X per rank: chunks of 128 rows, 5 chunks per rank.
    run(MPIDML + ["train", str(d / "train.h5"), "--impute", "mean", "--standardize", "--l2", str(L2),
                  "--tol", "1e-10", "--max-memory", "16K", "--out", str(d / "streamed")] + FAST, ranks=2)
    summary = json.loads((d / "streamed" / "summary.json").read_text())
    assert summary["io"]["streamed"] is not None
    ref = json.loads((d / "run" / "summary.json").read_text())
    assert summary["objective"] == pytest.approx(ref["objective"], rel=1e-12)
    with h5py.File(d / "streamed" / "model.h5") as a, h5py.File(d / "run" / "model.h5") as b:
        for name in ("impute_mean", "standardize_mean", "standardize_scale"):  # other row split: rounding only
            np.testing.assert_allclose(a[name][...], b[name][...], rtol=1e-14)
        np.testing.assert_allclose(a["coef"][...], b["coef"][...], rtol=1e-6, atol=1e-8)


def error_cases(d):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), (rng.random(30) > 0.5).astype(float)
    nan_x = X.copy()
    nan_x[17, 2] = np.nan
    empty_col = X.copy()
    empty_col[:, 1] = np.nan
    inf_x = nan_x.copy()
    inf_x[21, 0] = np.inf
    nan_y = y.copy()
    nan_y[11] = np.nan
    return {
        "NaN in X without --impute": (write(d / "nan.h5", nan_x, y), [], "global row 17, column 2; remove it or use "
                                      "--impute mean"),
        "column all NaN": (write(d / "empty.h5", empty_col, y), ["--impute", "mean"], "column 1 of X has no values"),
        "Inf with --impute": (write(d / "inf.h5", inf_x, y), ["--impute", "mean"], "infinite value (inf) at global "
                              "row 21, column 0; --impute mean fills NaN only"),
        "NaN in y with --impute": (write(d / "nany.h5", X, nan_y), ["--impute", "mean"], "'y' (y) has a non-finite "
                                   "value (nan) at global row 11"),
        "unknown --impute": (write(d / "ok.h5", X, y), ["--impute", "median"], "unknown impute 'median'"),
    }


@pytest.mark.parametrize("case", ["NaN in X without --impute", "column all NaN", "Inf with --impute",
                                  "NaN in y with --impute", "unknown --impute"])
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
    path, extra, expect = error_cases(tmp_path)[case]
    proc = run(MPIDML + ["train", str(path), "--out", str(tmp_path / "run")] + extra + FAST, ranks=2, check=False)
    assert_one_line_error(proc, expect, case=f"impute: {case}")


def test_new_data_with_nan_needs_a_model_trained_with_impute(trained, tmp_path):
    # (test_evaluate_and_predict_apply_the_stored_transform: the imputing model accepts NaN.)
    d, X, y, *_ = trained
    write(tmp_path / "clean.h5", np.where(np.isnan(X), 0.0, X), y)
    run(MPIDML + ["train", str(tmp_path / "clean.h5"), "--standardize", "--out", str(tmp_path / "std")] + FAST)
    for command in (["evaluate"], ["predict", "-o", str(tmp_path / "q.h5")]):
        proc = run(MPIDML + command[:1] + [str(tmp_path / "std" / "model.h5"), str(d / "train.h5")] + command[1:],
                   ranks=2, check=False)
        assert_one_line_error(proc, "remove it or use --impute mean", case=f"impute: {command[0]} NaN")
