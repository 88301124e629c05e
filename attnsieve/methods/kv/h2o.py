"""H2O: heavy hitters by accumulated attention plus a recent window (arXiv 2306.14048)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_int
from attnsieve.methods.kv.base import KVView, ScoredPolicy, recent_tokens, window_attention


@dataclass
class H2O(ScoredPolicy):
    """H2O, Heavy-Hitter Oracle (Zhang et al., NeurIPS 2023, arXiv 2306.14048).

    A token's score is the attention it has received, accumulated over queries; each head keeps
    its ``recent_ratio`` most recent tokens of the budget (half, as in the paper's equal split of
    heavy-hitter and recent budgets) and fills the rest with the highest-scoring tokens. The
    default ``ratio`` 0.2 is the paper's main setting (10 % heavy hitters + 10 % recent tokens).

    Differences from the paper: the attention is accumulated over the observation window of the
    last ``window`` queries that the cache keeps (32 here), not over every query since the start
    of the sequence, and the eviction runs whenever the cache calls ``compress`` rather than one
    token per step. GQA query heads are averaged before the sum.
    """

    window: int = 32
    recent_ratio: float = 0.5

    name: ClassVar[str] = "h2o"
    default_budget: ClassVar[int | None] = None
    default_ratio: ClassVar[float | None] = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("window", self.window, 1)
        check_float("recent_ratio", self.recent_ratio, 0.0, 1.0)

    def score(self, view: KVView) -> Tensor:
        return window_attention(view, self.window).sum(2)

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        return recent_tokens(view, torch.floor(self.recent_ratio * target + 0.5).long())
