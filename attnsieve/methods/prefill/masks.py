"""Block masks that planners build and select: sink and local windows, the key columns each
query block can see, and diagonal (slash) blocks. The cumulative-probability sets of FlexPrefill,
XAttention and SpargeAttn are `attnsieve.api.mass_threshold`.

Each is O(layout size) in memory, never O(N·M). Positions are bottom-right aligned: query ``i`` of
``N`` sits at absolute position ``M - N + i``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnsieve.layout import Layout, query_block_positions


def window_block_mask(
    num_queries: int, num_keys: int, block_q: int, block_k: int, window: int, device=None
) -> Tensor:
    """bool (QB, KB): key blocks with a key less than ``window`` tokens before a query of the block.

    A query at position p sees keys (p - window, p]; ``window=1`` gives the diagonal blocks. Blocks
    are rounded outwards, so the mask covers the token window of every query in the block.
    """
    first, last = query_block_positions(num_queries, num_keys, block_q, device)
    k0 = torch.arange(0, num_keys, block_k, device=device)
    k1 = torch.clamp(k0 + block_k, max=num_keys) - 1
    return (k0[None, :] <= last[:, None]) & (k1[None, :] > first[:, None] - window)


def sink_block_mask(
    num_queries: int, num_keys: int, block_q: int, block_k: int, sink_tokens: int, device=None
) -> Tensor:
    """bool (QB, KB): key blocks covering the first ``sink_tokens`` keys, in every visible row."""
    k0 = torch.arange(0, num_keys, block_k, device=device)
    visible = Layout.causal_block_mask(num_queries, num_keys, block_q, block_k, device)
    return visible & (k0 < sink_tokens)[None, :]


def slash_block_mask(
    offsets: Tensor, num_queries: int, num_keys: int, block_q: int, block_k: int
) -> Tensor:
    """bool (B, H, QB, KB): blocks crossed by the chosen diagonals, ``offsets`` bool (B, H, M).

    Diagonal o links the query at position p to key p - o. It crosses query rows [first, last] and
    keys [k0, k1] iff first - k1 <= o <= last - k0; a prefix count over o answers that for every
    block at once, in O(B · H · (QB · KB + M)).
    """
    first, last = query_block_positions(num_queries, num_keys, block_q, offsets.device)
    k0 = torch.arange(0, num_keys, block_k, device=offsets.device)
    k1 = torch.clamp(k0 + block_k, max=num_keys) - 1
    lo = (first[:, None] - k1[None, :]).clamp(min=0, max=num_keys)
    hi = (last[:, None] - k0[None, :]).clamp(max=num_keys - 1)
    prefix = torch.nn.functional.pad(offsets.to(torch.int32).cumsum(-1, dtype=torch.int32), (1, 0))
    hits = prefix[..., (hi + 1).clamp(min=0)] - prefix[..., lo]
    return (hi >= lo) & (hits > 0)


def visible_columns(columns: Tensor, num_queries: int, num_keys: int, block_q: int) -> Tensor:
    """int (B, H, QB, C): the key ``columns`` (B, H, C) each query block can see, -1 elsewhere."""
    _, last = query_block_positions(num_queries, num_keys, block_q, columns.device)
    cols = columns[:, :, None, :]
    return torch.where(cols <= last[:, None], cols, -1)
