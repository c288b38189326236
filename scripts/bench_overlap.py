#!/usr/bin/env python3
"""Does arithmetic overlap with streaming X from memory on this machine? (JSON to stdout)

A synthetic pass shaped like the dense kernels: for each block of 8 rows of X (1e6 x 64
float64 by default: one 4 KiB page per block), load the block, then run F rounds of 10
independent fused multiply-adds on registers (10 F FMAs of 8 lanes per block; the softmax
kernel does 1280 per block at K = 10). Each setting is timed twice, side by side:

  in_cache  the blocks cycle over the first 64 rows, so X stays in L1/L2 (arithmetic alone);
  streamed  the blocks walk all of X once (arithmetic + reading 512 MiB).

and for three prefetch schemes: none (hardware prefetcher only), "burst" (all lines of the
next block requested at the start of a block) and "spread" (one line of the next block per
round of FMAs, into L2: the scheme the softmax vector path uses; "spread_l1" the same into L1,
which won here in this synthetic pass but lost inside the kernel, whose ~20 KiB of scratch
share L1). With full overlap
streamed ~= max(in_cache, read time); without, streamed ~= in_cache + read time. The
"stream" entry is the read alone (F = 0, no prefetch). Min and median over --repeats.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

from mpidml.jitcache import configure_numba_cache  # noqa: E402

# Before Numba is imported: the cache keyed by the hash of all kernel sources, as the CLI and the
# tests use (Numba's own cache keys a function on its file's timestamp only, so an edited glm.py
# would otherwise leave logistic.py's compiled kernel stale).
configure_numba_cache()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from mpidml.kernels.simd import vadd, vfma, vload, vsplat, vstore  # noqa: E402
from mpidml.kernels.util import _prefetch as prefetch_l1, prefetch_l2  # noqa: E402

SCHEMES = {"none": 0, "burst": 1, "spread": 2, "spread_l1": 3}


@njit(nogil=True, cache=True)
def synthetic_pass(X, nblk, cycle_rows, rounds, scheme, out):
    """nblk blocks of 8 rows (block b = rows 8b mod cycle_rows); out[:8] = a checksum."""
    D = X.shape[1]
    acc = vsplat(0.0)
    m = vsplat(0.999999)
    for b in range(nblk):
        base = ((b * 8) % cycle_rows) * D
        nxt = (((b + 1) * 8) % cycle_rows) * D
        if scheme == 1:
            for q in range(0, 8 * D, 8):
                prefetch_l2(X, nxt + q)
        s0 = vload(X, base)
        s1 = vload(X, base + 8)
        s2 = vload(X, base + 16)
        s3 = vload(X, base + 24)
        for t in range(1, 8):  # every line of the block (D = 64: 8 lines per row)
            o = base + t * D
            s0 = vadd(s0, vadd(vload(X, o), vload(X, o + 32)))
            s1 = vadd(s1, vadd(vload(X, o + 8), vload(X, o + 40)))
            s2 = vadd(s2, vadd(vload(X, o + 16), vload(X, o + 48)))
            s3 = vadd(s3, vadd(vload(X, o + 24), vload(X, o + 56)))
        s0 = vadd(s0, vload(X, base + 32))
        s1 = vadd(s1, vload(X, base + 40))
        s2 = vadd(s2, vload(X, base + 48))
        s3 = vadd(s3, vload(X, base + 56))
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = s0, s1, s2, s3, s0, s1, s2, s3, s0, s1
        for f in range(rounds):
            if scheme == 2 and f < D:
                prefetch_l2(X, nxt + f * 8)
            elif scheme == 3 and f < D:
                prefetch_l1(X, nxt + f * 8)
            c0 = vfma(c0, m, s1)
            c1 = vfma(c1, m, s2)
            c2 = vfma(c2, m, s3)
            c3 = vfma(c3, m, s0)
            c4 = vfma(c4, m, s2)
            c5 = vfma(c5, m, s3)
            c6 = vfma(c6, m, s0)
            c7 = vfma(c7, m, s1)
            c8 = vfma(c8, m, s3)
            c9 = vfma(c9, m, s0)
        acc = vadd(acc, vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(vadd(c4, c5), vadd(c6, c7)), vadd(c8, c9))))
    vstore(out, 0, acc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of X (64 float64 features)")
    ap.add_argument("--rounds", default="0,32,64,128", help="comma-separated F (10 F FMAs per block)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rows = a.rows - a.rows % 8
    if rows < 128:
        sys.exit("bench_overlap: --rows must be at least 128")
    X = np.random.default_rng(0).standard_normal((rows, 64))
    nblk = rows // 8 - 1
    out = np.zeros(8)
    results = []
    stream = benchlib.time_calls(lambda: synthetic_pass(X, nblk, rows, 0, 0, out), a.repeats)
    for rounds in [int(v) for v in a.rounds.split(",")]:
        for name, scheme in SCHEMES.items():
            print(f"[bench_overlap] rounds={rounds} prefetch={name}", file=sys.stderr, flush=True)
            in_cache = benchlib.time_calls(lambda: synthetic_pass(X, nblk, 64, rounds, scheme, out), a.repeats)
            streamed = benchlib.time_calls(lambda: synthetic_pass(X, nblk, rows, rounds, scheme, out), a.repeats)
            results.append({
                "fma_per_block": 10 * rounds, "prefetch": name, "in_cache_s": in_cache, "streamed_s": streamed,
                # 1.0: the read is fully hidden behind the arithmetic; 0.0: the two add up
                "overlap_fraction": {s: (in_cache[s] + stream[s] - streamed[s]) / min(in_cache[s], stream[s])
                                     if min(in_cache[s], stream[s]) > 0 else None for s in ("min", "median")},
            })
    doc = {"rows": rows, "features": 64, "x_bytes": X.nbytes, "stream_s": stream, "results": results}
    json.dump(doc, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
