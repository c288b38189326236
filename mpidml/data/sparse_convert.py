"""Convert svmlight files and raw text to the CSR HDF5 layout (:mod:`mpidml.data.csr`).

``mpidml convert in.svm -o out.h5 --sparse``: svmlight/LIBSVM lines ``label idx:val ...``
parsed exactly as by the dense converter (comments, ``qid:``, one-/zero-based detection,
{-1, +1} labels stored as {0, 1}), written as CSR instead of a dense matrix, so the
feature count is not limited by memory. Two passes over the file in chunks of
``chunk_rows`` lines: the first validates everything and finds the feature range and
label set, the second writes.

``mpidml convert text.tsv -o out.h5 --hash-features 2^18``: one document per line,
``label<TAB>text``, turned into hashed bag-of-words counts (the hashing trick):

* tokenizer: the text after the first TAB is lowercased (``str.lower``) and split into
  maximal runs of Unicode letters and digits (the regular expression ``[^\\W_]+``);
  everything else (spaces, punctuation, underscores) separates tokens;
* hash: FNV-1a 32-bit of the token's UTF-8 bytes (:mod:`mpidml.kernels.hashing`);
  column = h mod 2**k (the low k bits), sign = -1 if bit 31 of h is set, else +1;
* value of (document, column) = the sum of the signs of the document's tokens that hash
  to that column (signed counts: colliding tokens tend to cancel instead of adding up);
  zero sums are not stored; columns are sorted within each row.

Labels: numbers (whole numbers stored as int64 classes; {-1, +1} as {0, 1}) or, if any
label is not a number, names: classes 0..K-1 in sorted order, recorded in the root
attribute ``label_map`` (JSON, name -> class). Blank lines are skipped; a line with no
TAB or an empty label raises DataError naming the line.

The output is written to a temporary file next to ``dst`` and renamed at the end.
Nothing is unpickled; every problem with the input raises DataError naming the line.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ..errors import ConfigError, DataError, MpidmlError
from .convert import _INPUT_ERRORS, _lines, _svm_blocks, svm_layout, svm_scan
from .csr import CSRWriter
from .writer import check_output_path, float_dtype

__all__ = ["convert_sparse", "parse_hash_features", "hash_tokens", "tokenize", "MAX_HASH_BITS"]

MAX_HASH_BITS = 30  # columns are the low k bits of a 32-bit hash; bit 31 gives the sign
_TOKEN = re.compile(r"[^\W_]+")
_MAX_INDEX = 1 << 40
_SVM_EXTENSIONS = (".svm", ".svmlight", ".libsvm")


def parse_hash_features(text) -> int:
    """``"2^18"``, ``"2**18"`` or ``"262144"`` -> k = 18; ConfigError unless a power of two 2..2^30."""
    t = str(text).strip().replace(" ", "")
    k = None
    for sep in ("^", "**"):
        if t.startswith("2" + sep):
            try:
                k = int(t[len(sep) + 1:])
            except ValueError:
                k = None
            break
    else:
        try:
            n = int(t)
            if n > 1 and n & (n - 1) == 0:
                k = n.bit_length() - 1
        except ValueError:
            pass
    if k is None or not 1 <= k <= MAX_HASH_BITS:
        raise ConfigError(f"--hash-features must be a power of two from 2^1 to 2^{MAX_HASH_BITS}, "
                          f"written like 2^18 or 262144; got {text!r}")
    return k


def tokenize(text: str) -> list[str]:
    """The documented tokenizer: lowercase, then maximal runs of Unicode letters/digits."""
    return _TOKEN.findall(text.lower())


def hash_tokens(tokens) -> np.ndarray:
    """uint32 FNV-1a hashes of the UTF-8 encodings of ``tokens`` (a list of str)."""
    from .. import kernels

    encoded = [t.encode("utf-8") for t in tokens]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
    out = np.empty(len(encoded), dtype=np.uint32)
    kernels.fnv1a_32(buf, offsets, out)
    return out


def hashed_rows(texts, k: int):
    """CSR arrays (indptr int64, indices int32, data float64) of the signed hashed counts of ``texts``."""
    tokens, row_of = [], []
    for r, text in enumerate(texts):
        toks = tokenize(text)
        tokens.extend(toks)
        row_of.append(np.full(len(toks), r, dtype=np.int64))
    m = len(texts)
    h = hash_tokens(tokens).astype(np.int64)
    rows = np.concatenate(row_of) if row_of else np.zeros(0, np.int64)
    sign = np.where(h >> 31, -1.0, 1.0)
    key = (rows << k) | (h & ((1 << k) - 1))
    uniq, inverse = np.unique(key, return_inverse=True)
    values = np.bincount(inverse, weights=sign, minlength=uniq.size)
    keep = values != 0
    uniq, values = uniq[keep], values[keep]
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(uniq >> k, minlength=m), out=indptr[1:])
    return indptr, (uniq & ((1 << k) - 1)).astype(np.int32), values


def _text_blocks(src: str, step: int):
    """Yield lists of (line number, label text, document text), skipping blank lines."""
    block = []
    for lineno, line in _lines(src):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        label = label.strip()
        if not tab:
            raise DataError(f"{src} line {lineno}: no TAB; expected label<TAB>text")
        if not label:
            raise DataError(f"{src} line {lineno}: empty label before the TAB")
        block.append((lineno, label, text))
        if len(block) >= step:
            yield block
            block = []
    if block:
        yield block


def _is_number(s: str) -> bool:
    try:
        return np.isfinite(float(s))
    except ValueError:
        return False


class _Labels:
    """Label set seen in pass 1 -> a mapping applied in pass 2.

    Numbers (svmlight always; text while every label parses as a finite number) keep their
    value ({-1, +1} -> {0, 1}); otherwise (text only) the distinct names, sorted, are classes.
    """

    MAX_NAMES = 1 << 20

    def __init__(self):
        self.numeric, self.whole, self.names, self.too_many = True, True, set(), False
        self.pm1, self.neg, self.pos = True, False, False
        self.classes, self.pm1_map = None, False

    def add(self, labels, src: str, linenos) -> None:
        if isinstance(labels, list):  # text: names
            if not self.too_many:
                self.names.update(labels)
                self.too_many = len(self.names) > self.MAX_NAMES
            if not self.numeric:
                return
            if not all(_is_number(s) for s in labels):
                self.numeric = False
                return
            labels = np.array([float(s) for s in labels])
        labels = np.asarray(labels, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(labels))
        if bad.size:
            raise DataError(f"{src} line {linenos[int(bad[0])]}: label {labels[int(bad[0])]} is not finite")
        self.whole = self.whole and bool(np.all(labels == np.floor(labels)))
        self.pm1 = self.pm1 and bool(np.all((labels == 1) | (labels == -1)))
        self.neg = self.neg or bool(np.any(labels == -1))
        self.pos = self.pos or bool(np.any(labels == 1))

    def finish(self, src: str):
        """(y dtype, label_map or None)."""
        if not self.numeric:
            if self.too_many:
                raise DataError(f"{src} has more than {self.MAX_NAMES} distinct non-numeric labels; "
                                "labels must be class names or numbers")
            self.classes = {name: i for i, name in enumerate(sorted(self.names))}
            return np.int64, self.classes
        self.pm1_map = self.pm1 and self.neg and self.pos
        if self.pm1_map:
            return np.int64, {-1: 0, 1: 1}
        return (np.int64 if self.whole else np.float64), None

    def apply(self, labels) -> np.ndarray:
        if self.classes is not None:
            return np.array([self.classes[s] for s in labels], dtype=np.int64)
        y = np.array([float(s) for s in labels]) if isinstance(labels, list) else np.asarray(labels, np.float64)
        return (y > 0).astype(np.float64) if self.pm1_map else y


def _svm_pass1(src: str, step: int, labels: _Labels):
    def check_block(blk, row_line):
        labels.add(blk.labels, src, blk.linenos)
        bad = np.flatnonzero(~np.isfinite(blk.val))
        if bad.size:
            k = int(bad[0])
            raise DataError(f"{src} line {row_line[k]}: value {blk.val[k]} of feature {blk.idx[k]} is not "
                            "finite; sparse files must hold finite values")

    return svm_scan(src, step, check_block)


def _convert_svmlight_csr(src, tmp, *, n_features, zero_based, chunk_rows, dtype, x_name, y_name) -> dict:
    labels = _Labels()
    scan = _svm_pass1(src, chunk_rows, labels)
    n_rows = scan[0]
    zb, offset, d = svm_layout(src, scan, zero_based, n_features,
                               zero_based_fix="use --zero-based true (or auto)", features_option="--features ")
    y_dt, label_map = labels.finish(src)
    writer = CSRWriter(tmp, dtype, np.int32 if d <= np.iinfo(np.int32).max else np.int64, x_name, y_name, y_dt)
    writer.open()
    try:
        for blk in _svm_blocks(src, chunk_rows):
            m = blk.labels.shape[0]
            if m == 0:
                continue
            indptr = np.zeros(m + 1, dtype=np.int64)
            np.cumsum(blk.counts, out=indptr[1:])
            cols = blk.idx - offset
            if cols.size and (cols.min() < 0 or cols.max() >= d):  # the file changed since pass 1
                raise DataError(f"{src} changed while being converted; try again")
            writer.append(indptr, cols, blk.val, labels.apply(blk.labels))
        if writer.n_rows != n_rows:
            raise DataError(f"{src} changed while being converted; try again")
        writer.finish(d, _attrs(src, "svmlight", label_map, zero_based=zb))
    finally:
        writer.close()
    return {"rows": n_rows, "features": d, "nnz": writer.nnz, "zero_based": zb, "label_map": label_map,
            "y_dtype": str(np.dtype(y_dt))}


def _convert_text_hashed(src, tmp, *, k, chunk_rows, dtype, x_name, y_name) -> dict:
    labels = _Labels()
    n_rows = 0
    for block in _text_blocks(src, chunk_rows):
        labels.add([b[1] for b in block], src, [b[0] for b in block])
        n_rows += len(block)
    if n_rows == 0:
        raise DataError(f"{src} is empty (no label<TAB>text lines)")
    y_dt, label_map = labels.finish(src)
    writer = CSRWriter(tmp, dtype, np.int32, x_name, y_name, y_dt)
    writer.open()
    try:
        for block in _text_blocks(src, chunk_rows):
            indptr, indices, data = hashed_rows([b[2] for b in block], k)
            writer.append(indptr, indices, data, labels.apply([b[1] for b in block]))
        if writer.n_rows != n_rows:
            raise DataError(f"{src} changed while being converted; try again")
        attrs = _attrs(src, "text", label_map)
        attrs.update({"hash": "fnv1a_32", "hash_bits": k, "tokenizer": "lowercase; [^\\W_]+ (Unicode letters/digits)",
                      "hash_sign": "bit 31 set -> -1"})
        writer.finish(1 << k, attrs)
    finally:
        writer.close()
    return {"rows": n_rows, "features": 1 << k, "nnz": writer.nnz, "hash_bits": k, "label_map": label_map,
            "y_dtype": str(np.dtype(y_dt))}


def _attrs(src, fmt, label_map, **extra) -> dict:
    out = {"source": os.path.basename(src).encode("utf-8", "backslashreplace").decode("utf-8"), "format": fmt,
           "layout": "csr",
           "label_map": None if label_map is None else json.dumps({str(a): b for a, b in label_map.items()})}
    out.update(extra)
    return out


def convert_sparse(src, dst, *, fmt="auto", hash_features=None, n_features=None, zero_based="auto",
                   dtype="float64", chunk_rows=65536, overwrite=False, x_name="X", y_name="y",
                   unsupported=()) -> dict:
    """Convert ``src`` (svmlight, or label<TAB>text with ``hash_features``) to a CSR HDF5 file ``dst``.

    ``hash_features``: None for svmlight input, else the number of hashed columns (k from
    :func:`parse_hash_features`, as "2^k" or an int). Returns ``{'rows', 'features', 'nnz',
    'format', 'src', 'dst', 'x_dtype', 'y_dtype', 'label_map', 'layout': 'csr', ...}``.
    Runs on one process (text has no random access to rows). Bad options raise
    ConfigError, bad input DataError naming the line; ``unsupported`` lists command-line
    flags the caller was given that do not apply here (ConfigError naming the first).
    """
    if unsupported:
        raise ConfigError(f"{unsupported[0]} does not apply to --sparse / --hash-features conversion "
                          "(CSR output is written by rank 0, chunked)")
    try:
        src, dst = os.fspath(src), os.fspath(dst)
    except TypeError:
        raise ConfigError("src and dst must be strings or paths") from None
    if hash_features is not None:
        k = parse_hash_features(hash_features)
        fmt = "text"
        if n_features is not None:
            raise ConfigError("--features does not apply to --hash-features (the feature count is 2^k)")
    elif fmt == "svmlight" or (fmt == "auto" and os.path.splitext(src)[1].lower() in _SVM_EXTENSIONS):
        fmt = "svmlight"
    else:
        raise ConfigError(f"--sparse converts svmlight files ({', '.join(_SVM_EXTENSIONS)} or --format svmlight), "
                          f"not {src if fmt == 'auto' else fmt}; for label<TAB>text lines use --hash-features 2^K")
    if zero_based not in ("auto", True, False):
        raise ConfigError(f"zero_based must be 'auto', True or False, got {zero_based!r}")
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer))
                                   or not 1 <= n_features <= _MAX_INDEX):
        raise ConfigError(f"--features must be a positive integer, got {n_features!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be a positive integer, got {chunk_rows!r}")
    dt = float_dtype(dtype)
    if not os.path.exists(src):
        raise DataError(f"input file {src} does not exist; check the path")
    if os.path.isdir(src):
        raise DataError(f"input path {src} is a directory, not a file")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ConfigError(f"output {dst} is the same file as the input {src}")
    check_output_path(dst, overwrite, "use --overwrite to replace it")

    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        if fmt == "text":
            info = _convert_text_hashed(src, tmp, k=k, chunk_rows=int(chunk_rows), dtype=dt, x_name=x_name,
                                        y_name=y_name)
        else:
            info = _convert_svmlight_csr(src, tmp, n_features=n_features, zero_based=zero_based,
                                         chunk_rows=int(chunk_rows), dtype=dt, x_name=x_name, y_name=y_name)
        os.replace(tmp, dst)
    except MpidmlError:
        raise
    except _INPUT_ERRORS + (MemoryError,) as exc:
        text = str(exc).strip()
        msg = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise DataError(f"cannot convert {src} to {dst}: {msg}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    info.update({"format": fmt, "src": src, "dst": dst, "x_dtype": str(dt), "layout": "csr", "written": True,
                 "write": "root"})
    return info
