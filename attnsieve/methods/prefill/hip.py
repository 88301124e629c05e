"""HiP: hierarchical top-k key selection by branch-and-prune (arXiv 2406.09827)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import block_layout, block_mean_pool
from attnsieve.checks import cdiv, check_int, check_pow2
from attnsieve.layout import Layout, query_block_positions
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.masks import window_block_mask


@dataclass
class HiPPlanner(Planner):
    """Hierarchically Pruned Attention (Lee et al., arXiv 2406.09827), mask estimation only.

    Algorithm (the paper's tree search, O(N log N)), as done here: for every query block, split the
    keys it may see into k' = ``budget_tokens`` / ``block_k`` (at most the key blocks) equal groups
    (branches). Then repeat until every branch is a single key block: split each branch into two
    halves, score each half by its representative against the query block, and keep the k' best
    halves. The k' starting groups and the first key block of a half as its representative are ours
    (the official search starts from 2k groups and samples representatives; the paper's algorithm
    box we could not check). The survivors are the query block's key blocks; the diagonal block is
    always kept (the code's sliding window). ``budget_tokens`` = 512 is the paper's budget k.

    Differences from the paper: HiP works on blocks of b_q = 32 queries and b_k = 2 keys and scores
    a representative by the max over its queries and keys; our leaves are the layout's key blocks
    (``block_k`` = 128, so the 512-token budget becomes 4 key blocks per query block of
    ``block_q`` = 128 queries, sizes the sparse kernel runs fast) and a representative's score is
    the dot product of the mean-pooled query block with the mean-pooled key block. Each
    iteration scores only 2·k' blocks per query block, so planning stays O(N log N) (no QB × KB
    score map). RoPE-free (the paper's self-extend options are left out); one plan per query head.
    The official code's defaults (``hip_attention``, DeepAuto-AI/hip-attention v1.0) that are not
    done here: its first ((log2(T / k / 2)) · k + k) · 3 queries run dense (about 9K of a 32K
    prompt at k = 512), a 128-token sliding window and sink tokens are added, the search starts
    from 2k groups of k / 2, representatives are sampled at random, and scores are approximated
    with SparQ. Our density and recall at one budget therefore differ from the official HiP's.
    """

    budget_tokens: int = 512
    block_q: int = 128
    block_k: int = 128

    name: ClassVar[str] = "hip"

    def __post_init__(self) -> None:
        check_int("budget_tokens", self.budget_tokens, 1)
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        b, h_q, n, _ = q.shape
        m, bq, bk, dev = k.shape[2], self.block_q, self.block_k, q.device
        qb, kb = cdiv(n, bq), cdiv(m, bk)
        # more branches than key blocks leave the extra ones empty: as many as key blocks, so a
        # budget past the prompt costs no more memory than one of all the blocks
        branches = min(cdiv(self.budget_tokens, bk), kb)
        q_pooled = block_mean_pool(q, bq)  # (B, H_q, QB, D)
        k_pooled = block_mean_pool(k, bk)  # (B, H_kv, KB, D)
        _, last = query_block_positions(n, m, bq, dev)
        seen = (last // bk + 1).clamp(0, kb) if causal else torch.full_like(last, kb)
        # initial branches: `branches` near-equal groups of each row's visible key blocks
        j = torch.arange(branches + 1, device=dev)
        edges = (seen[:, None] * j // branches).expand(b, h_q, qb, branches + 1)
        start, size = edges[..., :-1], edges[..., 1:] - edges[..., :-1]
        longest = cdiv(kb, branches)
        while longest > 1:  # ceil(log2(KB / k')) iterations, known without a host sync
            half = size // 2
            start = torch.cat([start, start + half], -1)
            size = torch.cat([half, size - half], -1)
            score = _first_block_scores(q_pooled, k_pooled, start).masked_fill(
                size == 0, -torch.inf
            )
            best = score.topk(branches, -1).indices
            start, size = start.gather(-1, best), size.gather(-1, best)
            longest = cdiv(longest, 2)
        leaves = torch.where(size > 0, start, kb)
        mask = torch.zeros(b, h_q, qb, kb + 1, dtype=torch.bool, device=dev)
        mask = mask.scatter_(-1, leaves, True)[..., :kb]
        mask |= window_block_mask(n, m, bq, bk, 1, dev)  # the diagonal block(s)
        if causal:
            mask &= Layout.causal_block_mask(n, m, bq, bk, dev)
        return block_layout(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)


def _first_block_scores(q_pooled: Tensor, k_pooled: Tensor, start: Tensor) -> Tensor:
    """(B, H_q, QB, C): pooled query block · pooled key block ``start`` (the branch representative).

    GQA: the index is viewed per KV group, so the pooled keys are gathered, never repeated per head.
    """
    b, h_q, qb, c = start.shape
    h_kv, d = k_pooled.shape[1], k_pooled.shape[3]
    index = start.clamp(max=k_pooled.shape[2] - 1).reshape(b, h_kv, -1, 1).expand(-1, -1, -1, d)
    keys = k_pooled.gather(2, index).view(b, h_q, qb, c, d)
    return (keys @ q_pooled[..., None]).squeeze(-1)
