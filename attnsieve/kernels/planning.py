"""Fused Triton kernels that planners use to estimate attention cheaply, beside the block pooling
of `attnsieve.kernels.pooling`.

Two estimates, each a few passes over Q/K with outputs of at most O(N·KB) entries, never N×M:

- `antidiagonal_block_scores`: XAttention's strided antidiagonal scores, softmax per strided row,
  summed per (query block, key block); one pass over K per row tile plus a cheap reduction.
- `last_query_stats`: attention of the last queries, summed per block of keys (vertical) and per
  block of diagonal offsets (slash); its one-pass path keeps three float32 values per (last row,
  key block) between launches (about 400 MB at 1M tokens on Llama-3-8B's 32 heads).

Each launcher has a plain-PyTorch twin of the same name and signature in
`attnsieve.kernels.planning_reference`, which defines the semantics; `attnsieve.api` picks between
them and checks the arguments (launchers trust their callers).
Scores are kept in base 2 inside the kernels (log2(e) folded into the scale).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import (
    INTERPRET,
    check_interpreter_dots,
    check_triton_device,
    sm_count,
    tune_timing,
)
from attnsieve.kernels.prefill import LOG2E, unit_last

# XAttention's per-(strided row, key block) scratch is split over launches beyond this size
_SCRATCH_BYTES = 1 << 30

# fmt: off


# ---- (a) XAttention strided antidiagonal block scores -------------------------------------------
def _antidiag_configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_R": 16, "BLOCK_C": 32}, num_warps=4)]
    return [
        triton.Config({"BLOCK_R": r, "BLOCK_C": c}, num_warps=w, num_stages=s)
        for r, c, w, s in ((64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (64, 128, 4, 2),
                           (64, 64, 4, 1), (128, 128, 8, 1))
    ]


def _keep_antidiag(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    # a row tile must hold whole query blocks and a key tile whole key blocks (reshape-reduce)
    rq, rb = kwargs["RQ"], kwargs["RB"]
    kept = [c for c in configs if c.kwargs["BLOCK_R"] % rq == 0 and c.kwargs["BLOCK_C"] % rb == 0]
    if not kept:
        raise ValueError(f"stride: blocks of {rq} x {rb} strided rows/columns exceed the tiles")
    return kept


@triton.autotune(configs=_antidiag_configs(), key=["STRIDE", "HEAD_DIM", "RQ", "RB", "CAUSAL"],
                 prune_configs_by={"early_config_prune": _keep_antidiag}, do_bench=tune_timing)
@triton.jit
def _antidiag_lse_kernel(
    Q, K, LSE_RB, LSE_R, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_xb, stride_xh, stride_xr, stride_yb, stride_yh, H_Q, GROUP, N, M, R, C, KB, ROW0,
    qk_scale,
    STRIDE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, RQ: tl.constexpr,
    RB: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Per strided row: log-sum-exp (base 2) of its scores within every key block, and overall.
    The launch covers strided rows [ROW0, R); the scratch holds them from ROW0 on."""
    i_bh, i_r = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_r = ROW0 + i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    m_r = o_r < R
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    p_q = Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    p_k = K + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    o_pos = M - N + tl.minimum(o_r * STRIDE + STRIDE - 1, N - 1)  # last query of each strided row
    c_end = C
    if CAUSAL:
        last = M - N + tl.minimum(tl.minimum(ROW0 + i_r * BLOCK_R + BLOCK_R, R) * STRIDE, N) - 1
        c_end = tl.where(last >= 0, tl.minimum(C, last // STRIDE + 1), 0)
    b_m = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_R], dtype=tl.float32)
    p_x = LSE_RB + i_b.to(tl.int64) * stride_xb + i_h.to(tl.int64) * stride_xh
    p_x = p_x + (o_r - ROW0).to(tl.int64)[:, None] * stride_xr
    for c0 in range(0, c_end, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        b_s = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
        # a runtime loop, not unrolled: unrolling keeps STRIDE q/k tiles per pipeline stage in
        # shared memory (787 KB at stride 8 on an H100, over its 227 KB)
        for t in range(STRIDE):  # one antidiagonal of every (row, column) S×S tile
            o_qn = o_r * STRIDE + (STRIDE - 1 - t)
            o_kn = o_c * STRIDE + t
            b_q = tl.load(p_q + o_qn.to(tl.int64)[:, None] * stride_qn + o_d[None, :],
                          mask=(o_qn < N)[:, None] & m_d[None, :], other=0.0)
            b_k = tl.load(p_k + o_kn.to(tl.int64)[:, None] * stride_kn + o_d[None, :],
                          mask=(o_kn < M)[:, None] & m_d[None, :], other=0.0)
            b_s = tl.dot(b_q, tl.trans(b_k), b_s)  # [BLOCK_R, BLOCK_C]
        m_s = m_r[:, None] & (o_c < C)[None, :]
        if CAUSAL:
            m_s = m_s & (o_c[None, :] * STRIDE <= o_pos[:, None])
        b_s = tl.where(m_s, b_s * qk_scale, float("-inf"))
        # the tile holds BLOCK_C // RB whole key blocks: reduce each to a log-sum-exp
        b_s3 = tl.reshape(b_s, (BLOCK_R, BLOCK_C // RB, RB))
        b_mb = tl.max(b_s3, 2)  # [BLOCK_R, BLOCK_C // RB]
        b_mb_sub = tl.where(b_mb == float("-inf"), 0.0, b_mb)
        b_lb = tl.sum(tl.exp2(b_s3 - b_mb_sub[:, :, None]), 2)
        # b_lb >= 1 wherever a key is visible (its max contributes exp2(0)); -inf elsewhere
        b_lse_b = tl.where(b_lb > 0, b_mb_sub + tl.log2(tl.maximum(b_lb, 1.0)), float("-inf"))
        o_kb = c0 // RB + tl.arange(0, BLOCK_C // RB)
        tl.store(p_x + o_kb[None, :], b_lse_b, mask=m_r[:, None] & (o_kb < KB)[None, :])
        # fold the block sums into the row's running log-sum-exp (no second pass over the tile)
        b_m_new = tl.maximum(b_m, tl.max(b_mb, 1))
        b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_l = b_l * tl.exp2(b_m - b_m_sub) + tl.sum(b_lb * tl.exp2(b_mb - b_m_sub[:, None]), 1)
        b_m = b_m_new
    b_lse = tl.where(b_l > 0, b_m + tl.log2(tl.maximum(b_l, 1.0)), float("-inf"))
    p_y = LSE_R + i_b.to(tl.int64) * stride_yb + i_h.to(tl.int64) * stride_yh
    tl.store(p_y + (o_r - ROW0), b_lse, mask=m_r)


@triton.jit
def _antidiag_sum_kernel(
    LSE_RB, LSE_R, OUT, stride_xb, stride_xh, stride_xr, stride_yb, stride_yh,
    stride_ob, stride_oh, stride_oq, H_Q, N, M, R, KB, QB0, BLOCK_Q, BLOCK_K,
    CAUSAL: tl.constexpr, RQ: tl.constexpr, BLOCK_KB: tl.constexpr,
):
    """Block score = sum over the query block's strided rows of exp2(lse(row, kb) - lse(row)).
    The launch covers query blocks from QB0 on, whose rows the scratch holds from QB0 * RQ on."""
    i_q, i_bh = QB0 + tl.program_id(0), tl.program_id(1)  # query blocks on x, as the mean pool's
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_r = i_q * RQ + tl.arange(0, RQ)
    m_r = o_r < R
    p_y = LSE_R + i_b.to(tl.int64) * stride_yb + i_h.to(tl.int64) * stride_yh
    b_lse = tl.load(p_y + (o_r - QB0 * RQ), mask=m_r, other=float("-inf"))
    # -inf: the row saw no key, or its sum is NaN (a NaN or +inf score, a NaN softmax that the
    # twin zeroes) while some of its block entries are finite: it adds nothing either way
    m_r = m_r & (b_lse != float("-inf"))
    b_sub = tl.where(m_r, b_lse, 0.0)
    kb_end = KB
    if CAUSAL:
        last = M - N + tl.minimum((i_q + 1) * BLOCK_Q, N) - 1
        kb_end = tl.where(last >= 0, tl.minimum(KB, last // BLOCK_K + 1), 0)
    p_x = LSE_RB + i_b.to(tl.int64) * stride_xb + i_h.to(tl.int64) * stride_xh
    p_x = p_x + (o_r - QB0 * RQ).to(tl.int64)[:, None] * stride_xr
    p_o = OUT + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    p_o = p_o + i_q.to(tl.int64) * stride_oq
    for kb0 in range(0, kb_end, BLOCK_KB):
        o_kb = kb0 + tl.arange(0, BLOCK_KB)
        m_kb = o_kb < kb_end
        b_x = tl.load(p_x + o_kb[None, :], mask=m_r[:, None] & m_kb[None, :], other=float("-inf"))
        tl.store(p_o + o_kb, tl.sum(tl.exp2(b_x - b_sub[:, None]), 0), mask=m_kb)


# ---- (b) last-query attention: vertical (per key block) and slash (per offset block) sums -------
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
    m_k = m_d[None, :]
    if MASKED:
        m_k = m_k & (o_n < M)[:, None]
    b_k = tl.load(p_k + o_n.to(tl.int64)[:, None] * stride_kn + o_d[None, :], mask=m_k, other=0.0)
    b_s = tl.dot(b_q, tl.trans(b_k)) * qk_scale
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
    per head (split-K splits, or key blocks), ROWS rows a program; -inf for a row that saw no
    key, or whose sum is NaN."""
    i_bh, o_l = tl.program_id(0).to(tl.int64), tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    b_top = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    b_total = tl.zeros([ROWS], dtype=tl.float32)
    for s0 in range(0, NUM_PARTS, CHUNK):
        o_s = s0 + tl.arange(0, CHUNK)
        o_p = i_bh * STRIDE_H + o_s[:, None] * BLOCK_L + o_l[None, :]
        m_s = (o_s < NUM_PARTS)[:, None]
        b_m = tl.load(PART_M + o_p, mask=m_s, other=float("-inf"))  # [CHUNK, ROWS]
        b_l = tl.load(PART_L + o_p, mask=m_s, other=0.0)
        b_new = tl.maximum(b_top, tl.max(b_m, 0))
        b_sub = tl.where(b_new == float("-inf"), 0.0, b_new)
        b_total = b_total * tl.exp2(b_top - b_sub) + tl.sum(b_l * tl.exp2(b_m - b_sub[None, :]), 0)
        b_top = b_new
    b_lse = tl.where(b_total > 0, b_top + tl.log2(b_total), float("-inf"))
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
def _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, i_bh, i_t, o_r, o_pos, m_lead, o_d, m_d,
                      stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MASKED: tl.constexpr):
    """One key tile of _last_block_parts_kernel."""
    NB: tl.constexpr = BLOCK_N // BLOCK_K
    o_n = i_t * BLOCK_N + tl.arange(0, BLOCK_N)
    b_s = _last_scores(b_q, p_k, o_n, o_pos, o_d, m_d, stride_kn, M, L, 1, BLOCK_L, MASKED)
    # the max of the raw scores (qk_scale > 0), then scale and shift in one FMA an element:
    # 258 against 268 us at 64K on Llama-3-8B's heads, 130 against 141 on SmolLM2's at 128K
    # (planning47/)
    b_m = tl.max(b_s, 1)
    b_p = tl.exp2(b_s * qk_scale - tl.where(b_m == float("-inf"), 0.0, b_m * qk_scale)[:, None])
    b_m = b_m * qk_scale
    o_part = (i_bh.to(tl.int64) * KB_PAD + i_t * NB + tl.arange(0, NB)[None, :]) * BLOCK_L
    o_part += o_r[:, None]  # [BLOCK_L, NB]
    tl.store(PART_M + o_part, tl.broadcast_to(b_m[:, None], [BLOCK_L, NB]))
    tl.store(TOTAL + o_part, _block_sums(b_p, BLOCK_L, NB, BLOCK_K))
    tl.store(LEAD + o_part, _block_sums(tl.where(m_lead, b_p, 0.0), BLOCK_L, NB, BLOCK_K))


@triton.jit
def _last_block_parts_kernel(
    Q, K, PART_M, LEAD, TOTAL, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    H_Q, GROUP, N, M, L, KB_PAD, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, TILES: tl.constexpr,
):
    """One pass of the last rows over TILES key tiles. Per row and block of BLOCK_K keys: the
    tile's max score (PART_M), and the probability mass relative to it of the block (TOTAL) and
    of its leading keys (LEAD), those on the row's offset block (pos - first key) // BLOCK_K;
    the rest lie on the offset block below. A row's log-sum-exp is known only after every tile,
    so the masses stay relative to each tile's max and are normalised afterwards
    (_last_block_sums_kernel): each score's exp is taken once, where two passes took it twice
    (the three launches 0.27 against 0.72 ms on Llama-3-8B's heads at 64K; 8 warps took 0.44,
    planning41/ to planning43/). Blocks start at multiples of BLOCK_K, so the leading keys are
    the block's columns up to pos % BLOCK_K, in every block. The tiles that every row sees run
    in a loop of their own, without a mask: a branch between the two inside one loop kept
    Triton from pipelining the key loads (at 2 stages 276 against 307 us at 64K on Llama-3-8B's
    heads, 532 against 589 at 128K; 3 stages, a program an SM, 354; loops44/, loops44b/)."""
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
    for i_t in range(i_t0, tl.minimum(t_end, t_seen)):
        _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, i_bh, i_t, o_r, o_pos, m_lead, o_d, m_d,
                          stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L, BLOCK_N, BLOCK_K, False)
    for i_t in range(t_seen, t_end):
        _block_parts_tile(b_q, p_k, PART_M, LEAD, TOTAL, i_bh, i_t, o_r, o_pos, m_lead, o_d, m_d,
                          stride_kn, M, L, KB_PAD, qk_scale, BLOCK_L, BLOCK_N, BLOCK_K, True)


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
    PART_M, LEAD, TOTAL, LSE, VERT, SLASH, M, L, KB, KB_PAD, inv_rows,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr,
):
    """Vertical and slash sums of CHUNK blocks from _last_block_parts_kernel's masses: key block
    s's mass over the rows, and offset block s's: each row's leading mass of key block
    pos // BLOCK_K - s and the rest of key block pos // BLOCK_K - s - 1, the one before it. Each
    output has one writer (no atomics: the sums are the same from run to run)."""
    i_bh = tl.program_id(0).to(tl.int64)
    o_s = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
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
    m_s = o_s < KB
    tl.store(VERT + i_bh * KB + o_s, b_vert * inv_rows, mask=m_s)
    tl.store(SLASH + i_bh * KB + o_s, tl.sum(b_slash, 1) * inv_rows, mask=m_s)


# fmt: on


def antidiagonal_block_scores(
    q: Tensor,
    k: Tensor,
    *,
    stride: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
) -> Tensor:
    """float32 (B, H_q, QB, KB): XAttention's antidiagonal block scores (arXiv 2503.16428).

    q (B, H_q, N, D), k (B, H_kv, M, D). Strided row r pairs the query group [rS, rS+S) read
    backwards with key group c read forwards (one antidiagonal per S×S tile), is softmax-normalised
    over the key groups it sees (logits scaled by ``scale / stride``, as the paper), and its
    probabilities are summed per (query block, key block). Semantics: the twin
    `planning_reference.antidiagonal_block_scores`.

    The kernel makes one pass over K per tile of strided rows, keeping a log-sum-exp per (row, key
    block) in a float32 scratch of B·H_q·(N/S)·KB entries, then a second small kernel turns it
    into block sums. The scratch is kept within 1 GiB by launching per group of KV heads and, where
    one KV head's rows exceed it (17 GB at 1M tokens on Llama-3-8B's heads), per run of query
    blocks. ``block_q / stride`` and
    ``block_k / stride`` must be powers of two.
    """
    check_triton_device("q", q)
    check_interpreter_dots("q", q)
    rq, rb = block_q // stride, block_k // stride
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    g = h_q // h_kv
    q, k = unit_last(q), unit_last(k)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows, cols = triton.cdiv(n, stride), triton.cdiv(m, stride)
    qb, kb = triton.cdiv(n, block_q), triton.cdiv(m, block_k)
    out = torch.zeros(b, h_q, qb, kb, device=q.device, dtype=torch.float32)
    if out.numel() == 0:  # no query, key or batch: nothing to launch (and no scratch to size)
        return out
    # the scratch holds (strided row, key block) entries of a launch's heads: launch per group of
    # KV heads, and per run of query blocks where one KV head's rows alone exceed the bound
    row_bytes = b * g * kb * 4
    kv_per_launch = max(1, _SCRATCH_BYTES // (row_bytes * rows))
    blocks_per_launch = (
        qb if row_bytes * rows <= _SCRATCH_BYTES else max(1, _SCRATCH_BYTES // (row_bytes * rq))
    )
    for h0 in range(0, h_kv, kv_per_launch):
        h1 = min(h_kv, h0 + kv_per_launch)
        qc, kc, oc = q[:, h0 * g : h1 * g], k[:, h0:h1], out[:, h0 * g : h1 * g]
        heads = qc.shape[1]
        chunk = min(rows, blocks_per_launch * rq)
        lse_rb = torch.empty(b, heads, chunk, kb, device=q.device, dtype=torch.float32)
        lse_r = torch.empty(b, heads, chunk, device=q.device, dtype=torch.float32)
        for qb0 in range(0, qb, blocks_per_launch):
            qb1 = min(qb, qb0 + blocks_per_launch)
            row0, row1 = qb0 * rq, min(rows, qb1 * rq)
            _antidiag_lse_kernel[_row_grid(b * heads, row1 - row0)](
                qc, kc, lse_rb, lse_r, *qc.stride()[:3], *kc.stride()[:3], *lse_rb.stride()[:3],
                *lse_r.stride()[:2], heads, g, n, m, row1, cols, kb, row0, scale / stride * LOG2E,
                STRIDE=stride, HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), RQ=rq,
                RB=rb, CAUSAL=causal,
            )  # fmt: skip
            _antidiag_sum_kernel[(qb1 - qb0, b * heads)](
                lse_rb, lse_r, oc, *lse_rb.stride()[:3], *lse_r.stride()[:2], *oc.stride()[:3],
                heads, n, m, rows, kb, qb0, block_q, block_k, CAUSAL=causal, RQ=rq, BLOCK_KB=64,
            )  # fmt: skip
    return out


def last_query_stats(
    q: Tensor,
    k: Tensor,
    *,
    last_q: int,
    block_k: int,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Causal attention of the last ``last_q`` queries as (vertical, slash), float32.

    ``vertical`` (B, H_q, KB): their probability mass per block of ``block_k`` keys, averaged
    over the rows; ``slash`` (B, H_q, KB): per block of diagonal offsets
    [s·block_k, (s+1)·block_k). Twin: `planning_reference.last_query_stats`.

    Blocks of 16-128 keys (a power of two; FlexPrefill's) take one pass over the keys
    (`_last_block_parts_kernel`) that keeps each row's masses per key block relative to the
    key tile's max, then two small launches: the rows' log-sum-exps from those, and the
    normalised sums. Other blocks (vertical_slash's 1: per key and per diagonal) take two passes,
    split-K log-sum-exps then probabilities, summed per offset through a skewing gather.
    """
    check_triton_device("q", q)
    check_interpreter_dots("q", q)
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    kb = triton.cdiv(m, block_k)
    if b * h_q * m == 0:  # no key, query head or batch: nothing to launch
        empty = torch.zeros(b, h_q, kb, device=q.device, dtype=torch.float32)
        return empty, empty.clone()
    q, k = unit_last(q), unit_last(k)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    block_l = max(16, triton.next_power_of_2(last_q))
    common = (*q.stride()[:3], *k.stride()[:3], h_q, h_q // h_kv, n, m, last_q)
    meta = {"HEAD_DIM": d, "BLOCK_D": max(16, triton.next_power_of_2(d)), "BLOCK_L": block_l}
    if block_k in (16, 32, 64, 128):
        return _block_stats(q, k, common, meta, last_q, block_k, scale * LOG2E)
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
    if block_k == 1:
        return vertical, slash
    pad = (0, kb * block_k - m)
    vertical, slash = (
        torch.nn.functional.pad(x, pad).view(b, h_q, kb, block_k).sum(-1) for x in (vertical, slash)
    )
    return vertical, slash


def _block_stats(
    q: Tensor, k: Tensor, common: tuple, meta: dict, last_q: int, block_k: int, qk_scale: float
) -> tuple[Tensor, Tensor]:
    """`last_query_stats` for blocks of 16-128 keys: one pass, then the log-sum-exps, then the
    normalised sums."""
    b, h_q = q.shape[:2]
    m, block_l = k.shape[2], meta["BLOCK_L"]
    block_n = max(64, block_k)  # the key tile: one or more whole blocks
    key_tiles = triton.cdiv(m, block_n)
    kb, kb_pad = triton.cdiv(m, block_k), key_tiles * (block_n // block_k)
    part_m, lead, total = torch.empty(
        3, b * h_q, kb_pad, block_l, device=q.device, dtype=torch.float32
    ).unbind()
    tiles = sum_tiles_per_program(b * h_q, key_tiles, q.device)
    _last_block_parts_kernel[(b * h_q, triton.cdiv(key_tiles, tiles))](
        q, k, part_m, lead, total, *common, kb_pad, qk_scale, **meta, BLOCK_N=block_n,
        BLOCK_K=block_k, TILES=tiles, num_stages=2,
    )  # fmt: skip
    lse = _combine_lse(part_m[:, :kb], total[:, :kb])
    vertical = torch.empty(b, h_q, kb, device=q.device, dtype=torch.float32)
    slash = torch.empty_like(vertical)
    chunk = 4  # blocks a program: 0.27 against 0.32 ms at 32 (Llama-3-8B at 64K, planning43/)
    _last_block_sums_kernel[(b * h_q, triton.cdiv(kb, chunk))](
        part_m, lead, total, lse, vertical, slash, m, last_q, kb, kb_pad, 1.0 / last_q,
        BLOCK_L=block_l, BLOCK_K=block_k, CHUNK=chunk,
    )  # fmt: skip
    return vertical, slash


def _combine_lse(part_m: Tensor, part_l: Tensor) -> Tensor:
    """float32 (B·H_q, BLOCK_L): the rows' base-2 log-sum-exps from partial (max, sum) pairs
    (B·H_q, parts, BLOCK_L), ROWS rows a program."""
    bh, parts, block_l = part_m.shape
    lse = torch.empty(bh, block_l, device=part_m.device, dtype=torch.float32)
    rows = min(16, block_l)
    _combine_lse_kernel[(bh, block_l // rows)](
        part_m, part_l, lse, parts, part_m.stride(0), BLOCK_L=block_l, ROWS=rows, CHUNK=64
    )
    return lse


def sum_tiles_per_program(rows: int, key_tiles: int, device: torch.device) -> int:
    """Key tiles each program of the last-query passes (two-pass sums, one-pass parts) walks
    (``rows`` = batch x query heads): up to 8, so that the query rows are reloaded once per 8
    tiles rather than per tile, but few enough for eight waves of programs over the SMs. On the
    H200 (SmolLM2's 9 heads, flexprefill's replayed plan, with the sums kernel of 2026-11-30)
    8 tiles (144 programs) took 0.310 ms at 8K; 4, 2 and 1 tile (two, four and eight waves)
    0.300, 0.294 and 0.292 ms; at 32K eight waves (4 tiles) 0.540 against 0.555 ms."""
    return max(1, min(8, key_tiles * rows // (8 * sm_count(device))))


def _row_grid(programs: int, rows: int):
    return lambda meta: (programs, triton.cdiv(rows, meta["BLOCK_R"]))
