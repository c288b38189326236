"""Ratings data for matrix factorization: layout, synthetic generator, sharded reads.

Layout (one HDF5 file, one row per observed rating)::

    user    (N,) int64    user id in [0, n_users)
    item    (N,) int64    item id in [0, n_items)
    rating  (N,) float64  the observed rating (any finite number)
    attrs   n_users, n_items   (optional: without them the ids' maxima + 1 are used)

The rows may come in any order; a user's ratings may be spread over many
ranks. Each rank reads the balanced contiguous block
``shard_bounds(N, n_parts, part)`` of all three datasets (plain read-only
h5py opens; the three vectors are small next to a dense X).

``generate_ratings`` writes the same layout with a known low-rank truth::

    r_ui = mu + b_u + c_i + p_u . q_i + noise * N(0, 1)

with ``p_u, q_i ~ N(0, k**-0.5 I_k)`` (so ``p_u . q_i`` has variance 1 for any
rank k), ``b_u, c_i ~ N(0, 0.5**2)`` and ``mu = 3``. The (user, item) pairs
are distinct, drawn uniformly without replacement from all ``U * I`` pairs,
and stored sorted by user, then item (so a contiguous shard holds whole users,
except at its two ends). Extra datasets: ``true_user_factors`` (U, k),
``true_item_factors`` (I, k), ``true_user_bias`` (U,), ``true_item_bias``
(I,), ``true_mean`` (scalar); attributes ``kind='mf'``, ``n_users``,
``n_items``, ``rank``, ``noise``, ``seed``, ``ratings``. With
``test_ratings = M > 0`` a second file gets M further distinct pairs (disjoint
from the training pairs) with the same truth: held-out ratings.

Never imports mpi4py and never communicates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ConfigError, DataError, MpidmlError
from .partition import shard_bounds
from .writer import atomic_output, check_output_path

__all__ = ["RatingsShard", "generate_ratings", "inspect_ratings", "read_ratings_shard", "RATING_NAMES"]

RATING_NAMES = ("user", "item", "rating")
TRUE_MEAN = 3.0
BIAS_STD = 0.5


@dataclass
class RatingsShard:
    """The ratings ``[lo, hi)`` of a ratings file held by this rank."""

    user: np.ndarray  # (n_local,) int64 in [0, n_users)
    item: np.ndarray  # (n_local,) int64 in [0, n_items)
    rating: np.ndarray  # (n_local,) float64, finite
    lo: int
    hi: int
    n_total: int
    n_users: int  # from the file's attributes, or 0 when absent (the caller takes max id + 1 over all ranks)
    n_items: int
    path: str
    driver: str = "independent"

    @property
    def n_local(self) -> int:
        return self.hi - self.lo


def _int_option(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"--{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"--{name} must be >= {minimum}, got {value}")
    return int(value)


def true_factors(seed: int, users: int, items: int, rank: int):
    """The generator's truth: (P (U, k), Q (I, k), b (U,), c (I,), mu), from ``seed`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    scale = rank ** -0.25
    P = rng.normal(0.0, scale, size=(users, rank))
    Q = rng.normal(0.0, scale, size=(items, rank))
    b = rng.normal(0.0, BIAS_STD, size=users)
    c = rng.normal(0.0, BIAS_STD, size=items)
    return P, Q, b, c, TRUE_MEAN


def generate_ratings(path, *, users, items, rank, ratings, noise=0.1, seed=0, test_ratings=0,
                     test_path=None, overwrite=True) -> dict:
    """Write synthetic low-rank ratings (and optionally held-out ones); returns metadata.

    Serial (the caller runs it on one rank). Memory: about 40 bytes per rating
    plus the factors. Raises ConfigError for bad sizes (more ratings than
    user-item pairs, ...) or output paths, DataError if writing fails.
    """
    users = _int_option(users, "users", 1)
    items = _int_option(items, "items", 1)
    rank = _int_option(rank, "rank", 1)
    ratings = _int_option(ratings, "ratings", 1)
    seed = _int_option(seed, "seed", 0)
    test_ratings = _int_option(test_ratings, "test-ratings", 0)
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ConfigError(f"--noise must be a number, got {noise!r}") from None
    if not (np.isfinite(noise) and noise >= 0):
        raise ConfigError(f"--noise must be finite and >= 0, got {noise}")
    pairs = users * items
    if ratings + test_ratings > pairs:
        raise ConfigError(f"--ratings {ratings} + --test-ratings {test_ratings} exceed the {pairs} distinct "
                          f"(user, item) pairs of {users} users x {items} items")
    if test_ratings and not test_path:
        raise ConfigError("--test-ratings needs --test-output FILE for the held-out ratings")
    outputs = [os.fspath(path)] + ([os.fspath(test_path)] if test_ratings else [])
    if len(outputs) == 2 and os.path.abspath(outputs[0]) == os.path.abspath(outputs[1]):
        raise ConfigError("--test-output must differ from the training output file")
    for out in outputs:
        check_output_path(out, overwrite, "use --overwrite to replace it")

    P, Q, b, c, mu = true_factors(seed, users, items, rank)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    flat = rng.choice(pairs, size=ratings + test_ratings, replace=False)  # distinct pairs
    noise_draws = rng.standard_normal(ratings + test_ratings)
    meta = {"kind": "mf", "n_users": users, "n_items": items, "rank": rank, "ratings": ratings,
            "test_ratings": test_ratings, "noise": noise, "seed": seed, "path": outputs[0],
            "test_path": outputs[1] if test_ratings else None, "true_mean": mu}
    for out, sel in zip(outputs, (slice(0, ratings), slice(ratings, ratings + test_ratings))):
        order = np.argsort(flat[sel], kind="stable")  # by user, then item
        pair = flat[sel][order]
        u, i = pair // items, pair % items
        r = mu + b[u] + c[i] + np.einsum("nk,nk->n", P[u], Q[i]) + noise * noise_draws[sel][order]
        _write(out, u, i, r, P, Q, b, c, mu, {**meta, "ratings": len(r)})
    return meta


def _write(path, u, i, r, P, Q, b, c, mu, meta) -> None:
    with atomic_output(path, "ratings") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("user", data=u.astype(np.int64))
        f.create_dataset("item", data=i.astype(np.int64))
        f.create_dataset("rating", data=r.astype(np.float64))
        f.create_dataset("true_user_factors", data=P)
        f.create_dataset("true_item_factors", data=Q)
        f.create_dataset("true_user_bias", data=b)
        f.create_dataset("true_item_bias", data=c)
        f.create_dataset("true_mean", data=np.float64(mu))
        f.attrs.update({k: meta[k] for k in ("kind", "n_users", "n_items", "rank", "noise", "seed", "ratings")})
        f.attrs["true_mean"] = mu


def _positive_attr(f, path, name) -> int:
    if name not in f.attrs:
        return 0
    value = f.attrs[name]
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: attribute {name} must be a positive integer, got {value!r}") from None
    if as_int < 1 or as_int != value:
        raise DataError(f"{path}: attribute {name} must be a positive integer, got {value!r}")
    return as_int


def inspect_ratings(path, with_rating: bool = True) -> dict:
    """Check a ratings file's metadata (serial, read-only, reads no ratings).

    Returns ``{'n_ratings', 'n_users', 'n_items'}`` (n_users/n_items 0 when the
    file has no such attribute). DataError for a missing or non-HDF5 file, a
    missing ``user``/``item``/``rating`` dataset, a dataset that is not 1-D,
    integer ids, a numeric rating, unequal lengths or zero ratings.
    ``with_rating=False`` (predictions) needs only user and item.
    """
    from .hdf5 import _open_serial  # the dense reader's clear open errors

    path = os.fspath(path)
    with _open_serial(path) as f:
        lengths = {}
        for name in RATING_NAMES if with_rating else RATING_NAMES[:2]:
            ds = f.get(name)
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{path} has no dataset '{name}'; a ratings file needs datasets user (int64), "
                                f"item (int64) and rating (float64) of equal length")
            if ds.ndim != 1:
                raise DataError(f"{path}: dataset '{name}' must be 1-D (one value per rating), got shape {ds.shape}")
            kinds = "iu" if name != "rating" else "iuf"
            if ds.dtype.kind not in kinds or ds.dtype.names is not None:
                want = "an integer id" if name != "rating" else "numeric"
                raise DataError(f"{path}: dataset '{name}' has dtype {ds.dtype}; it must be {want}")
            lengths[name] = int(ds.shape[0])
        if len(set(lengths.values())) != 1:
            raise DataError(f"{path}: datasets {', '.join(lengths)} must have the same length, got "
                            + ", ".join(f"{k} {v}" for k, v in lengths.items()))
        n = lengths["user"]
        if n == 0:
            raise DataError(f"{path} has zero ratings; nothing to train on")
        return {"n_ratings": n, "n_users": _positive_attr(f, path, "n_users"),
                "n_items": _positive_attr(f, path, "n_items")}


def read_ratings_shard(path, *, parts: tuple[int, int] = (1, 0), with_rating: bool = True) -> RatingsShard:
    """Read ratings ``shard_bounds(N, n_parts, part)`` of ``path`` (``parts=(n_parts, part)``).

    ``part = -1`` holds no ratings (a parameter server). Validates what it
    reads: ids must be >= 0 and, when the file has ``n_users``/``n_items``
    attributes, below them; ratings must be finite. DataError names the first
    bad global row. Fewer ratings than parts is a DataError.
    ``with_rating=False`` reads only user and item (``rating`` is then empty).
    """
    path = os.fspath(path)
    info = inspect_ratings(path, with_rating)
    n_total = info["n_ratings"]
    n_parts, part = int(parts[0]), int(parts[1])
    if n_total < n_parts:
        raise DataError(f"{path} has {n_total} ratings, fewer than the {n_parts} data-holding ranks; "
                        "use fewer ranks")
    lo, hi = shard_bounds(n_total, n_parts, part) if part >= 0 else (0, 0)
    try:
        with h5py.File(path, "r") as f:
            user = np.ascontiguousarray(f["user"][lo:hi], dtype=np.int64)
            item = np.ascontiguousarray(f["item"][lo:hi], dtype=np.int64)
            rating = np.ascontiguousarray(f["rating"][lo:hi] if with_rating else [], dtype=np.float64)
    except MpidmlError:
        raise
    except Exception as exc:
        raise DataError(f"error reading ratings {lo}..{hi - 1} of {path} (corrupt file?): "
                        f"{type(exc).__name__}: {exc}") from None
    for name, ids, n in (("user", user, info["n_users"]), ("item", item, info["n_items"])):
        bad = np.flatnonzero((ids < 0) | (ids >= n)) if n else np.flatnonzero(ids < 0)
        if bad.size:
            j = int(bad[0])
            limit = f"be in [0, {n}) (attribute n_{name}s)" if n else "be >= 0"
            raise DataError(f"{path}: dataset '{name}' has id {ids[j]} at global row {lo + j}; "
                            f"{name} ids must {limit}")
    bad = np.flatnonzero(~np.isfinite(rating))
    if bad.size:
        j = int(bad[0])
        raise DataError(f"{path}: dataset 'rating' has a non-finite value ({rating[j]}) at global row {lo + j}; "
                        "remove or fix that rating")
    return RatingsShard(user=user, item=item, rating=rating, lo=lo, hi=hi, n_total=n_total,
                        n_users=info["n_users"], n_items=info["n_items"], path=path)
