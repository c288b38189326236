"""``--impute mean`` and ``--standardize``: global column statistics, applied to every shard in place.

Training computes the statistics over ALL rows (every rank's shard), never per rank:

* ``--impute mean``: NaN in X is a missing value. ``impute_mean[j]`` is the mean of the
  non-NaN values of column j over all rows (scikit-learn's ``SimpleImputer(strategy="mean")``).
  A column with no value at all is an error naming the column. Inf stays an error, and so
  does NaN in y.
* ``--standardize``: ``standardize_mean[j]`` and ``standardize_scale[j]`` are the mean and
  the population standard deviation (ddof 0) of column j over all N rows AFTER imputation,
  which is what ``Pipeline(SimpleImputer(), StandardScaler())`` computes: imputed entries
  equal the mean, so they add nothing to the squared deviations but count in N. A column
  whose variance is zero up to rounding (scikit-learn's rule
  ``var <= N eps var + (N |mean| eps)^2``) keeps scale 1, so it is only centred.

The statistics take two passes over the shard (the classic two-pass variance, each sum
compensated; see ``kernels/preprocess.py``) and two small sums over ranks: ``[count, sum]``
(2D values) and, for ``--standardize``, the squared deviations about the global mean (D).
Each is reduced to the root and the root's result broadcast (``Context.agreed_sum``), so
every rank applies bitwise the same transform.
Then ``X = (fill_NaN(X) - mean) / scale`` in place on each rank's rows, or, for a shard
streamed under ``--max-memory``, on every chunk as it is read.

model.h5 stores the transform (``impute_mean`` (D,), ``standardize_mean`` (D,),
``standardize_scale`` (D,), float64; only those in use); ``mpidml evaluate`` and
``mpidml predict`` apply exactly the stored transform to new data, never statistics of the
new data. ``coef`` and ``intercept`` are those of the model on the transformed features;
with ``--standardize``, linear models also get ``coef_raw`` (K, D) and ``intercept_raw``
(K,): the same model in the raw feature units (for rows with their NaN replaced by
``impute_mean``): ``coef_raw = coef / scale``, ``intercept_raw = intercept - coef_raw @ mean``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from . import kernels
from .config import IMPUTE
from .errors import ConfigError, DataError

IMPUTE_STRATEGIES = IMPUTE  # the values of --impute
ARRAY_NAMES = ("impute_mean", "standardize_mean", "standardize_scale")

__all__ = ["Preprocessing", "IMPUTE_STRATEGIES", "fit_preprocessing", "apply_preprocessing",
           "load_preprocessing", "warm_up"]

_EMPTY = np.zeros(0)


@dataclass
class Preprocessing:
    """The feature transform of a trained model: NaN -> impute_mean, then (x - mean) / scale."""

    impute_mean: np.ndarray | None = None  # (D,) float64, or None: NaN is an error
    standardize_mean: np.ndarray | None = None  # (D,) float64, or None: no scaling
    standardize_scale: np.ndarray | None = None  # (D,) float64 > 0 (1 for constant columns)
    imputed_values: int = 0  # training only: NaN entries filled, over all ranks
    constant_columns: tuple = ()  # training only: columns left unscaled (zero variance)

    @property
    def active(self) -> bool:
        return self.impute_mean is not None or self.standardize_mean is not None

    def apply(self, X: np.ndarray) -> None:
        """Transform the rows of X ((n, D) float32/float64, C-contiguous) in place."""
        if not self.active or X.shape[0] == 0:
            return
        kernels.impute_standardize(X, _or_empty(self.impute_mean), _or_empty(self.standardize_mean),
                                   _or_empty(self.standardize_scale))

    def arrays(self) -> dict:
        """The datasets model.h5 stores for this transform."""
        return {name: getattr(self, name) for name in ARRAY_NAMES if getattr(self, name) is not None}

    def model_arrays(self, model, params) -> dict:
        """:meth:`arrays`, plus ``coef_raw``/``intercept_raw`` for a standardised linear model."""
        out = self.arrays()
        if self.standardize_mean is not None and not hasattr(model, "to_arrays"):  # not the MLP
            coef, intercept = model.coef_intercept(params)
            coef_raw = coef / self.standardize_scale
            out["coef_raw"] = coef_raw
            out["intercept_raw"] = intercept - coef_raw @ self.standardize_mean
        return out

    def describe(self, n_rows: int) -> str:
        """One log line: what was done to the features."""
        parts = []
        if self.impute_mean is not None:
            parts.append(f"filled {self.imputed_values} NaN with column means")
        if self.standardize_mean is not None:
            const = f" (constant columns only centred: {list(self.constant_columns)})" if self.constant_columns else ""
            parts.append(f"standardized every column{const}")
        return f"features: {'; '.join(parts)}; statistics over all {n_rows} rows"

    def summary(self) -> dict:
        return {"impute": "mean" if self.impute_mean is not None else "none",
                "imputed_values": self.imputed_values,
                "standardize": self.standardize_mean is not None,
                "constant_columns": list(self.constant_columns)}


def _or_empty(a):
    return _EMPTY if a is None else a


def _local_blocks(shard):
    """This rank's raw rows of X, as in-memory blocks (one array, or a streamed shard's chunks)."""
    if shard.X is not None:
        if shard.X.shape[0]:
            yield shard.X
        return
    for _, _, X in shard.chunks():
        yield X


def warm_up(ctx, x_dtype) -> None:
    """Compile (or load) the preprocessing kernels on rank 0 first, then on the others.

    They run before the training kernels are warmed up; with ``cache=True`` ranks must not
    race to write the same cache files.
    """
    def once():
        X = np.zeros((1, 1), dtype=x_dtype)
        a = np.zeros(1)
        kernels.column_sums(X, a.copy(), a.copy(), a.copy())
        kernels.column_sq_dev(X, a, a.copy(), a.copy())
        kernels.impute_standardize(X, a, a, np.ones(1))

    if ctx.is_root:
        once()
    ctx.barrier()
    if not ctx.is_root:
        once()


def _agreed_sum(ctx, buf: np.ndarray) -> np.ndarray:
    """Sum over ranks, bitwise identical everywhere (MPI need not promise that: root's copy wins)."""
    t0 = time.perf_counter()
    ctx.agreed_sum(buf)
    ctx.timers.add("comm", time.perf_counter() - t0)
    return buf


def fit_preprocessing(ctx, shard, impute: str = "none", standardize: bool = False, path: str = "") -> Preprocessing:
    """Collective: the global statistics of --impute/--standardize from every rank's raw shard.

    ``shard`` is a DenseShard or a StreamingShard (X still raw; NaN only where allowed at
    load). Raises DataError (agreed on every rank) for a column without any value.
    """
    if impute not in IMPUTE_STRATEGIES:
        raise ConfigError(f"unknown impute strategy {impute!r}; choose from {', '.join(IMPUTE_STRATEGIES)}")
    d = shard.n_features
    x_dtype = shard.X.dtype if shard.X is not None else shard.x_dtype
    warm_up(ctx, x_dtype)
    n_total = float(shard.n_total)

    t0 = time.perf_counter()
    count, total, comp = np.zeros(d), np.zeros(d), np.zeros(d)
    for X in _local_blocks(shard):
        kernels.column_sums(X, count, total, comp)
    ctx.timers.add("compute", time.perf_counter() - t0)
    buf = _agreed_sum(ctx, np.concatenate([count, total + comp]))
    count, total = buf[:d], buf[d:]

    def check_columns():
        empty = np.flatnonzero(count == 0)
        if empty.size:
            cols = ", ".join(map(str, empty[:10])) + (", ..." if empty.size > 10 else "")
            where = f"{path}: " if path else ""
            raise DataError(f"{where}column {cols} of X has no values (NaN in every row), so --impute mean "
                            f"cannot fill it; drop the column")

    ctx.collective(check_columns)  # count is identical on every rank: all raise together
    mean = total / count
    prep = Preprocessing(imputed_values=int(round(n_total * d - count.sum())))
    if impute == "mean":
        prep.impute_mean = mean.copy()
    if standardize:
        t0 = time.perf_counter()
        sq, sq_comp = np.zeros(d), np.zeros(d)
        for X in _local_blocks(shard):
            kernels.column_sq_dev(X, mean, sq, sq_comp)
        ctx.timers.add("compute", time.perf_counter() - t0)
        m2 = _agreed_sum(ctx, sq + sq_comp)
        # Over all N rows: imputed entries sit at the mean (zero deviation) but count in N.
        var = m2 / n_total
        eps = np.finfo(np.float64).eps
        constant = var <= n_total * eps * var + (n_total * mean * eps) ** 2  # scikit-learn's rule
        scale = np.sqrt(var)
        scale[constant] = 1.0
        prep.standardize_mean = mean.copy()
        prep.standardize_scale = scale
        prep.constant_columns = tuple(int(j) for j in np.flatnonzero(constant))
    return prep


def apply_preprocessing(prep: Preprocessing, shard) -> None:
    """Transform this rank's rows in place (a streamed shard: every chunk and batch as it is read)."""
    if not prep.active:
        return
    if shard.X is None:
        shard.transform = prep.apply
    else:
        prep.apply(shard.X)


def load_preprocessing(path: str) -> Preprocessing:
    """The transform stored in model.h5 (an empty one for models trained without it)."""
    import h5py

    if not os.path.exists(path):
        raise DataError(f"model file not found: {path}")
    found = {}
    try:
        with h5py.File(path, "r") as f:
            n_features = int(f.attrs.get("n_features", -1))
            for name in ARRAY_NAMES:
                if name in f:
                    found[name] = np.asarray(f[name][...], dtype=np.float64)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    for name, a in found.items():
        if a.shape != (n_features,) or not np.all(np.isfinite(a)):
            raise DataError(f"{path}: '{name}' must be {n_features} finite values, got shape {a.shape}")
    if ("standardize_mean" in found) != ("standardize_scale" in found):
        raise DataError(f"{path}: standardize_mean and standardize_scale must be stored together")
    if "standardize_scale" in found and not np.all(found["standardize_scale"] > 0):
        raise DataError(f"{path}: standardize_scale must be > 0")
    return Preprocessing(**found)
