"""SnapKV: the observation window votes for the tokens each head keeps (arXiv 2404.14469)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from attnsieve.checks import check_int
from attnsieve.methods.kv.base import KVView, ScoredPolicy, window_attention, window_tokens


@dataclass
class SnapKV(ScoredPolicy):
    """SnapKV (Li et al., NeurIPS 2024, arXiv 2404.14469).

    The last ``window`` queries (the observation window, 32 in the paper) attend causally to all
    cached keys; per KV head, their attention is summed over the window, smoothed over the
    entries before the window by a 1-D max pooling of width ``kernel`` (7, the paper's
    "clustering" step), and the top entries are kept, together with the window's own tokens. The
    budget counts the window's tokens, as the code's ``max_capacity_prompt`` does; its default,
    2048, is the code's.

    Differences from the paper: GQA heads are averaged: the attention of the g query heads of a
    KV head is meaned before the sum over the window (the reference code repeats K/V per query
    head instead; the authors' Ada-KV code averages as we do). Max pooling of width 7 with a
    32-token window, as the repository's LongBench configs
    (``ablation_c*_w32_k7_maxpool.json``) run it; its function defaults are average pooling of
    width 5. The selection is ragged-safe: heads shorter than their target keep
    everything, and padding is never kept. If the target is below the window, the most recent
    window tokens are kept. Ties of the pooled score go to the higher raw vote, so that a peak is
    never dropped for one of its neighbours (which pooling gives the same score). The paper
    compresses the prompt once; a periodic pass during decode (`AttentionConfig.kv_interval`)
    pools over the cache's entries, which after an earlier eviction are no longer neighbouring
    positions.

    The pooling width matters where a tokenizer writes numbers digit by digit (SmolLM2, Llama):
    a 7-digit needle is 9 tokens, the window's votes peak at its ends, and width 7 can leave a
    digit between them evicted, so the number is copied with a digit missing. On SmolLM2 at 25 %
    budget with the question in the window (GPU, 40 samples), niah_single is 17.5 / 12.5 points
    below dense at 4K / 8K at width 7 and level with it at 15 (Ada-KV around it: 47.5 / 22.5
    and 2.5 / 2.5; ``benchmarks/configs/*_k15.json``, ``benchmarks/results/h100/smollm2-eval/``).
    """

    window: int = 32
    kernel: int = 7

    name: ClassVar[str] = "snapkv"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("window", self.window, 1)
        check_int("kernel", self.kernel, 1)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd int (centred pooling), got {self.kernel}")

    def score(self, view: KVView) -> Tensor:
        return snapkv_score(view, self.window, self.kernel)

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        return window_tokens(view, self.window)


def snapkv_score(view: KVView, window: int, kernel: int) -> Tensor:
    """float64 (B, H_kv, L): window attention summed over the window, max-pooled over the entries
    before the window (the official code pools ``[..., :-window]``: the window's own large votes
    would spill onto the kernel // 2 entries before it); ties of the pooled score (a peak and its
    neighbours) go to the higher raw vote. The window's own entries, always kept, score anything."""
    votes = window_attention(view, window).sum(2).double()
    votes = votes.masked_fill(window_tokens(view, window), 0.0)  # votes >= 0: a max ignores a 0
    pooled = F.max_pool1d(votes, kernel, stride=1, padding=kernel // 2)
    return pooled + votes * 2.0**-20  # votes <= W (means over a group): a tie-break below noise
