"""--impute mean / --standardize, in one process: kernels, accuracy, edge cases, streaming, config.

References are independent: NumPy, math.fsum and scikit-learn's SimpleImputer / StandardScaler.
The multi-rank statistics are in test_preprocess_mpi.py, the command line in test_preprocess_cli.py.
"""

import math

import h5py
import numpy as np
import pytest
from mpi4py import MPI
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from mpidml import kernels
from mpidml.comm import Context
from mpidml.config import build_config
from mpidml.data.stream import ROW_ALIGN, open_streaming_shard
from mpidml.errors import ConfigError, DataError
from mpidml.preprocess import Preprocessing, apply_preprocessing, fit_preprocessing, load_preprocessing

from helpers import shard_of


def with_nan(X, fraction, seed):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_match_numpy(dtype):
    rng = np.random.default_rng(0)
    X = with_nan(rng.standard_normal((203, 5)) * 3 + 2, 0.1, 1).astype(dtype)
    count, total, comp = np.zeros(5), np.zeros(5), np.zeros(5)
    kernels.column_sums(X[:100], count, total, comp)  # in two pieces, as a streamed shard does
    kernels.column_sums(X[100:], count, total, comp)
    X64 = X.astype(np.float64)
    np.testing.assert_array_equal(count, np.sum(~np.isnan(X), axis=0))
    np.testing.assert_allclose(total + comp, [math.fsum(c[~np.isnan(c)]) for c in X64.T], rtol=1e-15)
    mean = (total + comp) / count
    sq, sq_comp = np.zeros(5), np.zeros(5)
    kernels.column_sq_dev(X, mean, sq, sq_comp)
    np.testing.assert_allclose(sq + sq_comp, np.nansum((X64 - mean) ** 2, axis=0), rtol=1e-13)

    fill, scale = mean + 1.0, np.linspace(0.5, 2.0, 5)
    expected = ((np.where(np.isnan(X64), fill, X64) - mean) / scale).astype(dtype)
    Y = X.copy()
    kernels.impute_standardize(Y, fill, mean, scale)
    np.testing.assert_array_equal(Y, expected)
    Y = X.copy()
    kernels.impute_standardize(Y, fill, np.zeros(0), np.zeros(0))  # impute only
    np.testing.assert_array_equal(Y, np.where(np.isnan(X), fill.astype(dtype), X))


def test_std_of_large_values_matches_numpy_and_fsum():
    # 1e6 rows of values ~1e6 with unit spread: a one-pass sum of squares loses every digit here.
    rng = np.random.default_rng(3)
    n = 1_000_000
    X = np.empty((n, 2))
    X[:, 0] = 1e6 + rng.standard_normal(n)
    X[:, 1] = -3e6 + 1e-3 * rng.standard_normal(n)
    prep = fit_preprocessing(Context(MPI.COMM_SELF), shard_of(X, np.zeros(n), 0, 1), standardize=True)
    for j in range(2):
        col = np.ascontiguousarray(X[:, j])
        mean = math.fsum(col) / n
        std = math.sqrt(math.fsum((col - mean) ** 2) / n)
        assert abs(prep.standardize_mean[j] - mean) <= 1e-15 * abs(mean)
        assert abs(prep.standardize_scale[j] - std) <= 1e-12 * std
        assert abs(prep.standardize_scale[j] - np.std(col)) <= 1e-10 * std
        naive = math.sqrt(max(0.0, float(np.dot(col, col)) / n - float(col.sum() / n) ** 2))
        assert abs(naive - std) > 1e-6 * std  # the accuracy above is not a given


def test_impute_then_standardize_equals_sklearn_pipeline():
    rng = np.random.default_rng(4)
    X = with_nan(rng.standard_normal((500, 4)) * [1, 100, 1e-3, 5] + [0, -50, 3, 1e4], 0.05, 5)
    X[:, 2] = 0.25  # a constant column: only centred, as scikit-learn does
    X[7, 2] = np.nan
    prep = fit_preprocessing(Context(MPI.COMM_SELF), shard_of(X, np.zeros(len(X)), 0, 1), "mean", True)
    imputer = SimpleImputer(strategy="mean").fit(X)
    scaler = StandardScaler().fit(imputer.transform(X))
    np.testing.assert_allclose(prep.impute_mean, imputer.statistics_, rtol=1e-14)
    np.testing.assert_allclose(prep.standardize_mean, scaler.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prep.standardize_scale, scaler.scale_, rtol=1e-12)
    assert prep.standardize_scale[2] == 1.0 and prep.constant_columns == (2,)
    assert prep.imputed_values == int(np.isnan(X).sum())
    observed_mean = [math.fsum(c[~np.isnan(c)]) / np.sum(~np.isnan(c)) for c in X.T]
    np.testing.assert_allclose(prep.impute_mean, observed_mean, rtol=2e-16)
    Y = X.copy()
    prep.apply(Y)
    # Compared in raw units: scikit-learn's own mean of column 3 (~1e4) is off by ~1e-12, which
    # divided by the scale is more than 1e-12 of a standardised value near 0.
    s, m = prep.standardize_scale, prep.standardize_mean
    np.testing.assert_allclose(Y * s + m, scaler.transform(imputer.transform(X)) * s + m, rtol=1e-13, atol=1e-13)


def test_column_without_values_is_an_error_naming_it():
    X = np.random.default_rng(0).standard_normal((30, 4))
    X[:, 3] = np.nan
    with pytest.raises(DataError, match=r"column 3 of X has no values"):
        fit_preprocessing(Context(MPI.COMM_SELF), shard_of(X, np.zeros(30), 0, 1), "mean")


def test_streamed_shard_gets_the_same_statistics_and_rows(tmp_path):
    rng = np.random.default_rng(6)
    X = with_nan(rng.standard_normal((700, 3)) * [2, 1, 5] + [1, 2, 3], 0.05, 7)
    y = (rng.random(700) > 0.5).astype(float)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, y
    with pytest.raises(DataError, match=r"non-finite value \(nan\) at global row \d+, column \d; remove it or "
                                        r"use --impute mean"):
        open_streaming_shard(path, parts=(1, 0), max_memory=2 * ROW_ALIGN * 3 * 8)
    streamed = open_streaming_shard(path, parts=(1, 0), max_memory=2 * ROW_ALIGN * 3 * 8, allow_nan_x=True)
    assert streamed.chunk_rows < 700
    ctx = Context(MPI.COMM_SELF)
    dense = shard_of(X, y, 0, 1)
    ref = fit_preprocessing(ctx, dense, "mean", True)
    got = fit_preprocessing(ctx, streamed, "mean", True)
    for name in ("impute_mean", "standardize_mean", "standardize_scale"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))  # same sums in the same order
    apply_preprocessing(got, streamed)
    apply_preprocessing(ref, dense)
    np.testing.assert_array_equal(np.concatenate([c.copy() for _, _, c in streamed.chunks()]), dense.X)
    rows = rng.permutation(700)[:50]
    np.testing.assert_array_equal(streamed.gather(rows, np.empty((64, 3))), dense.X[rows])
    streamed.close()


def test_inf_stays_an_error_with_impute(tmp_path):
    X = np.ones((40, 2))
    X[5, 0] = np.nan
    X[9, 1] = -np.inf
    path = tmp_path / "inf.h5"
    with h5py.File(path, "w") as f:
        f["X"], f["y"] = X, np.zeros(40)
    with pytest.raises(DataError, match=r"infinite value \(-inf\) at global row 9, column 1; --impute mean fills "
                                        r"NaN only"):
        open_streaming_shard(path, parts=(1, 0), max_memory=1 << 20, allow_nan_x=True)


def test_options_validated_and_part_of_the_training_hash():
    base = {"data": "d.h5", "out": "r"}
    with pytest.raises(ConfigError, match=r"unknown impute 'median'.*choose from none, mean"):
        build_config({}, dict(base, impute="median"))
    with pytest.raises(ConfigError, match=r"'standardize' must be true or false"):
        build_config({"standardize": "yes"}, base)
    plain = build_config({}, base).training_hash()
    assert build_config({}, dict(base, impute="mean")).training_hash() != plain
    assert build_config({}, dict(base, standardize=True)).training_hash() != plain


def test_model_file_transform_is_validated(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["n_features"] = 3
        f["standardize_mean"] = np.zeros(3)
        f["standardize_scale"] = np.array([1.0, 0.0, 2.0])
    with pytest.raises(DataError, match="standardize_scale must be > 0"):
        load_preprocessing(str(path))
    with h5py.File(path, "w") as f:
        f.attrs["n_features"] = 3
        f["impute_mean"] = np.zeros(2)
    with pytest.raises(DataError, match=r"'impute_mean' must be 3 finite values"):
        load_preprocessing(str(path))
    with h5py.File(path, "w") as f:
        f.attrs["n_features"] = 3
    assert not load_preprocessing(str(path)).active


def test_raw_unit_coefficients_give_the_same_margins():
    from mpidml.models import make_model

    rng = np.random.default_rng(8)
    prep = Preprocessing(impute_mean=rng.standard_normal(4), standardize_mean=rng.standard_normal(4),
                         standardize_scale=rng.uniform(0.5, 3, 4))
    model = make_model("softmax", 4, 3)
    params = rng.standard_normal(model.n_params)
    arrays = prep.model_arrays(model, params)
    X = with_nan(rng.standard_normal((20, 4)), 0.2, 9)
    Xt = X.copy()
    prep.apply(Xt)
    coef, intercept = model.coef_intercept(params)
    raw = np.where(np.isnan(X), prep.impute_mean, X) @ arrays["coef_raw"].T + arrays["intercept_raw"]
    np.testing.assert_allclose(raw, Xt @ coef.T + intercept, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sq_sums_matches_numpy(dtype):
    X = np.random.default_rng(7).standard_normal((1001, 13)).astype(dtype) * np.logspace(-3, 3, 13)
    out = np.full(13, 0.5)  # added to
    kernels.column_sq_sums(X, out)
    np.testing.assert_allclose(out, 0.5 + (X.astype(np.float64) ** 2).sum(axis=0), rtol=1e-13)
    half = np.zeros(13)  # chunk by chunk gives the same bits as one pass (streamed shards)
    kernels.column_sq_sums(X[:400], half)
    kernels.column_sq_sums(X[400:], half)
    whole = np.zeros(13)
    kernels.column_sq_sums(X, whole)
    assert np.array_equal(half, whole)


def test_csr_column_sq_sums_matches_dense():
    import scipy.sparse

    A = scipy.sparse.random(300, 40, density=0.1, format="csr", random_state=3, dtype=np.float64)
    out = np.zeros(40)
    kernels.csr_column_sq_sums(A.indices.astype(np.int64), A.data, out)
    np.testing.assert_allclose(out, (A.toarray() ** 2).sum(axis=0), rtol=1e-14)
