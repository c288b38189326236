"""Atomic HDF5 checkpoints and resume.

A checkpoint ``RUN/checkpoints/ckpt-<step>.h5`` holds everything needed to
continue a run bitwise: the flat parameters, the optimizer state (arrays as
datasets, scalars as attributes, one group per state dict), the step and
epoch, the RNG state (mpidml's shuffles are counter-based: the seed and the
epoch determine the permutation), a hash of the training-relevant config and a
fingerprint of the dataset.

Writes go to ``ckpt-<step>.h5.tmp``, are flushed and fsynced, then renamed
into place (and the directory fsynced): a crash during the write leaves the
previous checkpoint untouched and loadable. The newest ``keep`` checkpoints
are kept.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re

import h5py
import numpy as np

from . import __version__, faults
from .errors import ConfigError, DataError

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"ckpt-(\d+)\.h5$")


def checkpoint_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, CKPT_DIR, f"ckpt-{step:09d}.h5")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """Completed checkpoints (step, path), oldest first; temporary files are ignored."""
    found = []
    for path in glob.glob(os.path.join(run_dir, CKPT_DIR, "ckpt-*.h5")):
        m = _NAME.search(path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def data_fingerprint(path: str, x_name: str = "X", y_name: str = "y", n_samples: int = 32) -> dict:
    """Shape, dtypes and a SHA-256 of up to ``n_samples`` evenly spaced rows of X and y.

    Cheap (a few rows read) yet catches a different, re-generated or re-ordered
    dataset behind the same file name.
    """
    with h5py.File(path, "r") as f:
        X, y = f[x_name], f[y_name]
        if isinstance(X, h5py.Group):  # the CSR layout: hash samples of indptr, indices, data and y
            from .data.csr import csr_fingerprint

            return csr_fingerprint(X, y, n_samples)
        n = X.shape[0]
        idx = np.unique(np.linspace(0, n - 1, min(n, n_samples)).astype(np.int64))
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(X[idx, :]).tobytes())
        h.update(np.ascontiguousarray(y[idx]).tobytes())
        return {"shape": [int(s) for s in X.shape], "x_dtype": str(X.dtype), "y_dtype": str(y.dtype),
                "sha256": h.hexdigest()[:32]}


def _write_group(group: h5py.Group, state: dict) -> None:
    for key, value in state.items():
        if isinstance(value, dict):
            _write_group(group.create_group(key), value)
        elif isinstance(value, np.ndarray):
            group.create_dataset(key, data=value)
        elif isinstance(value, (bool, np.bool_)):
            group.attrs[key] = np.bool_(value)
        elif isinstance(value, (int, np.integer)):
            group.attrs[key] = np.int64(value)
        elif isinstance(value, (float, np.floating)):
            group.attrs[key] = np.float64(value)
        elif isinstance(value, str):
            group.attrs[key] = value
        else:
            raise TypeError(f"cannot checkpoint {key}={value!r} ({type(value).__name__})")


def _read_group(group: h5py.Group) -> dict:
    out: dict = {}
    for key, value in group.attrs.items():
        if isinstance(value, np.bool_):
            out[key] = bool(value)
        elif isinstance(value, np.integer):
            out[key] = int(value)
        elif isinstance(value, np.floating):
            out[key] = float(value)
        elif isinstance(value, bytes):
            out[key] = value.decode()
        else:
            out[key] = value
    for key, item in group.items():
        out[key] = _read_group(item) if isinstance(item, h5py.Group) else np.array(item[...])
    return out


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpointer:
    """Writes checkpoints from rank 0 every ``every`` steps (0: only at the end).

    ``meta`` (config hash, data fingerprint, model/optimizer names, n_params) is
    stored in every file and compared on resume.

    A write that fails with an OSError (disk full, quota, permissions, the directory
    gone or replaced by a file) becomes ``cannot write checkpoint PATH: REASON`` (a
    ConfigError); the temporary file is removed and the previous checkpoint is kept.
    Only rank 0 writes, so the other ranks learn of a failure only through an agreement:

    * with ``ctx`` (a :class:`mpidml.comm.Context`; give it only where every rank calls
      :meth:`save` for the same step, as the allreduce strategy does, not the parameter
      server, whose rank 0 saves alone) the constructor and :meth:`save` are collective
      and raise the same agreed error on every rank (:meth:`Context.agree`): one line,
      exit code 2 everywhere;
    * without ``ctx`` the error is raised on rank 0 alone as a :class:`RootOnlyError`,
      which stays unagreed, so the command line prints its one line and aborts the job
      with exit code 2 (its path for an error one rank found) instead of exiting rank 0
      while the others wait in their next collective.
    """

    def __init__(self, run_dir: str, every: int, meta: dict, is_root: bool, rank: int, keep: int = 2,
                 ctx=None):
        self.dir = os.path.join(run_dir, CKPT_DIR)
        self.run_dir = run_dir
        self.every = int(every)
        self.meta = meta
        self.is_root = is_root
        self.rank = rank
        self.keep = max(1, int(keep))
        self.ctx = ctx
        self.last_path: str | None = None
        self.seconds = 0.0
        error = None
        if is_root:
            try:
                os.makedirs(self.dir, exist_ok=True)
                for tmp in glob.glob(os.path.join(self.dir, "*.tmp")):  # left by a crash mid-write
                    os.remove(tmp)
            except OSError as e:
                error = RootOnlyError(f"cannot write checkpoints to {self.dir}: {_reason(e)}")
            done = list_checkpoints(run_dir)
            self.last_path = done[-1][1] if done else None
        self._raise(error)

    def due(self, step: int) -> bool:
        return self.every > 0 and step > 0 and step % self.every == 0

    def save(self, step: int, epoch: int, params: np.ndarray, state: dict) -> str | None:
        """Root: write the checkpoint of ``step`` atomically. Other ranks: no-op (with ``ctx``:
        they wait for the root's verdict, so a failed write raises on every rank)."""
        error, path = None, None
        if self.is_root:
            try:
                path = self._write(step, epoch, params, state)
            except RootOnlyError as e:  # an OSError of the write, with the path (see _write)
                error = e
        self._raise(error)
        return path

    def _raise(self, error: RootOnlyError | None) -> None:
        """Collective with ``ctx``: raise the root's error (or nothing) on every rank, agreed.
        Without ``ctx``: raise it where it happened (rank 0)."""
        if self.ctx is not None:
            self.ctx.agree(ConfigError(str(error)) if error is not None else None)
        elif error is not None:
            raise error

    def _write(self, step: int, epoch: int, params: np.ndarray, state: dict) -> str:
        import time

        t0 = time.perf_counter()
        path = checkpoint_path(self.run_dir, step)
        tmp = path + ".tmp"
        try:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("params", data=params)
                f.attrs["step"] = np.int64(step)
                f.attrs["epoch"] = np.int64(epoch)
                f.attrs["mpidml_version"] = __version__
                f.attrs["meta"] = json.dumps(self.meta, sort_keys=True)
                f.flush()
                faults.point("checkpoint", self.rank, step)  # test hook: die half-way through the write
                _write_group(f.create_group("state"), state)
                f.attrs["complete"] = np.bool_(True)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            # Nothing half-written stays behind; the previous checkpoint was never touched.
            try:
                os.remove(tmp)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise RootOnlyError(f"cannot write checkpoint {path}: {_reason(e)}") from e
            raise
        _fsync_dir(self.dir)
        self.last_path = path
        for _, old in list_checkpoints(self.run_dir)[:-self.keep]:
            try:
                os.remove(old)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise RootOnlyError(f"wrote checkpoint {path} but cannot remove the old checkpoint {old}: "
                                  f"{_reason(e)}") from e
        self.seconds += time.perf_counter() - t0
        return path


class RootOnlyError(ConfigError):
    """A checkpoint write failed on rank 0, and only rank 0 knows.

    ``agreed`` is False from the start, and the training loop, which marks its other errors
    agreed (those come from values all ranks share), leaves an error that already says so
    alone: marked, rank 0 would exit alone and leave the others waiting in their next
    collective. Unagreed, the command line reports it in one line and aborts the job (exit
    code 2). :class:`Checkpointer` with a ``ctx`` agrees on a plain ConfigError instead.
    """

    agreed = False


def _reason(e: OSError) -> str:
    """The short reason of an OSError (h5py's messages embed the errno's text at the end)."""
    if e.errno and not isinstance(e.errno, bool):
        try:
            return os.strerror(e.errno)
        except (ValueError, OverflowError):
            pass
    text = str(e) or type(e).__name__
    m = re.search(r"error message = '([^']*)'", text)
    return m.group(1) if m else text


def load_checkpoint(path: str, expect: dict | None) -> dict:
    """Read a checkpoint and check it belongs to this run: returns {step, epoch, params, state}.

    ConfigError when it was written by a different training config, DataError
    when the dataset differs or the file is corrupt or truncated. ``expect=None``
    skips the comparison (ranks other than the root, which already checked).
    """
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise DataError(f"checkpoint {path} is incomplete (written by a crashed job?); delete it to resume "
                                "from the previous one")
            meta = json.loads(f.attrs["meta"])
            out = {"step": int(f.attrs["step"]), "epoch": int(f.attrs["epoch"]),
                   "params": np.array(f["params"][...], dtype=np.float64),
                   "state": _read_group(f["state"]), "path": path}
    except DataError:
        raise
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise DataError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it to resume "
                        "from the previous one") from None
    if expect is None:
        return out
    if meta.get("config_hash") != expect.get("config_hash"):
        diffs = [k for k in sorted(set(meta.get("config", {})) | set(expect.get("config", {})))
                 if meta.get("config", {}).get(k) != expect.get("config", {}).get(k)]
        detail = ", ".join(f"{k}: {meta.get('config', {}).get(k)!r} -> {expect.get('config', {}).get(k)!r}"
                           for k in diffs[:5])
        raise ConfigError(f"checkpoint {path} was written with a different training config ({detail}); "
                          "resume with the run's own options")
    if meta.get("data") != expect.get("data"):
        def describe(d):
            d = d or {}
            return f"shape {tuple(d.get('shape', ()))} {d.get('x_dtype')}, sampled-rows sha256 {d.get('sha256')}"
        raise DataError(f"checkpoint {path} was written for a different dataset (then: {describe(meta.get('data'))}; "
                        f"now: {describe(expect.get('data'))}); resume with the same data file")
    if out["params"].shape != (expect["n_params"],):
        raise DataError(f"checkpoint {path} holds {out['params'].size} parameters, the model has {expect['n_params']}")
    return out
