"""Top-``count`` selection in plain PyTorch: the semantics the Triton kernels are tested on."""

from __future__ import annotations

import torch
from torch import Tensor


def order_key(score: Tensor) -> Tensor:
    """int32 keys ordered as the float32 ``score``s: the bits, with the 31 low bits of negative
    numbers inverted (-0.0 sorts just below +0.0; NaNs sort by their bits, beyond +-inf)."""
    bits = score.contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def select_pages(score: Tensor, count: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Per row of ``score`` float32 (B, H, P), the indices of its ``count`` (B, H) largest entries
    (count clamped to [0, min(width, P)]), ties broken towards lower indices, in ascending order
    and padded with -1 to int32 (B, H, width); and the clamped count, int32 (B, H).

    One stable descending sort of the order keys (so equal keys keep index order), the first
    ``count`` ranks kept, one ascending sort.
    """
    p = score.shape[-1]
    n = count.long().clamp(0, min(width, p))
    best = order_key(score).argsort(dim=-1, descending=True, stable=True)[..., :width]
    rank = torch.arange(best.shape[-1], device=score.device)
    idx = torch.where(rank < n[..., None], best, p).sort(dim=-1).values  # dropped (p) last
    idx = torch.where(idx < p, idx, -1).int()
    if idx.shape[-1] < width:  # width > P: nothing to place in the extra slots
        idx = torch.nn.functional.pad(idx, (0, width - idx.shape[-1]), value=-1)
    return idx, n.int()


def top_mask(score: Tensor, count: Tensor) -> Tensor:
    """bool like ``score`` float32 (B, H, P): each row's ``count`` (B, H) largest entries (count
    clamped to [0, P]), ties broken towards lower indices, as `select_pages` picks them: a stable
    descending sort of the order keys, ranked."""
    p = score.shape[-1]
    order = order_key(score).argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(p, device=score.device).expand_as(order)
    )
    return rank < count.long().clamp(0, p)[..., None]


def page_budget(
    lengths: Tensor,
    page_count: Tensor,
    page_size: int,
    budget_tokens: int | None,
    ratio: float | None,
) -> Tensor:
    """int32 (B, H): the pages each head reads under a token budget: its token target (at most
    ``budget_tokens``, or ceil(``ratio`` x length) computed in float32, and never past its
    length) in whole pages, at least 1 and at most its page count (0 for an empty head); every
    page when the target is the head's whole length (its partial last page included). Negative
    lengths or counts are refused here (the kernel trusts them: reading them would synchronise)."""
    n = lengths.long()
    for name, t in (("lengths", lengths), ("page_count", page_count)):
        if bool((t < 0).any()):
            raise ValueError(f"{name}: expected values >= 0")
    if budget_tokens is not None:
        target = n.clamp(max=budget_tokens)
    else:
        scaled = n.float() * torch.tensor(ratio, dtype=torch.float32, device=n.device)
        target = torch.minimum(scaled.ceil().long(), n)
    pages = torch.where(target >= n, page_count.long(), (target // page_size).clamp(min=1))
    return torch.minimum(pages, page_count.long()).int()
