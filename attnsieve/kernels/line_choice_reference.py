"""FlexPrefill's choice of lines in plain PyTorch: the semantics the Triton kernel is tested on."""

from __future__ import annotations

import torch
from torch import Tensor

from attnsieve.kernels.mass_threshold_reference import mass_threshold
from attnsieve.kernels.page_select_reference import top_mask

BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1


def choose_lines(
    vertical: Tensor,
    slash: Tensor,
    pooled: Tensor,
    *,
    gamma: float | Tensor,
    tau: float,
    lo: int,
    hi: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(query_aware bool (B, H_q), chosen bool (B, H_q, 2, KB), map_gamma float32 (B, H_q)); see
    `attnsieve.api.choose_lines`.

    â is ``vertical``; ā the softmax of ``pooled``. A head is query-aware where
    sqrt(JS(ā, â)) < tau. Each line (vertical, then slash) keeps its ``count`` largest blocks,
    ties to lower indices: ``lo`` for a query-aware head, else the size of its smallest set
    holding ``gamma`` of its mass clamped to [lo, hi]; block 0 always. A head of gamma >= 1
    keeps every block of its vertical line, query-aware or not, whatever ``hi``: it is dense. A
    query-aware head's ``map_gamma`` is gamma, at most the largest float32 below 1; another
    head's 0.
    """
    b, h_q, kb = vertical.shape
    query_aware = sqrt_js_divergence(pooled.float().softmax(-1), vertical.float()) < tau
    lines = torch.stack((vertical, slash), 2).float()  # (B, H_q, 2, KB)
    threshold = gamma[:, None, None] if isinstance(gamma, Tensor) else gamma
    cover = mass_threshold(lines, threshold).sum(-1)
    count = torch.where(query_aware[..., None], lo, cover.clamp(lo, hi))
    dense = torch.as_tensor(gamma >= 1, device=vertical.device)  # float32 per head, as given
    count[..., 0] = torch.where(dense, kb, count[..., 0])
    chosen = top_mask(lines.view(b, h_q * 2, kb), count.view(b, h_q * 2)).view_as(lines)
    chosen[..., 0] = True
    g = torch.as_tensor(gamma, dtype=torch.float32, device=vertical.device)
    map_gamma = torch.where(query_aware, torch.where(g < BELOW_ONE, g, BELOW_ONE), 0.0)
    return query_aware, chosen, map_gamma


def sqrt_js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """sqrt of the Jensen-Shannon divergence (natural log) of distributions along the last dim,
    as (KL(p‖m) + KL(q‖m)) / 2 = (Σ p ln p + Σ q ln q) / 2 − Σ m ln m for m = (p + q) / 2."""
    terms = torch.stack((p, q, (p + q) / 2))
    sums = torch.xlogy(terms, terms).sum(-1)  # Σ x ln x, with 0 ln 0 = 0
    return ((sums[0] + sums[1]) / 2 - sums[2]).clamp(min=0).sqrt()
