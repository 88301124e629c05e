"""Closed-form (query, key) pair counts of a bottom-right aligned prefill: dense causal
attention's (`causal_pairs`) and a `Layout`'s, each pair once (`count_pairs`, behind
`Layout.pairs`; `attnsieve.kernels.layout_pairs` is its Triton twin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnsieve.layout_spans import valid_slots

if TYPE_CHECKING:
    from attnsieve.layout import Layout

_CHUNK_SLOTS = 1 << 24  # list entries per pass: each int64 temporary stays within 128 MiB


def _clamped_ramp_sum(x: Tensor, length: Tensor) -> Tensor:
    """sum_{t <= x} clamp(t, 0, length): used to count causal pairs of a tile in closed form."""
    x = x.to(torch.int64)
    length = length.to(torch.int64)
    inside = torch.minimum(x.clamp(min=0), length)
    return inside * (inside + 1) // 2 + (x - length).clamp(min=0) * length


def causal_pairs(num_queries: int, num_keys: int) -> int:
    """Pairs of bottom-right aligned causal attention: sum over i of clamp(M - N + i + 1, 0, M)."""
    n, m = num_queries, num_keys
    if n <= m:  # query i sees M - N + i + 1 keys
        return n * (m - n + 1) + n * (n - 1) // 2
    return m * (m + 1) // 2  # the first N - M queries see nothing


def count_pairs(layout: Layout, causal: bool = True) -> Tensor:
    """int64 (B, H): the (query, key) pairs ``layout`` computes, each once, in closed form.

    A chunk of query blocks at a time: a flexprefill plan of Llama-3-8B's 32 heads at 1M tokens
    has lists of 32 × 8192 × 8192 entries, whose int64 temporaries in one pass ran the H200 out
    of memory (`benchmarks/check_long_context.py`, session 38).
    """
    lists = [layout.block_idx, layout.column_idx, layout.span_start]
    b, h = layout.block_count.shape[:2]
    widest = max(t.shape[-1] for t in lists if t is not None)
    step = max(1, _CHUNK_SLOTS // max(1, b * h * widest))
    count = torch.zeros(b, h, dtype=torch.int64, device=layout.device)
    for start in range(0, layout.num_q_blocks, step):
        count += _count_rows(layout, slice(start, start + step), causal)
    return count


def _count_rows(layout: Layout, q_blocks: slice, causal: bool) -> Tensor:
    """int64 (B, H): `count_pairs` of the query blocks ``q_blocks`` only."""
    n, m, bq, bk = layout.num_queries, layout.num_keys, layout.block_q, layout.block_k
    qb = torch.arange(layout.num_q_blocks, device=layout.device)[q_blocks]
    row0, row1 = qb * bq, torch.clamp((qb + 1) * bq, max=n)  # rows [row0, row1) of each q block
    p0 = (row0 + layout.query_offset)[:, None]  # absolute positions of their first, last rows
    p1 = (row1 - 1 + layout.query_offset)[:, None]

    def pairs(k0: Tensor, width: Tensor, valid: Tensor) -> Tensor:
        """Pairs of key tiles [k0, k0 + width) (B, H, QB, T) with the rows of their block."""
        if causal:  # keys visible to the row at position p: clamp(p + 1 - k0, 0, width)
            tile = _clamped_ramp_sum(p1 + 1 - k0, width) - _clamped_ramp_sum(p0 - k0, width)
        else:
            tile = width * (row1 - row0)[:, None]
        return (tile * valid).sum((-1, -2))

    kb = layout.block_idx[:, :, q_blocks].long().clamp(min=0)
    k0 = kb * bk
    valid = valid_slots(kb, layout.block_count[:, :, q_blocks])
    count = pairs(k0, torch.clamp(k0 + bk, max=m) - k0, valid)
    if layout.has_columns:  # a column is a tile of width 1
        col = layout.column_idx[:, :, q_blocks].long()
        ok = valid_slots(col, layout.column_count[:, :, q_blocks])
        count = count + pairs(col, torch.ones_like(col), ok)
    if layout.has_spans:
        s0 = layout.span_start[:, :, q_blocks].long()
        ok = valid_slots(s0, layout.span_count[:, :, q_blocks])
        count = count + pairs(s0, layout.span_end[:, :, q_blocks].long() - s0, ok)
    return count
