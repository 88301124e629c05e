"""StreamingLLM: attention sinks plus the most recent tokens (arXiv 2309.17453)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_int
from attnsieve.methods.kv.base import KVView, ScoredPolicy


@dataclass
class StreamingLLM(ScoredPolicy):
    """StreamingLLM (Xiao et al., ICLR 2024, arXiv 2309.17453).

    Each head keeps its ``sink`` lowest-position entries (the attention sinks; the paper keeps 4)
    and fills the rest of its target with its highest-position (most recent) entries. The default
    budget, 2004, is the official ``run_streaming_llama.py`` cache: ``start_size=4`` +
    ``recent_size=2000``.

    Differences from the paper: the paper evicts one token per decode step to hold a fixed cache;
    here the window is cut whenever the cache calls ``compress`` (after prefill, then every few
    steps), so between calls the cache grows past the budget. Positions are not re-assigned
    inside the cache (the paper's "rolling" positions): keys are stored after RoPE.
    """

    sink: int = 4

    name: ClassVar[str] = "streaming"
    default_budget: ClassVar[int | None] = 2004

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("sink", self.sink, 0)

    def score(self, view: KVView) -> Tensor:
        # entries are in position order: the index is the recency
        n = view.keys.shape[2]
        return torch.arange(n, device=view.keys.device, dtype=torch.float32).expand(
            view.positions.shape
        )

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        # a target below ``sink`` keeps the first entries: forced entries rank the later ones
        # first (SnapKV's window), which would keep the last sinks and drop token 0
        index = torch.arange(view.keys.shape[2], device=view.keys.device)
        return index < target.clamp(max=self.sink)[..., None]
