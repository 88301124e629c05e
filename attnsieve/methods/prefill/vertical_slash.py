"""MInference's vertical-slash pattern, estimated from the last queries (arXiv 2407.02490)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.api import last_query_stats, line_layout
from attnsieve.checks import check_bool, check_int, check_pow2
from attnsieve.layout import Layout
from attnsieve.methods.prefill.base import Planner
from attnsieve.methods.prefill.scores import group_reduce


@dataclass
class VerticalSlashPlanner(Planner):
    """Vertical lines (key columns) and slash lines (diagonals) of MInference (arXiv 2407.02490).

    Algorithm (the paper's vertical-slash head): attend the last ``last_q`` = 64 queries to all
    keys (an O(N) estimate), sum the softmax per key column (vertical) and per diagonal offset
    (slash), and keep the top ``vertical_size`` columns and ``slash_size`` diagonals. As in the
    official code, the first ``sink_tokens`` = 30 columns and the ``local_slashes`` = 100 most
    recent diagonals are always kept (a smaller budget is raised to them; the official code
    raises a slash budget to 50 only, so at 50-99 it keeps that many of the 100). Default budget
    as in the official code (the pattern ``minference_forward.py`` gives a head its config lacks,
    and the most common one of its shipped configs): 1000 columns and 6096 slashes per head, on
    64 x 64 blocks.

    Execution as in MInference's kernel: in a query block whose rows sit at positions [P0, P1], a
    chosen diagonal o is covered by the key range [P0 - o, P1 - o] (``block_q`` keys starting
    anywhere), overlapping ranges merged: the layout's spans. Verticals become the layout's
    columns (those inside a span dropped). `attnsieve.api.line_layout` (`Layout.from_lines`)
    builds the layout without sorting any (head, query block) row, each row in one Triton
    program; the official code converts its indices in one CUDA kernel.

    Differences from the paper: the diagonal key block(s) of every query block are kept as blocks
    (so no row is left without a key when ``local_slashes`` is 0; with the default 100 local
    diagonals they lie inside the local span anyway, which is cut around them). Like the paper's
    kernel, a span computes every pair of its (query block x key range) rectangle, about
    ``block_q`` times the pairs on its diagonals. ``share_kv_group`` sums the estimates of the g
    query heads of a KV group to make one plan per KV head. Causal only.

    Per-head budgets: the paper searches a (pattern, budget) per head offline; the defaults here
    are one budget for every head. ``vertical_size`` and ``slash_size`` may each be a list, one
    budget per planned head (query heads, or KV heads with ``share_kv_group``), as
    `attnsieve calibrate` writes them for heads that all chose this method (`one_plan_for_heads`);
    one plan still serves every head.
    """

    vertical_size: int | tuple[int, ...] = 1000
    slash_size: int | tuple[int, ...] = 6096
    last_q: int = 64
    sink_tokens: int = 30
    local_slashes: int = 100
    block_q: int = 64
    block_k: int = 64
    share_kv_group: bool = False

    name: ClassVar[str] = "vertical_slash"
    per_head_fields: ClassVar[tuple[str, ...]] = ("vertical_size", "slash_size")

    def __setattr__(self, name: str, value: object) -> None:
        # the budgets are checked wherever they are set, in the constructor or on a built planner
        # (a list kept as a tuple, as JSON gives it: `check_heads` measures tuples against the
        # heads; a list set later planned the heads past its end without their lines, sinks too)
        if name in self.per_head_fields:
            value = _checked_budget(name, value)
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        for field in ("sink_tokens", "local_slashes"):
            check_int(field, getattr(self, field), 0)
        check_int("last_q", self.last_q, 1)
        check_pow2("block_q", self.block_q, 16, 128)
        check_pow2("block_k", self.block_k, 16, 128)
        check_bool("share_kv_group", self.share_kv_group)

    def check_heads(self, num_heads: int, kv_heads: int | None) -> None:
        planned = kv_heads if self.share_kv_group else num_heads
        for field in self.per_head_fields:
            budget = getattr(self, field)
            if isinstance(budget, tuple) and planned is not None and len(budget) != planned:
                raise ValueError(
                    f"{field}: {len(budget)} per-head budgets, but the model plans {planned} "
                    f"{'KV' if self.share_kv_group else 'query'} heads"
                )

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        if not causal:
            raise ValueError("causal: the vertical-slash estimate is defined for causal attention")
        n, h_kv, m = q.shape[2], k.shape[1], k.shape[2]
        self.check_heads(q.shape[1], h_kv)  # before any work: per-head budgets fit the heads
        # mean probability per key column and per diagonal offset (offset blocks of one token)
        vertical, slash = last_query_stats(q, k, last_q=min(self.last_q, n), block_k=1)
        if self.share_kv_group:
            vertical, slash = group_reduce(vertical, h_kv), group_reduce(slash, h_kv)
        vertical[..., : self.sink_tokens] = math.inf
        slash[..., : self.local_slashes] = math.inf
        # the sinks and local diagonals always stay, within a smaller budget too
        # a head with a budget of 0 pads with the last key's column and the main diagonal: both
        # lie in the diagonal key blocks every query block keeps, so they add no pair
        columns = _top(vertical, self.vertical_size, self.sink_tokens, m - 1)
        offsets = _top(slash, self.slash_size, self.local_slashes, 0)
        return line_layout(
            columns, offsets, block_q=self.block_q, block_k=self.block_k, num_queries=n,
            num_keys=m,
        )  # fmt: skip


def _checked_budget(name: str, budget: object) -> int | tuple[int, ...]:
    """A budget, one int >= 0 or a non-empty list of them (returned as a tuple)."""
    if isinstance(budget, (list, tuple)):
        if not budget:
            raise ValueError(f"{name}: expected an int or a non-empty list, got []")
        for i, b in enumerate(budget):
            check_int(f"{name}[{i}]", b, 0)
        return tuple(budget)
    check_int(name, budget, 0)
    return budget


def _top(score: Tensor, budget: int | tuple[int, ...], kept: int, pad: int) -> Tensor:
    """The top ``max(budget, kept)`` indices of each head's ``score`` (B, H, M) (the ``kept``
    forced ones among them), best first. With one budget per head, the heads of each budget take
    their own top-k, so that ties break as they would with that budget alone, and a head's slots
    past its budget repeat its best entry (`Layout.from_lines` takes repeats), or hold ``pad``
    where it has none (one budget per head of ``score``: `check_heads`)."""
    m = score.shape[-1]
    if isinstance(budget, int):
        return score.topk(min(max(budget, kept), m), -1).indices
    own = [min(max(b, kept), m) for b in budget]
    out = torch.full((*score.shape[:2], max(own)), pad, dtype=torch.long, device=score.device)
    for width in sorted(set(own) - {0}):
        rows = torch.tensor([h for h, w in enumerate(own) if w == width], device=score.device)
        top = score[:, rows].topk(width, -1).indices
        out[:, rows] = torch.cat([top, top[..., :1].expand(-1, -1, out.shape[-1] - width)], -1)
    return out
