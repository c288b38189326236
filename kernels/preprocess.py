"""Column statistics and the in-place feature transform for --impute mean / --standardize.

Pure kernels (no MPI): the caller adds the per-rank sums across ranks. NaN marks a
missing value. Sums use Neumaier's compensated summation (strict IEEE, no fastmath), so
a column's sum over 1e6 rows of values ~1e6 keeps about 16 significant digits instead
of losing ~log10(n) of them as a plain running sum does.
"""
from numba import njit


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _neumaier_add(total, comp, j, v):
    """total[j] += v, with the rounding error of that addition accumulated in comp[j]."""
    t = total[j] + v
    if abs(total[j]) >= abs(v):
        comp[j] += (total[j] - t) + v
    else:
        comp[j] += (v - t) + total[j]
    total[j] = t


@njit(cache=True, nogil=True, fastmath=False)
def column_sums(X, count, total, comp):
    """Add the per-column count and compensated sum of the non-NaN values of ``X``.

    X: (n, D) float32/float64 C-contiguous (NaN = missing); count, total, comp: float64 (D,),
    ADDED to: count[j] += #{i: X[i, j] not NaN}; total[j] + comp[j] += sum of those values
    (``comp`` holds Neumaier's running correction; the sum is ``total + comp``). Call it
    chunk by chunk with the same arrays to cover rows held in pieces.
    """
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            v = float(X[i, j])
            if v != v:  # NaN
                continue
            count[j] += 1.0
            _neumaier_add(total, comp, j, v)


@njit(cache=True, nogil=True, fastmath=False)
def column_sq_dev(X, center, total, comp):
    """Add the compensated sum of (X[i, j] - center[j])**2 over the non-NaN values of ``X``.

    X: (n, D) float32/float64 C-contiguous (NaN = missing); center: float64 (D,) (the global
    column means: the second pass of the two-pass variance); total, comp: float64 (D,),
    ADDED to as in :func:`column_sums` (the sum is ``total + comp``).
    """
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            v = float(X[i, j])
            if v != v:
                continue
            r = v - center[j]
            _neumaier_add(total, comp, j, r * r)


@njit(cache=True, nogil=True, fastmath=False)
def impute_standardize(X, fill, center, scale):
    """In place: X[i, j] = NaN -> fill[j]; then X[i, j] = (X[i, j] - center[j]) / scale[j].

    X: (n, D) float32/float64 C-contiguous, overwritten (float32 stores the float64 result
    rounded); fill: float64 (D,) or size 0 (no imputation: NaN stays NaN); center, scale:
    float64 (D,) or both size 0 (no scaling). Subtract-then-divide, as scikit-learn's
    StandardScaler does, so the results agree to the last bit in float64.
    """
    n, d = X.shape
    do_fill = fill.size > 0
    do_scale = center.size > 0
    for i in range(n):
        for j in range(d):
            v = float(X[i, j])
            if do_fill and v != v:
                v = fill[j]
            if do_scale:
                v = (v - center[j]) / scale[j]
            X[i, j] = v


@njit(cache=True, nogil=True, fastmath=False)
def column_sq_sums(X, out):
    """out[j] += sum_i X[i, j]**2 (float64 accumulation), for L-BFGS's diagonal scaling.

    X: (n, D) float32/float64 C-contiguous, finite; out: float64 (D,), ADDED to. One pass,
    rows in order (vectorised across columns, so strict IEEE costs nothing).
    """
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            v = float(X[i, j])
            out[j] += v * v


@njit(cache=True, nogil=True, fastmath=False)
def csr_column_sq_sums(indices, data, out):
    """out[indices[k]] += data[k]**2 for every stored entry: column sums of squares of a CSR block.

    indices: int32/int64 (nnz,) in [0, D); data: float32/float64 (nnz,); out: float64 (D,), ADDED to.
    """
    for k in range(indices.size):
        v = float(data[k])
        out[indices[k]] += v * v
