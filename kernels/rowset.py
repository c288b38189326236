"""Row selection for shards that hold a sorted set of global rows (not one contiguous block)."""
from numba import njit


@njit(cache=True, nogil=True)
def select_sorted_rows(batch, gids, out):
    """Local row ids of a global mini-batch when this rank holds the global rows ``gids``.

    batch: int64 (b,) global row ids; gids: int64 (n,) strictly increasing global ids of this
    rank's rows (local row k is global row gids[k]); out: int64 (>= b,). Writes the local id
    of every ``g`` in ``batch`` that is in ``gids``, in batch order, into ``out[:count]`` and
    returns count. Binary search per entry, O(b log n); no allocation.
    """
    n = gids.size
    c = 0
    for t in range(batch.size):
        g = batch[t]
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            if gids[mid] < g:
                lo = mid + 1
            else:
                hi = mid
        if lo < n and gids[lo] == g:
            out[c] = lo
            c += 1
    return c
