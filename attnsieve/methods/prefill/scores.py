"""Cheap attention estimates that planners share: mean-pooled block scores, within-block
self-similarity (SpargeAttn) and the reduction of a KV group's query heads.

They build on the block mean pooling of `attnsieve.api.block_mean_pool` (a Triton kernel on CUDA).
GQA is handled by viewing the g query heads of a KV group together; K is never repeated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.api import block_mean_pool


def block_self_similarity(x: Tensor, block: int) -> Tensor:
    """float32 (B, H, ceil(S / block)): mean pairwise cosine similarity of the tokens of each block.

    SpargeAttn's criterion (arXiv 2502.18137): mean_{i,j} cos(x_i, x_j) = |mean_i x_i / |x_i||^2,
    so it costs O(S·D), not O(block^2) per block.
    """
    unit = x.float() / x.float().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return block_mean_pool(unit, block).square().sum(-1)


def pooled_scores(
    q: Tensor, k: Tensor, block_q: int, block_k: int, scale: float | None = None
) -> Tensor:
    """float32 (B, H_q, QB, KB): scaled dot products of mean-pooled query and key blocks."""
    b, h_q, _, d = q.shape
    h_kv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    pq = block_mean_pool(q, block_q)
    pk = block_mean_pool(k, block_k)
    scores = pq.view(b, h_kv, h_q // h_kv, -1, d) @ pk[:, :, None].transpose(-1, -2)
    return (scores * scale).view(b, h_q, pq.shape[2], pk.shape[2])


def group_reduce(x: Tensor, num_kv_heads: int, reduce: str = "sum") -> Tensor:
    """(B, H_kv, ...): combine the g query heads of each KV group (sum, mean or all)."""
    groups = x.view(x.shape[0], num_kv_heads, x.shape[1] // num_kv_heads, *x.shape[2:])
    ops = {"sum": torch.sum, "mean": torch.mean, "all": torch.all}
    if reduce not in ops:
        raise ValueError(f"reduce: expected sum, mean or all, got {reduce!r}")
    return ops[reduce](groups, 2)
