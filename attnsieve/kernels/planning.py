"""The last queries' attention in Triton, the estimate FlexPrefill and vertical_slash plan from,
beside the block pooling of `attnsieve.kernels.pooling` and XAttention's antidiagonal scores in
`attnsieve.kernels.antidiagonal`.

`last_query_stats`: attention of the last queries, summed per block of keys (vertical) and per
block of diagonal offsets (slash), and optionally the mean score per key block (pooled), never
N×M; its one-pass path keeps three float32 values per (last row, key block) between launches,
four with pooled (about 400 and 530 MB at 1M tokens on Llama-3-8B's 32 heads).
On an sm_90 GPU that pass runs in Gluon for FlexPrefill's 128-key blocks
(`attnsieve.kernels.planning_hopper`).

The launcher has a plain-PyTorch twin of the same name and signature in
`attnsieve.kernels.planning_reference`, which defines the semantics; `attnsieve.api` picks between
them and checks the arguments (the launcher trusts its callers).
Scores are kept in base 2 inside the kernels (log2(e) folded into the scale).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_interpreter_dots, check_triton_device, planning_hopper, sm_count
from attnsieve.kernels.prefill import LOG2E, unit_last

# fmt: off


# Two passes (log-sum-exps, then probabilities) for per-key lines (vertical_slash), one pass and
# two small launches for FlexPrefill's 16-128-key blocks
@triton.jit
def _last_rows(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N, L, o_d, m_d,
               BLOCK_L: tl.constexpr):
    o_t = tl.arange(0, BLOCK_L)
    p_q = Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    return tl.load(p_q + (N - L + o_t).to(tl.int64)[:, None] * stride_qn + o_d[None, :],
                   mask=(o_t < L)[:, None] & m_d[None, :], other=0.0)


@triton.jit
def _last_scores(b_q, p_k, o_n, o_pos, o_d, m_d, stride_kn, M, L, qk_scale,
                 BLOCK_L: tl.constexpr, MASKED: tl.constexpr):
    """[BLOCK_L, BLOCK_N] base-2 causal scores of the last rows vs keys ``o_n``, masked -inf.
    Without MASKED, for a tile of keys that every row sees (all before position M - L + 1): no
    mask, so padding rows past L score 0 and their log-sum-exp must be dropped by the caller."""
    b_s = _raw_scores(b_q, p_k, o_n, o_d, m_d, stride_kn, M, MASKED) * qk_scale
    return _causal(b_s, o_n, o_pos, M, L, BLOCK_L, MASKED)


@triton.jit
def _raw_scores(b_q, p_k, o_n, o_d, m_d, stride_kn, M, MASKED: tl.constexpr):
    """q·k of the last rows (zero past L) and keys ``o_n``; with MASKED, keys past M read 0."""
    m_k = m_d[None, :]
    if MASKED:
        m_k = m_k & (o_n < M)[:, None]
    b_k = tl.load(p_k + o_n.to(tl.int64)[:, None] * stride_kn + o_d[None, :], mask=m_k, other=0.0)
    return tl.dot(b_q, tl.trans(b_k))


@triton.jit
def _causal(b_s, o_n, o_pos, M, L, BLOCK_L: tl.constexpr, MASKED: tl.constexpr):
    """b_s with MASKED: -inf past each row's position, past M and in rows past L."""
    if MASKED:
        m_s = (tl.arange(0, BLOCK_L) < L)[:, None] & (o_n < M)[None, :]
        m_s = m_s & (o_n[None, :] <= o_pos[:, None])
        b_s = tl.where(m_s, b_s, float("-inf"))
    return b_s


@triton.jit
def lse_step(b_s, b_m, b_l):
    """The running (max, sum) of base-2 scores folded with one tile's."""
    b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
    b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
    b_l = b_l * tl.exp2(b_m - b_m_sub) + tl.sum(tl.exp2(b_s - b_m_sub[:, None]), 1)
    return b_m_new, b_l


@triton.jit
def lse_fold(b_m, b_l, b_m_in, b_l_in):
    """The running (max, sum) pair of base-2 scores folded with another (a tile's, a part's)."""
    b_new = tl.maximum(b_m, b_m_in)
    b_sub = tl.where(b_new == float("-inf"), 0.0, b_new)
    return b_new, b_l * tl.exp2(b_m - b_sub) + b_l_in * tl.exp2(b_m_in - b_sub)


@triton.jit
def _seen_by_all(M, L, BLOCK_N: tl.constexpr):
    """The end of the key tiles (from key 0, BLOCK_N wide) that every last row sees: each key
    before M - L + 1, the first row's position + 1. 0 or below where no tile is (plain ints
    where Triton made M and L constants: both 1)."""
    return (M - L + 1) // BLOCK_N * BLOCK_N


@triton.jit
def _last_lse_kernel(
    Q, K, PART_M, PART_L, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    H_Q, GROUP, N, M, L, SPLIT, NUM_SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Partial (max, sum) of the last rows' softmax over one split of the keys (split-K). Key
    tiles that every row sees run without a mask: at about a quarter of the tensor cores' rate
    (0.50 ms for 128K keys on Llama-3-8B's heads, session 24), this kernel and the sums kernel
    are bound by their elementwise work, which the mask was part of. Padding rows past L then
    hold junk, which the sums kernel drops."""
    i_bh, i_s = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    b_q = _last_rows(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N, L, o_d, m_d, BLOCK_L)
    o_pos = M - L + tl.arange(0, BLOCK_L)
    p_k = K + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    b_m = tl.full([BLOCK_L], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_L], dtype=tl.float32)
    n_start, n_end = i_s * SPLIT, tl.minimum(M, i_s * SPLIT + SPLIT)
    n_seen = _seen_by_all(M, L, BLOCK_N)
    for n0 in range(n_start, tl.minimum(n_end, n_seen), BLOCK_N):
        b_s = _last_scores(b_q, p_k, n0 + tl.arange(0, BLOCK_N), o_pos, o_d, m_d, stride_kn, M, L,
                           qk_scale, BLOCK_L, False)
        b_m, b_l = lse_step(b_s, b_m, b_l)
    for n0 in range(tl.maximum(n_start, n_seen), n_end, BLOCK_N):
        b_s = _last_scores(b_q, p_k, n0 + tl.arange(0, BLOCK_N), o_pos, o_d, m_d, stride_kn, M, L,
                           qk_scale, BLOCK_L, True)
        b_m, b_l = lse_step(b_s, b_m, b_l)
    o_out = (i_bh.to(tl.int64) * NUM_SPLITS + i_s) * BLOCK_L + tl.arange(0, BLOCK_L)
    tl.store(PART_M + o_out, b_m)
    tl.store(PART_L + o_out, b_l)


@triton.jit
def _combine_lse_kernel(PART_M, PART_L, LSE, NUM_PARTS, STRIDE_H,
                        BLOCK_L: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr):
    """Base-2 log-sum-exp of the last rows from partial (max, sum) pairs, [NUM_PARTS, BLOCK_L]
    per head (split-K splits, or the one-pass programs' runs of key tiles), ROWS rows a program;
    -inf for a row that saw no key, or whose sum is NaN."""
    i_bh, o_l = tl.program_id(0).to(tl.int64), tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    # per lane: each chunk's loads are issued before the one before it is folded in, and no
    # chunk waits on a reduction across threads, where there are more parts than CHUNK (a fold
    # per chunk waited on both: 11.6 us at 64K on Llama-3-8B's heads, when its 512 key blocks'
    # pairs were eight chunks a program)
    b_top = tl.full([CHUNK, ROWS], float("-inf"), dtype=tl.float32)
    b_total = tl.zeros([CHUNK, ROWS], dtype=tl.float32)
    o_p = i_bh * STRIDE_H + tl.arange(0, CHUNK)[:, None] * BLOCK_L + o_l[None, :]
    m_s = (tl.arange(0, CHUNK) < NUM_PARTS)[:, None]
    b_m = tl.load(PART_M + o_p, mask=m_s, other=float("-inf"))  # [CHUNK, ROWS]
    b_l = tl.load(PART_L + o_p, mask=m_s, other=0.0)
    for s0 in range(CHUNK, NUM_PARTS + CHUNK, CHUNK):
        o_p += CHUNK * BLOCK_L
        m_s = (s0 + tl.arange(0, CHUNK) < NUM_PARTS)[:, None]
        b_m_next = tl.load(PART_M + o_p, mask=m_s, other=float("-inf"))
        b_l_next = tl.load(PART_L + o_p, mask=m_s, other=0.0)
        b_top, b_total = lse_fold(b_top, b_total, b_m, b_l)
        b_m, b_l = b_m_next, b_l_next
    b_max = tl.max(b_top, 0)
    b_sub = tl.where(b_max == float("-inf"), 0.0, b_max)
    b_total = tl.sum(b_total * tl.exp2(b_top - b_sub[None, :]), 0)
    b_lse = tl.where(b_total > 0, b_max + tl.log2(b_total), float("-inf"))
    tl.store(LSE + i_bh * BLOCK_L + o_l, b_lse)


@triton.jit
def _last_sums_kernel(
    Q, K, LSE, VERT, SLASH, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    H_Q, GROUP, N, M, L, qk_scale, inv_rows,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    TILES: tl.constexpr,
):
    """Probabilities of TILES key tiles: sums per key (vertical) and per diagonal offset
    (slash), the second pass after the rows' log-sum-exp. Unlike the one-pass kernel's, its
    loop keeps the branch: split into two loops it took 1.69 against 1.50 ms at 128K on
    Llama-3-8B's heads, at 2 or 3 stages (loops44b/)."""
    i_bh, i_n0 = tl.program_id(0), tl.program_id(1) * TILES
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    # the query rows and their lse are loaded once per program, not once per key tile
    b_q = _last_rows(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N, L, o_d, m_d, BLOCK_L)
    o_pos = M - L + tl.arange(0, BLOCK_L)
    p_k = K + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    b_lse = tl.load(LSE + i_bh.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L))
    m_row = _rows_with_softmax(b_lse, L, BLOCK_L)
    b_lse = tl.where(m_row, b_lse, 0.0)
    p_slash = SLASH + i_bh.to(tl.int64) * M
    n_seen = _seen_by_all(M, L, BLOCK_N)
    for i_n in range(i_n0, tl.minimum(i_n0 + TILES, tl.cdiv(M, BLOCK_N))):
        n0 = i_n * BLOCK_N
        o_n = n0 + tl.arange(0, BLOCK_N)
        if n0 < n_seen:  # a tile every row sees: no mask (padding rows are dropped by m_row)
            b_s = _last_scores(b_q, p_k, o_n, o_pos, o_d, m_d, stride_kn, M, L, qk_scale, BLOCK_L,
                               False)
        else:
            b_s = _last_scores(b_q, p_k, o_n, o_pos, o_d, m_d, stride_kn, M, L, qk_scale, BLOCK_L,
                               True)
        b_p = tl.where(m_row[:, None], tl.exp2(b_s - b_lse[:, None]), 0.0)  # [L, BLOCK_N]
        tl.store(VERT + i_bh.to(tl.int64) * M + o_n, tl.sum(b_p, 0) * inv_rows, mask=o_n < M)
        # the tile meets offsets M - 1 - n0 - j, j < BLOCK_N + L - 1, and row r meets offset j
        # at column r + j - (L - 1): a skewing gather turns every offset into a column
        for j0 in tl.static_range(0, BLOCK_N + BLOCK_L - 1, BLOCK_N):
            col = tl.arange(0, BLOCK_L)[:, None] + (j0 + tl.arange(0, BLOCK_N))[None, :] - L + 1
            inside = (col >= 0) & (col < BLOCK_N)
            b_g = tl.gather(b_p, tl.where(inside, col, 0), 1)
            mass = tl.sum(tl.where(inside, b_g, 0.0), 0)  # [BLOCK_N]
            o_off = M - 1 - n0 - (j0 + tl.arange(0, BLOCK_N))
            tl.atomic_add(p_slash + o_off, mass * inv_rows, mask=(o_off >= 0) & (mass > 0))


@triton.jit
def _rows_with_softmax(b_lse, L, BLOCK_L: tl.constexpr):
    """The last rows whose probabilities count: not padding past L (a padding row's log-sum-exp,
    from tiles run without a mask, is junk), and not -inf: the row saw no key, or its sum was
    NaN (a NaN or +inf score: a NaN softmax that the twin zeroes), which _combine_lse_kernel
    makes -inf."""
    return (b_lse > float("-inf")) & (tl.arange(0, BLOCK_L) < L)


@triton.jit
def _block_sums(b_x, BLOCK_L: tl.constexpr, NB: tl.constexpr, BLOCK_K: tl.constexpr):
    """[BLOCK_L, NB]: the row sums of b_x [BLOCK_L, NB * BLOCK_K] per block of BLOCK_K columns."""
    if NB == 1:
        return tl.sum(b_x, 1)[:, None]
    return tl.sum(tl.reshape(b_x, [BLOCK_L, NB, BLOCK_K]), 2)


@triton.jit
def _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, RAW, i_bh, i_t, o_r, o_pos, m_lead, o_d,
                      m_d, stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MASKED: tl.constexpr,
                      POOLED: tl.constexpr):
    """One key tile of _last_block_parts_kernel; returns its rows' (max, total), base 2."""
    NB: tl.constexpr = BLOCK_N // BLOCK_K
    o_n = i_t * BLOCK_N + tl.arange(0, BLOCK_N)
    b_s = _raw_scores(b_q, p_k, o_n, o_d, m_d, stride_kn, M, MASKED)  # 0 past L and past M
    o_part = (i_bh.to(tl.int64) * KB_PAD + i_t * NB + tl.arange(0, NB)[None, :]) * BLOCK_L
    o_part += o_r[:, None]  # [BLOCK_L, NB]
    if POOLED:
        tl.store(RAW + o_part, _block_sums(b_s, BLOCK_L, NB, BLOCK_K))
    b_s = _causal(b_s, o_n, o_pos, M, L, BLOCK_L, MASKED)
    # the max of the raw scores (qk_scale > 0), then scale and shift in one FMA an element:
    # 258 against 268 us at 64K on Llama-3-8B's heads, 130 against 141 on SmolLM2's at 128K
    # (planning47/)
    b_m = tl.max(b_s, 1)
    b_p = tl.exp2(b_s * qk_scale - tl.where(b_m == float("-inf"), 0.0, b_m * qk_scale)[:, None])
    b_m = b_m * qk_scale
    b_total = _block_sums(b_p, BLOCK_L, NB, BLOCK_K)
    tl.store(PART_M + o_part, tl.broadcast_to(b_m[:, None], [BLOCK_L, NB]))
    tl.store(TOTAL + o_part, b_total)
    tl.store(LEAD + o_part, _block_sums(tl.where(m_lead, b_p, 0.0), BLOCK_L, NB, BLOCK_K))
    return b_m, tl.sum(b_total, 1)


@triton.jit
def _last_block_parts_kernel(
    Q, K, PART_M, LEAD, TOTAL, RAW, ROWS_M, ROWS_L, stride_qb, stride_qh, stride_qn, stride_kb,
    stride_kh, stride_kn, H_Q, GROUP, N, M, L, KB_PAD, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, TILES: tl.constexpr, POOLED: tl.constexpr,
):
    """One pass of the last rows over TILES key tiles. Per row and block of BLOCK_K keys: the
    tile's max score (PART_M), and the probability mass relative to it of the block (TOTAL) and
    of its leading keys (LEAD), those on the row's offset block (pos - first key) // BLOCK_K;
    the rest lie on the offset block below. With POOLED also the sum of its raw scores q·k, unmasked
    (RAW), for the pooled estimate. A row's log-sum-exp is known only after every tile, so the
    masses stay relative to each tile's max and are normalised afterwards (_last_block_sums_kernel)
    by the rows' log-sum-exps, which come from each program's (max, sum) a row over its tiles
    (ROWS_M, ROWS_L): each score's exp is taken once, where two passes took it twice (the three
    launches 0.27 against 0.72 ms on Llama-3-8B's heads at 64K; 8 warps took 0.44, planning41/ to
    planning43/). Blocks start at multiples of BLOCK_K, so the leading keys are the block's columns
    up to pos % BLOCK_K, in every block. The tiles that every row sees run in a loop of their own,
    without a mask: a branch between the two inside one loop kept Triton from pipelining the key
    loads (at 2 stages 276 against 307 us at 64K on Llama-3-8B's heads, 532 against 589 at 128K; 3
    stages, a program an SM, 354; loops44/, loops44b/)."""
    i_bh, i_t0 = tl.program_id(0), tl.program_id(1) * TILES
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    b_q = _last_rows(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N, L, o_d, m_d, BLOCK_L)
    o_r = tl.arange(0, BLOCK_L)
    o_pos = M - L + o_r
    m_lead = (tl.arange(0, BLOCK_N) % BLOCK_K)[None, :] <= (tl.maximum(o_pos, 0) % BLOCK_K)[:, None]
    p_k = K + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    t_end = tl.minimum(i_t0 + TILES, tl.cdiv(M, BLOCK_N))
    t_seen = tl.maximum(_seen_by_all(M, L, BLOCK_N) // BLOCK_N, i_t0)
    r_m = tl.full([BLOCK_L], float("-inf"), dtype=tl.float32)
    r_l = tl.zeros([BLOCK_L], dtype=tl.float32)
    for i_t in range(i_t0, tl.minimum(t_end, t_seen)):
        t_m, t_l = _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, RAW, i_bh, i_t, o_r, o_pos,
                                     m_lead, o_d, m_d, stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L,
                                     BLOCK_N, BLOCK_K, False, POOLED)
        r_m, r_l = lse_fold(r_m, r_l, t_m, t_l)
    for i_t in range(t_seen, t_end):
        t_m, t_l = _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, RAW, i_bh, i_t, o_r, o_pos,
                                     m_lead, o_d, m_d, stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L,
                                     BLOCK_N, BLOCK_K, True, POOLED)
        r_m, r_l = lse_fold(r_m, r_l, t_m, t_l)
    o_rows = (i_bh.to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * BLOCK_L + o_r
    tl.store(ROWS_M + o_rows, r_m)
    tl.store(ROWS_L + o_rows, r_l)


@triton.jit
def _block_weights(PART_M, b_lse, m_row, o_kb, i_bh, KB, KB_PAD, BLOCK_L: tl.constexpr):
    """At key blocks o_kb [CHUNK, BLOCK_L] (any: out of range weighs 0): the offsets into the
    parts, where they are valid, and each row's weight there, 2^(tile max - log-sum-exp)."""
    m_kb = (o_kb >= 0) & (o_kb < KB) & m_row[None, :]
    o_p = (i_bh * KB_PAD + tl.where(m_kb, o_kb, 0)) * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]
    b_m = tl.load(PART_M + o_p, mask=m_kb, other=float("-inf"))
    return o_p, m_kb, tl.where(m_kb, tl.exp2(b_m - b_lse[None, :]), 0.0)


@triton.jit
def _last_block_sums_kernel(
    PART_M, LEAD, TOTAL, RAW, LSE, VERT, SLASH, POOL, M, L, KB, KB_PAD, inv_rows, pool_scale,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, POOLED: tl.constexpr,
):
    """Vertical and slash sums of CHUNK blocks from _last_block_parts_kernel's masses: key block
    s's mass over the rows, and offset block s's: each row's leading mass of key block
    pos // BLOCK_K - s and the rest of key block pos // BLOCK_K - s - 1, the one before it. Each
    output has one writer (no atomics: the sums are the same from run to run). With POOLED, key
    block s's raw scores summed over the rows, × pool_scale / its keys (POOL)."""
    i_bh = tl.program_id(0).to(tl.int64)
    o_s = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    m_s = o_s < KB
    if POOLED:  # rows past L hold 0 (their queries are zero)
        o_raw = (i_bh * KB_PAD + o_s[:, None]) * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]
        b_raw = tl.sum(tl.load(RAW + o_raw, mask=m_s[:, None], other=0.0), 1)
        keys = tl.minimum(M - o_s * BLOCK_K, BLOCK_K)
        tl.store(POOL + i_bh * KB + o_s, b_raw * pool_scale / keys, mask=m_s)
    b_lse = tl.load(LSE + i_bh * BLOCK_L + tl.arange(0, BLOCK_L))
    m_row = _rows_with_softmax(b_lse, L, BLOCK_L)
    b_lse = tl.where(m_row, b_lse, 0.0)
    o_vert = tl.broadcast_to(o_s[:, None], [CHUNK, BLOCK_L])
    o_p, m_p, b_w = _block_weights(PART_M, b_lse, m_row, o_vert, i_bh, KB, KB_PAD, BLOCK_L)
    b_vert = tl.sum(b_w * tl.load(TOTAL + o_p, mask=m_p, other=0.0), 1)
    o_lead = tl.maximum(M - L + tl.arange(0, BLOCK_L), 0)[None, :] // BLOCK_K - o_s[:, None]
    o_p, m_p, b_w = _block_weights(PART_M, b_lse, m_row, o_lead, i_bh, KB, KB_PAD, BLOCK_L)
    b_slash = b_w * tl.load(LEAD + o_p, mask=m_p, other=0.0)
    o_p, m_p, b_w = _block_weights(PART_M, b_lse, m_row, o_lead - 1, i_bh, KB, KB_PAD, BLOCK_L)
    b_rest = tl.load(TOTAL + o_p, mask=m_p, other=0.0) - tl.load(LEAD + o_p, mask=m_p, other=0.0)
    b_slash += b_w * tl.maximum(b_rest, 0.0)  # rounding must not make a mass negative
    tl.store(VERT + i_bh * KB + o_s, b_vert * inv_rows, mask=m_s)
    tl.store(SLASH + i_bh * KB + o_s, tl.sum(b_slash, 1) * inv_rows, mask=m_s)


# fmt: on


def last_query_stats(
    q: Tensor,
    k: Tensor,
    *,
    last_q: int,
    block_k: int,
    scale: float | None = None,
    pooled: bool = False,
) -> tuple[Tensor, ...]:
    """Causal attention of the last ``last_q`` queries as (vertical, slash), float32, and with
    ``pooled`` their mean scaled score per key block.

    ``vertical`` (B, H_q, KB): their probability mass per block of ``block_k`` keys, averaged
    over the rows; ``slash`` (B, H_q, KB): per block of diagonal offsets
    [s·block_k, (s+1)·block_k); ``pooled`` (B, H_q, KB): q·k × scale averaged over the rows and
    the block's keys, unmasked. Twin: `planning_reference.last_query_stats`.

    Blocks of 16-128 keys (a power of two; FlexPrefill's) take one pass over the keys
    (`_last_block_parts_kernel`, or its Gluon twin on sm_90 where `planning_hopper.fits`) that keeps
    each row's masses per key block relative to the key tile's max (and the block's raw score sum,
    for ``pooled``) and each program's (max, sum) a row over its tiles, then two small launches: the
    rows' log-sum-exps from those pairs, and the normalised sums. Other blocks (vertical_slash's 1:
    per key and per diagonal) take two passes, split-K log-sum-exps then probabilities, summed per
    offset through a skewing gather; there ``pooled`` is the mean last query against
    `pooling.block_mean_pool`'s keys.
    """
    check_triton_device("q", q)
    check_interpreter_dots("q", q)
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    kb = triton.cdiv(m, block_k)
    if b * h_q * m == 0:  # no key, query head or batch: nothing to launch
        empty = torch.zeros(b, h_q, kb, device=q.device, dtype=torch.float32)
        return (empty, empty.clone(), empty.clone())[: 3 if pooled else 2]
    q, k = unit_last(q), unit_last(k)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    block_l = max(16, triton.next_power_of_2(last_q))
    common = (*q.stride()[:3], *k.stride()[:3], h_q, h_q // h_kv, n, m, last_q)
    meta = {"HEAD_DIM": d, "BLOCK_D": max(16, triton.next_power_of_2(d)), "BLOCK_L": block_l}
    if block_k in (16, 32, 64, 128):
        return _block_stats(q, k, common, meta, last_q, block_k, scale, pooled)
    block_n = 64
    split = block_n * max(1, triton.cdiv(triton.cdiv(m, block_n), 32))  # ≤ 32 splits per head
    splits = triton.cdiv(m, split)
    part_m = torch.empty(b * h_q, splits, block_l, device=q.device, dtype=torch.float32)
    part_l = torch.empty_like(part_m)
    _last_lse_kernel[(b * h_q, splits)](
        q, k, part_m, part_l, *common, split, splits, scale * LOG2E, **meta, BLOCK_N=block_n
    )
    lse = _combine_lse(part_m, part_l)
    vertical = torch.empty(b, h_q, m, device=q.device, dtype=torch.float32)
    slash = torch.zeros(b, h_q, m, device=q.device, dtype=torch.float32)
    tiles = sum_tiles_per_program(b * h_q, triton.cdiv(m, block_n), q.device)
    _last_sums_kernel[(b * h_q, triton.cdiv(m, block_n * tiles))](
        q, k, lse, vertical, slash, *common, scale * LOG2E, 1.0 / last_q, **meta, BLOCK_N=block_n,
        TILES=tiles,
    )  # fmt: skip
    if block_k != 1:
        pad = (0, kb * block_k - m)
        vertical, slash = (
            torch.nn.functional.pad(x, pad).view(b, h_q, kb, block_k).sum(-1)
            for x in (vertical, slash)
        )
    if not pooled:
        return vertical, slash
    from attnsieve.kernels.pooling import block_mean_pool  # pooling imports this module

    q_mean = q[:, :, n - last_q :].float().mean(2).view(b, h_kv, h_q // h_kv, d)
    k_mean = block_mean_pool(k, block_k)
    return vertical, slash, (q_mean @ k_mean.transpose(-1, -2) * scale).view(b, h_q, kb)


def _block_stats(
    q: Tensor,
    k: Tensor,
    common: tuple,
    meta: dict,
    last_q: int,
    block_k: int,
    scale: float,
    pooled: bool,
) -> tuple[Tensor, ...]:
    """`last_query_stats` for blocks of 16-128 keys: one pass, then the rows' log-sum-exps from
    its programs' (max, sum) pairs, then the normalised sums."""
    b, h_q, d = q.shape[0], q.shape[1], q.shape[3]
    m, block_l = k.shape[2], meta["BLOCK_L"]
    block_n = max(64, block_k)  # the key tile: one or more whole blocks
    key_tiles = triton.cdiv(m, block_n)
    kb, kb_pad = triton.cdiv(m, block_k), key_tiles * (block_n // block_k)
    parts = torch.empty(
        4 if pooled else 3, b * h_q, kb_pad, block_l, device=q.device, dtype=torch.float32
    ).unbind()
    part_m, lead, total = parts[:3]
    raw = parts[3] if pooled else total  # never written nor read without pooled
    tiles = sum_tiles_per_program(b * h_q, key_tiles, q.device)
    hopper = planning_hopper.fits(q, k, block_k, block_l)
    if hopper:
        programs = b * h_q * (block_l // planning_hopper.BLOCK_R)  # per chunk of keys
        tiles = planning_hopper.program_tiles(d, programs, key_tiles, tiles, q.device)
    num_parts = triton.cdiv(key_tiles, tiles)
    rows_m, rows_l = torch.empty(
        2, b * h_q, num_parts, block_l, device=q.device, dtype=torch.float32
    ).unbind()
    qk_scale = scale * LOG2E
    if hopper:
        planning_hopper.block_parts(q, k, parts, (rows_m, rows_l), last_q, tiles, qk_scale)
    else:
        _last_block_parts_kernel[(b * h_q, num_parts)](
            q, k, part_m, lead, total, raw, rows_m, rows_l, *common, kb_pad, qk_scale, **meta,
            BLOCK_N=block_n, BLOCK_K=block_k, TILES=tiles, POOLED=pooled, num_stages=2,
        )  # fmt: skip
    # from the programs' pairs, not the blocks' (the Gluon pass's 4 against 256 a row at 32K on
    # Llama-3-8B's heads). Folded in each sums program instead, its 4-8 pairs a row made that
    # kernel 12.3 and 21.8 us slower at 32K and 64K, where this launch over the 256-512 blocks'
    # pairs took 5.4 and 9.1 (h200/fold50/b/)
    lse = _combine_lse(rows_m, rows_l)
    out = torch.empty(3 if pooled else 2, b, h_q, kb, device=q.device, dtype=torch.float32)
    vertical, slash = out[0], out[1]
    chunk = 4  # blocks a program: 0.27 against 0.32 ms at 32 (Llama-3-8B at 64K, planning43/)
    _last_block_sums_kernel[(b * h_q, triton.cdiv(kb, chunk))](
        part_m, lead, total, raw, lse, vertical, slash, out[-1], m, last_q, kb, kb_pad,
        1.0 / last_q, scale / last_q, BLOCK_L=block_l, BLOCK_K=block_k, CHUNK=chunk,
        POOLED=pooled,
    )  # fmt: skip
    return tuple(out.unbind())


def _combine_lse(part_m: Tensor, part_l: Tensor) -> Tensor:
    """float32 (B·H_q, BLOCK_L): the rows' base-2 log-sum-exps from partial (max, sum) pairs
    (B·H_q, parts, BLOCK_L), ROWS rows a program."""
    bh, parts, block_l = part_m.shape
    lse = torch.empty(bh, block_l, device=part_m.device, dtype=torch.float32)
    rows = min(16, block_l)
    # lanes sized to the pairs: 4-16 a row would leave 48-60 of 64 masked (not measured apart)
    chunk = min(64, triton.next_power_of_2(parts))
    _combine_lse_kernel[(bh, block_l // rows)](
        part_m, part_l, lse, parts, part_m.stride(0), BLOCK_L=block_l, ROWS=rows, CHUNK=chunk
    )
    return lse


def sum_tiles_per_program(rows: int, key_tiles: int, device: torch.device) -> int:
    """Key tiles each program of the last-query passes (two-pass sums, one-pass parts; the
    Gluon pass derives its own from it, `planning_hopper.program_tiles`) walks
    (``rows`` = batch x query heads): up to 8, so that the query rows are reloaded once per 8
    tiles rather than per tile, but few enough for eight waves of programs over the SMs. On the
    H200 (SmolLM2's 9 heads, flexprefill's replayed plan, with the sums kernel of 2026-11-30)
    8 tiles (144 programs) took 0.310 ms at 8K; 4, 2 and 1 tile (two, four and eight waves)
    0.300, 0.294 and 0.292 ms; at 32K eight waves (4 tiles) 0.540 against 0.555 ms."""
    return max(1, min(8, key_tiles * rows // (8 * sm_count(device))))
