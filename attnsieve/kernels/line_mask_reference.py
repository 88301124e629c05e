"""Plain-PyTorch twin of `attnsieve.kernels.line_mask`: the block mask of chosen key columns and
diagonal bands, FlexPrefill's (arXiv 2502.20766) vertical-slash selection drawn on blocks."""

from __future__ import annotations

import torch
from torch import Tensor

from attnsieve.layout import query_block_positions


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
    """bool (B, H, QB, KB): per head, the visible blocks of the chosen key blocks ``verticals``
    (B, H, KB), every block a chosen diagonal crosses, the diagonal blocks, and the blocks of
    ``extra`` (B, H, QB, KB) in the heads ``extra_heads`` (B, H; None: all).

    Band s of ``bands`` (B, H, ceil(M / band)) chooses the diagonals [s·band, (s+1)·band);
    diagonal o links the query at position p to key p - o, so it crosses query rows [first, last]
    and keys [k0, k1] iff first - k1 <= o <= last - k0: a prefix count over the bands answers that
    for every block at once, in O(B · H · (QB · KB + M / band)). Positions are bottom-right
    aligned. ``verticals`` and ``bands`` need not be visible themselves; ``extra`` is kept as given.
    """
    device = verticals.device
    first, last = query_block_positions(num_queries, num_keys, block_q, device)
    k0 = torch.arange(0, num_keys, block_k, device=device)
    k1 = torch.clamp(k0 + block_k, max=num_keys) - 1
    visible = k0[None, :] <= last[:, None]  # (QB, KB)
    diagonal = visible & (k1[None, :] >= first[:, None])
    mask = (verticals[:, :, None, :] & visible) | diagonal
    if bands is not None:
        lo = (first[:, None] - k1[None, :]).clamp(min=0, max=num_keys)
        hi = (last[:, None] - k0[None, :]).clamp(max=num_keys - 1)
        prefix = torch.nn.functional.pad(bands.cumsum(-1, dtype=torch.int32), (1, 0))
        crossed = prefix[..., hi.clamp(min=0) // band + 1] - prefix[..., lo // band]
        mask |= (hi >= lo) & (crossed > 0)
    if extra is not None:
        mask |= extra if extra_heads is None else extra & extra_heads[..., None, None]
    return mask
