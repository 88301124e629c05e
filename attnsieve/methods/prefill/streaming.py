"""StreamingLLM / MInference "A-shape": attention sinks plus a local window (arXiv 2309.17453)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from attnsieve.api import block_layout
from attnsieve.checks import check_int, check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.masks import sink_block_mask, window_block_mask


@dataclass
class StreamingPlanner(Planner):
    """Static sink + sliding-window pattern of StreamingLLM (Xiao et al., arXiv 2309.17453).

    Every query attends to the first ``sink_tokens`` keys (the attention sinks; the paper keeps 4)
    and to the ``window_tokens`` most recent keys (the official ``run_streaming_llama.py`` keeps
    ``recent_size=2000``). MInference (arXiv 2407.02490) uses the same "A-shape" for prefill.

    Differences from the paper: the pattern is planned per block, so the sinks become the key
    block(s) covering the first ``sink_tokens`` keys and the window is rounded outwards to whole
    key blocks (a superset of every query's token window). StreamingLLM evicts the KV cache while
    decoding; here the pattern only restricts prefill attention. Data-independent: one plan
    (batch 1, head 1) broadcasts to all heads. Causal only.
    """

    sink_tokens: int = 4
    window_tokens: int = 2000
    block_q: int = 128
    block_k: int = 128

    name: ClassVar[str] = "streaming"

    def __post_init__(self) -> None:
        check_int("sink_tokens", self.sink_tokens, 0)
        check_int("window_tokens", self.window_tokens, 1)
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        if not causal:
            raise ValueError(
                "causal: the streaming (sink + window) pattern is defined for causal attention"
            )
        n, m, bq, bk = q.shape[2], k.shape[2], self.block_q, self.block_k
        mask = window_block_mask(n, m, bq, bk, self.window_tokens, q.device)
        mask |= sink_block_mask(n, m, bq, bk, self.sink_tokens, q.device)
        return block_layout(mask[None, None], block_q=bq, block_k=bk, num_queries=n, num_keys=m)
