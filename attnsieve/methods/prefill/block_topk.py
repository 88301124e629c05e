"""Block-sparse prefill from mean-pooled Q/K: MInference block-sparse + SpargeAttn prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import block_layout, mass_threshold
from attnsieve.checks import check_bool, check_float, check_int, check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.masks import window_block_mask
from attnsieve.methods.prefill.scores import block_self_similarity, group_reduce, pooled_scores


@dataclass
class BlockTopKPlanner(Planner):
    """Key blocks chosen from pooled block scores: MInference's block-sparse head pattern
    (arXiv 2407.02490) with SpargeAttn's selective prediction (Zhang et al., arXiv 2502.18137).

    Algorithm (SpargeAttn, stage 1): mean-pool every query block and key block, score the pooled
    pairs (scaled dot product, causal-masked), softmax over key blocks, and keep either the ``topk``
    best key blocks (MInference) or the fewest blocks whose probability reaches ``cdf_threshold``
    (SpargeAttn's CDF mode). Pooling only summarises a block whose tokens are alike, so SpargeAttn
    measures each block's self-similarity (mean pairwise cosine of its tokens, keys centred by their
    sequence mean when ``smooth_k``): a query block below ``simthreshd1`` keeps its whole causal
    row, a key block below it is kept in every row (and left out of the softmax). Defaults are those
    of SpargeAttn's ``spas_sage2_attn_meansim_cuda`` (128 x 64 blocks, its blocks off Hopper,
    simthreshd1 = 0.6, cdf_threshold = 0.98; the paper tunes both thresholds per head); set ``topk``
    (and ``cdf_threshold=None``) to keep a fixed number of key blocks a row.

    Differences from the papers: the diagonal key blocks and the first key block are always kept
    here; neither SpargeAttn's code (its attention sink is off by default) nor MInference's forces
    any block, so at one ``cdf_threshold`` our density and recall are higher. SpargeAttn's second
    stage (skipping P·V inside the kernel by the ``pvthreshd`` test) belongs to a kernel and is not
    done; its block-level causal mask is top-left aligned, ours bottom-right; on Hopper its kernel
    takes 64 x 128 blocks. The ``topk`` mode is not MInference's block-sparse head: MInference takes
    a plain top-k (a fixed k of 100 blocks of 64 x 64 in its code) with no similarity test and no
    forced block, SpargeAttn's own top-k a fraction of the row with the similarity test off, while
    ours keeps the similarity test and the forced blocks above, and ``topk`` counts blocks. GQA:
    one plan per query head, or with ``share_kv_group`` the block probabilities are averaged over
    the g heads of a KV group (a query block is kept whole if any head of the group finds it
    dissimilar). In the cumulative mode, blocks tied at the last
    probability needed are all kept (a threshold search, `attnsieve.api.mass_threshold`, not a
    sort), and the block whose probability crosses ``cdf_threshold`` is kept too: SpargeAttn's code
    (``searchsorted(cdf, threshold, right=True)``, at least one) keeps only the blocks whose
    running sum stays within it, usually one block fewer per row.
    """

    block_q: int = 128
    block_k: int = 64
    topk: int | None = None
    cdf_threshold: float | None = 0.98
    simthreshd1: float = 0.6
    smooth_k: bool = True
    share_kv_group: bool = False

    name: ClassVar[str] = "block_topk"

    def __post_init__(self) -> None:
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)
        if (self.topk is None) == (self.cdf_threshold is None):
            raise ValueError("topk, cdf_threshold: set exactly one of them (the other to None)")
        if self.topk is not None:
            check_int("topk", self.topk, 1)
        if self.cdf_threshold is not None:
            check_float("cdf_threshold", self.cdf_threshold, 0.0, 1.0)
        check_float("simthreshd1", self.simthreshd1, -1.0, 1.0)
        check_bool("smooth_k", self.smooth_k)
        check_bool("share_kv_group", self.share_kv_group)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        _, h_q, n, _ = q.shape
        h_kv, m = k.shape[1], k.shape[2]
        bq, bk = self.block_q, self.block_k
        visible = Layout.causal_block_mask(n, m, bq, bk, q.device)
        if not causal:
            visible = torch.ones_like(visible)

        q_similar = block_self_similarity(q, bq) > self.simthreshd1  # (B, H_q, QB)
        centred = k.float() - k.float().mean(-2, keepdim=True) if self.smooth_k else k
        k_similar = block_self_similarity(centred, bk) > self.simthreshd1  # (B, H_kv, KB)
        per_query_head = k_similar[:, torch.arange(h_q, device=q.device) // (h_q // h_kv), None]
        probs = self._probs(pooled_scores(q, k, bq, bk), visible, per_query_head)
        if self.share_kv_group:
            # Softmax per query head first, so every head weighs equally in the group's mean.
            probs = group_reduce(probs, h_kv, "mean")
            q_similar = group_reduce(q_similar, h_kv, "all")
            k_similar = k_similar[:, :, None]
        else:
            k_similar = per_query_head
        candidates = visible & k_similar
        if self.topk is not None:
            # ranked among the candidates only: a candidate's probability can underflow to the
            # 0 of an excluded block, and a tie picked the excluded one, keeping fewer than topk
            ranked = probs.masked_fill(~candidates, -1.0)
            best = ranked.topk(min(self.topk, probs.shape[-1]), -1).indices
            mask = torch.zeros_like(candidates).scatter_(-1, best, True) & candidates
        else:
            mask = mass_threshold(probs, self.cdf_threshold, candidates)
        mask |= ~k_similar | ~q_similar[..., None]
        mask |= window_block_mask(n, m, bq, bk, 1, q.device)  # diagonal blocks
        mask[..., 0] = True  # first key block (attention sink)
        return block_layout(mask & visible, block_q=bq, block_k=bk, num_queries=n, num_keys=m)

    @staticmethod
    def _probs(scores: Tensor, visible: Tensor, k_similar: Tensor) -> Tensor:
        """Softmax over the visible, self-similar key blocks of every row; 0 elsewhere."""
        return scores.masked_fill(~(visible & k_similar), -math.inf).softmax(-1).nan_to_num(0.0)
