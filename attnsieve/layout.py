"""`Layout`: which (query, key) pairs a sparse prefill computes.

A layout lists, for every (batch, head, query block), the sorted key blocks to attend plus two
optional token-level parts, disjoint from the blocks and from each other: single key *columns*
(token indices, MInference's vertical lines) and key *spans* (ranges [start, end) that start
anywhere: the key range each chosen diagonal, MInference's slash line, crosses in the query block,
merged). Causality is not encoded: kernels apply it, bottom-right aligned (query ``i`` of ``N``
sits at absolute position ``M - N + i`` among ``M`` keys). Batch and head dimensions broadcast: a
layout's batch is 1 or B, its heads 1, H_kv (one plan per KV group) or H_q.

Beside it: its structural checks (`attnsieve.layout_checks`), pair counts
(`attnsieve.layout_counts`) and index packing and span algebra (`attnsieve.layout_spans`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import InitVar, dataclass, replace

import torch
from torch import Tensor

from attnsieve import layout_checks
from attnsieve.checks import cdiv, check_bool, check_device, check_int, check_storage
from attnsieve.layout_counts import causal_pairs, count_pairs
from attnsieve.layout_spans import (
    PAD,
    block_ranges,
    check_spans,
    checked_rows,
    compact,
    counted_slots,
    diagonal_ranges,
    in_ranges,
    intersect_ranges,
    line_parts,
    merge_ranges,
    pack_sorted,
    ranges_mask,
    subtract_blocks,
    valid_slots,
)


@dataclass(frozen=True)
class Layout:
    """Block-sparse pattern of a prefill; see the module docstring.

    Fields: ``block_idx`` int32 (B, H, QB, K) sorted key blocks, each row's first ``block_count``
    entries (the constructors pad the rest with -1; entries past a count are never read);
    ``block_count`` int32 (B, H, QB); ``column_idx`` int32 (B, H, QB, C) sorted key tokens outside
    the chosen blocks, or None; ``column_count`` int32 (B, H, QB) or None; ``span_start`` and
    ``span_end`` int32 (B, H, QB, S): sorted, disjoint key ranges [start, end) within [0, M),
    outside the blocks and holding no column, or None; ``span_count`` int32 (B, H, QB) or None;
    block sizes in tokens; ``num_queries`` N and ``num_keys`` M. ``is_dense`` is set only by
    :meth:`dense` so kernels can dispatch to SDPA without inspecting device memory.

    A layout cannot be built invalid: the constructors below produce sorted, in-range,
    duplicate-free index lists by construction, and a layout built directly from tensors is
    checked in full on construction (`validate`, a few device syncs), so every backend sees the same
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
    span_start: Tensor | None = None
    span_end: Tensor | None = None
    span_count: Tensor | None = None
    is_dense: bool = False
    # True only for layouts made by this class's constructors, whose contents are valid by
    # construction; a layout built from user tensors is validated in full
    _valid: InitVar[bool] = False

    def __post_init__(self, _valid: bool) -> None:
        layout_checks.check_structure(self)
        if not _valid:
            self.validate()
            if self.is_dense:  # dense dispatch (SDPA) would ignore the tensors' blocks
                raise ValueError(
                    "is_dense: set only by Layout.dense; a layout built from tensors is never "
                    "marked dense"
                )

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

    @property
    def has_spans(self) -> bool:
        return self.span_start is not None

    def to(self, device: torch.device | str) -> Layout:
        device = check_device(device)  # a torch.device too: "cuda:9" or "meta" is named here
        return self._map(lambda t: t.to(device))

    def _map(self, fn) -> Layout:
        """Copy with ``fn`` applied to each index tensor (absent parts stay None)."""
        changes = {
            f: None if getattr(self, f) is None else fn(getattr(self, f))
            for f in layout_checks.INDEX_FIELDS
        }
        return replace(self, **changes, _valid=True)

    def heads_for(self, h_q: int, h_kv: int) -> Tensor:
        """Layout head used by each of ``h_q`` query heads (0, h // g or h)."""
        check_int("h_q", h_q, 1)
        check_int("h_kv", h_kv, 1)
        if h_q % h_kv:
            raise ValueError(f"h_q: expected a multiple of h_kv={h_kv}, got {h_q}")
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
        layout_checks.check_sizes(num_queries, num_keys, block_q, block_k)
        if device is not None and not isinstance(device, torch.device):  # planners pass q's
            device = check_device(device)
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
        layout_checks.check_sizes(num_queries, num_keys, block_q, block_k)
        check_int("batch", batch, 1)
        check_int("heads", heads, 1)
        check_bool("causal", causal)
        mask = cls.causal_block_mask(num_queries, num_keys, block_q, block_k, device)
        if not causal:
            mask = torch.ones_like(mask)
        mask = mask.expand(batch, heads, *mask.shape)
        layout = cls.from_block_mask(
            mask, block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys
        )
        return replace(layout, is_dense=True, _valid=True)

    @classmethod
    def from_block_mask(
        cls, mask: Tensor, *, block_q: int, block_k: int, num_queries: int, num_keys: int
    ) -> Layout:
        """Layout from a boolean block mask of shape (B, H, QB, KB)."""
        cls.check_block_mask(
            mask, block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys
        )
        idx, count = pack_sorted(mask)
        return cls(idx, count, block_q, block_k, num_queries, num_keys, _valid=True)

    @staticmethod
    def check_block_mask(
        mask: Tensor, *, block_q: int, block_k: int, num_queries: int, num_keys: int
    ) -> None:
        """What `from_block_mask` requires of its arguments (a named error otherwise)."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask: expected a torch.bool tensor of shape (B, H, QB, KB)")
        check_storage("mask", mask)
        layout_checks.check_sizes(num_queries, num_keys, block_q, block_k)
        expected = (cdiv(num_queries, block_q), cdiv(num_keys, block_k))
        if mask.dim() != 4 or tuple(mask.shape[2:]) != expected or 0 in mask.shape[:2]:
            raise ValueError(
                f"mask: expected shape (B >= 1, H >= 1, {expected[0]}, {expected[1]}), "
                f"got {tuple(mask.shape)}"
            )

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
        check_storage("scores", scores)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k: expected a non-negative int, got {k!r}")
        check_bool("causal", causal)
        layout_checks.check_sizes(num_queries, num_keys, block_q, block_k)
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

    @classmethod
    def from_lines(
        cls,
        columns: Tensor,
        offsets: Tensor,
        *,
        block_q: int,
        block_k: int,
        num_queries: int,
        num_keys: int,
        rows: Callable[..., tuple[Tensor, ...]] | None = None,
    ) -> Layout:
        """MInference's vertical-slash layout: the diagonal key blocks of every query block, the
        key ``columns`` it can see and key spans covering the diagonals ``offsets``.

        ``columns`` (B, H, C) and ``offsets`` (B, H, S): int32/int64 in [0, M), repeats allowed.
        The same layout as ``from_block_mask`` of the diagonal blocks, then ``with_columns`` (each
        block's visible columns) and ``with_diagonals(offsets)``, up to the index widths, without
        their sorts of every (head, query block) row (`layout_spans.line_parts`). Host syncs: one
        for the range check, one for the widest head's diagonal bands (two when the last query
        block is short). ``rows`` builds every query block's columns and spans
        (`layout_spans.line_rows` by default; `attnsieve.api.line_layout` passes its Triton kernel).
        """
        layout_checks.check_sizes(num_queries, num_keys, block_q, block_k)
        if rows is not None and not callable(rows):
            raise TypeError(f"rows: expected a callable or None, got {type(rows).__name__}")
        for name, t, dims in (("columns", columns, "(B, H, C)"), ("offsets", offsets, "(B, H, S)")):
            if not isinstance(t, Tensor) or t.dtype not in (torch.int32, torch.int64):
                raise TypeError(f"{name}: expected an int32/int64 tensor of shape {dims}")
            check_storage(name, t)
            if t.dim() != 3 or tuple(t.shape[:2]) != tuple(columns.shape[:2]):
                raise ValueError(
                    f"{name}: expected shape {dims} with columns' (B, H) = "
                    f"{tuple(columns.shape[:2])}, got {tuple(t.shape)}"
                )
        if not columns.shape[0] or not columns.shape[1]:
            raise ValueError(
                f"columns: a layout needs B >= 1 and H >= 1, got shape {tuple(columns.shape)}"
            )
        if offsets.device != columns.device:
            raise ValueError(f"offsets: on {offsets.device}, columns on {columns.device}")
        outside = [((t < 0) | (t >= num_keys)).any() for t in (columns, offsets)]
        for name, bad in zip(("columns", "offsets"), torch.stack(outside).tolist(), strict=True):
            if bad:
                raise ValueError(f"{name}: entries must lie in [0, {num_keys})")
        first, last = query_block_positions(num_queries, num_keys, block_q, columns.device)
        parts = line_parts(
            columns, offsets, first.to(torch.int32), last.to(torch.int32), num_queries, num_keys,
            block_q, block_k, rows,
        )  # fmt: skip
        return cls(*parts[:2], block_q, block_k, num_queries, num_keys, *parts[2:], _valid=True)

    def with_columns(self, column_idx: Tensor, column_count: Tensor | None = None) -> Layout:
        """Copy whose column part is ``column_idx`` (replacing any present, where `with_spans`
        adds to the spans); columns in chosen blocks or spans, or repeated, are dropped.

        ``column_idx`` is int (B, H, QB, C) of key token indices (-1 = none); ``column_count``,
        int (B, H, QB), limits the valid prefix of each row when given. Batch and heads broadcast
        against the layout's (sizes 1 or equal). The columns come out sorted.
        """
        cols = self._rows(column_idx, column_count, "column_idx", "column_count", (4,))
        if ((cols < PAD) | (cols >= self.num_keys)).any():
            raise ValueError(
                f"column_idx: token indices must lie in [0, {self.num_keys}) (or -1 for none)"
            )
        base = self._expanded(max(self.batch, cols.shape[0]), max(self.heads, cols.shape[1]))
        idx, count = base._outside(cols.expand(base.batch, base.heads, -1, -1))
        return replace(base, column_idx=idx, column_count=count, is_dense=False, _valid=True)

    def with_diagonals(
        self, offsets: Tensor, count: Tensor | None = None, *, width: int = 1
    ) -> Layout:
        """Copy with key spans covering chosen diagonals (slash lines), as MInference's kernel does.

        Diagonal ``o`` >= 0 links the query at absolute position p (query i sits at
        ``query_offset + i``) to key p - o. In a query block whose rows sit at [P0, P1] it is
        covered by the key range [P0 - o, P1 - o]: block_q keys that start anywhere. With
        ``width``, each offset stands for the band of diagonals [o, o + width), covered by
        [P0 - o - width + 1, P1 - o]. Ranges are clipped to the keys (causality's reach is P1),
        merged with each other and with the layout's spans; key blocks already in the layout are
        cut out of them and columns inside them are dropped.

        ``offsets``: int (B, H, QB, S), per query block, or (B, H, S), the same for every query
        block; -1 = none, else in [0, M). ``count`` (``offsets``' shape without the last dim)
        limits the valid prefix of each row when given. Batch and heads broadcast against the
        layout's. On the device, no per-entry loop; host syncs to check the offsets and to cut
        index widths to the longest row (per-head offsets: their widest merged band list too).
        """
        o = self._rows(offsets, count, "offsets", "count", (3, 4))
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width: expected a positive int, got {width!r}")
        if ((o < PAD) | (o >= self.num_keys)).any():
            raise ValueError(
                f"offsets: diagonal offsets must lie in [0, {self.num_keys}) (or -1 for none)"
            )
        first, last = query_block_positions(
            self.num_queries, self.num_keys, self.block_q, self.device
        )
        start, end = diagonal_ranges(o, width, first, last)
        return self._with_ranges(start, end)

    def with_spans(self, start: Tensor, end: Tensor, count: Tensor | None = None) -> Layout:
        """Copy whose spans also cover the key ranges [start, end): the primitive under
        `with_diagonals`. ``start``, ``end``: int (B, H, QB, S), any order, overlaps allowed,
        end <= start for none; ``count`` as in `with_columns`. Ranges are clipped to [0, M),
        merged with the present spans, minus the chosen key blocks; columns inside are dropped.
        """
        start = self._rows(start, None, "start", "count", (4,))
        end = self._rows(end, None, "end", "count", (4,))
        if start.shape != end.shape:
            raise ValueError(
                f"end: shape {tuple(end.shape)} differs from start's {tuple(start.shape)}"
            )
        if count is not None:  # uncounted slots: empty ranges (a start of -1 is a start)
            end = torch.where(counted_slots(start, count, "start", "count", self.device), end, PAD)
        return self._with_ranges(start.clamp(min=0), end)

    def _with_ranges(self, start: Tensor, end: Tensor) -> Layout:
        """`with_spans` on ranges known to fit (B, H, QB, S) and broadcast (no checks)."""
        end = end.clamp(max=self.num_keys)
        base = self._expanded(max(self.batch, start.shape[0]), max(self.heads, start.shape[1]))
        b, h, qb = base.batch, base.heads, self.num_q_blocks
        start, end = start.expand(b, h, qb, -1), end.expand(b, h, qb, -1)
        if base.has_spans:
            start = torch.cat([start.long(), base._part("span_start").long()], -1)
            end = torch.cat([end.long(), base._part("span_end").long()], -1)
        merged = merge_ranges(start, end)
        span_start, span_end, span_count = subtract_blocks(
            *merged, base.block_idx, base.block_count, self.block_k
        )
        base = replace(
            base,
            span_start=span_start,
            span_end=span_end,
            span_count=span_count,
            is_dense=False,
            _valid=True,
        )
        if base.has_columns:
            idx, count = base._outside(base._part("column_idx").long())
            base = replace(base, column_idx=idx, column_count=count, _valid=True)
        return base

    def _rows(self, idx, count, name: str, count_name: str, dims: tuple[int, ...]) -> Tensor:
        return checked_rows(
            idx, count, name, count_name, dims, self.batch, self.heads, self.num_q_blocks,
            self.device,
        )  # fmt: skip

    def _outside(self, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Key tokens ``cols`` (B, H, QB, C of this layout) outside its blocks and spans, packed."""
        in_block = torch.gather(
            self.block_mask(), -1, cols.clamp(0, self.num_keys - 1) // self.block_k
        )
        if self.has_spans:
            in_block |= in_ranges(cols, self.span_start, self.span_end, self.span_count)
        # fixed width (the columns' own): no host sync
        return compact(torch.where(in_block | (cols == PAD), PAD, cols), max(cols.shape[-1], 1))

    @staticmethod
    def cat(layouts: list[Layout], dim: int = 1) -> Layout:
        """Stack layouts of equal geometry along heads (dim=1) or batch (dim=0)."""
        if isinstance(dim, bool) or dim not in (0, 1):  # True == 1
            raise ValueError(f"dim: expected 0 (batch) or 1 (heads), got {dim!r}")
        if not isinstance(layouts, (list, tuple)) or not layouts:
            raise ValueError(f"layouts: expected a non-empty list of layouts, got {layouts!r:.80}")
        first = layouts[0]
        if not isinstance(first, Layout):
            raise TypeError(f"layouts: expected Layouts, got a {type(first).__name__}")
        for other in layouts[1:]:
            layout_checks.check_same_geometry(
                first, other, "layouts", stacked=("batch", "heads")[dim]
            )
        other_dim = 1 - dim
        size = max(lay.block_idx.shape[other_dim] for lay in layouts)
        parts = [
            lay._expanded(size, lay.heads) if dim == 1 else lay._expanded(lay.batch, size)
            for lay in layouts
        ]
        width = max(p.block_idx.shape[-1] for p in parts)
        idx = torch.cat([_pad_last(p.block_idx, width) for p in parts], dim)
        count = torch.cat([p.block_count for p in parts], dim)
        extra = {}  # token-level parts that any layout has, empty in the others
        for names in (("column_idx", "column_count"), ("span_start", "span_end", "span_count")):
            if all(getattr(p, names[0]) is None for p in parts):
                continue
            for name in names:
                rows = [p._part(name) for p in parts]
                if not name.endswith("_count"):
                    width = max(r.shape[-1] for r in rows)
                    rows = [_pad_last(r, width) for r in rows]
                extra[name] = torch.cat(rows, dim)
        return Layout(
            idx,
            count,
            first.block_q,
            first.block_k,
            first.num_queries,
            first.num_keys,
            **extra,
            _valid=True,
        )

    def refined(self, block_q: int, block_k: int) -> Layout:
        """The same (query, key) pairs at smaller blocks, divisors of this layout's: each query
        block's row (its key blocks, columns and spans) serves each of its sub-blocks, each key
        block becomes its sub-blocks. Layouts of other block sizes can then be stacked
        (`PerHeadPlanner`: a per-head mix of planners from `attnsieve calibrate`)."""
        for name, size, own in (
            ("block_q", block_q, self.block_q),
            ("block_k", block_k, self.block_k),
        ):
            check_int(name, size, 1)
            if own % size:
                raise ValueError(f"{name}: expected a divisor of the layout's {own}, got {size}")
        if (block_q, block_k) == (self.block_q, self.block_k):
            return self
        qb, kb = cdiv(self.num_queries, block_q), cdiv(self.num_keys, block_k)

        def rows(t: Tensor) -> Tensor:  # a query block's row, once per sub-block
            return t.repeat_interleave(self.block_q // block_q, 2)[:, :, :qb]

        mask = rows(self.block_mask()).repeat_interleave(self.block_k // block_k, 3)[..., :kb]
        out = Layout.from_block_mask(
            mask, block_q=block_q, block_k=block_k, num_queries=self.num_queries,
            num_keys=self.num_keys,
        )  # fmt: skip
        if self.column_idx is not None:
            out = out.with_columns(rows(self.column_idx), rows(self.column_count))
        if self.span_start is not None:
            out = out.with_spans(rows(self.span_start), rows(self.span_end), rows(self.span_count))
        return out

    # ---- views ---------------------------------------------------------------------------------
    def block_mask(self, q_blocks: slice = slice(None)) -> Tensor:
        """bool (B, H, QB, KB) of the block part (of the query blocks ``q_blocks`` only)."""
        if not isinstance(q_blocks, slice):  # an int or None would index away or add an axis
            raise TypeError(f"q_blocks: expected a slice, got {type(q_blocks).__name__}")
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
        check_int("start", start, 0)
        check_int("stop", stop, 0)
        if not start <= stop <= self.num_queries:
            raise ValueError(
                f"rows: expected 0 <= start <= stop <= {self.num_queries}, got [{start}, {stop})"
            )
        qb0, qb1 = start // self.block_q, cdiv(stop, self.block_q)
        blocks = self.block_mask(slice(qb0, qb1))
        tokens = blocks.repeat_interleave(self.block_k, dim=-1)[..., : self.num_keys]
        if self.has_columns:
            cols = self.column_idx[:, :, qb0:qb1].long()
            valid = valid_slots(cols, self.column_count[:, :, qb0:qb1])
            target = torch.where(valid, cols, self.num_keys)
            extra = torch.zeros(
                (*cols.shape[:-1], self.num_keys + 1), dtype=torch.bool, device=self.device
            )
            extra.scatter_(-1, target, True)
            tokens = tokens | extra[..., :-1]
        if self.has_spans:
            part = (self.span_start, self.span_end, self.span_count)
            tokens = tokens | ranges_mask(*(t[:, :, qb0:qb1] for t in part), self.num_keys)
        row_block = torch.arange(start, stop, device=self.device) // self.block_q - qb0
        return tokens[:, :, row_block]

    def to_dense_mask(self, causal: bool = False) -> Tensor:
        """bool (B, H, N, M) token mask (for tests; O(N·M) memory)."""
        check_bool("causal", causal)
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
        check_bool("causal", causal)
        check_bool("reduce", reduce)
        fraction = self.pairs(causal).double() / max(self.dense_pairs(causal), 1)
        return float(fraction.mean()) if reduce else fraction

    def dense_pairs(self, causal: bool = True) -> int:
        """The (query, key) pairs of dense (causal) attention over this layout's rows and keys."""
        check_bool("causal", causal)
        n, m = self.num_queries, self.num_keys
        return causal_pairs(n, m) if causal else n * m

    def pairs(self, causal: bool = True) -> Tensor:
        """int64 (B, H): the (query, key) pairs this layout computes, each once, in closed form
        (the twin of `attnsieve.kernels.layout_pairs`)."""
        check_bool("causal", causal)
        return count_pairs(self, causal)

    # ---- set algebra ---------------------------------------------------------------------------
    def union(self, other: Layout) -> Layout:
        """Pairs computed by either layout."""
        layout_checks.check_same_geometry(self, other, "other")
        b, h = max(self.batch, other.batch), max(self.heads, other.heads)
        mask = self.block_mask().expand(b, h, -1, -1) | other.block_mask().expand(b, h, -1, -1)
        merged = self._like(mask)
        pair = (self._expanded(b, h), other._expanded(b, h))
        if self.has_columns or other.has_columns:
            merged = merged.with_columns(torch.cat([x._part("column_idx") for x in pair], -1))
        if self.has_spans or other.has_spans:
            ranges = [(x._part("span_start"), x._part("span_end")) for x in pair]
            start, end = (torch.cat(parts, -1) for parts in zip(*ranges, strict=True))
            merged = merged._with_ranges(start, end)
        return merged

    def intersection(self, other: Layout) -> Layout:
        """Pairs computed by both layouts."""
        layout_checks.check_same_geometry(self, other, "other")
        b, h = max(self.batch, other.batch), max(self.heads, other.heads)
        mask = self.block_mask().expand(b, h, -1, -1) & other.block_mask().expand(b, h, -1, -1)
        merged = self._like(mask)
        mine, theirs = self._expanded(b, h), other._expanded(b, h)
        if self.has_columns or other.has_columns:
            kept = [x._columns_in(y) for x, y in ((mine, theirs), (theirs, mine))]
            merged = merged.with_columns(torch.cat(kept, -1))
        if self.has_spans or other.has_spans:
            # token ranges both cover (each side's spans and blocks); their shared blocks are
            # the block part already and are cut out again by _with_ranges
            merged = merged._with_ranges(*intersect_ranges(mine._covered(), theirs._covered()))
        return merged

    def _like(self, mask: Tensor) -> Layout:
        """A layout of this geometry from a block mask."""
        return Layout.from_block_mask(
            mask,
            block_q=self.block_q,
            block_k=self.block_k,
            num_queries=self.num_queries,
            num_keys=self.num_keys,
        )

    def _columns_in(self, other: Layout) -> Tensor:
        """This layout's columns that ``other`` (of the same B, H) covers too; PAD elsewhere."""
        cols = self._part("column_idx").long()
        covered = torch.gather(other.block_mask(), -1, cols.clamp(min=0) // other.block_k)
        if other.has_columns:
            covered |= in_ranges(cols, other.column_idx, other.column_idx + 1, other.column_count)
        if other.has_spans:
            covered |= in_ranges(cols, other.span_start, other.span_end, other.span_count)
        return torch.where(covered & (cols != PAD), cols, PAD)

    def _covered(self) -> tuple[Tensor, Tensor, Tensor]:
        """Packed, merged key ranges that blocks and spans cover (columns aside)."""
        blocks = block_ranges(self.block_idx, self.block_count, self.block_k, self.num_keys)
        spans = (self._part("span_start"), self._part("span_end"))
        return merge_ranges(*(torch.cat(parts, -1) for parts in zip(blocks, spans, strict=True)))

    def _part(self, name: str) -> Tensor:
        """Index tensor ``name`` with PAD past its row counts, or, if its part is absent, an empty
        stand-in (counts 0, one PAD entry per row)."""
        t, count_name = getattr(self, name), name.split("_")[0] + "_count"
        if t is None:
            shape = self.block_count.shape
            if name == count_name:
                return torch.zeros(shape, dtype=torch.int32, device=self.device)
            return torch.full((*shape, 1), PAD, dtype=torch.int32, device=self.device)
        return (
            t
            if name == count_name
            else torch.where(valid_slots(t, getattr(self, count_name)), t, PAD)
        )

    def _expanded(self, b: int, h: int) -> Layout:
        return self._map(lambda t: t.expand(b, h, *t.shape[2:]).contiguous())

    # ---- validation ----------------------------------------------------------------------------
    def validate(self) -> Layout:
        """Full check of the index contents (syncs with the device); returns self."""
        layout_checks.check_sorted_in_range(
            self.block_idx, self.block_count, self.num_k_blocks, "block_idx", "block_count"
        )
        if self.has_columns:
            layout_checks.check_sorted_in_range(
                self.column_idx, self.column_count, self.num_keys, "column_idx", "column_count"
            )
            cols = self.column_idx.long()
            valid = valid_slots(cols, self.column_count)
            in_block = torch.gather(
                self.block_mask(), -1, cols.clamp(0, self.num_keys - 1) // self.block_k
            )
            if (in_block & valid).any():
                raise ValueError("column_idx: columns must be disjoint from the chosen key blocks")
        if self.has_spans:
            check_spans(
                (self.span_start, self.span_end, self.span_count), self.num_keys,
                (self.block_idx, self.block_count, self.block_k), self._part("column_idx"),
                self._part("column_count"),
            )  # fmt: skip
        return self

    def check_inputs(self, q: Tensor, k: Tensor) -> None:
        """Raise unless this layout fits q (B, H_q, N, D) attending over k (B, H_kv, M, D)."""
        layout_checks.check_inputs(self, q, k)


def check_layout(layout: object, q: Tensor, k: Tensor, *, optional: bool = False) -> None:
    """``layout``, an attention call's argument: a `Layout` (or None, where ``optional``) that fits
    q (B, H_q, N, D) attending over k (B, H_kv, M, D)."""
    if layout is None and optional:
        return
    if not isinstance(layout, Layout):
        wanted = "an attnsieve Layout or None" if optional else "an attnsieve Layout"
        raise TypeError(f"layout: expected {wanted}, got {type(layout).__name__}")
    layout.check_inputs(q, k)


def query_block_positions(
    num_queries: int, num_keys: int, block_q: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Absolute positions (first, last) of every query block, int64 (QB,) each; may be negative."""
    start = torch.arange(0, num_queries, block_q, device=device)
    stop = torch.clamp(start + block_q, max=num_queries)
    return start + (num_keys - num_queries), stop - 1 + (num_keys - num_queries)


def causal_token_mask(
    num_queries: int, num_keys: int, start: int, stop: int, device=None
) -> Tensor:
    """bool (stop - start, M): bottom-right aligned causal visibility of rows [start, stop)."""
    pos = torch.arange(start, stop, device=device) + (num_keys - num_queries)
    return torch.arange(num_keys, device=device)[None, :] <= pos[:, None]


def _pad_last(t: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=PAD)
