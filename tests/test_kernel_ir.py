"""The compiled hot loops hold no NRT reference-count calls on the variables of inlined helpers.

Numba leaves an incref/decref pair in the caller when an array argument's last use inside an
``inline="always"`` helper sits in a branch (its refcount pruning cannot pair them across the
branch). In a loop each is a call that spills every vector register: the GLM kernels ran about
2x slower with rows in cache for that alone. This compiles fresh copies of the drivers (the
inlined helpers come along in their IR) and looks for such calls.
"""
import re

import numpy as np
import pytest
from numba import njit

from mpidml.kernels import glm, softmax
from mpidml.kernels.util import FASTMATH, LOGISTIC

# NRT_incref / NRT_decref on a value named after an inlined callee's variable (<callee>_v<N>_<var>)
INLINED_REFCOUNT = re.compile(r"@NRT_(?:in|de)cref\(ptr %(_?[A-Za-z]\w*?_v\d+_\w+)")


def _ir(py_func, *args):
    fresh = njit(fastmath=FASTMATH)(py_func)  # not cached: inspect_llvm needs an in-process compile
    fresh(*args)
    return fresh.inspect_llvm(fresh.signatures[0])


def test_glm_loss_grad_has_no_refcount_calls_from_inlined_helpers():
    # one compile covers weighted and unweighted (sw's size is a run-time branch) and with or
    # without the hits (hits' size); the logistic model has the longer link; linear shares the
    # same helpers
    n, d = 40, 13
    X, y = np.ones((n, d)), np.zeros(n)
    ir = _ir(glm.glm_loss_grad.py_func, X, y, np.ones(n), np.zeros(d + 1), np.arange(n), np.zeros(d + 1), True,
             LOGISTIC, np.zeros(1))
    assert not INLINED_REFCOUNT.findall(ir), sorted(set(INLINED_REFCOUNT.findall(ir)))


@pytest.mark.parametrize("wide", [True, False])
def test_softmax_vector_path_has_no_refcount_calls_from_inlined_helpers(wide):
    # the driver inlines the loop over blocks; each block, and the transposes and softmax it
    # calls, inline the small helpers (_row_id, _tile5, the vector exp and log)
    n, d, k = 40, 13, 10
    kq, dp = 10, 16
    X, y = np.ones((n, d)), np.zeros(n, dtype=np.int64)
    params = np.zeros(k * (d + 1))
    path = softmax._vector_path_wide if wide else softmax._vector_path_narrow
    block = softmax._block16 if wide else softmax._block16_narrow
    work = np.zeros(softmax.work_size(k, d))
    oW = 0
    oG = oW + kq * dp
    oGB = oG + kq * dp
    oZ = oGB + 8 * kq
    oT = oZ + 16 * kq
    oB = oT + 16 * dp
    oH = oB + kq  # with the batch hits
    rows = np.arange(n)
    for func, args in ((path, (X, y, np.empty(0), params, rows, np.zeros_like(params), True, work, np.zeros(1))),
                       (block, (X, y, np.empty(0), rows, 0, 0, False, 16, k, kq, work, oW, oG, oGB, oZ, oT, oB, oH,
                                True, -1)),
                       (softmax._transpose8, (X, rows, 0, 0, False, 16, 1, work, oT)),
                       (softmax._softmax8, (y, np.empty(0), rows, 0, 0, False, 16, 1, k, work, oZ, oGB, True, oH))):
        ir = _ir(func.py_func, *args)
        assert not INLINED_REFCOUNT.findall(ir), (func.__name__, sorted(set(INLINED_REFCOUNT.findall(ir))))


def test_glm_margin_has_no_refcount_calls_from_inlined_helpers():
    n, d = 40, 13
    ir = _ir(glm.glm_margin.py_func, np.ones((n, d)), np.zeros(d + 1), np.arange(n), np.empty(n))
    assert not INLINED_REFCOUNT.findall(ir), sorted(set(INLINED_REFCOUNT.findall(ir)))


def test_plan_hash_of_small_domains_runs_in_32_bit_vector_lanes():
    """The epoch plan's rounds for N <= 2^32 (shuffle._hash_chunk32) must stay uint32 arithmetic.

    Numba types uint32 products and shifts as uint64; the casts and masked shift counts in
    _round32 let LLVM keep them 32-bit (vpmulld: eight lanes per AVX2 vector). Widened, the loop
    still vectorises, but in 64-bit lanes (the plan was 0.6 ns per row slower on Zen 3)."""
    from mpidml.kernels import shuffle

    u = np.uint32
    fresh = njit(shuffle._hash_chunk32.py_func)
    fresh(np.empty(0, np.int64), np.int64(0), 0, 2048, np.uint64(1_000_000), u(1), u(2), u(3), u(4), u(2**20 - 1),
          u(10), u(7), np.empty(4096, np.uint32), np.empty(2048, np.int64))
    ir = fresh.inspect_llvm(fresh.signatures[0])
    ops = set(re.findall(r"\b(mul|lshr) <\d+ x (i\d+)>", ir))
    assert ("mul", "i32") in ops and ("lshr", "i32") in ops, ops
    assert not {op for op in ops if op[1] == "i64"}, ops
