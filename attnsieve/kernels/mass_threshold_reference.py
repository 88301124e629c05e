"""Cumulative-mass thresholds in plain PyTorch: the semantics the Triton kernel is tested on."""

from __future__ import annotations

import torch
from torch import Tensor


def mass_threshold(probs: Tensor, threshold: float | Tensor, valid: Tensor | None = None) -> Tensor:
    """bool like ``probs``: per row (last dim), the entries ``p >= t*`` with ``p > 0``, where t* is
    the largest value whose entries at or above it hold ``threshold`` × the row's total.

    One descending sort: c = the number of ranks whose strictly better ranks hold less than the
    target, t* = the c-th largest value (c = 0 keeps nothing). Ties at t* are all kept. Invalid
    entries count as 0 and are never kept; ``threshold >= 1`` keeps every valid entry, zeros too.
    ``threshold`` is a number or a tensor broadcasting against (..., 1).
    """
    p = probs.float()
    if p.shape[-1] == 0:  # nothing to keep (and no last rank to read)
        return torch.zeros_like(p, dtype=torch.bool)
    if valid is not None:
        p = p.masked_fill(~valid, 0.0)
    gamma = threshold.float() if isinstance(threshold, Tensor) else threshold
    ranked = p.sort(-1, descending=True).values
    mass = ranked.cumsum(-1)
    before = torch.nn.functional.pad(mass[..., :-1], (1, 0))  # held by the strictly better ranks
    # the total as the last prefix sum: gamma < 1 then never asks for more than the row holds
    count = (before < gamma * mass[..., -1:]).sum(-1, keepdim=True)
    t = ranked.gather(-1, (count - 1).clamp(min=0))
    keep = (p >= t) & (p > 0) & (count > 0)
    keep = keep | (gamma >= 1)
    return keep if valid is None else keep & valid
