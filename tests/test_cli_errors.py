"""User-facing failures of the command line outside training itself: --threads values, the
predict output path, and strict JSON on stdout.

Every case runs the CLI as a subprocess with a hard timeout (under `mpirun -n 2` where ranks
matter), so a hang fails the test instead of stalling the suite.
"""

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from test_cli import MPIDML, run
from test_failures import assert_one_line_error


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity (Python's json accepts them; strict JSON does not)."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data.h5, model.h5) of a small logistic problem."""
    d = tmp_path_factory.mktemp("clierr")
    data = d / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "400", "--features", "4", "--seed", "5", "-o", str(data)])
    run(MPIDML + ["train", str(data), "--out", str(d / "run"), "--progress", "none", "--max-iter", "20"])
    return data, d / "run" / "model.h5"


# -- --threads must be > 0, checked before any thread pool sees it ---------------------------------

@pytest.mark.parametrize("command", ["info", "train", "evaluate", "predict"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_threads_not_positive_is_one_line_exit_2_on_every_rank(command, value, trained, tmp_path):
    data, model = trained
    args = {"info": ["info"],
            "train": ["train", str(data), "--out", str(tmp_path / "r")],
            "evaluate": ["evaluate", str(model), str(data)],
            "predict": ["predict", str(model), str(data), "-o", str(tmp_path / "p.h5")]}[command]
    proc = run(MPIDML + args + [f"--threads={value}"], ranks=None if command == "info" else 2, check=False,
               timeout=60)
    assert_one_line_error(proc, f"argument --threads: must be > 0, got '{value}'")
    assert os.listdir(tmp_path) == []


def test_threads_not_an_integer_is_an_argparse_error():
    proc = run(MPIDML + ["info", "--threads", "two"], check=False, timeout=60)
    assert_one_line_error(proc, "argument --threads: invalid int value: 'two'")


# -- predict: the output path is checked before any work, on every rank ----------------------------

def _predict_cases(tmp, data, model):
    (tmp / "pdir").mkdir()
    (tmp / "a-file").write_text("x")
    (tmp / "data-link.h5").symlink_to(data)
    return {  # name: (-o, extra flags, expected message)
        "directory missing": (tmp / "missing" / "p.h5", [], "output directory"),
        "below a regular file": (tmp / "a-file" / "p.h5", [], "does not exist"),
        "directory": (tmp / "pdir", ["--overwrite"], "is a directory"),
        "exists": (tmp / "a-file", [], "exists; use --overwrite"),
        "the input data": (data, ["--overwrite"], "is the same file as the input data"),
        "a link to the input data": (tmp / "data-link.h5", ["--overwrite"], "is the same file as the input data"),
        "the model": (model, ["--overwrite"], "is the same file as the input model"),
    }


PREDICT_CASES = ["directory missing", "below a regular file", "directory", "exists", "the input data",
                 "a link to the input data", "the model"]


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_predict_refuses_a_bad_output_path_up_front(case, trained, tmp_path):
    data, model = (Path(shutil.copy(p, tmp_path / p.name)) for p in trained)  # the shared files stay safe
    before = {p: open(p, "rb").read() for p in (data, model)}
    out, extra, expect = _predict_cases(tmp_path, data, model)[case]
    listing = sorted(os.listdir(tmp_path))
    proc = run(MPIDML + ["predict", str(model), str(data), "-o", str(out)] + extra, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, expect)
    assert sorted(os.listdir(tmp_path)) == listing  # no stray temporary file
    assert {p: open(p, "rb").read() for p in (data, model)} == before  # inputs untouched


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_predict_into_an_unwritable_directory(trained):
    # /proc refuses new files even to root (a chmod'ed directory would not stop root).
    data, model = trained
    proc = run(MPIDML + ["predict", str(model), str(data), "-o", "/proc/mpidml-p.h5", "--overwrite"], ranks=2,
               check=False, timeout=60)
    assert_one_line_error(proc, "cannot write predictions to /proc/mpidml-p.h5")


def test_predict_overwrite_still_replaces_an_earlier_output(trained, tmp_path):
    data, model = trained
    out = tmp_path / "p.h5"
    out.write_text("old")
    printed = strict_json(run(MPIDML + ["predict", str(model), str(data), "-o", str(out), "--overwrite"],
                              ranks=2).stdout.strip().splitlines()[-1])
    assert printed["n_rows"] == 400
    with h5py.File(out) as f:
        assert f["labels"].shape == (400,)
    assert os.listdir(tmp_path) == ["p.h5"]


# -- strict JSON on stdout: undefined metrics are null, as in summary.json --------------------------

def test_evaluate_prints_strict_json_with_null_for_undefined_metrics(trained, tmp_path):
    data, model = trained
    with h5py.File(data) as f:
        X = f["X"][:50]
    one_class = tmp_path / "one-class.h5"
    with h5py.File(one_class, "w") as f:
        f["X"] = X
        f["y"] = np.zeros(50, dtype=np.int64)
    proc = run(MPIDML + ["evaluate", str(model), str(one_class)], ranks=2)
    out = strict_json(proc.stdout.strip().splitlines()[-1])
    assert out["class_counts"] == [50.0, 0.0]
    assert out["recall"][1] is None  # class 1 absent: 0/0
    assert out["roc_auc"] is None  # one class only: undefined
    assert out["accuracy"] is not None and out["recall"][0] is not None


def test_train_and_info_print_strict_json(trained, tmp_path):
    data, _ = trained
    strict_json(run(MPIDML + ["train", str(data), "--out", str(tmp_path / "r"), "--progress", "none",
                              "--max-iter", "5"]).stdout.strip().splitlines()[-1])
    strict_json(run(MPIDML + ["info"]).stdout)
