"""Ratings data for matrix factorization: the generator, sharded reads, validation (serial + CLI)."""

import json

import h5py
import numpy as np
import pytest

from mpidml.data.partition import shard_bounds
from mpidml.data.ratings import generate_ratings, inspect_ratings, read_ratings_shard
from mpidml.errors import ConfigError, DataError

from test_cli import MPIDML, run


@pytest.fixture(scope="module")
def ratings_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("mf")
    train, test = d / "r.h5", d / "r_test.h5"
    generate_ratings(train, users=60, items=40, rank=3, ratings=1501, noise=0.2, seed=4,
                     test_ratings=300, test_path=test)
    return train, test


def test_generated_ratings_follow_the_stored_truth(ratings_pair):
    train, test = ratings_pair
    pairs = []
    for path, n in ((train, 1501), (test, 300)):
        with h5py.File(path) as f:
            u, i, r = f["user"][...], f["item"][...], f["rating"][...]
            P, Q = f["true_user_factors"][...], f["true_item_factors"][...]
            b, c, mu = f["true_user_bias"][...], f["true_item_bias"][...], float(f["true_mean"][()])
            assert (u.dtype, i.dtype, r.dtype) == (np.int64, np.int64, np.float64)
            assert f.attrs["n_users"] == 60 and f.attrs["n_items"] == 40 and f.attrs["rank"] == 3
            assert P.shape == (60, 3) and Q.shape == (40, 3) and len(u) == n
        key = u * 40 + i
        assert np.all(np.diff(key) > 0)  # sorted by user then item, and distinct
        pairs.append(set(key.tolist()))
        # Residuals against an independent NumPy evaluation of the truth are the noise alone.
        resid = r - (mu + b[u] + c[i] + np.sum(P[u] * Q[i], axis=1))
        assert abs(resid.std() - 0.2) < 0.2 * 4 / np.sqrt(2 * n) and abs(resid.mean()) < 4 * 0.2 / np.sqrt(n)
    assert not pairs[0] & pairs[1]  # held-out pairs are not training pairs
    # p.q has variance about 1 whatever k (the factor scale is k**-0.25)
    assert 0.5 < np.var(np.sum(P[:, None, :] * Q[None, :, :], axis=2)) < 2.0


def test_generation_is_deterministic_and_seeded(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    generate_ratings(a, users=20, items=10, rank=2, ratings=50, seed=1)
    generate_ratings(b, users=20, items=10, rank=2, ratings=50, seed=1)
    generate_ratings(c, users=20, items=10, rank=2, ratings=50, seed=2)
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        assert np.array_equal(fa["rating"][...], fb["rating"][...])
        assert not np.array_equal(fa["rating"][...], fc["rating"][...])


@pytest.mark.parametrize("n_parts", [1, 2, 3, 7])
def test_shards_partition_the_ratings(ratings_pair, n_parts):
    train, _ = ratings_pair
    with h5py.File(train) as f:
        whole = {k: f[k][...] for k in ("user", "item", "rating")}
    got = [read_ratings_shard(train, parts=(n_parts, p)) for p in range(n_parts)]
    for p, s in enumerate(got):
        assert (s.lo, s.hi) == shard_bounds(1501, n_parts, p)
        assert s.n_users == 60 and s.n_items == 40 and s.n_total == 1501
    for k in whole:
        assert np.array_equal(np.concatenate([getattr(s, k) for s in got]), whole[k])
    assert read_ratings_shard(train, parts=(2, -1)).n_local == 0


def _write(path, user, item, rating, **attrs):
    with h5py.File(path, "w") as f:
        f["user"], f["item"], f["rating"] = user, item, rating
        f.attrs.update(attrs)
    return path


@pytest.mark.parametrize("case,message", [
    ("user_range", "dataset 'user' has id 5 at global row 2; user ids must be in [0, 5)"),
    ("negative_item", "dataset 'item' has id -1 at global row 1; item ids must be >= 0"),
    ("nan", "dataset 'rating' has a non-finite value (nan) at global row 3"),
    ("lengths", "must have the same length, got user 4, item 3, rating 4"),
    ("missing", "has no dataset 'rating'"),
    ("float_ids", "dataset 'user' has dtype float64; it must be an integer id"),
    ("two_d", "dataset 'item' must be 1-D"),
])
def test_bad_ratings_give_one_clear_data_error(tmp_path, case, message):
    u, i, r = np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), np.array([1.0, 2.0, 3.0, 4.0])
    attrs = {}
    if case == "user_range":
        u[2], attrs = 5, {"n_users": 5, "n_items": 3}
    elif case == "negative_item":
        i[1] = -1
    elif case == "nan":
        r[3] = np.nan
    elif case == "lengths":
        i = i[:3]
    elif case == "float_ids":
        u = u.astype(np.float64)
    elif case == "two_d":
        i = i.reshape(2, 2)
    path = tmp_path / "bad.h5"
    if case == "missing":
        with h5py.File(path, "w") as f:
            f["user"], f["item"] = u, i
    else:
        _write(path, u, i, r, **attrs)
    with pytest.raises(DataError) as info:
        read_ratings_shard(path, parts=(1, 0))
    assert message in str(info.value)


def test_ids_checked_only_for_sign_without_size_attributes(tmp_path):
    path = _write(tmp_path / "noattrs.h5", np.array([0, 9]), np.array([3, 1]), np.array([1.0, 2.0]))
    assert inspect_ratings(path) == {"n_ratings": 2, "n_users": 0, "n_items": 0}
    assert read_ratings_shard(path).n_local == 2
    with pytest.raises(DataError, match="fewer than the 3 data-holding ranks"):
        read_ratings_shard(path, parts=(3, 0))


@pytest.mark.parametrize("kwargs,message", [
    (dict(ratings=201), "exceed the 200 distinct"),
    (dict(rank=0), "--rank must be >= 1"),
    (dict(noise=-1.0), "--noise must be finite and >= 0"),
    (dict(test_ratings=5), "--test-ratings needs --test-output"),
])
def test_generator_options_validated(tmp_path, kwargs, message):
    options = {**dict(users=20, items=10, rank=2, ratings=50), **kwargs}
    with pytest.raises(ConfigError, match=message):
        generate_ratings(tmp_path / "x.h5", **options)


def test_generate_mf_command_line(tmp_path):
    out, held = tmp_path / "r.h5", tmp_path / "t.h5"
    proc = run(MPIDML + ["generate", "mf", "--users", "30", "--items", "20", "--rank", "2", "--ratings", "200",
                         "--test-ratings", "50", "--test-output", str(held), "--noise", "0.3", "--seed", "3",
                         "-o", str(out)], ranks=2)
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["n_users"] == 30 and meta["ratings"] == 200 and meta["test_path"] == str(held)
    with h5py.File(out) as f, h5py.File(held) as g:
        assert f["rating"].shape == (200,) and g["rating"].shape == (50,)
        assert np.array_equal(f["true_item_factors"][...], g["true_item_factors"][...])
    proc = run(MPIDML + ["generate", "linear", "--rank", "3", "-o", str(tmp_path / "l.h5")], ranks=2, check=False)
    assert proc.returncode == 2 and proc.stderr.count("--rank applies to 'mpidml generate mf' only") == 1


def test_pairs_without_ratings_read_for_predictions(tmp_path):
    path = tmp_path / "pairs.h5"
    with h5py.File(path, "w") as f:
        f["user"], f["item"] = np.array([3, 1, 2]), np.array([0, 4, 4])
    with pytest.raises(DataError, match="has no dataset 'rating'"):
        read_ratings_shard(path)
    got = read_ratings_shard(path, parts=(2, 0), with_rating=False)
    assert got.user.tolist() == [3, 1] and got.item.tolist() == [0, 4] and got.rating.size == 0
