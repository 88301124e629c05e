"""Compaction of one layer of the paged cache after a KV policy (`attnsieve.cache.Cache.compact`).

Each head keeps the entries a `Kept` lists, in order, with the extras it stores (compensation
tokens, RazorAttention) inserted by position: they move into the head's first pages (only entries
not already in place move), the head's other pages return to the front of the free list, and the
page summaries and the logical pages holding a weighted token are recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.cache_pages import LayerCache, log_weights, pool, refresh_summaries, slots, write_kv
from attnsieve.checks import cdiv
from attnsieve.views import Kept


def compact_layer(
    lc: LayerCache,
    kept: Kept,
    stored: Tensor,
    *,
    page_size: int,
    kv_heads: int,
    kv_dtype: str | None,
    device: torch.device,
) -> None:
    """Apply ``kept`` to ``lc`` as `attnsieve.cache.Cache.compact` documents, once checked:
    ``stored`` is int64 (B, H_kv) on the CPU, the extras each head stores
    (`cache_reference.check_kept`)."""
    ps = page_size
    width = kept.idx.shape[-1]
    slot = torch.arange(width, device=device)
    table = lc.page_table.long()
    cap = table.shape[-1] * ps - 1  # padding columns past the table: clamped, then dropped
    src_t = kept.idx.long().clamp(0, cap)
    src = table.gather(-1, src_t // ps) * ps + src_t % ps
    kept_ok = slot < kept.count[..., None]
    dst_t = slot.expand_as(src_t)
    extras = bool(stored.any())
    if extras:
        extra_ok = (
            torch.arange(kept.extra_weight.shape[-1], device=device) < stored.to(device)[..., None]
        )
        kept_pos, extra_pos = lc.positions.view(-1)[src], kept.extra_positions
        # an extra goes after the kept entries of its position, and so after its earlier extras
        before = (extra_pos[..., None, :] < kept_pos[..., :, None]) & extra_ok[..., None, :]
        dst_t = dst_t + before.sum(-1)
        upto = (kept_pos[..., None, :] <= extra_pos[..., :, None]) & kept_ok[..., None, :]
        extra_t = torch.arange(extra_pos.shape[-1], device=device) + upto.sum(-1)
    dst_t = dst_t.clamp(max=cap)
    dst = table.gather(-1, dst_t // ps) * ps + dst_t % ps
    move = kept_ok & (src != dst)
    src, dst = src[move], dst[move]
    for t in lc.slot_tensors():
        t[dst] = t[src]  # the right side is gathered into a new tensor first: overlap is safe
    if extras:  # into slots no kept entry moved to
        write_extras(
            lc, kept, extra_ok, table, extra_t.clamp(max=cap),
            page_size=ps, kv_heads=kv_heads, kv_dtype=kv_dtype, device=device,
        )  # fmt: skip
    lc.host_lengths = kept.count.long().cpu() + stored
    lc.host_pages = cdiv(lc.host_lengths, ps)
    lc.lengths.copy_(lc.host_lengths)
    drop = torch.arange(table.shape[-1], device=device) >= lc.host_pages.to(device)[..., None]
    freed = lc.page_table[drop & (lc.page_table >= 0)].long()
    lc.page_table.masked_fill_(drop, -1)
    lc.free = torch.cat([freed, lc.free])  # freed pages are reused first
    refresh_summaries(lc, ps, device)
    lc.weighted_pages = None if lc.log_weight is None else weighted_pages(lc, ps, device)


def weighted_pages(lc: LayerCache, page_size: int, device: torch.device) -> Tensor | None:
    """int32 (B, H_kv, E): the logical pages holding a token of nonzero log weight, ascending,
    -1 padded; None where no head holds one. Only compaction stores such tokens, so it is
    computed there (one host read of the width)."""
    heavy = log_weights(lc, *slots(lc, page_size, device)) != 0  # [B, H, L]
    b, h, n = heavy.shape
    if n == 0:  # every head compacted to nothing
        return None
    p = cdiv(n, page_size)
    heavy = F.pad(heavy, (0, p * page_size - n)).view(b, h, p, page_size).any(-1)
    width = int(heavy.sum(-1).max())
    if width == 0:
        return None
    pages = torch.where(heavy, torch.arange(p, device=device), p)
    pages = pages.sort(-1).values[..., :width]
    return torch.where(pages < p, pages, -1).int()


def write_extras(
    lc: LayerCache,
    kept: Kept,
    stored: Tensor,
    table: Tensor,
    index: Tensor,
    *,
    page_size: int,
    kv_heads: int,
    kv_dtype: str | None,
    device: torch.device,
) -> None:
    """Store the extras ``stored`` marks (bool (B, H_kv, E)) at head entries ``index``:
    keys and values (quantised in an FP8 cache), positions, labels and log weights."""
    ps = page_size
    flat = (table.gather(-1, index // ps) * ps + index % ps)[stored]
    if lc.log_weight is None:
        lc.log_weight = pool(lc.k_pages.shape[0], ps, dtype=torch.float32, device=device, fill=0)
    kf = write_kv(lc, flat, kept.extra_keys[stored], kept.extra_values[stored], kv_dtype)
    lc.positions.view(-1)[flat] = kept.extra_positions[stored]
    lc.log_weight.view(-1)[flat] = kept.extra_weight[stored].log()
    if lc.labels is not None:
        heads = torch.arange(kv_heads, device=device)[None, :, None]
        ch = lc.label_channels[heads.expand_as(stored)[stored]]  # [N, R]
        lc.labels.flatten(0, 1)[flat] = kf.gather(-1, ch).to(lc.labels.dtype)
