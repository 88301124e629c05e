"""A Layout's computed (query, key) pairs per query block, in one Triton pass.

`Layout.pairs` (the twin) counts them in closed form with a dozen int64 tensor ops over the
whole (B, H, QB, K) block list. A block plan keeps one slot per key block (K = KB, no host sync),
so at 128K tokens on SmolLM2's heads each op touches 9.4M entries, and the patched model, which
records every planned layer's density, spent about 1.3 ms a layer on them (profile of one forward,
benchmarks/results/h200/profile_e2e/). Here one program reads one query block's blocks, columns
and spans and writes its pair count.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device
from attnsieve.kernels.prefill import layout_tensors
from attnsieve.layout import Layout

_SLOTS = 128  # list entries a program reads at a time


@triton.jit
def _ramp_sum(x, length):
    """sum over t <= x of clamp(t, 0, length), int64 (the twin's
    `layout_counts._clamped_ramp_sum`)."""
    inside = tl.minimum(tl.maximum(x, 0), length)
    return inside * (inside + 1) // 2 + tl.maximum(x - length, 0) * length


@triton.jit
def _tile_pairs(
    IDX,
    COUNT,
    o_row,
    o_cnt,
    END,
    p0,
    p1,
    rows,
    width_k,
    KIND: tl.constexpr,
    CAUSAL: tl.constexpr,
    SLOTS: tl.constexpr,
):
    """Pairs of one query block (absolute rows [p0, p1], ``rows`` of them) with the counted
    entries of its row of a list: KIND 0 key blocks of ``width_k`` keys (END: the number of keys,
    which clips the last block), 1 columns, 2 spans [IDX, END) (END: the span ends)."""
    n = tl.load(COUNT + o_cnt)
    total = tl.zeros([SLOTS], dtype=tl.int64)
    for s in range(0, n, SLOTS):
        o = s + tl.arange(0, SLOTS)
        m = o < n
        first = tl.load(IDX + o_row + o, mask=m, other=0).to(tl.int64)
        if KIND == 0:
            k0 = first * width_k
            width = tl.minimum(k0 + width_k, END) - k0  # END: the number of keys
        elif KIND == 1:
            k0 = first
            width = tl.full([SLOTS], 1, tl.int64)
        else:
            k0 = first
            width = tl.load(END + o_row + o, mask=m, other=0).to(tl.int64) - k0
        if CAUSAL:  # the row at position p sees clamp(p + 1 - k0, 0, width) of the tile's keys
            pairs = _ramp_sum(p1 + 1 - k0, width) - _ramp_sum(p0 - k0, width)
        else:
            pairs = width * rows
        total += tl.where(m, pairs, 0)
    return tl.sum(total, 0)


# fmt: off
@triton.jit(do_not_specialize=[
    "stride_ib", "stride_ih", "stride_iq", "stride_cb", "stride_ch", "stride_cq",
    "stride_xb", "stride_xh", "stride_xq", "stride_yb", "stride_yh", "stride_yq",
    "stride_sb", "stride_sh", "stride_sq", "stride_tb", "stride_th", "stride_tq", "N", "M",
])
def _pairs_kernel(
    BIDX, BCNT, CIDX, CCNT, SSTART, SEND, SCNT, OUT,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
    stride_xb, stride_xh, stride_xq, stride_yb, stride_yh, stride_yq,
    stride_sb, stride_sh, stride_sq, stride_tb, stride_th, stride_tq,
    H, N, M,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_COLUMNS: tl.constexpr, HAS_SPANS: tl.constexpr, SLOTS: tl.constexpr,
):
    i_qb, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    i_q = i_qb.to(tl.int64)
    row0 = i_q * BLOCK_Q
    row1 = tl.minimum(row0 + BLOCK_Q, N)
    p0, p1 = row0 + (M - N), row1 - 1 + (M - N)  # absolute positions of the first, last rows
    o_row = i_b * stride_ib + i_h * stride_ih + i_q * stride_iq
    o_cnt = i_b * stride_cb + i_h * stride_ch + i_q * stride_cq
    total = _tile_pairs(BIDX, BCNT, o_row, o_cnt, M, p0, p1, row1 - row0, BLOCK_K,
                        0, CAUSAL, SLOTS)
    if HAS_COLUMNS:
        o_row = i_b * stride_xb + i_h * stride_xh + i_q * stride_xq
        o_cnt = i_b * stride_yb + i_h * stride_yh + i_q * stride_yq
        total += _tile_pairs(CIDX, CCNT, o_row, o_cnt, M, p0, p1, row1 - row0, 1,
                             1, CAUSAL, SLOTS)
    if HAS_SPANS:  # start and end share strides (the launcher makes sure)
        o_row = i_b * stride_sb + i_h * stride_sh + i_q * stride_sq
        o_cnt = i_b * stride_tb + i_h * stride_th + i_q * stride_tq
        total += _tile_pairs(SSTART, SCNT, o_row, o_cnt, SEND, p0, p1, row1 - row0, 1,
                             2, CAUSAL, SLOTS)
    tl.store(OUT + i_bh.to(tl.int64) * tl.num_programs(0) + i_q, total)
# fmt: on


def layout_pairs(layout: Layout, causal: bool = True) -> Tensor:
    """int64 (B, H, QB): the (query, key) pairs each query block of ``layout`` computes, causal
    or not; summed over query blocks, `Layout.pairs` (the twin)."""
    check_triton_device("layout.block_idx", layout.block_idx)
    b, h, qb = layout.batch, layout.heads, layout.num_q_blocks
    out = torch.empty((b, h, qb), dtype=torch.int64, device=layout.device)
    if out.numel() == 0:
        return out
    bidx, bcnt, cidx, ccnt, sstart, send, scnt = layout_tensors(layout)
    # fmt: off
    args = (
        bidx, bcnt, cidx, ccnt, sstart, send, scnt, out,
        *bidx.stride()[:3], *bcnt.stride(), *cidx.stride()[:3], *ccnt.stride(),
        *sstart.stride()[:3], *scnt.stride(), h, layout.num_queries, layout.num_keys,
    )
    # fmt: on
    with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():
        _pairs_kernel[(qb, b * h)](
            *args, BLOCK_Q=layout.block_q, BLOCK_K=layout.block_k, CAUSAL=bool(causal),
            HAS_COLUMNS=layout.has_columns, HAS_SPANS=layout.has_spans, SLOTS=_SLOTS,
        )  # fmt: skip
    return out
