"""mpidml convert --sparse (svmlight -> CSR) and --hash-features (label<TAB>text -> hashed CSR).

References: scikit-learn's load_svmlight_file for svmlight, and a tiny pure-Python
implementation of the documented tokenizer + FNV-1a signed hashing for text.
"""
import json

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpidml.data.csr import read_csr_shard
from mpidml.data.sparse_convert import convert_sparse, hash_tokens, parse_hash_features
from mpidml.errors import ConfigError, DataError

from test_cli import MPIDML, run


def read_back(path):
    with h5py.File(path) as f:
        g = f["X"]
        A = sp.csr_matrix((g["data"][...], g["indices"][...], g["indptr"][...]), shape=tuple(g.attrs["shape"]))
        return A, f["y"][...], dict(f.attrs)


SVM = """# a comment line
+1 3:1.5 10:-2 # trailing comment
-1 qid:4 1:0.25 2:1e3
-1
+1 1:-1 7:3
"""


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_svmlight_to_csr_equals_sklearn(tmp_path, chunk_rows):
    from sklearn.datasets import load_svmlight_file

    src = tmp_path / "a.svm"
    src.write_text(SVM)
    info = convert_sparse(src, tmp_path / "a.h5", chunk_rows=chunk_rows, dtype="float32")
    A, y, attrs = read_back(tmp_path / "a.h5")
    X_ref, y_ref = load_svmlight_file(str(src), zero_based=False, n_features=10)
    assert A.shape == (4, 10) and info["features"] == 10 and info["nnz"] == 6 and A.dtype == np.float32
    np.testing.assert_array_equal(A.toarray(), X_ref.toarray().astype(np.float32))
    np.testing.assert_array_equal(y, (y_ref > 0).astype(np.int64))
    assert y.dtype == np.int64 and json.loads(attrs["label_map"]) == {"-1": 0, "1": 1}
    assert info["zero_based"] is False


def test_svmlight_zero_based_and_n_features(tmp_path):
    from sklearn.datasets import load_svmlight_file

    src = tmp_path / "z.svmlight"
    src.write_text("2 0:1 4:2.5\n0.5 3:-1\n")
    convert_sparse(src, tmp_path / "z.h5", n_features=20)
    A, y, _ = read_back(tmp_path / "z.h5")
    X_ref, y_ref = load_svmlight_file(str(src), zero_based=True, n_features=20)
    np.testing.assert_array_equal(A.toarray(), X_ref.toarray())
    np.testing.assert_array_equal(y, y_ref)
    assert y.dtype == np.float64  # 0.5 is not a class label
    s = read_csr_shard(str(tmp_path / "z.h5"), parts=(2, 1))
    assert s.lo == 1 and list(s.indices) == [3]


@pytest.mark.parametrize("text,words", [
    ("1 3:x\n", "line 1: bad value"),
    ("1 a:1\n", "line 1: bad feature index"),
    ("1 1:1\n0 -2:1\n", "line 2: negative feature index"),
    ("1 2:1 2:3\n", "line 1: feature index 2 appears twice"),
    ("1 2:nan\n", "line 1: value nan of feature 2 is not finite"),
    ("yes 2:1\n", "line 1: label 'yes' is not a number"),
    ("\n# only comments\n", "is empty"),
    ("1 5:1\n", "line 1: feature index 5 is out of range for --features 3"),
])
def test_bad_svmlight_is_one_data_error(tmp_path, text, words):
    src = tmp_path / "bad.svm"
    src.write_text(text)
    n = 3 if "out of range" in words else None
    with pytest.raises(DataError, match=words):
        convert_sparse(src, tmp_path / "bad.h5", n_features=n)
    assert not (tmp_path / "bad.h5").exists()
    assert not list(tmp_path.glob("bad.h5.tmp*"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80) | st.text(alphabet="0123456789:-+. #\nqide\t", max_size=80))
def test_fuzzed_input_converts_or_raises_data_error(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("fuzz")
    src = d / "f.svm"
    src.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    for kwargs in ({}, {"hash_features": "2^4"}):
        try:
            convert_sparse(src, d / "f.h5", overwrite=True, **kwargs)
        except DataError as e:
            assert "\n" not in str(e)
        else:
            A, y, _ = read_back(d / "f.h5")
            assert A.shape[0] == y.shape[0] >= 1 and np.all(np.isfinite(A.data))


# ---------------------------------------------------------------- hashed text: a pure-Python reference

def fnv1a_py(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % (1 << 32)
    return h


def tokens_py(text):
    out, cur = [], []
    for ch in text.lower():
        if ch.isalnum():  # letters and digits of any script; '_' and punctuation separate
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def hashed_py(text, k):
    row = {}
    for tok in tokens_py(text):
        h = fnv1a_py(tok.encode("utf-8"))
        j, s = h % (1 << k), (-1.0 if h >= 1 << 31 else 1.0)
        row[j] = row.get(j, 0.0) + s
    return {j: v for j, v in row.items() if v != 0}


def test_fnv1a_published_vectors():
    h = hash_tokens(["", "a", "foobar"])
    assert [int(x) for x in h] == [0x811C9DC5, 0xE40C292C, 0xBF9CF968]
    assert all(int(x) == fnv1a_py(t.encode()) for x, t in zip(hash_tokens(["Ünïcödé", "x" * 50]), ["Ünïcödé", "x" * 50]))


DOCS = [
    ("spam", "Buy NOW!!! cheap pills, buy buy... visit http://x.example/buy_now"),
    ("ham", "Meeting at 10:30 -- see you there; the agenda is attached."),
    ("ham", "Straße café naïve 東京 2024 don't"),
    ("spam", "!!! ... ???"),  # no tokens: an empty row
    ("eggs", "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c"),
]


@pytest.mark.parametrize("k,chunk_rows", [(18, 1000), (2, 2), (3, 1)])
def test_hashed_text_equals_reference(tmp_path, k, chunk_rows):
    src = tmp_path / "docs.tsv"
    src.write_text("\n".join(f"{label}\t{text}" for label, text in DOCS) + "\n\n", encoding="utf-8")
    info = convert_sparse(src, tmp_path / "d.h5", hash_features=f"2^{k}", chunk_rows=chunk_rows)
    A, y, attrs = read_back(tmp_path / "d.h5")
    assert A.shape == (5, 2 ** k) and info["hash_bits"] == k
    for r, (_, text) in enumerate(DOCS):
        row = A[r]
        assert list(row.indices) == sorted(row.indices)  # sorted columns
        assert dict(zip(row.indices.tolist(), row.data.tolist())) == hashed_py(text, k)
    names = {"eggs": 0, "ham": 1, "spam": 2}
    assert json.loads(attrs["label_map"]) == names
    np.testing.assert_array_equal(y, [names[label] for label, _ in DOCS])
    assert attrs["hash"] == "fnv1a_32" and attrs["hash_bits"] == k
    if k == 2:
        assert np.any(A.data < 0) and np.any(np.abs(A.data) > 1)  # collisions: signed sums


def test_numeric_text_labels_and_bad_lines(tmp_path):
    src = tmp_path / "n.txt"
    src.write_text("1\thello world\n-1\tHello\n")
    convert_sparse(src, tmp_path / "n.h5", hash_features="1024")
    _, y, attrs = read_back(tmp_path / "n.h5")
    assert list(y) == [1, 0] and json.loads(attrs["label_map"]) == {"-1": 0, "1": 1}
    src.write_text("1\thello\nno tab here\n")
    with pytest.raises(DataError, match="line 2: no TAB"):
        convert_sparse(src, tmp_path / "m.h5", hash_features="2^4")
    src.write_text("\thello\n")
    with pytest.raises(DataError, match="line 1: empty label"):
        convert_sparse(src, tmp_path / "m.h5", hash_features="2^4")
    src.write_bytes(b"1\t\xff\xfe\n")
    with pytest.raises(DataError, match="line 1: not valid UTF-8"):
        convert_sparse(src, tmp_path / "m.h5", hash_features="2^4")


@pytest.mark.parametrize("text", ["2^0", "2^31", "1000", "x", "2^", "-4", "2**40"])
def test_bad_hash_features(text):
    with pytest.raises(ConfigError, match="--hash-features must be a power of two"):
        parse_hash_features(text)
    assert parse_hash_features("2**5") == parse_hash_features("32") == parse_hash_features(" 2^5 ") == 5


def test_cli_convert_hash_then_train(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "the", "a", "movie", "plot"]
    lines = []
    for _ in range(120):
        y = int(rng.integers(0, 2))
        pool = words[:3] if y else words[3:6]
        text = " ".join(rng.choice(pool + words[6:], size=6))
        lines.append(f"{'pos' if y else 'neg'}\t{text.upper() if rng.random() < 0.3 else text}")
    (tmp_path / "reviews.tsv").write_text("\n".join(lines) + "\n")
    proc = run(MPIDML + ["convert", str(tmp_path / "reviews.tsv"), "--hash-features", "2^12", "-o",
                         str(tmp_path / "r.h5")], ranks=2)
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["rows"] == 120 and meta["features"] == 4096 and meta["layout"] == "csr"
    run(MPIDML + ["train", str(tmp_path / "r.h5"), "--optimizer", "adam", "--lr", "0.1", "--batch-size", "16",
                  "--epochs", "5", "--out", str(tmp_path / "run")], ranks=2)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["accuracy"] >= 0.95  # the labels are a function of the words: separable

    bad = run(MPIDML + ["convert", str(tmp_path / "reviews.tsv"), "--sparse", "-o", str(tmp_path / "x.h5")],
              ranks=2, check=False)
    assert bad.returncode == 2 and bad.stderr.count("mpidml: error:") == 1 and "--hash-features 2^K" in bad.stderr
    bad = run(MPIDML + ["convert", str(tmp_path / "reviews.tsv"), "--hash-features", "2^12", "--layout", "chunked",
                        "-o", str(tmp_path / "x.h5")], check=False)
    assert bad.returncode == 2 and "--layout does not apply" in bad.stderr
