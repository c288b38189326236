"""Explicit 8-lane float64 vectors for the Numba kernels (LLVM ``<8 x double>`` values).

Numba's auto-vectoriser handles simple loops, but not kernels that need a value per row
in the vector lanes (a softmax over classes for 8 rows at once) or register tiles that
must survive a loop. These intrinsics give the kernels such values directly: ``F64x8`` is
a Numba type whose LLVM representation is ``<8 x double>``, so local variables of this
type live in vector registers (one zmm register with AVX-512, two ymm with AVX2, four xmm
otherwise: LLVM legalises the width for the CPU it compiles for).

Rules: loads and stores take a C-contiguous array and a flat element index and do no
bounds or negative-index checks (callers guarantee ``0 <= idx`` and ``idx + 8 <= size``);
float32 arrays are widened to float64 on load; arithmetic is IEEE (no fast-math flags);
``vfma`` rounds once.
"""
import math

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, models, register_model

from .util import _INV_FACT, _LN2_HI, _LN2_LO, _LOG2E, _LP1, _LP2, _LP3, _LP4, _LP5, _LP6, _LP7, TWO52, TWO52_BITS

LANES = 8
_F64 = ir.DoubleType()
_VT = ir.VectorType(_F64, LANES)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VI32 = ir.VectorType(_I32, LANES)


def _wide_registers():
    """True when the CPU Numba compiles for has AVX-512 (32 registers of 8 float64), as Numba
    sees it: NUMBA_CPU_FEATURES when set, else the host's features."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return "+avx512f" in features.split(",")


# Register tiles are sized by this: 20 F64x8 accumulators fit in AVX-512's 32 zmm registers,
# but need 40 of AVX2's 16 ymm registers (two per F64x8), and the spills made the softmax's
# vector path slower than its scalar path (AMD EPYC Zen 3: 222 vs 188 ns per row at D=64,
# K=10). Numba's cache keys compiled code by the CPU's name and features, so a cache filled on
# one kind of CPU is not loaded on another with this constant differing.
WIDE_REGISTERS = _wide_registers()


# 1.5 * 2**52 and its bits (see _vexp2i).
_ROUND_SHIFT = 6755399441055744.0
_ROUND_SHIFT_BITS = 0x4338000000000000


class F64x8Type(types.Type):
    def __init__(self):
        super().__init__(name="F64x8")


f64x8 = F64x8Type()


@register_model(F64x8Type)
class _F64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VT)


def _elem_ptr(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _vec_ptr(context, builder, arrty, arr, idx):
    elt = context.get_data_type(arrty.dtype)
    return builder.bitcast(_elem_ptr(context, builder, arrty, arr, idx), ir.VectorType(elt, LANES).as_pointer())


def _splat(builder, x):
    v = builder.insert_element(ir.Constant(_VT, ir.Undefined), x, _I32(0))
    return builder.shuffle_vector(v, ir.Constant(_VT, ir.Undefined), ir.Constant(_VI32, [0] * LANES))


def _shuffle(builder, a, b, idx):
    return builder.shuffle_vector(a, b, ir.Constant(_VI32, idx))


def _declare(builder, name, nargs):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VT, [_VT] * nargs), name)


@intrinsic
def vload(typingctx, arr, idx):
    """Lanes t = arr.flat[idx + t] for t < 8, as float64 (float32 arrays are widened)."""
    sig = f64x8(arr, types.intp)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        v = builder.load(_vec_ptr(context, builder, arrty, args[0], args[1]), align=arrty.dtype.bitwidth // 8)
        return builder.fpext(v, _VT) if arrty.dtype == types.float32 else v
    return sig, codegen


@intrinsic
def vload_n(typingctx, arr, idx, n):
    """Lanes t = arr.flat[idx + t] for t < n, 0.0 for t >= n (0 <= n <= 8; masked lanes are not read)."""
    sig = f64x8(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        elt = context.get_data_type(arrty.dtype)
        vty = ir.VectorType(elt, LANES)
        vi = ir.VectorType(_I64, LANES)
        lanes = ir.Constant(vi, list(range(LANES)))
        nv = builder.shuffle_vector(builder.insert_element(ir.Constant(vi, ir.Undefined), args[2], _I32(0)),
                                    ir.Constant(vi, ir.Undefined), ir.Constant(_VI32, [0] * LANES))
        mask = builder.icmp_signed("<", lanes, nv)
        name = "llvm.masked.load.v8f64.p0" if arrty.dtype == types.float64 else "llvm.masked.load.v8f32.p0"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty.as_pointer(), _I32, ir.VectorType(ir.IntType(1), LANES), vty]),
            name)
        v = builder.call(fn, [_vec_ptr(context, builder, arrty, args[0], args[1]), _I32(arrty.dtype.bitwidth // 8),
                              mask, ir.Constant(vty, [0.0] * LANES)])
        return builder.fpext(v, _VT) if arrty.dtype == types.float32 else v
    return sig, codegen


@intrinsic
def vbload(typingctx, arr, idx):
    """All 8 lanes = float64(arr.flat[idx]) (a broadcast load)."""
    sig = f64x8(arr, types.intp)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        x = builder.load(_elem_ptr(context, builder, arrty, args[0], args[1]))
        return _splat(builder, builder.fpext(x, _F64) if arrty.dtype == types.float32 else x)
    return sig, codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """arr.flat[idx + t] = lane t of v for t < 8 (arr float64)."""
    sig = types.void(arr, types.intp, f64x8)

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vec_ptr(context, builder, signature.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def vstore_t8(typingctx, arr, idx, a0, a1, a2, a3, a4, a5, a6, a7):
    """Store the transpose of the 8x8 block with rows a0..a7: arr.flat[idx + 8 c + t] = a_t[c] (arr float64)."""
    sig = types.void(arr, types.intp, *([f64x8] * 8))

    def codegen(context, builder, signature, args):
        a = args[2:]
        t = []  # t[2p] / t[2p+1]: even / odd lanes of rows 2p and 2p+1, interleaved
        for p in range(4):
            t.append(_shuffle(builder, a[2 * p], a[2 * p + 1], [0, 8, 2, 10, 4, 12, 6, 14]))
            t.append(_shuffle(builder, a[2 * p], a[2 * p + 1], [1, 9, 3, 11, 5, 13, 7, 15]))
        q0, q1 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        u = {}  # u[h, c]: columns c and c + 4 of rows 4h..4h+3
        for h in range(2):
            ev0, od0, ev1, od1 = t[4 * h:4 * h + 4]
            u[h, 0], u[h, 2] = _shuffle(builder, ev0, ev1, q0), _shuffle(builder, ev0, ev1, q1)
            u[h, 1], u[h, 3] = _shuffle(builder, od0, od1, q0), _shuffle(builder, od0, od1, q1)
        base = _vec_ptr(context, builder, signature.args[0], args[0], args[1])
        for c in range(4):
            builder.store(_shuffle(builder, u[0, c], u[1, c], [0, 1, 2, 3, 8, 9, 10, 11]),
                          builder.gep(base, [_I64(c)]), align=8)
            builder.store(_shuffle(builder, u[0, c], u[1, c], [4, 5, 6, 7, 12, 13, 14, 15]),
                          builder.gep(base, [_I64(c + 4)]), align=8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def vsplat(typingctx, x):
    """All 8 lanes = x (float64)."""
    sig = f64x8(types.float64)

    def codegen(context, builder, signature, args):
        return _splat(builder, args[0])
    return sig, codegen


def _binary(op):
    @intrinsic
    def fn(typingctx, a, b):
        sig = f64x8(f64x8, f64x8)

        def codegen(context, builder, signature, args):
            return getattr(builder, op)(args[0], args[1])
        return sig, codegen
    return fn


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vset8(typingctx, x0, x1, x2, x3, x4, x5, x6, x7):
    """The vector with lanes x0..x7 (each converted to float64), built in registers."""
    sig = f64x8(*([types.float64] * 8))

    def codegen(context, builder, signature, args):
        v = ir.Constant(_VT, ir.Undefined)
        for t, x in enumerate(args):
            v = builder.insert_element(v, x, _I32(t))
        return v
    return sig, codegen


def _select_cmp(op):
    """An intrinsic f(a, b, x, y): lane-wise x where ``a op b`` (ordered: false if a or b is NaN), else y."""
    @intrinsic
    def fn(typingctx, a, b, x, y):
        sig = f64x8(f64x8, f64x8, f64x8, f64x8)

        def codegen(context, builder, signature, args):
            return builder.select(builder.fcmp_ordered(op, args[0], args[1]), args[2], args[3])
        return sig, codegen
    return fn


vselect_eq = _select_cmp("==")  # lane-wise x if a == b else y
vselect_ge = _select_cmp(">=")  # lane-wise x if a >= b else y (y where a or b is NaN)
vselect_gt = _select_cmp(">")  # lane-wise x if a > b else y (y where a or b is NaN)


def _unary(name):
    """An intrinsic f(a): the lane-wise LLVM intrinsic ``name`` (e.g. llvm.fabs.v8f64)."""
    @intrinsic
    def fn(typingctx, a):
        sig = f64x8(f64x8)

        def codegen(context, builder, signature, args):
            return builder.call(_declare(builder, name, 1), [args[0]])
        return sig, codegen
    return fn


vabs = _unary("llvm.fabs.v8f64")  # lane-wise |a| (clears the sign bit; NaN stays NaN)
vfloor = _unary("llvm.floor.v8f64")  # lane-wise floor


@intrinsic
def vhsum8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """Lane t = the sum of the 8 lanes of a_t (a transposing reduction: 14 shuffles, 7 adds).

    The order of the additions is fixed: lanes (0+1)+(2+3) with (4+5)+(6+7), pairwise.
    """
    sig = f64x8(*([f64x8] * 8))

    def codegen(context, builder, signature, args):
        # level 1: rows 2p, 2p+1 -> lanes (2p: 0+1, 2p+1: 0+1, 2p: 2+3, 2p+1: 2+3, ...)
        h = [builder.fadd(_shuffle(builder, args[2 * p], args[2 * p + 1], [0, 8, 2, 10, 4, 12, 6, 14]),
                          _shuffle(builder, args[2 * p], args[2 * p + 1], [1, 9, 3, 11, 5, 13, 7, 15]))
             for p in range(4)]
        # level 2: rows 4q..4q+3 -> lanes (their sums of lanes 0..3, then of lanes 4..7)
        q = [builder.fadd(_shuffle(builder, h[2 * c], h[2 * c + 1], [0, 1, 8, 9, 4, 5, 12, 13]),
                          _shuffle(builder, h[2 * c], h[2 * c + 1], [2, 3, 10, 11, 6, 7, 14, 15]))
             for c in range(2)]
        # level 3: lanes 0..3 from rows 0..3, lanes 4..7 from rows 4..7
        return builder.fadd(_shuffle(builder, q[0], q[1], [0, 1, 2, 3, 8, 9, 10, 11]),
                            _shuffle(builder, q[0], q[1], [4, 5, 6, 7, 12, 13, 14, 15]))
    return sig, codegen


@intrinsic
def vfence(typingctx, a):
    """a, unchanged; fast-math reassociation cannot move arithmetic across it (llvm.arithmetic.fence).

    The kernels' fast-math flags allow LLVM to rewrite ``x * (s / t)`` as ``(x * s) / t``: one
    division per use instead of one reciprocal shared by all (the softmax's 10 classes: ten
    512-bit divisions, ~16 cycles each, per 8 rows instead of one). Fencing ``s / t`` keeps it
    computed once.
    """
    sig = f64x8(f64x8)

    def codegen(context, builder, signature, args):
        return builder.call(_declare(builder, "llvm.arithmetic.fence.v8f64", 1), [args[0]])
    return sig, codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma)."""
    sig = f64x8(f64x8, f64x8, f64x8)

    def codegen(context, builder, signature, args):
        return builder.call(_declare(builder, "llvm.fma.v8f64", 3), list(args))
    return sig, codegen


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise a if a > b else b (so b where either is NaN)."""
    sig = f64x8(f64x8, f64x8)

    def codegen(context, builder, signature, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])
    return sig, codegen


@intrinsic
def _vexp2i(typingctx, n):
    """2.0**n for lanes holding integers in [-1022, 1023] (built from the exponent bits)."""
    sig = f64x8(f64x8)

    def codegen(context, builder, signature, args):
        # n + 1.5 * 2**52 holds n + 2**51 in its low mantissa bits (exact for |n| < 2**51), so
        # its bits minus those of 1.5 * 2**52 are n as an integer: the same values as fptosi,
        # without a float64 -> int64 conversion, which AVX2 lacks (LLVM made it 8 scalar
        # conversions and the moves to assemble them: most of an exp's instructions there).
        vi = ir.VectorType(_I64, LANES)
        shifted = builder.bitcast(builder.fadd(args[0], ir.Constant(_VT, [_ROUND_SHIFT] * LANES)), vi)
        k = builder.add(shifted, ir.Constant(vi, [1023 - _ROUND_SHIFT_BITS] * LANES))
        return builder.bitcast(builder.shl(k, ir.Constant(vi, [52] * LANES)), _VT)
    return sig, codegen


@intrinsic
def _vexp_fixup(typingctx, x, e, lo):
    """Lane-wise: NaN if x is NaN, 0.0 if x < lo, else e."""
    sig = f64x8(f64x8, f64x8, f64x8)

    def codegen(context, builder, signature, args):
        x, e, lo = args
        r = builder.select(builder.fcmp_ordered("<", x, lo), ir.Constant(_VT, [0.0] * LANES), e)
        return builder.select(builder.fcmp_unordered("uno", x, x), x, r)
    return sig, codegen


@intrinsic
def _vexponent(typingctx, x):
    """Lane-wise the unbiased binary exponent of x as float64 (floor(log2 |x|) for normal x)."""
    sig = f64x8(f64x8)

    def codegen(context, builder, signature, args):
        # The biased exponent e (0..2047) as float64 by util.TWO52_BITS' trick, minus 1023 in the
        # same subtraction: the value sitofp gave, without the conversion AVX2 lacks.
        vi = ir.VectorType(_I64, LANES)
        bits = builder.bitcast(args[0], vi)
        e = builder.and_(builder.lshr(bits, ir.Constant(vi, [52] * LANES)), ir.Constant(vi, [0x7FF] * LANES))
        as_double = builder.bitcast(builder.or_(e, ir.Constant(vi, [TWO52_BITS] * LANES)), _VT)
        return builder.fsub(as_double, ir.Constant(_VT, [TWO52 + 1023.0] * LANES))
    return sig, codegen


@intrinsic
def _vmantissa(typingctx, x):
    """Lane-wise |x| scaled into [1, 2) by its binary exponent (normal x): x's mantissa bits, exponent 0."""
    sig = f64x8(f64x8)

    def codegen(context, builder, signature, args):
        vi = ir.VectorType(_I64, LANES)
        bits = builder.bitcast(args[0], vi)
        m = builder.and_(bits, ir.Constant(vi, [(1 << 52) - 1] * LANES))
        return builder.bitcast(builder.or_(m, ir.Constant(vi, [1023 << 52] * LANES)), _VT)
    return sig, codegen


@intrinsic
def vlane(typingctx, v, t):
    """Lane t of v (float64)."""
    sig = types.float64(f64x8, types.intp)

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])
    return sig, codegen


@intrinsic
def ld(typingctx, arr, idx):
    """arr.flat[idx] without the negative-index fix-up of ``arr[idx]`` (idx >= 0)."""
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        return builder.load(_elem_ptr(context, builder, signature.args[0], args[0], args[1]))
    return sig, codegen


@intrinsic
def align_offset(typingctx, arr):
    """Number of elements to skip from arr's start to reach a 64-byte boundary (arr float64)."""
    sig = types.intp(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        addr = builder.ptrtoint(ary.data, _I64)
        return builder.lshr(builder.and_(builder.sub(_I64(0), addr), _I64(63)), _I64(3))
    return sig, codegen


# exp(x) for x <= 0: the lane-wise twin of util.exp_nonpos (same range reduction and
# Taylor polynomial to r**13/13!, Horner steps fused): within ~1 ulp, 0.0 below -708.
@njit(cache=True, nogil=True, inline="always")
def vexp_nonpos(x):
    """Lane-wise exp(x) for x <= 0 (x > 0 is not reduced correctly); NaN stays NaN, x < -708 gives 0.0."""
    lo = vsplat(-708.0)
    xc = vmax(x, lo)
    n = vfloor(vfma(xc, vsplat(_LOG2E), vsplat(0.5)))
    r = vfma(n, vsplat(-_LN2_LO), vfma(n, vsplat(-_LN2_HI), xc))
    p = vfma(r, vsplat(_INV_FACT[13]), vsplat(_INV_FACT[12]))
    p = vfma(r, p, vsplat(_INV_FACT[11]))
    p = vfma(r, p, vsplat(_INV_FACT[10]))
    p = vfma(r, p, vsplat(_INV_FACT[9]))
    p = vfma(r, p, vsplat(_INV_FACT[8]))
    p = vfma(r, p, vsplat(_INV_FACT[7]))
    p = vfma(r, p, vsplat(_INV_FACT[6]))
    p = vfma(r, p, vsplat(_INV_FACT[5]))
    p = vfma(r, p, vsplat(_INV_FACT[4]))
    p = vfma(r, p, vsplat(_INV_FACT[3]))
    p = vfma(r, p, vsplat(_INV_FACT[2]))
    p = vfma(r, p, vsplat(1.0))
    p = vfma(r, p, vsplat(1.0))
    return _vexp_fixup(x, vmul(p, _vexp2i(n)), lo)


@njit(cache=True, nogil=True, inline="always")
def vlog1p_unit(e):
    """Lane-wise log(1 + e) for 0 <= e <= 1: the lane-wise twin of util.log1p_unit (same
    reduction and fdlibm polynomial, the same operations in the same order); NaN stays NaN."""
    one = vsplat(1.0)
    big = vselect_gt(e, vsplat(0.41421356237309503), one, vsplat(0.0))
    f = vselect_gt(e, vsplat(0.41421356237309503), vmul(vsplat(0.5), vsub(e, one)), e)
    s = vdiv(f, vadd(vsplat(2.0), f))
    z = vmul(s, s)
    r = vadd(vsplat(_LP6), vmul(z, vsplat(_LP7)))
    r = vadd(vsplat(_LP5), vmul(z, r))
    r = vadd(vsplat(_LP4), vmul(z, r))
    r = vadd(vsplat(_LP3), vmul(z, r))
    r = vadd(vsplat(_LP2), vmul(z, r))
    r = vadd(vsplat(_LP1), vmul(z, r))
    r = vmul(z, r)
    hfsq = vmul(vmul(vsplat(0.5), f), f)
    inner = vadd(vmul(s, vadd(hfsq, r)), vmul(big, vsplat(_LN2_LO)))
    return vsub(vmul(big, vsplat(_LN2_HI)), vsub(vsub(hfsq, inner), f))


@njit(cache=True, nogil=True, inline="always")
def vlog_ge1(x):
    """Lane-wise log(x) for x >= 1, within ~1 ulp (x = 2**e f with f in [1, 2): e ln 2 +
    log1p(f - 1) by vlog1p_unit, f - 1 exact); NaN stays NaN, +inf gives +inf. (Below 1 the two
    terms cancel: up to ~10 ulp near x = 0.96.) No libm call: the softmax's loss takes the log
    of 8 rows' sums of exp at once, where 8 calls of math.log, each spilling the vector
    registers around it, cost more than the rest of the loss."""
    e = _vexponent(x)
    r = vadd(vmul(e, vsplat(_LN2_HI)), vadd(vmul(e, vsplat(_LN2_LO)), vlog1p_unit(vsub(_vmantissa(x), vsplat(1.0)))))
    r = vselect_eq(x, vsplat(math.inf), x, r)
    return vselect_eq(x, x, r, x)  # NaN lanes: x (an ordered compare is false for NaN)
