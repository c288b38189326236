"""The model interface: what a training strategy needs to know about a model.

A model is a parameter count, an initial parameter vector, and the summed
loss and gradient over some rows of this rank's shard. Parameters are ONE
flat float64 vector (intercepts last) so that a strategy can reduce, send and
update them without knowing the model's structure. Models never import MPI:
the strategy reduces the sums they return.

The objective, the same for every model so results compare with other tools:

    f(params) = (1/W) * sum_i sw_i * loss_i + (l2/2) * ||params[penalized]||^2

with W the global sum of sample weights (N for unit weights; with --class-weight the
class weights are folded into sw, mpidml.imbalance). Intercepts are not penalised,
which gives scikit-learn's optimum (with sample_weight=sw) at C = 1/(l2*W), i.e.
C = 1/(l2*N) for unit weights.

The interface is deliberately shard-typed (``loss_grad(shard, ...)``) so that
later models fit it: a CSR shard for sparse text, a ratings shard for matrix
factorisation, dense mini-batches for an MLP.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..buffers import aligned_zeros


class Model:
    """Base class. Subclasses set ``name``, ``n_features``, ``n_outputs`` and ``n_params``."""

    name = "model"
    is_classifier = False
    y_dtype = np.float64

    def __init__(self, n_features: int, n_outputs: int = 1):
        self.n_features = int(n_features)
        self.n_outputs = int(n_outputs)
        self.n_params = self.n_outputs * (self.n_features + 1)
        # Penalised entries: the coefficient block, not the trailing intercepts.
        self.penalized = slice(0, self.n_outputs * self.n_features)

    # -- parameters --------------------------------------------------------
    def init_params(self, seed: int = 0) -> np.ndarray:
        """Initial parameters (zeros: a convex objective needs no random start).

        Non-convex models (the MLP) draw a random start from ``seed``, the same on every rank.
        On a cache line (mpidml.buffers.aligned_zeros): the kernels load w in 8-lane vectors, and
        the trainers update these parameters in place.
        """
        return aligned_zeros(self.n_params)

    def coef_intercept(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views of params as scikit-learn's ``coef_`` (K, D) and ``intercept_`` (K,)."""
        K, D = self.n_outputs, self.n_features
        return params[: K * D].reshape(K, D), params[K * D:]

    def params_from(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        coef = np.asarray(coef, dtype=np.float64).reshape(self.n_outputs, self.n_features)
        intercept = np.asarray(intercept, dtype=np.float64).reshape(self.n_outputs)
        return np.concatenate([coef.ravel(), intercept])

    # -- objective ---------------------------------------------------------
    def loss_grad(self, shard, params, rows, grad, with_loss=True) -> float:
        """Add sum_i sw_i * dloss_i/dparams over ``rows`` into ``grad``; return the loss sum.

        shard: this rank's data; params: (n_params,) float64; rows: int64 local
        row indices; grad: (n_params,) float64, added to (caller zeroes it).
        Returns sum_i sw_i * loss_i (0.0 when with_loss is False).
        """
        raise NotImplementedError

    def lbfgs_h0(self, mean_sq: np.ndarray, l2: float) -> np.ndarray | None:
        """L-BFGS's diagonal ``D`` (``H0 = gamma D``) from the features' global mean squares.

        mean_sq: float64 (D,), (1/N) sum_i x_ij^2 over all rows. Returns float64 (n_params,):
        1 / (mean_sq[j] + l2) for every coefficient of feature j (an estimate, up to the common
        factor gamma, of 1 / Hessian diagonal: the loss curvature times x_j^2, plus the
        penalty), 1 for the intercepts (a column of ones); None for models whose parameters
        are not per-feature coefficients. Entries are clipped to 1e12 times the smallest,
        so a constant zero column cannot produce an infinite step.
        """
        K = self.n_outputs
        curv = np.asarray(mean_sq, dtype=np.float64) + float(l2)
        top = float(curv.max()) if curv.size else 0.0
        if not (np.isfinite(top) and top > 0.0):
            return None
        curv = np.maximum(curv, 1e-12 * max(top, 1.0))
        return np.concatenate([np.tile(1.0 / curv, K), np.ones(K)])

    def check_labels(self, y: np.ndarray, lo: int) -> None:
        """Raise DataError if this rank's labels are invalid for the model (local check)."""

    # -- evaluation --------------------------------------------------------
    def n_stats(self) -> int:
        """Length of the float64 statistics vector from :meth:`stats` (reduced by SUM)."""
        return 0

    def stats(self, shard, params, rows) -> np.ndarray:
        """Sufficient statistics for metrics on these rows (summed across ranks)."""
        return np.zeros(0)

    def metrics_from_stats(self, stats: np.ndarray, weight_sum: float) -> dict:
        return {}

    def loss_grad_hits(self, shard, params, rows, grad, hits) -> float:
        """:meth:`loss_grad` with the loss, and the batch's weighted correct predictions in
        ``hits[0]`` (float64 array, size >= 1): what a logged mini-batch step needs. Classifiers
        only. Here the two calls; a model whose loss kernel counts the hits in its own pass
        (:meth:`fused_hits`) overrides it."""
        loss = self.loss_grad(shard, params, rows, grad, True)
        hits[0] = self.batch_hits(shard, params, rows)[0]
        return loss

    def fused_hits(self, shard) -> bool:
        """True where :meth:`loss_grad_hits` is one pass of a compiled kernel of the loss
        kernel's warm-up group (mpidml.train.warm_up_groups) on this shard."""
        return False

    def batch_hits(self, shard, params, rows) -> tuple[float, float]:
        """(weighted correct predictions, weight) of ``rows``: the batch accuracy that a
        mini-batch loop logs. Classifiers only (they define ``predict_labels``).

        The trace and sum of :meth:`stats`' confusion matrix, without its other parts
        (a binary model's 2 x 4096-bin score histograms cost more than the labels).
        """
        hit = self.predict_labels(shard, params, rows) == shard.y[rows]
        if shard.sw.size:
            w = shard.sw[rows]
            return float(np.dot(w, hit)), float(w.sum())
        return float(np.count_nonzero(hit)), float(rows.size)


def is_sparse(shard) -> bool:
    """True for a CSR shard (indptr/indices/data instead of a dense X; see mpidml.data.csr)."""
    return bool(getattr(shard, "is_sparse", False))


def first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_integer_labels(y: np.ndarray, lo: int, n_classes: int, what: str) -> None:
    bad = (y < 0) | (y >= n_classes) | (y != np.floor(y))
    if bad.any():
        i = first_bad(bad)
        raise DataError(f"label {float(y[i]):g} at global row {lo + i} is not valid for {what}")
