"""Low-precision prefill attention in Triton: INT8 Q·Kᵀ and FP8 P·V over a `Layout`.

SageAttention2 (Zhang et al., arXiv 2411.10958) quantised attention on the block-sparse substrate
of `attnsieve.kernels.prefill`, as SpargeAttn (arXiv 2502.18137) runs it on sparse block masks.
Q and K (K smoothed) are quantised to INT8 per attention tile and V to FP8 per channel by
`attnsieve.kernels.quantize` (`quantize_q`, `quantize_kv`) before the kernel runs; then
S = int32 (Q8 · K8ᵀ) × q_scale × k_scale in fp32; online softmax
in fp32 with exp2; P × 448 (P in [0, 1]; log2 448 is folded into exp2's argument, so the row sum
carries the 448 too) to FP8 e4m3 and P8 · V8 in fp32; V's channel scale is applied once at the
end. Each tile's P8 · V8 is a fresh MMA added to the fp32 accumulator (SageAttention2's two-level
accumulation: Hopper's FP8 MMA accumulates with about 22 bits).

Differences from the papers:
- Q scales are per tile (BLOCK_M rows) and K scales per BLOCK_N keys, not per thread group
  (SageAttention2's default) or per warp (its option); Q is not smoothed (no mean-of-Q GEMV
  correction); V is not smoothed; there is no INT4 variant.
- SpargeAttn's mask prediction is a planner's job here (any `Layout`), and its sparse-warp online
  softmax (skipping P·V where the row max barely moves) is not done.
- A layout's key *columns* (gathered tokens) carry their own K block scales, loaded per key; so
  do its key *spans* (token ranges walked BLOCK_N keys at a time from an unaligned start, after
  the columns): a span tile straddles two K quantisation blocks.
- Non-finite inputs: the quantisation quantises NaN / inf as 0 and flags their rows; a query
  row that is non-finite or sees a flagged key comes out NaN, as in the bf16 kernel, unless it sees
  no key at all (0, lse -inf). Flagged keys hidden from a row never reach it: tiles that every row
  sees whole read one flag per K block, masked tiles a flag per key.
- Finite keys and values hidden from a row still set the scales its visible ones are rounded
  with (K's mean and block scales, V's channel scales, all taken over every key, as in
  SageAttention2): a large hidden key or value raises a row's rounding error, never its weights.
- The lse adds K smoothing's shift q · mean(K) back from Q as given, not from its INT8 rounding
  (which would put the rounding times mean(K), the outlier term smoothing removes, into the lse).

On an sm_90 GPU causal calls at head_dim 128 with M >= N, in order (no layout or `Layout.dense`)
or over a layout of key blocks alone (no columns or spans), run `attnsieve.kernels.quant_hopper`
instead: the same quantisation and semantics in a warp-specialised Gluon kernel with
FlashAttention-3's schedule, whose P·V accumulates inside the FP8 MMA (its docstring says why and
what that costs), and which quantises Q itself as it loads it. This kernel does not: with Q
quantised in its prologue (the same `load_quantized_rows`) the sparse row of `bench kernels` (64K,
10 %, H200) took 6.89 ms, since Triton moved the computed tile through shared memory on every key
tile where it keeps a loaded one in the dot's registers; routed through memory and loaded back,
6.68 / 6.72 ms; with the pass, 6.14–6.36 ms over six earlier runs
(benchmarks/results/h200/quant26/).

Under the Triton interpreter (CPU tests) P is rounded to FP8 through `to_fp8`'s emulation
(EMULATE_FP8), so the FP8 dot runs as on the GPU. The twin is
`attnsieve.kernels.quant_reference.quant_attention_reference`.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

from attnsieve.checks import check_bool, check_out, check_pow2, check_scale
from attnsieve.kernels import (
    INTERPRET,
    capability,
    check_fp8_device,
    check_triton_device,
    quant_hopper,
    tune_timing,
)
from attnsieve.kernels.prefill import LOG2E, index_strides, layout_tensors, table_tile
from attnsieve.kernels.quantize import (
    FP8_MAX,
    QuantizedKV,
    check_qkv_to_quantize,
    quantize_kv_blocks,
    quantize_q_blocks,
    to_fp8,
)
from attnsieve.layout import Layout, check_layout

LOG2_FP8_MAX = math.log2(FP8_MAX)  # P in [0, 1] is scaled by 448; the kernel spells it out
DENSE_TILES = (64, 128)  # (BLOCK_M, BLOCK_N) without a layout


def quant_tiles(layout: Layout | None) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the attention tile, and so of Q's and K's quantisation blocks.

    The layout's own blocks, BLOCK_M capped at 64 rows on the GPU; the interpreter halves them
    (as the bf16 kernel does) so CPU tests cover sub-tiled layout blocks. FP8 / INT8 dots need a
    reduction dim of at least 32 (BLOCK_N).
    """
    bq, bk = DENSE_TILES if layout is None else (layout.block_q, layout.block_k)
    if INTERPRET:
        return max(16, bq // 2), max(32, bk // 2)
    # 64-row tiles, 4 warps: 15 % faster than 128 rows / 8 warps on the H200 (dense, 32K)
    return min(bq, 64), bk


# Kernel argument lists stay dense (one role per line) rather than one name per line.
# fmt: off
@triton.jit
def _load_kv(
    DK, DV, p_k, p_v, i_bkv, start, o_n, m_n, o_d, stride_vd,
    MASKED: tl.constexpr, USE_TMA: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """int8 K rows ``o_n`` [BLOCK_N, D] and fp8 Vᵀ columns [D, BLOCK_N]; zero where ``m_n`` is
    off."""
    if USE_TMA:  # bulk tensor copy of rows [start, start + BLOCK_N); rows past M come back zero
        b_k = DK.load([i_bkv, start, 0]).reshape(BLOCK_N, HEAD_DIM)
        b_vt = DV.load([i_bkv, 0, start]).reshape(HEAD_DIM, BLOCK_N)
    else:
        o_kn = o_n.to(tl.int64)
        p_kt = p_k + o_kn[:, None] * HEAD_DIM + o_d[None, :]
        p_vt = p_v + o_d[:, None] * stride_vd + o_kn[None, :]
        if MASKED:
            b_k = tl.load(p_kt, mask=m_n[:, None], other=0)
            b_vt = tl.load(p_vt, mask=m_n[None, :], other=0.0)
        else:
            b_k = tl.load(p_kt)
            b_vt = tl.load(p_vt)
    return b_k, b_vt


@triton.jit
def _attend_tile(
    b_acc, b_l, b_m, b_bad, b_q, b_k, b_vt, b_sc, b_kbad, o_n, m_n, o_qpos,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, EMULATE_FP8: tl.constexpr,
):
    """Fold one key tile into the running softmax; ``b_sc`` is the score scale, a scalar or
    [1, BLOCK_N] (gathered columns); ``b_kbad`` flags the keys' rows [BLOCK_N], or unmasked, where
    every row sees every key, the whole tile (a scalar: one load, no reduction a tile)."""
    b_s = tl.dot(b_q, tl.trans(b_k), out_dtype=tl.int32)  # [BLOCK_M, BLOCK_N], |s| < 127²·256
    # int32 -> fp32 without the quarter-rate conversion unit: add s to the bits of 1.5 * 2^23 and
    # subtract it back in fp32; exact for |s| < 2^22 (head_dim <= 256)
    b_s = (b_s + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
    if MASKED:
        m_s = m_n[None, :]
        if CAUSAL:
            m_s = m_s & (o_n[None, :] <= o_qpos[:, None])
        b_s = tl.where(m_s, b_s * b_sc, float("-inf"))
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
        # a row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN
        b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_p = tl.exp2(b_s - (b_m_sub - 8.807354922057604)[:, None])  # P x 448: FP8's full range
        b_bad = b_bad | (tl.max((m_s & (b_kbad[None, :] != 0)).to(tl.int32), 1) > 0)
    else:
        # every key of the tile is visible to every row, and the scale is one positive scalar
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1) * b_sc)
        b_m_sub = b_m_new
        b_p = tl.exp2(b_s * b_sc - (b_m_sub - 8.807354922057604)[:, None])
        b_bad = b_bad | (b_kbad != 0)
    b_alpha = tl.exp2(b_m - b_m_sub)
    b_l = b_l * b_alpha + tl.sum(b_p, 1)
    b_p8 = to_fp8(b_p, EMULATE_FP8)
    # a fresh MMA per tile added in fp32, not accumulated inside the MMA: Hopper's FP8 MMA keeps
    # about 22 bits of accumulator (Triton keeps the add apart for FP8 dots on sm_90)
    b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p8, tl.trans(b_vt))  # [BLOCK_M, HEAD_DIM]
    return b_acc, b_l, b_m_new, b_bad


# layout strides and lengths vary per call: specializing on their divisibility only recompiles
@triton.jit(do_not_specialize=[
    "stride_ib", "stride_ih", "stride_iq", "stride_cb", "stride_ch", "stride_cq", "stride_xb",
    "stride_xh", "stride_xq", "stride_yb", "stride_yh", "stride_yq", "stride_sb", "stride_sh",
    "stride_sq", "stride_tb", "stride_th", "stride_tq", "stride_vd", "N", "M", "LEN_BUCKET",
])
def _quant_fwd_kernel(
    Q, Q8, QS, QBAD, K8, KS, KMEAN, VT8, VS, KVBAD, KBLOCKBAD, DK, DV, Out, LSE, BIDX, BCNT, CIDX,
    CCNT, SSTART, SEND, SCNT,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_ob, stride_oh, stride_on, stride_od,
    stride_vd,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    H_Q, H_KV, LAYOUT_DIV, N, M, qk_scale, LEN_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    CAUSAL: tl.constexpr, DENSE: tl.constexpr, HAS_COLUMNS: tl.constexpr,
    HAS_SPANS: tl.constexpr, USE_TMA: tl.constexpr, EMULATE_FP8: tl.constexpr,
    RETURN_LSE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # heaviest query tiles (last rows under causal masking) launch first: fewer idle SMs at the end
    i_m = tl.num_programs(0) - 1 - tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    i_bkv = i_b * H_KV + i_h // (H_Q // H_KV)  # native GQA: K/V are indexed, never repeated
    i_hl = i_h // LAYOUT_DIV  # layout head: 0, i_h // GROUP or i_h
    i_qb = i_m // (BLOCK_Q // BLOCK_M)

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    o_qpos = o_m + (M - N)  # bottom-right aligned absolute query positions
    q_lo = i_m * BLOCK_M
    q_hi = tl.minimum(q_lo + BLOCK_M, N) - 1
    if CAUSAL:
        kv_end = tl.maximum(tl.minimum(M, q_hi + (M - N) + 1), 0)  # keys past it: hidden from all
        full_end = tl.maximum(tl.minimum(M, q_lo + (M - N) + 1), 0)  # keys before it: seen by all
    else:
        kv_end = M
        full_end = M

    i_bh64, i_bkv64 = i_bh.to(tl.int64), i_bkv.to(tl.int64)
    p_q = Q8 + i_bh64 * N * HEAD_DIM
    p_k = K8 + i_bkv64 * M * HEAD_DIM
    p_v = VT8 + i_bkv64 * HEAD_DIM * stride_vd
    p_ks = KS + i_bkv64 * tl.cdiv(M, BLOCK_N)
    p_kbb = KBLOCKBAD + i_bkv64 * tl.cdiv(M, BLOCK_N)
    p_kbad = KVBAD + i_bkv64 * M
    b_q = tl.load(p_q + o_m.to(tl.int64)[:, None] * HEAD_DIM + o_d[None, :], mask=m_m[:, None],
                  other=0)  # [BLOCK_M, HEAD_DIM] int8
    # the tile's Q scale with the softmax scale and log2(e) folded in (exp2 below)
    b_qs = tl.load(QS + i_bh64 * tl.num_programs(0) + i_m) * qk_scale

    b_acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    b_bad = tl.zeros([BLOCK_M], dtype=tl.int1)  # rows that see a non-finite K / V row

    # int64: block lists as wide as the key blocks pass 2^31 entries (block_topk at 1M tokens)
    p_idx = (BIDX + i_b.to(tl.int64) * stride_ib + i_hl.to(tl.int64) * stride_ih
             + i_qb.to(tl.int64) * stride_iq)
    if DENSE:  # every key block in order, BLOCK_K == BLOCK_N
        n_vis = tl.cdiv(kv_end, BLOCK_K)
        n_full = full_end // BLOCK_K
    else:
        # block list of this query block; batch/head broadcast through zero strides and
        # LAYOUT_DIV. The list is sorted, so blocks hidden from every row (past kv_end) form a
        # suffix, and blocks that need the mask the suffix before it: scan both from the end.
        n_vis = tl.load(BCNT + i_b * stride_cb + i_hl * stride_ch + i_qb * stride_cq)
        while (n_vis > 0) & (tl.load(p_idx + n_vis - 1, mask=n_vis > 0, other=0) * BLOCK_K
                             >= kv_end):
            n_vis -= 1
        n_full = n_vis
        while (n_full > 0) & (
            (tl.load(p_idx + n_full - 1, mask=n_full > 0, other=0) + 1) * BLOCK_K > full_end
        ):
            n_full -= 1

    SUBS: tl.constexpr = BLOCK_K // BLOCK_N  # BLOCK_N-wide tiles per layout block
    o_t = tl.arange(0, BLOCK_N)
    n_tiles = n_vis * SUBS
    if not DENSE:  # in order, BIDX is a placeholder
        i_blk = tl.load(p_idx, mask=n_tiles > 0, other=0)  # tile 0's block (see table_tile)
    for it in range(0, n_full * SUBS):
        if DENSE:
            start = it * BLOCK_N
        else:
            start, i_blk = table_tile(p_idx, i_blk, it, n_tiles, BLOCK_K, BLOCK_N)
        o_n = start + o_t
        b_k, b_vt = _load_kv(DK, DV, p_k, p_v, i_bkv, start, o_n, o_n < M, o_d, stride_vd,
                             False, USE_TMA, BLOCK_N, HEAD_DIM)
        b_sc = b_qs * tl.load(p_ks + start // BLOCK_N)
        b_acc, b_l, b_m, b_bad = _attend_tile(
            b_acc, b_l, b_m, b_bad, b_q, b_k, b_vt, b_sc, tl.load(p_kbb + start // BLOCK_N), o_n,
            o_n < M, o_qpos, False, CAUSAL, EMULATE_FP8)
    for it in range(n_full * SUBS, n_tiles):
        if DENSE:
            start = it * BLOCK_N
        else:
            start, i_blk = table_tile(p_idx, i_blk, it, n_tiles, BLOCK_K, BLOCK_N)
        o_n = start + o_t
        b_k, b_vt = _load_kv(DK, DV, p_k, p_v, i_bkv, start, o_n, o_n < M, o_d, stride_vd,
                             True, USE_TMA, BLOCK_N, HEAD_DIM)
        b_sc = b_qs * tl.load(p_ks + start // BLOCK_N)
        b_acc, b_l, b_m, b_bad = _attend_tile(
            b_acc, b_l, b_m, b_bad, b_q, b_k, b_vt, b_sc,
            tl.load(p_kbad + o_n, mask=o_n < M, other=0), o_n, o_n < M, o_qpos,
            True, CAUSAL, EMULATE_FP8)
    if HAS_COLUMNS:
        p_col = (CIDX + i_b.to(tl.int64) * stride_xb + i_hl.to(tl.int64) * stride_xh
                 + i_qb.to(tl.int64) * stride_xq)  # int64: as the block lists
        n_col = tl.load(CCNT + i_b * stride_yb + i_hl * stride_yh + i_qb * stride_yq)
        for start in range(0, n_col, BLOCK_N):
            m_c = start + o_t < n_col
            o_n = tl.load(p_col + start + o_t, mask=m_c, other=0)  # gathered key tokens
            b_k, b_vt = _load_kv(DK, DV, p_k, p_v, i_bkv, start, o_n, m_c, o_d, stride_vd,
                                 True, False, BLOCK_N, HEAD_DIM)
            # each gathered key brings its own block's K scale
            b_sc = b_qs * tl.load(p_ks + o_n // BLOCK_N, mask=m_c, other=0.0)[None, :]
            b_acc, b_l, b_m, b_bad = _attend_tile(
                b_acc, b_l, b_m, b_bad, b_q, b_k, b_vt, b_sc,
                tl.load(p_kbad + o_n, mask=m_c, other=0), o_n, m_c, o_qpos,
                True, CAUSAL, EMULATE_FP8)
    if HAS_SPANS:
        # span start/end share strides (the launcher makes sure); int64: B·H·QB·S may pass 2^31
        o_s = (i_b.to(tl.int64) * stride_sb + i_hl.to(tl.int64) * stride_sh
               + i_qb.to(tl.int64) * stride_sq)
        n_span = tl.load(SCNT + i_b * stride_tb + i_hl * stride_th + i_qb * stride_tq)
        for i_s in range(0, n_span):
            s_lo = tl.load(SSTART + o_s + i_s)
            s_hi = tl.minimum(tl.load(SEND + o_s + i_s), kv_end)  # keys past kv_end: all hidden
            for start in range(s_lo, s_hi, BLOCK_N):  # tiles start anywhere: always masked
                o_n = start + o_t
                m_n = o_n < s_hi
                b_k, b_vt = _load_kv(DK, DV, p_k, p_v, i_bkv, start, o_n, m_n, o_d, stride_vd,
                                     True, False, BLOCK_N, HEAD_DIM)
                # a tile off the grid straddles two K quantisation blocks: scales per key
                b_sc = b_qs * tl.load(p_ks + o_n // BLOCK_N, mask=m_n, other=0.0)[None, :]
                b_acc, b_l, b_m, b_bad = _attend_tile(
                    b_acc, b_l, b_m, b_bad, b_q, b_k, b_vt, b_sc,
                    tl.load(p_kbad + o_n, mask=m_n, other=0), o_n, m_n, o_qpos,
                    True, CAUSAL, EMULATE_FP8)

    # rows that saw no key: out 0 and lse -inf, never 0/0; rows that saw a non-finite input: NaN
    b_empty = b_l == 0.0
    b_bad = b_bad | ((tl.load(QBAD + i_bh64 * N + o_m, mask=m_m, other=0) != 0) & ~b_empty)
    b_vs = tl.load(VS + i_bkv64 * HEAD_DIM + o_d)  # V's channel scale (l carries P's 448)
    # one reciprocal a row, NaN in a flagged row, instead of a division and a select an element
    # (as in the bf16 kernel: `attnsieve.kernels.prefill`)
    b_r = tl.where(b_bad, float("nan"), 1.0 / tl.where(b_empty, 1.0, b_l))
    b_o = b_acc * b_r[:, None] * b_vs[None, :]
    p_o = Out + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    o_o = o_m.to(tl.int64)[:, None] * stride_on + o_d[None, :] * stride_od
    tl.store(p_o + o_o, b_o.to(Out.dtype.element_ty), mask=m_m[:, None])
    if RETURN_LSE:
        # K smoothing shifted every score of a row by q . mean(K): softmax ignores it, the lse
        # does not. From Q as given: the INT8 tile's rounding times mean(K), the outlier term
        # smoothing takes out of the scores, would be put back into the lse
        p_x = (Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
               + o_m.to(tl.int64)[:, None] * stride_qn + o_d[None, :] * stride_qd)
        b_x = tl.load(p_x, mask=m_m[:, None], other=0.0).to(tl.float32)
        b_shift = tl.sum(b_x * tl.load(KMEAN + i_bkv64 * HEAD_DIM + o_d)[None, :], 1)
        b_lse = b_m + tl.log2(tl.where(b_empty, 1.0, b_l)) - 8.807354922057604 + b_shift * qk_scale
        b_lse = b_lse * 0.6931471805599453  # x ln 2: natural log
        b_lse = tl.where(b_empty, float("-inf"), b_lse)
        b_lse = tl.where(b_bad, float("nan"), b_lse)
        tl.store(LSE + i_bh64 * N + o_m, b_lse, mask=m_m)
# fmt: on


def _set_tma_block(nargs: dict) -> None:
    """TMA boxes: [1, BLOCK_N, D] of K, [1, D, BLOCK_N] of Vᵀ; BLOCK_N is the call's tile."""
    if nargs["USE_TMA"]:
        nargs["DK"].block_shape = [1, nargs["BLOCK_N"], nargs["HEAD_DIM"]]
        nargs["DV"].block_shape = [1, nargs["HEAD_DIM"], nargs["BLOCK_N"]]


def _keep(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Head dim 256 leaves shared memory for 2 stages only."""
    args = {**named_args, **kwargs}
    return [c for c in configs if args["HEAD_DIM"] < 256 or c.num_stages <= 2]


# The tile is fixed per call (it is the quantisation block); warps and pipeline depth are tuned.
_quant_fwd_tuned = triton.autotune(
    configs=[
        triton.Config({}, num_warps=w, num_stages=s, pre_hook=_set_tma_block)
        for w, s in itertools.product((4, 8), (2, 3, 4))
    ],
    key=[
        "HEAD_DIM",
        "BLOCK_M",
        "BLOCK_N",
        "BLOCK_Q",
        "BLOCK_K",
        "CAUSAL",
        "DENSE",
        "HAS_COLUMNS",
        "HAS_SPANS",
        "LEN_BUCKET",
    ],
    prune_configs_by={"early_config_prune": _keep},
    do_bench=tune_timing,
)(_quant_fwd_kernel)


def quant_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """INT8 Q·Kᵀ / FP8 P·V attention of q over k, v, restricted to ``layout`` (dense when None).

    Args:
        q: (B, H_q, N, D) float16/bfloat16; k, v: (B, H_kv, M, D), H_q a multiple of H_kv (native
            GQA: query head h reads KV head h // (H_q // H_kv)). Any strides. D is a power of two
            in [32, 256].
        layout: key blocks (and columns, spans) per query block; its batch broadcasts from 1 and
            its heads from 1 or H_kv, or are H_q; block_q a power of two in [16, 128], block_k in
            [32, 128]. The kernel's tiles (`quant_tiles`: its blocks, at most 64 query rows) are
            the quantisation blocks of Q and K.
        causal: bottom-right aligned causal mask (query i sits at key position M - N + i).
        scale: softmax scale, default 1/sqrt(D).
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q, N).
        out: optional (B, H_q, N, D) buffer of q's dtype (any strides), written and returned.

    Returns:
        out (B, H_q, N, D) in q's dtype, and lse if asked. Rows that see no key give 0 and -inf;
        other rows whose query, or a key / value they see, holds a NaN / inf give NaN.

    Example:
        >>> out = quant_attention(q, k, v)  # dense causal  # doctest: +SKIP
        >>> out = quant_attention(q, k, v, planner.plan(q, k))  # sparse  # doctest: +SKIP
    """
    check_quant_inputs(q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out)
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    block_m, block_n = quant_tiles(layout)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if out is None:
        out = torch.empty((b, h_q, n, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h_q, n), dtype=torch.float32, device=q.device)
    if q.numel() == 0 or m == 0:  # nothing to launch (no TMA descriptor over an empty buffer)
        out.zero_()
        return (out, lse.fill_(-math.inf)) if return_lse else out
    in_order = _in_order(layout, causal)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        z, q_tiles = quantize_for_kernel(q, k, v, layout, causal)
        if q_tiles is None:
            blocks = None if in_order else layout
            quant_hopper.attention(q, z, out, lse if return_lse else None, scale * LOG2E, blocks)
            return (out, lse) if return_lse else out
        q8, q_scale, q_bad = q_tiles
        if in_order:  # the index pointers are never read: placeholders
            bidx = bcnt = cidx = ccnt = sstart = send = scnt = lse
            bq, bk, div, batch = block_m, block_n, h_q, 1
        else:
            bidx, bcnt, cidx, ccnt, sstart, send, scnt = layout_tensors(layout)
            bq, bk, div = layout.block_q, layout.block_k, h_q // layout.heads
            batch = layout.batch
        use_tma = _use_tma(q)
        dk, dv = (_descriptor(z.k, 1), _descriptor(z.v_t, 2)) if use_tma else (z.k, z.v_t)
        # fmt: off
        args = (
            q, q8, q_scale, q_bad, z.k, z.k_scale, z.k_mean, z.v_t, z.v_scale, z.kv_bad,
            z.k_block_bad, dk, dv, out, lse, bidx, bcnt, cidx, ccnt, sstart, send, scnt,
            *q.stride(), *out.stride(), z.v_t.stride(2),
            *(x for t in (bidx, bcnt, cidx, ccnt, sstart, scnt) for x in index_strides(t, batch)),
            h_q, h_kv, div, n, m, scale * LOG2E,
            # autotune key only (unused in the kernel): short and long prefills tune apart
            min(max((m - 1).bit_length(), 12), 17),
        )
        # fmt: on
        meta = {
            "HEAD_DIM": d,
            "BLOCK_Q": bq,
            "BLOCK_K": bk,
            "CAUSAL": bool(causal),
            "DENSE": in_order,
            "HAS_COLUMNS": not in_order and layout.has_columns,
            "HAS_SPANS": not in_order and layout.has_spans,
            "USE_TMA": use_tma,
            "EMULATE_FP8": INTERPRET,
            "RETURN_LSE": return_lse,
            "BLOCK_M": block_m,
            "BLOCK_N": block_n,
        }
        grid = (triton.cdiv(n, block_m), b * h_q)
        if INTERPRET:
            _set_tma_block({"DK": dk, "DV": dv, **meta})
            _quant_fwd_kernel[grid](*args, **meta)
        else:
            _quant_fwd_tuned[grid](*args, **meta)
    return (out, lse) if return_lse else out


def _in_order(layout: Layout | None, causal: bool) -> bool:
    """A whole causal layout (`Layout.dense`, e.g. the dense planner's) lists every visible block
    in order: walk them without its table, as for no layout, on the same tiles (bit-identical);
    the table's loads made the K/V addresses data-dependent."""
    return layout is None or (
        layout.is_dense and causal and not layout.has_columns and not layout.has_spans
    )


def quantize_for_kernel(
    q: Tensor, k: Tensor, v: Tensor, layout: Layout | None, causal: bool
) -> tuple[QuantizedKV, tuple[Tensor, Tensor, Tensor] | None]:
    """What `quant_attention` runs before its kernel, on checked inputs: K and V quantised, and Q
    (`quantize_q_blocks`' int8 values, scales and flags) unless the Hopper kernel runs, which
    quantises Q itself (None)."""
    block_m, block_n = quant_tiles(layout)
    z = quantize_kv_blocks(k, v, block_n)
    if runs_hopper_kernel(q, k, layout, causal):
        return z, None
    return z, quantize_q_blocks(q, block_m)


def runs_hopper_kernel(q: Tensor, k: Tensor, layout: Layout | None, causal: bool) -> bool:
    """Whether `quant_attention` runs `attnsieve.kernels.quant_hopper` (not the Triton kernel)
    on these inputs."""
    blocks = None if _in_order(layout, causal) else layout
    return quant_hopper.fits(q, k, blocks, causal, quant_tiles(layout))


def _use_tma(q: Tensor) -> bool:
    """Hopper or newer (the quantised buffers are allocated aligned)."""
    return q.is_cuda and capability(q.device)[0] >= 9


def _descriptor(t: Tensor, tile_dim: int) -> TensorDescriptor:
    """Host TMA descriptor over (B·H_kv, rows, cols); the box is set per call by _set_tma_block."""
    b, h, r, c = t.shape
    shape, strides = [b * h, r, c], [t.stride(1), t.stride(2), 1]
    box = [1, 16, c] if tile_dim == 1 else [1, r, 16]
    return TensorDescriptor(t, shape, strides, box)


def check_quant_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
    kernel: bool = True,
) -> None:
    """The contract of `quant_attention` (and, with ``kernel=False``, of its CPU twin)."""
    check_qkv_to_quantize(q, k, v, kernel=kernel)
    check_scale(scale)
    check_bool("causal", causal)
    check_bool("return_lse", return_lse)
    check_layout(layout, q, k, optional=True)
    if layout is not None:
        check_pow2("layout.block_q", layout.block_q, 16, 128)
        check_pow2("layout.block_k", layout.block_k, 32, 128)
    if out is not None:
        check_out(out, q, q=q, k=k, v=v)
    if kernel:
        check_triton_device("q", q)
        check_fp8_device("q", q)
