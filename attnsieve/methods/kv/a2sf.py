"""A2SF: accumulated attention with a forgetting factor (arXiv 2407.20485)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_int
from attnsieve.methods.kv.base import KVView, ScoredPolicy, recent_tokens, window_attention


@dataclass
class A2SF(ScoredPolicy):
    """A2SF, Accumulative Attention Score with Forgetting factor (Jo & Shin, arXiv 2407.20485).

    H2O's accumulated attention favours old tokens, which causal masking lets more queries see.
    A2SF discounts each query's attention by ``forgetting_factor`` per step of the query's age:
    ``score(k) = sum_q alpha^(t - pos(q)) * attn(q, k)``, ``t`` the newest query's position. Each
    head keeps ``recent_ratio`` of its budget as the most recent tokens and fills the rest with
    the highest scores.

    Differences from the paper: the scores are accumulated over the observation window of the last
    ``window`` queries (32) that the cache keeps, not over the whole sequence. The paper tunes the
    forgetting factor per model and task and gives no single default (the authors' later
    configurations vary it per task and layer, from 0 to 1; their README's example uses 0.95): 0.9
    here is our choice, which fades a query's vote to ~4 % across a 32-query window. The budget
    split (half recent) and the default ``ratio`` 0.2 follow H2O, the paper's baseline; also our
    choice (the authors keep a fixed 16-token recent window, 12.5 % of the budget in earlier
    configurations). GQA query heads are averaged before the sum.
    """

    forgetting_factor: float = 0.9
    window: int = 32
    recent_ratio: float = 0.5

    name: ClassVar[str] = "a2sf"
    default_budget: ClassVar[int | None] = None
    default_ratio: ClassVar[float | None] = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("forgetting_factor", self.forgetting_factor, 0.0, 1.0)
        check_int("window", self.window, 1)
        check_float("recent_ratio", self.recent_ratio, 0.0, 1.0)

    def score(self, view: KVView) -> Tensor:
        qpos = view.query_positions[:, -self.window :]
        age = (qpos.amax(-1, keepdim=True) - qpos).clamp(min=0).float()  # (B, W)
        weight = torch.pow(self.forgetting_factor, age)  # absent queries attend nothing anyway
        return torch.einsum("bhwl,bw->bhl", window_attention(view, self.window), weight)

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        return recent_tokens(view, torch.floor(self.recent_ratio * target + 0.5).long())
