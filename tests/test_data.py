"""Serial tests of the data layer: partitions, synthetic data, converters, HDF5 reads."""

import importlib
import os

import h5py
import numpy as np
import pytest

from mpidml.data import (
    all_shard_bounds, convert, generate, h5py_has_mpi, inspect, read_shard, shard_bounds,
)
from mpidml.errors import ConfigError, DataError

# The package re-exports functions named like their modules; get the modules themselves.
gen_mod = importlib.import_module("mpidml.data.generate")
hdf5_mod = importlib.import_module("mpidml.data.hdf5")


def _comm_self():
    from mpi4py import MPI
    return MPI.COMM_SELF


def _read_h5(path, x="X", y="y"):
    with h5py.File(path, "r") as f:
        return f[x][...], f[y][...]


def _no_temp_left(directory):
    leftovers = [n for n in os.listdir(directory) if ".tmp" in n]
    assert not leftovers, leftovers


# ----------------------------------------------------------------------------- partition

@pytest.mark.parametrize("n_parts", list(range(1, 14)) + [64, 1000])
def test_shard_bounds_properties(n_parts):
    for n_rows in list(range(0, 60)) + [999, 1000, 1001, 12345]:
        bounds = [shard_bounds(n_rows, n_parts, p) for p in range(n_parts)]
        off = all_shard_bounds(n_rows, n_parts)
        assert off.dtype == np.int64 and off.shape == (n_parts + 1,)
        assert off[0] == 0 and off[-1] == n_rows
        sizes = [hi - lo for lo, hi in bounds]
        for p, (lo, hi) in enumerate(bounds):
            assert (lo, hi) == (off[p], off[p + 1])  # contiguous, disjoint, covering
            assert lo <= hi
        assert max(sizes) - min(sizes) <= 1
        extra = n_rows % n_parts
        assert all(s == n_rows // n_parts + (1 if p < extra else 0)
                   for p, s in enumerate(sizes))


def test_shard_bounds_errors():
    for args in [(10, 0, 0), (10, -1, 0), (10, 3, 3), (10, 3, -1), (-1, 2, 0)]:
        with pytest.raises(ValueError):
            shard_bounds(*args)
    with pytest.raises(ValueError):
        all_shard_bounds(10, 0)
    assert shard_bounds(2, 3, 2) == (2, 2)


# ----------------------------------------------------------------------------- generate

@pytest.mark.parametrize("kind", ["linear", "logistic", "softmax"])
def test_generate_deterministic_across_chunks(tmp_path, monkeypatch, kind):
    # Small stream blocks so several blocks and chunk boundaries inside blocks are used.
    monkeypatch.setattr(gen_mod, "_STREAM_BLOCK_ROWS", 100)
    outs = []
    for i, chunk in enumerate([7, 64, 100, 1000]):
        p = tmp_path / f"g{i}.h5"
        meta = generate(kind, p, rows=345, features=5, classes=3 if kind == "softmax" else 2,
                        seed=11, chunk_rows=chunk)
        assert meta["written"]
        outs.append(_read_h5(p))
    for X, y in outs[1:]:
        np.testing.assert_array_equal(X, outs[0][0])
        np.testing.assert_array_equal(y, outs[0][1])
    other = tmp_path / "other.h5"
    generate(kind, other, rows=345, features=5, classes=3 if kind == "softmax" else 2, seed=12)
    assert not np.array_equal(_read_h5(other)[0], outs[0][0])
    _no_temp_left(tmp_path)


def test_generate_default_blocks_and_float32(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    generate("linear", a, rows=300, features=4, seed=3, chunk_rows=7)
    generate("linear", b, rows=300, features=4, seed=3)
    generate("linear", c, rows=300, features=4, seed=3, dtype="float32")
    Xa, ya = _read_h5(a)
    Xb, yb = _read_h5(b)
    Xc, _ = _read_h5(c)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    assert Xc.dtype == np.float32 and ya.dtype == np.float64
    np.testing.assert_array_equal(Xc, Xa.astype(np.float32))
    info = inspect(a)
    assert info["n_rows"] == 300 and info["n_features"] == 4
    assert info["attrs"]["kind"] == "linear" and info["attrs"]["n_classes"] == 0


def test_generate_models_match_labels(tmp_path):
    p = tmp_path / "log.h5"
    meta = generate("logistic", p, rows=5000, features=10, seed=5, noise=0.0)
    with h5py.File(p, "r") as f:
        X, y = f["X"][...], f["y"][...]
        coef, b = f["true_coef"][...], f["true_intercept"][...]
        assert dict(f.attrs)["seed"] == 5 and f.attrs["kind"] == "logistic"
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    np.testing.assert_array_equal(coef, meta["true_coef"])
    z = X @ coef[0] + b[0]
    assert np.corrcoef(z, y)[0, 1] > 0.5
    assert y[z > 1].mean() > 0.8 and y[z < -1].mean() < 0.2
    # label flips: noise=1 inverts binary labels exactly
    q = tmp_path / "flip.h5"
    generate("logistic", q, rows=5000, features=10, seed=5, noise=1.0)
    np.testing.assert_array_equal(_read_h5(q)[1], 1 - y)

    s = tmp_path / "soft.h5"
    generate("softmax", s, rows=4000, features=8, classes=4, seed=2, noise=0.0)
    with h5py.File(s, "r") as f:
        X, y, W, b = f["X"][...], f["y"][...], f["true_coef"][...], f["true_intercept"][...]
        assert f.attrs["n_classes"] == 4
    assert W.shape == (4, 8) and b.shape == (4,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1, 2, 3}
    assert (np.argmax(X @ W.T + b, axis=1) == y).mean() > 0.6

    lin = tmp_path / "lin.h5"
    generate("linear", lin, rows=4000, features=6, seed=1, noise=0.25)
    with h5py.File(lin, "r") as f:
        X, y, w, b = f["X"][...], f["y"][...], f["true_coef"][...], f["true_intercept"][...]
    resid = y - (X @ w[0] + b[0])
    assert abs(resid.std() - 0.25) < 0.02


def test_generate_validation(tmp_path):
    p = tmp_path / "x.h5"
    bad = [
        dict(kind="poisson"), dict(rows=0), dict(features=0), dict(kind="softmax", classes=1),
        dict(kind="logistic", classes=3), dict(noise=-1.0), dict(kind="logistic", noise=1.5),
        dict(dtype="int32"), dict(seed=-1), dict(chunk_rows=0), dict(rows=2.5),
        dict(x_name="y"),
    ]
    for kw in bad:
        args = dict(kind="logistic", rows=10, features=2)
        args.update(kw)
        with pytest.raises(ConfigError):
            generate(args.pop("kind"), p, **args)
    generate("linear", p, rows=10, features=2)
    with pytest.raises(ConfigError, match="exists"):
        generate("linear", p, rows=10, features=2, overwrite=False)
    with pytest.raises(ConfigError, match="does not exist"):
        generate("linear", tmp_path / "nodir" / "x.h5", rows=10, features=2)


def test_generate_comm_non_root_writes_nothing(tmp_path):
    class FakeComm:
        def Get_rank(self):
            return 1

        def Get_size(self):
            return 2

    p = tmp_path / "g.h5"
    meta = generate("linear", p, rows=10, features=2, comm=FakeComm())
    assert not meta["written"] and not p.exists()
    assert meta["true_coef"].shape == (1, 2)


# ----------------------------------------------------------------------------- convert: npy/npz

def _xy(n=53, d=4, seed=0, int_labels=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, 3, n) if int_labels else rng.standard_normal(n)
    return X, y


def test_convert_npy_roundtrip(tmp_path):
    X, y = _xy()
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y.astype(np.int32))
    dst = tmp_path / "out.h5"
    info = convert(tmp_path / "X.npy", dst, y_src=tmp_path / "y.npy", chunk_rows=7)
    assert info["rows"] == 53 and info["features"] == 4 and info["format"] == "npy"
    assert info["y_dtype"] == "int64"
    Xo, yo = _read_h5(dst)
    assert Xo.dtype == np.float64 and yo.dtype == np.int64
    np.testing.assert_array_equal(Xo, X.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(yo, y)
    # float labels, float32 output, fortran-ordered X, y as (N, 1)
    np.save(tmp_path / "Xf.npy", np.asfortranarray(X))
    yf = np.random.default_rng(1).standard_normal((53, 1))
    np.save(tmp_path / "yf.npy", yf)
    dst2 = tmp_path / "out2.h5"
    info = convert(tmp_path / "Xf.npy", dst2, y_src=tmp_path / "yf.npy", dtype="float32",
                   chunk_rows=7, x_name="data", y_name="target")
    assert info["y_dtype"] == "float64" and info["x_dtype"] == "float32"
    Xo, yo = _read_h5(dst2, "data", "target")
    np.testing.assert_array_equal(Xo, X.astype(np.float32))
    np.testing.assert_array_equal(yo, yf[:, 0])
    assert inspect(dst2, "data", "target")["x_dtype"] == np.float32
    _no_temp_left(tmp_path)


@pytest.mark.parametrize("compressed", [False, True])
def test_convert_npz_roundtrip(tmp_path, compressed):
    X, y = _xy(n=101, d=3)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "d.npz", features=X, labels=y.astype(np.float64))
    dst = tmp_path / "out.h5"
    info = convert(tmp_path / "d.npz", dst, x_key="features", y_key="labels", chunk_rows=7)
    assert info["rows"] == 101 and info["format"] == "npz" and info["y_dtype"] == "int64"
    Xo, yo = _read_h5(dst)
    np.testing.assert_array_equal(Xo, X)
    np.testing.assert_array_equal(yo, y)
    # Fortran-ordered X and big-endian y in the archive
    save(tmp_path / "f.npz", X=np.asfortranarray(X), y=(y + 0.5).astype(">f8"))
    convert(tmp_path / "f.npz", tmp_path / "f.h5", chunk_rows=7)
    Xo, yo = _read_h5(tmp_path / "f.h5")
    np.testing.assert_array_equal(Xo, X)
    np.testing.assert_array_equal(yo, y + 0.5)
    assert yo.dtype == np.float64


# ----------------------------------------------------------------------------- convert: CSV

def _write_csv(path, X, y, *, label_col=0, delim=",", header=False):
    cols = [X[:, j] for j in range(X.shape[1])]
    lc = label_col if label_col >= 0 else X.shape[1] + 1 + label_col
    cols.insert(lc, y)
    table = np.column_stack(cols)
    lines = []
    if header:
        names = [f"f{j}" for j in range(X.shape[1])]
        names.insert(lc, "label")
        lines.append(delim.join(names))
    for row in table:
        lines.append(delim.join(repr(float(v)) for v in row))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("ext,delim", [(".csv", ","), (".tsv", "\t"), (".txt", " "),
                                       (".txt", ",")])
@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("label_col", [0, -1])
def test_convert_csv_roundtrip(tmp_path, ext, delim, header, label_col):
    X, y = _xy(n=30, d=3, int_labels=False)
    src = tmp_path / f"data{ext}"
    _write_csv(src, X, y, label_col=label_col, delim=delim, header=header)
    dst = tmp_path / "out.h5"
    info = convert(src, dst, label_col=label_col, chunk_rows=7)
    assert info["rows"] == 30 and info["features"] == 3 and info["has_header"] == header
    assert info["format"] == "csv"
    Xo, yo = _read_h5(dst)
    np.testing.assert_array_equal(Xo, X)
    np.testing.assert_array_equal(yo, y)
    assert yo.dtype == np.float64


def test_convert_csv_int_labels_nan_and_comments(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("\ufefflabel,a,b\r\n# comment\r\n1,0.5,nan\r\n\r\n0, 2 ,3\r\n2,inf,-1e-3\r\n")
    info = convert(src, tmp_path / "o.h5", chunk_rows=2)
    Xo, yo = _read_h5(tmp_path / "o.h5")
    assert info["rows"] == 3 and yo.dtype == np.int64
    np.testing.assert_array_equal(yo, [1, 0, 2])
    np.testing.assert_array_equal(Xo, [[0.5, np.nan], [2, 3], [np.inf, -1e-3]])
    # explicit has_header=False on a numeric file, explicit delimiter
    src2 = tmp_path / "e.dat"
    src2.write_text("1;2;3\n4;5;6\n")
    convert(src2, tmp_path / "p.h5", fmt="csv", delimiter=";", has_header=False, label_col=1)
    Xo, yo = _read_h5(tmp_path / "p.h5")
    np.testing.assert_array_equal(Xo, [[1, 3], [4, 6]])
    np.testing.assert_array_equal(yo, [2, 5])


# ----------------------------------------------------------------------------- convert: svmlight

SVM_TEXT = """# a comment line
1 qid:3 1:0.5 3:-2.25 # trailing comment
-1 2:1e-3 4:7

1 1:1 2:2 3:3 4:4
-1
1 4:-0.125
"""


@pytest.mark.parametrize("zero_based", [False, True])
def test_convert_svmlight_vs_sklearn(tmp_path, zero_based):
    from sklearn.datasets import load_svmlight_file

    text = SVM_TEXT
    if zero_based:
        text = text.replace("1:0.5", "0:0.5")
    src = tmp_path / "d.svm"
    src.write_text(text)
    dst = tmp_path / "o.h5"
    info = convert(src, dst, chunk_rows=2)
    Xs, ys = load_svmlight_file(str(src), zero_based="auto")
    Xo, yo = _read_h5(dst)
    assert info["zero_based"] == zero_based and info["rows"] == 5
    np.testing.assert_array_equal(Xo, Xs.toarray())
    assert info["label_map"] == {-1: 0, 1: 1}
    np.testing.assert_array_equal(yo, (ys + 1) // 2)
    assert yo.dtype == np.int64
    with h5py.File(dst, "r") as f:
        assert '"-1": 0' in f.attrs["label_map"]
    # explicit n_features and zero_based, same as sklearn
    for zb in ([True] if zero_based else [True, False]):
        convert(src, dst, chunk_rows=3, n_features=9, zero_based=zb, overwrite=True)
        Xs, ys = load_svmlight_file(str(src), zero_based=zb, n_features=9)
        np.testing.assert_array_equal(_read_h5(dst)[0], Xs.toarray())


def test_convert_svmlight_multiclass_and_float_labels(tmp_path):
    from sklearn.datasets import load_svmlight_file

    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        idx = np.sort(rng.choice(12, size=rng.integers(0, 5), replace=False)) + 1
        lines.append(f"{rng.integers(0, 4)} " + " ".join(f"{j}:{rng.normal():.6g}" for j in idx))
    src = tmp_path / "m.libsvm"
    src.write_text("\n".join(lines) + "\n")
    info = convert(src, tmp_path / "m.h5", chunk_rows=7, n_features=12)
    Xs, ys = load_svmlight_file(str(src), n_features=12)
    Xo, yo = _read_h5(tmp_path / "m.h5")
    np.testing.assert_array_equal(Xo, Xs.toarray())
    np.testing.assert_array_equal(yo, ys)
    assert info["label_map"] is None and yo.dtype == np.int64
    src2 = tmp_path / "r.svmlight"
    src2.write_text("0.5 2:1 1:3\n-1.25 3:2\n")  # unsorted indices are fine
    convert(src2, tmp_path / "r.h5")
    Xo, yo = _read_h5(tmp_path / "r.h5")
    np.testing.assert_array_equal(Xo, [[3, 1, 0], [0, 0, 2]])
    np.testing.assert_array_equal(yo, [0.5, -1.25])


# ----------------------------------------------------------------------------- convert: errors

def _convert_error(tmp_path, name, content, match, **kw):
    src = tmp_path / name
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content)
    dst = tmp_path / "err.h5"
    with pytest.raises(DataError, match=match) as ei:
        convert(src, dst, **kw)
    assert not dst.exists()
    _no_temp_left(tmp_path)
    assert "\n" not in str(ei.value)
    return str(ei.value)


@pytest.mark.parametrize("name,content,match,kw", [
    ("a.csv", "1,2,3\n4,5,6\n7,x,9\n", r"a\.csv line 3, column 2: 'x' is not a number", {}),
    ("a.csv", "1,2,3\n4,5,6\n7,8\n", r"line 3: expected 3 fields", {}),
    ("a.csv", "1,2,3\n4,,6\n", r"line 2, column 2: is empty", {}),
    ("a.csv", "", r"empty", {}),
    ("a.csv", "\n\n# only comments\n", r"empty", {}),
    ("a.csv", "label,f1\n", r"no data rows", {}),
    ("a.csv", "1\n2\n", r"line 1: found 1 column", {}),
    ("a.csv", b"1,2\n3,\xff\xfe\n", r"line 2: not valid UTF-8", {}),
    ("a.csv", "1,2,3\n4,5,6\n", r"n_features=5", dict(n_features=5)),
    ("a.csv", "y,a\n1,2\nz,3\n", r"line 3, column 1", {}),
    ("a.svm", "1 1:2\n1 2\n", r"a\.svm line 2: bad token '2'", {}),
    ("a.svm", "1 1:2\n1 a:3\n", r"line 2: bad feature index", {}),
    ("a.svm", "1 1:2\n1 2:x\n", r"line 2: bad value", {}),
    ("a.svm", "1 1:2\n1 -3:1\n", r"line 2: negative feature index", {}),
    ("a.svm", "1 1:2\n0 5:1\n", r"line 2: feature index 5 is out of range",
     dict(n_features=4)),
    ("a.svm", "1 1:2\n0 0:1\n", r"line 2: feature index 0 in a one-based",
     dict(zero_based=False)),
    ("a.svm", "1 1:2 1:3\n", r"line 1: feature index 1 appears twice", {}),
    ("a.svm", "abc 1:2\n", r"line 1: label 'abc'", {}),
    ("a.svm", "# nothing\n\n", r"empty", {}),
    ("a.svm", "1\n0\n", r"no features", {}),
    ("a.svm", "1 99999999999999999999999:1\n", r"line 1: feature index .* too large", {}),
    ("a.svm", "1 100000000000:1\n", r"line 1: .*too large", {}),
    ("a.svm", b"1 1:2\n\x80\n", r"line 2: not valid UTF-8", {}),
])
def test_convert_text_errors(tmp_path, name, content, match, kw):
    _convert_error(tmp_path, name, content, match, **kw)


def test_convert_npy_npz_errors(tmp_path):
    X, y = _xy(n=10, d=2)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y9.npy", y[:9])
    np.save(tmp_path / "X1.npy", X[:, 0])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    np.save(tmp_path / "cplx.npy", X.astype(complex))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    raw = (tmp_path / "X.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[:-17])
    dst = tmp_path / "o.h5"

    def err(src, match, exc=DataError, **kw):
        with pytest.raises(exc, match=match):
            convert(tmp_path / src, dst, **kw)
        assert not dst.exists()

    err("X.npy", r"y9\.npy has 9 labels but .*X\.npy has 10 rows", y_src=tmp_path / "y9.npy")
    err("X.npy", "y_src", exc=ConfigError)
    err("X1.npy", "must be 2-D", y_src=tmp_path / "y.npy")
    err("obj.npy", "Python objects", y_src=tmp_path / "y.npy")
    err("str.npy", "must be numeric", y_src=tmp_path / "y.npy")
    err("cplx.npy", "must be numeric", y_src=tmp_path / "y.npy")
    err("empty.npy", "zero rows", y_src=tmp_path / "y.npy")
    err("trunc.npy", r"trunc\.npy", y_src=tmp_path / "y.npy")
    err("X.npy", "does not exist", y_src=tmp_path / "nope.npy")
    err("missing.npy", "does not exist", y_src=tmp_path / "y.npy")

    np.savez(tmp_path / "d.npz", X=X, labels=y)
    err("d.npz", r"d\.npz has no array 'y' for y \(arrays: 'X', 'labels'\)")
    np.savez(tmp_path / "short.npz", X=X, y=y[:3])
    err("short.npz", "3 labels")
    np.savez(tmp_path / "o.npz", X=np.array([None, 1], dtype=object), y=y)
    err("o.npz", "Python objects")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    err("bad.npz", "not a valid .npz")
    # corrupt the data of a compressed member
    np.savez_compressed(tmp_path / "c.npz", X=np.arange(4000.0).reshape(-1, 4), y=np.zeros(1000))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[200:260] = b"\x00" * 60
    (tmp_path / "c.npz").write_bytes(bytes(data))
    err("c.npz", "c.npz")
    _no_temp_left(tmp_path)


def test_convert_options(tmp_path):
    X, y = _xy(n=5, d=2)
    src = tmp_path / "d.csv"
    _write_csv(src, X, y)
    dst = tmp_path / "o.h5"
    convert(src, dst)
    with pytest.raises(ConfigError, match="exists"):
        convert(src, dst)
    convert(src, dst, overwrite=True, label_col=1)
    with pytest.raises(ConfigError, match="extension"):
        convert(tmp_path / "d.xyz", dst, overwrite=True)
    with pytest.raises(DataError, match="does not exist"):
        convert(tmp_path / "nope.csv", dst, overwrite=True)
    with pytest.raises(ConfigError, match="label_col 7"):
        convert(src, dst, overwrite=True, label_col=7)
    for kw in [dict(fmt="parquet"), dict(has_header="yes"), dict(zero_based=2),
               dict(dtype="int8"), dict(chunk_rows=0), dict(n_features=0), dict(x_name="y"),
               dict(delimiter="")]:
        with pytest.raises(ConfigError):
            convert(src, dst, overwrite=True, **kw)
    with pytest.raises(ConfigError, match="same file"):
        convert(src, src, overwrite=True, fmt="csv")


@pytest.mark.parametrize("ext", [".csv", ".txt", ".svm", ".npy", ".npz"])
def test_convert_random_bytes(tmp_path, ext):
    rng = np.random.default_rng(abs(hash(ext)) % 1000)
    y = tmp_path / "y.npy"
    np.save(y, np.zeros(3))
    for i in range(20):
        n = int(rng.integers(0, 400))
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        if i % 4 == 1:
            data = b"\x93NUMPY\x01\x00" + data
        elif i % 4 == 2:
            data = b"PK\x03\x04" + data
        elif i % 4 == 3:
            data = bytes(rng.choice(list(b"0123456789:.-+ e\n#,"), n).astype(np.uint8))
        src = tmp_path / f"r{i}{ext}"
        src.write_bytes(data)
        try:
            convert(src, tmp_path / f"r{i}.h5", y_src=y if ext == ".npy" else None)  # labels file: .npy only
        except DataError:
            pass
    _no_temp_left(tmp_path)


# ----------------------------------------------------------------------------- inspect

def test_inspect_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        inspect(tmp_path / "missing.h5")
    txt = tmp_path / "notes.h5"
    txt.write_text("hello\n")
    with pytest.raises(DataError, match=r"notes\.h5 is not an HDF5 file"):
        inspect(txt)
    with pytest.raises(DataError, match="directory"):
        inspect(tmp_path)

    def make(name, **arrays):
        p = tmp_path / name
        with h5py.File(p, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
        return p

    with pytest.raises(DataError, match=r"no dataset 'X' .*'y'"):
        inspect(make("a.h5", y=np.zeros(3)))
    with pytest.raises(DataError, match="no dataset 'target'"):
        inspect(make("b.h5", X=np.zeros((3, 2)), y=np.zeros(3)), y_name="target")
    with pytest.raises(DataError, match="must be 2-D"):
        inspect(make("c.h5", X=np.zeros(3), y=np.zeros(3)))
    with pytest.raises(DataError, match="'y' \\(y\\) has 4 rows but 'X' \\(X\\) has 3"):
        inspect(make("d.h5", X=np.zeros((3, 2)), y=np.zeros(4)))
    with pytest.raises(DataError, match="must be 1-D"):
        inspect(make("e.h5", X=np.zeros((3, 2)), y=np.zeros((3, 1))))
    with pytest.raises(DataError, match="zero features"):
        inspect(make("f.h5", X=np.zeros((3, 0)), y=np.zeros(3)))
    with pytest.raises(DataError, match="zero rows"):
        inspect(make("g.h5", X=np.zeros((0, 2)), y=np.zeros(0)))
    with pytest.raises(DataError, match="dtype string; X must be"):
        inspect(make("h.h5", X=np.array([["a", "b"]], dtype=object).astype("S1"),
                     y=np.zeros(1)))
    with pytest.raises(DataError, match="y must be numeric"):
        inspect(make("i.h5", X=np.zeros((2, 2)), y=np.array([b"a", b"b"])))
    p = tmp_path / "grp.h5"
    with h5py.File(p, "w") as f:
        f.create_group("X")
        f.create_dataset("y", data=np.zeros(2))
    with pytest.raises(DataError, match="is a group"):
        inspect(p)
    ok = make("ok.h5", X=np.zeros((3, 2), dtype=np.int16), y=np.zeros(3, dtype=np.int8))
    info = inspect(ok)
    assert info["n_rows"] == 3 and info["n_features"] == 2 and info["x_dtype"] == np.int16


# ----------------------------------------------------------------------------- read_shard

def _write(path, X, y, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X)
        f.create_dataset("y", data=y)
        for k, v in extra.items():
            f.create_dataset(k, data=v)


@pytest.mark.parametrize("chunk_rows", [7, 65536])
def test_read_shard_comm_self(tmp_path, chunk_rows):
    p = tmp_path / "d.h5"
    generate("softmax", p, rows=101, features=6, classes=3, seed=4, dtype="float32")
    X, y = _read_h5(p)
    s = read_shard(p, _comm_self(), driver="independent", chunk_rows=chunk_rows)
    assert s.driver == "independent" and (s.lo, s.hi, s.n_local) == (0, 101, 101)
    assert s.n_total == 101 and s.n_features == 6 and s.path == str(p)
    assert s.X.dtype == np.float32 and s.X.flags.c_contiguous
    np.testing.assert_array_equal(s.X, X)
    assert s.y.dtype == np.float64 and s.sw.size == 0
    np.testing.assert_array_equal(s.y, y)
    s = read_shard(p, _comm_self(), y_dtype=np.int64, x_dtype=np.float64, chunk_rows=chunk_rows)
    assert s.driver == ("mpio-collective" if h5py_has_mpi() else "independent")
    assert s.y.dtype == np.int64 and s.X.dtype == np.float64
    np.testing.assert_array_equal(s.X, X.astype(np.float64))
    np.testing.assert_array_equal(s.y, y)


def test_read_shard_int_x_weights_and_labels(tmp_path):
    p = tmp_path / "i.h5"
    X = np.arange(40, dtype=np.int32).reshape(10, 4)
    y = np.array([0, 1, 2, 1, 0, 1, 2, 1, 0, 1.0])
    _write(p, X, y, w=np.linspace(0, 1, 10))
    s = read_shard(p, None, driver="independent", y_dtype=np.int64, w_name="w", chunk_rows=3)
    assert s.X.dtype == np.float64
    np.testing.assert_array_equal(s.X, X)
    np.testing.assert_array_equal(s.y, y.astype(np.int64))
    np.testing.assert_array_equal(s.sw, np.linspace(0, 1, 10))
    y2 = y.copy()
    y2[6] = 0.5
    _write(p, X, y2)
    with pytest.raises(DataError, match="0.5 at global row 6"):
        read_shard(p, None, driver="independent", y_dtype=np.int64)
    np.testing.assert_array_equal(read_shard(p, None, driver="independent").y, y2)
    _write(p, X, y, w=-np.ones(10))
    with pytest.raises(DataError, match="global row 0"):
        read_shard(p, None, driver="independent", w_name="w")


def test_read_shard_nonfinite(tmp_path):
    X, y = _xy(n=100, d=5, int_labels=False)
    X[37, 2] = np.nan
    X[80, 1] = np.inf
    p = tmp_path / "nan.h5"
    _write(p, X, y)
    with pytest.raises(DataError, match=r"nan\.h5: dataset 'X' \(X\) has a non-finite value "
                                        r"\(nan\) at global row 37, column 2"):
        read_shard(p, _comm_self(), driver="independent", chunk_rows=10)
    s = read_shard(p, _comm_self(), driver="independent", check_finite=False)
    assert np.isnan(s.X[37, 2])
    X[37, 2] = 0.0
    _write(p, X, y)
    with pytest.raises(DataError) as err:  # Inf: no --impute hint, which fills NaN only
        read_shard(p, _comm_self(), driver="independent", chunk_rows=10)
    assert "(inf) at global row 80, column 1; remove or fix that value (--impute mean fills NaN only)" in str(err.value)
    X[80, 1] = 0.0
    y[12] = -np.inf
    _write(p, X, y)
    with pytest.raises(DataError,
                       match=r"'y' \(y\) has a non-finite value \(-inf\) at global row 12"):
        read_shard(p, _comm_self(), driver="independent", chunk_rows=10)


def test_read_shard_options(tmp_path):
    p = tmp_path / "d.h5"
    generate("linear", p, rows=20, features=3)
    if not h5py_has_mpi():
        with pytest.raises(ConfigError, match="h5py was built without MPI"):
            read_shard(p, _comm_self(), driver="mpio")
    for kw in [dict(driver="posix"), dict(y_dtype=np.complex128), dict(x_dtype=np.int32),
               dict(chunk_rows=0), dict(y_name="")]:
        with pytest.raises(ConfigError):
            read_shard(p, _comm_self(), **kw)
    with pytest.raises(DataError, match="does not exist"):
        read_shard(tmp_path / "nope.h5", _comm_self(), driver="independent")

    class FakeComm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size

    with pytest.raises(DataError, match="20 rows but there are 30 MPI ranks"):
        read_shard(p, FakeComm(5, 30), driver="independent")
    X, y = _read_h5(p)
    parts = [read_shard(p, FakeComm(r, 3), driver="independent", chunk_rows=4) for r in range(3)]
    assert [(s.lo, s.hi) for s in parts] == [(0, 7), (7, 14), (14, 20)]
    np.testing.assert_array_equal(np.concatenate([s.X for s in parts]), X)
    np.testing.assert_array_equal(np.concatenate([s.y for s in parts]), y)


def test_read_block_extra_empty_reads(tmp_path):
    """The collective loop shape: more read calls than needed, the extra ones are empty."""
    p = tmp_path / "d.h5"
    X, y = _xy(n=23, d=3, int_labels=False)
    _write(p, X, y)
    with h5py.File(p, "r") as f:
        out = np.empty((5, 3))
        seen = []
        hdf5_mod._read_block(f["X"], out, 10, 2, 6, None, lambda a, v: seen.append(a))
        np.testing.assert_array_equal(out, X[10:15])
        assert seen == [0, 2, 4]
        yo = np.empty(5)
        hdf5_mod._read_block(f["y"], yo, 18, 4, 3, None)
        np.testing.assert_array_equal(yo, y[18:23])


def test_read_shard_mpio_path_simulated(tmp_path, monkeypatch):
    """The collective code path without parallel h5py: same number of H5Dread calls on
    every rank (empty selections on smaller parts), and no raise while the file is open."""
    p = tmp_path / "d.h5"
    X, y = _xy(n=23, d=3, int_labels=False)
    X[22, 0] = np.nan  # last rank, last row
    _write(p, X, y)
    real_file = h5py.File
    opened = []

    def fake_file(path, mode="r", driver=None, comm=None, **kw):
        if driver == "mpio":
            assert comm is not None
            opened.append(path)
        return real_file(path, mode, **kw)

    calls = []
    real_read_rows = hdf5_mod._read_rows

    def counting_read_rows(dset, dest, start, n, dxpl):
        calls[-1].append(n)
        return real_read_rows(dset, dest, start, n, dxpl)

    monkeypatch.setattr(hdf5_mod, "h5py_has_mpi", lambda: True)
    monkeypatch.setattr(hdf5_mod, "_collective_dxpl", lambda: None)
    monkeypatch.setattr(hdf5_mod, "_read_rows", counting_read_rows)
    monkeypatch.setattr(h5py, "File", fake_file)

    class FakeComm:
        def __init__(self, rank):
            self.rank = rank

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return 4

    parts = []
    for r in range(4):
        calls.append([])
        if r < 3:
            s = read_shard(p, FakeComm(r), chunk_rows=2, check_finite=True)
            assert s.driver == "mpio-collective"
            parts.append(s.X)
        else:
            with pytest.raises(DataError, match="global row 22, column 0"):
                read_shard(p, FakeComm(r), chunk_rows=2)
    assert len(opened) == 4
    # 23 rows on 4 ranks: sizes 6, 6, 6, 5 -> 3 X reads + 3 y reads (chunk 2) on every rank
    assert [len(c) for c in calls] == [6] * 4
    assert calls[3][:3] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(parts), X[:18])


def test_convert_refuses_labels_for_input_that_has_its_own(tmp_path):
    # A separate labels file is for .npy X only: for CSV it was silently ignored.
    src = tmp_path / "d.csv"
    src.write_text("1,0.5,2\n0,1.5,3\n")
    np.save(tmp_path / "y.npy", np.array([0.0, 1.0]))
    with pytest.raises(ConfigError, match=r"--labels \(y_src\) applies to \.npy input only; csv input carries its "
                                          r"labels \(the column --label-col\)"):
        convert(str(src), str(tmp_path / "o.h5"), y_src=str(tmp_path / "y.npy"))
