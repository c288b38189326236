"""The explicit-vector intrinsics (kernels/simd.py) against NumPy."""
import numpy as np
from numba import njit

from mpidml.kernels.simd import (align_offset, vabs, vbload, vexp_nonpos, vfma, vhsum8, vload, vload_n, vlog1p_unit, vlog_ge1,
                                 vmax, vselect_ge, vselect_gt, vset8, vstore, vstore_t8)
from mpidml.kernels.util import log1p_unit


@njit
def _exp_all(x, out):
    for i in range(0, x.size, 8):
        vstore(out, i, vexp_nonpos(vload(x, i)))


@njit
def _transpose(a, out, idx):
    vstore_t8(out, idx, vload(a, 0), vload(a, 8), vload(a, 16), vload(a, 24), vload(a, 32), vload(a, 40),
              vload(a, 48), vload(a, 56))


@njit
def _fma_max(a, b, c, out):
    vstore(out, 0, vfma(vload(a, 0), vbload(b, 3), vload(c, 0)))
    vstore(out, 8, vmax(vload(a, 0), vload(c, 0)))


@njit
def _set8(a, out):
    vstore(out, 8, vset8(a[7], a[6], a[5], a[4], a[3], a[2], a[1], a[0]))


@njit
def _load_n(a, idx, n, out):
    vstore(out, 0, vload_n(a, idx, n))


@njit
def _hsum8(a, out):
    vstore(out, 0, vhsum8(vload(a, 0), vload(a, 8), vload(a, 16), vload(a, 24), vload(a, 32), vload(a, 40),
                          vload(a, 48), vload(a, 56)))


@njit
def _log1p_all(e, out):
    for i in range(0, e.size, 8):
        vstore(out, i, vlog1p_unit(vload(e, i)))


@njit
def _log_ge1_all(x, out):
    for i in range(0, x.size, 8):
        vstore(out, i, vlog_ge1(vload(x, i)))


@njit
def _abs_select(a, b, x, y, out):
    vstore(out, 0, vabs(vload(a, 0)))
    vstore(out, 8, vselect_ge(vload(a, 0), vload(b, 0), vload(x, 0), vload(y, 0)))
    vstore(out, 16, vselect_gt(vload(a, 0), vload(b, 0), vload(x, 0), vload(y, 0)))


@njit
def _offset(a):
    return align_offset(a)


def test_vlog_ge1_accuracy_and_edges():
    # the softmax's log(sum of exp): sums in [1, K]; wider for the function's own contract
    rng = np.random.default_rng(3)
    x = np.concatenate([1.0 + rng.random(8000) * 20.0, 1.0 + rng.random(4000) * 1e-6, np.exp(rng.uniform(0.0, 700.0, 4000)),
                        [1.0, np.nextafter(1.0, 2.0), 2.0, np.nextafter(2.0, 1.0), 1.5, 10.0, np.sqrt(2.0), 1.7976931348623157e308,
                         np.inf, np.nan]])
    x = np.concatenate([x, np.ones((-x.size) % 8)])
    out = np.empty_like(x)
    _log_ge1_all(x, out)
    ref = np.log(x)
    finite = np.isfinite(x)
    ulps = np.abs(out[finite] - ref[finite]) / np.spacing(ref[finite])
    assert ulps.max() <= 1.0, (ulps.max(), x[finite][np.argmax(ulps)])
    assert out[x == 1.0].tolist() == [0.0] * int(np.sum(x == 1.0))
    assert np.isposinf(out[np.isposinf(x)]).all() and np.isnan(out[np.isnan(x)]).all()


def test_vexp_nonpos_accuracy_and_edges():
    rng = np.random.default_rng(0)
    x = -np.concatenate([rng.exponential(1.0, 4000), rng.exponential(100.0, 4000), rng.uniform(0, 708, 4000)])
    edges = np.array([0.0, -0.0, -1e-300, -5e-324, -0.5 * np.log(2), -708.0, -707.9999, -708.0001, -745.2,
                      -1e300, -np.inf, np.nan, -1.0, -2.0, -0.3465735902799727, -0.34657359027997264])
    x = np.concatenate([x, edges, np.zeros((-(x.size + edges.size)) % 8)])
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x)
    normal = x >= -708.0
    assert np.all(np.abs(out[normal] - ref[normal]) <= 2.3e-16 * ref[normal])  # within ~1 ulp
    assert np.all(out[x < -708.0] == 0.0)  # below -708 (exp < 3.4e-308): 0, like util.exp_nonpos
    assert np.isnan(out[np.isnan(x)]).all()  # NaN stays NaN (a NaN logit must not vanish)


def test_vstore_t8_is_a_transpose_and_float32_widens():
    a = np.arange(64.0) * 1.5 - 7.0
    out = np.full(72, -1.0)
    _transpose(a, out, 3)
    np.testing.assert_array_equal(out[3:67].reshape(8, 8), a.reshape(8, 8).T)
    assert np.all(out[:3] == -1.0) and np.all(out[67:] == -1.0)
    a32 = (np.arange(64) / 3.0).astype(np.float32)
    _transpose(a32, out, 0)
    np.testing.assert_array_equal(out[:64].reshape(8, 8), a32.astype(np.float64).reshape(8, 8).T)


def test_fma_broadcast_max_and_alignment():
    rng = np.random.default_rng(1)
    a, b, c = rng.standard_normal(8), rng.standard_normal(8), rng.standard_normal(8)
    out = np.empty(16)
    _fma_max(a, b, c, out)
    np.testing.assert_allclose(out[:8], a * b[3] + c, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(out[8:], np.maximum(a, c))
    buf = np.empty(64)
    for start in range(9):
        off = _offset(buf[start:])
        assert 0 <= off < 8 and (buf[start:].ctypes.data + 8 * off) % 64 == 0


def test_vset8_orders_lanes():
    a = np.random.default_rng(2).standard_normal(64)
    out = np.zeros(16)
    _set8(a, out)
    np.testing.assert_array_equal(out[8:], a[7::-1])


def test_vload_n_reads_only_n_lanes():
    for dtype in (np.float64, np.float32):
        a = (np.arange(20) + 0.5).astype(dtype)
        out = np.empty(8)
        for n in range(9):
            _load_n(a, 20 - n, n, out)  # ends exactly at the array's end: lanes >= n are not read
            expected = np.zeros(8)
            expected[:n] = a[20 - n:].astype(np.float64)
            np.testing.assert_array_equal(out, expected)


def test_vhsum8_sums_each_vector_into_its_lane():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(64) * 10.0 ** rng.integers(-5, 5, 64)
    out = np.empty(8)
    _hsum8(a, out)
    rows = a.reshape(8, 8)
    # the documented order: ((0+1)+(2+3)) + ((4+5)+(6+7))
    ref = ((rows[:, 0] + rows[:, 1]) + (rows[:, 2] + rows[:, 3])) + ((rows[:, 4] + rows[:, 5]) + (rows[:, 6] + rows[:, 7]))
    np.testing.assert_array_equal(out, ref)
    a[13] = np.nan  # a NaN stays in its own lane
    _hsum8(a, out)
    assert np.isnan(out[1]) and np.all(np.isfinite(np.delete(out, 1)))


def test_vlog1p_unit_is_the_scalar_kernel_lane_wise():
    rng = np.random.default_rng(4)
    e = np.concatenate([rng.uniform(0.0, 1.0, 4000), np.exp(-rng.exponential(50.0, 4000)),
                        [0.0, 5e-324, 1e-300, 1e-17, 0.41421356237309503, np.nextafter(0.41421356237309503, 1.0),
                         0.5, 1.0, np.nan, 0.25, 0.75, 1e-8]])
    e = np.concatenate([e, np.full(-e.size % 8, 0.125)])  # whole vectors
    out = np.empty_like(e)
    _log1p_all(e, out)
    ref = np.array([log1p_unit(v) for v in e])
    np.testing.assert_array_equal(out, ref)  # same operations in the same order: bitwise
    ok = ~np.isnan(e)
    assert np.all(np.abs(out[ok] - np.log1p(e[ok])) <= 2.3e-16 * np.maximum(np.log1p(e[ok]), 5e-324))
    assert np.isnan(out[~ok]).all()


def test_vabs_and_selects():
    a = np.array([-2.0, -0.0, 0.0, 3.0, np.nan, -np.inf, 1.0, -1.0])
    b = np.array([0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 2.0, -1.0])
    x, y = np.arange(8.0), -np.arange(8.0) - 1.0
    out = np.empty(24)
    _abs_select(a, b, x, y, out)
    np.testing.assert_array_equal(out[:8], np.abs(a))
    assert not np.signbit(out[1])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out[8:16], np.where(a >= b, x, y))  # NaN compares false: y
        np.testing.assert_array_equal(out[16:], np.where(a > b, x, y))
