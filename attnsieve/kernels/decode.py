"""Paged decode attention in Triton: one query token per sequence over a paged, ragged KV cache.

Split-K (flash-decoding). Program (b, h_kv, s) holds the g query heads of KV head h_kv as one
[G_PAD, D] tile, so each K/V row is read once for the whole GQA group, and walks split s of that
head's tokens (all of them, or the pages of a sparse read list) BLOCK_N at a time, gathering row
addresses through the page table so that pages smaller than BLOCK_N work (int32 addresses where
the pools allow: `_fits_int32`). Each split writes its normalised partial output and log-sum-exp;
a small second kernel merges the splits (skipped when there is one). FP8 pools are loaded as FP8
and widened in registers, with per-token power-of-two float32 scales
(`decode_reference.quantize_fp8`) applied to the scores and folded into P (a constexpr flag). For
16-bit queries both dots run in float16, which holds every e4m3 value exactly (another flag):
each query row over the power of two at or above its largest magnitude (exact), P times each
token's V scale over the tile's largest, the accumulator kept in units of that scale (its range:
`_attend_tile`). bfloat16 dots, which need a second conversion an element,
measured 1.1-1.25x slower (benchmarks/results/h200/paged2/). Float32 queries keep float32 dots.
Per-token log weights (RazorAttention's compensation tokens), when given, are added to the
logits (another flag). The float32 twin is
:func:`attnsieve.kernels.decode_reference.decode_reference`.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.checks import cdiv
from attnsieve.kernels import (
    INTERPRET,
    check_fp8_device,
    check_interpreter_dots,
    check_triton_device,
    sm_count,
)
from attnsieve.kernels.decode_reference import FP8, check_decode_inputs

LOG2E = 1.4426950408889634
LN2 = tl.constexpr(0.6931471805599453)  # a global a kernel reads must be constexpr
LOG2E_C = tl.constexpr(LOG2E)
# A split shorter than this costs more in launch, partial writes and merging than it saves.
MIN_SPLIT_TOKENS = 512
MAX_SPLITS = 128
COMBINE_D = 32  # channels a merge program takes


# Kernel argument lists stay dense (one role per line) rather than one name per line.
# fmt: off
@triton.jit
def _gather_rows(
    p_pt, p_list, j0, n_tok, n_len, o_t, stride_tp, stride_ip,
    PAGE_SIZE: tl.constexpr, SPARSE: tl.constexpr, INT32_OFFSETS: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Physical page, slot and mask of read-list tokens j0 + o_t: the j-th token of the list is
    slot j % PAGE_SIZE of its (j // PAGE_SIZE)-th listed page. Unless MASKED, every token of the
    tile is known valid and the mask is not applied."""
    o_j = j0 + o_t
    m_n = o_j < n_tok
    o_slot = o_j % PAGE_SIZE
    if SPARSE:
        o_lp = tl.load(p_list + (o_j // PAGE_SIZE) * stride_ip, mask=m_n, other=0)
        m_n = m_n & (o_lp * PAGE_SIZE + o_slot < n_len)  # a listed page's tail past the length
    else:
        o_lp = o_j // PAGE_SIZE
    if MASKED:
        o_pp = tl.load(p_pt + o_lp * stride_tp, mask=m_n, other=0)
    else:
        o_pp = tl.load(p_pt + o_lp * stride_tp)
    if not INT32_OFFSETS:
        o_pp = o_pp.to(tl.int64)
        o_slot = o_slot.to(tl.int64)
    return o_pp, o_slot, m_n


@triton.jit
def _attend_tile(
    b_acc, b_l, b_m, b_c, b_q, b_qs, KP, VP, KS, VS, LW, o_pp, o_slot, m_n, o_d, qk_scale,
    stride_kp, stride_ks, stride_vp, stride_vs, stride_sp, stride_ss, stride_wp, stride_ws,
    FP8: tl.constexpr, F16: tl.constexpr, LOG_WEIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Fold the gathered key/value rows into the running softmax of the [G_PAD, D] query tile
    (rows outside m_n left out, unless the tile is known full: not MASKED)."""
    o_k = o_pp * stride_kp + o_slot * stride_ks
    o_v = o_pp * stride_vp + o_slot * stride_vs
    o_s = o_pp * stride_sp + o_slot * stride_ss
    if MASKED:  # masked rows are never loaded: garbage or NaN in padding slots stays out
        b_k = tl.load(KP + o_k[:, None] + o_d[None, :], mask=m_n[:, None], other=0.0)
        b_v = tl.load(VP + o_v[:, None] + o_d[None, :], mask=m_n[:, None], other=0.0)
        if FP8:
            b_sk = tl.load(KS + o_s, mask=m_n, other=0.0)
            b_sv = tl.load(VS + o_s, mask=m_n, other=0.0)
    else:
        b_k = tl.load(KP + o_k[:, None] + o_d[None, :])  # [BLOCK_N, D]
        b_v = tl.load(VP + o_v[:, None] + o_d[None, :])
        if FP8:
            b_sk = tl.load(KS + o_s)
            b_sv = tl.load(VS + o_s)
    if FP8:
        b_sk = b_sk * qk_scale  # k dequantisation folded in
        b_k = b_k.to(b_q.dtype)
        b_v = b_v.to(b_q.dtype)
    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION)  # [G_PAD, BLOCK_N]
    b_s = b_s * b_sk[None, :] if FP8 else b_s * qk_scale
    # F16: the query rows' power-of-two scales b_qs (b_s holds the scores over them) go into the
    # row maxima and into exp2's argument as one FMA, unless log weights must be added first
    if LOG_WEIGHT:  # natural log, into the log2 domain of the scores
        if F16:
            b_s = b_s * b_qs[:, None]
        o_w = o_pp * stride_wp + o_slot * stride_ws
        b_s += tl.load(LW + o_w, mask=m_n, other=0.0)[None, :] * LOG2E_C
    if MASKED:
        b_s = tl.where(m_n[None, :], b_s, float("-inf"))
    b_row = tl.max(b_s, 1)
    if F16 and not LOG_WEIGHT:
        b_row = b_row * b_qs
    b_m_new = tl.maximum(b_m, b_row)
    # a row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN
    b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
    if F16 and not LOG_WEIGHT:
        b_p = tl.exp2(b_s * b_qs[:, None] - b_m_sub[:, None])
    else:
        b_p = tl.exp2(b_s - b_m_sub[:, None])
    b_alpha = tl.exp2(b_m - b_m_sub)
    b_l = b_l * b_alpha + tl.sum(b_p, 1)
    if F16:  # v dequantisation folded into P, relative to the tile's largest V scale (never P,
        # whose tiles can be arbitrarily small). The accumulator stays in units of the last
        # tile's scale b_c, rescaled by the next tile's factor: no multiply after the dot. A term
        # loses float16 precision below 6e-5 of that scale (P * scale): a token of small V scale
        # that draws the attention, in a tile with an unattended token of a 1e4x / 1e5x / 1e6x
        # larger scale, comes out 0.4 % / 1.5 % / 12 % off (interpreter). The accumulator
        # overflows float32 where a tile's largest V scale is 2^115 or more below the tile
        # before's while the row maximum holds (V rows of 1e37 beside rows of 1: far outside
        # 16-bit activations; the twin, which scales every token alone, does not overflow), a
        # bound kept rather than pay a per-row unit a score in this instruction-bound loop.
        # All-zero rows are stored with scale 0 (`decode_reference.quantize_fp8`), so they
        # never set it.
        b_smax = tl.max(tl.abs(b_sv), 0)
        b_smax = tl.where(b_smax > 0.0, b_smax, 1.0)
        b_p = b_p * (b_sv / b_smax)[None, :]
        # alpha first: alpha * b_c / b_smax is 0 where alpha is (b_c / b_smax alone can
        # overflow, and 0 * inf is NaN); finite while b_c / b_smax stays below the bound above
        b_acc = tl.dot(b_p.to(b_v.dtype), b_v, b_acc * (b_alpha * b_c / b_smax)[:, None],
                       input_precision=DOT_PRECISION)  # [G_PAD, D], in units of b_smax
        b_c = b_smax
    else:
        if FP8:
            b_p = b_p * b_sv[None, :]  # v dequantisation folded into P: one multiply per score
        b_acc = tl.dot(b_p.to(b_v.dtype), b_v, b_acc * b_alpha[:, None],
                       input_precision=DOT_PRECISION)
    return b_acc, b_l, b_m_new, b_c


# table sizes vary per step: specialising on their divisibility would only recompile
@triton.jit(do_not_specialize=[
    "stride_tb", "stride_th", "stride_ib", "stride_ih", "MAX_TOK", "MAX_LIST", "SPLITS",
])
def _decode_split_kernel(
    Q, KP, VP, KS, VS, LW, PT, LEN, LIST, CNT, Part, PartLSE,
    stride_qb, stride_qh, stride_kp, stride_ks, stride_vp, stride_vs, stride_sp, stride_ss,
    stride_wp, stride_ws,
    stride_tb, stride_th, stride_tp, stride_lb, stride_lh,
    stride_ib, stride_ih, stride_ip, stride_cb, stride_ch,
    stride_ob, stride_oh, stride_os, stride_od, stride_eb, stride_eh, stride_es,
    H_KV, GROUP, MAX_TOK, MAX_LIST, SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    SPARSE: tl.constexpr, FP8: tl.constexpr, F16: tl.constexpr, LOG_WEIGHT: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INT32_OFFSETS: tl.constexpr,
):
    i_bh, i_s = tl.program_id(0), tl.program_id(1)
    i_b, i_hkv = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    # clamped to the table: out-of-range lengths / counts must not read outside the pool
    n_len = tl.minimum(tl.load(LEN + i_b * stride_lb + i_hkv * stride_lh), MAX_TOK)
    p_list = LIST + i_b * stride_ib + i_hkv * stride_ih
    if SPARSE:
        n_cnt = tl.load(CNT + i_b * stride_cb + i_hkv * stride_ch)
        n_tok = tl.minimum(n_cnt, MAX_LIST) * PAGE_SIZE
    else:
        n_tok = n_len
    # every split of a head takes an equal BLOCK_N-aligned share of that head's own tokens, so a
    # table sized for 128K costs nothing extra at 4K and ragged heads stay balanced
    per_split = tl.cdiv(tl.cdiv(n_tok, SPLITS), BLOCK_N) * BLOCK_N
    j_lo = i_s * per_split
    j_hi = tl.minimum(j_lo + per_split, n_tok)

    o_g = tl.arange(0, G_PAD)
    m_g = o_g < GROUP
    o_h = i_hkv * GROUP + o_g  # query heads sharing this KV head
    o_d = tl.arange(0, HEAD_DIM)
    p_q = Q + i_b * stride_qb + o_h[:, None] * stride_qh + o_d[None, :]
    b_q = tl.load(p_q, mask=m_g[:, None], other=0.0)  # [G_PAD, HEAD_DIM]
    b_qs = tl.full([G_PAD], 1.0, dtype=tl.float32)
    if F16:  # float16 dots: each query row over the power of two at or above its largest
        # magnitude, in range whatever q holds and exact (float16 q unchanged but for the exponent)
        b_qs = tl.max(tl.abs(b_q.to(tl.float32)), 1)
        b_qs = tl.where(b_qs > 0.0, tl.exp2(tl.ceil(tl.log2(b_qs))), 1.0)
        b_q = (b_q.to(tl.float32) / b_qs[:, None]).to(tl.float16)

    b_acc = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    b_l = tl.zeros([G_PAD], dtype=tl.float32)
    b_m = tl.full([G_PAD], float("-inf"), dtype=tl.float32)
    b_c = tl.full([], 1.0, dtype=tl.float32)  # the accumulator's unit (FP8: a tile's V scale)
    p_pt = PT + i_b * stride_tb + i_hkv * stride_th
    o_t = tl.arange(0, BLOCK_N)
    # dense reads: the split's full tiles unmasked (fewer instructions a tile: the loop is
    # instruction-bound on FP8 pages), its partial last tile masked after the loop; a sparse
    # list's pages can end past the length anywhere, so its tiles stay masked
    j_full = j_hi if SPARSE else j_lo + (j_hi - j_lo) // BLOCK_N * BLOCK_N
    for j0 in range(j_lo, j_full, BLOCK_N):
        o_pp, o_slot, m_n = _gather_rows(p_pt, p_list, j0, j_hi, n_len, o_t, stride_tp,
                                         stride_ip, PAGE_SIZE, SPARSE, INT32_OFFSETS, SPARSE)
        b_acc, b_l, b_m, b_c = _attend_tile(
            b_acc, b_l, b_m, b_c, b_q, b_qs, KP, VP, KS, VS, LW, o_pp, o_slot, m_n, o_d, qk_scale,
            stride_kp, stride_ks, stride_vp, stride_vs, stride_sp, stride_ss, stride_wp, stride_ws,
            FP8, F16, LOG_WEIGHT, DOT_PRECISION, SPARSE,
        )
    if not SPARSE:  # noqa: SIM102 (a constexpr: sparse kernels compile no tail)
        if j_full < j_hi:
            o_pp, o_slot, m_n = _gather_rows(p_pt, p_list, j_full, j_hi, n_len, o_t, stride_tp,
                                             stride_ip, PAGE_SIZE, SPARSE, INT32_OFFSETS, True)
            b_acc, b_l, b_m, b_c = _attend_tile(
                b_acc, b_l, b_m, b_c, b_q, b_qs, KP, VP, KS, VS, LW, o_pp, o_slot, m_n, o_d,
                qk_scale, stride_kp, stride_ks, stride_vp, stride_vs, stride_sp, stride_ss,
                stride_wp, stride_ws, FP8, F16, LOG_WEIGHT, DOT_PRECISION, True,
            )

    # an empty split (or head) gives 0 and lse -inf, never 0/0
    b_empty = b_l == 0.0
    b_o = b_acc * (b_c / tl.where(b_empty, 1.0, b_l))[:, None]
    b_lse = (b_m + tl.log2(tl.where(b_empty, 1.0, b_l))) * LN2  # b_m is -inf where empty
    p_o = Part + i_b * stride_ob + o_h[:, None] * stride_oh + i_s * stride_os
    tl.store(p_o + o_d[None, :] * stride_od, b_o.to(Part.dtype.element_ty), mask=m_g[:, None])
    tl.store(PartLSE + i_b * stride_eb + o_h * stride_eh + i_s * stride_es, b_lse, mask=m_g)


@triton.jit
def _combine_kernel(
    Part, PartLSE, Out, OutLSE, H_Q, SPLITS,
    stride_ob, stride_oh, stride_od, stride_eb, stride_eh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, S_PAD: tl.constexpr,
):
    """Merge the SPLITS partial outputs of one query head (contiguous scratch) by their lse, over
    BLOCK_D of its channels: a [S_PAD, HEAD_DIM] float32 tile in one program of four warps held
    128 registers a thread of partials at 128 splits; each program recomputes the weights."""
    i_bh = tl.program_id(0).to(tl.int64)
    i_d = tl.program_id(1)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_s = tl.arange(0, S_PAD)
    m_s = o_s < SPLITS
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    b_lse = tl.load(PartLSE + i_bh * SPLITS + o_s, mask=m_s, other=float("-inf"))  # [S_PAD]
    b_max = tl.max(b_lse, 0)
    b_max = tl.where(b_max == float("-inf"), 0.0, b_max)
    b_w = tl.exp(b_lse - b_max)  # empty splits weigh 0
    p_part = Part + (i_bh * SPLITS + o_s)[:, None] * HEAD_DIM + o_d[None, :]
    b_o = tl.load(p_part, mask=m_s[:, None], other=0.0)  # [S_PAD, BLOCK_D]
    b_sum = tl.sum(b_w, 0)
    b_empty = b_sum == 0.0
    b_out = tl.sum(b_w[:, None] * b_o, 0) / tl.where(b_empty, 1.0, b_sum)
    tl.store(Out + i_b * stride_ob + i_h * stride_oh + o_d * stride_od,
             b_out.to(Out.dtype.element_ty))
    if i_d == 0:
        b_lse_all = tl.where(b_empty, float("-inf"), b_max + tl.log(tl.where(b_empty, 1.0, b_sum)))
        tl.store(OutLSE + i_b * stride_eb + i_h * stride_eh, b_lse_all)
# fmt: on


def num_splits_for(
    batch: int, kv_heads: int, max_tokens: int, device: torch.device, waves: int = 2
) -> int:
    """Splits per KV head: enough programs for ``waves`` waves over the SMs, none below
    MIN_SPLIT_TOKENS tokens; decided from shapes alone (no host sync, CUDA-graph safe)."""
    by_work = cdiv(max_tokens, MIN_SPLIT_TOKENS)
    by_sms = cdiv(waves * sm_count(device), max(batch * kv_heads, 1))  # an empty batch: 1
    return max(1, min(by_work, by_sms, MAX_SPLITS))


def decode_attention(
    q: Tensor,
    k_pages: Tensor,
    v_pages: Tensor,
    page_table: Tensor,
    lengths: Tensor,
    *,
    pages: Tensor | None = None,
    page_count: Tensor | None = None,
    scale: float | None = None,
    k_scale: Tensor | None = None,
    v_scale: Tensor | None = None,
    log_weight: Tensor | None = None,
    out: Tensor | None = None,
    return_lse: bool = False,
    num_splits: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of one query token per sequence over a paged KV cache, Triton split-K.

    Args:
        q: (B, H_q, D) float16/bfloat16/float32, unit stride on D; D a power of two in [16, 256].
            H_q = g * H_kv: query head h reads KV head h // g (native GQA, K/V never repeated).
        k_pages, v_pages: (num_pages, page_size, D) page pools of one layer, q's dtype or
            float8_e4m3fn; page_size a power of two in [8, 256].
        page_table: int32 (B, H_kv, max_pages), the physical page of each logical page; -1 unused.
        lengths: int32 (B, H_kv) valid tokens per head; token t is slot t % page_size of logical
            page t // page_size. 0 is allowed (output 0, lse -inf).
        pages, page_count: optional sparse read list, int32 (B, H_kv, S) ascending logical pages
            padded with -1, and int32 (B, H_kv) entries used; only those pages are read, their
            tokens past ``lengths`` still masked.
        scale: softmax scale, default 1/sqrt(D).
        k_scale, v_scale: float32 (num_pages, page_size) per-token scales of FP8 pools, of one
            stride (value = fp8 * scale; `decode_reference.quantize_fp8` writes powers of two, 0
            for an all-zero token); None otherwise. With 16-bit queries FP8 pools are attended in
            float16 (exact for e4m3; see the module docstring and `_attend_tile`).
        log_weight: optional float32 (num_pages, page_size), natural log of the number of tokens
            each cached token stands for, added to its logit (a token of weight w counts as w
            copies of itself); None: every token counts once.
        out: optional (B, H_q, D) output buffer of q's dtype.
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q).
        num_splits: splits per KV head; default :func:`num_splits_for` the table's capacity.

    Page ids, lengths and the read list are trusted (checking them would synchronise with the GPU;
    the twin checks them); lengths and counts are clamped to the table so reads stay in the pool.

    Example:
        >>> out = decode_attention(q, k_pages, v_pages, page_table, lengths)  # doctest: +SKIP
    """
    check_decode_inputs(
        q, k_pages, v_pages, page_table, lengths, pages, page_count, scale, k_scale, v_scale, out,
        log_weight, return_lse,
    )  # fmt: skip
    if num_splits is not None and not (
        isinstance(num_splits, int) and not isinstance(num_splits, bool) and num_splits >= 1
    ):
        raise ValueError(f"num_splits: expected an int >= 1 or None, got {num_splits!r}")
    check_triton_device("q", q)
    b, h_q, d = q.shape
    h_kv, max_pages = page_table.shape[1], page_table.shape[2]
    page_size = k_pages.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    sparse, fp8 = pages is not None, k_pages.dtype == FP8
    if fp8:
        check_fp8_device("k_pages", k_pages)
    else:  # FP8 pages are dotted in float16 (or float32)
        check_interpreter_dots("q", q)
    max_list = pages.shape[2] if sparse else max_pages
    tokens = min(max_list, max_pages) * page_size  # the most any head reads
    g = h_q // h_kv
    g_pad = max(16, triton.next_power_of_2(g))
    block_n, warps, stages, waves = _tile(b * h_kv, tokens, d, fp8, sparse, g_pad)
    if k_pages.element_size() == 4:  # float32 pools: a stage of K and V tiles is twice as large
        stages = min(stages, 2)
    if num_splits is None:
        num_splits = num_splits_for(b, h_kv, tokens, q.device, waves)
    out = torch.empty_like(q, memory_format=torch.contiguous_format) if out is None else out
    lse = torch.empty((b, h_q), dtype=torch.float32, device=q.device)
    if num_splits == 1:  # the split kernel writes the result itself
        part, part_lse = out.unsqueeze(2), lse.unsqueeze(2)
    else:
        part = torch.empty((b, h_q, num_splits, d), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((b, h_q, num_splits), dtype=torch.float32, device=q.device)
    # without a list / scales their pointers are never read: pass placeholders
    lst, cnt = (pages, page_count) if sparse else (page_table, lengths)
    ks, vs = (k_scale, v_scale) if fp8 else (lengths, lengths)
    lw = lengths if log_weight is None else log_weight
    # fmt: off
    args = (
        q, k_pages, v_pages, ks, vs, lw, page_table, lengths, lst, cnt, part, part_lse,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1),
        v_pages.stride(0), v_pages.stride(1), ks.stride(0), ks.stride(-1),
        lw.stride(0), lw.stride(-1),
        *page_table.stride(), *lengths.stride(), *lst.stride(), *cnt.stride(),
        *part.stride(), *part_lse.stride(),
        h_kv, g, max_pages * page_size, max_list, num_splits, scale * LOG2E,
    )
    # fmt: on
    meta = {
        "HEAD_DIM": d,
        "G_PAD": g_pad,
        "PAGE_SIZE": page_size,
        "BLOCK_N": block_n,
        "SPARSE": sparse,
        "FP8": fp8,
        "F16": fp8 and q.dtype != torch.float32,
        "LOG_WEIGHT": log_weight is not None,
        "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
        "INT32_OFFSETS": _fits_int32(k_pages, v_pages, k_scale, v_scale, log_weight),
    }
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _decode_split_kernel[(b * h_kv, num_splits)](
            *args, **meta, num_warps=warps, num_stages=stages
        )
        if num_splits > 1:
            block_d = min(d, COMBINE_D)
            _combine_kernel[(b * h_q, d // block_d)](
                part, part_lse, out, lse, h_q, num_splits, *out.stride(), *lse.stride(),
                HEAD_DIM=d, BLOCK_D=block_d, S_PAD=triton.next_power_of_2(num_splits),
            )  # fmt: skip
    return (out, lse) if return_lse else out


def _fits_int32(*pools: Tensor | None) -> bool:
    """Whether every element offset of these pools fits int32. Int64 row addresses took a third
    of the loop's instructions (offline sm_90 SASS, bf16 pages, one-warp 32-token tile: 1040
    against 688 a thread; FP8 pages 1425 against 1213)."""
    return all(
        sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) < 2**31
        for t in pools
        if t is not None
    )


def _tile(
    heads: int, tokens: int, head_dim: int, fp8: bool, sparse: bool, g_pad: int = 16
) -> tuple[int, int, int, int]:
    """BLOCK_N, warps, pipeline stages and waves of programs over the SMs for ``heads`` (batch x
    KV heads) heads of ``head_dim`` reading up to ``tokens`` tokens each (of a ``sparse`` read
    list or not), ``g_pad`` query rows a program. The interpreter takes 16-token tiles, so
    tests cover tiles spanning several pages as well as pages spanning several tiles."""
    if INTERPRET:
        return 16, 4, 1, 2
    # Measured on the H200, L2 flushed, 32K and 128K tokens (benchmarks/results/h200/: the folder
    # of each claim; SESSIONS.md has the sweeps). One-warp programs of 32 tokens need no
    # cross-warp softmax reduction and no shared-memory exchange of P: at D 128 they are the
    # fastest dense tiles at 64 heads from 8K tokens (warps2/) and, with int32 addresses and
    # unmasked full tiles, at 8 heads from 32K (decode18c/: FP8 128K 89 us against 115 for
    # 64 x 2 warps and 119 for 128 x 4; bf16 within 2 % of the best); five stages on FP8 pages
    # (decode18e/: 526 against 576-582 us at 64 heads / 128K, 78 against 85-89 at 8 heads), four
    # on bf16 (five 0-4 % slower). 16-63 heads at 32K+ and groups of more than 16 query heads (a
    # 128+-register accumulator in one warp) are not measured; the latter keep the tiles below.
    one_warp = not sparse and g_pad <= 16
    if head_dim == 128 and one_warp and (heads >= 64 or tokens >= 32768):
        return 32, 1, 5 if fp8 else 4, 16
    # D 64, 24+ heads (SmolLM2 at batch 8), FP8 reads of 32K+: one warp over 32 waves, five stages
    # (decode18c/, decode18f_tune/: 127 us at 128K against 166 over 16 waves at four stages).
    if fp8 and one_warp and tokens >= 32768 and head_dim == 64 and heads >= 24:
        return 32, 1, 5, 32
    if head_dim > 128:  # D 256 halves the tile (not measured)
        return 64, 4 if fp8 else 8, 2, 2
    # 128 x 4 warps over eight waves (decode_waves/, decode_rp/smollm2/): 9-21 % faster than two
    # waves on FP8 pages, 1.3-2.5x on 1/16 sparse reads, 1.05-1.23x on D 64 dense bf16 reads;
    # dense bf16 reads at D 128 below 32K tokens keep 128 x 8 warps over two (4-9 % faster at
    # batch 8, decode_tune_read/).
    if fp8 or sparse or head_dim == 64:
        return 128, 4, 2, 8
    return 128, 8, 2, 2
