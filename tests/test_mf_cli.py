"""Matrix factorization end to end: generate mf -> mpirun train --model mf -> evaluate / predict."""

import json

import h5py
import numpy as np
import pytest

from test_cli import MPIDML, run

NOISE = 0.1
TRAIN = ["--model", "mf", "--rank", "3", "--optimizer", "als", "--l2", "1e-5", "--max-iter", "20", "--tol", "0"]


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    d = tmp_path_factory.mktemp("mf")
    # 20000 ratings: not divisible by 3, so the 3-rank shards are uneven.
    run(MPIDML + ["generate", "mf", "--users", "300", "--items", "200", "--rank", "3", "--ratings", "20000",
                  "--noise", str(NOISE), "--seed", "7", "--test-ratings", "3000", "--test-output", str(d / "t.h5"),
                  "-o", str(d / "r.h5")])
    return d / "r.h5", d / "t.h5"


def numpy_predict(model_path, user, item):
    with h5py.File(model_path) as f:
        P, Q = f["user_factors"][...], f["item_factors"][...]
        b, c, mu = f["user_bias"][...], f["item_bias"][...], float(f.attrs["global_mean"])
    return mu + b[user] + c[item] + np.sum(P[user] * Q[item], axis=1)


def read(path):
    with h5py.File(path) as f:
        return f["user"][...], f["item"][...], f["rating"][...]


@pytest.fixture(scope="module")
def runs(ratings, tmp_path_factory):
    train, test = ratings
    d = tmp_path_factory.mktemp("runs")
    for ranks in (1, 3):
        run(MPIDML + ["train", str(train), *TRAIN, "--holdout", str(test), "--out", str(d / f"n{ranks}")],
            ranks=ranks)
    return d / "n1", d / "n3"


def test_train_summary_model_and_held_out_rmse(ratings, runs):
    train, test = ratings
    one, three = runs
    s = json.loads((three / "summary.json").read_text())
    assert s["model"] == "mf" and s["ranks"] == 3 and s["n_users"] == 300 and s["rank"] == 3
    assert s["shard_rows"] == [6667, 6667, 6666]
    u, i, r = read(train)
    assert s["global_mean"] == pytest.approx(r.mean(), rel=1e-14)
    # Train and held-out RMSE recomputed in NumPy from model.h5 alone.
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean((r - numpy_predict(three / "model.h5", u, i)) ** 2)), rel=1e-10)
    tu, ti, tr = read(test)
    held = np.sqrt(np.mean((tr - numpy_predict(three / "model.h5", tu, ti)) ** 2))
    assert s["holdout_rmse"] == pytest.approx(held, rel=1e-10)
    assert held < 1.15 * NOISE
    h = np.array(s["objective_history"])
    assert len(h) == 21 and np.all(np.diff(h) <= 0)
    lines = [json.loads(x) for x in (three / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines] == list(range(1, 21))


def test_one_and_three_ranks_give_the_same_factors(runs):
    one, three = runs
    with h5py.File(one / "model.h5") as a, h5py.File(three / "model.h5") as b:
        for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
            np.testing.assert_allclose(a[name][...], b[name][...], rtol=0, atol=1e-10)


def test_evaluate_and_predict(ratings, runs, tmp_path):
    _, test = ratings
    _, three = runs
    ev = json.loads(run(MPIDML + ["evaluate", str(three / "model.h5"), str(test)], ranks=2).stdout.splitlines()[-1])
    tu, ti, tr = read(test)
    pred = numpy_predict(three / "model.h5", tu, ti)
    assert ev["model"] == "mf" and ev["n_ratings"] == 3000
    assert ev["rmse"] == pytest.approx(np.sqrt(np.mean((tr - pred) ** 2)), rel=1e-10)
    assert ev["mae"] == pytest.approx(np.mean(np.abs(tr - pred)), rel=1e-10)
    out = tmp_path / "pred.h5"
    run(MPIDML + ["predict", str(three / "model.h5"), str(test), "-o", str(out)], ranks=3)
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["prediction"][...], pred, rtol=1e-13)


@pytest.mark.parametrize("extra,message", [
    (["--model", "mf", "--rank", "3"], "--model mf trains with --optimizer als (alternating least squares), not lbfgs"),
    (["--model", "mf", "--optimizer", "als"], "--model mf needs --rank K >= 1"),
    (["--model", "mf", "--rank", "2", "--optimizer", "als", "--l2", "0"], "--optimizer als needs --l2 > 0"),
    (["--model", "linear", "--optimizer", "als"], "--optimizer als applies to --model mf only"),
    (["--model", "mf", "--rank", "2", "--optimizer", "als", "--shard", "shuffled"],
     "--shard does not apply to --model mf"),
    (["--model", "mf", "--rank", "2", "--optimizer", "als", "--driver", "mpio"],
     "--driver does not apply to --model mf"),
    (["--model", "mf", "--rank", "2", "--optimizer", "als", "--standardize"],
     "--standardize does not apply to --model mf"),
])
def test_bad_options_are_one_clear_error(ratings, tmp_path, extra, message):
    train, _ = ratings
    proc = run(MPIDML + ["train", str(train), *extra, "--out", str(tmp_path / "r")], ranks=2, check=False)
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr


def test_ids_beyond_the_model_are_one_clear_error(ratings, runs, tmp_path):
    _, three = runs
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["user"], f["item"], f["rating"] = np.array([0, 1, 300]), np.array([0, 1, 2]), np.ones(3)
    proc = run(MPIDML + ["evaluate", str(three / "model.h5"), str(bad)], ranks=2, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("has user ids up to 300 but the model knows only 300 users") == 1, proc.stderr
