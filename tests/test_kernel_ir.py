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

from mpidml.kernels import csr, glm, mlp, softmax
from mpidml.kernels.util import FASTMATH, LOGISTIC, after_sizes

# NRT_incref / NRT_decref on a value named after an inlined callee's variable (<callee>_v<N>_<var>)
INLINED_REFCOUNT = re.compile(r"@NRT_(?:in|de)cref\(ptr %(_?[A-Za-z]\w*?_v\d+_\w+)")


def _ir(py_func, *args):
    fresh = njit(fastmath=FASTMATH)(py_func)  # not cached: inspect_llvm needs an in-process compile
    fresh(*args)
    return fresh.inspect_llvm(fresh.signatures[0])


_DEFINE = re.compile(r'^define [^@]*@"?([^"(]+)"?\(')
_BLOCK_LABEL = re.compile(r'^"?([\w.$-]+)"?:')
_LABEL_REF = re.compile(r'label %"?([\w.$-]+)"?')
_REFCOUNT_CALL = re.compile(r"call void @NRT_(incref|decref)\(ptr ([^)]*)\)")


def refcount_calls_in_loops(ir):
    """[(function, block, 'incref' or 'decref', operand)]: the NRT refcount calls of the LLVM IR
    ``ir`` that sit in a basic block on a cycle of its function's control-flow graph, i.e. run
    once per iteration of some loop. Whatever their origin (an inlined helper's argument, the
    caller's own array), each is a call out of the kernel that spills every vector register.

    Blocks are told apart by their labels; a block's successors are the ``label %name`` operands
    of its terminator (br, switch), the only instructions of Numba's IR that name labels so."""
    funcs = []
    blocks = None
    for line in ir.splitlines():
        m = _DEFINE.match(line)
        if m:
            blocks = {"<entry>": []}
            block = "<entry>"
            funcs.append((m.group(1), blocks))
        elif blocks is None:
            continue
        elif line.startswith("}"):
            blocks = None
        elif _BLOCK_LABEL.match(line):
            block = _BLOCK_LABEL.match(line).group(1)
            blocks[block] = []
        else:
            blocks[block].append(line)
    found = []
    for name, blocks in funcs:
        succ = {b: {t for line in lines if line.lstrip().startswith(("br ", "switch ", "i", "]"))
                    for t in _LABEL_REF.findall(line)} for b, lines in blocks.items()}

        def on_cycle(start):
            seen, todo = set(), list(succ[start])
            while todo:
                b = todo.pop()
                if b == start:
                    return True
                if b not in seen and b in succ:
                    seen.add(b)
                    todo.extend(succ[b])
            return False

        for b, lines in blocks.items():
            calls = [c for line in lines for c in _REFCOUNT_CALL.findall(line)]
            if calls and on_cycle(b):
                found.extend((name[-60:], b, kind, arg) for kind, arg in calls)
    return found


def _loop_refcounts(func, *args, fastmath=FASTMATH):
    fresh = njit(fastmath=fastmath)(func.py_func)
    fresh(*args)
    return sorted({(kind, arg) for _, _, kind, arg in refcount_calls_in_loops(fresh.inspect_llvm(fresh.signatures[0]))})


@njit(inline="always")
def _branchy(a, b, i):
    s = 0.0
    if i == 1:
        s += b[1]
    if i == 2:
        s += b[2]
    for j in range(i % 3):
        a[j] += s
    return s


@njit(inline="always")
def _branchy_after(a, b, i):
    s = 0.0
    if i == 1:
        s += b[1]
    if i == 2:
        s += b[2]
    for j in range(i % 3):
        a[j] += s
    return after_sizes(s, a.size + b.size)


def _loop_of(helper):
    def f(a, b, n):
        s = 0.0
        for i in range(n):
            s += helper(a, b, i)
        return s
    return f


def test_the_loop_finder_sees_the_refcount_calls_after_sizes_removes():
    """The checks below can fail: arrays whose last uses are in branches and a loop of an inlined
    helper called in a loop keep an incref/decref pair each in that loop; util.after_sizes at the
    helper's end removes them."""
    found = _loop_refcounts(njit(_loop_of(_branchy)), np.ones(4), np.ones(10), 10)
    for op in (("incref", "%arg.a.0"), ("decref", "%arg.a.0"), ("incref", "%arg.b.0"), ("decref", "%arg.b.0")):
        assert op in found, found
    assert _loop_refcounts(njit(_loop_of(_branchy_after)), np.ones(4), np.ones(10), 10) == []


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_glm_margin_and_score_loops_hold_no_refcount_calls(dtype):
    # (glm_loss_grad keeps a pair per 8-row block for X, grad and sw on purpose: see _eight_rows)
    n, d = 40, 13
    X = np.ones((n, d), dtype=dtype)
    assert _loop_refcounts(glm.glm_margin, X, np.zeros(d + 1), np.arange(n), np.empty(n)) == []
    assert _loop_refcounts(glm.linear_scores, X, np.zeros(3 * (d + 1)), np.arange(n), np.empty((n, 3))) == []


@pytest.mark.parametrize("wide", [True, False])
def test_softmax_vector_path_loops_hold_no_refcount_calls(wide):
    # the 16-row blocks are calls (see _vector_blocks); an inlined dispatcher between them kept five
    # pairs per block
    n, d, k = 40, 13, 10
    X, y = np.ones((n, d)), np.zeros(n, dtype=np.int64)
    params = np.zeros(k * (d + 1))
    func = softmax._vector_path_wide if wide else softmax._vector_path_narrow
    work = np.zeros(softmax.work_size(k, d))
    assert _loop_refcounts(func, X, y, np.ones(n), params, np.arange(n), np.zeros_like(params), True, work,
                           np.zeros(1)) == []


def test_csr_and_mlp_kernel_loops_hold_no_refcount_calls():
    n, d, k = 6, 5, 3
    indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    indices = np.tile(np.array([0, 3], dtype=np.int64), n)
    data = np.ones(2 * n)
    rows = np.arange(n)
    assert _loop_refcounts(csr.csr_glm_loss_grad, indptr, indices, data, np.zeros(n), np.ones(n), np.zeros(d + 1),
                           rows, np.zeros(d + 1), True, LOGISTIC, np.zeros(1), fastmath=False) == []
    params = np.zeros(k * (d + 1))
    assert _loop_refcounts(csr.csr_softmax_loss_grad_hits, indptr, indices, data, np.zeros(n, dtype=np.int64),
                           np.ones(n), params, rows, np.zeros_like(params), True, k, np.zeros(k), np.zeros(1),
                           fastmath=False) == []
    layout, n_params, _, n_act = mlp.mlp_layout((d, 4, k))
    assert _loop_refcounts(mlp.mlp_loss_grad, np.ones((n, d)), np.zeros(n, dtype=np.int64), np.ones(n),
                           np.zeros(n_params), rows, np.zeros(n_params), True, layout, np.zeros(2 * n_act),
                           np.zeros(1), fastmath=False) == []


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
                       (softmax._softmax16, (y, np.empty(0), rows, 0, 0, False, 16, k, work, oZ, oGB, True, oH))):
        ir = _ir(func.py_func, *args)
        assert not INLINED_REFCOUNT.findall(ir), (func.__name__, sorted(set(INLINED_REFCOUNT.findall(ir))))


def test_glm_margin_has_no_refcount_calls_from_inlined_helpers():
    n, d = 40, 13
    ir = _ir(glm.glm_margin.py_func, np.ones((n, d)), np.zeros(d + 1), np.arange(n), np.empty(n))
    assert not INLINED_REFCOUNT.findall(ir), sorted(set(INLINED_REFCOUNT.findall(ir)))


def test_plan_hash_of_small_domains_keeps_its_lane_width():
    """The epoch plan's rounds for N <= 2^32 (shuffle._hash_chunk32) must stay uint32 arithmetic.

    Numba types uint32 products and shifts as uint64; the casts and masked shift counts in
    _round32 let LLVM keep them 32-bit (vpmulld: eight lanes per AVX2 vector). Widened, the loop
    still vectorises, but in 64-bit lanes (the plan was 0.6 ns per row slower on Zen 3).
    The other form (_rounds32_u64, the choice on Intel cores) must run in 64-bit lanes, with no
    32-bit vector multiply left. Each form in a loop of its own, as in _hash_chunk32 (which holds
    both, chosen by its u64_lanes argument)."""
    from mpidml.kernels import shuffle

    u = np.uint32

    def vector_ops(rounds):
        def hash_rows(raw32, first, m, k0, k1, k2, k3, mask, s1, s2):
            for j in range(m):
                raw32[j] = rounds(np.uint32(first + np.int64(j)), k0, k1, k2, k3, mask, s1, s2)

        fresh = njit(hash_rows)
        fresh(np.empty(2048, np.uint32), np.int64(0), 2048, u(1), u(2), u(3), u(4), u(2**20 - 1), u(10), u(7))
        ir = fresh.inspect_llvm(fresh.signatures[0])
        return set(re.findall(r"\b(mul|lshr) <\d+ x (i\d+)>", ir))

    ops = vector_ops(shuffle._rounds32)
    assert ("mul", "i32") in ops and ("lshr", "i32") in ops, ops
    assert not {op for op in ops if op[1] == "i64"}, ops
    ops = vector_ops(shuffle._rounds32_u64)
    assert ("mul", "i64") in ops and ("lshr", "i64") in ops, ops
    assert ("mul", "i32") not in ops, ops
