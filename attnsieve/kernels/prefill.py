"""Block-sparse prefill attention in Triton: one online softmax over a Layout's blocks, columns and
spans.

One program handles BLOCK_M query rows of one query head (GQA: it reads KV head h // g, never a
repeated copy). It walks the sorted key blocks of its query block (``layout.block_idx``) in two
phases, blocks every row sees in full (no mask math) and blocks that cross the causal diagonal or
the end of the keys (masked), skipping blocks entirely above the diagonal; then it gathers the
layout's key columns BLOCK_N at a time; then it walks each key span [start, end) BLOCK_N keys at a
time from its (unaligned) start, whole tiles that every row sees without a mask, the span's tail
and tiles across the diagonal masked. On Hopper, K/V block tiles and whole span tiles come through
TMA descriptors (a TMA box may start at any row).
A NaN or inf in a value row that causality hides leaves its mark in every row of the accumulator
(0 * NaN is NaN); the fast pass marks such rows with a NaN lse, and a second launch after every
causal pass reruns the marked tiles exactly (masked value rows zeroed, on small tiles), so hidden
keys never reach an output row. Kept out of the fast kernel, the rerun costs the common case no
registers; the second launch costs it a few microseconds. The plain-PyTorch twin is
`attnsieve.kernels.prefill_reference.attention_reference`.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.tools.tensor_descriptor import TensorDescriptor

from attnsieve.checks import check_bool, check_out, check_qkv, check_scale
from attnsieve.kernels import (
    INTERPRET,
    capability,
    check_interpreter_dots,
    check_triton_device,
    tune_timing,
)
from attnsieve.layout import Layout, check_layout

LOG2E = 1.4426950408889634
# The interpreter (CPU tests) runs one config; it halves the layout blocks so tests also cover the
# sub-tiled loops (BLOCK_M < block_q, BLOCK_N < block_k).
# query rows whose marks one program of the repair pass reads: few programs, so the common case
# (nothing marked) costs microseconds although each program is sized for the rerun (the
# interpreter's small test shapes cover several programs per head with 256)
_REPAIR_ROWS = 256 if INTERPRET else 2048
# dense dispatch target, in priority order (measured on H100: benchmarks/NOTES-kernels.md)
# cuDNN first (SDPA's default order tries flash first), then the rest, so no input is refused
_SDPA_BACKENDS = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


# Kernel argument lists stay dense (one role per line) rather than one name per line.
# fmt: off
@triton.jit
def _load_kv(
    DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, m_n, o_d, stride_kn, stride_vn,
    MASKED: tl.constexpr, USE_TMA: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """K, V rows ``o_n`` [BLOCK_N] (start + arange under USE_TMA), zero where ``m_n`` is off."""
    if USE_TMA:  # bulk tensor copy of rows [start, start + BLOCK_N); rows past M come back zero
        b_k = DK.load([i_b, i_hkv, start, 0]).reshape(BLOCK_N, HEAD_DIM)
        b_v = DV.load([i_b, i_hkv, start, 0]).reshape(BLOCK_N, HEAD_DIM)
    else:
        o_kn = o_n.to(tl.int64)[:, None]
        if MASKED:
            b_k = tl.load(p_k + o_kn * stride_kn + o_d[None, :], mask=m_n[:, None], other=0.0)
            b_v = tl.load(p_v + o_kn * stride_vn + o_d[None, :], mask=m_n[:, None], other=0.0)
        else:
            b_k = tl.load(p_k + o_kn * stride_kn + o_d[None, :])
            b_v = tl.load(p_v + o_kn * stride_vn + o_d[None, :])
    return b_k, b_v


@triton.jit
def _attend_tile(
    b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n, m_n, o_qpos, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, EXACT: tl.constexpr,
):
    """Fold keys ``b_k`` / values ``b_v`` at positions ``o_n`` into the running softmax of b_q."""
    b_s = tl.dot(b_q, tl.trans(b_k))  # [BLOCK_M, BLOCK_N]
    if MASKED:
        m_s = m_n[None, :]
        if CAUSAL:
            m_s = m_s & (o_n[None, :] <= o_qpos[:, None])
        b_s = tl.where(m_s, b_s * qk_scale, float("-inf"))
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
        # a row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN
        b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_p = tl.exp2(b_s - b_m_sub[:, None])
    else:
        # every key of the tile is visible to every row: scale folded into one FMA per score
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1) * qk_scale)
        b_m_sub = b_m_new
        b_p = tl.exp2(b_s * qk_scale - b_m_sub[:, None])
    b_alpha = tl.exp2(b_m - b_m_sub)
    b_l = b_l * b_alpha + tl.sum(b_p, 1)
    b_acc = b_acc * b_alpha[:, None]
    if MASKED and CAUSAL and EXACT:  # only causality hides keys that were loaded (others: 0)
        # 0 * NaN is NaN: a non-finite value row is multiplied as zeros, and only the rows that
        # give it weight are flagged (they come out NaN). The fast pass skips this: reading V into
        # registers made the compiler copy it back to shared memory and wait on the MMA in every
        # masked tile (20-30 % of low-density layouts' time on the H200)
        b_vf = b_v.to(tl.float32)
        m_bad = tl.max(((b_vf != b_vf) | (tl.abs(b_vf) == float("inf"))).to(tl.int32), 1)
        b_v = tl.where(m_bad[:, None] > 0, 0.0, b_v).to(b_v.dtype)
        b_nan = b_nan | (tl.max(tl.where((b_p > 0) & (m_bad[None, :] > 0), 1, 0), 1) > 0)
    b_acc = tl.dot(b_p.to(b_v.dtype), b_v, b_acc)  # [BLOCK_M, HEAD_DIM]
    return b_acc, b_l, b_m_new, b_nan


@triton.jit
def table_tile(p_idx, i_blk, it, n_tiles, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """First key of tile ``it`` of a block list walked BLOCK_N keys at a time, and the block index
    of tile it + 1. Each index is loaded one iteration ahead (``i_blk``: tile it's, from the last
    call or the loop's prologue), so no K/V copy waits on a load of its own iteration: the
    pipeliner then keeps as many tiles in flight as on an in-order walk (12 against 10 TMA copies
    at 3 stages, compiled for sm_90)."""
    SUBS: tl.constexpr = BLOCK_K // BLOCK_N
    start = i_blk * BLOCK_K + (it % SUBS) * BLOCK_N
    return start, tl.load(p_idx + (it + 1) // SUBS, mask=it + 1 < n_tiles, other=0)


@triton.jit
def _sweep(
    DK, DV, p_k, p_v, p_idx, n_full, n_vis, i_b, i_hkv, i_b64, i_hl, i_qb, b_q, o_d, o_qpos,
    kv_end, full_end, qk_scale, M, CIDX, CCNT, SSTART, SEND, SCNT, stride_kn, stride_vn,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    HEAD_DIM: tl.constexpr, BLOCK_K: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_COLUMNS: tl.constexpr, HAS_SPANS: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXACT: tl.constexpr,
):
    """One pass over the query block's keys: (acc, l, m, nan). EXACT repairs masked tiles that hold
    non-finite values (rows they are hidden from stay finite); without it such a tile leaves NaN
    in every row of the accumulator, which the kernel detects and then reruns the pass EXACT."""
    b_acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    b_nan = tl.zeros([BLOCK_M], dtype=tl.int1)  # rows that weighted a non-finite value row

    SUBS: tl.constexpr = BLOCK_K // BLOCK_N  # BLOCK_N-wide tiles per layout block
    o_t = tl.arange(0, BLOCK_N)
    n_tiles = n_vis * SUBS
    i_blk = tl.load(p_idx, mask=n_tiles > 0, other=0)  # tile 0's block (see table_tile)
    for it in range(0, n_full * SUBS):
        start, i_blk = table_tile(p_idx, i_blk, it, n_tiles, BLOCK_K, BLOCK_N)
        o_n = start + o_t
        b_k, b_v = _load_kv(DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, o_n < M, o_d,
                            stride_kn, stride_vn, False, USE_TMA, BLOCK_N, HEAD_DIM)
        b_acc, b_l, b_m, b_nan = _attend_tile(b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n, o_n < M,
                                              o_qpos, qk_scale, False, CAUSAL, EXACT)
    for it in range(n_full * SUBS, n_tiles):
        start, i_blk = table_tile(p_idx, i_blk, it, n_tiles, BLOCK_K, BLOCK_N)
        o_n = start + o_t
        b_k, b_v = _load_kv(DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, o_n < M, o_d,
                            stride_kn, stride_vn, True, USE_TMA, BLOCK_N, HEAD_DIM)
        b_acc, b_l, b_m, b_nan = _attend_tile(b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n, o_n < M,
                                              o_qpos, qk_scale, True, CAUSAL, EXACT)
    if HAS_COLUMNS:
        p_col = (CIDX + i_b64 * stride_xb + i_hl.to(tl.int64) * stride_xh
                 + i_qb.to(tl.int64) * stride_xq)  # int64: as the block lists
        n_col = tl.load(CCNT + i_b * stride_yb + i_hl * stride_yh + i_qb * stride_yq)
        for start in range(0, n_col, BLOCK_N):
            m_c = start + o_t < n_col
            o_n = tl.load(p_col + start + o_t, mask=m_c, other=0)  # gathered key tokens
            b_k, b_v = _load_kv(DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, m_c, o_d,
                                stride_kn, stride_vn, True, False, BLOCK_N, HEAD_DIM)
            b_acc, b_l, b_m, b_nan = _attend_tile(b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n, m_c,
                                                  o_qpos, qk_scale, True, CAUSAL, EXACT)
    if HAS_SPANS:
        # span start/end share strides (the launcher makes sure); int64: B·H·QB·S may pass 2^31
        o_s = i_b64 * stride_sb + i_hl.to(tl.int64) * stride_sh + i_qb.to(tl.int64) * stride_sq
        n_span = tl.load(SCNT + i_b * stride_tb + i_hl * stride_th + i_qb * stride_tq)
        for i_s in range(0, n_span):
            s_lo = tl.load(SSTART + o_s + i_s)
            s_hi = tl.minimum(tl.load(SEND + o_s + i_s), kv_end)  # keys past kv_end: all hidden
            # whole tiles before full_end are seen by every row: no mask math (a span is mostly
            # such tiles; at head dim 64 the mask costs as much as the MMAs)
            s_clear = s_lo + tl.maximum(tl.minimum(s_hi, full_end) - s_lo, 0) // BLOCK_N * BLOCK_N
            for start in range(s_lo, s_clear, BLOCK_N):
                o_n = start + o_t
                b_k, b_v = _load_kv(DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, o_n < M, o_d,
                                    stride_kn, stride_vn, False, USE_TMA, BLOCK_N, HEAD_DIM)
                b_acc, b_l, b_m, b_nan = _attend_tile(b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n,
                                                      o_n < M, o_qpos, qk_scale, False, CAUSAL,
                                                      EXACT)
            for start in range(s_clear, s_hi, BLOCK_N):  # the span's tail and the diagonal
                o_n = start + o_t
                m_n = o_n < s_hi
                b_k, b_v = _load_kv(DK, DV, p_k, p_v, i_b, i_hkv, start, o_n, m_n, o_d,
                                    stride_kn, stride_vn, True, False, BLOCK_N, HEAD_DIM)
                b_acc, b_l, b_m, b_nan = _attend_tile(b_acc, b_l, b_m, b_nan, b_q, b_k, b_v, o_n,
                                                      m_n, o_qpos, qk_scale, True, CAUSAL, EXACT)
    return b_acc, b_l, b_m, b_nan


@triton.jit
def _query_tile(
    Q, K, V, DK, DV, Out, LSE, BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT,
    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
    stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    H_Q, GROUP, LAYOUT_DIV, N, M, qk_scale, i_m, i_bh,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_COLUMNS: tl.constexpr, HAS_SPANS: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXACT: tl.constexpr,
):
    """Rows [i_m * BLOCK_M, +BLOCK_M) of query head i_bh % H_Q: one pass, then out and lse."""
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    i_hkv = i_h // GROUP  # native GQA: K/V are indexed, never repeated
    i_hl = i_h // LAYOUT_DIV  # layout head: 0, i_h // GROUP or i_h
    i_qb = i_m // (BLOCK_Q // BLOCK_M)

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    o_qpos = o_m + (M - N)  # bottom-right aligned absolute query positions
    q_lo = i_m * BLOCK_M
    q_hi = tl.minimum(q_lo + BLOCK_M, N) - 1
    if CAUSAL:
        kv_end = tl.minimum(M, q_hi + (M - N) + 1)  # keys past kv_end are hidden from every row
        full_end = tl.minimum(M, q_lo + (M - N) + 1)  # keys before full_end are seen by every row
    else:
        kv_end = M
        full_end = M

    i_b64, i_hkv64 = i_b.to(tl.int64), i_hkv.to(tl.int64)
    p_q = Q + i_b64 * stride_qb + i_h.to(tl.int64) * stride_qh
    p_k = K + i_b64 * stride_kb + i_hkv64 * stride_kh
    p_v = V + i_b64 * stride_vb + i_hkv64 * stride_vh
    o_q = o_m.to(tl.int64)[:, None] * stride_qn + o_d[None, :]
    b_q = tl.load(p_q + o_q, mask=m_m[:, None], other=0.0)  # [BLOCK_M, HEAD_DIM]

    # block list of this query block; batch/head broadcast through zero strides and LAYOUT_DIV
    # int64: block lists as wide as the key blocks pass 2^31 entries (block_topk at 1M tokens)
    p_idx = (BIDX + i_b64 * stride_ib + i_hl.to(tl.int64) * stride_ih
             + i_qb.to(tl.int64) * stride_iq)
    n_vis = tl.load(BCNT + i_b * stride_cb + i_hl * stride_ch + i_qb * stride_cq)
    # The list is sorted, so blocks hidden from every row (past kv_end) form a suffix, and blocks
    # that need the mask the suffix before it; both are short, so scan them from the end.
    while (n_vis > 0) & (tl.load(p_idx + n_vis - 1, mask=n_vis > 0, other=0) * BLOCK_K >= kv_end):
        n_vis -= 1
    n_full = n_vis
    while (n_full > 0) & (
        (tl.load(p_idx + n_full - 1, mask=n_full > 0, other=0) + 1) * BLOCK_K > full_end
    ):
        n_full -= 1

    b_acc, b_l, b_m, b_nan = _sweep(
        DK, DV, p_k, p_v, p_idx, n_full, n_vis, i_b, i_hkv, i_b64, i_hl, i_qb, b_q, o_d, o_qpos,
        kv_end, full_end, qk_scale, M, CIDX, CCNT, SSTART, SEND, SCNT, stride_kn, stride_vn,
        stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
        stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
        HEAD_DIM, BLOCK_K, CAUSAL, HAS_COLUMNS, HAS_SPANS, USE_TMA, BLOCK_M, BLOCK_N, EXACT,
    )
    # a non-finite value row in an unmasked tile (seen by every row) leaves NaN or inf in some
    # columns of the accumulator only: the row must come out NaN whole. b_bad is 0 in a finite
    # row and NaN in the others (x * 0 is NaN for NaN and inf), so adding it to the row's
    # normaliser flags the row with no select an element; one reciprocal a row instead of a
    # division an element. Where a program folds only a few tiles this epilogue is a real share
    # of its time: 16K keys at 2 % density 0.264 -> 0.243 ms (regression/epilogue19/).
    b_bad = tl.sum(b_acc * 0.0, 1)
    if EXACT:
        b_bad += tl.where(b_nan, float("nan"), 0.0)
    # rows that saw no key: out 0 and lse -inf, never 0/0
    b_empty = b_l == 0.0
    b_o = b_acc * (1.0 / tl.where(b_empty, 1.0, b_l) + b_bad)[:, None]
    p_o = Out + i_b64 * stride_ob + i_h.to(tl.int64) * stride_oh
    o_o = o_m.to(tl.int64)[:, None] * stride_on + o_d[None, :]
    tl.store(p_o + o_o, b_o.to(Out.dtype.element_ty), mask=m_m[:, None])
    b_lse = (b_m + tl.log2(tl.where(b_empty, 1.0, b_l))) * 0.6931471805599453  # x ln 2: natural
    b_lse = tl.where(b_empty, float("-inf"), b_lse)
    if CAUSAL and not EXACT:
        # One in a masked tile (the fast pass multiplies hidden value rows by 0, and 0 * NaN is
        # NaN) also reaches rows it is hidden from. That is rare, so the fast pass only marks
        # such rows with a NaN lse, and `_repair_kernel` reruns their tiles exactly.
        b_lse += b_bad
    tl.store(LSE + i_bh.to(tl.int64) * N + o_m, b_lse, mask=m_m)


# layout strides and lengths vary per call: specializing on their divisibility only recompiles
@triton.jit(do_not_specialize=[
    "stride_ib", "stride_ih", "stride_iq", "stride_cb", "stride_ch", "stride_cq", "stride_xb",
    "stride_xh", "stride_xq", "stride_yb", "stride_yh", "stride_yq", "stride_sb", "stride_sh",
    "stride_sq", "stride_tb", "stride_th", "stride_tq", "N", "M", "LEN_BUCKET",
])
def _sparse_fwd_kernel(
    Q, K, V, DK, DV, Out, LSE, BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT,
    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
    stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    H_Q, GROUP, LAYOUT_DIV, N, M, qk_scale, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_COLUMNS: tl.constexpr, HAS_SPANS: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # heaviest query tiles (last rows under causal masking) launch first: fewer idle SMs at the end
    _query_tile(
        Q, K, V, DK, DV, Out, LSE, BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT,
        stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
        stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
        stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
        stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
        H_Q, GROUP, LAYOUT_DIV, N, M, qk_scale,
        tl.num_programs(0) - 1 - tl.program_id(0), tl.program_id(1),
        HEAD_DIM, BLOCK_Q, BLOCK_K, CAUSAL, HAS_COLUMNS, HAS_SPANS, USE_TMA, BLOCK_M, BLOCK_N,
        False,
    )


@triton.jit(do_not_specialize=[
    "stride_ib", "stride_ih", "stride_iq", "stride_cb", "stride_ch", "stride_cq", "stride_xb",
    "stride_xh", "stride_xq", "stride_yb", "stride_yh", "stride_yq", "stride_sb", "stride_sh",
    "stride_sq", "stride_tb", "stride_th", "stride_tq", "N", "M",
])
def _repair_kernel(
    Q, K, V, DK, DV, Out, LSE, BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT,
    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
    stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    H_Q, GROUP, LAYOUT_DIV, N, M, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_COLUMNS: tl.constexpr, HAS_SPANS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILES: tl.constexpr,
):
    """Reruns, with the exact masked-tile repair, the tiles where the fast pass marked a row (NaN
    lse); on 16-key tiles through plain loads, so it needs few registers. Launched after every
    causal pass: one program reads the lse of TILES query tiles at once, so the common case (no
    mark) costs a few microseconds and no host sync."""
    i_r, i_bh = tl.program_id(0), tl.program_id(1)
    p_lse = LSE + i_bh.to(tl.int64) * N
    o_r = i_r * (TILES * BLOCK_M) + tl.arange(0, TILES * BLOCK_M)
    b_marked = tl.load(p_lse + o_r, mask=o_r < N, other=0.0)
    if tl.max((b_marked != b_marked).to(tl.int32), 0) > 0:
        for i_t in range(0, TILES):
            i_m = i_r * TILES + i_t
            o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
            b_lse = tl.load(p_lse + o_m, mask=o_m < N, other=0.0)
            if tl.max((b_lse != b_lse).to(tl.int32), 0) > 0:
                _query_tile(
                    Q, K, V, DK, DV, Out, LSE, BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT,
                    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                    stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
                    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
                    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
                    H_Q, GROUP, LAYOUT_DIV, N, M, qk_scale, i_m, i_bh,
                    HEAD_DIM, BLOCK_Q, BLOCK_K, CAUSAL, HAS_COLUMNS, HAS_SPANS, False, BLOCK_M,
                    BLOCK_N, True,
                )
# fmt: on


def _set_tma_block(nargs: dict) -> None:
    """TMA descriptors copy [1, 1, BLOCK_N, HEAD_DIM] boxes; BLOCK_N is known once a config is."""
    if nargs["USE_TMA"]:
        box = [1, 1, nargs["BLOCK_N"], nargs["HEAD_DIM"]]
        nargs["DK"].block_shape = box
        nargs["DV"].block_shape = box


def _config_space() -> list[triton.Config]:
    """Candidate tiles, warps and pipeline depths; _keep picks the few that suit a layout."""
    sizes = (128, 64, 32, 16)
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s, pre_hook=_set_tma_block
        )
        for bm, bn, w, s in itertools.product(sizes, sizes, (4, 8), (2, 3))
    ]


def _warps(block_m: int, block_n: int, head_dim: int) -> int:
    """8 warps on 128 x 128 tiles above head dim 64, else 4: at head dim 64 four warps hold a
    128 x 128 tile in 255 registers without spilling, so two programs share an SM."""
    return 8 if block_m * block_n >= 128 * 128 and head_dim > 64 else 4


def _keep(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The layout's own blocks as tiles, or both halved; warps by `_warps`.

    Measured on H100 (benchmarks/NOTES-kernels.md, head dim 128): 128 x 128 / 8 warps / TMA is
    fastest from 16K keys on; 64 x 64 / 4 warps wins on short or very sparse rows; 128 x 64 and
    4-warp 128-row tiles never won; 4 stages did not beat 3 overall. Head dim 256 leaves shared
    memory for 2 stages of 64 rows. At head dim 64 on the H200, 4-warp 128 x 128 tiles ran 3-10 %
    faster than 8-warp ones at 32K-128K, dense and at 3-30 % density, in the second of two runs
    (benchmarks/results/h200/w4/; the first, the call's first bench, read 18-44 % slower at 32K
    and 3-10 % density, and 6-10 % faster elsewhere).
    """
    args = {**named_args, **kwargs}
    bq, bk, d = args["BLOCK_Q"], args["BLOCK_K"], args["HEAD_DIM"]
    halves = (max(16, bq // 2), max(16, bk // 2))
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if (bm, bn) not in ((bq, bk), halves) or c.num_warps != _warps(bm, bn, d):
            continue
        if d >= 256 and (bn > 64 or c.num_stages > 2):
            continue
        kept.append(c)
    return kept


_sparse_fwd_tuned = triton.autotune(
    configs=_config_space(),
    key=["HEAD_DIM", "BLOCK_Q", "BLOCK_K", "CAUSAL", "HAS_COLUMNS", "HAS_SPANS", "LEN_BUCKET"],
    prune_configs_by={"early_config_prune": _keep},
    do_bench=tune_timing,
)(_sparse_fwd_kernel)


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
    dense_dispatch: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of q over k, v restricted to ``layout`` (blocks, columns, spans), Triton forward.

    Args:
        q: (B, H_q, N, D) float16/bfloat16; k, v: (B, H_kv, M, D), H_q a multiple of H_kv (native
            GQA: query head h reads KV head h // (H_q // H_kv)). Any strides with a unit last one.
            D is a power of two in [16, 256].
        layout: key blocks (and columns, spans) per query block; its batch broadcasts from 1, heads
            from 1 or H_kv (one plan per KV group), or are H_q; block sizes must be powers of two
            in [16, 128].
        causal: bottom-right aligned causal mask (query i sits at key position M - N + i).
        scale: softmax scale, default 1/sqrt(D).
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q, N).
        out: optional (B, H_q, N, D) output buffer of q's dtype, any strides with a unit last one
            (a transposed view of a (B, N, H_q, D) tensor writes the transformers layout directly).
        dense_dispatch: a causal ``Layout.dense`` layout with N == M runs PyTorch SDPA (cuDNN or
            flash backend, faster than this kernel on dense work) unless ``return_lse``.

    Returns:
        out (B, H_q, N, D) in q's dtype, and lse if asked. Rows that see no key give 0 and -inf.

    Example:
        >>> layout = Layout.dense(4096, 4096, device="cuda")  # doctest: +SKIP
        >>> out = sparse_attention(q, k, v, layout, causal=True)  # doctest: +SKIP
    """
    _check_kernel_inputs(q, k, v, layout, out)
    check_scale(scale)
    for name, flag in (
        ("causal", causal),
        ("return_lse", return_lse),
        ("dense_dispatch", dense_dispatch),
    ):
        check_bool(name, flag)
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    # SDPA's is_causal is top-left aligned, which equals ours only when N == M
    if (
        dense_dispatch and not return_lse and layout.is_dense and causal and n == m
        and sdpa_serves(q, k, v)
    ):  # fmt: skip
        result = sdpa_dense(q, k, v, scale)
        return result if out is None else out.copy_(result)

    if out is None:
        out = torch.empty((b, h_q, n, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h_q, n), dtype=torch.float32, device=q.device)
    if b == 0:  # nothing to compute (and TMA descriptors refuse an empty K)
        return (out, lse) if return_lse else out
    bidx, bcnt, cidx, ccnt, sstart, send, scnt = layout_tensors(layout)
    use_tma = _use_tma(q, k, v)
    dk, dv = (_descriptor(k), _descriptor(v)) if use_tma else (k, v)
    # fmt: off
    args = (
        q, k, v, dk, dv, out, lse, bidx, bcnt, cidx, ccnt, sstart, send, scnt,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        *(x for t in (bidx, bcnt, cidx, ccnt, sstart, scnt)
          for x in index_strides(t, layout.batch)),
        h_q, h_q // h_kv, h_q // layout.heads, n, m, scale * LOG2E,
        # autotune key only (unused in the kernel): short and long prefills tune apart
        min(max((m - 1).bit_length(), 12), 17),
    )
    # fmt: on
    meta = {
        "HEAD_DIM": d,
        "BLOCK_Q": layout.block_q,
        "BLOCK_K": layout.block_k,
        "CAUSAL": bool(causal),
        "HAS_COLUMNS": layout.has_columns,
        "HAS_SPANS": layout.has_spans,
        "USE_TMA": use_tma,
    }

    def grid(cfg: dict) -> tuple[int, int]:
        return (triton.cdiv(n, cfg["BLOCK_M"]), b * h_q)

    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        if INTERPRET:
            tiles = {
                "BLOCK_M": max(16, layout.block_q // 2),
                "BLOCK_N": max(16, layout.block_k // 2),
            }
            _set_tma_block({"DK": dk, "DV": dv, **meta, **tiles})
            _sparse_fwd_kernel[grid(tiles)](*args, **meta, **tiles)
        else:
            _sparse_fwd_tuned[grid](*args, **meta)
        if causal:
            tile = min(64, layout.block_q)
            repair = {**meta, "BLOCK_M": tile, "BLOCK_N": 16}
            del repair["USE_TMA"]
            plain = (*args[:3], k, v, *args[5:-1])  # no TMA descriptors, no autotune key
            _repair_kernel[(triton.cdiv(n, _REPAIR_ROWS), b * h_q)](
                *plain, **repair, TILES=_REPAIR_ROWS // tile, num_warps=4, num_stages=2
            )
    return (out, lse) if return_lse else out


def sdpa_serves(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `sdpa_dense` takes these tensors: CUDA fp16/bf16, N == M, head_dim <= 128, unit
    last strides and 16-byte aligned rows (on the H200 cuDNN returned garbage for unaligned K/V
    rows: fuzz seed 279)."""
    return (
        q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 128
        and q.shape[2] == k.shape[2] and all(t.stride(-1) == 1 for t in (q, k, v))
        and _aligned(q, k, v)
    )  # fmt: skip


def sdpa_dense(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Dense causal attention (N == M) through SDPA with cuDNN first (GQA native, never
    repeated). SDPA's default order tries flash first: on the H200 cuDNN is ~1.5x faster (SmolLM2
    shapes at 128K, benchmarks/results/h200/graphs/no_sync.json: 42.6 against 63.4 ms)."""
    with sdpa_kernel(_SDPA_BACKENDS, set_priority=True):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )


def _use_tma(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """K/V blocks through the bulk tensor copy engine: Hopper or newer, 16-byte aligned strides."""
    if not q.is_cuda or capability(q.device)[0] < 9:
        return False
    return _aligned(k, v)


def _aligned(*tensors: Tensor) -> bool:
    """Every tensor starts on 16 bytes and steps by multiples of 16 bytes (but the last axis)."""
    return all(
        t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:-1])
        for t in tensors
    )


def _descriptor(t: Tensor) -> TensorDescriptor:
    """Host TMA descriptor over (B, H_kv, M, D); the box is set per config by _set_tma_block."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, 16, t.shape[-1]])


def unit_last(t: Tensor) -> Tensor:
    """Index rows are read with unit stride; other strides (expanded batch/head) pass through."""
    return t if t.stride(-1) == 1 else t.contiguous()


def layout_tensors(layout: Layout) -> tuple[Tensor, ...]:
    """(block_idx, block_count, column_idx, column_count, span_start, span_end, span_count) as the
    kernels read them: index rows with unit stride, span starts and ends with one set of strides.
    An absent part passes the block tensors as placeholders, never read."""
    bidx, bcnt = unit_last(layout.block_idx), layout.block_count
    cidx, ccnt = bidx, bcnt
    if layout.has_columns:
        cidx, ccnt = unit_last(layout.column_idx), layout.column_count
    sstart, send, scnt = bidx, bidx, bcnt
    if layout.has_spans:
        sstart, send = unit_last(layout.span_start), unit_last(layout.span_end)
        scnt = layout.span_count
        if sstart.stride() != send.stride():
            sstart, send = sstart.contiguous(), send.contiguous()
    return bidx, bcnt, cidx, ccnt, sstart, send, scnt


def index_strides(t: Tensor, layout_batch: int) -> tuple[int, int, int]:
    """(batch, head, query-block) strides of a layout index tensor as the kernels read them: a
    layout batch of 1 broadcasts over the call's batch through a zero stride."""
    return (0 if layout_batch == 1 else t.stride(0)), t.stride(1), t.stride(2)


def _pow2_in(x: int, lo: int, hi: int) -> bool:
    return lo <= x <= hi and x & (x - 1) == 0


def _check_kernel_inputs(
    q: Tensor, k: Tensor, v: Tensor, layout: Layout, out: Tensor | None
) -> None:
    """The public contract that `attnsieve.api` checks too (a layout or ``out`` that does not fit
    the inputs sent the kernel's programs outside its tensors: a segmentation fault), and what
    this kernel needs beyond it."""
    check_qkv(q, k, v)
    check_layout(layout, q, k)
    if out is not None:
        check_out(out, q, q=q, k=k, v=v)
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"q, k, v: the Triton kernel takes float16 or bfloat16, got {q.dtype}")
    if not _pow2_in(q.shape[-1], 16, 256):
        raise ValueError(f"q: head_dim must be a power of two in [16, 256], got {q.shape[-1]}")
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        if t is not None and t.stride(-1) != 1 and t.shape[-1] > 1:
            raise ValueError(
                f"{name}: the head_dim axis must have stride 1, got strides {t.stride()}"
            )
    check_triton_device("q", q)
    check_interpreter_dots("q", q)
    for name in ("block_q", "block_k"):
        if not _pow2_in(getattr(layout, name), 16, 128):
            raise ValueError(
                f"layout.{name}: must be a power of two in [16, 128], got {getattr(layout, name)}"
            )
