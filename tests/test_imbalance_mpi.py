"""--shard stratified|shuffled and distributed metrics on P ranks (mpirun -n 1, 2, 3).

References: the single-process contiguous run on MPI.COMM_SELF, and scikit-learn's metrics.
"""

import numpy as np
import pytest
from mpi4py import MPI
from sklearn import metrics as skm

from mpidml.comm import Context
from mpidml.train import evaluate_params

from imbalance_helpers import make_imbalanced, train_rows

pytestmark = pytest.mark.mpi


def gather_ids(world, ids):
    counts = np.array(world.comm.allgather(ids.size))
    out = np.empty(counts.sum(), dtype=np.int64)
    world.comm.Allgatherv(ids, [out, counts])
    return out, counts


@pytest.mark.parametrize("mode", ["stratified", "shuffled"])
@pytest.mark.parametrize("options", [dict(optimizer="lbfgs", tol=1e-10),
                                     dict(optimizer="sgd", lr=0.2, batch_size=64, epochs=2, momentum=0.5)],
                         ids=["lbfgs", "sgd"])
def test_sharding_modes_do_not_change_the_model(mode, options):
    X, y = make_imbalanced(n=1201, d=5, k=3, seed=2)
    world = Context(MPI.COMM_WORLD)
    params, trainer, sh, _ = train_rows(world, X, y, shard=mode, class_weight="balanced", model="softmax",
                                        l2=1e-3, seed=5, **options)
    ref, *_ = train_rows(Context(MPI.COMM_SELF), X, y, class_weight="balanced", model="softmax", l2=1e-3, seed=5,
                         **options)
    np.testing.assert_allclose(params, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())

    # Every row is held exactly once, with its own features and label, in increasing order.
    assert np.all(np.diff(sh.gids) > 0)
    np.testing.assert_array_equal(sh.X, X[sh.gids])
    np.testing.assert_array_equal(sh.y, y[sh.gids])
    everything, counts = gather_ids(world, sh.gids)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(y)))
    assert counts.max() - counts.min() <= 1
    if mode == "stratified":
        mine = np.bincount(sh.y, minlength=3)
        expected = np.bincount(y, minlength=3) / world.size
        assert np.all(np.abs(mine - expected) <= 1)


def test_distributed_metrics_match_sklearn():
    X, y = make_imbalanced(n=2001, d=4, seed=3)
    world = Context(MPI.COMM_WORLD)
    params, trainer, sh, _ = train_rows(world, X, y, shard="stratified", model="logistic", optimizer="lbfgs",
                                        tol=1e-8, l2=1e-3)
    m = evaluate_params(world, trainer.model, sh, params, 1e-3)
    z = X @ params[:-1] + params[-1]
    score, pred = 1 / (1 + np.exp(-z)), (z > 0).astype(int)
    auc = skm.roc_auc_score(y, score)
    assert abs(m["roc_auc"] - auc) <= 1e-3 and abs(m["roc_auc"] - auc) <= m["auc_tie_bound"] + 1e-12
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, zero_division=np.nan)
    np.testing.assert_allclose(m["precision"], p, rtol=1e-12)
    np.testing.assert_allclose(m["recall"], r, rtol=1e-12)
    np.testing.assert_allclose(m["f1"], f, rtol=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), rel=1e-12)
    if world.rank == 0:
        print(f"AUC histogram {m['roc_auc']:.6f} vs sklearn {auc:.6f} (diff {abs(m['roc_auc'] - auc):.2e})")
