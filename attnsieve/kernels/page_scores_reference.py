"""Quest's page scores in plain PyTorch float32: the semantics the Triton kernel is tested on."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def page_scores(
    q: Tensor, key_min: Tensor, key_max: Tensor, page_table: Tensor, page_count: Tensor
) -> Tensor:
    """float32 (B, H_kv, P): per logical page (its summaries are rows ``page_table`` names of the
    pools ``key_min``, ``key_max`` (N, D)), the max over each KV head's g query heads of
    ``sum_d max(q_d min_d, q_d max_d)``; the last valid page +inf, pages past the count -inf, and
    a page whose bound is NaN for some query head -inf: never picked unless it holds the current
    token. That is a NaN summary (NaN keys), or an infinite one (keys past the summary dtype's
    range) met by a query channel of the other sign.

    Computed as ``q+ . max + q- . min`` (two matmuls, no (P, D) product per query head), which is
    the same sum wherever min <= max, i.e. on every valid page; the kernel computes this form too.
    """
    b, h_kv, p = page_table.shape
    pages = torch.arange(p, device=q.device)
    count = page_count[..., None].long()
    # what the kernel trusts (reading it would synchronise with the GPU); unchecked, a negative
    # entry would wrap to another page's summaries
    if bool(((count < 0) | (count > p)).any()):
        raise ValueError(f"page_count: expected values in [0, {p}]")
    used = pages < count
    if bool(((page_table < 0) | (page_table >= key_min.shape[0]))[used].any()):
        raise ValueError(
            f"page_table: counted entries must be pool rows in [0, {key_min.shape[0]})"
        )
    if key_min.shape[0] == 0:  # no summaries, so no page counted (checked above): -inf
        return torch.full((b, h_kv, p), -math.inf, device=q.device)
    rows = torch.where(used, page_table.long(), 0)  # entries past the count: anything
    kmin, kmax = key_min[rows].float(), key_max[rows].float()  # (B, H_kv, P, D)
    qg = q.float().unflatten(1, (h_kv, -1))  # (B, H_kv, g, D)
    bound = qg.clamp(min=0) @ kmax.mT + qg.clamp(max=0) @ kmin.mT  # (B, H_kv, g, P)
    nan = bound.isnan().any(2)  # 0 x inf as well as a NaN summary
    score = bound.amax(2).masked_fill(~used | nan, -math.inf)
    return score.masked_fill(pages == count - 1, math.inf)
