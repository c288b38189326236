"""A keyed, counter-based permutation of the rows, evaluated one row at a time.

Mini-batch training takes, at step s of an epoch, the rows whose position in that epoch's
random order is in ``[s*B, (s+1)*B)``. Drawing the whole order (``rng.permutation(N)``) costs
every rank O(N) per epoch although it holds only N/P rows. Here the order is a bijection
``pos = position(row)`` of ``[0, N)`` that any rank evaluates for just its own rows, so an
epoch's plan costs O(N/P) per rank and the batches are still those of one global order
(the trained model does not depend on the number of ranks).

The bijection: a few rounds of operations that are each invertible on ``[0, 2^bits)``
(``2^bits >= N``, the next power of two): xor with a round key, multiplication by an odd
constant modulo ``2^bits``, and ``x ^= x >> shift`` (Kensler's hash-permutation construction,
as used for correlated multi-jittered sampling). A value that lands in ``[N, 2^bits)`` is
mapped again until it falls in ``[0, N)`` ("cycle walking"), which keeps it a bijection of
``[0, N)``; fewer than two rounds of walking are needed on average because ``2^bits < 2N``.
The round keys come from (seed, epoch) through splitmix64, so the order of an epoch is a
pure function of the seed and the epoch number (checkpoints store nothing else).
"""
import numpy as np
from numba import njit

from .util import TWO52, TWO52_BITS, _i64_as_f64, prefetch_l2, x86_other_than_zen

N_ROUNDS = 4
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# Odd multipliers for the rounds (any odd number is a bijection modulo 2^bits).
_MUL_A = np.uint64(0xE170893D)
_MUL_B = np.uint64(0x0929EB3F)
_MUL_A32 = np.uint32(0xE170893D)  # the same multipliers, for the uint32 rounds
_MUL_B32 = np.uint32(0x0929EB3F)
_TWO52_BITS = np.int64(TWO52_BITS)  # see util.TWO52_BITS


def _splitmix64(state: int) -> tuple[int, int]:
    """One splitmix64 step on Python ints: (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def shuffle_keys(seed: int, epoch: int) -> np.ndarray:
    """uint64 (N_ROUNDS,) round keys of the order of ``epoch`` for ``seed`` (both >= 0)."""
    state = ((int(seed) & 0xFFFFFFFF) << 32 | (int(epoch) & 0xFFFFFFFF)) ^ 0x6D706964_6D6C5348  # "mpidmlSH"
    keys = np.empty(N_ROUNDS, dtype=np.uint64)
    for r in range(N_ROUNDS):
        state, keys[r] = _splitmix64(state)
    return keys


def domain_bits(n_rows: int) -> int:
    """Smallest ``bits`` with ``2**bits >= n_rows`` (at least 1)."""
    return max(1, int(n_rows - 1).bit_length())


@njit(cache=True, nogil=True)
def row_position(row, n_rows, bits, keys):
    """Position (int64) of global row ``row`` in the epoch order given by ``keys``.

    row: int64 in [0, n_rows); bits: domain_bits(n_rows); keys: uint64 (N_ROUNDS,).
    A bijection of [0, n_rows) for every key.
    """
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    s1 = np.uint64(max(1, bits // 2))
    s2 = np.uint64(max(1, (bits + 2) // 3))
    n = np.uint64(n_rows)
    x = np.uint64(row)
    while True:
        for r in range(keys.size):
            x ^= keys[r] & mask
            x = (x * _MUL_A) & mask
            x ^= x >> s1
            x = (x * _MUL_B) & mask
            x ^= x >> s2
        if x < n:
            return np.int64(x)


@njit(cache=True, nogil=True, inline="always")
def _round(x, key, mask, s1, s2):
    """One round of :func:`row_position` on a uint64 (key already masked): invertible on
    [0, 2^bits). For domains of more than 32 bits (see _round32 below)."""
    x ^= key
    x = (x * _MUL_A) & mask
    x ^= x >> s1
    x = (x * _MUL_B) & mask
    return x ^ (x >> s2)


@njit(cache=True, nogil=True, inline="always")
def _rounds(x, k0, k1, k2, k3, mask, s1, s2):
    """The N_ROUNDS (= 4) rounds of :func:`row_position` on one value, without the walking:
    straight-line uint64 arithmetic, so a loop over rows vectorises. k0..k3: the round keys
    already masked."""
    x = _round(x, k0, mask, s1, s2)
    x = _round(x, k1, mask, s1, s2)
    x = _round(x, k2, mask, s1, s2)
    return _round(x, k3, mask, s1, s2)


_SHIFT_MASK32 = np.uint32(31)


@njit(cache=True, nogil=True, inline="always")
def _round32(x, key, mask, s1, s2):
    """:func:`_round` for a domain of at most 32 bits, in uint32 (all arguments uint32).

    Every operation of a round keeps x below 2^bits <= 2^32, and the low 32 bits of a product
    depend only on the low 32 bits of its factors, so the uint32 round (the 64-bit odd
    multipliers' low halves, products wrapped modulo 2^32, then masked) gives the same value as
    the uint64 one. Eight lanes per AVX2 vector (vpmulld) instead of four: the hashing of the
    plan from 1.9 to 1.1 ns per row on Zen 3. ``np.uint32(...)`` after each product and shift,
    and the shift counts masked to 31 (s1, s2 <= 16 here, so a no-op), keep Numba's typing
    (which widens uint32 arithmetic to uint64) from turning the shifts into 64-bit ones."""
    x ^= key
    x = np.uint32(x * _MUL_A32) & mask
    x ^= np.uint32(x >> (s1 & _SHIFT_MASK32))
    x = np.uint32(x * _MUL_B32) & mask
    return x ^ np.uint32(x >> (s2 & _SHIFT_MASK32))


@njit(cache=True, nogil=True, inline="always")
def _rounds32(x, k0, k1, k2, k3, mask, s1, s2):
    """:func:`_rounds` in uint32 (see _round32)."""
    x = _round32(x, k0, mask, s1, s2)
    x = _round32(x, k1, mask, s1, s2)
    x = _round32(x, k2, mask, s1, s2)
    return _round32(x, k3, mask, s1, s2)


@njit(cache=True, nogil=True, inline="always")
def _rounds32_u64(x, k0, k1, k2, k3, mask, s1, s2):
    """:func:`_rounds32` (same arguments, same value) computed in uint64 lanes, each product
    32 x 32 -> 64 bits of the low halves (vpmuludq) instead of a 32-bit one (vpmulld).

    Which is faster depends on the CPU: vpmulld has a 10-cycle latency on Intel cores (3 on
    AMD Zen), and each row's rounds are one chain of eight multiplies. On an Intel Xeon
    (Emerald Rapids, AVX-512) the contiguous rows' rounds took 1.08 vs 2.24 ns per row and the
    whole plan 4.4 vs 6.1 (N = 1e6); on Zen 3 the uint32 lanes were faster (hashing 1.1 vs 1.9).
    The values are equal: x < 2^32 and the multipliers' low halves give the same low 32 bits,
    and every value stays below 2^bits <= 2^32 after its mask."""
    v = np.uint64(x)
    mask64, t1, t2 = np.uint64(mask), np.uint64(s1), np.uint64(s2)
    v = _round_lo32(v, np.uint64(k0), mask64, t1, t2)
    v = _round_lo32(v, np.uint64(k1), mask64, t1, t2)
    v = _round_lo32(v, np.uint64(k2), mask64, t1, t2)
    return np.uint32(_round_lo32(v, np.uint64(k3), mask64, t1, t2))


_LO32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _round_lo32(x, key, mask, s1, s2):
    """:func:`_round` for x, key, mask < 2^32: the products from the low halves only (one
    vpmuludq per four or eight lanes)."""
    x ^= key
    x = ((x & _LO32) * _MUL_A) & mask
    x ^= x >> s1
    x = ((x & _LO32) * _MUL_B) & mask
    return x ^ (x >> s2)


# The plan's rounds for N <= 2^32 run faster in uint64 lanes (:func:`_rounds32_u64`) on x86 CPUs
# other than AMD's Zen; elsewhere uint32 lanes (AMD Zen: measured; ARM's NEON has no 64-bit lane
# multiply).
ROUNDS_IN_U64_LANES = x86_other_than_zen()

PLAN_CHUNK = 2048  # rows hashed at a time: the chunk's values and walk list stay in L1


@njit(cache=True, nogil=True, inline="always")
def _walk_list(raw, m, n, walk):
    """walk[:w] = the j < m with raw[j] >= n (listed without a branch); returns w."""
    w = 0
    for j in range(m):
        walk[w] = j
        w += raw[j] >= n
    return w


@njit(cache=True, nogil=True, inline="always")
def _collect(raw, walk, w, vals):
    """vals[t] = raw[walk[t]] for t < w: the walking values side by side, so that their rounds
    run in vectors (a loop over raw[walk[t]] is scalar code)."""
    for t in range(w):
        vals[t] = raw[np.uint64(walk[t])]


@njit(cache=True, nogil=True, inline="always")
def _put_back(raw, vals, walk, w, n):
    """Writes each vals[t] back to raw[walk[t]] (the last write of an entry is its final
    value) and keeps in vals[:left], walk[:left] those still >= n (in place, no branch);
    returns left."""
    left = 0
    for t in range(w):
        v = vals[t]
        i = np.uint64(walk[t])
        raw[i] = v
        vals[left] = v
        walk[left] = i
        left += v >= n
    return left


@njit(cache=True, nogil=True, inline="always")
def _hash_chunk(gids, first, c0, m, n, k0, k1, k2, k3, mask, s1, s2, raw, walk):
    """raw[:m] = row_position's values of the chunk's rows (gids[c0:c0+m], or first + 0..m-1
    when gids is empty), for a domain of more than 32 bits (uint64; see _hash_chunk32): every
    row through the rounds (no branch, vectorised), then the values that landed in [N, 2^bits)
    listed without a branch, copied side by side (raw's second half) and walked on together, one
    more round each over the shrinking list in vectors (a share f = 1 - N / 2^bits < 1/2 of the
    rows walks, f^2 twice, ...), each round's values put back and the still walking kept. In
    place (rounds on raw[walk[t]]) the walking rounds were scalar code: 9.8 vs 5.2 ns per row for
    the whole plan at N = 2^20 + 1, 6.5 vs 4.4 at N = 1.4e6, 3.6 vs 3.4 at N = 1e6 (Zen 3)."""
    if gids.size:
        for j in range(m):
            raw[j] = _rounds(np.uint64(gids[c0 + j]), k0, k1, k2, k3, mask, s1, s2)
    else:
        for j in range(m):
            raw[j] = _rounds(first + np.uint64(j), k0, k1, k2, k3, mask, s1, s2)
    w = _walk_list(raw, m, n, walk)
    vals = raw[PLAN_CHUNK:2 * PLAN_CHUNK]  # plan_scratch's second half
    _collect(raw, walk, w, vals)
    while w > 0:
        for t in range(w):
            vals[t] = _rounds(vals[t], k0, k1, k2, k3, mask, s1, s2)
        w = _put_back(raw, vals, walk, w, n)


@njit(cache=True, nogil=True)
def _hash_chunk32(gids, first, c0, m, n, k0, k1, k2, k3, mask, s1, s2, raw32, walk, u64_lanes):
    """_hash_chunk for a domain of at most 32 bits (N <= 2^32): values in raw32 (uint32), the
    rounds in uint32 lanes (see _round32) or, with u64_lanes, in uint64 lanes (_rounds32_u64,
    the same values; epoch_batches passes ROUNDS_IN_U64_LANES); k0..k3, mask, s1, s2 uint32,
    first int64, n uint64 (N = 2^32 does not fit a uint32). Not inlined: inlined into
    epoch_batches, its rounds were not vectorised (scalar imul; 0.6 ns per row slower)."""
    if gids.size and u64_lanes:
        for j in range(m):
            raw32[j] = _rounds32_u64(np.uint32(gids[c0 + j]), k0, k1, k2, k3, mask, s1, s2)
    elif gids.size:
        for j in range(m):
            raw32[j] = _rounds32(np.uint32(gids[c0 + j]), k0, k1, k2, k3, mask, s1, s2)
    elif u64_lanes:
        for j in range(m):
            raw32[j] = _rounds32_u64(np.uint32(first + np.int64(j)), k0, k1, k2, k3, mask, s1, s2)
    else:
        for j in range(m):
            raw32[j] = _rounds32(np.uint32(first + np.int64(j)), k0, k1, k2, k3, mask, s1, s2)
    w = _walk_list(raw32, m, n, walk)
    vals = raw32[PLAN_CHUNK:2 * PLAN_CHUNK]  # right after the chunk's uint32 values (raw's first half)
    _collect(raw32, walk, w, vals)
    while w > 0:
        if u64_lanes:
            for t in range(w):
                vals[t] = _rounds32_u64(vals[t], k0, k1, k2, k3, mask, s1, s2)
        else:
            for t in range(w):
                vals[t] = _rounds32(vals[t], k0, k1, k2, k3, mask, s1, s2)
        w = _put_back(raw32, vals, walk, w, n)


def plan_scratch():
    """(raw, walk): the scratch arrays :func:`epoch_batches` needs, uint64 (2 PLAN_CHUNK,) (the
    chunk's values, then the walking ones side by side) and int64 (PLAN_CHUNK,)."""
    return np.empty(2 * PLAN_CHUNK, dtype=np.uint64), np.empty(PLAN_CHUNK, dtype=np.int64)


@njit(cache=True, nogil=True)
def _scatter_rows(j0, j1, n_local, step_of, order, starts):
    """The counting sort's scatter for rows j0 .. j1-1 (see :func:`plan_advance`): ``starts[s]``
    holds the next free slot of step s on entry and walks on; writes ``order`` (rows by step,
    ascending within a step when the rows come in ascending order).

    Its own (not inlined) function: inside epoch_batches the loop reloaded its array pointers
    from the stack on every row (register pressure from the rest of that function). Indices as
    uint64: Numba adds the length to a negative signed index (three more instructions per
    access); the steps and slots here are never negative. The two took the plan from 5.5 to 4.1
    ns per row on Zen 3 (500 000 rows of N = 1e6, B = 4096, after a 64 MiB sweep; 4.9 with
    the function alone), 5.5 to 4.1 with two ranks planning at once, 11.9 to 10.5 at
    N = 2^20 + 1 (half the values walk), 6.4 to 4.9 at B = 256.
    """
    last = np.uint64(max(0, n_local - 1))
    for j in range(j0, j1):
        s = np.uint64(step_of[np.uint64(j)])
        p = np.uint64(starts[s])
        order[p] = j
        starts[s] = p + np.uint64(1)
        prefetch_l2(order, min(p + np.uint64(32), last))  # 4 lines ahead in this step's stream


# The phases of a batch plan's build (plan_state()[0]); plan_state()[1] is the phase's cursor.
PLAN_HASH, PLAN_PREFIX, PLAN_SCATTER, PLAN_SHIFT, PLAN_DONE = 0, 1, 2, 3, 4


def plan_state() -> np.ndarray:
    """int64 (2,) [phase, cursor]: where :func:`plan_advance` is in a build (PLAN_DONE: none
    under way). :func:`plan_begin` starts one."""
    return np.array([PLAN_DONE, 0], dtype=np.int64)


@njit(cache=True, nogil=True)
def plan_begin(starts, state):
    """Start a build of a batch plan into ``starts`` (and its ``order``): zeroes the step counts
    and sets ``state`` (:func:`plan_state`) to the first row of the hashing phase."""
    for s in range(starts.size):
        starts[s] = 0
    state[0] = PLAN_HASH
    state[1] = 0


@njit(cache=True, nogil=True)
def plan_advance(gids, lo, n_local, n_rows, batch, bits, keys, identity, step_of, order, starts, raw, walk, state,
                 budget):
    """Go on with the build :func:`plan_begin` started, for at most about ``budget`` rows' worth
    of work (a row hashed or scattered, or a step's count summed or moved, is one unit; at least
    one unit when not done); returns True when the plan is complete. Arguments as for
    :func:`epoch_batches` (every call of one build must pass the same ones), plus ``state``.

    The build is :func:`epoch_batches`' in slices: its result does not depend on the budgets.
    The phases (state[0]), each resumed at its cursor (state[1]): hashing (each row's position,
    step, and the steps' counts, PLAN_CHUNK rows at a time or fewer), the counts' prefix sum,
    the scatter of the rows by step (:func:`_scatter_rows`), and the move of each step's end
    back to its start. A step loop calls it with small budgets while it waits for the slower
    rank (:mod:`mpidml.parallel.steploop`): the next epoch's plan, built in time that is
    otherwise spent spinning.
    """
    if state[0] == PLAN_DONE:
        return True
    if keys.size != N_ROUNDS:
        raise ValueError("plan_advance: keys must have N_ROUNDS entries")
    if raw.size < 2 * PLAN_CHUNK or walk.size < PLAN_CHUNK:
        raise ValueError("plan_advance: raw and walk need 2 PLAN_CHUNK and PLAN_CHUNK entries (plan_scratch)")
    if step_of.size < n_local or order.size < n_local:
        raise ValueError("plan_advance: step_of and order need n_local entries")
    steps = starts.size - 1
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    s1 = np.uint64(max(1, bits // 2))
    s2 = np.uint64(max(1, (bits + 2) // 3))
    k0, k1, k2, k3 = keys[0] & mask, keys[1] & mask, keys[2] & mask, keys[3] & mask
    n = np.uint64(n_rows)
    narrow = bits <= 32  # positions and rounds in uint32 (raw's memory as raw32)
    raw32 = raw.view(np.uint32)
    k0_32, k1_32, k2_32, k3_32 = np.uint32(k0), np.uint32(k1), np.uint32(k2), np.uint32(k3)
    mask32, s1_32, s2_32 = np.uint32(mask), np.uint32(s1), np.uint32(s2)
    inv_batch = 1.0 / batch
    batch_f = float(batch)
    phase, cur = state[0], state[1]
    while phase != PLAN_DONE and budget > 0:
        if phase == PLAN_HASH:
            c0 = cur
            m = min(n_local - c0, PLAN_CHUNK, budget)
            if identity and narrow:
                for j in range(m):
                    raw32[j] = np.uint32(gids[c0 + j] if gids.size else lo + c0 + j)
            elif identity:
                for j in range(m):
                    raw[j] = np.uint64(gids[c0 + j] if gids.size else lo + c0 + j)
            elif narrow:
                _hash_chunk32(gids, np.int64(lo + c0), c0, m, n, k0_32, k1_32, k2_32, k3_32, mask32, s1_32, s2_32,
                              raw32, walk, ROUNDS_IN_U64_LANES)
            else:
                _hash_chunk(gids, np.uint64(lo + c0), c0, m, n, k0, k1, k2, k3, mask, s1, s2, raw, walk)
            if narrow:
                # pos, B <= 2^32: the step in float64 vectors (AVX2 has no int64 <-> float64 vector
                # conversions; this took the plan from 7.7 to 6.3 ns per row on Zen 3). float(pos) and
                # (s + 1) B are exact; pos * (1/B) is off by < pos 2^-52 < 1/B, so its floor is the step
                # or, at a multiple of B, one less (B = 49: pos = 49, 98, ...): one correction, upward.
                for j in range(m):
                    posf = _i64_as_f64(np.int64(raw32[j]) | _TWO52_BITS) - TWO52  # float(pos), see util.TWO52_BITS
                    sf = np.floor(posf * inv_batch)
                    step_of[np.uint64(c0 + j)] = sf + 1.0 if (sf + 1.0) * batch_f <= posf else sf
            else:
                for j in range(m):
                    pos = np.int64(raw[j])
                    s = np.int64(float(pos) * inv_batch)
                    step_of[np.uint64(c0 + j)] = s - (s * batch > pos) + ((s + 1) * batch <= pos)
            for j in range(c0, c0 + m):
                starts[np.uint64(step_of[np.uint64(j)]) + np.uint64(1)] += 1  # unsigned: see _scatter_rows
            cur = c0 + m
            budget -= max(m, 1)
            if cur >= n_local:
                phase, cur = PLAN_PREFIX, 0
        elif phase == PLAN_PREFIX:  # starts[s] = first slot of step s
            e = min(steps, cur + budget)
            for s in range(cur, e):
                starts[s + 1] += starts[s]
            budget -= max(e - cur, 1)
            cur = e
            if cur >= steps:
                phase, cur = PLAN_SCATTER, 0
        elif phase == PLAN_SCATTER:  # starts[s] walks to the end of step s
            e = min(n_local, cur + budget)
            _scatter_rows(cur, e, n_local, step_of, order, starts)
            budget -= max(e - cur, 1)
            cur = e
            if cur >= n_local:
                phase, cur = PLAN_SHIFT, steps
        else:  # PLAN_SHIFT: back to first slots, from the last step down
            e = max(0, cur - budget)
            for s in range(cur, e, -1):
                starts[s] = starts[s - 1]
            budget -= max(cur - e, 1)
            cur = e
            if cur == 0:
                starts[0] = 0
                phase = PLAN_DONE
    state[0] = phase
    state[1] = cur
    return phase == PLAN_DONE


@njit(cache=True, nogil=True)
def epoch_batches(gids, lo, n_local, n_rows, batch, bits, keys, identity, step_of, order, starts, raw, walk):
    """This rank's rows of every step of one epoch, grouped by step.

    gids: int64 (n_local,) the global ids of the local rows, or size 0 for the block
    ``lo .. lo + n_local - 1``; n_rows: global N; batch: global batch size B; bits, keys: the
    epoch's order (see :func:`row_position`; keys.size must be N_ROUNDS); identity: True for
    no shuffle (position = row). step_of: int32 or int64 (n_local,) scratch (int32 needs
    ceil(N / B) < 2^31); raw, walk: :func:`plan_scratch`. Writes ``order`` int64 (n_local,):
    local row offsets, those of step 0 first, then step 1, ... (ascending within a step), and
    ``starts`` int64 (steps + 1,), steps = ceil(N / B): step s takes
    ``order[starts[s]:starts[s+1]]``. O(n_local + steps); no allocation but a 2-entry state.
    The whole build at once: :func:`plan_begin` and :func:`plan_advance` without a budget.

    The positions are :func:`row_position`'s, PLAN_CHUNK rows at a time so that everything
    but the final scatter stays in L1: every row of the chunk through the rounds (no branch,
    vectorised); the values that landed in [N, 2^bits) listed without a branch and walked on
    together, one more round each over the shrinking list (a share f = 1 - N / 2^bits < 1/2
    of the rows walks, f^2 twice, ...: vector code instead of a mispredicted branch and scalar
    rounds per walking row); the step pos // B from a float64 reciprocal, corrected by one
    (no integer division; in float64 vectors while N <= 2^32). Then a stable counting sort by
    step, the lines of ``order`` that the ~steps interleaved write streams reach next requested
    ahead (too many streams for the hardware prefetcher). Side by side with the former one-pass-per-stage
    version (500 000 rows of 1e6, B = 4096, right after a pass over 512 MiB as in training):
    7.7 vs 11.3 ns per row; N = 1 048 577 (half the rows walk) 11.9 vs 26.2, N = 1.4e6 10.0 vs
    15.7. 32 x 32 -> 64-bit multiplies in the uint64 rounds while N <= 2^32 then took it from
    7.0-7.1 to 5.2-5.3 ns per row at N = 1e6 (15 rounds each, two orders; 11.2 -> 10.0 at
    N = 2^20 + 1, 8.9 -> 8.1 at 1.4e6; the parts at N = 1e6 before: hashing 2.7, walk list 0.6,
    step 1.0, count 0.7, scatter 2.2-3.0). On an AVX2 CPU (AMD Zen 3): 7.7 ns per row, 6.3 with
    the step in float64 vectors, 5.5 with the rounds in uint32 lanes (:func:`_round32`; on Intel
    cores the uint64 lanes of :func:`_rounds32_u64` instead, see ROUNDS_IN_U64_LANES; three
    runs of 30 builds alternating with the uint64 rounds: min 5.51-5.56 vs 6.30-6.33; the
    hashing alone 1.1 vs 1.9). Tried and slower there: the walk list from 32-bit masks (3.2 vs
    3.0 ns per row for hashing + list), the scatter in two interleaved halves or blocks of 64,
    and each chunk scattered at once into fixed-capacity step slots (7.9 vs 5.6). The scatter
    in a function of its own with unsigned indices (:func:`_scatter_rows`) then took the
    5.5 to 4.1, and uint64 indices wherever LLVM cannot tell that a signed one is >= 0 (the
    chunk's offset c0 + j, the walk list's entries, the steps) to 3.6 (N = 2^20 + 1: 10.5 to
    9.1; N = 1.4e6: 7.2 to 6.8 with the walk list's alone). Tried on AMD Zen 4 and not kept:
    the walking values found by the count loop (a branch, or none) instead of a list of their
    own, with step_of int32 or uint16: 3.0-3.1 vs 2.75 ns per row (min of 21, after a 64 MiB
    sweep).
    """
    state = np.empty(2, dtype=np.int64)
    plan_begin(starts, state)
    # the budget an int64, not a literal: one compiled plan_advance for this call, EpochPlan's from
    # Python and the step loop's (a Literal[int] argument is a specialisation of its own: ~2 s)
    plan_advance(gids, lo, n_local, n_rows, batch, bits, keys, identity, step_of, order, starts, raw, walk, state,
                 np.int64(2**62))


def epoch_order(n_rows: int, seed: int, epoch: int, identity: bool = False) -> np.ndarray:
    """int64 (n_rows,): the global row at each position of the epoch's order (O(N); for
    references and tests: training never builds it)."""
    keys, bits = shuffle_keys(seed, epoch), domain_bits(n_rows)
    out = np.empty(n_rows, dtype=np.int64)
    _fill_order(n_rows, bits, keys, identity, out)
    return out


@njit(cache=True, nogil=True)
def _fill_order(n_rows, bits, keys, identity, out):
    for g in range(n_rows):
        out[g if identity else row_position(g, n_rows, bits, keys)] = g
