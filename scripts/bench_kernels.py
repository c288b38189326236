#!/usr/bin/env python3
"""Benchmark the fused Numba loss/gradient kernels (single thread).

For each (kernel, dtype, D) it times, in rounds (each of these once per repeat, after one warm-up
call each, so that the minima compared in a ratio come from the same minutes):
  grad       kernel with with_loss=False
  loss_grad  kernel with with_loss=True
  numpy      NumPy two-pass reference computing loss and gradient
             (logistic: z = X@w + b; p = expit(z); g = X.T@(p - y); loss = sum(logaddexp(0, z) - y z);
              linear/softmax alike); for float32 X the vectors are cast to float32 so BLAS runs sgemv/sgemm
  stream     a STREAM-like Numba read of the same X (sum of all elements, vectorised)
and reports min and median seconds over --repeats, bytes of X read per second (X.nbytes / min time),
and the ratios kernel/stream bandwidth and numpy_time/kernel_time. One JSON document goes to stdout.

A top-level "targets" block evaluates the issue-6 item-1 targets on the logistic float64 D=64
result (and softmax float64 D=64): gradient alone >= 0.8x and loss+gradient >= 0.6x of the stream
bandwidth, both >= 1.5x faster than NumPy, softmax within 2x of the read bound (>= 0.5x), each with
the measured ratio from the min and the median times. BLAS threads are forced to 1 before NumPy is
imported; "blas" records what threadpoolctl reports (library, version, core type, threads) and the
OPENBLAS_CORETYPE in effect. softmax gets a workspace of work_size(K, D) (the vector path when K >= 6); "grad_scalar_path" times the scalar path on the same X beside it (a WORK_ROWS*K workspace).

Mini-batches (--batch B, default 2048; 0 skips): the gradient over --batches fresh batches of B
rows each (sorted random rows of X, as a rank's share of an SGD step: the rows are scattered over
X), in seconds per batch and nanoseconds per row; the same batch again and again ("grad_in_cache":
its rows stay in cache, what is left is the arithmetic and the addressing); and NumPy on the same
fresh batches (X[rows] gathered, then its two passes).

Roofline: each result's "roofline" block gives the measured FMA peak of one core (fma_peak:
independent chains of 8-lane float64 FMAs, timed in the same rounds), the FMAs per row the gradient needs
at least (2 D; softmax 2 K D), the compute bound that makes in bytes of X per second, which of
the two bounds (read or compute) is lower, and the gradient's speed against that lower bound. A
softmax's 2 K D FMAs per row can make the compute bound the lower one: on a 2-core AMD EPYC (Zen
3, AVX2: 2 x 4 lanes per cycle) K=10, D=64 is compute bound at ~0.45x of the read bandwidth, so
the 0.5x target cannot be met there by any kernel; the targets block reports it beside the target.

Pages (--pages): X from NumPy (default), or anonymous memory advised onto huge or onto 4 KiB
pages; each result records the process's AnonHugePages, so the page size in effect is visible.

Placement (--align, default 64): X, and the parameter and gradient vectors, start on a cache
line, as mpidml allocates them (mpidml.buffers); --align 0: NumPy's default placement for all.
Each result records params_offset_in_line; the GLM kernels are also timed in the same rounds with
params and grad 48 bytes into a line ("grad_params_off_line"; its ratio to the read is
"grad_params_off_line_vs_stream_bw"): the GLM margins load w once per row, and 8-lane loads of
w 48 bytes into a line straddle two lines (on AMD Zen 3 the logistic gradient ran at 0.73-0.75x
of the read with w on a line, 0.70-0.71x 48 bytes in, in three runs of four; the fourth had it the
other way round: a small effect, mpidml/buffers.py has more; since the kernel spreads its
prefetches over each block, 0.85-0.90x on a line vs 0.85-0.91x 48 bytes in, four runs: none).

Sizes: each X has min(--rows, --max-bytes // (D * itemsize)) rows, i.e. --rows rows unless X would
exceed --max-bytes (default 512 MiB); the actual row count is in each result.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

from mpidml.jitcache import configure_numba_cache  # noqa: E402

# Before Numba is imported: the cache keyed by the hash of all kernel sources, as the CLI and the
# tests use (Numba's own cache keys a function on its file's timestamp only, so an edited glm.py
# would otherwise leave logistic.py's compiled kernel stale).
configure_numba_cache()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

try:
    from scipy.special import expit  # noqa: E402
except ImportError:  # pragma: no cover
    def expit(z):
        return 0.5 * (1.0 + np.tanh(0.5 * z))

from mpidml.buffers import aligned_zeros  # noqa: E402
from mpidml.kernels import cpu_choices, linear_loss_grad, logistic_loss_grad, softmax_loss_grad_ws  # noqa: E402
from mpidml.kernels.simd import LANES, WIDE_REGISTERS, vadd, vfma, vlane, vsplat  # noqa: E402
from mpidml.kernels.softmax import WORK_ROWS, work_size  # noqa: E402

PARAMS_OFFSET = 48  # bytes into a line: where NumPy put a small params array in one run here
FMA_PEAK_STEPS = 2_000_000  # ~10-20 ms of FMAs per timing
FMA_CHAINS = 12 if WIDE_REGISTERS else 6


@njit(cache=True, nogil=True, inline="always")
def _fma6(x, c, a0, a1, a2, a3, a4, a5):
    return vfma(a0, x, c), vfma(a1, x, c), vfma(a2, x, c), vfma(a3, x, c), vfma(a4, x, c), vfma(a5, x, c)


@njit(cache=True, nogil=True)
def fma_peak(steps):
    """FMA_CHAINS independent chains of 8-lane float64 FMAs, steps each (FMA_CHAINS * LANES * steps
    lane-FMAs): enough chains to keep two FMA pipes of 4-cycle latency busy, and few enough to
    stay in registers (12 with AVX-512's 32, 6 with AVX2's 16: one F64x8 is two ymm). Returns a sum
    of the chains (kept live)."""
    x = vsplat(0.999999)
    c = vsplat(1e-9)
    a0, a1, a2, a3, a4, a5 = vsplat(0.0), vsplat(0.1), vsplat(0.2), vsplat(0.3), vsplat(0.4), vsplat(0.5)
    b0, b1, b2, b3, b4, b5 = vsplat(0.6), vsplat(0.7), vsplat(0.8), vsplat(0.9), vsplat(1.0), vsplat(1.1)
    for _ in range(steps):
        a0, a1, a2, a3, a4, a5 = _fma6(x, c, a0, a1, a2, a3, a4, a5)
        if FMA_CHAINS == 12:
            b0, b1, b2, b3, b4, b5 = _fma6(x, c, b0, b1, b2, b3, b4, b5)
    s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(a4, a5))
    if FMA_CHAINS == 12:
        s = vadd(s, vadd(vadd(vadd(b0, b1), vadd(b2, b3)), vadd(b4, b5)))
    return vlane(s, 0)


def fma_per_row(kern, d, k):
    """Float64 multiply-adds per row of X the kernel's gradient needs at least: the margin(s)
    and the gradient's outer product, D each per class (softmax: 2 K D; linear, logistic: 2 D)."""
    return 2 * d * (k if kern == "softmax" else 1)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def stream_sum(X):
    """Sum of all elements of a C-contiguous 2-D array (read-bandwidth reference)."""
    n, d = X.shape
    s = 0.0
    for i in range(n):
        for j in range(d):
            s += X[i, j]
    return s


def numpy_linear(X, y, params):
    d = X.shape[1]
    w, b = params[:d].astype(X.dtype), X.dtype.type(params[d])
    r = (X @ w + b) - y
    return 0.5 * float(r @ r), np.append(X.T @ r.astype(X.dtype), r.sum())


def numpy_logistic(X, y, params):
    d = X.shape[1]
    w, b = params[:d].astype(X.dtype), X.dtype.type(params[d])
    z = X @ w + b
    p = expit(z)
    g = X.T @ (p - y).astype(X.dtype)
    loss = float(np.sum(np.logaddexp(0.0, z) - y * z))
    return loss, np.append(g, np.sum(p - y))


def numpy_softmax(X, y, params):
    d = X.shape[1]
    k = params.size // (d + 1)
    W = params[: k * d].reshape(k, d).astype(X.dtype)
    c = params[k * d:].astype(X.dtype)
    Z = X @ W.T + c
    zmax = Z.max(axis=1, keepdims=True)
    E = np.exp(Z - zmax)
    s = E.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(s[:, 0]) + zmax[:, 0] - Z[np.arange(len(y)), y]))
    G = E / s
    G[np.arange(len(y)), y] -= 1
    return loss, np.concatenate([(G.T @ X).ravel(), G.sum(axis=0)])


_MAPPINGS = []  # keeps the mmap objects behind --pages arrays alive


def make_x(n, d, dtype, align, rng, pages="default"):
    itemsize = np.dtype(dtype).itemsize
    if pages != "default":  # anonymous memory with the asked page size hint, 2 MiB aligned
        import mmap

        nbytes = n * d * itemsize
        m = mmap.mmap(-1, nbytes + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE if pages == "huge" else mmap.MADV_NOHUGEPAGE)
        _MAPPINGS.append(m)
        raw = np.frombuffer(m, dtype=np.uint8)
        off = (-raw.ctypes.data) % (2 << 20)
        X = raw[off:off + nbytes].view(dtype).reshape(n, d)
    elif align:
        buf = np.empty(n * d + align // itemsize, dtype=dtype)
        off = (-buf.ctypes.data % align) // itemsize
        X = buf[off:off + n * d].reshape(n, d)
    else:
        X = np.empty((n, d), dtype=dtype)
    for i in range(0, n, 1 << 16):  # chunked fill keeps peak memory low
        X[i:i + (1 << 16)] = rng.standard_normal((min(1 << 16, n - i), d), dtype=np.float32)
    return X


def vector(values, align):
    """A float64 copy of ``values`` placed as mpidml allocates parameters and gradients (on a cache
    line, mpidml.buffers.aligned_zeros) when ``align``, else NumPy's default placement (--align 0)."""
    out = aligned_zeros(len(values)) if align else np.zeros(len(values))
    out[:] = values
    return out


def off_line(values, offset=PARAMS_OFFSET):
    """A float64 copy of ``values`` starting ``offset`` bytes into a cache line."""
    buf = aligned_zeros(len(values) + 8)
    out = buf[offset // 8:offset // 8 + len(values)]
    out[:] = values
    return out


def _anon_huge_kib():
    """AnonHugePages of this process (kB), or None: how much of its memory is on huge pages."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")},
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": blas_info(),
        "kernels": cpu_choices(),  # the CPU the kernels compiled for and its variants (prefetch level, ...)
    }


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


TARGETS = (  # (name, kernel, ratio key, threshold)
    ("logistic_f64_D64_grad_vs_stream_bw", "logistic", "grad_vs_stream_bw", 0.8),
    ("logistic_f64_D64_loss_grad_vs_stream_bw", "logistic", "loss_grad_vs_stream_bw", 0.6),
    ("logistic_f64_D64_grad_speedup_vs_numpy", "logistic", "numpy_over_grad", 1.5),
    ("logistic_f64_D64_loss_grad_speedup_vs_numpy", "logistic", "numpy_over_loss_grad", 1.5),
    ("softmax_K10_f64_D64_grad_vs_stream_bw", "softmax", "grad_vs_stream_bw", 0.5),
    ("softmax_K10_f64_D64_loss_grad_vs_stream_bw", "softmax", "loss_grad_vs_stream_bw", 0.5),
)


def evaluate_targets(results):
    """Issue 6 item 1 on the float64 D=64 results: pass when the ratio from min times meets it."""
    out = {}
    for name, kern, key, thr in TARGETS:
        hit = [r for r in results if r["kernel"] == kern and r["dtype"] == "float64" and r["features"] == 64]
        if not hit:
            out[name] = {"threshold": thr, "status": "not measured"}
            continue
        rat = hit[0]["ratios"]
        out[name] = {"threshold": thr, "ratio_min": rat["min"][key], "ratio_median": rat["median"][key],
                     "rows": hit[0]["rows"], "pass": bool(rat["min"][key] >= thr)}
        if key.endswith("_vs_stream_bw"):  # what this CPU allows: the lower of the read and compute bounds
            roof = hit[0]["roofline"]
            out[name]["bound"] = roof["bound"]
            out[name]["compute_bound_vs_stream_bw"] = (roof["compute_bound_gb_per_s"]["min"]
                                                       / hit[0]["gb_per_s"]["stream"]["min"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of X (capped by --max-bytes)")
    ap.add_argument("--features", default="16,64,256,1024", help="comma-separated D values")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--kernels", default="linear,logistic,softmax")
    ap.add_argument("--classes", type=int, default=10, help="K for softmax")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-bytes", type=int, default=512 * 2**20, help="cap on X.nbytes (rows are reduced)")
    ap.add_argument("--align", type=int, default=64,
                    help="allocate X aligned to this many bytes: 64 (default) as mpidml's data layer does "
                         "(mpidml.buffers), and the parameter and gradient vectors on a line as mpidml's models "
                         "and trainers allocate them; 0: NumPy's default allocation for all three")
    ap.add_argument("--pages", choices=("default", "huge", "4k"), default="default",
                    help="X's pages: NumPy's allocation (default: it asks for transparent huge pages), or "
                         "anonymous memory advised huge (MADV_HUGEPAGE) or 4 KiB (MADV_NOHUGEPAGE)")
    ap.add_argument("--batch", type=int, default=2048, help="rows per mini-batch (0: no mini-batch timing)")
    ap.add_argument("--batches", type=int, default=100, help="fresh mini-batches per timing")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.features, a.repeats = min(a.rows, 20_000), "8,32", min(a.repeats, 2)
        a.batch, a.batches = min(a.batch, 256), min(a.batches, 10)
    feats = [int(v) for v in a.features.split(",") if v]
    dtypes = [np.dtype(v) for v in a.dtypes.split(",") if v]
    kernels = [v for v in a.kernels.split(",") if v]
    rng = np.random.default_rng(a.seed)
    results = []
    for dtype in dtypes:
        for d in feats:
            n = max(1, min(a.rows, a.max_bytes // (d * dtype.itemsize)))
            X = make_x(n, d, dtype, a.align, rng, a.pages)
            rows = np.arange(n, dtype=np.int64)
            sw = np.empty(0)
            nbytes = X.nbytes
            for kern in kernels:
                print(f"[bench] {kern} {dtype.name} n={n} D={d}", file=sys.stderr, flush=True)
                if kern == "softmax":
                    k = a.classes
                    y = rng.integers(0, k, n).astype(np.int64)
                    params = vector(rng.standard_normal(k * (d + 1)) / np.sqrt(d), a.align)
                    work = np.empty(work_size(k, d))

                    def run(with_loss, g=vector(np.zeros(params.size), a.align), rows=rows):
                        return softmax_loss_grad_ws(X, y, sw, params, rows, g, with_loss, work)
                    ref = numpy_softmax
                else:
                    k = None
                    fn = linear_loss_grad if kern == "linear" else logistic_loss_grad
                    y = (rng.random(n) < 0.5).astype(np.float64)
                    params = vector(rng.standard_normal(d + 1) / np.sqrt(d), a.align)

                    def run(with_loss, g=vector(np.zeros(d + 1), a.align), fn=fn, rows=rows, params=params):
                        return fn(X, y, sw, params, rows, g, with_loss)
                    ref = numpy_linear if kern == "linear" else numpy_logistic
                # round-robin: each repeat times the kernel, its loss variant, NumPy and the read
                # once, so every ratio compares minima taken over the same minutes
                timed = {
                    "grad": lambda: run(False),
                    "loss_grad": lambda: run(True),
                    "numpy": lambda: ref(X, y, params),
                    "stream": lambda: stream_sum(X),
                    "fma_peak": lambda: fma_peak(FMA_PEAK_STEPS),
                }
                if kern == "softmax":  # the scalar path beside it (a workspace too small for the vector path)
                    small = np.empty(WORK_ROWS * k)
                    g_s = np.zeros(params.size)
                    timed["grad_scalar_path"] = lambda: softmax_loss_grad_ws(X, y, sw, params, rows, g_s, False, small)
                elif a.align:  # the GLM gradient with params and grad PARAMS_OFFSET bytes into a line, beside it
                    p_off, g_off = off_line(params), off_line(np.zeros(d + 1))
                    timed["grad_params_off_line"] = lambda: run(False, g=g_off, params=p_off)
                times = benchlib.time_round_robin(timed, a.repeats)
                batch = None
                if a.batch and n >= 2 * a.batch:
                    sets = [np.sort(rng.choice(n, a.batch, replace=False)).astype(np.int64) for _ in range(a.batches)]
                    t_fresh = benchlib.time_calls(lambda: [run(False, rows=r) for r in sets], a.repeats)
                    t_cached = benchlib.time_calls(lambda: [run(False, rows=sets[0]) for _ in sets], a.repeats)
                    t_np = benchlib.time_calls(lambda: [ref(X[r], y[r], params) for r in sets], a.repeats)
                    per = {name: {st: t[st] / len(sets) for st in ("min", "median")}
                           for name, t in (("grad", t_fresh), ("grad_in_cache", t_cached), ("numpy", t_np))}
                    batch = {"rows": a.batch, "batches": len(sets), "seconds_per_batch": per,
                             "ns_per_row": {name: {st: v[st] / a.batch * 1e9 for st in v} for name, v in per.items()},
                             "numpy_over_grad": {st: per["numpy"][st] / per["grad"][st] for st in ("min", "median")}}
                g_k = np.zeros(params.size)
                if kern == "softmax":
                    l_k = softmax_loss_grad_ws(X, y, sw, params, rows, g_k, True, work)
                else:
                    l_k = fn(X, y, sw, params, rows, g_k, True)
                l_n, g_n = ref(X, y, params)
                check = {"loss_rel_diff": abs(l_k - l_n) / max(abs(l_n), 1e-300),
                         "grad_rel_diff": float(np.max(np.abs(g_k - g_n)) / max(np.max(np.abs(g_n)), 1e-300))}
                times_fma = times.pop("fma_peak")
                gbps = {key: {s: nbytes / v[s] / 1e9 for s in ("min", "median")} for key, v in times.items()}
                # the compute bound: X's bytes over the time the kernel's FMAs take at the measured peak
                per_row = fma_per_row(kern, d, k)
                peak = {s: FMA_PEAK_STEPS * FMA_CHAINS * LANES / times_fma[s] for s in ("min", "median")}
                roofline = {"fma_per_row": per_row, "fma_peak_per_s": peak,
                            "compute_bound_gb_per_s": {s: nbytes / (per_row * n / peak[s]) / 1e9 for s in peak}}
                roofline["bound"] = ("compute" if roofline["compute_bound_gb_per_s"]["min"] < gbps["stream"]["min"]
                                     else "read")
                roofline["grad_vs_bound"] = {
                    s: gbps["grad"][s] / min(gbps["stream"][s], roofline["compute_bound_gb_per_s"][s]) for s in peak}
                ratios = {}
                for s in ("min", "median"):
                    ts = times["stream"][s]
                    ratios[s] = {
                        "grad_vs_stream_bw": ts / times["grad"][s],
                        "loss_grad_vs_stream_bw": ts / times["loss_grad"][s],
                        "numpy_over_grad": times["numpy"][s] / times["grad"][s],
                        "numpy_over_loss_grad": times["numpy"][s] / times["loss_grad"][s],
                    }
                    if "grad_scalar_path" in times:
                        ratios[s]["scalar_path_over_grad"] = times["grad_scalar_path"][s] / times["grad"][s]
                    if "grad_params_off_line" in times:
                        ratios[s]["grad_params_off_line_vs_stream_bw"] = ts / times["grad_params_off_line"][s]
                results.append({
                    "kernel": kern, "dtype": dtype.name, "rows": n, "features": d, "classes": k,
                    "x_bytes": nbytes, "x_align64": X.ctypes.data % 64 == 0, "x_pages": a.pages,
                    "params_offset_in_line": params.ctypes.data % 64,
                    "anon_huge_pages_kib": _anon_huge_kib(),
                    "seconds": times, "gb_per_s": gbps, "ratios": ratios, "roofline": roofline,
                    "check_vs_numpy": check,
                    "mini_batch": batch,
                })
            X = None  # free it before the next size is allocated
    doc = {"machine": machine_info(), "args": vars(a), "targets": evaluate_targets(results), "results": results}
    json.dump(doc, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
