"""Index packing and key-range (span) algebra behind `attnsieve.layout.Layout`, on the device.

A range list is a pair of int tensors ``start``, ``end`` (..., S): half-open key ranges
[start, end), one list per leading index (batch, head, query block). Unpacked lists mark an empty
entry by ``end <= start``; packed lists are sorted, disjoint, moved to the front and padded with
PAD, with a count per row. Everything here is vectorised: sorts, prefix sums, scatters and binary
searches over whole rows, never a Python loop over entries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attnsieve.checks import check_storage

PAD = -1
BIG = torch.iinfo(torch.int32).max


def pack(keep: Tensor, values: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """``values`` where ``keep`` (in order) moved to the front of each row, padded with PAD; counts.

    A prefix sum gives each kept entry its slot: a scatter instead of a sort of the whole row.
    Without ``width`` the rows are cut to the longest count (one host sync); with it they keep
    that fixed width, which must hold every kept entry.
    """
    slot = keep.cumsum(-1, dtype=torch.int32)
    count = keep.sum(-1, dtype=torch.int32)  # not slot[..., -1]: rows may be empty
    if width is None:
        width = max(int(count.max()) if count.numel() else 0, 1)
    out = torch.full((*keep.shape[:-1], width + 1), PAD, dtype=torch.int32, device=keep.device)
    # entries that are not kept all land in the spare last column, which is dropped
    out.scatter_(-1, torch.where(keep, slot - 1, width).long(), values.to(torch.int32))
    return out[..., :width].contiguous(), count


def pack_sorted(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of True entries along the last dim, ascending, padded with PAD; plus counts. The
    width is the row's full length: no host sync, so block plans can be captured in graphs."""
    positions = torch.arange(mask.shape[-1], device=mask.device, dtype=torch.int32)
    return pack(mask, positions.expand_as(mask), max(mask.shape[-1], 1))


def compact(values: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Sort rows of int indices (PAD = absent), drop duplicates and re-pad; return (idx, count).
    ``width`` as in `pack`."""
    keyed = torch.where(values == PAD, BIG, values.to(torch.int32)).sort(-1).values
    keep = keyed != BIG
    keep[..., 1:] &= keyed[..., 1:] != keyed[..., :-1]  # the first of equal neighbours stays
    return pack(keep, keyed, width)


def valid_slots(idx: Tensor, count: Tensor) -> Tensor:
    """bool like ``idx``: the counted prefix of every row."""
    return torch.arange(idx.shape[-1], device=idx.device) < count[..., None]


def merge_ranges(
    start: Tensor, end: Tensor, gap: int = 0, width: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Union of the ranges of every row: (start, end, count) packed, sorted and disjoint.

    Ranges less than ``gap`` apart also merge (gap 0: overlapping or touching ones). Sorted by
    start, a range opens a new run iff it starts past the furthest end seen so far; a run keeps
    its first start and its largest end. ``width`` as in `pack` (default: the input width, which
    always suffices, so no host sync).
    """
    if start.shape[-1] == 0:  # one empty entry keeps the shapes below non-degenerate
        start = end = torch.zeros((*start.shape[:-1], 1), dtype=torch.int32, device=start.device)
    valid = end > start
    key, order = torch.where(valid, start, BIG).to(torch.int32).sort(-1)
    valid = valid.gather(-1, order)
    end = torch.where(valid, end.gather(-1, order), 0).to(torch.int32)  # empties: sorted last
    reach = end.cummax(-1).values
    new = valid.clone()
    new[..., 1:] &= key[..., 1:] > reach[..., :-1] + gap
    width = start.shape[-1] if width is None else width
    first, count = pack(new, key, width)
    run = torch.where(valid, new.cumsum(-1, dtype=torch.int32) - 1, width).long()
    last = torch.full((*first.shape[:-1], width + 1), PAD, dtype=torch.int32, device=key.device)
    last = last.scatter_reduce_(-1, run, end, "amax")[..., :width]  # spare column: the empties
    return first, last.contiguous(), count


def _sorted_keys(start: Tensor, count: Tensor) -> Tensor:
    """Starts of packed ranges with the padding raised to BIG: sorted rows for binary search."""
    return torch.where(valid_slots(start, count), start, BIG).to(torch.int32).contiguous()


def in_ranges(x: Tensor, start: Tensor, end: Tensor, count: Tensor, strict: bool = False) -> Tensor:
    """bool like ``x`` (..., X): x lies in a packed range of its row (``strict``: not at a start).

    Rows of x and of the ranges share their leading dims. A binary search finds the last range
    starting at or before x (before x with ``strict``); x is inside iff it ends after x.
    """
    if start.shape[-1] == 0:  # rows without range slots hold nothing
        return torch.zeros_like(x, dtype=torch.bool)
    keys = _sorted_keys(start, count)
    x = x.to(torch.int32).contiguous()
    j = torch.searchsorted(keys, x, right=not strict) - 1
    ends = end.to(torch.int32).gather(-1, j.clamp(min=0))
    return (j >= 0) & (x < ends)


def diagonal_ranges(
    offsets: Tensor, width: int, first: Tensor, last: Tensor
) -> tuple[Tensor, Tensor]:
    """Unpacked key ranges covering diagonal bands [o, o + width) in query blocks at [first, last].

    ``offsets`` int64 (B, H, QB, S) or (B, H, S) (the same in every block), PAD = none; ``first``,
    ``last`` (QB,) absolute positions of each block's first and last row. Band [o, o + width)
    meets the keys [first - o - width + 1, last - o], clipped at 0; out of reach it is empty.
    """
    lo = torch.where(offsets == PAD, 0, offsets)
    hi = torch.where(offsets == PAD, 0, offsets + width)  # absent: the empty band [0, 0)
    if offsets.dim() == 3:
        # Bands [lo1, hi1) < [lo2, hi2) cover touching key ranges in a block of r rows iff
        # lo2 - hi1 < r: merge them once per head with the fewest rows of any block (the
        # last), so that far fewer ranges reach the per-block step (a full block may merge more).
        lo, hi, n = diagonal_bands(lo, hi, int(last[-1] - first[-1]))
        keep = valid_slots(lo, n)
        lo, hi = torch.where(keep, lo, 0)[:, :, None], torch.where(keep, hi, 0)[:, :, None]
    band = hi > lo
    start = torch.where(band, (first[:, None] - hi + 1).clamp(min=0), 0)
    end = torch.where(band, last[:, None] - lo + 1, 0)  # <= start when out of reach: empty
    return start, end


def checked_rows(
    idx: Tensor,
    count: Tensor | None,
    name: str,
    count_name: str,
    dims: tuple[int, ...],
    batch: int,
    heads: int,
    num_q_blocks: int,
    device: torch.device,
) -> Tensor:
    """A constructor's index argument ``idx`` as int64, entries past ``count`` set to PAD, after
    checking its type, shape and device: (B, H, QB, C) or, with 3 in ``dims``, (B, H, C), its
    batch and heads broadcasting against the layout's ``batch`` and ``heads``, on its
    ``device``."""
    shapes = " or ".join("(B, H, C)" if d == 3 else f"(B, H, {num_q_blocks}, C)" for d in dims)
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected an int32/int64 tensor of shape {shapes}")
    check_storage(name, idx)
    if idx.device != device:
        raise ValueError(f"{name}: on {idx.device}, expected the layout's device {device}")
    if idx.dim() not in dims or (idx.dim() == 4 and idx.shape[2] != num_q_blocks):
        raise ValueError(f"{name}: expected shape {shapes}, got {tuple(idx.shape)}")
    for dim, label, own in ((0, "batch", batch), (1, "heads", heads)):
        if idx.shape[dim] == 0 or (idx.shape[dim] != own and 1 not in (idx.shape[dim], own)):
            raise ValueError(
                f"{name}: {label} {idx.shape[dim]} does not broadcast against the layout's {own}"
            )
    idx = idx.to(torch.int64)
    if count is None:
        return idx
    return torch.where(counted_slots(idx, count, name, count_name, device), idx, PAD)


def counted_slots(
    idx: Tensor, count: object, name: str, count_name: str, device: torch.device
) -> Tensor:
    """`valid_slots` of ``idx`` after checking ``count``: an int tensor shaped like
    ``idx[..., 0]`` on ``device``, each value in [0, width of ``idx``] as a layout's own counts
    (one host sync: a larger count would read as the whole row, a negative one as none)."""
    if not isinstance(count, Tensor) or count.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{count_name}: expected an int32/int64 tensor shaped like {name}[..., 0]")
    check_storage(count_name, count)
    if tuple(count.shape) != tuple(idx.shape[:-1]) or count.device != device:
        raise ValueError(
            f"{count_name}: expected shape {tuple(idx.shape[:-1])} on {device}, got "
            f"{tuple(count.shape)} on {count.device}"
        )
    if ((count < 0) | (count > idx.shape[-1])).any():
        raise ValueError(f"{count_name}: expected values in [0, {idx.shape[-1]}] ({name}'s width)")
    return valid_slots(idx, count)


def check_spans(
    spans: tuple[Tensor, Tensor, Tensor],
    num_keys: int,
    blocks: tuple[Tensor, Tensor, int],
    column_idx: Tensor,
    column_count: Tensor,
) -> None:
    """Raise ValueError unless the counted spans lie in [0, num_keys), sorted, disjoint, and
    meet no listed block (``blocks``: idx, count, block_k) and no counted column."""
    start, end, count = spans
    if ((count < 0) | (count > start.shape[-1])).any():
        raise ValueError(f"span_count: expected values in [0, {start.shape[-1]}]")
    ok = valid_slots(start, count)
    start, end = start.long(), end.long()
    if (ok & ((start < 0) | (end <= start) | (end > num_keys))).any():
        raise ValueError(f"span_start, span_end: valid spans need 0 <= start < end <= {num_keys}")
    if start.shape[-1] > 1 and (ok[..., 1:] & (start[..., 1:] < end[..., :-1])).any():
        raise ValueError("span_start: valid spans must be sorted and disjoint")
    if in_blocks(*spans, *blocks).any():
        raise ValueError("span_start: spans must be disjoint from the chosen key blocks")
    if (in_ranges(column_idx, *spans) & valid_slots(column_idx, column_count)).any():
        raise ValueError("column_idx: columns must be disjoint from the spans")


def in_blocks(
    start: Tensor,
    end: Tensor,
    count: Tensor,
    block_idx: Tensor,
    block_count: Tensor,
    block_k: int,
) -> Tensor:
    """bool like ``start``: the counted range meets a listed key block of its row.

    The first listed block at or after the block holding ``start`` meets it iff it begins
    before ``end``.
    """
    if block_idx.shape[-1] == 0:  # no block slots: nothing to meet (and nothing to gather)
        return torch.zeros_like(start, dtype=torch.bool)
    blocks = torch.where(valid_slots(block_idx, block_count), block_idx, BIG).to(torch.int32)
    first = (start // block_k).to(torch.int32).contiguous()
    b = blocks.gather(
        -1, torch.searchsorted(blocks.contiguous(), first).clamp(max=blocks.shape[-1] - 1)
    )
    meets = (
        (b >= first) & (b != BIG) & (b.long() * block_k < end)
    )  # the clamp may give a block < first
    return valid_slots(start, count) & meets


def subtract_blocks(
    start: Tensor,
    end: Tensor,
    count: Tensor,
    block_idx: Tensor,
    block_count: Tensor,
    block_k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Packed ranges minus the listed key blocks: (start, end, count), cut to the longest row.

    The ranges must be merged (disjoint and not touching). Every piece of the difference starts
    at a range start outside the blocks or at the end of a run of listed blocks strictly inside a
    range, and ends likewise at a range end or the start of such a run, so the k-th start and the
    k-th end (each sorted) bound the k-th piece.
    """
    blocks = torch.where(valid_slots(block_idx, block_count), block_idx, BIG).to(torch.int32)
    blocks = blocks.contiguous()

    def listed(kb: Tensor) -> Tensor:
        if blocks.shape[-1] == 0:  # rows without block slots list none
            return torch.zeros_like(kb, dtype=torch.bool)
        pos = torch.searchsorted(blocks, kb.to(torch.int32).contiguous())
        return blocks.gather(-1, pos.clamp(max=blocks.shape[-1] - 1)) == kb

    ok = valid_slots(start, count)
    starts = torch.where(ok & ~listed(start.clamp(min=0) // block_k), start, PAD)
    ends = torch.where(ok & ~listed((end - 1).clamp(min=0) // block_k), end, PAD)
    # edges of runs of listed blocks: a run ends before an unlisted block, starts after one
    real = blocks != BIG
    nxt = torch.nn.functional.pad(blocks[..., 1:], (0, 1), value=BIG)
    prv = torch.nn.functional.pad(blocks[..., :-1], (1, 0), value=BIG)
    run_end = torch.where(real & (nxt != blocks + 1), (blocks + 1) * block_k, BIG)
    run_start = torch.where(real & (prv != blocks - 1), blocks * block_k, BIG)
    run_end = torch.where(in_ranges(run_end, start, end, count, strict=True), run_end, PAD)
    run_start = torch.where(in_ranges(run_start, start, end, count, strict=True), run_start, PAD)
    piece_start, n = compact(torch.cat([starts, run_end], -1))
    piece_end, _ = compact(torch.cat([ends, run_start], -1), piece_start.shape[-1])  # same counts
    return piece_start, piece_end, n


def intersect_ranges(
    a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Unpacked ranges (start, end) covering what two packed, merged range lists share.

    A piece of the intersection starts at a start of ``a`` inside ``b`` or at a start of ``b``
    strictly inside ``a``; it ends at an end of ``a`` whose last key is in ``b`` or at an end of
    ``b`` strictly inside ``a``. As in `subtract_blocks` the k-th start and end pair up.
    """
    (sa, ea, ca), (sb, eb, cb) = a, b
    va, vb = valid_slots(sa, ca), valid_slots(sb, cb)
    starts = torch.cat(
        [
            torch.where(va & in_ranges(sa, sb, eb, cb), sa, PAD),
            torch.where(vb & in_ranges(sb, sa, ea, ca, strict=True), sb, PAD),
        ],
        -1,
    )
    ends = torch.cat(
        [
            torch.where(va & in_ranges(ea - 1, sb, eb, cb), ea, PAD),
            torch.where(
                vb & in_ranges(eb - 1, sa, ea, ca) & in_ranges(eb, sa, ea, ca, strict=True),
                eb,
                PAD,
            ),
        ],
        -1,
    )
    starts, n = compact(starts)
    ends, _ = compact(ends)
    ok = valid_slots(starts, n)
    return torch.where(ok, starts, 0), torch.where(ok, ends[..., : starts.shape[-1]], 0)


def block_ranges(
    block_idx: Tensor, block_count: Tensor, block_k: int, num_keys: int
) -> tuple[Tensor, Tensor]:
    """Unpacked key ranges of the listed blocks (empty where not counted)."""
    ok = valid_slots(block_idx, block_count)
    start = block_idx.to(torch.int32) * block_k
    end = torch.clamp(start + block_k, max=num_keys)
    return torch.where(ok, start, 0), torch.where(ok, end, 0)


def ranges_mask(start: Tensor, end: Tensor, count: Tensor, num_keys: int) -> Tensor:
    """bool (..., num_keys): keys inside the packed ranges (a difference array, prefix-summed)."""
    ok = valid_slots(start, count)
    delta = torch.zeros((*start.shape[:-1], num_keys + 2), dtype=torch.int32, device=start.device)
    spare = num_keys + 1
    delta.scatter_add_(-1, torch.where(ok, start, spare).long(), ok.to(torch.int32))
    delta.scatter_add_(-1, torch.where(ok, end, spare).long(), -ok.to(torch.int32))
    return delta.cumsum(-1)[..., :num_keys] > 0


def line_parts(
    columns: Tensor,
    offsets: Tensor,
    first: Tensor,
    last: Tensor,
    num_queries: int,
    num_keys: int,
    block_q: int,
    block_k: int,
    rows: Callable[..., tuple[Tensor, ...]] | None = None,
) -> tuple[Tensor, ...]:
    """The index parts of MInference's vertical-slash layout, built per head and query block
    without a sort of any (head, query block) row.

    ``columns`` (B, H, C) key tokens and ``offsets`` (B, H, S) diagonal offsets, ints in [0, M)
    on one device; ``first``, ``last`` int32 (QB,): the absolute positions of each query block's
    first and last row (`layout.query_block_positions`). Returns int32 block_idx, block_count,
    column_idx, column_count, span_start, span_end, span_count: the diagonal key blocks of every
    query block, the columns it can see outside them and outside the spans, and the spans of the
    diagonals minus the blocks. The columns and offsets are sorted once per head and the offsets
    merged into bands; every (head, query block) row is then built by ``rows``, `line_rows` by
    default (`attnsieve.api.line_layout` passes its Triton kernel).
    """
    rows = rows or line_rows
    b, h = columns.shape[:2]
    kb_lo = first.clamp(min=0) // block_k
    kb_hi = last // block_k
    n_blocks = torch.where(last >= 0, kb_hi - kb_lo + 1, 0)
    width = min((block_q - 1) // block_k + 2, -(-num_keys // block_k))
    slot = torch.arange(width, device=first.device, dtype=torch.int32)
    block_idx = torch.where(slot < n_blocks[:, None], kb_lo[:, None] + slot, PAD)
    run_start = kb_lo * block_k

    cols = columns.to(torch.int32).sort(-1).values
    offsets = offsets.to(torch.int32)
    parts = rows(cols, *diagonal_bands(offsets, offsets + 1, block_q - 1), first, last, run_start)
    column_idx, column_count, span_start, span_end, span_count = parts
    rows_last = num_queries - (first.shape[0] - 1) * block_q
    if rows_last < block_q:  # the last block's fewer rows see diagonals touch at a smaller gap
        tail = slice(first.shape[0] - 1, None)
        bands = diagonal_bands(offsets, offsets + 1, rows_last - 1)
        idx, count, start, end, n = rows(cols, *bands, first[tail], last[tail], run_start[tail])
        width = max(span_start.shape[-1], start.shape[-1])
        span_start, span_end = _pad_to(span_start, width), _pad_to(span_end, width)
        column_idx[:, :, tail], column_count[:, :, tail], span_count[:, :, tail] = idx, count, n
        span_start[:, :, tail], span_end[:, :, tail] = _pad_to(start, width), _pad_to(end, width)
    return (
        block_idx.expand(b, h, -1, -1).contiguous(),
        n_blocks.to(torch.int32).expand(b, h, -1).contiguous(),
        column_idx,
        column_count,
        span_start,
        span_end,
        span_count,
    )


def _pad_to(t: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=PAD)


def diagonal_bands(lo: Tensor, hi: Tensor, gap: int) -> tuple[Tensor, Tensor, Tensor]:
    """Diagonal bands [lo, hi) (B, H, S) merged per head by `merge_ranges` with ``gap`` (one
    diagonal o is the band [o, o + 1)): int32 (B, H, nb) each, packed, and their int32 count
    (B, H). nb is the widest head's count: a host sync."""
    lo, hi, n = merge_ranges(lo, hi, gap=gap)
    nb = max(int(n.max()) if n.numel() else 0, 1)
    return lo[..., :nb], hi[..., :nb], n


def line_rows(
    cols: Tensor, lo: Tensor, hi: Tensor, n: Tensor, first: Tensor, last: Tensor, k0: Tensor
) -> tuple[Tensor, ...]:
    """`line_parts`' columns and spans for query blocks of r rows each, from the head's sorted
    columns ``cols`` (B, H, C) and its diagonal bands (`diagonal_bands` with gap r - 1);
    ``first``, ``last`` the blocks' row positions and ``k0`` the first key of their diagonal
    blocks, int32 (QB,). Returns column_idx (B, H, QB, max(C, 1)), column_count, and span_start,
    span_end (B, H, QB, nb), span_count. The twin of `attnsieve.kernels.line_rows`.

    With gap = r - 1, diagonals o1 < o2 cover touching key ranges iff o2 - o1 <= gap + 1, so the
    bands [lo, hi) give the block's ranges [max(first - hi + 1, 0), last - lo + 1), one a band
    that reaches the block (lo <= last): disjoint, and sorted in descending band order. Two
    reaching bands clipped at key 0 would both end past first - 1, less than ``gap`` apart, so
    at most one is. No diagonal reaches a key past the block's last row, so its diagonal key
    blocks, from k0 on, only end ranges early.
    """
    nb = lo.shape[-1]
    repeat = torch.nn.functional.pad(cols[..., 1:] == cols[..., :-1], (1, 0), value=False)
    ok = valid_slots(lo, n)
    p0, p1, k0 = first[:, None], last[:, None], k0[:, None]  # (QB, 1) each

    lo_d, hi_d, ok_d = (t.flip(-1)[:, :, None] for t in (lo, hi, ok))  # (B, H, 1, nb), descending
    start = (p0 - hi_d + 1).clamp(min=0)
    end = torch.minimum(p1 - lo_d + 1, k0)
    keep = ok_d & (lo_d <= p1) & (start < end)
    span_start, span_count = pack(keep, start, nb)
    span_end, _ = pack(keep, end, nb)

    # a column c lies in a span iff a band meets the offsets [first - c, last - c] its rows see:
    # the first band ending past first - c (index j) starts at or before last - c, i.e. more
    # than j bands start at or before it
    c = cols[:, :, None, :]  # (B, H, 1, C)

    def bands_at_or_below(bound: Tensor, target: Tensor) -> Tensor:
        keys = torch.where(ok, bound, BIG).contiguous()
        return torch.searchsorted(keys, target.flatten(2), right=True, out_int32=True)

    j, j_lo = bands_at_or_below(hi, p0 - c), bands_at_or_below(lo, p1 - c)
    covered = (j_lo > j).view(*c.shape[:2], p0.shape[0], c.shape[-1])
    keep = (c <= p1) & (c < k0) & ~covered & ~repeat[:, :, None, :]
    column_idx, column_count = pack(keep, c.expand_as(keep), max(cols.shape[-1], 1))
    return column_idx, column_count, span_start, span_end, span_count
