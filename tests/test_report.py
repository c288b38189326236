"""``mpidml report RUN``: the files it writes, and its numbers against NumPy / scikit-learn.

Each run is trained once per module with mpirun; the report's index.md is then parsed and
every number checked against values computed here from model.h5 and the data (not against
what training printed).
"""

import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from mpidml.errors import MpidmlError
from mpidml.report import MAX_CLASS_PANELS, feature_names, top_coefficients, write_report

from helpers import BIN, mpirun_exe, objective_numpy

MPIDML = [os.path.join(BIN, "mpidml")]
ENV = dict(os.environ, OMPI_MCA_btl="^ofi", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
NAMES = [f"feature_{chr(ord('a') + j)}" for j in range(10)]


def run(cmd, ranks=None, timeout=120, check=True):
    if ranks:
        cmd = [mpirun_exe(), "-n", str(ranks), "--oversubscribe"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def logistic_h5(tmp_path_factory):
    """Binary data whose X carries feature names."""
    path = tmp_path_factory.mktemp("data") / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "2001", "--features", "10", "--seed", "5", "-o", str(path)])
    with h5py.File(path, "r+") as f:
        f["X"].attrs["feature_names"] = np.array(NAMES, dtype=h5py.string_dtype())
    return path


@pytest.fixture(scope="module")
def softmax_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sm.h5"
    run(MPIDML + ["generate", "softmax", "--rows", "1501", "--features", "7", "--classes", "4", "-o", str(path)])
    return path


def trained(data, out, ranks, *options):
    run(MPIDML + ["train", str(data), "--out", str(out), "--progress", "none", *options], ranks=ranks)
    return out


def report(run_dir, *options):
    proc = run(MPIDML + ["report", str(run_dir), *options])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, (run_dir / "report" / "index.md").read_text() if "--out" not in options else None


def load(data, run_dir):
    with h5py.File(data) as f:
        X, y = f["X"][...], f["y"][...]
    with h5py.File(run_dir / "model.h5") as f:
        coef, intercept = f["coef"][...], f["intercept"][...]
    return X, y, coef, intercept


def value(md: str, label: str) -> float:
    m = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|$", md, re.M)
    assert m, f"no row '{label}' in index.md"
    return float(m.group(1))


def table(md: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``header``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def expected_top(row, k):
    """Independent: (index, value) of the k largest positive and k most negative entries."""
    pos = sorted((j for j in range(row.size) if row[j] > 0), key=lambda j: (-row[j], j))[:k]
    neg = sorted((j for j in range(row.size) if row[j] < 0), key=lambda j: (row[j], j))[:k]
    return pos, neg


def check_coefficients(md, coef, names, k):
    rows = table(md, "| class | rank | feature | column | coefficient |")
    expect = []
    for c in range(coef.shape[0]):
        pos, neg = expected_top(coef[c], k)
        label = str(c) if coef.shape[0] > 1 else "-"
        expect += [(label, f"+{r}", names[j], j, coef[c, j]) for r, j in enumerate(pos, 1)]
        expect += [(label, f"-{r}", names[j], j, coef[c, j]) for r, j in enumerate(neg, 1)]
    assert [(r[0], r[1], r[2], int(r[3])) for r in rows] == [e[:4] for e in expect]
    np.testing.assert_allclose([float(r[4]) for r in rows], [e[4] for e in expect], rtol=1e-9)


def check_confusion(md, y, pred, n_classes):
    rows = table(md, "|  | pred 0 |")
    got = np.array([[float(v) for v in r[1:1 + n_classes]] for r in rows])
    np.testing.assert_array_equal(got, confusion_matrix(y, pred, labels=np.arange(n_classes)))


@pytest.fixture(scope="module")
def logistic_run(logistic_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lr-sgd"
    return trained(logistic_h5, out, 2, "--model", "logistic", "--optimizer", "sgd", "--epochs", "3",
                   "--batch-size", "200", "--lr", "0.2", "--l2", "1e-3", "--log-every", "1")


def test_report_logistic_sgd(logistic_run, logistic_h5):
    result, md = report(logistic_run)
    out = logistic_run / "report"
    assert sorted(result["images"]) == ["accuracy.png", "coefficients.png", "confusion.png", "loss.png", "time.png"]
    for name in result["images"] + ["index.md", "index.html"]:
        assert (out / name).stat().st_size > 1000 or name.endswith((".md", ".html")), name
        assert not name.endswith(".png") or (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    assert all(f'src="{name}"' in html for name in result["images"])
    assert all(f"]({name})" in md for name in result["images"])

    X, y, coef, intercept = load(logistic_h5, logistic_run)
    f_np = objective_numpy("logistic", X, y, coef, intercept, 1e-3)
    assert value(md, "final objective") == pytest.approx(f_np, rel=1e-9)
    pred = ((X @ coef.T)[:, 0] + intercept[0] > 0).astype(int)
    assert value(md, "accuracy") == pytest.approx(np.mean(pred == y), abs=1e-10)
    check_confusion(md, y.astype(int), pred, 2)
    check_coefficients(md, coef, NAMES, 10)  # names from the X attribute
    assert "feature_names attribute of X" in md

    # The first logged batch accuracy is at the starting parameters (zeros: every row predicted 0),
    # on step 1's batch: rows perm[:200] of epoch 0. Its accuracy is then the share of label 0 there.
    records = [json.loads(line) for line in (logistic_run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 11 and all("accuracy" in r for r in records)
    from mpidml.parallel.allreduce import epoch_permutation

    batch = epoch_permutation(len(y), 0, 0)[:200]
    assert records[0]["step"] == 1 and records[0]["accuracy"] == pytest.approx(np.mean(y[batch] == 0), abs=1e-15)
    assert 0.0 < records[0]["accuracy"] < 1.0

    # Time per rank: the table is summary.json's phases with the warm-up split out of "other".
    s = json.loads((logistic_run / "summary.json").read_text())
    rows = table(md, "| rank |")
    assert [r[0] for r in rows] == ["0", "1"]
    for r, row in enumerate(rows):
        io, compute, comm, warm, other, wall = map(float, row[1:])
        assert warm == pytest.approx(s["warm_up_per_rank"][r], rel=1e-9)
        assert io + compute + comm + warm + other == pytest.approx(s["time_per_rank"]["wall"][r], rel=1e-6)
        assert wall == pytest.approx(s["time_per_rank"]["wall"][r], rel=1e-9)


def test_report_softmax_lbfgs_top_k_and_out(softmax_h5, tmp_path):
    run_dir = trained(softmax_h5, tmp_path / "sm", 2, "--model", "softmax", "--optimizer", "lbfgs", "--l2", "1e-2")
    out = tmp_path / "elsewhere"
    result, _ = report(run_dir, "--top-k", "3", "--out", str(out))
    md = (out / "index.md").read_text()
    # L-BFGS logs no batch accuracy: no accuracy curve, the final accuracy is stated instead.
    assert sorted(result["images"]) == ["coefficients.png", "confusion.png", "loss.png", "time.png"]
    assert not (run_dir / "report").exists()
    assert value(md, "iterations") == json.loads((run_dir / "summary.json").read_text())["steps"]
    (out / "staleness.png").write_bytes(b"from an earlier report")
    assert "staleness.png" not in report(run_dir, "--out", str(out))[0]["images"]
    assert not (out / "staleness.png").exists()  # not left beside this run's images

    X, y, coef, intercept = load(softmax_h5, run_dir)
    assert coef.shape == (4, 7)
    assert value(md, "final objective") == pytest.approx(objective_numpy("softmax", X, y, coef, intercept, 1e-2),
                                                         rel=1e-9)
    pred = np.argmax(X @ coef.T + intercept, axis=1)
    assert value(md, "accuracy") == pytest.approx(np.mean(pred == y), abs=1e-10)
    check_confusion(md, y, pred, 4)
    check_coefficients(md, coef, [f"x{j}" for j in range(7)], 3)  # no names in the file: column numbers
    assert "has no feature_names attribute" in md


def test_report_parameter_server_async(logistic_h5, tmp_path):
    run_dir = trained(logistic_h5, tmp_path / "ps", 3, "--strategy", "ps", "--ps-mode", "async",
                      "--optimizer", "sgd", "--epochs", "2", "--batch-size", "100", "--lr", "0.2", "--l2", "1e-3")
    result, md = report(run_dir)
    assert "staleness.png" in result["images"]
    ps = json.loads((run_dir / "summary.json").read_text())["ps"]
    hist = np.array(ps["staleness_histogram"])
    # Every applied gradient is counted once; the mean from the histogram is the server's mean.
    assert hist.sum() == ps["gradients"] == sum(w["steps"] for w in ps["per_worker"])
    assert len(hist) <= ps["staleness_histogram_last_bin"]  # no overflow on a small run
    assert np.dot(np.arange(len(hist)), hist) / hist.sum() == pytest.approx(ps["mean_staleness"], rel=1e-12)
    assert len(hist) - 1 == ps["max_staleness"]
    # Each logged gradient's staleness (metrics.jsonl) has a count in the histogram.
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = np.bincount([r["staleness"] for r in records], minlength=len(hist))
    assert len(logged) == len(hist) and np.all(logged <= hist)
    assert table(md, "| staleness | gradients |") == [[str(i), str(c)] for i, c in enumerate(hist) if c]
    assert [r[0] for r in table(md, "| rank |")] == ["0 server", "1 worker", "2 worker"]

    X, y, coef, intercept = load(logistic_h5, run_dir)
    assert value(md, "final objective") == pytest.approx(objective_numpy("logistic", X, y, coef, intercept, 1e-3),
                                                         rel=1e-9)
    pred = ((X @ coef.T)[:, 0] + intercept[0] > 0).astype(int)
    check_confusion(md, y.astype(int), pred, 2)


# -- refusals and helpers (no mpirun) ------------------------------------------------------

@pytest.mark.parametrize("what", ["missing", "empty", "no-model", "bad-json"])
def test_report_refuses_what_is_not_a_finished_run(what, tmp_path):
    run_dir = tmp_path / "run"
    if what != "missing":
        run_dir.mkdir()
    if what == "no-model":
        (run_dir / "summary.json").write_text(json.dumps({"command": "train"}))
    if what == "bad-json":
        (run_dir / "summary.json").write_text("{not json")
        (run_dir / "model.h5").write_bytes(b"")
    proc = run(MPIDML + ["report", str(run_dir)], check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpidml: error: "), proc.stderr
    assert {"missing": "is not a directory", "empty": "no summary.json", "no-model": "no model.h5",
            "bad-json": "not readable JSON"}[what] in lines[0]
    assert not (run_dir / "report").exists()


def test_report_without_matplotlib_says_so_in_one_line(logistic_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MpidmlError, match=r"needs matplotlib.*pip install 'mpidml\[plot\]'"):
        write_report(str(logistic_run), str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    from mpidml.cli import main

    assert main(["report", str(logistic_run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mpidml: error: mpidml report needs matplotlib")


def test_top_coefficients_many_classes_rank_by_largest_magnitude(rng):
    K, D, k = MAX_CLASS_PANELS + 3, 30, 5
    coef = rng.standard_normal((K, D))
    (panel,) = top_coefficients(coef, k)
    best = np.abs(coef).max(axis=0)
    signed = np.array([coef[np.argmax(np.abs(coef[:, j])), j] for j in range(D)])
    order = np.argsort(-best)
    assert [j for j, _ in panel["positive"]] == [j for j in order if signed[j] > 0][:k]
    assert [j for j, _ in panel["negative"]] == [j for j in order if signed[j] < 0][:k]
    for j, v in panel["positive"] + panel["negative"]:
        assert v == signed[j] and coef[panel["classes"][j], j] == v


def test_feature_names_fall_back_to_column_numbers(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"] = np.zeros((3, 4))
        f["X"].attrs["feature_names"] = np.array(["a", "b", "c"], dtype=h5py.string_dtype())  # one short
    names, source = feature_names(str(path), "X", 4)
    assert names == ["x0", "x1", "x2", "x3"] and "3 entries for 4 features" in source
    with h5py.File(path, "r+") as f:
        f["X"].attrs["feature_names"] = np.array([b"a", b"b", b"c", b"d"])
    assert feature_names(str(path), "X", 4)[0] == ["a", "b", "c", "d"]
    assert feature_names(str(tmp_path / "gone.h5"), "X", 2)[0] == ["x0", "x1"]


def test_report_under_mpirun_writes_once(logistic_run, tmp_path):
    # Post-processing needs no MPI; launched on 2 ranks by habit, one rank does the work
    # (two would write the same files at once), as `mpidml info` prints once.
    proc = run(MPIDML + ["report", str(logistic_run), "--out", str(tmp_path / "rep")], ranks=2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1 and json.loads(lines[0])["images"]
    assert (tmp_path / "rep" / "index.html").exists()
