"""TidalDecode: a few token-selection layers choose the tokens all other layers read
(arXiv 2410.05076)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_int
from attnsieve.methods.decode.base import (
    DecodeSelector,
    Pages,
    PageView,
    StepState,
    check_query,
    pages_of,
    top_group_attention,
    warn_no_sparse_layer,
)
from attnsieve.methods.kv.base import pack_indices

STATE_KEY = "tidaldecode.tokens"
LAYER_KEY = "tidaldecode.layer"  # the layer that made the step's selection


@dataclass
class TidalDecode(DecodeSelector):
    """TidalDecode, position persistent sparse attention (Yang et al., ICLR 2025, arXiv
    2410.05076).

    Layers before ``select_layer`` (2: the first two layers) attend densely. The token-selection
    layers, ``select_layer`` and ``reselect_layer`` (13, the paper's choice for Llama-3-8B's 32
    layers; None: no re-selection), also attend densely, and pick the ``budget_tokens`` tokens of
    highest exact attention score for the current query; every other layer reads the tokens the
    last selection layer picked. The selection travels down the layers of one step in
    ``StepState.values``.

    Differences from the paper: the cache is paged, so a layer reads the pages holding the chosen
    tokens (and its current page): more tokens than the budget. GQA: a KV head keeps the tokens of
    highest attention summed over its g query heads (softmax probabilities, so each head weighs
    equally). Token indices are reused across layers as logical cache indices: correct for an
    uncompressed cache, where index = position in every layer; after a KV policy has evicted tokens
    differently per layer the reused indices no longer name the same tokens, so `AttentionConfig`
    refuses TidalDecode beside a KV policy. The authors' ``enable_tidal`` defaults to a budget of
    256 tokens and re-selection layer 13 (their other scripts to layer 9); the default budget here,
    4096, is their LongBench script's (``experiments/LongBench/run_longbench.sh``: ``--top_k 4096
    --sparse_layer_start 2 --correction_layer 13``). The paper's KV-cache correction (re-filling
    tokens decoded sparsely) is not done. The integration runs sliding-window and soft-capped
    layers whole, without the selector (Gemma 3's layers 2 and 13 are such layers), so the first
    layer of a step past ``select_layer`` that finds no selection of this step selects itself,
    and the first layer at or past ``reselect_layer`` whose selection came from before it
    re-selects.
    """

    select_layer: int = 2
    reselect_layer: int | None = 13

    name: ClassVar[str] = "tidaldecode"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("select_layer", self.select_layer, 0)
        if self.reselect_layer is not None:
            check_int("reselect_layer", self.reselect_layer, self.select_layer + 1)

    def check_layer(
        self,
        layer: int,
        kv_heads: int | None,
        head_dim: int | None,
        num_layers: int | None = None,
    ) -> None:
        """A model with no layer at ``select_layer`` would never select: every step dense. One
        without ``reselect_layer`` never re-selects (as None): a warning."""
        super().check_layer(layer, kv_heads, head_dim, num_layers)
        if self.reselect_layer is not None:
            warn_no_sparse_layer(
                "reselect_layer", self.reselect_layer, num_layers,
                "no layer re-selects tokens (as reselect_layer=None)",
            )  # fmt: skip
        if num_layers is not None and self.select_layer >= num_layers:
            raise ValueError(
                f"select_layer: {self.select_layer}, but the model has {num_layers} layers (no "
                "layer would select tokens)"
            )

    def select(self, q: Tensor, view: PageView, step: StepState) -> Pages | None:
        check_query(q, view, step)
        if view.layer < self.select_layer:
            return None
        # a selection layer, or the first layer past it that runs the selector (the model may run
        # a selection layer whole: a sliding-window or soft-capped layer)
        made = step.values.get(LAYER_KEY)
        stale = self.reselect_layer is not None and made is not None and made < self.reselect_layer
        if (
            made is None
            or view.layer == self.select_layer
            or (stale and view.layer >= self.reselect_layer)
        ):
            step.values[STATE_KEY] = self._choose(q, view)
            step.values[LAYER_KEY] = view.layer
            return None  # a selection layer attends to everything
        chosen = step.values[STATE_KEY]  # int32 (B, H_kv, K) token indices, -1 padded
        b, h, p = view.page_table.shape
        if chosen.shape[:2] != (b, h):
            raise ValueError(
                f"step: holds a selection for (B, H_kv) = {tuple(chosen.shape[:2])}, the view has "
                f"{(b, h)}: a StepState serves the layers of one decode step"
            )
        n = p * view.page_size
        if chosen.shape[-1] >= n:
            return None
        ok = (chosen >= 0) & (chosen < view.lengths[..., None])
        slot = torch.where(ok, chosen.long(), n)
        tokens = torch.zeros(b, h, n + 1, dtype=torch.bool, device=chosen.device)
        tokens.scatter_(-1, slot, True)
        return pages_of(tokens[..., :n], view, chosen.shape[-1] + 1)

    def _choose(self, q: Tensor, view: PageView) -> Tensor:
        """int32 (B, H_kv, K): the top tokens of each head by exact attention, -1 padded."""
        if view.keys is None:
            raise ValueError(
                "view.keys: TidalDecode's token-selection layers need the cache's keys "
                "(PageView.keys)"
            )
        b, h, p = view.page_table.shape
        d, n = view.head_dim, p * view.page_size
        keys = view.keys().reshape(b, h, n, d).float()
        width = self.max_tokens(n)
        q = q.float().view(b, h, -1, d)
        tokens = top_group_attention(q, keys, view, self.token_targets(view), width)
        return pack_indices(tokens, width)[0]
