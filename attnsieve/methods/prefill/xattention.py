"""XAttention: block importance from strided antidiagonal sums (arXiv 2503.16428)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import antidiagonal_block_scores, block_layout, mass_threshold
from attnsieve.checks import check_float, check_int, check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.masks import window_block_mask


@dataclass
class XAttentionPlanner(Planner):
    """XAttention (Xu et al., arXiv 2503.16428).

    Algorithm: cut queries and keys into groups of ``stride`` tokens and score every pair of groups
    by the sum of one antidiagonal of their stride×stride tile; the paper gets all antidiagonals at
    once by reshaping Q with every stride-th row taken in reverse order and K in forward order, so
    one GEMM of (N/S, S·D) by (S·D, M/S) does it. The strided scores are softmax-normalised per
    row (logits scaled by 1/(sqrt(D)·stride)) and summed per ``block_q`` × ``block_k`` block.
    Each query block then keeps its first key block and its diagonal block(s), and adds the other
    blocks by decreasing score until the kept blocks hold ``threshold`` of the row's total
    (``find_blocks_chunked``). ``threshold`` 0.9 is the official estimator's default
    (``xattn_estimate``; its prefill entry ``Xattention_prefill`` defaults to 0.8, and
    ``FastPrefillConfig`` without a threshold takes per-head ones from the offline search) and
    128-token blocks its prefill's; the estimator has no default stride: the paper runs RULER at
    both S = 8 and S = 16, the official prefill config (``FastPrefillConfig``) and examples use
    16. Ours is 8, the finer estimate of the two.

    Differences from the paper: the scoring is one fused Triton pass (no materialised strided
    score matrix, no chunking over queries; `attnsieve.kernels.antidiagonal`); lengths need not be
    multiples of the block size or stride (missing tokens count as zero) and N != M is bottom-right
    aligned. With ``causal=False`` the first and diagonal blocks are kept too, where the code
    forces them in causal attention only. One plan per query head (the paper repeats K per query
    head; we index it). The paper's per-head thresholds (found by its offline search) and the
    video-specific options are left out.
    Blocks tied at the last score needed are all kept (the code's sort keeps an arbitrary subset):
    a threshold search instead of a sort (`attnsieve.api.mass_threshold`).
    """

    threshold: float = 0.9
    stride: int = 8
    block_q: int = 128
    block_k: int = 128

    name: ClassVar[str] = "xattention"

    def __post_init__(self) -> None:
        check_float("threshold", self.threshold, 0.0, 1.0)
        check_int("stride", self.stride, 1)
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)
        if self.block_q % self.stride or self.block_k % self.stride:
            raise ValueError(
                f"stride: must divide block_q={self.block_q} and block_k={self.block_k}, "
                f"got {self.stride}"
            )

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        n, m, bq, bk = q.shape[2], k.shape[2], self.block_q, self.block_k
        if self.threshold >= 1:
            return Layout.dense(n, m, block_q=bq, block_k=bk, causal=causal, device=q.device)
        scores = antidiagonal_block_scores(
            q, k, stride=self.stride, block_q=bq, block_k=bk, causal=causal
        )
        visible = Layout.causal_block_mask(n, m, bq, bk, q.device)
        if not causal:
            visible = torch.ones_like(visible)
        forced = window_block_mask(n, m, bq, bk, 1, q.device)  # diagonal block(s)
        forced[:, 0] = True  # first key block
        forced &= visible
        # The forced blocks count first; the rest must bring the kept mass to threshold × total.
        scores = scores.masked_fill(~visible, 0.0)
        total = scores.sum(-1, keepdim=True)
        held = scores.masked_fill(~forced, 0.0).sum(-1, keepdim=True)
        rest = total - held
        needed = torch.where(rest > 0, (self.threshold * total - held) / rest.clamp(min=1e-30), 0.0)
        mask = mass_threshold(scores, needed, visible & ~forced) | forced
        return block_layout(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
