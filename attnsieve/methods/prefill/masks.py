"""Block masks that planners build and select: sink and local windows. The cumulative-probability
sets of FlexPrefill, XAttention and SpargeAttn are `attnsieve.api.mass_threshold`; the blocks of
chosen key blocks and diagonal bands, `attnsieve.api.line_block_mask`.

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
