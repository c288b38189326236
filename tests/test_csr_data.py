"""The CSR HDF5 layout: sharded reads against scipy.sparse slicing, and bad files -> DataError."""
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from mpidml.data import inspect_csr, is_csr, read_csr_shard, shard_bounds, write_csr
from mpidml.errors import DataError


def matrix(n=37, d=50, seed=0, dtype=np.float64):
    A = sp.random(n, d, density=0.1, format="csr", random_state=seed, dtype=np.float64)
    A.data = A.data.astype(dtype)
    y = np.random.default_rng(seed).integers(0, 3, n)
    return A, y


def write(path, A, y):
    write_csr(path, A.indptr, A.indices, A.data, y, A.shape[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sharded_reads_equal_scipy_slices(tmp_path, dtype):
    A, y = matrix(dtype=dtype)
    path = str(tmp_path / "a.h5")
    write(path, A, y)
    assert is_csr(path) and not is_csr(path, "y") and not is_csr(str(tmp_path / "missing.h5"))
    meta = inspect_csr(path)
    assert (meta["n_rows"], meta["n_features"], meta["nnz"]) == (37, 50, A.nnz)
    assert meta["x_dtype"] == dtype and meta["index_dtype"] == np.int32
    for P in (1, 2, 3, 5):
        for p in range(P):
            s = read_csr_shard(path, y_dtype=np.int64, parts=(P, p))
            lo, hi = shard_bounds(37, P, p)
            assert (s.lo, s.hi, s.n_total, s.n_features) == (lo, hi, 37, 50)
            assert s.indptr.dtype == np.int64 and s.indptr[0] == 0
            got = sp.csr_matrix((s.data, s.indices, s.indptr), shape=(hi - lo, 50))
            want = A[lo:hi]
            assert got.dtype == dtype
            np.testing.assert_array_equal(got.toarray(), want.toarray())
            np.testing.assert_array_equal(s.y, y[lo:hi])
    empty = read_csr_shard(path, parts=(2, -1))
    assert empty.n_local == 0 and empty.data.size == 0


def _corrupt(path, name, index, value):
    with h5py.File(path, "r+") as f:
        f[name][index] = value


@pytest.mark.parametrize("name,value,words", [
    ("X/data", np.nan, "non-finite"),
    ("X/data", -np.inf, "non-finite"),
    ("X/indices", 50, "outside 0..49"),
    ("X/indices", -1, "outside 0..49"),
])
def test_bad_values_name_the_row(tmp_path, name, value, words):
    A, y = matrix()
    path = str(tmp_path / "a.h5")
    k = int(A.indptr[30]) + 1  # an entry of row 30 (rows 30.. are in the last of 3 parts)
    assert A.indptr[31] > k
    write(path, A, y)
    _corrupt(path, name, k, value)
    # Only the rank holding row 30 sees the problem; the others read their rows fine.
    read_csr_shard(path, parts=(3, 0))
    with pytest.raises(DataError, match=words) as info:
        read_csr_shard(path, parts=(3, 2))
    assert "global row 30" in str(info.value) and "\n" not in str(info.value)


def test_non_monotone_indptr_names_the_row(tmp_path):
    A, y = matrix()
    path = str(tmp_path / "a.h5")
    write(path, A, y)
    _corrupt(path, "X/indptr", 21, A.indptr[19])  # indptr[20] > indptr[21]
    assert A.indptr[20] > A.indptr[19]
    with pytest.raises(DataError, match="decreases at global row 20"):
        read_csr_shard(path, parts=(1, 0))


@pytest.mark.parametrize("mutate,words", [
    (lambda f: f["X"].attrs.__delitem__("shape"), "attribute shape"),
    (lambda f: f["X"].attrs.__setitem__("shape", [37, 50, 1]), "attribute shape"),
    (lambda f: f["X"].__delitem__("indices"), "no dataset 'indices'"),
    (lambda f: f["X"].attrs.__setitem__("shape", [36, 50]), "needs 37"),
    (lambda f: f["y"].resize((36,)), "has 36 rows"),
])
def test_bad_metadata(tmp_path, mutate, words):
    A, y = matrix()
    path = str(tmp_path / "a.h5")
    write(path, A, y)
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(DataError, match=words):
        read_csr_shard(path)


def test_indptr_must_end_at_nnz(tmp_path):
    A, y = matrix()
    path = str(tmp_path / "a.h5")
    write(path, A, y)
    _corrupt(path, "X/indptr", 37, A.nnz - 1)
    read_csr_shard(path, parts=(2, 0))
    with pytest.raises(DataError, match="indptr\\[N\\] must equal nnz"):
        read_csr_shard(path, parts=(2, 1))


def test_fewer_rows_than_parts(tmp_path):
    A, y = matrix(n=3)
    path = str(tmp_path / "a.h5")
    write(path, A, y)
    with pytest.raises(DataError, match="3 rows but there are 4"):
        read_csr_shard(path, parts=(4, 0))


def test_checkpoint_fingerprint_of_csr_files(tmp_path):
    from mpidml.checkpoint import data_fingerprint

    A, y = matrix()
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    write(a, A, y)
    A.data[-1] += 1.0  # the last stored value is one of the sampled entries
    write(b, A, y)
    fa, fb = data_fingerprint(a), data_fingerprint(b)
    assert fa["shape"] == [37, 50] and fa["sparse"] and fa["nnz"] == A.nnz
    assert fa["sha256"] != fb["sha256"] and data_fingerprint(a) == fa
