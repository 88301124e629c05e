"""FlexPrefill: per-head pattern and budget chosen from the prompt (arXiv 2502.20766)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import (
    block_mean_pool_qk,
    choose_lines,
    last_query_stats,
    line_block_layout,
    mass_threshold,
    pooled_block_probs,
)
from attnsieve.checks import cdiv, check_bool, check_float, check_int, check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner


@dataclass
class FlexPrefillPlanner(Planner):
    """FlexPrefill (Lai et al., ICLR 2025, arXiv 2502.20766), defaults of the official code: its
    default configuration (`flex_prefill/modules/patch.py` since April 2025: γ 0.9, τ 0.1, a
    1024-token minimum budget, 128-token blocks; 512 in earlier copies and in its README's
    example), and the budget every RULER and InfiniteBench script of the paper runs with. Those
    scripts run Llama-3.1 and GLM-4 at γ 0.95, Yi and Qwen2 at the default 0.9.

    For every head, the last ``block_q`` queries attend to all keys (the true estimate â) and
    their mean attends to the mean-pooled key blocks (the pooled estimate ā; its logits are
    taken as the mean of the last queries' scores over each block's keys, which equals the mean
    query · the mean key up to float rounding and comes from the pass that computes â, so K is
    pooled only for the query-aware heads). Query-aware pattern
    determination: if the square-root Jensen-Shannon divergence between ā and the per-block sums of
    â is below ``tau``, the head is *query-aware*: every query block is scored against every key
    block with pooled Q and K (softmax over key blocks) and the highest-scoring blocks of the whole
    map are kept until they hold ``gamma`` of its mass. Otherwise the head is *vertical-slash*:
    the key blocks (verticals) and diagonal-offset blocks (slashes) of â are each kept in
    descending order until they hold ``gamma`` of the last queries' attention. Budgets are clamped
    to [``min_budget``, ``max_budget``] tokens (rounded up to blocks); query-aware heads also keep
    ``min_budget`` of verticals and slashes. The first key block and the diagonal are always kept,
    and prompts of at most max(2, ⌈min_budget / block_k⌉) · block_k tokens stay dense, as in the
    code (and so do fewer keys than ``min_budget`` covers, N > M). Verticals and query-aware maps
    are key blocks. A chosen slash block s (diagonals [s·bk, (s+1)·bk)) keeps, in each query
    block, every key block those diagonals cross; with ``slash_spans=True`` it is instead one key
    span of ``block_q + block_k - 1`` keys that starts anywhere (`Layout.with_diagonals` with
    ``width=block_k``), spans of adjacent slash blocks merged.
    Blocks are the default: with ``block_q == block_k`` and N - M a multiple of the block, the span
    covers as many keys as the two blocks it crosses, and the kernel runs span tiles (masked,
    gathered, unaligned) slower than blocks: on the H200 at 128K (bench prefill, Llama-3-8B shapes)
    the span plan attended in 61.6 ms and planned in 24.8 ms at density 0.130, the block plan of an
    earlier run in 37.9 ms and 6.2 ms at density 0.131.

    Differences from the paper: the vertical/slash budgets are counted on the block sums (fewest
    blocks reaching ``gamma``) rather than the code's token count // 128 + 1 (a literal 128,
    whatever the block size), which undercounts scattered lines. The code draws a slash block on one
    aligned key block, missing part of every unaligned diagonal; we keep every block the diagonals
    cross (or the span, which is one key short of the two aligned blocks when N - M and the offset
    are block-aligned, a third narrower than the three it crosses otherwise). Positions are
    bottom-right aligned, so N != M works. Causal only; one plan per query head. The query-aware
    selection keeps every block tied at the last probability needed (a threshold search,
    `attnsieve.api.mass_threshold`, where the code sorts and keeps an arbitrary subset of ties), and
    keeps the block that crosses ``gamma``, where the official selection (``score_cover_idx`` over
    the head's whole flattened map, bytedance/FlexPrefill) keeps the blocks whose running sum stays
    within it: one block more per head. The first key block and the diagonal are kept beyond the
    vertical and slash budgets, where the code ranks them first within them: up to one vertical and
    one slash block more.

    Per-head ``gamma``: the paper sets one γ per model. ``gamma`` may be a list, one γ per query
    head, as `attnsieve calibrate` writes it for heads that all chose flexprefill and differ in
    γ only (`one_plan_for_heads`); one plan still serves every head. A head's γ of 1 keeps every
    vertical block: that head is dense.
    """

    gamma: float | tuple[float, ...] = 0.9
    tau: float = 0.1
    min_budget: int = 1024
    max_budget: int | None = None
    block_q: int = 128
    block_k: int = 128
    slash_spans: bool = False

    name: ClassVar[str] = "flexprefill"
    per_head_fields: ClassVar[tuple[str, ...]] = ("gamma",)

    def __setattr__(self, name: str, value: object) -> None:
        # γ is checked wherever it is set: the constructor, and per-head values that `attnsieve
        # calibrate` and users set on a planner (a list kept as a tuple, as JSON gives it)
        super().__setattr__(name, _checked_gamma(value) if name == "gamma" else value)

    def __post_init__(self) -> None:
        self._gamma_on: dict[tuple, Tensor] = {}  # per-head γ per (values, device), made once
        check_float("tau", self.tau, 0.0, 1.0)
        check_int("min_budget", self.min_budget, 0)
        if self.max_budget is not None:
            check_int("max_budget", self.max_budget, max(1, self.min_budget))
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)
        check_bool("slash_spans", self.slash_spans)

    def check_heads(self, num_heads: int, kv_heads: int | None) -> None:
        if isinstance(self.gamma, tuple) and len(self.gamma) != num_heads:
            raise ValueError(
                f"gamma: {len(self.gamma)} per-head values, but the model plans {num_heads} "
                f"query heads"
            )

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        if not causal:
            raise ValueError("causal: FlexPrefill plans causal prefill only (the paper's setting)")
        h_q, n = q.shape[1:3]
        h_kv, m = k.shape[1], k.shape[2]
        self.check_heads(h_q, h_kv)  # before any work: per-head values fit the heads
        bq, bk = self.block_q, self.block_k
        lo = max(1, cdiv(self.min_budget, bk))
        least_gamma = min(self.gamma) if isinstance(self.gamma, tuple) else self.gamma
        kb = cdiv(m, bk)
        # a minimum budget of every key block keeps them all (only with N > M can that happen
        # past the prompt-length test): dense, not a line choice whose budget exceeds its blocks
        if _float32(least_gamma) >= 1 or n <= max(2, lo) * bk or kb <= lo:
            return Layout.dense(n, m, block_q=bq, block_k=bk, device=q.device)
        hi = kb if self.max_budget is None else max(lo, cdiv(self.max_budget, bk))

        # â: attention of the last block of queries; ā: their mean against pooled keys, whose
        # logits (the mean of the scores over the rows and each block's keys) come from the same
        # pass over the keys, so K is pooled only for the query-aware heads' maps below. Per
        # head, whether it is query-aware, and its verticals' and slashes' blocks: the fewest
        # holding gamma of their mass, clamped to the budgets (one launch: a plan's launches, not
        # its arithmetic, are its cost at short prompts)
        vertical, slash, pooled = last_query_stats(q, k, last_q=min(bq, n), block_k=bk, pooled=True)
        gamma = self._gamma(q)
        query_aware, chosen, map_gamma = choose_lines(
            vertical, slash, pooled, gamma=gamma, tau=self.tau, lo=lo, hi=hi
        )  # chosen: (B, H_q, 2, KB), the first key block (sink) and the diagonal always
        chosen_vertical, chosen_slash = chosen.unbind(2)  # a head of γ 1: every vertical
        # a chosen key block keeps its column of blocks, a chosen offset block every key block
        # its diagonals cross (with spans: the span, below); the query-aware heads' block maps are
        # scored by kernels that read which heads those are (no host sync, a graph captures it).
        # The layout's lists are written straight from them (one launch, no mask)
        query_aware_map = self._query_aware(q, k, query_aware, map_gamma)
        layout = line_block_layout(
            chosen_vertical, None if self.slash_spans else chosen_slash, band=bk, block_q=bq,
            block_k=bk, num_queries=n, num_keys=m, extra=query_aware_map, extra_heads=query_aware,
        )  # fmt: skip
        if not self.slash_spans:
            return layout
        # a chosen offset block s: the band of diagonals [s·bk, (s+1)·bk), one span per block
        first_offset = torch.arange(kb, device=q.device) * bk
        return layout.with_diagonals(torch.where(chosen_slash, first_offset, -1), width=bk)

    def _gamma(self, q: Tensor) -> float | Tensor:
        """γ as a float, or per head as a float32 (H_q,) tensor on q's device, made once (a copy
        from the host inside a CUDA graph's capture would fail); made anew for a fake or traced
        q, whose tensor must neither meet a cached one nor be kept."""
        if not isinstance(self.gamma, tuple):
            return float(self.gamma)
        key = (self.gamma, q.device)
        if type(q) is not Tensor or key not in self._gamma_on:
            gamma = torch.tensor(self.gamma, dtype=torch.float32, device=q.device)
            if type(q) is not Tensor:
                return gamma
            self._gamma_on[key] = gamma
        return self._gamma_on[key]

    def _query_aware(self, q: Tensor, k: Tensor, heads: Tensor, map_gamma: Tensor) -> Tensor:
        """bool (B, H_q, QB, KB): per head, the blocks holding ``map_gamma`` (B, H_q) of its
        pooled map; none outside the query-aware ``heads`` (B, H_q), whose Q and KV head are not
        pooled, whose maps are not scored, and whose threshold searches are skipped."""
        # only the query-aware heads' Q and K are read and scored (what a plan reads is mostly
        # Q and K; 1-2 of 32 heads are query-aware on synthetic Llama-3-8B heads)
        q_pooled, k_pooled = block_mean_pool_qk(
            q, k, block_q=self.block_q, block_k=self.block_k, heads=heads
        )  # K's heads: those of the query-aware heads
        probs = pooled_block_probs(
            q_pooled,
            k_pooled,
            num_queries=q.shape[2],
            num_keys=k.shape[2],
            block_q=self.block_q,
            block_k=self.block_k,
            heads=heads,
        )
        # one cumulative threshold over the whole map of a head (the code's flattened selection)
        return mass_threshold(probs.flatten(2), map_gamma[..., None]).view_as(probs)


def _float32(x: float) -> float:
    """x rounded to float32, as the kernels read γ (a γ just below 1 rounds to 1: dense)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _checked_gamma(gamma: object) -> float | tuple[float, ...]:
    """γ, one number or a non-empty list of them (returned as a tuple), each in (0, 1]."""
    if isinstance(gamma, (list, tuple)):
        if not gamma:
            raise ValueError("gamma: expected a number or a non-empty list, got []")
        for i, g in enumerate(gamma):
            _check_gamma(f"gamma[{i}]", g)
        return tuple(gamma)
    _check_gamma("gamma", gamma)
    return gamma


def _check_gamma(name: str, gamma: object) -> None:
    check_float(name, gamma, 0.0, 1.0)
    if gamma == 0:
        raise ValueError(f"{name}: expected a number in (0, 1], got 0")
