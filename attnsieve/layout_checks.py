"""Structural checks behind `attnsieve.layout.Layout`: sizes, the index tensors' types, shapes and
devices, sorted in-range index lists, the geometry two layouts must share to combine, and the
inputs a layout must fit. Each raises a named TypeError or ValueError. `Layout` runs
`check_structure` on every construction and the others from its constructors, `validate`,
`union`, `intersection`, `cat` and `check_inputs`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnsieve.checks import check_storage

if TYPE_CHECKING:
    from attnsieve.layout import Layout

# the index tensors of a Layout, in field order (block part first)
INDEX_FIELDS = (
    "block_idx",
    "block_count",
    "column_idx",
    "column_count",
    "span_start",
    "span_end",
    "span_count",
)


def check_sizes(num_queries: int, num_keys: int, block_q: int, block_k: int) -> None:
    """Raise ValueError unless N, M and both block sizes are positive ints."""
    for name, value in (("num_queries", num_queries), ("num_keys", num_keys)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")


def check_structure(layout: Layout) -> None:
    """Cheap checks (no device sync): types, dtypes, shapes, devices."""
    check_sizes(layout.num_queries, layout.num_keys, layout.block_q, layout.block_k)
    for name in INDEX_FIELDS:
        t = getattr(layout, name)
        if t is None and not name.startswith("block"):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int32:
            raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
        if t.device != layout.block_idx.device:
            raise ValueError(
                f"{name}: on {t.device}, expected {layout.block_idx.device} like block_idx"
            )
        check_storage(name, t)
    if (layout.column_idx is None) != (layout.column_count is None):
        raise ValueError("column_idx and column_count must both be given or both be None")
    if len({layout.span_start is None, layout.span_end is None, layout.span_count is None}) > 1:
        raise ValueError("span_start, span_end and span_count must all be given or all None")
    if layout.block_idx.dim() != 4:
        raise ValueError(
            f"block_idx: expected 4 dims (B, H, QB, K), got shape {tuple(layout.block_idx.shape)}"
        )
    if not layout.block_idx.shape[0] or not layout.block_idx.shape[1]:
        raise ValueError(
            f"block_idx: a layout needs B >= 1 and H >= 1, got {tuple(layout.block_idx.shape)}"
        )
    lead = (*layout.block_idx.shape[:2], layout.num_q_blocks)
    if tuple(layout.block_idx.shape[:3]) != lead:
        raise ValueError(
            f"block_idx: expected (B, H, {layout.num_q_blocks}, K), "
            f"got {tuple(layout.block_idx.shape)}"
        )
    for name in INDEX_FIELDS[1:]:
        t = getattr(layout, name)
        if t is None:
            continue
        if name.endswith("_count") and tuple(t.shape) != lead:
            raise ValueError(f"{name}: expected shape {lead}, got {tuple(t.shape)}")
        if not name.endswith("_count") and (t.dim() != 4 or tuple(t.shape[:3]) != lead):
            raise ValueError(f"{name}: expected (*{lead}, C), got {tuple(t.shape)}")
    if layout.has_spans and layout.span_start.shape != layout.span_end.shape:
        raise ValueError(
            f"span_end: shape {tuple(layout.span_end.shape)} differs from span_start's "
            f"{tuple(layout.span_start.shape)}"
        )


def check_sorted_in_range(
    idx: Tensor, count: Tensor, bound: int, name: str, count_name: str
) -> None:
    """Raise ValueError unless every ``count`` lies in [0, width of ``idx``] and each row's first
    ``count`` entries of ``idx`` lie in [0, bound) and strictly increase (syncs with the device)."""
    if ((count < 0) | (count > idx.shape[-1])).any():
        raise ValueError(f"{count_name}: expected values in [0, {idx.shape[-1]}]")
    slot = torch.arange(idx.shape[-1], device=idx.device)
    valid = slot < count[..., None]
    if (valid & ((idx < 0) | (idx >= bound))).any():
        raise ValueError(f"{name}: valid entries must lie in [0, {bound})")
    if idx.shape[-1] > 1 and (valid[..., 1:] & (idx[..., 1:] <= idx[..., :-1])).any():
        raise ValueError(f"{name}: valid entries must be strictly increasing")


def check_same_geometry(layout: Layout, other: Layout, name: str, stacked: str = "") -> None:
    """Raise unless ``other`` has ``layout``'s blocks, sizes and device, and a batch and head
    count that broadcast with its own (except ``stacked``, the axis `Layout.cat` stacks)."""
    if not isinstance(other, type(layout)):
        raise TypeError(f"{name}: expected a Layout, got {type(other).__name__}")
    mine = (layout.block_q, layout.block_k, layout.num_queries, layout.num_keys)
    theirs = (other.block_q, other.block_k, other.num_queries, other.num_keys)
    if mine != theirs:
        raise ValueError(f"{name}: (block_q, block_k, N, M) {theirs} differs from {mine}")
    if other.device != layout.device:
        raise ValueError(f"{name}: on {other.device}, expected {layout.device}")
    for attr in {"batch", "heads"} - {stacked}:
        a, o = getattr(layout, attr), getattr(other, attr)
        if a != o and 1 not in (a, o):
            raise ValueError(f"{name}: {attr} {o} does not broadcast with {a}")


def check_inputs(layout: Layout, q: Tensor, k: Tensor) -> None:
    """Raise unless ``layout`` fits q (B, H_q, N, D) attending over k (B, H_kv, M, D)."""
    b, h_q, n, _ = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    if (n, m) != (layout.num_queries, layout.num_keys):
        raise ValueError(
            f"layout: built for (N, M)=({layout.num_queries}, {layout.num_keys}), "
            f"inputs have ({n}, {m})"
        )
    if layout.batch not in (1, b):
        raise ValueError(f"layout: batch {layout.batch} does not broadcast to batch {b}")
    if layout.heads not in (1, h_kv, h_q):
        raise ValueError(f"layout: heads {layout.heads}; expected 1, H_kv={h_kv} or H_q={h_q}")
    if layout.device != q.device:
        raise ValueError(f"layout: on {layout.device}, inputs on {q.device}")
