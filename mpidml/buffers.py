"""Buffers for the kernels, allocated on a cache-line boundary: X's rows, and the parameter
and gradient vectors. NumPy only (no MPI, no h5py), so that every layer can allocate them.

X's rows:

NumPy's large arrays come from ``malloc``, which returns an address 16 bytes past a page
boundary (its chunk header): ``np.empty((n, 64))`` starts 16 bytes into a 64-byte cache line.
Every 512-byte row of such an X then touches 9 lines instead of 8, and half of the kernels'
32-byte vector loads straddle two lines. A full pass reads the same lines either way, but a
mini-batch reads scattered whole rows: one more line per row to wait for. Side by side in one
process, the same data and compiled code (1e6 x 64 float64, logistic gradient, 2048 scattered
rows, AMD Zen 3, min of 9): fresh rows 162 vs 178 us, the same rows again 68 vs 76 us.

Parameters and gradients (aligned_zeros): a small array is aligned to 16 bytes only, and the
GLM kernels load w in 8-lane vectors once per row, so with w 48 bytes into a line most of those
loads straddle two lines. What that costs depends on where X sits. The dense logistic gradient
over 1e6 x 64 float64 (AMD Zen 3; read-bandwidth ratio, min of 5-9, each process alternating
the placements; w and grad on a line vs 48 bytes in): X 16 bytes into a line, as NumPy places a
large array (arrays handed to the library API), 0.67-0.71 vs 0.64-0.69 in three processes and
0.77-0.79 vs 0.72-0.75 in three others; X on a line, as the data layer reads it, 0.67-0.71 vs
0.65-0.70 (ad hoc), and in ``scripts/bench_kernels.py``'s rounds (its grad_params_off_line,
three runs) 0.73-0.75 vs 0.70-0.71, float32 X 0.69-0.76 vs 0.65-0.70 (a fourth run, in a slower
hour: 0.71 vs 0.73, float32 0.74 vs 0.70). So the models' init_params, L-BFGS's iterates and
the trainers' gradient buffers come from here; the trainers update them in place (a ``.copy()``
is NumPy's ordinary allocation again). Since the gradient kernel spreads its prefetches over
each block (kernels/glm.py, _eight_rows) the difference is gone in those rounds (four runs:
0.85-0.90 on a line vs 0.85-0.91 48 bytes in): the placement costs nothing and stays.
"""

from __future__ import annotations

import numpy as np

ALIGN = 64  # bytes: a cache line (and one AVX-512 register of float64)


def aligned_empty(shape, dtype, align: int = ALIGN) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` whose data starts on an
    ``align``-byte boundary (a power of two, a multiple of the itemsize); like ``np.empty``.

    A view into a slightly larger buffer (``align`` bytes more), which the view keeps alive.
    (An empty result may report any address: NumPy does not keep one for size 0.)
    """
    dtype = np.dtype(dtype)
    if align <= 0 or align & (align - 1) or align % dtype.itemsize:
        raise ValueError(f"aligned_empty: align must be a power of two and a multiple of {dtype.itemsize}")
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    buf = np.empty(n * dtype.itemsize + align, dtype=np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + n * dtype.itemsize].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype=np.float64, align: int = ALIGN) -> np.ndarray:
    """``aligned_empty`` filled with zeros (like ``np.zeros``): parameter and gradient vectors."""
    out = aligned_empty(shape, dtype, align)
    out.fill(0)
    return out
