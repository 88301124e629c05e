"""`Cache`: the paged KV cache, ragged per KV head, with the page summaries selectors read.

Per layer (`LayerCache`; `kernels/decode.py` reads exactly this):

- ``k_pages``, ``v_pages``: (num_pages, page_size, D) pool, in the model dtype or float8_e4m3fn
  (``kv_dtype="fp8"``), then ``k_scale``, ``v_scale``: float32 (num_pages, page_size) per-token
  scales (value = fp8 * scale, scale = absmax over D / 448); else None.
- ``page_table``: int32 (B, H_kv, max_pages), the physical page of each logical page, -1 unused.
- ``lengths``: int32 (B, H_kv) valid tokens per head. Token t of a head lives at
  ``page_table[b, h, t // page_size]``, slot ``t % page_size``.
- ``positions``: int64 (num_pages, page_size) absolute position of each stored token.
- ``key_min``, ``key_max``: bfloat16 (num_pages, D) channel-wise min / max of a page's stored keys,
  rounded outward (`cache_reference.round_bf16`)
  (dequantised when FP8), +inf / -inf for an empty page.
- ``labels``: (num_pages, page_size, R) the label channels of every stored key (Double Sparsity),
  once `Cache.set_label_channels` gave the layer its channels; else None.
- ``log_weight``: float32 (num_pages, page_size), the natural log of how many tokens each stored
  token stands for (0 for a plain token), which attention adds to its logit, once a compaction
  stored a compensation token (RazorAttention) in the layer; else None.

The pool grows geometrically on demand and reuses freed pages through a free list; `compact` moves
only the kept tokens into their head's first pages and frees the rest; `shrink` re-allocates the
pool to the pages in use. Page allocation is host bookkeeping over a host mirror of ``lengths``, so
`append` never waits for the device; `compact`, `shrink` and explicit ``positions`` do (once).
`reserve` hands out the pages of the tokens ahead at once, so that a CUDA graph of decode steps
appends into fixed pools and tables (`attnsieve.integrations.decode_graphs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve import cache_reference as ref  # the argument checks both share
from attnsieve.checks import cdiv, check_int
from attnsieve.kernels import INTERPRET
from attnsieve.kernels.cache_append import append_one
from attnsieve.kernels.quantize import FP8_MAX
from attnsieve.views import Kept, KVView, PageView

FP8 = torch.float8_e4m3fn


class KernelArgs(NamedTuple):
    """The tensors `kernels.decode.decode_attention` takes for one layer."""

    k_pages: Tensor
    v_pages: Tensor
    page_table: Tensor
    lengths: Tensor
    k_scale: Tensor | None
    v_scale: Tensor | None
    log_weight: Tensor | None


@dataclass
class LayerCache:
    """One layer's pool and tables (see the module docstring), plus host-side bookkeeping."""

    k_pages: Tensor
    v_pages: Tensor
    k_scale: Tensor | None
    v_scale: Tensor | None
    positions: Tensor
    key_min: Tensor
    key_max: Tensor
    labels: Tensor | None
    label_channels: Tensor | None  # int64 (H_kv, R) on the device
    log_weight: Tensor | None
    weighted_pages: Tensor | None  # int32 (B, H_kv, E): logical pages with a weighted token
    page_table: Tensor
    lengths: Tensor
    host_lengths: Tensor  # int64 (B, H_kv) on the CPU, mirrors ``lengths``
    host_pages: Tensor  # int64 (B, H_kv) on the CPU: logical pages with a physical page
    seen: Tensor  # int64 (B,) on the CPU: the next default position of each batch row
    next_pos: Tensor  # the same on the device: default positions need no host-to-device copy
    free: Tensor  # int64 on the device: free page ids, taken from the front

    @property
    def weighted(self) -> bool:
        """Whether the layer holds log weights (a compaction stored a compensation token)."""
        return self.log_weight is not None

    def page_tensors(self) -> dict[str, Tensor]:
        """Every tensor indexed by physical page (first axis)."""
        names = ("k_pages", "v_pages", "k_scale", "v_scale", "positions", "key_min", "key_max")
        names = (*names, "labels", "log_weight")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def slot_tensors(self) -> list[Tensor]:
        """The per-token tensors, flattened to (num_pages * page_size, ...) views."""
        ts = (self.k_pages, self.v_pages, self.k_scale, self.v_scale, self.positions, self.labels)
        return [_raw(t).flatten(0, 1) for t in (*ts, self.log_weight) if t is not None]


def _raw(t: Tensor) -> Tensor:
    """FP8 data moves as bytes: not every device implements indexing for float8."""
    return t.view(torch.uint8) if t.dtype == FP8 else t


def quantize_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token FP8: (x / scale as float8_e4m3fn, float32 scale = absmax over D / 448); an
    all-zero row stays 0 with scale 0, so that it never sets the decode kernel's per-tile scale
    (`kernels.decode`: float16 P relative to the tile's largest V scale)."""
    x = x.float()
    amax = x.abs().amax(-1)
    # times the reciprocal, as PyTorch's CUDA division by a scalar does: one rounding on every
    # device, which the fused append kernel (`kernels.cache_append`) reproduces
    scale = amax * (1 / FP8_MAX)  # 0 for an all-zero row, and for float32 rows below ~3e-43
    return (x / torch.where(scale > 0, scale, 1.0)[..., None]).to(FP8), scale


class Cache:
    """Paged KV cache of ``num_layers`` layers, ragged per (batch row, KV head).

    Example:
        >>> cache = Cache(2, batch=1, kv_heads=2, head_dim=64, dtype=torch.float16, device="cuda")
        >>> cache.append(0, k, v)            # k, v: (1, 2, T, 64); all heads grow by T
        >>> cache.compact(0, policy.compress(cache.kv_view(0, q_window, q_positions)))
        >>> attnsieve.api.decode_attention(q, cache, 0)  # all of kernel_args(0), log weights too
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        *,
        page_size: int = 16,
        dtype: torch.dtype,
        device: torch.device | str,
        kv_dtype: str | None = None,
    ) -> None:
        ref.check_config(num_layers, batch, kv_heads, head_dim, page_size, dtype, kv_dtype)
        self.num_layers, self.batch = num_layers, batch
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.page_size, self.dtype, self.kv_dtype = page_size, dtype, kv_dtype
        self.device = ref.check_device(device)
        self.layers = [self._empty_layer() for _ in range(num_layers)]
        # bumped whenever a pool, table or page assignment changes: a CUDA graph that captured
        # decode steps is valid while it holds (`attnsieve.integrations.decode_graphs`)
        self.version = 0

    def __len__(self) -> int:
        return self.num_layers

    def _pool(self, n: int, *rest: int, dtype: torch.dtype, fill: float | None = None) -> Tensor:
        if fill is None:
            return torch.empty(n, *rest, dtype=dtype, device=self.device)
        return torch.full((n, *rest), fill, dtype=dtype, device=self.device)

    def _empty_layer(self) -> LayerCache:
        ps, d, b, h = self.page_size, self.head_dim, self.batch, self.kv_heads
        fp8 = self.kv_dtype == "fp8"
        store = FP8 if fp8 else self.dtype
        scale = (lambda: self._pool(0, ps, dtype=torch.float32)) if fp8 else (lambda: None)
        return LayerCache(
            k_pages=self._pool(0, ps, d, dtype=store),
            v_pages=self._pool(0, ps, d, dtype=store),
            k_scale=scale(),
            v_scale=scale(),
            positions=self._pool(0, ps, dtype=torch.int64),
            key_min=self._pool(0, d, dtype=ref.SUMMARY_DTYPE),
            key_max=self._pool(0, d, dtype=ref.SUMMARY_DTYPE),
            labels=None,
            label_channels=None,
            log_weight=None,
            weighted_pages=None,
            page_table=torch.full((b, h, 1), -1, dtype=torch.int32, device=self.device),
            lengths=torch.zeros(b, h, dtype=torch.int32, device=self.device),
            host_lengths=torch.zeros(b, h, dtype=torch.int64),
            host_pages=torch.zeros(b, h, dtype=torch.int64),
            seen=torch.zeros(b, dtype=torch.int64),
            next_pos=torch.zeros(b, dtype=torch.int64, device=self.device),
            free=torch.zeros(0, dtype=torch.int64, device=self.device),
        )

    def _take(self, lc: LayerCache, n: int) -> Tensor:
        """``n`` free page ids (int64, on the device), growing the pool by half when short."""
        short = n - lc.free.numel()
        if short > 0:
            old = lc.k_pages.shape[0]
            grow = max(short, old // 2)  # geometric: O(1) amortised copies, <= 50 % slack
            for name, t in lc.page_tensors().items():
                setattr(lc, name, torch.cat([t, self._pool(grow, *t.shape[1:], dtype=t.dtype)]))
            lc.free = torch.cat([lc.free, torch.arange(old, old + grow, device=self.device)])
        pages, lc.free = lc.free[:n], lc.free[n:]
        return pages

    def _ensure_table(self, lc: LayerCache, max_pages: int) -> None:
        have = lc.page_table.shape[-1]
        if max_pages > have:
            pad = torch.full_like(lc.page_table[..., :1], -1).expand(
                -1, -1, max(max_pages, 2 * have) - have
            )
            lc.page_table = torch.cat([lc.page_table, pad], -1)

    def _dequant(self, data: Tensor, scale: Tensor | None) -> Tensor:
        """float32 values of stored K or V (data (..., D), scale (...))."""
        return data.float() if scale is None else data.float() * scale[..., None]

    def _refresh_summaries(self, lc: LayerCache) -> None:
        """Recompute key_min / key_max of every page in use from its valid slots."""
        ps = self.page_size
        n = lc.lengths.long()[..., None]
        start = torch.arange(lc.page_table.shape[-1], device=self.device) * ps
        used = start < n
        pages = lc.page_table[used].long()
        valid = (n - start).clamp(0, ps)[used]
        ks = None if lc.k_scale is None else lc.k_scale[pages]
        keys = self._dequant(lc.k_pages[pages], ks)  # [N, ps, D]
        dead = (torch.arange(ps, device=self.device) >= valid[:, None])[..., None]
        lc.key_min[pages] = ref.round_bf16(keys.masked_fill(dead, math.inf).amin(1), up=False)
        lc.key_max[pages] = ref.round_bf16(keys.masked_fill(dead, -math.inf).amax(1), up=True)

    def _allocate(self, lc: LayerCache, t: int) -> None:
        """Pages for ``t`` more tokens in every head, entered in the page table with empty
        summaries; pages already there (`reserve`) are kept. Sizes come from the host mirrors;
        page ids and indices stay on the device."""
        ps = self.page_size
        last = torch.maximum(cdiv(lc.host_lengths + t, ps), lc.host_pages)
        total = int((last - lc.host_pages).sum())
        self._ensure_table(lc, int(last.max()))
        if total:
            self.version += 1
            pages = self._take(lc, total)
            n = lc.lengths.long().flatten()
            first = (lc.page_table >= 0).sum(-1).flatten()  # a head's pages fill its table's front
            need = (cdiv(n + t, ps) - first).clamp(min=0)
            heads = torch.arange(n.numel(), device=self.device).repeat_interleave(
                need, output_size=total
            )
            start = (need.cumsum(0) - need).repeat_interleave(need, output_size=total)
            logical = torch.arange(total, device=self.device) - start + first[heads]
            rows = lc.page_table.view(-1, lc.page_table.shape[-1])
            rows[heads, logical] = pages.to(torch.int32)
            lc.key_min.index_fill_(0, pages, math.inf)  # not `[pages] = inf`: that syncs
            lc.key_max.index_fill_(0, pages, -math.inf)
        lc.host_pages = last

    def reserve(self, tokens: int) -> None:
        """Give every head of every layer its pages for ``tokens`` more tokens now, so that the
        next ``tokens`` single-token appends allocate nothing on the host and never grow a pool
        or a table: the tensors a CUDA graph of decode steps captured stay the ones in use.
        Reserved pages hold no token: `memory_bytes` does not count them, `reserved_bytes` does;
        `compact` frees them."""
        check_int("tokens", tokens, 0)
        for lc in self.layers:
            self._allocate(lc, tokens)

    def reserved_tokens(self) -> int:
        """Tokens every head of every layer can still take without a page allocation."""
        return min(
            int((lc.host_pages * self.page_size - lc.host_lengths).min()) for lc in self.layers
        )

    def advance_host(self, tokens: int = 1) -> None:
        """Count ``tokens`` appended tokens per head in every layer's host mirrors, for appends
        that ran on the device alone (a replayed CUDA graph of decode steps, whose tokens
        `reserve` gave pages)."""
        check_int("tokens", tokens, 0)
        if tokens > self.reserved_tokens():
            raise ValueError(f"tokens: {tokens} more tokens overrun the reserved pages")
        for lc in self.layers:
            lc.host_lengths += tokens
            lc.seen += tokens

    def host_state(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """A copy of every layer's host mirrors (lengths, pages, positions seen), for
        `set_host_state`: capturing a CUDA graph runs the host bookkeeping without the device
        work."""
        return [
            (lc.host_lengths.clone(), lc.host_pages.clone(), lc.seen.clone()) for lc in self.layers
        ]

    def set_host_state(self, state: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        for lc, (lengths, pages, seen) in zip(self.layers, state, strict=True):
            lc.host_lengths, lc.host_pages, lc.seen = lengths, pages, seen

    def append(self, layer: int, k: Tensor, v: Tensor, positions: Tensor | None = None) -> None:
        """Append k, v (B, H_kv, T, D) to every head of ``layer``. ``positions`` int64 (B, T)
        defaults to continuing each batch row's counter (absolute: eviction does not rewind it)."""
        ref.check_layer(layer, self.num_layers)
        shape = (self.batch, self.kv_heads, self.head_dim)
        ref.check_kv_append(k, v, shape, self.dtype, self.device)
        lc, ps, t = self.layers[layer], self.page_size, k.shape[2]
        if positions is not None:  # checked before anything changes
            seen = ref.check_positions(positions, lc.seen, t, self.device)[:, -1] + 1
        self._allocate(lc, t)
        if positions is None and self._fused(lc, k, v):
            append_one(
                k, v, lc.next_pos, lc.k_pages, lc.v_pages, lc.k_scale, lc.v_scale, lc.positions,
                lc.key_min, lc.key_max, lc.page_table, lc.lengths, lc.log_weight,
            )  # fmt: skip
            lc.host_lengths += 1
            lc.seen = lc.seen + 1
            lc.next_pos.add_(1)  # in place: a captured graph keeps reading this tensor
            return
        if positions is None:
            seen = lc.seen + t
            pos = lc.next_pos[:, None] + torch.arange(t, device=self.device)
        else:
            pos = positions
        tok = lc.lengths[..., None].long() + torch.arange(t, device=self.device)  # [B, H, T]
        phys = lc.page_table.gather(-1, tok // ps).long()
        flat = (phys * ps + tok % ps).flatten()
        kf = self._write_kv(lc, flat, k.reshape(-1, self.head_dim), v.reshape(-1, self.head_dim))
        lc.positions.view(-1)[flat] = pos[:, None, :].expand(-1, self.kv_heads, -1).flatten()
        if lc.log_weight is not None:  # a freed or vacated slot may hold an old weight
            lc.log_weight.view(-1)[flat] = 0.0
        page_of = phys.flatten()[:, None].expand(-1, self.head_dim)
        lc.key_min.scatter_reduce_(0, page_of, ref.round_bf16(kf, up=False), "amin")
        lc.key_max.scatter_reduce_(0, page_of, ref.round_bf16(kf, up=True), "amax")
        if lc.labels is not None:
            ch = lc.label_channels[None, :, None, :].expand(self.batch, -1, t, -1)
            lab = kf.view(self.batch, self.kv_heads, t, -1).gather(-1, ch)
            lc.labels.flatten(0, 1)[flat] = lab.reshape(flat.numel(), -1).to(lc.labels.dtype)
        lc.lengths += t
        lc.host_lengths += t
        lc.seen = seen
        lc.next_pos.copy_(pos[:, -1] + 1)

    def _write_kv(self, lc: LayerCache, flat: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store k, v (N, D) at pool slots ``flat`` (N,), quantised in an FP8 cache; returns the
        float32 keys as stored (for the page summaries and labels)."""
        if self.kv_dtype == "fp8":
            q8, sc = quantize_fp8(torch.stack([k, v]))  # K and V in one pass: fewer launches
            lc.k_scale.view(-1)[flat], lc.v_scale.view(-1)[flat] = sc[0], sc[1]
            k, v = q8[0], q8[1]
            kf = self._dequant(k, sc[0])
        else:
            kf = k.float()
        _raw(lc.k_pages).flatten(0, 1)[flat] = _raw(k)
        _raw(lc.v_pages).flatten(0, 1)[flat] = _raw(v)
        return kf

    def _fused(self, lc: LayerCache, k: Tensor, v: Tensor) -> bool:
        """Whether `append` can take the one-launch decode path (`kernels.cache_append`) for a
        default-positioned token: one token, no label channels, a Triton device, and the layouts
        that kernel indexes."""
        scales = [t for t in (lc.k_scale, lc.v_scale) if t is not None]
        return (
            (k.is_cuda or INTERPRET)
            and k.shape[2] == 1
            and lc.labels is None
            and all(t.is_contiguous() for t in scales)
            and k.stride(-1) == 1
            and v.stride(-1) == 1
            and all(t.is_contiguous() for t in (lc.k_pages, lc.v_pages, lc.positions))
            and all(t.is_contiguous() for t in (lc.key_min, lc.key_max, lc.lengths, lc.next_pos))
            and (lc.log_weight is None or lc.log_weight.is_contiguous())
            and lc.page_table.stride(-1) == 1
            and self.head_dim & (self.head_dim - 1) == 0
        )

    def compact(self, layer: int, kept: Kept) -> None:
        """Keep, per head, only the entries ``kept`` lists (indices into the head's current order),
        in order, with its stored extras inserted by position: they move into the head's first
        pages (only entries not already in place move); the head's other pages return to the
        free list."""
        ref.check_layer(layer, self.num_layers)
        lc, ps = self.layers[layer], self.page_size
        stored = ref.check_kept(
            kept, lc.host_lengths, lc.seen, self.dtype, self.head_dim, self.device
        )
        self.version += 1
        width = kept.idx.shape[-1]
        slot = torch.arange(width, device=self.device)
        table = lc.page_table.long()
        cap = table.shape[-1] * ps - 1  # padding columns past the table: clamped, then dropped
        src_t = kept.idx.long().clamp(0, cap)
        src = table.gather(-1, src_t // ps) * ps + src_t % ps
        kept_ok = slot < kept.count[..., None]
        dst_t = slot.expand_as(src_t)
        extras = bool(stored.any())
        if extras:
            extra_ok = (
                torch.arange(kept.extra_weight.shape[-1], device=self.device)
                < stored.to(self.device)[..., None]
            )
            kept_pos, extra_pos = lc.positions.view(-1)[src], kept.extra_positions
            # an extra goes after the kept entries of its position, and so after its earlier extras
            before = (extra_pos[..., None, :] < kept_pos[..., :, None]) & extra_ok[..., None, :]
            dst_t = dst_t + before.sum(-1)
            upto = (kept_pos[..., None, :] <= extra_pos[..., :, None]) & kept_ok[..., None, :]
            extra_t = torch.arange(extra_pos.shape[-1], device=self.device) + upto.sum(-1)
        dst_t = dst_t.clamp(max=cap)
        dst = table.gather(-1, dst_t // ps) * ps + dst_t % ps
        move = kept_ok & (src != dst)
        src, dst = src[move], dst[move]
        for t in lc.slot_tensors():
            t[dst] = t[src]  # the right side is gathered into a new tensor first: overlap is safe
        if extras:  # into slots no kept entry moved to
            self._write_extras(lc, kept, extra_ok, table, extra_t.clamp(max=cap))
        lc.host_lengths = kept.count.long().cpu() + stored
        lc.host_pages = cdiv(lc.host_lengths, ps)
        lc.lengths.copy_(lc.host_lengths)
        drop = (
            torch.arange(table.shape[-1], device=self.device)
            >= lc.host_pages.to(self.device)[..., None]
        )
        freed = lc.page_table[drop & (lc.page_table >= 0)].long()
        lc.page_table.masked_fill_(drop, -1)
        lc.free = torch.cat([freed, lc.free])  # freed pages are reused first
        self._refresh_summaries(lc)
        lc.weighted_pages = None if lc.log_weight is None else self._weighted_pages(lc)

    def _weighted_pages(self, lc: LayerCache) -> Tensor | None:
        """int32 (B, H_kv, E): the logical pages holding a token of nonzero log weight, ascending,
        -1 padded; None where no head holds one. Only compaction stores such tokens, so it is
        computed there (one host read of the width)."""
        heavy = self._log_weights(lc, *self._slots(lc)) != 0  # [B, H, L]
        b, h, n = heavy.shape
        if n == 0:  # every head compacted to nothing
            return None
        p = cdiv(n, self.page_size)
        heavy = F.pad(heavy, (0, p * self.page_size - n)).view(b, h, p, self.page_size).any(-1)
        width = int(heavy.sum(-1).max())
        if width == 0:
            return None
        pages = torch.where(heavy, torch.arange(p, device=self.device), p)
        pages = pages.sort(-1).values[..., :width]
        return torch.where(pages < p, pages, -1).int()

    def _write_extras(
        self, lc: LayerCache, kept: Kept, stored: Tensor, table: Tensor, index: Tensor
    ) -> None:
        """Store the extras ``stored`` marks (bool (B, H_kv, E)) at head entries ``index``:
        keys and values (quantised in an FP8 cache), positions, labels and log weights."""
        ps = self.page_size
        flat = (table.gather(-1, index // ps) * ps + index % ps)[stored]
        if lc.log_weight is None:
            lc.log_weight = self._pool(lc.k_pages.shape[0], ps, dtype=torch.float32, fill=0)
        kf = self._write_kv(lc, flat, kept.extra_keys[stored], kept.extra_values[stored])
        lc.positions.view(-1)[flat] = kept.extra_positions[stored]
        lc.log_weight.view(-1)[flat] = kept.extra_weight[stored].log()
        if lc.labels is not None:
            heads = torch.arange(self.kv_heads, device=self.device)[None, :, None]
            ch = lc.label_channels[heads.expand_as(stored)[stored]]  # [N, R]
            lc.labels.flatten(0, 1)[flat] = kf.gather(-1, ch).to(lc.labels.dtype)

    def shrink(self, layer: int | None = None) -> None:
        """Re-allocate the pool of ``layer`` (default: every layer) to exactly the pages in use."""
        layers = self._layer_range(layer)  # checked before anything changes
        self.version += 1
        for i in layers:
            lc = self.layers[i]
            used = lc.page_table >= 0
            pages = lc.page_table[used].long()
            for name, t in lc.page_tensors().items():
                setattr(lc, name, t[pages])  # advanced indexing: a fresh, exactly sized tensor
            width = max(int(lc.host_pages.max()), 1)
            # page_table[used] lists the kept pages in the order they were just copied
            lc.page_table[used] = torch.arange(pages.numel(), device=self.device, dtype=torch.int32)
            lc.page_table = lc.page_table[..., :width].contiguous()
            lc.free = lc.free[:0]

    def set_label_channels(self, layer: int, channels: Tensor) -> None:
        """Store channels ``channels`` int64 (H_kv, R) of every key of ``layer`` (Double Sparsity's
        label cache), from now on and for the tokens already cached."""
        ref.check_layer(layer, self.num_layers)
        ref.check_label_channels(channels, self.kv_heads, self.head_dim, self.device)
        lc, ps = self.layers[layer], self.page_size
        self.version += 1
        lc.label_channels = channels.clone()
        lc.labels = self._pool(lc.k_pages.shape[0], ps, channels.shape[1], dtype=self.dtype, fill=0)
        used = lc.page_table >= 0
        pages = lc.page_table[used].long()
        heads = torch.arange(self.kv_heads, device=self.device)[None, :, None].expand_as(used)[used]
        ks = None if lc.k_scale is None else lc.k_scale[pages]
        keys = self._dequant(lc.k_pages[pages], ks)  # [N, ps, D]
        ch = channels[heads][:, None, :].expand(-1, ps, -1)
        lc.labels[pages] = keys.gather(-1, ch).to(self.dtype)

    def gather(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """Padded keys, values (B, H_kv, L, D) in the model dtype (zeros past a head's length,
        L = the longest head) and lengths int32 (B, H_kv)."""
        ref.check_layer(layer, self.num_layers)
        keys, values, _, _ = self._gather(self.layers[layer])
        return keys, values, self.layers[layer].lengths.clone()

    def log_weights(self, layer: int) -> Tensor | None:
        """float32 (B, H_kv, L) log weight of every entry, padded like `gather` (0 past a head's
        length), or None when the layer holds no weighted token."""
        ref.check_layer(layer, self.num_layers)
        lc = self.layers[layer]
        return None if lc.log_weight is None else self._log_weights(lc, *self._slots(lc))

    def _log_weights(self, lc: LayerCache, flat: Tensor, ok: Tensor) -> Tensor:
        """The log weights of the entries at pool slots ``flat``, 0 where not ``ok``."""
        return lc.log_weight.view(-1)[flat].masked_fill(~ok, 0)

    def _slots(self, lc: LayerCache) -> tuple[Tensor, Tensor]:
        """Pool slot of every head entry, padded to the longest head (B, H_kv, L), and which
        entries are valid."""
        ps, longest = self.page_size, int(lc.host_lengths.max())
        tok = torch.arange(longest, device=self.device)
        ok = tok < lc.lengths[..., None]  # [B, H, L]
        phys = lc.page_table.gather(-1, (tok // ps).expand(*ok.shape)).long().clamp(min=0)
        return phys * ps + tok % ps, ok

    def _gather(self, lc: LayerCache) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        flat, ok = self._slots(lc)
        out = []
        for data, scale in ((lc.k_pages, lc.k_scale), (lc.v_pages, lc.v_scale)):
            sc = None if scale is None else scale.view(-1)[flat]
            x = self._dequant(_raw(data).flatten(0, 1)[flat].view(data.dtype), sc)
            out.append(x.masked_fill(~ok[..., None], 0).to(self.dtype))
        positions = lc.positions.view(-1)[flat].masked_fill(~ok, -1)
        lw = None if lc.log_weight is None else self._log_weights(lc, flat, ok)
        return out[0], out[1], positions, lw

    def kv_view(self, layer: int, queries: Tensor, query_positions: Tensor) -> KVView:
        """What a KV policy sees of ``layer``: a padded copy, positions -1 past a head's end."""

        ref.check_layer(layer, self.num_layers)
        ref.check_queries(
            queries, query_positions, self.batch, self.kv_heads, self.head_dim, self.device
        )
        keys, values, pos, lw = self._gather(self.layers[layer])
        n = self.layers[layer].lengths.clone()
        return KVView(
            keys, values, pos, n, queries, query_positions, layer, self.num_layers, log_weights=lw
        )

    def page_view(self, layer: int, scale: float | None = None) -> PageView:
        """What a decode selector sees of ``layer``: the page summaries' pools and the page table
        (no copies), labels per head (0 past its tokens), and the attention's softmax ``scale``
        (None: 1/sqrt(D)). The view and ``keys()`` (which reads the pool when called) are valid
        until the layer's next append or compaction."""

        ref.check_layer(layer, self.num_layers)
        lc, ps = self.layers[layer], self.page_size
        count = cdiv(lc.lengths, ps)
        width = int(lc.host_pages.max())  # reserved pages too: a captured graph sees them fill
        table = lc.page_table[..., :width]
        labels = None
        if lc.labels is not None:
            tok = torch.arange(width * ps, device=self.device).view(width, ps)
            dead = tok >= lc.lengths[..., None, None]  # [B, H, P, ps]
            labels = lc.labels[table.long().clamp(min=0)].masked_fill(dead[..., None], 0)

        def keys() -> Tensor:  # (B, H_kv, P, ps, D), read only by selectors that need it
            rows = table.long().clamp(min=0)
            sc = None if lc.k_scale is None else lc.k_scale[rows]
            return self._dequant(lc.k_pages[rows], sc).to(self.dtype)

        n, ch = lc.lengths, lc.label_channels  # no copy: valid until the next append
        return PageView(
            lc.key_min, lc.key_max, table, count, ps, n, labels, layer, len(self), ch, keys,
            weighted_pages=lc.weighted_pages, scale=scale,
        )  # fmt: skip

    def kernel_args(self, layer: int) -> KernelArgs:
        """The pool and tables of ``layer`` as the decode kernel takes them (no copies)."""
        ref.check_layer(layer, self.num_layers)
        lc = self.layers[layer]
        return KernelArgs(
            lc.k_pages, lc.v_pages, lc.page_table, lc.lengths, lc.k_scale, lc.v_scale, lc.log_weight
        )

    def head_tokens(self, layer: int) -> Tensor:
        """Tokens each head holds: int64 (B, H_kv) on the CPU (no device sync)."""
        ref.check_layer(layer, self.num_layers)
        return self.layers[layer].host_lengths.clone()

    def page_bytes(self, layer: int) -> int:
        """Bytes of one page of ``layer``: K, V, scales, positions, summaries, labels and log
        weights (the last three once the layer holds them)."""
        ref.check_layer(layer, self.num_layers)
        tensors = self.layers[layer].page_tensors().values()
        return sum(t.shape[1:].numel() * t.element_size() for t in tensors)

    def memory_bytes(self, layer: int | None = None) -> int:
        """Bytes of the pages heads hold (ceil(length / page_size) each) in ``layer`` or all."""
        held = [
            int(cdiv(self.layers[i].host_lengths, self.page_size).sum()) for i in range(len(self))
        ]
        return sum(held[i] * self.page_bytes(i) for i in self._layer_range(layer))

    def ahead_bytes(self, layer: int | None = None) -> int:
        """Bytes of the pages heads were given ahead of their tokens (`reserve`: a CUDA graph of
        decode steps writes them) in ``layer`` or all: not in `memory_bytes`, in
        `reserved_bytes`."""
        ps = self.page_size
        ahead = [int((lc.host_pages - cdiv(lc.host_lengths, ps)).sum()) for lc in self.layers]
        return sum(ahead[i] * self.page_bytes(i) for i in self._layer_range(layer))

    def reserved_bytes(self, layer: int | None = None) -> int:
        """Bytes of the allocated pools, free pages included (what `shrink` gives back)."""
        return sum(
            self.layers[i].k_pages.shape[0] * self.page_bytes(i) for i in self._layer_range(layer)
        )

    def seq_length(self, layer: int | None = None) -> int:
        """Positions seen (the longest batch row), in ``layer`` or any layer; eviction keeps it."""
        return max(int(self.layers[i].seen.max()) for i in self._layer_range(layer))

    def reset(self) -> None:
        """Empty every layer and release its pool; label channels are kept."""
        self.version += 1
        for i, lc in enumerate(self.layers):
            self.layers[i] = self._empty_layer()
            if lc.label_channels is not None:
                self.set_label_channels(i, lc.label_channels)

    def validate(self) -> Cache:
        """Check the bookkeeping invariants (syncs; for tests and debugging); returns self."""
        for i, lc in enumerate(self.layers):
            pages = lc.k_pages.shape[0]
            if not torch.equal(lc.lengths.long().cpu(), lc.host_lengths):
                raise ValueError(f"layer {i}: lengths disagree with their host mirror")
            if (lc.host_pages < cdiv(lc.host_lengths, self.page_size)).any():
                raise ValueError(f"layer {i}: heads hold tokens past their pages")
            used = torch.arange(lc.page_table.shape[-1]) < lc.host_pages[..., None]
            table = lc.page_table.long().cpu()
            if not ((table[used] >= 0) & (table[used] < pages)).all() or (table[~used] != -1).any():
                raise ValueError(f"layer {i}: page_table entries disagree with the lengths")
            held = torch.cat([table[used], lc.free.cpu()])
            if held.numel() != pages or not torch.equal(held.sort().values, torch.arange(pages)):
                raise ValueError(f"layer {i}: pages in use + free pages are not the pool, once")
        return self

    def _layer_range(self, layer: int | None) -> range:
        if layer is None:
            return range(self.num_layers)
        ref.check_layer(layer, self.num_layers)
        return range(layer, layer + 1)
