"""Quest's page scores in plain PyTorch float32: the semantics the Triton kernel is tested on."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def page_scores(q: Tensor, key_min: Tensor, key_max: Tensor, page_count: Tensor) -> Tensor:
    """float32 (B, H_kv, P): per page, the max over each KV head's g query heads of
    ``sum_d max(q_d min_d, q_d max_d)``; the last valid page +inf, pages past the count -inf, and
    a page with a NaN summary (NaN keys) -inf: never picked unless it holds the current token.

    Computed as ``q+ . max + q- . min`` (two matmuls, no (P, D) product per query head), which is
    the same sum wherever min <= max, i.e. on every valid page.
    """
    b, h_kv, p, d = key_min.shape
    qg = q.float().unflatten(1, (h_kv, -1))  # (B, H_kv, g, D)
    bound = qg.clamp(min=0) @ key_max.mT + qg.clamp(max=0) @ key_min.mT  # (B, H_kv, g, P)
    pages = torch.arange(p, device=q.device)
    count = page_count[..., None].long().clamp(max=p)  # as the kernel: never past the summaries
    nan = key_min.isnan().any(-1) | key_max.isnan().any(-1)
    score = bound.amax(2).masked_fill((pages >= count) | nan, -math.inf)
    return score.masked_fill(pages == count - 1, math.inf)
