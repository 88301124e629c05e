"""PowerAttention: local blocks, sinks and key blocks at power-of-2 distances (arXiv 2503.03588)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import block_layout
from attnsieve.checks import cdiv, check_int, check_pow2
from attnsieve.layout import Layout, query_block_positions
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.masks import sink_block_mask, window_block_mask


@dataclass
class PowerPlanner(Planner):
    """Static exponentially-spaced block pattern of PowerAttention (Chen et al., arXiv 2503.03588).

    The paper models attention as a DAG and connects each position only to positions at
    power-of-2 distances, so any token is reachable from any later one in at most log2(distance)
    layers while each query reads O(log N) blocks. Implemented, as in the paper, on blocks: query
    block i attends to key block i - d for d in {1, 2, 4, 8, ...}, to its ``local_blocks`` most
    recent key blocks (d < local_blocks; 1 = the diagonal block) and to the first ``sink_blocks``
    key blocks (attention sinks).

    Differences from the paper: the paper sets the window / sink budget per experiment to match
    the sparsity of the baselines it compares against; we default to the minimal pattern (diagonal
    block + one sink block + the power-of-2 distances, on 128-token blocks) and expose both as
    fields. The distance of a query block is measured from the key block holding its last query's
    (bottom-right aligned) position, so N != M and block_q != block_k are handled; every key block
    holding one of a query block's own positions is kept too (with block_q > block_k the earlier
    rows' diagonal is not at a power-of-2 distance from the last one's). Data-independent:
    one plan (batch 1, head 1) broadcasts to all heads. Causal only.
    """

    local_blocks: int = 1
    sink_blocks: int = 1
    block_q: int = 128
    block_k: int = 128

    name: ClassVar[str] = "power"

    def __post_init__(self) -> None:
        check_int("local_blocks", self.local_blocks, 1)
        check_int("sink_blocks", self.sink_blocks, 0)
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        if not causal:
            raise ValueError("causal: the PowerAttention pattern is defined for causal attention")
        n, m, bq, bk = q.shape[2], k.shape[2], self.block_q, self.block_k
        _, last = query_block_positions(n, m, bq, q.device)
        # Distances count from the key block that holds each query block's last query.
        diagonal = torch.div(last, bk, rounding_mode="floor")
        distance = diagonal[:, None] - torch.arange(cdiv(m, bk), device=q.device)[None, :]
        power_of_two = (distance > 0) & ((distance & (distance - 1)) == 0)
        mask = (distance < self.local_blocks) | power_of_two
        # a query block wider than a key block spans several diagonal key blocks: all of them
        mask |= window_block_mask(n, m, bq, bk, 1, q.device)
        mask |= sink_block_mask(n, m, bq, bk, self.sink_blocks * bk, q.device)
        mask &= Layout.causal_block_mask(n, m, bq, bk, q.device)  # drops d < 0 (future blocks)
        return block_layout(mask[None, None], block_q=bq, block_k=bk, num_queries=n, num_keys=m)
