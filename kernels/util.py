"""Shared helpers for the Numba kernels (pure: numpy, numba, math only).

Conventions used by every kernel in this package (see the package docstring):
``X`` is (n, D) float32/float64 C-contiguous, ``rows`` int64 row ids of X to use
(in order), ``sw`` float64 per-row weights or size 0 for "all ones", and sums are
accumulated in float64.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# fastmath flags for the fused drivers: only 'contract' (FMA) and 'reassoc' (lets LLVM
# vectorise the dot-product reductions and the axpy updates). Never 'nnan'/'ninf'/'afn':
# the link functions (exp/log, stable sigmoid, log-sum-exp) live in separate strict
# (fastmath=False) njit functions that take scalars only, so their IEEE semantics are
# kept even after LLVM inlines them.
FASTMATH = {"contract", "reassoc"}  # a set (numba rejects frozenset); never mutate

LINEAR = 0
LOGISTIC = 1

# Software prefetch distance for streaming X (bytes ahead of the row being read). With
# a few dozen instructions per row the out-of-order window alone keeps too few cache
# misses in flight (measured: dot+link+axpy at 0.55x of a plain sum's bandwidth without,
# 0.85x with an 8 KiB lead, AMD Zen 5, 1 thread).
PREFETCH_BYTES = 8192
# glm_loss_grad's runs of rows prefetch further ahead: LOSS_PREFETCH_ROWS rows, at least
# PREFETCH_BYTES and at most LOSS_PREFETCH_BYTES. On AMD Zen 3 (32 KiB L1) 8 KiB was too short for 512-byte rows: the
# logistic gradient over 1e6 x 64 float64 (X and params on a cache line; each process
# alternating the versions, compiled side by side; read-bandwidth ratio, min of 5-7; three
# processes): 8 KiB 0.65-0.68, 32 KiB 0.67-0.70, 48 KiB 0.67-0.71 (paired per process +1 to +7 %);
# with the same X shifted 16 or 32 bytes into a line 8 KiB 0.59-0.67, 48 KiB 0.67-0.71. Past
# L1's size the lines wait in L2 (L1 evicts them before use) and the hardware prefetcher moves
# them on to L1 as the rows are read in address order. Small rows want fewer bytes ahead: D = 16
# float32 (64-byte rows) took 10.6-10.8 ms at 8 KiB and 11.7-12.3 at 48 KiB (5 processes; in a
# sixth, in a slow hour, both 13.6-13.9), D = 32 float64 was best at 16-24 KiB; 96 rows gives
# 8 KiB, 24 KiB and 48 KiB for those three (10.5 ms at D = 16 float32). The
# score passes keep 8 KiB: linear_scores with K = 10 took 53.5-54.5 ms at 48 KiB vs 51.3-52.3
# at 8 (glm_margin the same either way).
# With each block's lines spread over its two loops (glm._eight_rows) the distance matters
# less: D = 64 float64, three processes, 8 KiB 0.81-0.92, 24 KiB 0.82-0.89, 48 KiB 0.88-0.91,
# 96 KiB 0.84-0.87 of the read; 256-byte rows the same from 24 to 96 KiB. 48 KiB kept.
LOSS_PREFETCH_ROWS = 96
LOSS_PREFETCH_BYTES = 49152
CACHE_LINE = 64


def _make_prefetch(locality):
    """An intrinsic f(arr, idx): hint the CPU to load the cache line of arr.flat[idx] (llvm.prefetch, read).

    locality 3: into L1 (prefetcht0); 2: into L2 (prefetcht1). Never faults and has no
    effect on results; ``idx`` is clamped to the array by callers.
    """
    @intrinsic
    def prefetch(typingctx, arr, idx):
        sig = types.void(arr, types.intp)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = ir.IntType(8).as_pointer()
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, i32(0), i32(locality), i32(1)])
            return context.get_dummy_value()

        return sig, codegen
    return prefetch


_prefetch = _make_prefetch(3)  # into L1: the lines a kernel reads next
prefetch_l2 = _make_prefetch(2)  # into L2: further ahead, without crowding L1 (the softmax vector path)


def cpu_name():
    """LLVM's name for the host CPU (``znver4``, ``sapphirerapids``, ...), or NUMBA_CPU_NAME when set:
    the name Numba compiles for and keys its cache by."""
    from llvmlite import binding as llvm
    from numba.core import config
    return config.CPU_NAME or llvm.get_host_cpu_name()


def _on_x86():
    """True on a 64-bit x86 machine (the CPU-name rules below apply only there)."""
    import platform
    return platform.machine().lower() in ("x86_64", "amd64")


def x86_other_than_zen():
    """True on x86 CPUs other than AMD's Zen (LLVM's name for the host CPU, or NUMBA_CPU_NAME
    when set): the cores (Intel's) where some choices below differ from the ones measured best on
    Zen. Numba's cache keys compiled code by the CPU's name, so a cache filled on one kind of CPU
    is not loaded on another where this differs."""
    return _on_x86() and not cpu_name().startswith("znver")


# The x86 CPUs on which the streamed GLM passes' prefetches into L1 were measured faster than
# into L2 (STREAM_PREFETCH_INTO_L2 below). Zen 4 (znver4) is not one of them.
L1_STREAM_PREFETCH_CPUS = ("znver3", "znver5")


def stream_prefetch_into_l2():
    """True on x86 CPUs other than those in L1_STREAM_PREFETCH_CPUS: see STREAM_PREFETCH_INTO_L2."""
    return _on_x86() and cpu_name() not in L1_STREAM_PREFETCH_CPUS


# Where glm_loss_grad's runs of consecutive rows (and glm_margin's) request their lines ahead
# (the scattered rows of a mini-batch always into L1), measured per kind of CPU, 1e6 x 64 float64,
# logistic gradient, in ratios of a plain read of the same X:
# * AMD Zen 3 and Zen 5: into L1, measured best there (into L2 was slower).
# * Intel, a 2-core KVM guest of a Xeon with AVX-512 and AMX, 480 MiB L3, one thread reading at
#   18-20 GB/s (2026-12-02), one process per version, min of 9: into L1 45.9-49.0 ms (0.54x-0.60x
#   of the read), into L2 39.3-40.1 (0.67x-0.71x), into L2 far plus L1 near (2-8 KiB) the same
#   38.8-40.4, no prefetch 49.5, non-temporal 77-100; 16-256 KiB ahead the same within the noise;
#   into L2 one or two lines per 4 KiB page instead of every line (to start the hardware's
#   streamer there) 50-55. bench_kernels.py after the change: 0.69x-0.70x (two runs). A prefetch
#   into L1 that misses holds a line-fill buffer (16 per core) for the whole memory latency,
#   which caps it near 16 x 64 bytes per latency (~11 GB/s here, the kernel's speed on both Intel
#   VMs seen); the hardware's L2 streamer, which a plain read rides at 20 GB/s, has a longer queue.
#   2048 fresh scattered rows: 70.6-75.5 ns per row into L1 vs 75.8-77.4 into L2, so those stay
#   in L1.
# * AMD Zen 4, a 2-core KVM guest of an EPYC of family 25 model 17 (LLVM znver4), AVX-512, one
#   thread reading at 31-33 GB/s (2026-12-02), three processes per version alternating, min of 15:
#   into L1 29.9-30.4 ms (0.54x-0.56x), into L2 19.0-22.5 ms (0.77x-0.83x); loss + gradient 0.51x
#   vs 0.70x-0.82x; with X in L2 the same 16-21 ns per row either way. bench_kernels.py --kernels
#   linear,logistic --repeats 5, L1 then L2: every D from 16 to 1024, both dtypes, faster into L2
#   or the same (logistic float64 D = 16, 64, 256, 1024: 0.74, 0.53, 0.63, 0.41x vs 0.79, 0.78,
#   0.79, 0.64x; float32 0.59, 0.55, 0.52, 0.38x vs 0.58, 0.61, 0.68, 0.63x). Distances 16-192
#   KiB into L2: the same within the noise (0.74x-0.86x).
# Unmeasured x86 CPUs take L2: on the two kinds where L1 lost, it lost by far more.
STREAM_PREFETCH_INTO_L2 = stream_prefetch_into_l2()
stream_prefetch = prefetch_l2 if STREAM_PREFETCH_INTO_L2 else _prefetch


@intrinsic
def _i64_as_f64(typingctx, i):
    """Reinterpret the bits of an int64 as a float64 (no conversion)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


# The bits of the float64 2^52. An integer 0 <= i < 2^52 put in its mantissa (bitwise or) is the
# float64 2^52 + i exactly, so minus 2^52 it is float(i): an int64 -> float64 conversion without
# the instruction, which AVX2 lacks for vectors (LLVM converts one lane at a time there).
TWO52_BITS = 0x4330000000000000
TWO52 = 4503599627370496.0


# exp(x), x <= 0: x = n ln2 + r, |r| <= ln2/2, exp(r) by Taylor to r**13/13! (truncation
# < 4e-18 relative), times 2**n built from the exponent bits. Cody-Waite split of ln 2.
_LOG2E = 1.4426950408889634
_INV_FACT = (1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
             1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800)
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _INV_FACT[2:]


@njit(cache=True, nogil=True, fastmath=False)
def exp_nonpos(x):
    """exp(x) for x <= 0 within ~2 ulp; 0.0 for x < -708 (exp(x) < 3.4e-308); NaN for NaN. No libm call.

    Straight-line arithmetic only, so LLVM vectorises loops over arrays of x once this
    is inlined (math.exp is a scalar libm call). Strict IEEE (no fastmath).
    """
    xc = max(x, -708.0)
    n = math.floor(xc * _LOG2E + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 + r * (1.0 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * (
        _C7 + r * (_C8 + r * (_C9 + r * (_C10 + r * (_C11 + r * (_C12 + r * _C13))))))))))))
    e = p * _i64_as_f64((np.int64(n) + 1023) << 52)
    return e if x >= -708.0 else (0.0 if x < -708.0 else x)  # a NaN logit must not vanish


@njit(cache=True, nogil=True, inline="always")
def after_sizes(value, n_elements):
    """``value``, unchanged: the caller's arrays counted as used here (``n_elements``, the sum of
    their ``.size``), after its loops and branches.

    An array passed to an ``inline="always"`` helper becomes a local of the inlined code, with an
    NRT incref where it is bound and a decref after its last use. Numba's reference-count pruning
    can leave the pair in place when that last use sits in a branch or a loop of the helper; in a
    kernel's hot loop each is then a call out of the kernel that spills every vector register
    (the softmax vector path had five pairs per 16-row block). Returning
    ``after_sizes(result, a.size + b.size)`` moves those last uses to the helper's end.
    tests/test_kernel_ir.py looks for refcount calls inside loops.
    """
    return value if n_elements >= 0 else value


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def prefetch_ahead(X, pf, end):
    """Prefetch X (2-D C-contiguous) flat elements [pf, end + lead) one cache line apart.

    lead = PREFETCH_BYTES of elements. ``pf`` is the first flat element not yet
    prefetched (a kernel starts each run of consecutive rows at ``lo * D + lead``: the
    hardware prefetcher covers the first lines); returns the new ``pf``. Callers pass
    ``end`` = flat index one past the rows about to be read, so each line PREFETCH_BYTES
    ahead of the reading position is requested once.
    """
    step = CACHE_LINE // X.itemsize
    stop = min(end + PREFETCH_BYTES // X.itemsize, X.size)
    while pf < stop:
        _prefetch(X, pf)
        pf += step
    return pf


ROWS_AHEAD = 8  # scattered rows: how many rows ahead of the one being read are prefetched
# glm_loss_grad's blocks of 8 scattered rows request the 8 rows this far ahead, spread over the
# block's gradient sweep (glm._eight_rows has the numbers).
SCATTERED_ROWS_AHEAD = 16


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def prefetch_scattered(X, rows, pr, i, cnt):
    """Prefetch whole rows ``X[rows[k]]`` for k in [pr, min(m, i + ROWS_AHEAD + min(cnt, ROWS_AHEAD))).

    For mini-batches, whose rows are scattered over the shard: each row is its own run, the
    in-run prefetch (prefetch_ahead) never starts, and every row would wait a full memory
    latency (~170 ns for 512-byte rows here). Requesting the rows ROWS_AHEAD ahead keeps
    several misses in flight. Call at the start of the run [i, i + cnt); ``pr`` is the first
    index of ``rows`` not yet prefetched; returns the new one. Long runs (full passes) are
    left to prefetch_ahead: at most 2 * ROWS_AHEAD rows are requested beyond ``i``.
    """
    return prefetch_rows(X, rows, max(pr, i + 1), min(rows.size, i + ROWS_AHEAD + min(cnt, ROWS_AHEAD)), False)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def prefetch_rows(X, rows, pr, stop, into_l2):
    """Request the whole rows X[rows[pr:stop]] into L1 (into_l2 False) or L2; returns max(pr, stop).

    into_l2 is a constant at each call site (the branch folds away once inlined).
    """
    D = X.shape[1]
    step = CACHE_LINE // X.itemsize
    while pr < stop:
        base = rows[pr] * D
        for k in range(0, D, step):
            if into_l2:
                prefetch_l2(X, base + k)
            else:
                _prefetch(X, base + k)
        if into_l2:  # a row need not start on a cache line
            prefetch_l2(X, base + D - 1)
        else:
            _prefetch(X, base + D - 1)
        pr += 1
    return after_sizes(pr, X.size + rows.size)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def next_run(rows, i):
    """Longest run of consecutive ids starting at ``rows[i]``.

    Returns ``(lo, count)`` such that ``rows[i + k] == lo + k`` for ``k < count``.
    Kernels iterate ``range(lo, lo + count)`` instead of ``rows[k]``: the row address
    then no longer depends on a load, which lets the CPU stream X at full speed
    (indexing through ``rows`` costs ~40% of the bandwidth on full batches).
    """
    m = rows.size
    lo = rows[i]
    e = i + 1
    while e < m and rows[e] == lo + (e - i):
        e += 1
    return lo, e - i


# link_residual and log1p_unit are not cached on their own (cache=False): every cached kernel that
# calls them carries their code in its own cache entry. So two kernels compiled at once on two
# ranks (mpidml.train.compile_in_groups: the loss kernel, the compiled step loop) never both
# write these two functions' cache files; they are a few lines each to compile.
@njit(nogil=True, fastmath=False)
def link_residual(model, z, y, s, with_loss):
    """Per-row GLM link, strict IEEE arithmetic.

    Parameters: model (LINEAR or LOGISTIC), margin z, target y, weight s (float64).
    Returns ``(r, l)``: r = s * d loss / d z, l = s * loss (0.0 unless with_loss).
    Logistic: loss = log(1 + exp(z)) - y z, computed from e = exp(-|z|) so that no
    exp overflows (|z| > 700 is fine); sigmoid is 1/(1+e) or e/(1+e).
    """
    if model == LINEAR:
        d = z - y
        l = 0.5 * s * d * d if with_loss else 0.0
        return s * d, l
    e = math.exp(-abs(z))
    inv = 1.0 / (1.0 + e)
    p = inv if z >= 0.0 else e * inv
    l = 0.0
    if with_loss:
        l = s * ((max(z, 0.0) - y * z) + log1p_unit(e))
    return s * (p - y), l


# fdlibm s_log1p.c: log1p(f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.1716.
_LP1 = 6.666666666666735130e-01
_LP2 = 3.999999999940941908e-01
_LP3 = 2.857142874366239149e-01
_LP4 = 2.222219843214978396e-01
_LP5 = 1.818357216161805012e-01
_LP6 = 1.531383769920937332e-01
_LP7 = 1.479819860511658591e-01
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10


@njit(nogil=True, fastmath=False)
def log1p_unit(e):
    """log(1 + e) for 0 <= e <= 1 (e.g. e = exp(-|z|)), within ~1 ulp; no libm call.

    Branch-free reduction: 1 + e = 2**k (1 + f) with k = 0, f = e for e <= sqrt(2) - 1
    and k = 1, f = (e - 1) / 2 in (-0.293, 0] otherwise; then fdlibm's log1p kernel
    log1p(f) = f - (f*f/2 - s (f*f/2 + R(s*s))), s = f / (2 + f). Several times cheaper
    than math.log1p and inlinable (no call), so independent rows overlap.
    """
    big = e > 0.41421356237309503
    f = 0.5 * (e - 1.0) if big else e
    k = 1.0 if big else 0.0
    s = f / (2.0 + f)
    z = s * s
    r = z * (_LP1 + z * (_LP2 + z * (_LP3 + z * (_LP4 + z * (_LP5 + z * (_LP6 + z * _LP7))))))
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


@njit(cache=True, nogil=True, fastmath=False)
def log_strict(x):
    """math.log(x), strict (kept out of the fastmath drivers)."""
    return math.log(x)
