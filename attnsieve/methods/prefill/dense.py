"""Dense attention as a planner: every causal block, the baseline of every other plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from attnsieve.checks import check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner


@dataclass
class DensePlanner(Planner):
    """Every key block a query block can see (all blocks with ``causal=False``).

    Not a method from the literature: the exact reference point. The layout is flagged dense so the
    kernels dispatch to PyTorch SDPA.
    """

    block_q: int = 128
    block_k: int = 128

    name: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        return Layout.dense(
            q.shape[2],
            k.shape[2],
            block_q=self.block_q,
            block_k=self.block_k,
            causal=causal,
            device=q.device,
        )
