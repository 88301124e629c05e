"""Plain-PyTorch twin of `attnsieve.kernels.planning`'s `last_query_stats`.

It has the signature and the exact semantics of its fused Triton twin and is what runs on CPU.
Everything is float32. Memory stays O(N·D + last_q·M), never O(N·M): only the last rows'
probabilities are held. Positions are bottom-right aligned: query ``i`` of ``N`` sits at
absolute position ``M - N + i``; GQA query head ``h`` reads KV head ``h // (H_q // H_kv)`` through a
view, K is never repeated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.checks import cdiv


def last_query_stats(
    q: Tensor,
    k: Tensor,
    *,
    last_q: int,
    block_k: int,
    scale: float | None = None,
    pooled: bool = False,
) -> tuple[Tensor, ...]:
    """Causal attention of the last ``last_q`` queries, summarised as (vertical, slash), float32,
    and with ``pooled`` their mean score per key block.

    ``vertical`` (B, H_q, KB): per block of ``block_k`` keys, the attention probability mass
    averaged over the last rows. ``slash`` (B, H_q, KB): per block of diagonal offsets
    o = position(query) - key in [s·block_k, (s+1)·block_k), the same. Both sum to 1 when every
    last row sees a key (FlexPrefill's estimate, arXiv 2502.20766; MInference's for lines, per
    key and per diagonal at ``block_k`` 1).
    """
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows = q[:, :, n - last_q :].float().reshape(b, h_kv, h_q // h_kv * last_q, d)
    s = (rows @ k.float().transpose(-1, -2)).view(b, h_q, last_q, m) * scale
    pos = torch.arange(m - last_q, m, device=q.device)
    offset = pos[:, None] - torch.arange(m, device=q.device)[None, :]  # (last_q, M)
    p = s.masked_fill(offset < 0, -math.inf).softmax(-1).nan_to_num(0.0)
    kb = cdiv(m, block_k)
    key_block = torch.arange(m, device=q.device) // block_k
    vertical = torch.zeros(b, h_q, kb, device=q.device).index_add_(-1, key_block, p.sum(2))
    slash_block = (offset.clamp(min=0) // block_k).flatten()
    slash = torch.zeros(b, h_q, kb, device=q.device).index_add_(-1, slash_block, p.flatten(2))
    if not pooled:
        return vertical / last_q, slash / last_q
    keys = (m - torch.arange(kb, device=q.device) * block_k).clamp(max=block_k)  # a block's keys
    scores = torch.zeros(b, h_q, kb, device=q.device).index_add_(-1, key_block, s.sum(2))
    return vertical / last_q, slash / last_q, scores / (last_q * keys)
