"""`Layout`: which (query, key) pairs a sparse prefill computes.

A layout lists, for every (batch, head, query block), the sorted key blocks to attend plus optional
single key *columns* (token indices, for MInference-style vertical lines) that lie outside those
blocks. Causality is not encoded: kernels apply it, bottom-right aligned (query ``i`` of ``N``
sits at absolute position ``M - N + i`` among ``M`` keys). Batch and head dimensions broadcast: a
layout's batch is 1 or B, its heads 1, H_kv (one plan per KV group) or H_q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from attnsieve.checks import cdiv

PAD = -1
_BIG = torch.iinfo(torch.int32).max


def _pack(keep: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """``values`` where ``keep`` (in order) moved to the front of each row, padded with PAD; counts.

    A prefix sum gives each kept entry its slot: a scatter instead of a sort of the whole row.
    """
    slot = keep.cumsum(-1, dtype=torch.int32)
    count = keep.sum(-1, dtype=torch.int32)  # not slot[..., -1]: rows may be empty
    width = max(int(count.max()) if count.numel() else 0, 1)
    out = torch.full((*keep.shape[:-1], width + 1), PAD, dtype=torch.int32, device=keep.device)
    # entries that are not kept all land in the spare last column, which is dropped
    out.scatter_(-1, torch.where(keep, slot - 1, width).long(), values.to(torch.int32))
    return out[..., :width].contiguous(), count


def _pack_sorted(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of True entries along the last dim, ascending, padded with PAD; plus counts."""
    positions = torch.arange(mask.shape[-1], device=mask.device, dtype=torch.int32)
    return _pack(mask, positions.expand_as(mask))


def _compact(values: Tensor) -> tuple[Tensor, Tensor]:
    """Sort rows of int indices (PAD = absent), drop duplicates and re-pad; return (idx, count)."""
    keyed = torch.where(values == PAD, _BIG, values.to(torch.int32)).sort(-1).values
    keep = keyed != _BIG
    keep[..., 1:] &= keyed[..., 1:] != keyed[..., :-1]  # the first of equal neighbours stays
    return _pack(keep, keyed)


def _clamped_ramp_sum(x: Tensor, length: Tensor) -> Tensor:
    """sum_{t <= x} clamp(t, 0, length): used to count causal pairs of a tile in closed form."""
    x = x.to(torch.int64)
    length = length.to(torch.int64)
    inside = torch.minimum(x.clamp(min=0), length)
    return inside * (inside + 1) // 2 + (x - length).clamp(min=0) * length


@dataclass(frozen=True)
class Layout:
    """Block-sparse pattern of a prefill; see the module docstring.

    Fields: ``block_idx`` int32 (B, H, QB, K) sorted key blocks padded with -1;
    ``block_count`` int32 (B, H, QB); ``column_idx`` int32 (B, H, QB, C) sorted key tokens outside
    the chosen blocks, or None; ``column_count`` int32 (B, H, QB) or None; block sizes in tokens;
    ``num_queries`` N and ``num_keys`` M. ``is_dense`` is set only by :meth:`dense` so kernels
    can dispatch to SDPA without inspecting device memory.

    A layout cannot be built invalid: the constructors below produce sorted, in-range,
    duplicate-free index lists by construction, and a layout built directly from tensors is
    checked in full on construction (`validate`, one device sync), so every backend sees the same
    contents and a bad list fails with a named error before any kernel reads it.
    """

    block_idx: Tensor
    block_count: Tensor
    block_q: int
    block_k: int
    num_queries: int
    num_keys: int
    column_idx: Tensor | None = None
    column_count: Tensor | None = None
    is_dense: bool = False
    # True only for layouts made by this class's constructors, whose contents are valid by
    # construction; a layout built from user tensors is validated in full
    _valid: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_structure()
        if not self._valid:
            self.validate()

    # ---- shape helpers -------------------------------------------------------------------------
    @property
    def num_q_blocks(self) -> int:
        return cdiv(self.num_queries, self.block_q)

    @property
    def num_k_blocks(self) -> int:
        return cdiv(self.num_keys, self.block_k)

    @property
    def query_offset(self) -> int:
        """Absolute position of the first query among the keys, M - N (bottom-right alignment)."""
        return self.num_keys - self.num_queries

    @property
    def batch(self) -> int:
        return self.block_idx.shape[0]

    @property
    def heads(self) -> int:
        return self.block_idx.shape[1]

    @property
    def device(self) -> torch.device:
        return self.block_idx.device

    @property
    def has_columns(self) -> bool:
        return self.column_idx is not None

    def to(self, device: torch.device | str) -> Layout:
        return self._map(lambda t: t.to(device))

    def _map(self, fn) -> Layout:
        """Copy with ``fn`` applied to each index tensor (the absent column part stays None)."""
        fields = ("block_idx", "block_count", "column_idx", "column_count")
        changes = {f: None if getattr(self, f) is None else fn(getattr(self, f)) for f in fields}
        return replace(self, **changes)

    def heads_for(self, h_q: int, h_kv: int) -> Tensor:
        """Layout head used by each of ``h_q`` query heads (0, h // g or h)."""
        heads = torch.arange(h_q, device=self.device)
        if self.heads == 1:
            return torch.zeros_like(heads)
        if self.heads == h_q:
            return heads
        if self.heads == h_kv:
            return heads // (h_q // h_kv)
        raise ValueError(f"layout has {self.heads} heads; expected 1, H_kv={h_kv} or H_q={h_q}")

    # ---- constructors --------------------------------------------------------------------------
    @staticmethod
    def causal_block_mask(
        num_queries: int,
        num_keys: int,
        block_q: int,
        block_k: int,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """bool (QB, KB): key blocks holding at least one key visible to some query of the block."""
        _, last_pos = query_block_positions(num_queries, num_keys, block_q, device)
        first_key = torch.arange(cdiv(num_keys, block_k), device=device) * block_k
        return first_key[None, :] <= last_pos[:, None]

    @classmethod
    def dense(
        cls,
        num_queries: int,
        num_keys: int,
        *,
        block_q: int = 128,
        block_k: int = 128,
        causal: bool = True,
        batch: int = 1,
        heads: int = 1,
        device: torch.device | str | None = None,
    ) -> Layout:
        """Every key block (with ``causal``, every block that touches the causal region)."""
        _check_sizes(num_queries, num_keys, block_q, block_k)
        mask = cls.causal_block_mask(num_queries, num_keys, block_q, block_k, device)
        if not causal:
            mask = torch.ones_like(mask)
        mask = mask.expand(batch, heads, *mask.shape)
        layout = cls.from_block_mask(
            mask, block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys
        )
        return replace(layout, is_dense=True)

    @classmethod
    def from_block_mask(
        cls, mask: Tensor, *, block_q: int, block_k: int, num_queries: int, num_keys: int
    ) -> Layout:
        """Layout from a boolean block mask of shape (B, H, QB, KB)."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask: expected a torch.bool tensor of shape (B, H, QB, KB)")
        _check_sizes(num_queries, num_keys, block_q, block_k)
        expected = (cdiv(num_queries, block_q), cdiv(num_keys, block_k))
        if mask.dim() != 4 or tuple(mask.shape[2:]) != expected:
            raise ValueError(
                f"mask: expected shape (B, H, {expected[0]}, {expected[1]}), "
                f"got {tuple(mask.shape)}"
            )
        idx, count = _pack_sorted(mask)
        return cls(idx, count, block_q, block_k, num_queries, num_keys, _valid=True)

    @classmethod
    def from_topk(
        cls,
        scores: Tensor,
        k: int,
        *,
        block_q: int,
        block_k: int,
        num_queries: int,
        num_keys: int,
        causal: bool = True,
    ) -> Layout:
        """Keep the ``k`` highest-scoring key blocks of every query block.

        Blocks scored -inf, and with ``causal`` blocks no query of the block can see, are never
        kept, so a row may hold fewer than ``k`` blocks.
        """
        if not isinstance(scores, Tensor) or not scores.is_floating_point():
            raise TypeError("scores: expected a floating-point tensor of shape (B, H, QB, KB)")
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k: expected a non-negative int, got {k!r}")
        _check_sizes(num_queries, num_keys, block_q, block_k)
        expected = (cdiv(num_queries, block_q), cdiv(num_keys, block_k))
        if scores.dim() != 4 or tuple(scores.shape[2:]) != expected:
            raise ValueError(
                f"scores: expected shape (B, H, {expected[0]}, {expected[1]}), "
                f"got {tuple(scores.shape)}"
            )
        if bool(scores.isnan().any()):
            raise ValueError("scores: contain NaN; expected real scores (-inf: never kept)")
        if causal:
            visible = cls.causal_block_mask(num_queries, num_keys, block_q, block_k, scores.device)
            scores = scores.masked_fill(~visible, -math.inf)
        k = min(k, expected[1])
        values, picked = scores.topk(k, dim=-1) if k else (scores[..., :0], scores[..., :0].long())
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(-1, picked, values > -math.inf)
        return cls.from_block_mask(
            mask, block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys
        )

    def with_columns(self, column_idx: Tensor, column_count: Tensor | None = None) -> Layout:
        """Copy with a column part; columns in chosen blocks or repeated are dropped, rest sorted.

        ``column_idx`` is int (B, H, QB, C) of key token indices (-1 = none); ``column_count``,
        int (B, H, QB), limits the valid prefix of each row when given. Batch and heads broadcast
        against the layout's (sizes 1 or equal).
        """
        if not isinstance(column_idx, Tensor) or column_idx.dtype not in (torch.int32, torch.int64):
            raise TypeError("column_idx: expected an int32/int64 tensor of shape (B, H, QB, C)")
        if column_idx.dim() != 4 or column_idx.shape[2] != self.num_q_blocks:
            raise ValueError(
                f"column_idx: expected shape (B, H, {self.num_q_blocks}, C), "
                f"got {tuple(column_idx.shape)}"
            )
        for dim, name, own in ((0, "batch", self.batch), (1, "heads", self.heads)):
            size = column_idx.shape[dim]
            if size != own and 1 not in (size, own):
                raise ValueError(
                    f"column_idx: {name} {size} does not broadcast against the layout's {own}"
                )
        cols = column_idx.to(torch.int64)
        if column_count is not None:
            if not isinstance(column_count, Tensor) or column_count.dtype not in (
                torch.int32,
                torch.int64,
            ):
                raise TypeError("column_count: expected an int32/int64 tensor of shape (B, H, QB)")
            if tuple(column_count.shape) != tuple(cols.shape[:3]):
                raise ValueError(
                    f"column_count: expected shape {tuple(cols.shape[:3])}, "
                    f"got {tuple(column_count.shape)}"
                )
            slot = torch.arange(cols.shape[-1], device=cols.device)
            cols = torch.where(slot < column_count[..., None].to(cols.device), cols, PAD)
        if ((cols < PAD) | (cols >= self.num_keys)).any():
            raise ValueError(
                f"column_idx: token indices must lie in [0, {self.num_keys}) (or -1 for none)"
            )
        b = max(self.batch, cols.shape[0])
        h = max(self.heads, cols.shape[1])
        block_mask = self.block_mask().expand(b, h, -1, -1)
        cols = cols.expand(b, h, -1, -1)
        in_block = torch.gather(block_mask, -1, (cols.clamp(min=0) // self.block_k))
        idx, count = _compact(torch.where(in_block | (cols == PAD), PAD, cols))
        base = self._expanded(b, h)
        return replace(base, column_idx=idx, column_count=count, is_dense=False)

    @staticmethod
    def cat(layouts: list[Layout], dim: int = 1) -> Layout:
        """Stack layouts of equal geometry along heads (dim=1) or batch (dim=0)."""
        if dim not in (0, 1):
            raise ValueError(f"dim: expected 0 (batch) or 1 (heads), got {dim}")
        if not layouts:
            raise ValueError("layouts: expected at least one layout")
        first = layouts[0]
        for other in layouts[1:]:
            first._check_same_geometry(other, "layouts")
        other_dim = 1 - dim
        size = max(lay.block_idx.shape[other_dim] for lay in layouts)
        parts = [
            lay._expanded(size, lay.heads) if dim == 1 else lay._expanded(lay.batch, size)
            for lay in layouts
        ]
        width = max(p.block_idx.shape[-1] for p in parts)
        idx = torch.cat([_pad_last(p.block_idx, width) for p in parts], dim)
        count = torch.cat([p.block_count for p in parts], dim)
        cols = counts = None
        if any(p.has_columns for p in parts):
            cwidth = max(p.column_idx.shape[-1] for p in parts if p.has_columns)
            cols = torch.cat([_pad_last(p._columns_or_empty()[0], cwidth) for p in parts], dim)
            counts = torch.cat([p._columns_or_empty()[1] for p in parts], dim)
        return Layout(
            idx,
            count,
            first.block_q,
            first.block_k,
            first.num_queries,
            first.num_keys,
            cols,
            counts,
            _valid=True,
        )

    # ---- views ---------------------------------------------------------------------------------
    def block_mask(self, q_blocks: slice = slice(None)) -> Tensor:
        """bool (B, H, QB, KB) of the block part (of the query blocks ``q_blocks`` only)."""
        idx, count = self.block_idx[:, :, q_blocks], self.block_count[:, :, q_blocks]
        mask = torch.zeros(
            (*count.shape, self.num_k_blocks + 1), dtype=torch.bool, device=self.device
        )
        slot = torch.arange(idx.shape[-1], device=self.device)
        valid = slot < count[..., None]
        target = torch.where(valid, idx.long(), self.num_k_blocks)
        mask.scatter_(-1, target, True)
        return mask[..., :-1]

    def mask_rows(self, start: int, stop: int) -> Tensor:
        """bool (B, H, stop - start, M): the layout's token mask for query rows [start, stop)."""
        if not 0 <= start <= stop <= self.num_queries:
            raise ValueError(
                f"rows: expected 0 <= start <= stop <= {self.num_queries}, got [{start}, {stop})"
            )
        qb0, qb1 = start // self.block_q, cdiv(stop, self.block_q)
        blocks = self.block_mask(slice(qb0, qb1))
        tokens = blocks.repeat_interleave(self.block_k, dim=-1)[..., : self.num_keys]
        if self.has_columns:
            tokens = tokens.clone()
            cols = self.column_idx[:, :, qb0:qb1].long()
            slot = torch.arange(cols.shape[-1], device=self.device)
            valid = slot < self.column_count[:, :, qb0:qb1, None]
            target = torch.where(valid, cols, self.num_keys)
            extra = torch.zeros(
                (*cols.shape[:-1], self.num_keys + 1), dtype=torch.bool, device=self.device
            )
            extra.scatter_(-1, target, True)
            tokens |= extra[..., :-1]
        row_block = torch.arange(start, stop, device=self.device) // self.block_q - qb0
        return tokens[:, :, row_block]

    def to_dense_mask(self, causal: bool = False) -> Tensor:
        """bool (B, H, N, M) token mask (for tests; O(N·M) memory)."""
        mask = self.mask_rows(0, self.num_queries)
        if causal:
            mask = mask & causal_token_mask(
                self.num_queries, self.num_keys, 0, self.num_queries, self.device
            )
        return mask

    def density(self, causal: bool = True, reduce: bool = True) -> float | Tensor:
        """Computed (query, key) pairs over those of dense (causal) attention, exactly.

        Returns the mean over batch and heads, or with ``reduce=False`` a (B, H) tensor.
        """
        n, m, bq, bk = self.num_queries, self.num_keys, self.block_q, self.block_k
        qb = torch.arange(self.num_q_blocks, device=self.device)
        row0, row1 = qb * bq, torch.clamp((qb + 1) * bq, max=n)  # rows [row0, row1) of each q block
        slot = torch.arange(self.block_idx.shape[-1], device=self.device)
        valid = slot < self.block_count[..., None]
        kb = self.block_idx.long().clamp(min=0)
        k0, k1 = kb * bk, torch.clamp((kb + 1) * bk, max=m)
        width = k1 - k0
        if causal:
            # keys visible to the row at absolute position p: clamp(p + 1 - k0, 0, width)
            p0 = (row0 + self.query_offset)[:, None]
            p1 = (row1 - 1 + self.query_offset)[:, None]
            pairs = _clamped_ramp_sum(p1 + 1 - k0, width) - _clamped_ramp_sum(p0 - k0, width)
            total = causal_pairs(n, m)
        else:
            pairs = width * (row1 - row0)[:, None]
            total = n * m
        count = (pairs * valid).sum((-1, -2))
        if self.has_columns:
            cslot = torch.arange(self.column_idx.shape[-1], device=self.device)
            cvalid = cslot < self.column_count[..., None]
            col = self.column_idx.long()
            rows = (row1 - row0)[:, None].expand_as(col)
            if causal:
                first_row = (col - self.query_offset).clamp(min=0)  # first row seeing the column
                rows = (row1[:, None] - torch.maximum(first_row, row0[:, None])).clamp(min=0)
            count = count + (rows * cvalid).sum((-1, -2))
        fraction = count.double() / max(total, 1)
        return float(fraction.mean()) if reduce else fraction

    # ---- set algebra ---------------------------------------------------------------------------
    def union(self, other: Layout) -> Layout:
        """Pairs computed by either layout."""
        self._check_same_geometry(other, "other")
        b, h = max(self.batch, other.batch), max(self.heads, other.heads)
        mask = self.block_mask().expand(b, h, -1, -1) | other.block_mask().expand(b, h, -1, -1)
        merged = Layout.from_block_mask(
            mask,
            block_q=self.block_q,
            block_k=self.block_k,
            num_queries=self.num_queries,
            num_keys=self.num_keys,
        )
        if not (self.has_columns or other.has_columns):
            return merged
        cols = torch.cat(
            [
                self._columns_or_empty()[0].expand(b, h, -1, -1),
                other._columns_or_empty()[0].expand(b, h, -1, -1),
            ],
            -1,
        )
        return merged.with_columns(cols)

    def intersection(self, other: Layout) -> Layout:
        """Pairs computed by both layouts."""
        self._check_same_geometry(other, "other")
        b, h = max(self.batch, other.batch), max(self.heads, other.heads)
        mask = self.block_mask().expand(b, h, -1, -1) & other.block_mask().expand(b, h, -1, -1)
        merged = Layout.from_block_mask(
            mask,
            block_q=self.block_q,
            block_k=self.block_k,
            num_queries=self.num_queries,
            num_keys=self.num_keys,
        )
        if not (self.has_columns or other.has_columns):
            return merged
        kept = [a._columns_in(b_, b, h) for a, b_ in ((self, other), (other, self))]
        return merged.with_columns(torch.cat(kept, -1))

    def _columns_in(self, other: Layout, b: int, h: int) -> Tensor:
        """This layout's columns that ``other`` covers too (block or column); PAD elsewhere."""
        cols = self._columns_or_empty()[0].expand(b, h, -1, -1).long()
        covered = torch.gather(
            other.block_mask().expand(b, h, -1, -1), -1, cols.clamp(min=0) // other.block_k
        )
        other_cols = other._columns_or_empty()[0].expand(b, h, -1, -1).long()
        keyed = torch.where(other_cols == PAD, _BIG, other_cols).sort(-1).values.contiguous()
        pos = torch.searchsorted(keyed, cols.contiguous()).clamp(max=keyed.shape[-1] - 1)
        covered |= torch.gather(keyed, -1, pos) == cols
        return torch.where(covered & (cols != PAD), cols, PAD)

    def _columns_or_empty(self) -> tuple[Tensor, Tensor]:
        if self.has_columns:
            return self.column_idx, self.column_count
        shape = self.block_count.shape
        return (
            torch.full((*shape, 1), PAD, dtype=torch.int32, device=self.device),
            torch.zeros(shape, dtype=torch.int32, device=self.device),
        )

    def _expanded(self, b: int, h: int) -> Layout:
        return self._map(lambda t: t.expand(b, h, *t.shape[2:]).contiguous())

    # ---- validation ----------------------------------------------------------------------------
    def _check_same_geometry(self, other: Layout, name: str) -> None:
        if not isinstance(other, Layout):
            raise TypeError(f"{name}: expected a Layout, got {type(other).__name__}")
        mine = (self.block_q, self.block_k, self.num_queries, self.num_keys)
        theirs = (other.block_q, other.block_k, other.num_queries, other.num_keys)
        if mine != theirs:
            raise ValueError(f"{name}: (block_q, block_k, N, M) {theirs} differs from {mine}")
        if other.device != self.device:
            raise ValueError(f"{name}: on {other.device}, expected {self.device}")
        for attr in ("batch", "heads"):
            a, o = getattr(self, attr), getattr(other, attr)
            if a != o and 1 not in (a, o):
                raise ValueError(f"{name}: {attr} {o} does not broadcast with {a}")

    def _check_structure(self) -> None:
        """Cheap checks (no device sync): types, dtypes, shapes, devices."""
        _check_sizes(self.num_queries, self.num_keys, self.block_q, self.block_k)
        for name in ("block_idx", "block_count", "column_idx", "column_count"):
            t = getattr(self, name)
            if t is None and name.startswith("column"):
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dtype != torch.int32:
                raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
            if t.device != self.block_idx.device:
                raise ValueError(
                    f"{name}: on {t.device}, expected {self.block_idx.device} like block_idx"
                )
        if (self.column_idx is None) != (self.column_count is None):
            raise ValueError("column_idx and column_count must both be given or both be None")
        if self.block_idx.dim() != 4:
            raise ValueError(
                f"block_idx: expected 4 dims (B, H, QB, K), got shape {tuple(self.block_idx.shape)}"
            )
        lead = (*self.block_idx.shape[:2], self.num_q_blocks)
        if tuple(self.block_idx.shape[:3]) != lead:
            raise ValueError(
                f"block_idx: expected (B, H, {self.num_q_blocks}, K), "
                f"got {tuple(self.block_idx.shape)}"
            )
        if tuple(self.block_count.shape) != lead:
            raise ValueError(
                f"block_count: expected shape {lead}, got {tuple(self.block_count.shape)}"
            )
        if self.has_columns:
            if self.column_idx.dim() != 4 or tuple(self.column_idx.shape[:3]) != lead:
                raise ValueError(
                    f"column_idx: expected (*{lead}, C), got {tuple(self.column_idx.shape)}"
                )
            if tuple(self.column_count.shape) != lead:
                raise ValueError(
                    f"column_count: expected shape {lead}, got {tuple(self.column_count.shape)}"
                )

    def validate(self) -> Layout:
        """Full check of the index contents (syncs with the device); returns self."""
        self._check_sorted_in_range(
            self.block_idx, self.block_count, self.num_k_blocks, "block_idx", "block_count"
        )
        if self.has_columns:
            self._check_sorted_in_range(
                self.column_idx, self.column_count, self.num_keys, "column_idx", "column_count"
            )
            cols = self.column_idx.long()
            slot = torch.arange(cols.shape[-1], device=self.device)
            valid = slot < self.column_count[..., None]
            in_block = torch.gather(self.block_mask(), -1, cols.clamp(min=0) // self.block_k)
            if (in_block & valid).any():
                raise ValueError("column_idx: columns must be disjoint from the chosen key blocks")
        return self

    @staticmethod
    def _check_sorted_in_range(
        idx: Tensor, count: Tensor, bound: int, name: str, count_name: str
    ) -> None:
        if ((count < 0) | (count > idx.shape[-1])).any():
            raise ValueError(f"{count_name}: expected values in [0, {idx.shape[-1]}]")
        slot = torch.arange(idx.shape[-1], device=idx.device)
        valid = slot < count[..., None]
        if (valid & ((idx < 0) | (idx >= bound))).any():
            raise ValueError(f"{name}: valid entries must lie in [0, {bound})")
        if idx.shape[-1] > 1 and (valid[..., 1:] & (idx[..., 1:] <= idx[..., :-1])).any():
            raise ValueError(f"{name}: valid entries must be strictly increasing")

    def check_inputs(self, q: Tensor, k: Tensor) -> None:
        """Raise unless this layout fits q (B, H_q, N, D) attending over k (B, H_kv, M, D)."""
        b, h_q, n, _ = q.shape
        h_kv, m = k.shape[1], k.shape[2]
        if (n, m) != (self.num_queries, self.num_keys):
            raise ValueError(
                f"layout: built for (N, M)=({self.num_queries}, {self.num_keys}), "
                f"inputs have ({n}, {m})"
            )
        if self.batch not in (1, b):
            raise ValueError(f"layout: batch {self.batch} does not broadcast to batch {b}")
        if self.heads not in (1, h_kv, h_q):
            raise ValueError(f"layout: heads {self.heads}; expected 1, H_kv={h_kv} or H_q={h_q}")
        if self.device != q.device:
            raise ValueError(f"layout: on {self.device}, inputs on {q.device}")


def query_block_positions(
    num_queries: int, num_keys: int, block_q: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Absolute positions (first, last) of every query block, int64 (QB,) each; may be negative."""
    start = torch.arange(0, num_queries, block_q, device=device)
    stop = torch.clamp(start + block_q, max=num_queries)
    return start + (num_keys - num_queries), stop - 1 + (num_keys - num_queries)


def causal_pairs(num_queries: int, num_keys: int) -> int:
    """Pairs of bottom-right aligned causal attention: sum over i of clamp(M - N + i + 1, 0, M)."""
    n, m = num_queries, num_keys
    if n <= m:  # query i sees M - N + i + 1 keys
        return n * (m - n + 1) + n * (n - 1) // 2
    return m * (m + 1) // 2  # the first N - M queries see nothing


def causal_token_mask(
    num_queries: int, num_keys: int, start: int, stop: int, device=None
) -> Tensor:
    """bool (stop - start, M): bottom-right aligned causal visibility of rows [start, stop)."""
    pos = torch.arange(start, stop, device=device) + (num_keys - num_queries)
    return torch.arange(num_keys, device=device)[None, :] <= pos[:, None]


def _pad_last(t: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=PAD)


def _check_sizes(num_queries: int, num_keys: int, block_q: int, block_k: int) -> None:
    for name, value in (("num_queries", num_queries), ("num_keys", num_keys)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
