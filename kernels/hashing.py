"""Stable string hashing for the hashing trick (``mpidml convert --hash-features``).

FNV-1a, 32 bits (Fowler/Noll/Vo; offset basis 2166136261, prime 16777619): for each byte b
of the token's UTF-8 encoding, h = (h XOR b) * 16777619 mod 2**32. Unlike Python's hash()
it is not salted per process, so every run, rank and machine maps a token to the same column.
"""
import numpy as np
from numba import njit

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619


@njit(cache=True, nogil=True)
def fnv1a_32(buf, offsets, out):
    """out[t] = FNV-1a 32-bit hash of bytes buf[offsets[t]:offsets[t+1]].

    buf: uint8 (total,) the tokens' bytes back to back; offsets: int64 (T+1,) non-decreasing;
    out: uint32 (T,). No allocation.
    """
    mask = np.uint64(0xFFFFFFFF)
    prime = np.uint64(FNV_PRIME)
    for t in range(offsets.size - 1):
        h = np.uint64(FNV_OFFSET)
        for q in range(offsets[t], offsets[t + 1]):
            h = ((h ^ np.uint64(buf[q])) * prime) & mask
        out[t] = np.uint32(h)
