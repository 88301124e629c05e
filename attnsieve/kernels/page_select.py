"""Top-``count`` selection in Triton: one launch from page scores to the ascending index list a
sparse decode step reads (Quest), or to a mask of each row's largest entries (FlexPrefill's key
blocks and diagonals), replacing a top-k or argsort and what follows it.

Program (b, h) maps its row of float32 scores to order-preserving int32 keys and finds T, the
count-th largest key or any key value with exactly count keys at or above it, by bisection on
its bits (the sign, then up to 31 bits from the top: each step counts the keys above a
candidate; it stops at the first T with exactly count keys at or above it). A radix select, four
histograms of a byte each (`tl.histogram`), took 3.5x as long on the H200 (67.2 against 18.9 us
a row of 8192 pages, benchmarks/results/h200/select42/radix/). One pass in index order then
keeps the keys above T and the first (count - #above) keys equal to T (ties go to lower
indices), as a mask or each kept index at its exclusive prefix count, so the list comes out
ascending; slots [count, width) get -1. A row of at most BLOCK pages stays in registers through
the bisection; longer rows are re-read BLOCK pages at a time. No host synchronisation, fixed
output shapes (CUDA-graph capturable). The twins are in
:mod:`attnsieve.kernels.page_select_reference`.

`page_budget` turns a selector's token budget into pages per head in one launch (the half-dozen
small PyTorch ops it replaces were, on a replayed decode step, as many launches a layer).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device

INT32_MIN = tl.constexpr(-2147483648)
# keys a program holds in registers at once: 32 a thread at 8 warps
_MAX_BLOCK = 8192


# fmt: off
@triton.jit
def order_keys(p_s, o_p, P, stride_sp):
    """int32 order keys of the scores at pages o_p (INT32_MIN past P: never above a threshold)."""
    m_p = o_p < P
    b_score = tl.load(p_s + o_p.to(tl.int64) * stride_sp, mask=m_p, other=0.0)
    b_bits = b_score.to(tl.int32, bitcast=True)
    b_key = tl.where(b_bits < 0, b_bits ^ 0x7FFFFFFF, b_bits)
    return tl.where(m_p, b_key, INT32_MIN)


@triton.jit
def count_above(p_s, b_key, t, P, stride_sp, SINGLE: tl.constexpr, BLOCK: tl.constexpr):
    """Number of keys of the row strictly above t (b_key: the whole row when SINGLE)."""
    if SINGLE:
        n = tl.sum((b_key > t).to(tl.int32), 0)
    else:
        n = 0
        for i_p in range(0, P, BLOCK):
            b_chunk = order_keys(p_s, i_p + tl.arange(0, BLOCK), P, stride_sp)
            n += tl.sum((b_chunk > t).to(tl.int32), 0)
    return n


@triton.jit
def top_threshold(p_s, b_key, n_sel, P, stride_sp, SINGLE: tl.constexpr, BLOCK: tl.constexpr):
    """(T, n_tie): the n_sel-th largest key of the row at p_s (or any key value with exactly
    n_sel keys at or above it) and how many keys equal to T to keep after those above it."""
    # T = the largest t with #(key >= t) >= n_sel, i.e. #(key > t - 1) >= n_sel; fixing the sign
    # first, setting a lower bit always raises t (two's complement), so t - 1 never wraps. Any t
    # with #(key >= t) == n_sel picks the same keys as T, so the search stops at the first one
    # (distinct scores: after about 32 - log2(the gap at the n_sel-th key) steps, not 32)
    n = count_above(p_s, b_key, -1, P, stride_sp, SINGLE, BLOCK)
    t = tl.where(n >= n_sel, 0, INT32_MIN)
    n_t = tl.where(n >= n_sel, n, -1)  # #(key >= t); -1: not counted (t = INT32_MIN)
    i_bit = 0
    while (i_bit < 31) & (n_t != n_sel):
        cand = t | (1 << (30 - i_bit))
        n = count_above(p_s, b_key, cand - 1, P, stride_sp, SINGLE, BLOCK)
        t = tl.where(n >= n_sel, cand, t)
        n_t = tl.where(n >= n_sel, n, n_t)
        i_bit += 1
    return t, n_sel - count_above(p_s, b_key, t, P, stride_sp, SINGLE, BLOCK)


@triton.jit
def store_top(p_s, p_out, t, n_tie, P, stride_sp, BLOCK: tl.constexpr, MASK: tl.constexpr,
              KEEP_FIRST: tl.constexpr):
    """In index order, every key above T and the first n_tie keys equal to it: as a uint8 mask of
    P entries (KEEP_FIRST: entry 0 too), or each index at its slot, the prefix count."""
    o_b = tl.arange(0, BLOCK)
    n_kept, n_eq = 0, 0
    for i_p in range(0, P, BLOCK):
        o_p = i_p + o_b
        b_chunk = order_keys(p_s, o_p, P, stride_sp)
        m_eq = (b_chunk == t) & (o_p < P)
        b_eq = m_eq.to(tl.int32)
        m_keep = (b_chunk > t) | (m_eq & (n_eq + tl.cumsum(b_eq, 0) - b_eq < n_tie))
        n_eq += tl.sum(b_eq, 0)
        if MASK:
            if KEEP_FIRST:
                m_keep |= o_p == 0
            tl.store(p_out + o_p, m_keep.to(tl.uint8), mask=o_p < P)
        else:
            b_keep = m_keep.to(tl.int32)
            tl.store(p_out + n_kept + tl.cumsum(b_keep, 0) - b_keep, o_p, mask=m_keep)
            n_kept += tl.sum(b_keep, 0)


@triton.jit
def _page_select_kernel(
    S, COUNT, IDX, N_OUT,
    stride_sb, stride_sh, stride_sp, stride_cb, stride_ch,
    H, P, WIDTH,
    SINGLE: tl.constexpr, BLOCK: tl.constexpr, MASK: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    p_s = S + i_b * stride_sb + i_h * stride_sh
    n_sel = tl.load(COUNT + i_b * stride_cb + i_h * stride_ch)  # clamped before any narrowing
    n_sel = tl.minimum(tl.maximum(n_sel, 0), tl.minimum(WIDTH, P)).to(tl.int32)
    b_key = order_keys(p_s, tl.arange(0, BLOCK), P, stride_sp)  # [BLOCK]; only used when SINGLE
    t, n_tie = top_threshold(p_s, b_key, n_sel, P, stride_sp, SINGLE, BLOCK)
    p_idx = IDX + i_bh.to(tl.int64) * (P if MASK else WIDTH)
    store_top(p_s, p_idx, t, n_tie, P, stride_sp, BLOCK, MASK, False)
    if not MASK:
        for i_w in range(0, WIDTH, BLOCK):
            o_w = i_w + tl.arange(0, BLOCK)
            tl.store(p_idx + o_w, -1, mask=(o_w >= n_sel) & (o_w < WIDTH))
        tl.store(N_OUT + i_bh, n_sel)
# fmt: on


def select_pages(score: Tensor, count: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The ``count`` largest entries of each row of ``score``, as ascending page lists, Triton.

    Args:
        score: float32 (B, H, P), any strides; NaNs rank by their bits (as the twin's keys).
        count: integer (B, H) entries to pick per row, clamped to [0, min(width, P)].
        width: slots per list, >= 1.

    Returns ``(idx, n)``: int32 (B, H, width) contiguous, the picked indices ascending then -1;
    int32 (B, H) the clamped count. Ties at the threshold go to the lower indices. A row of
    distinct entries picks what ``score.topk(count)`` picks. `attnsieve.api.select_pages` checks
    the arguments.
    """
    check_triton_device("score", score)
    b, h, p = score.shape
    idx = torch.empty((b, h, width), dtype=torch.int32, device=score.device)
    n = torch.empty((b, h), dtype=torch.int32, device=score.device)
    _launch(score, count, idx, n, width, mask=False)
    return idx, n


def top_mask(score: Tensor, count: Tensor) -> Tensor:
    """bool like ``score`` (B, H, P), contiguous: each row's ``count`` (B, H) largest entries,
    count clamped to [0, P], ties to the lower indices, in one launch (the argsort, scatter and
    compare it replaces were three). The same search as `select_pages`; the twin is
    :func:`attnsieve.kernels.page_select_reference.top_mask`, `attnsieve.api.top_mask` checks the
    arguments."""
    check_triton_device("score", score)
    out = torch.empty(score.shape, dtype=torch.uint8, device=score.device)
    _launch(score, count, out, out, score.shape[2], mask=True)
    return out.view(torch.bool)


def _launch(score: Tensor, count: Tensor, idx: Tensor, n: Tensor, width: int, mask: bool) -> None:
    b, h, p = score.shape
    if b * h == 0:
        return
    block = min(max(triton.next_power_of_2(p), 128), _MAX_BLOCK)
    with torch.cuda.device(score.device) if score.is_cuda else contextlib.nullcontext():
        _page_select_kernel[(b * h,)](
            score, count, idx, n, *score.stride(), *count.stride(), h, p, width,
            # 8 warps at 8192 pages: 21.2 us a row against 22.9 at 16 warps, 36.9 at 4 (H200,
            # benchmarks/results/h200/select/warps/); 4 warps up to 2048 pages, as fast as 8 there
            SINGLE=p <= block, BLOCK=block, MASK=mask, num_warps=min(8, max(4, block // 512)),
        )  # fmt: skip


@triton.jit
def _page_budget_kernel(
    LEN, CNT, OUT, H, N, stride_lb, stride_lh, stride_cb, stride_ch, budget, ratio,
    PAGE_SIZE: tl.constexpr, BY_RATIO: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < N
    i_b, i_h = o // H, o % H
    n_len = tl.load(LEN + i_b * stride_lb + i_h * stride_lh, mask=m, other=0)
    n_pages = tl.load(CNT + i_b * stride_cb + i_h * stride_ch, mask=m, other=0)
    if BY_RATIO:  # float32 as the twin: ceil(ratio x length)
        target = tl.minimum(tl.math.ceil(n_len.to(tl.float32) * ratio).to(tl.int32), n_len)
    else:
        target = tl.minimum(n_len, budget)
    pages = tl.where(target >= n_len, n_pages, tl.maximum(target // PAGE_SIZE, 1))
    pages = tl.minimum(pages, n_pages)  # a target of the whole length: every page
    tl.store(OUT + o, pages, mask=m)


def page_budget(
    lengths: Tensor,
    page_count: Tensor,
    page_size: int,
    budget_tokens: int | None,
    ratio: float | None,
) -> Tensor:
    """int32 (B, H) pages each head reads, in one launch; see
    :func:`attnsieve.kernels.page_select_reference.page_budget`, its twin.
    `attnsieve.api.page_budget` checks the arguments."""
    check_triton_device("lengths", lengths)
    b, h = lengths.shape
    out = torch.empty((b, h), dtype=torch.int32, device=lengths.device)
    if out.numel() == 0:
        return out
    block = min(1024, triton.next_power_of_2(b * h))
    by_ratio = budget_tokens is None
    with torch.cuda.device(lengths.device) if lengths.is_cuda else contextlib.nullcontext():
        _page_budget_kernel[(triton.cdiv(b * h, block),)](
            lengths, page_count, out, h, b * h, *lengths.stride(), *page_count.stride(),
            0 if by_ratio else budget_tokens, ratio if by_ratio else 0.0,
            PAGE_SIZE=page_size, BY_RATIO=by_ratio, BLOCK=block,
        )  # fmt: skip
    return out
