"""How PRED.h5 is written (mpidml.predict.write_predictions), for dense models and mf alike.

In-process on one rank: the file holds each array and attribute as given and no temporary
file is left; an OSError while writing rows or renaming becomes a DataError naming the output,
with the temporary file removed. Through the CLI on 2 ranks, with rank 1's write failing
(h5py.File patched before mpidml starts: a disk that fills up mid-write cannot be staged
otherwise): one error line, exit 2 on every rank, no PRED.h5 and no stray temporary file, for
`predict` on a dense model and on a matrix-factorization model.
"""
import errno
import os
import sys

import h5py
import numpy as np
import pytest

from mpidml import predict as predict_mod
from mpidml.comm import Context
from mpidml.errors import DataError
from test_cli import MPIDML, run
from test_failures import assert_one_line_error

ARRAYS = {"labels": np.arange(7, dtype=np.int64) % 3,
          "proba": np.linspace(0.0, 1.0, 21).reshape(7, 3)}
ATTRS = {"model": "softmax", "source": "/data/x.h5", "n_rows": 7}


def full_disk_on(mode):
    """An h5py.File that raises ENOSPC when opened with ``mode`` (and works otherwise)."""
    real = h5py.File

    def fake(name, mode_=None, *args, **kwargs):
        if (mode_ or kwargs.get("mode")) == mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(name, mode_, *args, **kwargs) if mode_ is not None else real(name, *args, **kwargs)
    return fake


def test_writes_every_array_and_attribute(tmp_path):
    out = tmp_path / "p.h5"
    how = predict_mod.write_predictions(Context(), str(out), ARRAYS, 0, 7, ATTRS, write="root")
    assert how == "serial"
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["labels", "proba"]
        for name, a in ARRAYS.items():
            assert f[name].dtype == a.dtype
            np.testing.assert_array_equal(f[name][...], a)
        assert {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()} == ATTRS
    assert os.listdir(tmp_path) == ["p.h5"]


@pytest.mark.parametrize("stage", ["rows", "rename"])
def test_an_os_error_is_one_data_error_and_leaves_nothing(stage, tmp_path, monkeypatch):
    out = tmp_path / "p.h5"
    if stage == "rows":  # the datasets exist; the disk fills up writing the rows
        monkeypatch.setattr(predict_mod.h5py, "File", full_disk_on("r+"))
    else:
        def no_rename(src, dst):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        monkeypatch.setattr(predict_mod.os, "replace", no_rename)
    with pytest.raises(DataError) as info:
        predict_mod.write_predictions(Context(), str(out), ARRAYS, 0, 7, ATTRS, write="root")
    reason = os.strerror(errno.ENOSPC if stage == "rows" else errno.EXDEV)
    assert str(info.value).startswith(f"cannot write predictions to {out}: ") and reason in str(info.value)
    assert os.listdir(tmp_path) == []


# The CLI with rank 1's row write failing. h5py is patched in the process before mpidml runs.
INJECT = """
import errno, os, runpy, sys
import h5py
real = h5py.File
def fake(name, mode=None, *args, **kwargs):
    if mode == "r+" and os.environ.get("OMPI_COMM_WORLD_RANK") == "1":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(name, mode, *args, **kwargs)
h5py.File = fake
sys.argv = ["mpidml"] + sys.argv[1:]
runpy.run_module("mpidml", run_name="__main__")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    run(MPIDML + ["generate", "logistic", "--rows", "2001", "--features", "4", "--seed", "5", "-o", str(d / "lr.h5")])
    run(MPIDML + ["train", str(d / "lr.h5"), "--max-iter", "5", "--out", str(d / "lr")])
    run(MPIDML + ["generate", "mf", "--users", "100", "--items", "60", "--rank", "2", "--ratings", "2001",
                  "--seed", "5", "-o", str(d / "r.h5")])
    run(MPIDML + ["train", str(d / "r.h5"), "--model", "mf", "--rank", "2", "--optimizer", "als", "--max-iter", "3",
                  "--out", str(d / "mf")])
    return {"dense": (d / "lr" / "model.h5", d / "lr.h5"), "mf": (d / "mf" / "model.h5", d / "r.h5")}


@pytest.mark.skipif(h5py.get_config().mpi, reason="this h5py writes collectively (tests/test_mpio.py covers it)")
@pytest.mark.parametrize("kind", ["dense", "mf"])
def test_cli_write_failing_on_one_rank_is_one_line_on_every_rank(kind, models, tmp_path):
    model, data = models[kind]
    out = tmp_path / "p.h5"
    proc = run([sys.executable, "-c", INJECT, "predict", str(model), str(data), "-o", str(out)], ranks=2,
               check=False, timeout=120)
    assert_one_line_error(proc, "[rank 1 on ", case=f"predict {kind}: rank 1's write fails")
    assert f"cannot write predictions to {out}: {os.strerror(errno.ENOSPC)}" in proc.stderr
    assert os.listdir(tmp_path) == []  # no PRED.h5, no temporary file

    # The same command without the fault writes the file (the failure was the injected one).
    proc = run(MPIDML + ["predict", str(model), str(data), "-o", str(out)], ranks=2)
    with h5py.File(out, "r") as f:
        assert f.attrs["n_rows"] == 2001 and len(f[sorted(f)[0]]) == 2001
    assert os.listdir(tmp_path) == ["p.h5"]
