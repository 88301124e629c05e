"""The block mask of chosen key columns and diagonal bands, in one Triton pass: as a mask, or
packed straight into a layout's sorted block lists (`line_block_lists`, FlexPrefill's plan: a
second launch packing the mask cost 3.2 us of a 0.195 ms plan at 32K on Llama-3-8B's heads, H200,
benchmarks/results/h200/pdl49/d/).

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
from attnsieve.layout_spans import PAD

_BLOCK_I, _BLOCK_J = 8, 128  # query blocks x key blocks a program writes at a time
PAD_C = tl.constexpr(PAD)


# fmt: off
@triton.jit(do_not_specialize=["QB", "KB"])
def _line_mask_kernel(
    VERT, BANDS, EXTRA, HEADS, OUT, COUNT,
    stride_vb, stride_vh, stride_sb, stride_sh, stride_xb, stride_xh, stride_xq,
    stride_hb, stride_hh, H, N, M, QB, KB, BLOCK_Q, BLOCK_K,
    BAND: tl.constexpr, HAS_BANDS: tl.constexpr, HAS_EXTRA: tl.constexpr, HAS_HEADS: tl.constexpr,
    SPAN: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, LISTS: tl.constexpr,
):
    """BLOCK_I query blocks of one head's mask, BLOCK_J key blocks at a time in ascending order:
    written as the mask (OUT uint8), or with LISTS packed as a layout's lists (OUT int32: each
    row's kept key blocks in order, then PAD; COUNT: how many), where a pass over the mask
    packing it followed."""
    i_bh, i_q = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_i = i_q * BLOCK_I + tl.arange(0, BLOCK_I)
    m_i = o_i < QB
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
    kept = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, KB, BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        m_j = o_j < KB
        m_ij = m_i[:, None] & m_j[None, :]
        keep = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.int1)
        if j0 < kb_seen:
            k0 = o_j * BLOCK_K
            k1 = tl.minimum(k0 + BLOCK_K, M) - 1
            visible = k0[None, :] <= last[:, None]
            keep = visible & (k1[None, :] >= first[:, None])  # the diagonal blocks
            chosen = tl.load(VERT + i_b * stride_vb + i_h * stride_vh + o_j, mask=m_j,
                             other=0) != 0
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
        if LISTS:  # each row's kept blocks at its next slots, in order (a scan along the row)
            keep &= m_ij
            b_keep = keep.to(tl.int32)
            slot = kept[:, None] + tl.cumsum(b_keep, 1) - 1
            tl.store(p_out + slot, tl.broadcast_to(o_j[None, :], [BLOCK_I, BLOCK_J]), mask=keep)
            kept += tl.sum(b_keep, 1)
        else:
            tl.store(p_out + o_j[None, :], keep.to(tl.uint8), mask=m_ij)
    if LISTS:
        for j0 in range(0, KB, BLOCK_J):
            o_j = j0 + tl.arange(0, BLOCK_J)
            m_pad = m_i[:, None] & (o_j[None, :] >= kept[:, None]) & (o_j < KB)[None, :]
            tl.store(p_out + o_j[None, :], tl.full([BLOCK_I, BLOCK_J], PAD_C, tl.int32),
                     mask=m_pad)
        tl.store(COUNT + i_bh.to(tl.int64) * QB + o_i, kept, mask=m_i)
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
    b, h, _ = verticals.shape
    qb, kb = triton.cdiv(num_queries, block_q), verticals.shape[2]
    out = torch.empty((b, h, qb, kb), dtype=torch.uint8, device=verticals.device)
    _launch(out, None, verticals, bands, band, block_q, block_k, num_queries, num_keys, extra,
            extra_heads)  # fmt: skip
    return out.view(torch.bool)


def line_block_lists(
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
) -> tuple[Tensor, Tensor]:
    """(idx int32 (B, H, QB, KB), count int32 (B, H, QB)): `line_block_mask`'s mask packed as
    `pack_block_mask` packs it, in the same launch."""
    b, h, kb = verticals.shape
    qb = triton.cdiv(num_queries, block_q)
    idx = torch.empty((b, h, qb, kb), dtype=torch.int32, device=verticals.device)
    count = torch.empty((b, h, qb), dtype=torch.int32, device=verticals.device)
    _launch(idx, count, verticals, bands, band, block_q, block_k, num_queries, num_keys, extra,
            extra_heads)  # fmt: skip
    return idx, count


def _launch(
    out: Tensor,
    count: Tensor | None,
    verticals: Tensor,
    bands: Tensor | None,
    band: int,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    extra: Tensor | None,
    extra_heads: Tensor | None,
) -> None:
    """One launch writing the mask into ``out`` (uint8), or its lists (``out`` int32, ``count``)."""
    check_triton_device("verticals", verticals)
    b, h, qb, kb = out.shape
    if out.numel() == 0:
        return
    verticals = unit_last(verticals).view(torch.uint8)
    bands_u8 = verticals if bands is None else unit_last(bands).view(torch.uint8)
    extra_u8 = verticals if extra is None else unit_last(extra).view(torch.uint8)
    heads = verticals if extra_heads is None else extra_heads.view(torch.uint8)
    strides = (
        *verticals.stride()[:2], *bands_u8.stride()[:2],
        *(extra_u8.stride()[:3] if extra is not None else (0, 0, 0)), *heads.stride()[:2],
    )  # fmt: skip
    # a block's diagonals [lo, hi] span at most block_q + block_k - 2, so this many bands
    span = (block_q + block_k - 2) // band + 2
    with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():
        _line_mask_kernel[(b * h, triton.cdiv(qb, _BLOCK_I))](
            verticals, bands_u8, extra_u8, heads, out, out if count is None else count,
            *strides, h, num_queries, num_keys, qb, kb, block_q, block_k, BAND=band,
            HAS_BANDS=bands is not None, HAS_EXTRA=extra is not None,
            HAS_HEADS=extra_heads is not None, SPAN=span, BLOCK_I=_BLOCK_I,
            BLOCK_J=min(_BLOCK_J, triton.next_power_of_2(kb)), LISTS=count is not None,
        )  # fmt: skip
