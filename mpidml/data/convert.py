"""Convert npy / npz / CSV / svmlight files to the dense HDF5 layout.

Everything streams in chunks of at most ``chunk_rows`` rows (lowered for very
wide data so one chunk holds at most 2**24 values), so inputs larger than
memory work:

* ``.npy``: X memory-mapped (``np.load(mmap_mode='r', allow_pickle=False)``),
  labels from a second ``.npy`` given as ``y_src``.
* ``.npz``: members ``x_key`` and ``y_key``; each member's ``.npy`` header is
  read through :mod:`zipfile` and its bytes are streamed (stored or
  compressed members, never fully loaded).
* ``.csv`` / ``.tsv`` / ``.txt``: one row per line, label in column
  ``label_col`` (negative counts from the end). ``delimiter=None``: tab for
  ``.tsv``, otherwise guessed from the first line (comma, tab, semicolon, else
  whitespace). ``has_header='auto'``: the first line is a header when one of
  its fields is not a number. Blank lines and lines starting with ``#`` are
  skipped.
* ``.svm`` / ``.svmlight`` / ``.libsvm``: ``label idx:val idx:val ...``;
  text after ``#`` is a comment, ``qid:`` tokens are ignored, missing entries
  are 0. ``zero_based='auto'``: zero-based when index 0 appears, otherwise
  one-based (LIBSVM). ``n_features`` defaults to the largest index found in a
  first pass. When the labels are exactly {-1, +1} they are stored as {0, 1}
  and the root attribute ``label_map`` records it (JSON ``{"-1": 0, "1": 1}``).

Output: ``X`` (N, D) as ``dtype`` and ``y`` (N,) int64 when every label is a
whole number, else float64. NaN/Inf values in X are kept (training rejects
them). The output is written to a temporary file next to ``dst`` and renamed
at the end. Every problem with the input raises DataError naming the file and
line/row; bad options raise ConfigError. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib

import h5py
import numpy as np

from ..errors import ConfigError, DataError, MpidmlError
from .partition import shard_bounds
from .writer import any_rank, check_output_path, collective_dxpl, create_rows_dataset, float_dtype, resolve_layout, \
    resolve_write, shared_tmp_name, write_rows

__all__ = ["convert", "FORMATS"]

FORMATS = ("auto", "npy", "npz", "csv", "svmlight")
_EXTENSIONS = {
    ".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".svm": "svmlight", ".svmlight": "svmlight", ".libsvm": "svmlight",
}
_MAX_CHUNK_ELEMENTS = 1 << 24   # values per in-memory chunk (128 MiB of float64)
_MAX_FEATURES = 1 << 24         # dense output wider than this is certainly a mistake
_OUT_CHUNK_BYTES = 1 << 20      # HDF5 chunk size for resizable (CSV) output
_MAX_EXACT_INT = 2.0 ** 53

# What parsing/reading code may raise on malformed input; turned into DataError.
_INPUT_ERRORS = (ValueError, TypeError, OSError, EOFError, UnicodeError, IndexError,
                 KeyError, OverflowError, zipfile.BadZipFile, zlib.error, struct.error,
                 RuntimeError)


# --------------------------------------------------------------------------- output

class _Output:
    """Temporary HDF5 file + a raw float64 spill file for y (its dtype is known at the end)."""

    def __init__(self, tmp_path: str, x_name: str, y_name: str, dtype: np.dtype):
        self.tmp_path = tmp_path
        self.y_path = tmp_path + ".y"
        self.x_name, self.y_name, self.dtype = x_name, y_name, dtype
        self.f = None
        self.yfile = None
        self.X = None
        self.resizable = False
        self.nx = 0
        self.ny = 0
        self.all_int = True
        self.layout = None       # None: contiguous when the row count is known, else chunked
        self.chunk_size = None   # HDF5 chunk rows requested (chunked layout)
        self.chunk_rows = None   # HDF5 chunk rows used (None: contiguous)

    def open(self):
        self.f = h5py.File(self.tmp_path, "w")
        self.yfile = open(self.y_path, "wb")

    def start(self, n_features: int, n_rows: int | None = None):
        if n_rows is None:
            if self.chunk_size is not None:
                crow = self.chunk_size
            else:
                crow = max(1, min(65536, _OUT_CHUNK_BYTES // (n_features * self.dtype.itemsize)))
            self.X = self.f.create_dataset(self.x_name, shape=(0, n_features),
                                           maxshape=(None, n_features),
                                           chunks=(crow, n_features), dtype=self.dtype)
            self.resizable = True
            self.chunk_rows = crow
        else:
            _, self.chunk_rows = resolve_layout(self.layout or "contiguous", self.chunk_size,
                                                n_rows, n_features, self.dtype.itemsize)
            self.X = create_rows_dataset(self.f, self.x_name, n_rows, n_features, self.dtype,
                                         self.chunk_rows)

    def put_x(self, Xc: np.ndarray):
        n = Xc.shape[0]
        if n == 0:
            return
        if self.resizable:
            self.X.resize(self.nx + n, axis=0)
        self.X[self.nx:self.nx + n] = np.asarray(Xc, dtype=self.dtype)
        self.nx += n

    def put_x_column(self, j: int, start: int, v: np.ndarray):
        self.X[start:start + v.shape[0], j] = np.asarray(v, dtype=self.dtype)

    def put_y(self, yc: np.ndarray):
        y = np.ascontiguousarray(yc, dtype=np.float64)
        if self.all_int and y.size:
            self.all_int = bool(np.all(np.isfinite(y) & (np.abs(y) <= _MAX_EXACT_INT)
                                       & (y == np.trunc(y))))
        y.tofile(self.yfile)
        self.ny += y.shape[0]

    def finish(self, n_rows: int, step: int, attrs: dict) -> np.dtype:
        self.yfile.close()
        self.yfile = None
        y_dt = np.dtype(np.int64 if self.all_int else np.float64)
        if self.resizable or self.chunk_rows is not None:
            Y = create_rows_dataset(self.f, self.y_name, n_rows, None, y_dt,
                                    min(self.chunk_rows, n_rows))
        else:
            Y = create_rows_dataset(self.f, self.y_name, n_rows, None, y_dt, None)
        with open(self.y_path, "rb") as fh:
            for a in range(0, n_rows, step):
                n = min(step, n_rows - a)
                v = np.fromfile(fh, dtype=np.float64, count=n)
                if v.shape[0] != n:  # pragma: no cover - our own spill file
                    raise OSError(f"temporary label file {self.y_path} is short")
                Y[a:a + n] = v.astype(y_dt)
        for key, val in attrs.items():
            if val is not None:
                self.f.attrs[key] = val
        self.f.close()
        self.f = None
        return y_dt

    def cleanup(self):
        for obj in (self.yfile, self.f):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        self.yfile = self.f = None
        for p in (self.y_path, self.tmp_path):
            if os.path.exists(p):
                try:
                    os.remove(p)
                except OSError:
                    pass


# --------------------------------------------------------------------------- helpers

def _step(chunk_rows: int, n_cols: int) -> int:
    return int(max(1, min(chunk_rows, _MAX_CHUNK_ELEMENTS // max(1, n_cols))))


def _check_numeric(dt: np.dtype, where: str, role: str):
    if dt.hasobject:
        raise DataError(f"{where} holds Python objects (pickled data), which are never loaded; "
                        f"save {role} as a numeric array")
    if dt.names is not None or dt.subdtype is not None:
        raise DataError(f"{where} has a structured dtype {dt}; save {role} as a plain "
                        "numeric array")
    if dt.kind not in "biuf":
        raise DataError(f"{where} has dtype {dt}; {role} must be numeric (bool, int or float)")


def _npy_header(fp, where: str):
    """Read an .npy header from ``fp``: (shape, fortran_order, dtype); DataError if malformed."""
    try:
        version = np.lib.format.read_magic(fp)
    except _INPUT_ERRORS as exc:
        raise DataError(f"{where} is not a valid .npy array (bad magic/header: {exc})") from None
    try:
        if version == (1, 0):
            shape, fortran, dt = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dt = np.lib.format.read_array_header_2_0(fp)
        else:
            raise DataError(f"{where} uses .npy format version {version[0]}.{version[1]}, which is "
                            "only needed for structured arrays; save a plain numeric array")
    except MpidmlError:
        raise
    except Exception as exc:  # numpy parses the header with ast: SyntaxError, TokenError, ...
        raise DataError(f"{where} has a malformed .npy header "
                        f"({type(exc).__name__})") from None
    dt = np.dtype(dt)
    return tuple(int(s) for s in shape), bool(fortran), dt


def _check_x_shape(shape, where: str):
    if len(shape) != 2:
        raise DataError(f"{where}: X must be 2-D (rows, features), got shape {shape}")
    if shape[0] == 0:
        raise DataError(f"{where}: X has zero rows; nothing to convert")
    if shape[1] == 0:
        raise DataError(f"{where}: X has zero features (shape {shape})")
    if shape[1] > _MAX_FEATURES:
        raise DataError(f"{where}: X has {shape[1]} features, more than the {_MAX_FEATURES} "
                        "supported for dense data")


def _check_y_shape(shape, n_rows: int, where: str, x_where: str):
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise DataError(f"{where}: labels must be 1-D (one per row), got shape {shape}")
    if shape[0] != n_rows:
        raise DataError(f"{where} has {shape[0]} labels but {x_where} has {n_rows} rows; "
                        "they must match")


def _read_exact(fp, nbytes: int, where: str) -> bytes:
    parts = []
    left = nbytes
    while left > 0:
        b = fp.read(left)
        if not b:
            raise DataError(f"{where} is truncated: expected {nbytes} more bytes of array data")
        parts.append(b)
        left -= len(b)
    return b"".join(parts) if len(parts) != 1 else parts[0]


# --------------------------------------------------------------------------- npy

def _load_npy(path: str, role: str):
    if not os.path.isfile(path):
        raise DataError(f"{role} file {path} does not exist; check the path")
    with open(path, "rb") as fp:
        shape, _, dt = _npy_header(fp, path)
    _check_numeric(dt, path, role)
    if 0 in shape:
        return None, shape, dt
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except _INPUT_ERRORS as exc:
        raise DataError(f"{path} is not a readable .npy array (truncated?): {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path} is not a single .npy array; use fmt 'npz' for archives")
    return arr, tuple(arr.shape), arr.dtype


def _convert_npy(src, y_src, out: _Output, chunk_rows: int) -> dict:
    if y_src is None:
        raise ConfigError(f"{src} is a .npy file holding X only; give the labels as a second .npy "
                          "file (--labels y.npy; y_src in Python)")
    X, xshape, _ = _load_npy(src, "X")
    _check_x_shape(xshape, src)
    Y, yshape, _ = _load_npy(y_src, "y")
    _check_y_shape(yshape, xshape[0], y_src, src)
    n, d = xshape
    Y = Y.reshape(-1)
    out.start(d, n)
    step = _step(chunk_rows, d)
    for a in range(0, n, step):
        b = min(n, a + step)
        out.put_x(X[a:b])
        out.put_y(Y[a:b])
    return {"rows": n, "features": d}


# --------------------------------------------------------------------------- npz

class _NpzMember:
    def __init__(self, zf: zipfile.ZipFile, src: str, key: str, role: str):
        names = zf.namelist()
        name = key + ".npy" if key + ".npy" in names else key if key in names else None
        if name is None:
            keys = [n[:-4] if n.endswith(".npy") else n for n in names]
            shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
            raise DataError(f"{src} has no array '{key}' for {role} (arrays: {shown or 'none'}); "
                            f"pass the right key")
        self.zf, self.info, self.where = zf, zf.getinfo(name), f"{src}['{key}']"
        self.role = role
        with zf.open(self.info) as fp:
            self.shape, self.fortran, self.dtype = _npy_header(fp, self.where)
            self.header_len = fp.tell()
        _check_numeric(self.dtype, self.where, role)
        count = 1
        for s in self.shape:
            count *= s
        self.count = count
        if self.info.file_size - self.header_len != count * self.dtype.itemsize:
            raise DataError(f"{self.where} is truncated or inconsistent: header says shape "
                            f"{self.shape} of {self.dtype} but the member holds "
                            f"{self.info.file_size - self.header_len} data bytes")

    def open(self):
        fp = self.zf.open(self.info)
        _read_exact(fp, self.header_len, self.where)
        return fp

    def rows(self, step: int, n_cols: int):
        """Yield C-order blocks of ``step`` rows (each ``n_cols`` values)."""
        n = self.shape[0]
        row_bytes = n_cols * self.dtype.itemsize
        with self.open() as fp:
            for a in range(0, n, step):
                m = min(step, n - a)
                buf = _read_exact(fp, m * row_bytes, self.where)
                yield np.frombuffer(buf, dtype=self.dtype).reshape(m, n_cols)

    def columns(self, step: int):
        """Fortran order: yield (column, start_row, values) pieces."""
        n, d = self.shape
        with self.open() as fp:
            for j in range(d):
                for a in range(0, n, step):
                    m = min(step, n - a)
                    buf = _read_exact(fp, m * self.dtype.itemsize, self.where)
                    yield j, a, np.frombuffer(buf, dtype=self.dtype)


def _convert_npz(src, x_key, y_key, out: _Output, chunk_rows: int) -> dict:
    try:
        zf = zipfile.ZipFile(src)
    except Exception as exc:
        raise DataError(f"{src} is not a valid .npz (zip) archive: {exc}") from None
    with zf:
        try:
            return _stream_npz(zf, src, x_key, y_key, out, chunk_rows)
        except MpidmlError:
            raise
        except Exception as exc:  # zipfile/zlib/lzma/bz2 errors from a damaged archive
            text = str(exc).strip()
            msg = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
            raise DataError(f"{src} is a damaged or unsupported .npz archive ({msg})") from exc


def _stream_npz(zf, src, x_key, y_key, out: _Output, chunk_rows: int) -> dict:
    xm = _NpzMember(zf, src, x_key, "X")
    _check_x_shape(xm.shape, xm.where)
    ym = _NpzMember(zf, src, y_key, "y")
    _check_y_shape(ym.shape, xm.shape[0], ym.where, xm.where)
    n, d = xm.shape
    out.start(d, n)
    step = _step(chunk_rows, d)
    if xm.fortran and d > 1:
        for j, a, v in xm.columns(_step(chunk_rows, 1)):
            out.put_x_column(j, a, v)
        out.nx = n
    else:
        for block in xm.rows(step, d):
            out.put_x(block)
    for block in ym.rows(_step(chunk_rows, 1), 1):
        out.put_y(block[:, 0])
    return {"rows": n, "features": d}


# --------------------------------------------------------------------------- text

def _lines(path: str):
    """Yield (line_number, text) without the line ending; DataError on bad UTF-8."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path} line {lineno}: not valid UTF-8 text "
                                "(is this a binary file?)") from None
            yield lineno, text.rstrip("\r\n")


def _float(tok: str) -> float:
    return float(tok.strip())


def _is_number(tok: str) -> bool:
    try:
        _float(tok)
        return True
    except ValueError:
        return False


def _split(line: str, delim):
    return line.split() if delim is None else line.split(delim)


def _guess_delimiter(line: str):
    for cand in (",", "\t", ";"):
        if cand in line:
            return cand
    return None


def _describe_delim(delim) -> str:
    return "whitespace" if delim is None else repr(delim)


def _parse_csv_block(block, src: str, delim, n_cols: int) -> np.ndarray:
    texts = [t for _, t in block]
    try:
        arr = np.loadtxt(texts, delimiter=delim, dtype=np.float64, ndmin=2, comments=None)
        if arr.shape == (len(texts), n_cols):
            return arr
    except Exception:
        pass
    # Slow path: authoritative, finds the exact line/field of the problem.
    arr = np.empty((len(texts), n_cols), dtype=np.float64)
    for i, (lineno, text) in enumerate(block):
        fields = _split(text, delim)
        if len(fields) != n_cols:
            raise DataError(f"{src} line {lineno}: expected {n_cols} fields separated by "
                            f"{_describe_delim(delim)}, found {len(fields)}")
        for c, tok in enumerate(fields):
            try:
                arr[i, c] = _float(tok)
            except ValueError:
                what = "is empty (missing value)" if not tok.strip() else \
                    f"{tok.strip()[:40]!r} is not a number"
                raise DataError(f"{src} line {lineno}, column {c + 1}: {what}") from None
    return arr


def _convert_csv(src, out: _Output, *, label_col, delimiter, has_header, n_features,
                 chunk_rows) -> dict:
    ext = os.path.splitext(src)[1].lower()
    lines = _lines(src)
    first = None
    for lineno, text in lines:
        if text.strip() and not text.lstrip().startswith("#"):
            first = (lineno, text)
            break
    if first is None:
        raise DataError(f"{src} is empty (no data lines)")
    delim = delimiter
    if delim is None:
        delim = "\t" if ext == ".tsv" else _guess_delimiter(first[1])
    fields = _split(first[1], delim)
    n_cols = len(fields)
    numeric = all(_is_number(t) for t in fields)
    header = (not numeric) if has_header == "auto" else bool(has_header)
    if n_cols < 2:
        raise DataError(f"{src} line {first[0]}: found {n_cols} column with delimiter "
                        f"{_describe_delim(delim)}; need a label column and at least one "
                        "feature column (set the delimiter?)")
    lc = label_col + n_cols if label_col < 0 else label_col
    if not 0 <= lc < n_cols:
        raise ConfigError(f"label_col {label_col} (--label-col) is out of range for {src}, which has "
                          f"{n_cols} columns")
    d = n_cols - 1
    if n_features is not None and n_features != d:
        raise DataError(f"{src} line {first[0]}: has {d} feature columns but n_features="
                        f"{n_features} (--features) was given")
    if out.layout == "contiguous":
        # A fixed-size (contiguous) X needs the row count first: one cheap pass without parsing.
        n_data = sum(1 for _, t in _lines(src) if t.strip() and not t.lstrip().startswith("#"))
        out.start(d, max(1, n_data - (1 if header else 0)))
    else:
        out.start(d, None)
    step = _step(chunk_rows, n_cols)
    rows = 0

    def flush(block):
        arr = _parse_csv_block(block, src, delim, n_cols)
        out.put_y(arr[:, lc])
        out.put_x(np.delete(arr, lc, axis=1))
        return arr.shape[0]

    block = [] if header else [first]
    for lineno, text in lines:
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        block.append((lineno, text))
        if len(block) >= step:
            rows += flush(block)
            block = []
    if block:
        rows += flush(block)
    if rows == 0:
        raise DataError(f"{src} has a header line but no data rows")
    if not out.resizable and out.X.shape[0] != rows:
        raise DataError(f"{src} changed while being converted; try again")
    return {"rows": rows, "features": d, "has_header": header,
            "delimiter": "whitespace" if delim is None else delim, "label_col": lc}


# --------------------------------------------------------------------------- svmlight

class _SvmBlock:
    __slots__ = ("labels", "idx", "val", "counts", "linenos")


def _svm_line_slow(src: str, lineno: int, toks: list):
    """Parse one line's tokens authoritatively: (label, [idx], [val]); DataError if bad."""
    try:
        label = _float(toks[0])
    except ValueError:
        raise DataError(f"{src} line {lineno}: label {toks[0][:40]!r} is not a number") from None
    idxs, vals = [], []
    for tok in toks[1:]:
        i, sep, v = tok.partition(":")
        if i == "qid":
            continue
        if not sep:
            raise DataError(f"{src} line {lineno}: bad token {tok[:40]!r}; expected index:value")
        try:
            idx = int(i)
        except ValueError:
            raise DataError(f"{src} line {lineno}: bad feature index in {tok[:40]!r}; "
                            "expected a non-negative integer") from None
        if idx < 0:
            raise DataError(f"{src} line {lineno}: negative feature index {idx}")
        if idx > _MAX_FEATURES * 64:
            raise DataError(f"{src} line {lineno}: feature index {idx} is too large")
        try:
            val = _float(v)
        except ValueError:
            raise DataError(f"{src} line {lineno}: bad value in {tok[:40]!r}; "
                            "expected index:number") from None
        idxs.append(idx)
        vals.append(val)
    return label, idxs, vals


def _parse_svm_block(block, src: str) -> _SvmBlock:
    labels, idx_s, val_s, counts, linenos, tokens = [], [], [], [], [], []
    for lineno, text in block:
        toks = text.split("#", 1)[0].split()
        if not toks:
            continue
        tokens.append(toks)
        labels.append(toks[0])
        cnt = 0
        for tok in toks[1:]:
            i, sep, v = tok.partition(":")
            if i == "qid":
                continue
            idx_s.append(i if sep else "?")
            val_s.append(v)
            cnt += 1
        counts.append(cnt)
        linenos.append(lineno)
    out = _SvmBlock()
    try:
        out.labels = np.array(labels, dtype=np.float64)
        out.idx = np.array(idx_s, dtype=np.int64)
        out.val = np.array(val_s, dtype=np.float64)
    except (ValueError, OverflowError):
        # Slow path: authoritative, finds the exact line of the problem.
        labels, idx_l, val_l = [], [], []
        for lineno, toks in zip(linenos, tokens):
            label, idxs, vals = _svm_line_slow(src, lineno, toks)
            labels.append(label)
            idx_l.extend(idxs)
            val_l.extend(vals)
        out.labels = np.array(labels, dtype=np.float64)
        out.idx = np.array(idx_l, dtype=np.int64)
        out.val = np.array(val_l, dtype=np.float64)
    out.counts = np.array(counts, dtype=np.int64)
    out.linenos = np.array(linenos, dtype=np.int64)
    row_line = np.repeat(out.linenos, out.counts)
    bad = np.flatnonzero((out.idx < 0) | (out.idx > _MAX_FEATURES * 64))
    if bad.size:
        k = int(bad[0])
        what = "negative" if out.idx[k] < 0 else "too large a"
        raise DataError(f"{src} line {row_line[k]}: {what} feature index {out.idx[k]}")
    if out.idx.size:
        rows = np.repeat(np.arange(len(counts)), out.counts)
        order = np.lexsort((out.idx, rows))
        r, c = rows[order], out.idx[order]
        dup = np.flatnonzero((r[1:] == r[:-1]) & (c[1:] == c[:-1]))
        if dup.size:
            k = int(order[dup[0]])
            raise DataError(f"{src} line {row_line[k]}: feature index {out.idx[k]} appears twice")
    return out


def _svm_blocks(src: str, step: int):
    block = []
    for item in _lines(src):
        block.append(item)
        if len(block) >= step:
            yield _parse_svm_block(block, src)
            block = []
    if block:
        yield _parse_svm_block(block, src)


def svm_scan(src: str, step: int, on_block=None):
    """Pass 1 over an svmlight file: (rows, min index, max index, line of each).

    Parses (and so validates) every line, ``step`` lines at a time; ``on_block(blk,
    row_line)`` sees each parsed block (row_line: the line number of each stored value)
    for the caller's own checks and label bookkeeping. Indices are None for a file
    without features. Shared by the dense and the CSR converters.
    """
    n_rows, min_idx, max_idx, min_line, max_line = 0, None, None, 0, 0
    for blk in _svm_blocks(src, step):
        n_rows += blk.labels.shape[0]
        row_line = np.repeat(blk.linenos, blk.counts) if blk.idx.size else None
        if on_block is not None:
            on_block(blk, row_line)
        if blk.idx.size:
            kmin, kmax = int(np.argmin(blk.idx)), int(np.argmax(blk.idx))
            if min_idx is None or blk.idx[kmin] < min_idx:
                min_idx, min_line = int(blk.idx[kmin]), int(row_line[kmin])
            if max_idx is None or blk.idx[kmax] > max_idx:
                max_idx, max_line = int(blk.idx[kmax]), int(row_line[kmax])
    return n_rows, min_idx, max_idx, min_line, max_line


def svm_layout(src: str, scan, zero_based, n_features, *, zero_based_fix: str, features_option: str):
    """(zero_based, index offset, number of features) from :func:`svm_scan`'s result.

    zero_based: True, False or "auto" (zero-based iff some index is 0); n_features: None
    (max index + 1 - offset) or the number to use. DataError, naming the line, for an empty
    file, index 0 in a one-based file, no features to count, an index out of range.
    ``zero_based_fix`` / ``features_option``: how the caller's users set those (API or CLI).
    """
    n_rows, min_idx, max_idx, min_line, max_line = scan
    if n_rows == 0:
        raise DataError(f"{src} is empty (no data lines)")
    zb = (min_idx == 0) if zero_based == "auto" else bool(zero_based)
    offset = 0 if zb else 1
    if not zb and min_idx == 0:
        raise DataError(f"{src} line {min_line}: feature index 0 in a one-based file; {zero_based_fix}")
    if n_features is None:
        if max_idx is None:
            raise DataError(f"{src} has no features at all; give {features_option.rstrip('= ')}")
        return zb, offset, max_idx - offset + 1
    d = int(n_features)
    if max_idx is not None and max_idx - offset >= d:
        raise DataError(f"{src} line {max_line}: feature index {max_idx} is out of range for "
                        f"{features_option}{d} ({'zero' if zb else 'one'}-based indices)")
    return zb, offset, d


def _convert_svmlight(src, out: _Output, *, n_features, zero_based, chunk_rows) -> dict:
    # Pass 1: validate everything, count rows, find the index range and the label set.
    seen = {"pm1": True, "neg": False, "pos": False}

    def track_labels(blk, _row_line):
        if seen["pm1"] and blk.labels.size:
            seen["pm1"] = bool(np.all((blk.labels == 1) | (blk.labels == -1)))
            seen["neg"] = seen["neg"] or bool(np.any(blk.labels == -1))
            seen["pos"] = seen["pos"] or bool(np.any(blk.labels == 1))

    n_rows, min_idx, max_idx, min_line, max_line = svm_scan(src, _step(chunk_rows, 1), track_labels)
    labels_pm1, has_neg, has_pos = seen["pm1"], seen["neg"], seen["pos"]
    zb, offset, d = svm_layout(src, (n_rows, min_idx, max_idx, min_line, max_line), zero_based, n_features,
                               zero_based_fix="use zero_based=True (or 'auto')", features_option="n_features=")
    if n_features is None and d > _MAX_FEATURES:
        raise DataError(f"{src} line {max_line}: feature index {max_idx} implies {d} "
                        f"features, more than the {_MAX_FEATURES} supported for dense data")
    label_map = {-1: 0, 1: 1} if (labels_pm1 and has_neg and has_pos) else None

    # Pass 2: fill dense blocks.
    out.start(d, n_rows)
    rows_written = 0
    for blk in _svm_blocks(src, _step(chunk_rows, d)):
        m = blk.labels.shape[0]
        if m == 0:
            continue
        Xb = np.zeros((m, d), dtype=np.float64)
        if blk.idx.size:
            rows = np.repeat(np.arange(m), blk.counts)
            cols = blk.idx - offset
            if cols.min() < 0 or cols.max() >= d:  # the file changed since pass 1
                raise DataError(f"{src} changed while being converted; try again")
            Xb[rows, cols] = blk.val
        out.put_x(Xb)
        y = blk.labels
        if label_map is not None:
            y = (y > 0).astype(np.float64)
        out.put_y(y)
        rows_written += m
    if rows_written != n_rows:
        raise DataError(f"{src} changed while being converted; try again")
    return {"rows": n_rows, "features": d, "zero_based": zb, "label_map": label_map}


# --------------------------------------------------------------------------- entry point

def _name(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _safe_attr(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def convert(src, dst, *, fmt="auto", y_src=None, label_col=0, delimiter=None, has_header="auto",
            n_features=None, zero_based="auto", x_key="X", y_key="y", x_name="X", y_name="y",
            dtype="float64", chunk_rows=65536, overwrite=False, comm=None, write="root",
            layout=None, chunk_size=None) -> dict:
    """Convert ``src`` to a dense HDF5 file ``dst`` (see the module docstring).

    Returns ``{'rows', 'features', 'format', 'src', 'dst', 'x_dtype', 'y_dtype',
    'label_map'}`` plus ``has_header``/``delimiter``/``label_col`` (CSV) or
    ``zero_based`` (svmlight). ``dst`` is replaced only with ``overwrite=True``.

    Layout (``layout``, ``chunk_size`` in rows; see :mod:`.writer`): ``None`` gives a
    contiguous X when the row count is known up front (npy, npz, svmlight) and a chunked,
    resizable X for CSV; ``'contiguous'`` for CSV costs one extra pass that counts the lines.

    Parallel writes (``comm``, ``write`` as in :func:`.generate`): with a collective write,
    every rank of ``comm`` must call this with the same arguments; for npy and npz input
    each rank reads its own rows (``.npy`` and stored ``.npz`` members are memory-mapped,
    deflated members are streamed up to the rank's rows) and writes them collectively
    through ``mpio``. Text formats (CSV, svmlight) and Fortran-ordered deflated ``.npz``
    members have no random access to rows, so rank 0 converts them alone while the other
    ranks return ``{'written': False}`` at once (their parsing, not the write, is the
    bottleneck). The result has ``write`` ('collective' or 'root'), ``written``,
    ``layout`` and ``chunk_rows``.
    """
    try:
        src = os.fspath(src)
        dst = os.fspath(dst)
        y_src = None if y_src is None else os.fspath(y_src)
    except TypeError:
        raise ConfigError("src, dst and y_src must be strings or paths") from None
    if fmt not in FORMATS:
        raise ConfigError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if has_header not in ("auto", True, False):
        raise ConfigError(f"has_header must be 'auto', True or False, got {has_header!r}")
    if zero_based not in ("auto", True, False):
        raise ConfigError(f"zero_based must be 'auto', True or False, got {zero_based!r}")
    if isinstance(label_col, bool) or not isinstance(label_col, (int, np.integer)):
        raise ConfigError(f"label_col must be an integer column index, got {label_col!r}")
    label_col = int(label_col)
    if delimiter is not None and (not isinstance(delimiter, str) or not delimiter
                                  or delimiter in "\r\n"):
        raise ConfigError(f"delimiter must be a non-empty string (or None to guess), "
                          f"got {delimiter!r}")
    if n_features is not None:
        if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) \
                or n_features < 1:
            raise ConfigError(f"n_features must be a positive integer, got {n_features!r}")
        if n_features > _MAX_FEATURES:
            raise ConfigError(f"n_features={n_features} is more than the {_MAX_FEATURES} "
                              "supported for dense data")
        n_features = int(n_features)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) \
            or chunk_rows < 1:
        raise ConfigError(f"chunk_rows (--chunk-rows) must be a positive integer, got {chunk_rows!r}")
    chunk_rows = int(chunk_rows)
    dt = float_dtype(dtype)
    for value, what in ((x_key, "x_key"), (y_key, "y_key"), (x_name, "x_name"),
                        (y_name, "y_name")):
        _name(value, what)
    if x_name == y_name:
        raise ConfigError(f"x_name and y_name must differ, both are {x_name!r}")
    collective = resolve_write(write, comm)
    if layout is not None:
        resolve_layout(layout, chunk_size, 1, 1, 1)  # validates the options only
    elif chunk_size is not None:
        layout = "chunked"

    if fmt == "auto":
        ext = os.path.splitext(src)[1].lower()
        if ext not in _EXTENSIONS:
            raise ConfigError(f"cannot tell the format of {src} from its extension; give the "
                              f"format with --format (fmt in Python: one of {', '.join(FORMATS[1:])})")
        fmt = _EXTENSIONS[ext]
    if y_src is not None and fmt != "npy":
        raise ConfigError(f"--labels (y_src) applies to .npy input only; {fmt} input carries its labels"
                          + (" (the column --label-col)" if fmt == "csv" else ""))
    parallel = collective and fmt in ("npy", "npz")
    stub = {"written": False, "write": "root", "format": fmt, "src": src, "dst": dst}
    if comm is not None and comm.Get_rank() != 0 and not parallel:
        # Rank 0 converts alone. Return before looking at dst: rank 0 may already have written it.
        return stub
    if not os.path.exists(src):
        raise DataError(f"input file {src} does not exist; check the path")
    if os.path.isdir(src):
        raise DataError(f"input path {src} is a directory, not a file")
    for other in (src, y_src):
        if other is not None and os.path.exists(dst) and os.path.exists(other) \
                and os.path.samefile(other, dst):
            raise ConfigError(f"output {dst} is the same file as the input {other}")
    check_output_path(dst, overwrite, "use --overwrite to replace it (overwrite=True in Python)")

    if parallel:
        info = _convert_collective(fmt, src, dst, y_src, x_key, y_key, x_name, y_name, dt,
                                   chunk_rows, layout, chunk_size, comm)
        if info is not None:
            return info
        if comm.Get_rank() != 0:  # no row access (deflated Fortran-order npz): rank 0 alone
            return stub

    out = _Output(f"{dst}.tmp{os.getpid()}", x_name, y_name, dt)
    out.layout, out.chunk_size = layout, chunk_size
    try:
        out.open()
        if fmt == "npy":
            info = _convert_npy(src, y_src, out, chunk_rows)
        elif fmt == "npz":
            info = _convert_npz(src, x_key, y_key, out, chunk_rows)
        elif fmt == "csv":
            info = _convert_csv(src, out, label_col=label_col, delimiter=delimiter,
                                has_header=has_header, n_features=n_features,
                                chunk_rows=chunk_rows)
        else:
            info = _convert_svmlight(src, out, n_features=n_features, zero_based=zero_based,
                                     chunk_rows=chunk_rows)
        n_rows = info["rows"]
        if out.nx != n_rows or out.ny != n_rows:  # pragma: no cover - internal consistency
            raise DataError(f"{src}: read {out.nx} rows of X but {out.ny} labels")
        label_map = info.get("label_map")
        attrs = {
            "source": _safe_attr(os.path.basename(src)),
            "format": fmt,
            "label_map": None if label_map is None else
            json.dumps({str(k): v for k, v in label_map.items()}),
            "zero_based": info.get("zero_based"),
        }
        y_dt = out.finish(n_rows, _step(chunk_rows, 1), attrs)
        os.replace(out.tmp_path, dst)
    except MpidmlError:
        raise
    except Exception as exc:
        # Malformed input can make the parsers underneath (numpy's header parser, zipfile,
        # zlib/lzma/bz2, codecs) raise almost anything; report it as bad data. The cause is
        # chained for debugging.
        text = str(exc).strip()
        msg = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise DataError(f"cannot convert {src} to {dst}: {msg}") from exc
    finally:
        out.cleanup()
    info.setdefault("label_map", None)
    info.update({"format": fmt, "src": src, "dst": dst, "x_dtype": str(dt),
                 "y_dtype": str(y_dt), "written": True, "write": "root",
                 "layout": "contiguous" if out.chunk_rows is None else "chunked",
                 "chunk_rows": out.chunk_rows})
    return info


# --------------------------------------------------------------------------- collective writes

class _RowReader:
    """Rows of an array in increasing order: a memory map, or a member streamed from its start."""

    def __init__(self, arr=None, member=None, n_cols=1):
        self.arr, self.member, self.n_cols = arr, member, n_cols
        self.fp = None
        self.pos = 0

    def rows(self, a: int, b: int) -> np.ndarray:
        if self.arr is not None:
            return self.arr[a:b].reshape(b - a, self.n_cols)
        m = self.member
        row_bytes = self.n_cols * m.dtype.itemsize
        if self.fp is None:
            self.fp = m.open()
        if a < self.pos:  # pragma: no cover - callers only go forward
            raise RuntimeError("rows must be read in increasing order")
        skip = (a - self.pos) * row_bytes
        while skip > 0:  # deflated data: decompress and drop the rows before ours
            skip -= len(_read_exact(self.fp, min(skip, 1 << 24), m.where))
        buf = _read_exact(self.fp, (b - a) * row_bytes, m.where)
        self.pos = b
        return np.frombuffer(buf, dtype=m.dtype).reshape(b - a, self.n_cols)

    def close(self):
        if self.fp is not None:
            self.fp.close()
            self.fp = None
        self.pos = 0


def _member_memmap(src: str, m: "_NpzMember"):
    """A read-only memory map of a stored (uncompressed) .npz member's array, else None."""
    if m.info.compress_type != zipfile.ZIP_STORED or m.info.flag_bits & 0x1:
        return None
    with open(src, "rb") as fh:
        fh.seek(m.info.header_offset)
        head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    offset = m.info.header_offset + 30 + name_len + extra_len + m.header_len
    if m.count == 0:
        return None
    return np.memmap(src, dtype=m.dtype, mode="r", offset=offset, shape=m.shape,
                     order="F" if m.fortran else "C")


def _collective_sources(fmt, src, y_src, x_key, y_key):
    """(n, d, X reader, y reader, closer) for a collective write, or None when the input has
    no random access to rows (Fortran-ordered deflated npz). Raises DataError on bad input,
    identically on every rank (the checks read metadata only)."""
    if fmt == "npy":
        if y_src is None:
            raise ConfigError(f"{src} is a .npy file holding X only; give the labels as a second .npy "
                              "file (--labels y.npy; y_src in Python)")
        X, xshape, _ = _load_npy(src, "X")
        _check_x_shape(xshape, src)
        Y, yshape, _ = _load_npy(y_src, "y")
        _check_y_shape(yshape, xshape[0], y_src, src)
        n, d = xshape
        return n, d, _RowReader(arr=X, n_cols=d), _RowReader(arr=Y.reshape(-1), n_cols=1), None
    try:
        zf = zipfile.ZipFile(src)
    except Exception as exc:
        raise DataError(f"{src} is not a valid .npz (zip) archive: {exc}") from None
    try:
        xm = _NpzMember(zf, src, x_key, "X")
        _check_x_shape(xm.shape, xm.where)
        ym = _NpzMember(zf, src, y_key, "y")
        _check_y_shape(ym.shape, xm.shape[0], ym.where, xm.where)
        n, d = xm.shape
        xmap, ymap = _member_memmap(src, xm), _member_memmap(src, ym)
        if xmap is None and xm.fortran and d > 1:
            zf.close()
            return None
        xr = _RowReader(arr=xmap, n_cols=d) if xmap is not None else _RowReader(member=xm, n_cols=d)
        yr = _RowReader(arr=ymap.reshape(-1), n_cols=1) if ymap is not None else \
            _RowReader(member=ym, n_cols=1)
    except BaseException:
        zf.close()
        raise
    return n, d, xr, yr, zf


def _all_whole(y: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(y) & (np.abs(y) <= _MAX_EXACT_INT) & (y == np.trunc(y))))


def _convert_collective(fmt, src, dst, y_src, x_key, y_key, x_name, y_name, dt, chunk_rows,
                        layout, chunk_size, comm):
    """npy/npz -> HDF5 written collectively by every rank of ``comm`` (rank r: its rows).

    Same output as the serial path: labels go through float64, stored as int64 when every
    label is a whole number (decided collectively). Returns None to fall back to rank 0.
    """
    try:
        plan = _collective_sources(fmt, src, y_src, x_key, y_key)
    except MpidmlError:
        raise
    except Exception as exc:  # malformed archives: report as bad data, as the serial path does
        text = str(exc).strip()
        msg = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise DataError(f"cannot convert {src} to {dst}: {msg}") from exc
    if plan is None:
        return None
    n, d, xr, yr, zf = plan
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = shard_bounds(n, size, rank)
    _, h5_chunk_rows = resolve_layout(layout or "contiguous", chunk_size, n, d, dt.itemsize)
    step = _step(chunk_rows, d)
    step_vec = _step(chunk_rows, 1)
    n_max = shard_bounds(n, size, 0)[1]  # part 0 is the largest: the number of write calls
    tmp = shared_tmp_name(dst, comm)
    try:
        # Labels first: their stored dtype must be known (on every rank) before creating y.
        whole, bad = True, None
        for a in range(lo, hi, step_vec):
            b = min(hi, a + step_vec)
            try:
                v = np.asarray(yr.rows(a, b)[:, 0], dtype=np.float64)
            except MpidmlError as exc:
                bad = exc
                break
            whole = whole and _all_whole(v)
        yr.close()
        if any_rank(comm, bad is not None):
            raise bad if bad is not None else DataError(
                f"cannot convert {src}: reading the labels failed on another rank")
        y_dt = np.dtype(np.float64 if any_rank(comm, not whole) else np.int64)
        with h5py.File(tmp, "w", driver="mpio", comm=comm) as f:
            X = create_rows_dataset(f, x_name, n, d, dt, h5_chunk_rows)
            Y = create_rows_dataset(f, y_name, n, None, y_dt, h5_chunk_rows)
            f.attrs["source"] = _safe_attr(os.path.basename(src))
            f.attrs["format"] = fmt
            dxpl = collective_dxpl()
            for i in range(-(-n_max // step)):
                a = lo + i * step
                b = min(hi, a + step)
                write_rows(X, a, xr.rows(a, b) if a < b else None, dxpl)
            for i in range(-(-n_max // step_vec)):
                a = lo + i * step_vec
                b = min(hi, a + step_vec)
                v = np.asarray(yr.rows(a, b)[:, 0], dtype=np.float64).astype(y_dt) \
                    if a < b else None
                write_rows(Y, a, v, dxpl)
        comm.Barrier()
        if rank == 0:
            os.replace(tmp, dst)
    finally:
        xr.close()
        yr.close()
        if zf is not None:
            zf.close()
        if rank == 0 and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
    comm.Barrier()
    return {"rows": n, "features": d, "label_map": None, "format": fmt, "src": src, "dst": dst,
            "x_dtype": str(dt), "y_dtype": str(y_dt), "written": True, "write": "collective",
            "layout": "contiguous" if h5_chunk_rows is None else "chunked",
            "chunk_rows": h5_chunk_rows}
