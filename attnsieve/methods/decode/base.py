"""The decode-selector interface: a method decides which cached pages a decode step reads.

Also what selectors share: the token budget (``budget_tokens`` or ``ratio``, exactly one set) and
the ragged top-k of pages that always includes each head's last (current) page.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnsieve.api import page_budget
from attnsieve.api.backend import FLOAT
from attnsieve.checks import check_dtype, check_fraction, check_int, check_tensor, checked_fields
from attnsieve.methods.kv.base import pack_indices, rank_key, top_mask
from attnsieve.views import Pages, PageView


@dataclass
class StepState:
    """Scratch shared by the layers of one decode step (TidalDecode passes selections down)."""

    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecodeSelector:
    """Base of every sparse-decode method: ``select(q, view, step)`` picks the pages a decode step
    reads for query ``q`` (B, H_q, D), or returns None to read them all.

    ``budget_tokens`` is the number of tokens a KV head reads; ``ratio`` that number as a fraction
    of the head's length. Exactly one is set; when neither is, the class default applies (its
    docstring names the source); set on a built selector, either replaces the other. Both are
    positive (``budget_tokens >= 1``, ``ratio`` in (0, 1]): in the papers a budget is the tokens
    the attention reads (Quest's token budget, Double Sparsity's 1/16 of them); a zero budget
    selects nothing. Every selection also reads the current page.
    """

    budget_tokens: int | None = None
    ratio: float | None = None

    name: ClassVar[str] = ""
    default_budget_tokens: ClassVar[int | None] = 4096
    default_ratio: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        if self.budget_tokens is not None and self.ratio is not None:
            raise ValueError(
                f"budget_tokens, ratio: set exactly one, got budget_tokens="
                f"{self.budget_tokens!r} and ratio={self.ratio!r}"
            )
        if self.budget_tokens is None and self.ratio is None:
            if self.default_budget_tokens is not None:
                self.budget_tokens = self.default_budget_tokens
            else:
                self.ratio = self.default_ratio
        if self.budget_tokens is not None:
            check_int("budget_tokens", self.budget_tokens, 1)
        else:
            check_fraction("ratio", self.ratio)

    def __setattr__(self, name: str, value: object) -> None:
        # as a KV policy's: checked as in the constructor, a token budget and a ratio replacing
        # each other
        other = {"budget_tokens": "ratio", "ratio": "budget_tokens"}.get(name)
        for attr, checked in checked_fields(self, name, value, clears=other).items():
            super().__setattr__(attr, checked)

    def token_targets(self, view: PageView) -> Tensor:
        """int64 (B, H_kv): tokens each head reads, at most its length."""
        lengths = view.lengths.long()
        if self.budget_tokens is not None:
            return lengths.clamp(max=self.budget_tokens)
        return torch.ceil(self.ratio * lengths).long().clamp(max=lengths)

    def page_targets(self, view: PageView) -> Tensor:
        """int32 (B, H_kv): the token target of each head in whole pages, at least 1 (the current
        token's) and at most its page count: one launch (`attnsieve.api.page_budget`)."""
        return page_budget(
            view.lengths, view.page_count, view.page_size,
            budget_tokens=self.budget_tokens, ratio=self.ratio,
        )  # fmt: skip

    def max_tokens(self, max_len: int) -> int:
        """A host-side bound on any head's token target (for ``ratio``: ceil(ratio x max_len) in
        float32, as `token_targets` and `page_budget` compute it; float64 can be one less)."""
        check_int("max_len", max_len, 0)
        if self.budget_tokens is not None:
            return min(max_len, self.budget_tokens)
        scaled = torch.tensor(max_len, dtype=torch.float32) * torch.tensor(
            self.ratio, dtype=torch.float32
        )
        return min(max_len, math.ceil(scaled.item()))

    def select(self, q: Tensor, view: PageView, step: StepState) -> Pages | None:
        raise NotImplementedError

    def check_layer(
        self,
        layer: int,
        kv_heads: int | None,
        head_dim: int | None,
        num_layers: int | None = None,
    ) -> None:
        """Raise ValueError unless the selector can run on layer ``layer`` of a model of
        ``num_layers`` layers of ``kv_heads`` KV heads of ``head_dim`` channels (None: unknown),
        before any forward (`AttentionConfig.check_model`). Every selector can, unless it holds
        per-layer data or names layers."""
        check_int("layer", layer, 0)
        if num_layers is not None:
            check_int("num_layers", num_layers, layer + 1)
        for name, value in (("kv_heads", kv_heads), ("head_dim", head_dim)):
            if value is not None:
                check_int(name, value, 1)


def warn_no_sparse_layer(name: str, value: int, num_layers: int | None, effect: str) -> None:
    """Warn where the layer field ``name`` = ``value`` reaches past a model of ``num_layers``
    layers, so that the selector never reads sparsely (``effect``): valid, but a run labelled
    with the selector would then measure dense decoding (Quest's default 2 dense layers on a
    2-layer model)."""
    if num_layers is not None and value >= num_layers:
        warnings.warn(
            f"{name}={value} on a model of {num_layers} layers: {effect}", UserWarning, stacklevel=3
        )


def check_query(q: Tensor, view: PageView, step: StepState) -> None:
    """A selector's arguments: ``q`` is a (B, H_q, D) float16, bfloat16 or float32 tensor
    matching the view (H_q a positive multiple of H_kv) and on its device; ``step`` a
    `StepState`, whether or not the selector reads it."""
    if not isinstance(view, PageView):
        raise TypeError(f"view: expected a PageView, got {type(view).__name__}")
    if not isinstance(step, StepState):
        raise TypeError(f"step: expected a StepState, got {type(step).__name__}")
    check_tensor("q", q, 3, "(batch, heads, head_dim)", view.page_table.device)
    check_dtype("q", q, FLOAT)
    b, h, _ = view.page_table.shape
    d = view.head_dim
    if q.shape[0] != b or q.shape[2] != d or q.shape[1] % h or not q.shape[1]:
        raise ValueError(
            f"q: expected (B={b}, a positive multiple of H_kv={h}, D={d}), got {tuple(q.shape)}"
        )


def last_page(view: PageView) -> Tensor:
    """bool (B, H_kv, P): each head's last valid page (it holds the current token)."""
    pages = torch.arange(view.num_pages, device=view.page_table.device)
    return pages == view.page_count[..., None] - 1


def valid_tokens(view: PageView) -> Tensor:
    """bool (B, H_kv, P * page_size): the token slots before each head's length."""
    n = view.num_pages * view.page_size
    return torch.arange(n, device=view.page_table.device) < view.lengths[..., None]


def top_group_attention(
    q: Tensor, keys: Tensor, view: PageView, targets: Tensor, width: int
) -> Tensor:
    """bool (B, H_kv, P * page_size): each head's ``targets`` (int (B, H_kv), at most ``width``)
    valid tokens of highest attention summed over its g query heads, q (B, H_kv, g, R) against
    keys (B, H_kv, P * page_size, R): each query head's softmax (the view's scale, default
    1/sqrt(head_dim)), then summed over the group (summed logits of heads that disagree would
    cancel on a token one of them attends to); ties go to the lower slot."""
    scale = view.scale if view.scale is not None else view.head_dim**-0.5
    logits = (q @ keys.transpose(-1, -2)) * scale  # (B, H_kv, g, P * page_size)
    valid = valid_tokens(view)
    probs = logits.masked_fill(~valid[:, :, None], -math.inf).softmax(-1)
    key = rank_key(probs.nan_to_num(0.0).sum(2), torch.zeros_like(valid), valid)
    return top_mask(key, targets, width)


def weighted_pages(view: PageView) -> Tensor | None:
    """bool (B, H_kv, P): the pages holding a weighted token (RazorAttention's compensation
    token: `PageView.weighted_pages`), which every selector reads, as it reads the current page;
    None when the layer holds none. Such a token stands for many evicted ones: no bound or score
    of one token ranks it."""
    if view.weighted_pages is None:
        return None
    b, h, p = view.page_table.shape
    idx = view.weighted_pages.long()
    mask = torch.zeros(b, h, p + 1, dtype=torch.bool, device=idx.device)
    return mask.scatter_(-1, torch.where(idx >= 0, idx, p), True)[..., :p]


def pages_of(tokens: Tensor, view: PageView, width: int) -> Pages:
    """The pages holding the set token slots of ``tokens`` bool (B, H_kv, P * page_size), plus
    each head's last page and its weighted pages, as at most ``width`` pages (plus the weighted
    ones)."""
    b, h, p = view.page_table.shape
    chosen = tokens.view(b, h, p, view.page_size).any(-1) | last_page(view)
    if (heavy := weighted_pages(view)) is not None:
        chosen |= heavy
        width += view.weighted_pages.shape[-1]
    return Pages(*pack_indices(chosen, min(p, width)))
