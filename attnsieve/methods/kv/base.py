"""The KV-policy interface: a method decides which cached tokens each KV head keeps.

Also the pieces every policy shares: the budget (``budget`` tokens or ``ratio`` of the length,
exactly one set), the attention of the observation window, and the ragged top-k that turns
per-token scores into a `Kept` without a host synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_index, check_int, checked_fields
from attnsieve.views import Kept, KVView

FORCED = 1e12  # ranking key of always-kept entries (+ index: the later first); exact in float64


@dataclass
class KVPolicy:
    """Base of every KV-cache compression method: ``compress(view)`` returns the tokens each KV
    head keeps.

    ``budget`` is the mean number of tokens a head keeps in a layer (per-layer and per-head methods
    redistribute it); ``ratio`` is that number as a fraction of the head's current length. Exactly
    one is set; when neither is, the class default (``default_budget`` or ``default_ratio``; its
    docstring names the source) applies. Set on a built policy, either replaces the other. Either
    may be 0, which keeps no token of the layer (the floor of a budget sweep; RazorAttention still
    folds them into its compensation token), unlike a decode selector's budget, which reads at
    least the current page. Subclasses are dataclasses whose fields are the paper's
    hyper-parameters; they implement ``choose(view)`` (a scored policy: ``score`` and
    ``always_kept``), which `compress` calls after checking the view.
    """

    budget: int | None = None
    ratio: float | None = None

    name: ClassVar[str] = ""
    default_budget: ClassVar[int | None] = 2048
    default_ratio: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        if self.budget is not None and self.ratio is not None:
            raise ValueError(
                f"budget, ratio: set exactly one, got budget={self.budget!r} and "
                f"ratio={self.ratio!r}"
            )
        if self.budget is None and self.ratio is None:
            if self.default_budget is not None:
                self.budget = self.default_budget
            else:
                self.ratio = self.default_ratio
        if self.budget is not None:
            check_int("budget", self.budget, 0)
        else:
            check_float("ratio", self.ratio, 0.0, 1.0)

    def __setattr__(self, name: str, value: object) -> None:
        # every field set on a built policy is checked as the constructor checks it, and a budget
        # replaces the ratio and a ratio the budget: a ratio set beside the default budget was
        # ignored (`targets` reads the budget first)
        other = {"budget": "ratio", "ratio": "budget"}.get(name)
        for attr, checked in checked_fields(self, name, value, clears=other).items():
            super().__setattr__(attr, checked)

    def check_layer(self, layer: int, kv_heads: int | None, num_layers: int | None) -> None:
        """Raise ValueError unless the policy can run on layer ``layer`` of a model of
        ``num_layers`` layers of ``kv_heads`` KV heads (None: unknown), before any forward
        (`AttentionConfig.check_model`). Every policy can, unless it names layers or heads."""
        check_int("layer", layer, 0)
        if num_layers is not None:
            check_int("num_layers", num_layers, layer + 1)
        if kv_heads is not None:
            check_int("kv_heads", kv_heads, 1)

    def targets(self, view: KVView) -> Tensor:
        """int64 (B, H_kv): tokens each head keeps, at most its length."""
        lengths = view.lengths.long()
        if self.budget is not None:
            return lengths.clamp(max=self.budget)
        # in float64, as `max_keep` rounds: float32 can round one higher (0.043 x 2500)
        return torch.floor(self.ratio * lengths.double() + 0.5).long().clamp(max=lengths)

    def max_keep(self, max_len: int) -> int:
        """A host-side bound on any head's kept count, the width of `Kept.idx`."""
        check_int("max_len", max_len, 0)
        if self.budget is not None:
            return min(max_len, self.budget)
        return min(max_len, math.floor(self.ratio * max_len + 0.5))

    def compress(self, view: KVView) -> Kept:
        """The tokens each KV head of ``view``'s layer keeps (`choose`, on a layer that holds
        something: most policies' scores are undefined over no entry)."""
        check_view(view)
        if view.keys.shape[2] == 0:
            return pack(torch.zeros_like(view.positions, dtype=torch.bool), 0)
        return self.choose(view)

    def choose(self, view: KVView) -> Kept:
        """`compress` on a layer of at least one entry: what each policy implements."""
        raise NotImplementedError


@dataclass
class ScoredPolicy(KVPolicy):
    """A policy that is a per-token score plus always-kept tokens: each head keeps its always-kept
    entries, then its highest-scoring ones up to its target. Wrappers (Ada-KV) reuse ``score``."""

    def score(self, view: KVView) -> Tensor:
        """float (B, H_kv, L): importance of each entry (padding entries: anything)."""
        raise NotImplementedError

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        """bool (B, H_kv, L): entries kept before any scored one (e.g. the observation window)."""
        return torch.zeros_like(view.positions, dtype=torch.bool)

    def choose(self, view: KVView) -> Kept:
        return self.keep(view, self.targets(view), self.max_keep(view.keys.shape[2]))

    def keep(self, view: KVView, target: Tensor, width: int) -> Kept:
        """Each head's ``target`` (int64 (B, H_kv), at most ``width``) entries: its always-kept
        ones, then its highest-scoring ones."""
        check_target(view, target)
        check_int("width", width, 0)
        key = rank_key(self.score(view), self.always_kept(view, target), valid_entries(view))
        return pack(top_mask(key, target, width), width)


def check_view(view: object) -> None:
    """A TypeError naming ``view`` unless it is a `KVView` (whose fields check themselves)."""
    if not isinstance(view, KVView):
        raise TypeError(f"view: expected a KVView, got {type(view).__name__}")


def check_target(view: KVView, target: object) -> None:
    """``view`` is a `KVView` and ``target`` an int64 (B, H_kv) tensor on its device (a per-row
    or scalar target was broadcast over the heads)."""
    check_view(view)
    check_index("target", target, tuple(view.lengths.shape), torch.int64, view.keys.device)


def valid_entries(view: KVView) -> Tensor:
    """bool (B, H_kv, L): the entries before each head's length."""
    n = view.keys.shape[2]
    return torch.arange(n, device=view.keys.device) < view.lengths[..., None]


def rank_key(score: Tensor, forced: Tensor, valid: Tensor) -> Tensor:
    """float64 ranking key: forced entries first (the later ones first), then by score; padding
    last. `top_mask` breaks ties between scores towards the lower index."""
    index = torch.arange(score.shape[-1], device=score.device, dtype=torch.float64)
    key = torch.where(forced, FORCED + index, score.double())
    return key.masked_fill(~valid, -math.inf)


def top_mask(key: Tensor, count: Tensor, width: int) -> Tensor:
    """bool like key: the ``count`` (per row, at most ``width``) largest entries of each row, ties
    broken towards the lower index (as `attnsieve.api.select_pages` picks pages): a stable sort,
    where topk picks tied entries in an order of its own, which differs between devices. On the
    H200 the sort took 0.95-1.09x topk's time at batch 1 and 1.5-2.3x at batch 8 (32K / 128K
    tokens); topk's values with a scan over the ties took 1.6-1.9x at all four
    (benchmarks/results/h200/top_mask32/)."""
    width = min(width, key.shape[-1])
    order = key.sort(dim=-1, descending=True, stable=True).indices[..., :width]
    rank_ok = torch.arange(width, device=key.device) < count[..., None]
    return torch.zeros_like(key, dtype=torch.bool).scatter_(-1, order, rank_ok)


def pack(mask: Tensor, width: int) -> Kept:
    """`Kept` of a bool (B, H_kv, L) mask: ascending indices, -1 past the count. An overfull row
    (more than ``width`` entries) raises instead of being truncated."""
    idx, count = pack_indices(mask, width)
    return Kept(idx, count)


def pack_indices(mask: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """int32 (..., width) ascending indices of the set entries of ``mask`` (-1 padded), and their
    int32 (...) count, with one scatter (no host synchronisation)."""
    count = mask.sum(-1, dtype=torch.int32)
    slot = torch.where(mask, mask.cumsum(-1) - 1, width)  # unset entries go to a spare column
    idx = torch.full((*mask.shape[:-1], width + 1), -1, dtype=torch.int32, device=mask.device)
    src = torch.arange(mask.shape[-1], dtype=torch.int32, device=mask.device).expand_as(mask)
    idx.scatter_(-1, slot, src)
    return idx[..., :width].contiguous(), count


def window_attention(view: KVView, window: int) -> Tensor:
    """float32 (B, H_kv, W, L): softmax attention of the last ``window`` queries over the entries,
    causal w.r.t. positions, weighted entries counted by their weight, padding and absent queries
    masked (rows of zeros), averaged over the g query heads of each KV head."""
    q, qpos = view.queries[:, :, -window:], view.query_positions[:, -window:]
    b, h_q, w, d = q.shape
    h = view.keys.shape[1]
    scale = view.scale if view.scale is not None else d**-0.5
    logits = (
        torch.einsum("bhgwd,bhld->bhgwl", q.view(b, h, h_q // h, w, d).float(), view.keys.float())
        * scale
    )
    if view.log_weights is not None:
        logits = logits + view.log_weights[:, :, None, None, :]
    visible = (view.positions[:, :, None, :] <= qpos[:, None, :, None]) & (qpos >= 0)[
        :, None, :, None
    ]
    visible = visible & valid_entries(view)[:, :, None, :]
    probs = logits.masked_fill(~visible[:, :, None], -math.inf).softmax(-1)
    return probs.nan_to_num(0.0).mean(2)


def window_tokens(view: KVView, window: int) -> Tensor:
    """bool (B, H_kv, L): the valid entries at or after the first query of the window (the
    window's own tokens, which SnapKV-style methods always keep)."""
    qpos = view.query_positions[:, -window:]
    first = torch.where(qpos >= 0, qpos, torch.iinfo(qpos.dtype).max).amin(-1)
    return (view.positions >= first[:, None, None]) & valid_entries(view)


def recent_tokens(view: KVView, count: Tensor) -> Tensor:
    """bool (B, H_kv, L): the last ``count`` (per head) valid entries."""
    index = torch.arange(view.keys.shape[2], device=view.keys.device)
    lengths = view.lengths[..., None].long()
    return (index >= lengths - count[..., None]) & (index < lengths)
