"""The block mask of chosen key columns and diagonal bands, in one Triton pass.

FlexPrefill's plan (arXiv 2502.20766) ORs its chosen key blocks, the blocks its chosen diagonal
bands cross, the diagonal blocks and its query-aware heads' maps. Composed from tensor ops (the
twin, `attnsieve.kernels.line_mask_reference.line_block_mask`) that took about ten passes over
the whole (B, H, QB, KB) mask, 1 ms of a 4 ms plan at 128K on Llama-3-8B's heads
(benchmarks/results/h200/plan16/profile_llama.log). Here a program writes a tile of one head's
mask: a block is crossed iff one of the few bands between its lowest and highest diagonal is
chosen, read straight from the band list.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device
from attnsieve.kernels.prefill import unit_last

_BLOCK_I, _BLOCK_J = 8, 128  # query blocks x key blocks a program writes at a time


# fmt: off
@triton.jit(do_not_specialize=["QB", "KB"])
def _line_mask_kernel(
    VERT, BANDS, EXTRA, HEADS, OUT,
    stride_vb, stride_vh, stride_sb, stride_sh, stride_xb, stride_xh, stride_xq,
    stride_hb, stride_hh, H, N, M, QB, KB, BLOCK_Q, BLOCK_K,
    BAND: tl.constexpr, HAS_BANDS: tl.constexpr, HAS_EXTRA: tl.constexpr, HAS_HEADS: tl.constexpr,
    SPAN: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
):
    i_bh, i_q = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_i = i_q * BLOCK_I + tl.arange(0, BLOCK_I)
    first = M - N + o_i * BLOCK_Q  # absolute positions of each query block's first / last query
    last = M - N + tl.minimum(o_i * BLOCK_Q + BLOCK_Q, N) - 1
    p_out = OUT + (i_bh.to(tl.int64) * QB + o_i.to(tl.int64)[:, None]) * KB
    if HAS_HEADS:  # whether this head's extra blocks count (else they are never read): a
        # [1, 1] tile, as the interpreter types a scalar bool & a bool tile as uint8
        p_head = HEADS + i_b * stride_hb + i_h * stride_hh
        head_on = tl.load(p_head + tl.zeros([1, 1], dtype=tl.int32)) != 0
    if HAS_EXTRA:
        p_x = EXTRA + i_b * stride_xb + i_h * stride_xh + o_i.to(tl.int64)[:, None] * stride_xq
    # key blocks past the last one the program's query blocks see keep only their extra blocks
    # (kept as given), not computed: causal masks leave about half of them, and the kernel's
    # per-entry instructions bound it, not memory (27.5 us at 64K on Llama-3-8B's heads, H200,
    # benchmarks/results/h200/hopper45/profile_65536.log, for an 8 MB mask written and the
    # query-aware heads' maps read)
    last_seen = M - N + tl.minimum(tl.minimum(i_q * BLOCK_I + BLOCK_I, QB) * BLOCK_Q, N) - 1
    kb_seen = tl.minimum(tl.maximum(last_seen, 0) // BLOCK_K + 1, KB)
    for j0 in range((kb_seen + BLOCK_J - 1) // BLOCK_J * BLOCK_J, KB, BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        m_ij = (o_i < QB)[:, None] & (o_j < KB)[None, :]
        keep = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.int1)
        if HAS_EXTRA:
            m_x = m_ij & head_on if HAS_HEADS else m_ij
            keep |= tl.load(p_x + o_j[None, :], mask=m_x, other=0) != 0
        tl.store(p_out + o_j[None, :], keep.to(tl.uint8), mask=m_ij)
    for j0 in range(0, kb_seen, BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        m_j = o_j < KB
        k0 = o_j * BLOCK_K
        k1 = tl.minimum(k0 + BLOCK_K, M) - 1
        m_ij = (o_i < QB)[:, None] & m_j[None, :]
        visible = k0[None, :] <= last[:, None]
        keep = visible & (k1[None, :] >= first[:, None])  # the diagonal blocks
        chosen = tl.load(VERT + i_b * stride_vb + i_h * stride_vh + o_j, mask=m_j, other=0) != 0
        keep |= visible & chosen[None, :]
        if HAS_BANDS:
            # diagonals [lo, hi] cross the block: bands lo // BAND .. hi // BAND, at most SPAN
            lo = tl.minimum(tl.maximum(first[:, None] - k1[None, :], 0), M)
            hi = tl.minimum(last[:, None] - k0[None, :], M - 1)
            s_lo, s_hi = lo // BAND, tl.maximum(hi, 0) // BAND
            p_band = BANDS + i_b * stride_sb + i_h * stride_sh
            for t in tl.static_range(SPAN):
                m_t = m_ij & (hi >= lo) & (s_lo + t <= s_hi)
                keep |= tl.load(p_band + s_lo + t, mask=m_t, other=0) != 0
        if HAS_EXTRA:
            m_x = m_ij & head_on if HAS_HEADS else m_ij
            keep |= tl.load(p_x + o_j[None, :], mask=m_x, other=0) != 0
        tl.store(p_out + o_j[None, :], keep.to(tl.uint8), mask=m_ij)
# fmt: on


def line_block_mask(
    verticals: Tensor,
    bands: Tensor | None,
    *,
    band: int,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    extra: Tensor | None = None,
    extra_heads: Tensor | None = None,
) -> Tensor:
    """bool (B, H, QB, KB), the twin's semantics: visible chosen key blocks, blocks crossed by
    chosen diagonal bands, diagonal blocks, and ``extra`` in ``extra_heads``. `attnsieve.api.
    line_block_mask` checks the arguments."""
    check_triton_device("verticals", verticals)
    b, h, kb = verticals.shape
    qb = triton.cdiv(num_queries, block_q)
    out = torch.empty((b, h, qb, kb), dtype=torch.uint8, device=verticals.device)
    if out.numel() == 0:
        return out.view(torch.bool)
    verticals = unit_last(verticals).view(torch.uint8)
    bands_u8 = verticals if bands is None else unit_last(bands).view(torch.uint8)
    extra_u8 = out if extra is None else unit_last(extra).view(torch.uint8)
    heads = verticals if extra_heads is None else extra_heads.view(torch.uint8)
    strides = (
        *verticals.stride()[:2], *bands_u8.stride()[:2], *extra_u8.stride()[:3],
        *heads.stride()[:2],
    )  # fmt: skip
    # a block's diagonals [lo, hi] span at most block_q + block_k - 2, so this many bands
    span = (block_q + block_k - 2) // band + 2
    with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():
        _line_mask_kernel[(b * h, triton.cdiv(qb, _BLOCK_I))](
            verticals, bands_u8, extra_u8, heads, out, *strides, h, num_queries, num_keys,
            qb, kb, block_q, block_k, BAND=band,
            HAS_BANDS=bands is not None, HAS_EXTRA=extra is not None,
            HAS_HEADS=extra_heads is not None, SPAN=span, BLOCK_I=_BLOCK_I,
            BLOCK_J=min(_BLOCK_J, triton.next_power_of_2(kb)),
        )  # fmt: skip
    return out.view(torch.bool)
