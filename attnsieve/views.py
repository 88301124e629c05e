"""The contract between the cache and the methods that read it, as plain data.

`KVView` is what a KV policy sees of one layer (`attnsieve.cache.Cache.kv_view`) and `Kept` what it
returns (`Cache.compact` applies it); `PageView` is what a decode selector sees at a step
(`Cache.page_view`) and `Pages` what it returns (`attnsieve.api.decode_attention` reads it). They
live here, below both the cache and the methods, so that neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from attnsieve.checks import check_index, check_int, check_int32, check_scale, check_tensor


@dataclass(frozen=True)
class KVView:
    """What a policy sees of one layer's cache, padded to the longest head; every tensor on the
    keys' device.

    Fields:
        keys, values: (B, H_kv, L, D) cached keys (after RoPE) and values; entries past a head's
            length are padding (any values) and are never kept.
        positions: int64 (B, H_kv, L) absolute token positions of the entries (non-decreasing per
            head; after eviction they have gaps; a compensation token takes the position `Kept`
            gave it).
        lengths: int32 (B, H_kv) valid entries per head.
        queries: (B, H_q, W, D) the most recent queries of this layer (the observation window:
            the prompt's last W at prefill, the last W decode steps later), oldest first.
        query_positions: int64 (B, W) their absolute positions; -1 marks an absent query (a
            sequence shorter than W), which scores nothing.
        layer: index of the layer; num_layers: how many the model has (for per-layer budgets).
        scale: the softmax scale of the layer's attention; None means 1/sqrt(D).
        log_weights: float32 (B, H_kv, L), the natural log of how many tokens each entry stands
            for (a compensation token stands for those it replaced; attention adds this to its
            logit), 0 for a plain token and for padding; None when the layer holds none.
    """

    keys: Tensor
    values: Tensor
    positions: Tensor
    lengths: Tensor
    queries: Tensor
    query_positions: Tensor
    layer: int
    num_layers: int
    scale: float | None = None
    log_weights: Tensor | None = None

    def __post_init__(self) -> None:  # shapes and dtypes only: no host synchronisation
        check_tensor("keys", self.keys, 4, "(batch, kv_heads, len, head_dim)")
        dev = self.keys.device
        check_tensor("queries", self.queries, 4, "(batch, heads, window, head_dim)", dev)
        b, h, n, _ = self.keys.shape
        if h == 0:
            raise ValueError(f"keys: expected at least one KV head, got shape {(b, h, n)}")
        check_index("values", self.values, tuple(self.keys.shape), self.keys.dtype, dev)
        check_index("positions", self.positions, (b, h, n), torch.int64, dev)
        check_index("lengths", self.lengths, (b, h), torch.int32, dev)
        if self.log_weights is not None:
            check_index("log_weights", self.log_weights, (b, h, n), torch.float32, dev)
        q = self.queries.shape
        if q[0] != b or q[3] != self.keys.shape[3] or q[1] % h or q[2] == 0:
            raise ValueError(
                f"queries: expected (B={b}, a multiple of H_kv={h}, W >= 1, D="
                f"{self.keys.shape[3]}), got {tuple(q)}"
            )
        check_index("query_positions", self.query_positions, (b, q[2]), torch.int64, dev)
        _check_layer_and_scale(self.layer, self.num_layers, self.scale)


@dataclass(frozen=True)
class Kept:
    """Indices into a `KVView`'s L axis that each head keeps: ``idx`` int32 (B, H_kv, K) ascending,
    padded with -1 past ``count`` int32 (B, H_kv). Counts may differ per head (ragged).

    Optional synthetic tokens (RazorAttention's compensation token), which the cache inserts
    while it compacts: ``extra_keys``/``extra_values`` (B, H_kv, E, D), ``extra_weight`` float32
    (B, H_kv, E), the number of tokens each one stands for, and ``extra_positions`` int64
    (B, H_kv, E), the position it takes in its head's order (after a kept entry of the same
    position). An extra of weight 0 is not stored; the others, ascending in position per head,
    come first among the E, and attention adds log(weight) to their logits: one token of weight
    w weighs in the softmax as w copies of itself. A head holds at most as many entries after
    compaction as before (kept + stored extras <= length).
    """

    idx: Tensor
    count: Tensor
    extra_keys: Tensor | None = None
    extra_values: Tensor | None = None
    extra_weight: Tensor | None = None
    extra_positions: Tensor | None = None


@dataclass(frozen=True)
class PageView:
    """What a selector sees of one layer's paged cache at a decode step; every tensor on the page
    table's device (a selector's query too).

    Fields:
        key_min_pool, key_max_pool: (N, D) channel-wise min / max of the keys of every page of
            the cache's pool (Quest's summaries), bfloat16 rounded outward (min down, max up: a
            bound stays a bound); ``page_table`` says which row is whose.
        page_table: int32 (B, H_kv, P), the pool row of each logical page of each head; entries
            past a head's page count are anything (never read).
        page_count: int32 (B, H_kv) valid pages per head; page_size: tokens per page.
        lengths: int32 (B, H_kv) valid tokens per head (the current token included). A cache's
            view may hand out its live tensors (`Cache.page_view`: the pools, the table and the
            lengths): a view is valid until the layer's next append or compaction.
        labels: (B, H_kv, P, page_size, R) the calibrated label channels of every cached key
            (Double Sparsity), or None when the layer has none.
        layer, num_layers: which layer, of how many.
        label_channels: int64 (H_kv, R) the key channels ``labels`` holds, by which a selector
            picks the same channels of the query; None when ``labels`` is None.
        keys: called with no argument, returns the (B, H_kv, P, page_size, D) keys of the logical
            pages, slots past a head's length any value; None when the cache does not offer it.
            Only selectors that need exact scores call it (TidalDecode's selection layers).
        scale: the softmax scale of the layer's attention; None means 1/sqrt(D).
        weighted_pages: int32 (B, H_kv, E), the logical pages that hold a weighted token (a
            compensation token, `Kept`), ascending, -1 padded; None when the layer holds none.
            Selectors read them always: their bounds and scores see such a token as one token.
    """

    key_min_pool: Tensor
    key_max_pool: Tensor
    page_table: Tensor
    page_count: Tensor
    page_size: int
    lengths: Tensor
    labels: Tensor | None
    layer: int
    num_layers: int
    label_channels: Tensor | None = None
    keys: Callable[[], Tensor] | None = None
    scale: float | None = None
    weighted_pages: Tensor | None = None

    def __post_init__(self) -> None:  # shapes and devices only: no host synchronisation
        check_int32("page_table", self.page_table, 3, "(batch, kv_heads, pages)")
        b, h, p = self.page_table.shape
        # one device for the whole view: selectors check their query against the page table's
        dev = self.page_table.device
        for name in ("key_min_pool", "key_max_pool"):
            check_tensor(name, getattr(self, name), 2, "(pool pages, head_dim)", dev)
        if self.key_max_pool.shape != self.key_min_pool.shape:
            raise ValueError(
                f"key_max_pool: expected shape {tuple(self.key_min_pool.shape)}, "
                f"got {tuple(self.key_max_pool.shape)}"
            )
        check_int32("page_count", self.page_count, 2, "(batch, kv_heads)")
        check_int32("lengths", self.lengths, 2, "(batch, kv_heads)")
        if self.page_count.shape != (b, h) or self.lengths.shape != (b, h):
            raise ValueError(
                f"page_count, lengths: expected shape {(b, h)}, got "
                f"{tuple(self.page_count.shape)} and {tuple(self.lengths.shape)}"
            )
        check_int("page_size", self.page_size, 1)
        if (self.labels is None) != (self.label_channels is None):
            raise ValueError("labels, label_channels: expected both or neither")
        if self.labels is not None:
            r = self.labels.shape[-1]
            if self.labels.shape != (b, h, p, self.page_size, r):
                raise ValueError(
                    f"labels: expected shape {(b, h, p, self.page_size, 'R')}, "
                    f"got {tuple(self.labels.shape)}"
                )
            if self.label_channels.shape != (h, r):
                raise ValueError(
                    f"label_channels: expected shape {(h, r)}, "
                    f"got {tuple(self.label_channels.shape)}"
                )
        if self.weighted_pages is not None:
            check_int32("weighted_pages", self.weighted_pages, 3, "(batch, kv_heads, E)")
            if self.weighted_pages.shape[:2] != (b, h):
                raise ValueError(
                    f"weighted_pages: expected shape ({b}, {h}, E), "
                    f"got {tuple(self.weighted_pages.shape)}"
                )
        for name in ("page_count", "lengths", "labels", "label_channels", "weighted_pages"):
            t = getattr(self, name)
            if t is not None and t.device != dev:
                raise ValueError(f"{name}: expected the page table's device {dev}, got {t.device}")
        _check_layer_and_scale(self.layer, self.num_layers, self.scale)

    @property
    def num_pages(self) -> int:
        """P: logical pages of the longest head (the page table's width)."""
        return self.page_table.shape[2]

    @property
    def head_dim(self) -> int:
        return self.key_min_pool.shape[1]

    def bounds(self) -> tuple[Tensor, Tensor]:
        """float32 (B, H_kv, P, D) key min and max of every logical page of every head, +inf /
        -inf past a head's page count: a gather of the pools, for readers that want the summaries
        per head (tests, diagnostics); Quest's kernel reads the pools through the table."""
        used = torch.arange(self.num_pages, device=self.page_table.device)
        used = (used < self.page_count[..., None])[..., None]
        rows = torch.where(used[..., 0], self.page_table.long(), 0)  # the rest: never read
        key_min = self.key_min_pool[rows].float().masked_fill(~used, math.inf)
        return key_min, self.key_max_pool[rows].float().masked_fill(~used, -math.inf)


@dataclass(frozen=True)
class Pages:
    """Logical pages a step reads per KV head: ``idx`` int32 (B, H_kv, S) ascending, padded with
    -1 past ``count`` int32 (B, H_kv). ``None`` from a selector means all pages (dense)."""

    idx: Tensor
    count: Tensor


def _check_layer_and_scale(layer: int, num_layers: int, scale: float | None) -> None:
    check_int("num_layers", num_layers, 1)
    check_int("layer", layer, 0)
    if layer >= num_layers:
        raise ValueError(f"layer: expected < num_layers={num_layers}, got {layer}")
    check_scale(scale)
