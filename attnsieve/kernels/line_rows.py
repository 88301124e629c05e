"""The per-row step of MInference's vertical-slash layout (`Layout.from_lines`) in one Triton pass.

The twin, `attnsieve.layout_spans.line_rows`, computes every (head, query block) row's spans and
visible columns as whole-tensor passes: about twenty elementwise ops, three prefix sums and
scatters, and two binary searches over the (B, H, QB, C) columns, 7 ms of `from_lines` at 128K
on Llama-3-8B's 32 heads. Here one program builds one row: its spans from its head's diagonal
bands in descending order (ascending keys), then its columns outside them, each compacted by a
prefix sum and padded. A column c is covered in a block at [first, last] iff the first band
ending past first - c starts at or before last - c: a binary search in the head's band ends,
one step per bit of the band count.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device
from attnsieve.layout_spans import PAD

_BLOCK = 512  # bands or columns a program handles at a time


# fmt: off
@triton.jit(do_not_specialize=["QB", "NB", "C"])
def _line_rows_kernel(
    COLS, LO, HI, NBANDS, FIRST, LAST, K0,
    COL_IDX, COL_COUNT, SPAN_START, SPAN_END, SPAN_COUNT,
    QB, NB, C, C_OUT, PAD_VALUE: tl.constexpr, SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr,
):
    i_row = tl.program_id(0).to(tl.int64)  # over B * H * QB rows (a 1-D grid: no 65535 limit)
    i_bh, i_q = i_row // QB, i_row % QB
    p0, p1, k0 = tl.load(FIRST + i_q), tl.load(LAST + i_q), tl.load(K0 + i_q)
    n_bands = tl.load(NBANDS + i_bh)
    p_lo, p_hi = LO + i_bh * NB, HI + i_bh * NB
    o = tl.arange(0, BLOCK)

    # spans: band j (descending) covers keys [max(p0 - hi + 1, 0), min(p1 - lo + 1, k0))
    p_start, p_end = SPAN_START + i_row * NB, SPAN_END + i_row * NB
    kept = 0
    for i in range(0, NB, BLOCK):
        j = n_bands - 1 - (i + o)
        m_j = j >= 0
        lo = tl.load(p_lo + j, mask=m_j, other=0)
        hi = tl.load(p_hi + j, mask=m_j, other=0)
        start = tl.maximum(p0 - hi + 1, 0)
        end = tl.minimum(p1 - lo + 1, k0)
        keep = (m_j & (lo <= p1) & (start < end)).to(tl.int32)
        slot = kept + tl.cumsum(keep, 0) - 1
        tl.store(p_start + slot, start, mask=keep != 0)
        tl.store(p_end + slot, end, mask=keep != 0)
        kept += tl.sum(keep, 0)
    for i in range(0, NB, BLOCK):
        m_pad = (i + o >= kept) & (i + o < NB)
        tl.store(p_start + i + o, tl.full([BLOCK], PAD_VALUE, tl.int32), mask=m_pad)
        tl.store(p_end + i + o, tl.full([BLOCK], PAD_VALUE, tl.int32), mask=m_pad)
    tl.store(SPAN_COUNT + i_row, kept)

    # columns: visible (c <= p1), before the diagonal blocks, outside every span, not a repeat
    p_idx = COL_IDX + i_row * C_OUT
    kept = 0
    for i in range(0, C, BLOCK):
        o_c = i + o
        m_c = o_c < C
        c = tl.load(COLS + i_bh * C + o_c, mask=m_c, other=0)
        prev = tl.load(COLS + i_bh * C + o_c - 1, mask=m_c & (o_c > 0), other=-1)
        m_see = m_c & (c <= p1) & (c < k0) & (c != prev)
        # j = the number of bands ending at or before p0 - c (band ends ascend)
        j = tl.zeros([BLOCK], dtype=tl.int32)
        for step in tl.static_range(SEARCH_STEPS):
            probe = j + (1 << (SEARCH_STEPS - 1 - step))
            m_probe = m_see & (probe <= n_bands)
            hi = tl.load(p_hi + probe - 1, mask=m_probe, other=0)
            j = tl.where(m_probe & (hi <= p0 - c), probe, j)
        lo = tl.load(p_lo + j, mask=m_see & (j < n_bands), other=0)
        covered = (j < n_bands) & (lo <= p1 - c)
        keep = (m_see & ~covered).to(tl.int32)
        slot = kept + tl.cumsum(keep, 0) - 1
        tl.store(p_idx + slot, c, mask=keep != 0)
        kept += tl.sum(keep, 0)
    for i in range(0, C_OUT, BLOCK):
        m_pad = (i + o >= kept) & (i + o < C_OUT)
        tl.store(p_idx + i + o, tl.full([BLOCK], PAD_VALUE, tl.int32), mask=m_pad)
    tl.store(COL_COUNT + i_row, kept)
# fmt: on


def line_rows(
    cols: Tensor, lo: Tensor, hi: Tensor, n: Tensor, first: Tensor, last: Tensor, k0: Tensor
) -> tuple[Tensor, ...]:
    """Triton `attnsieve.layout_spans.line_rows`, same arguments and outputs: int32 sorted
    columns (B, H, C), bands lo, hi (B, H, nb) with count n (B, H), and int32 (QB,) first, last,
    k0 of the query blocks."""
    check_triton_device("cols", cols)
    b, h, c = cols.shape
    nb, qb = lo.shape[-1], first.shape[0]
    c_out = max(c, 1)
    col_idx = torch.empty((b, h, qb, c_out), dtype=torch.int32, device=cols.device)
    span_start = torch.empty((b, h, qb, nb), dtype=torch.int32, device=cols.device)
    span_end = torch.empty_like(span_start)
    col_count, span_count = torch.empty((2, b, h, qb), dtype=torch.int32, device=cols.device)
    if b * h * qb == 0:
        return col_idx, col_count, span_start, span_end, span_count
    with torch.cuda.device(cols.device) if cols.is_cuda else contextlib.nullcontext():
        _line_rows_kernel[(b * h * qb,)](
            cols.contiguous(), lo.contiguous(), hi.contiguous(), n.to(torch.int32).contiguous(),
            first.contiguous(), last.contiguous(), k0.contiguous(), col_idx, col_count,
            span_start, span_end, span_count, qb, nb, c, c_out, PAD_VALUE=PAD,
            SEARCH_STEPS=nb.bit_length(), BLOCK=_BLOCK,
        )  # fmt: skip
    return col_idx, col_count, span_start, span_end, span_count
