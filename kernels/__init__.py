"""Pure Numba compute kernels for mpidml (no MPI, no I/O).

Conventions (all kernels):

* ``X``: (n, D) float32 or float64, C-contiguous; accumulation is in float64.
* ``y``: float64 (n,) for linear/logistic (logistic labels 0.0/1.0); int64 (n,) in
  0..K-1 for softmax.
* ``sw``: float64 (n,) per-row sample weights, or an array of size 0 for all ones.
* ``params``: one flat float64 vector. linear/logistic: (D+1,) = [w, b];
  softmax: (K*(D+1),) = coef (K, D) row-major, then the K intercepts.
* ``rows``: int64 (m,) row indices of X to process, in order (may be empty).
* ``grad``: float64 like params; kernels ADD the weighted gradient SUM into it.
* ``with_loss``: return the weighted loss sum if True, else 0.0 (cheaper).
* No regularisation in the kernels.
* ``csr``: the same models on rows stored as CSR (indptr, indices, data) instead of X.
"""
from .linear import linear_loss_grad, linear_predict
from .logistic import binary_hits, logistic_decision, logistic_loss_grad, logistic_loss_grad_hits, logistic_proba
from .softmax import argmax_hits, argmax_rows, softmax_decision, softmax_loss_grad, softmax_loss_grad_hits, \
    softmax_loss_grad_ws
from .mlp import mlp_layout, mlp_loss_grad, mlp_predict_proba
from .shuffle import domain_bits, epoch_batches, epoch_order, plan_scratch, row_position, shuffle_keys
from .preprocess import column_sq_dev, column_sq_sums, column_sums, csr_column_sq_sums, impute_standardize
from .hashing import fnv1a_32
from .update import adam_update, mean_gradient_norm2, penalty_norm2, rows_weight_sum, sgd_update
from .csr import (csr_glm_margin, csr_linear_loss_grad, csr_logistic_loss_grad, csr_logistic_loss_grad_hits,
                  csr_softmax_decision, csr_softmax_loss_grad_hits, csr_softmax_loss_grad_ws, csr_touched_coords)


def cpu_choices() -> dict:
    """The code paths picked by the CPU Numba compiles for (the same compiled kernels give
    different speeds on different CPUs; these say which variant a run used): ``cpu``, LLVM's name
    for it (or NUMBA_CPU_NAME); ``avx512_registers``, the softmax register tiles for AVX-512
    (simd.WIDE_REGISTERS); ``stream_prefetch``, where the streamed GLM passes request X ahead,
    "l1" or "l2" (util.STREAM_PREFETCH_INTO_L2); ``plan_rounds``, the lanes of the batch plan's
    hashing, "uint32" or "uint64" (shuffle.ROUNDS_IN_U64_LANES)."""
    from . import shuffle, simd, util

    return {"cpu": util.cpu_name(), "avx512_registers": bool(simd.WIDE_REGISTERS),
            "stream_prefetch": "l2" if util.STREAM_PREFETCH_INTO_L2 else "l1",
            "plan_rounds": "uint64" if shuffle.ROUNDS_IN_U64_LANES else "uint32"}


__all__ = [
    "linear_loss_grad",
    "linear_predict",
    "logistic_loss_grad",
    "logistic_decision",
    "logistic_proba",
    "softmax_loss_grad",
    "softmax_loss_grad_ws",
    "softmax_loss_grad_hits",
    "softmax_decision",
    "argmax_rows",
    "argmax_hits",
    "binary_hits",
    "logistic_loss_grad_hits",
    "mlp_layout",
    "mlp_loss_grad",
    "mlp_predict_proba",
    "domain_bits",
    "epoch_batches",
    "plan_scratch",
    "epoch_order",
    "row_position",
    "shuffle_keys",
    "column_sums",
    "column_sq_dev",
    "column_sq_sums",
    "csr_column_sq_sums",
    "impute_standardize",
    "csr_linear_loss_grad",
    "csr_logistic_loss_grad",
    "csr_logistic_loss_grad_hits",
    "csr_glm_margin",
    "csr_softmax_loss_grad_ws",
    "csr_softmax_loss_grad_hits",
    "csr_softmax_decision",
    "csr_touched_coords",
    "fnv1a_32",
    "mean_gradient_norm2",
    "penalty_norm2",
    "sgd_update",
    "rows_weight_sum",
    "adam_update",
    "cpu_choices",
]
