"""--impute mean / --standardize statistics on P ranks (mpirun -n 1, 2, 3): equal to scikit-learn
on the full data, for any split of the rows (N = 1001 is not divisible by 2 or 3; also with a
rank that holds no rows, like a parameter server), and bitwise the same on every rank.
"""

import math

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from mpidml.comm import Context
from mpidml.data import DenseShard, shard_bounds
from mpidml.preprocess import apply_preprocessing, fit_preprocessing

pytestmark = pytest.mark.mpi


def full_data():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((1001, 5)) * [1, 30, 1e-2, 2, 1] + [0, 1e5, -7, 0, 3]
    X[:, 4] = 3.0  # constant
    X[rng.random(X.shape) < 0.05] = np.nan
    X[:, 0][:600] = np.nan  # one column missing in a whole block (some ranks see no value of it)
    return X


def my_rows(n, world, server_rank_empty):
    if server_rank_empty and world.size > 1:  # rank 0 holds nothing, the others split the rows
        return shard_bounds(n, world.size - 1, world.rank - 1) if world.rank else (0, 0)
    return shard_bounds(n, world.size, world.rank)


@pytest.mark.parametrize("server_rank_empty", [False, True], ids=["all-ranks", "rank0-empty"])
def test_statistics_equal_sklearn_on_the_full_data(server_rank_empty):
    world = Context(MPI.COMM_WORLD)
    X = full_data()
    lo, hi = my_rows(len(X), world, server_rank_empty)
    shard = DenseShard(X=X[lo:hi].copy(), y=np.zeros(hi - lo), sw=np.empty(0), lo=lo, hi=hi, n_total=len(X),
                       n_features=5, driver="memory", path="<memory>")
    prep = fit_preprocessing(world, shard, "mean", True)

    imputer = SimpleImputer(strategy="mean").fit(X)
    scaler = StandardScaler().fit(imputer.transform(X))
    np.testing.assert_allclose(prep.impute_mean, imputer.statistics_, rtol=1e-12)
    np.testing.assert_allclose(prep.standardize_mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(prep.standardize_scale, scaler.scale_, rtol=1e-12)
    assert prep.constant_columns == (4,)
    assert prep.imputed_values == int(np.isnan(X).sum())

    apply_preprocessing(prep, shard)
    expected = scaler.transform(imputer.transform(X))[lo:hi]
    s, m = prep.standardize_scale, prep.standardize_mean  # compared in raw units (see test_preprocess.py)
    np.testing.assert_allclose(shard.X * s + m, expected * s + m, rtol=1e-13, atol=1e-13)

    # Every rank holds bitwise the same statistics (the root's, broadcast).
    mine = np.concatenate([prep.impute_mean, prep.standardize_mean, prep.standardize_scale])
    everyone = np.empty((world.size, mine.size))
    world.comm.Allgather(mine, everyone)
    assert np.array_equal(everyone, np.broadcast_to(mine, everyone.shape))


def test_std_of_large_values_on_every_rank_count():
    # 1e6 rows of values ~1e6 split over the ranks: the std still matches an exactly rounded reference.
    world = Context(MPI.COMM_WORLD)
    n = 1_000_003
    x = 1e6 + np.random.default_rng(12).standard_normal(n)
    lo, hi = shard_bounds(n, world.size, world.rank)
    shard = DenseShard(X=x[lo:hi, None].copy(), y=np.zeros(hi - lo), sw=np.empty(0), lo=lo, hi=hi, n_total=n,
                       n_features=1, driver="memory", path="<memory>")
    prep = fit_preprocessing(world, shard, "none", True)
    mean = math.fsum(x) / n
    std = math.sqrt(math.fsum((x - mean) ** 2) / n)
    assert abs(prep.standardize_mean[0] - mean) <= 1e-15 * mean
    assert abs(prep.standardize_scale[0] - std) <= 1e-12 * std
    assert abs(prep.standardize_scale[0] - np.std(x)) <= 1e-10 * std
