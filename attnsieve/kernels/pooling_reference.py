"""Plain-PyTorch twins of the pooling kernels in `attnsieve.kernels.pooling`: the same names,
signatures and semantics, in float32; what runs on CPU."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.checks import cdiv
from attnsieve.layout import query_block_positions


def block_mean_pool(x: Tensor, block: int, heads: Tensor | None = None) -> Tensor:
    """float32 (B, H, ceil(L / block), D): mean of every ``block`` tokens of x (B, H, L, D).

    The last block averages only the tokens it has. With ``heads`` (bool (B, H), or (B, g·H):
    each head's g query heads, as `block_mean_pool_qk` pools K), the heads it leaves out are
    zero.
    """
    b, h, n, d = x.shape
    nb = cdiv(n, block)
    sums = (
        torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block - n))
        .view(b, h, nb, block, d)
        .sum(3)
    )
    counts = torch.clamp(n - torch.arange(nb, device=x.device) * block, max=block)
    if heads is not None:
        heads = heads.view(b, h, -1).any(-1)
    return _only(sums / counts[:, None].float(), heads)


def block_mean_pool_qk(
    q: Tensor, k: Tensor, block_q: int, block_k: int, heads: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`block_mean_pool` of q by ``heads`` (bool (B, H_q)) and of k by the same flags."""
    return block_mean_pool(q, block_q, heads), block_mean_pool(k, block_k, heads)


def _only(x: Tensor, heads: Tensor | None) -> Tensor:
    """x (B, H, ...) with the heads that ``heads`` (bool (B, H) or None: all) leaves out zero."""
    if heads is None:
        return x
    return torch.where(heads.view(*heads.shape, *(1,) * (x.dim() - 2)), x, 0.0)


def pooled_block_probs(
    q_pooled: Tensor,
    k_pooled: Tensor,
    *,
    num_queries: int,
    num_keys: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
    heads: Tensor | None = None,
) -> Tensor:
    """float32 (B, H_q, QB, KB): softmax over key blocks of pooled-query · pooled-key scores.

    ``q_pooled`` (B, H_q, QB, D) and ``k_pooled`` (B, H_kv, KB, D) are block means (see
    `block_mean_pool`). With ``causal``, key block j is visible to query block i iff its first key
    is at or before the last query of i; rows that see no block are all zero. ``scale`` defaults to
    1/sqrt(D). With ``heads`` (bool (B, H_q)), the heads it leaves out are zero (the kernel's are
    undefined: it does not write them).
    """
    b, h_q, qb, d = q_pooled.shape
    h_kv, kb = k_pooled.shape[1], k_pooled.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = q_pooled.float().reshape(b, h_kv, h_q // h_kv * qb, d) @ k_pooled.float().transpose(
        -1, -2
    )
    scores = scores.view(b, h_q, qb, kb) * scale
    if causal:
        _, last = query_block_positions(num_queries, num_keys, block_q, q_pooled.device)
        first_key = torch.arange(kb, device=q_pooled.device) * block_k
        scores = scores.masked_fill(first_key[None, :] > last[:, None], -math.inf)
    return _only(scores.softmax(-1).nan_to_num(0.0), heads)
