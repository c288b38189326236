"""Class imbalance: class weights as sample weights, and which rows each rank holds.

``--class-weight balanced`` gives class c the weight ``n_samples / (n_classes * count_c)``
(scikit-learn's definition; n_classes = the classes present, counts over ALL rows, from one
Allreduce of the per-rank class counts). ``--class-weight 0:1,1:5`` sets weights explicitly
(unlisted classes weigh 1). Either way the weight multiplies each row's sample weight, so the
objective is scikit-learn's ``class_weight``:

    f = (1/W) * sum_i cw[y_i] * sw_i * loss_i + (l2/2) * ||W||^2,   W = sum_i cw[y_i] * sw_i

which is ``LogisticRegression(class_weight=..., C=1/(l2*W))``. Evaluation metrics
(accuracy, confusion, AUC) stay unweighted by class (they use the file's sample weights only).
"""

from __future__ import annotations

import numpy as np

from .data.reshard import SHARD_MODES, reshard
from .errors import ConfigError, DataError

__all__ = ["parse_class_weight", "class_weight_vector", "prepare_rows", "SHARD_MODES"]


def parse_class_weight(text: str):
    """``""`` -> None, ``"balanced"`` -> "balanced", ``"0:1,1:5"`` -> {0: 1.0, 1: 5.0}."""
    text = (text or "").strip()
    if not text:
        return None
    if text == "balanced":
        return "balanced"
    out = {}
    try:
        for item in text.split(","):
            k, v = item.split(":")
            k, v = int(k), float(v)
            if k < 0 or not (np.isfinite(v) and v >= 0) or k in out:
                raise ValueError
            out[k] = v
    except ValueError:
        raise ConfigError(f"--class-weight must be 'balanced' or CLASS:WEIGHT pairs like 0:1,1:5 "
                          f"(classes >= 0 once each, weights finite and >= 0); got {text!r}") from None
    return out


def class_weight_vector(counts: np.ndarray, spec, n_classes: int) -> np.ndarray:
    """Weights (n_classes,) from global class counts and a parsed spec."""
    if spec == "balanced":
        present = counts > 0
        w = np.zeros(n_classes)
        w[present] = counts.sum() / (present.sum() * counts[present])
        return w
    w = np.ones(n_classes)
    for k, v in spec.items():
        if k >= n_classes:
            raise DataError(f"--class-weight names class {k}, but the labels have {n_classes} classes "
                            f"(0..{n_classes - 1})")
        w[k] = v
    return w


def prepare_rows(ctx, shard, n_classes: int, shard_mode: str = "contiguous", class_weight: str = "",
                 seed: int = 0):
    """Collective: apply ``--shard`` and ``--class-weight`` to this rank's (validated) shard.

    Returns ``(shard, class_weights or None, unweighted_sw)``: the shard to train on (its
    ``sw`` includes the class weights) and the sample weights before class weighting (for
    metrics).
    """
    if shard_mode != "contiguous":
        shard = reshard(shard, shard_mode, seed, n_classes, ctx.comm)
    spec = parse_class_weight(class_weight)
    base_sw = shard.sw
    if spec is None:
        return shard, None, base_sw
    counts = np.bincount(shard.y.astype(np.int64), minlength=n_classes).astype(np.float64)
    ctx.allreduce_array(counts)
    cw = ctx.collective(class_weight_vector, counts, spec, n_classes)
    row_w = cw[shard.y.astype(np.int64)]
    shard.sw = row_w * base_sw if base_sw.size else row_w
    return shard, cw, base_sw
