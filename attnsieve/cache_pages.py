"""One layer of the paged cache (`LayerCache`): its pool and tables, FP8 storage, and the
operations on its pages that `attnsieve.cache.Cache` composes.

Per layer (`LayerCache`; `kernels/decode.py` reads exactly this):

- ``k_pages``, ``v_pages``: (num_pages, page_size, D) pool, in the model dtype or float8_e4m3fn
  (``kv_dtype="fp8"``), then ``k_scale``, ``v_scale``: float32 (num_pages, page_size) per-token
  scales (value = fp8 * scale, the smallest power of two at or above absmax over D / 448;
  `kernels.decode_reference.fp8_scales`); else None.
- ``page_table``: int32 (B, H_kv, max_pages), the physical page of each logical page, -1 unused.
- ``lengths``: int32 (B, H_kv) valid tokens per head. Token t of a head lives at
  ``page_table[b, h, t // page_size]``, slot ``t % page_size``.
- ``positions``: int64 (num_pages, page_size) absolute position of each stored token.
- ``key_min``, ``key_max``: bfloat16 (num_pages, D) channel-wise min / max of a page's stored keys
  (dequantised when FP8), rounded outward (`cache_reference.round_bf16`), +inf / -inf for an
  empty page.
- ``labels``: (num_pages, page_size, R) the label channels of every stored key (Double Sparsity),
  once `Cache.set_label_channels` gave the layer its channels; else None.
- ``log_weight``: float32 (num_pages, page_size), the natural log of how many tokens each stored
  token stands for (0 for a plain token), which attention adds to its logit, once a compaction
  stored a compensation token (RazorAttention) in the layer; else None.

The pool grows geometrically on demand (`take`) and hands out free pages from the front of its
free list; `write_kv` stores tokens (quantised in an FP8 cache), `refresh_summaries` recomputes the
page summaries and `slots` finds the pool slot of every head entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from attnsieve import cache_reference as ref
from attnsieve.kernels.decode_reference import FP8, quantize_fp8


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
        return [raw(t).flatten(0, 1) for t in (*ts, self.log_weight) if t is not None]


def raw(t: Tensor) -> Tensor:
    """FP8 data moves as bytes: not every device implements indexing for float8."""
    return t.view(torch.uint8) if t.dtype == FP8 else t


def dequant(data: Tensor, scale: Tensor | None) -> Tensor:
    """float32 values of stored K or V (data (..., D), scale (...))."""
    return data.float() if scale is None else data.float() * scale[..., None]


def pool(
    n: int, *rest: int, dtype: torch.dtype, device: torch.device, fill: float | None = None
) -> Tensor:
    """A (n, *rest) tensor on ``device``: uninitialised, or ``fill`` everywhere."""
    if fill is None:
        return torch.empty(n, *rest, dtype=dtype, device=device)
    return torch.full((n, *rest), fill, dtype=dtype, device=device)


def empty_layer(
    batch: int,
    kv_heads: int,
    head_dim: int,
    page_size: int,
    *,
    dtype: torch.dtype,
    kv_dtype: str | None,
    device: torch.device,
) -> LayerCache:
    """A layer that holds no token: empty pools (FP8 ones with their scales when ``kv_dtype`` is
    "fp8"), a page table of one unused column, zero lengths."""
    ps, d, b, h = page_size, head_dim, batch, kv_heads
    fp8 = kv_dtype == "fp8"
    store = FP8 if fp8 else dtype
    scale = (lambda: pool(0, ps, dtype=torch.float32, device=device)) if fp8 else (lambda: None)
    return LayerCache(
        k_pages=pool(0, ps, d, dtype=store, device=device),
        v_pages=pool(0, ps, d, dtype=store, device=device),
        k_scale=scale(),
        v_scale=scale(),
        positions=pool(0, ps, dtype=torch.int64, device=device),
        key_min=pool(0, d, dtype=ref.SUMMARY_DTYPE, device=device),
        key_max=pool(0, d, dtype=ref.SUMMARY_DTYPE, device=device),
        labels=None,
        label_channels=None,
        log_weight=None,
        weighted_pages=None,
        page_table=torch.full((b, h, 1), -1, dtype=torch.int32, device=device),
        lengths=torch.zeros(b, h, dtype=torch.int32, device=device),
        host_lengths=torch.zeros(b, h, dtype=torch.int64),
        host_pages=torch.zeros(b, h, dtype=torch.int64),
        seen=torch.zeros(b, dtype=torch.int64),
        next_pos=torch.zeros(b, dtype=torch.int64, device=device),
        free=torch.zeros(0, dtype=torch.int64, device=device),
    )


def take(lc: LayerCache, n: int, device: torch.device) -> Tensor:
    """``n`` free page ids (int64, on the device), growing the pool by half when short."""
    short = n - lc.free.numel()
    if short > 0:
        old = lc.k_pages.shape[0]
        grow = max(short, old // 2)  # geometric: O(1) amortised copies, <= 50 % slack
        for name, t in lc.page_tensors().items():
            setattr(
                lc, name, torch.cat([t, pool(grow, *t.shape[1:], dtype=t.dtype, device=device)])
            )
        lc.free = torch.cat([lc.free, torch.arange(old, old + grow, device=device)])
    pages, lc.free = lc.free[:n], lc.free[n:]
    return pages


def ensure_table(lc: LayerCache, max_pages: int) -> None:
    """Widen the page table (at least doubling it, -1 padded) to ``max_pages`` columns."""
    have = lc.page_table.shape[-1]
    if max_pages > have:
        pad = torch.full_like(lc.page_table[..., :1], -1).expand(
            -1, -1, max(max_pages, 2 * have) - have
        )
        lc.page_table = torch.cat([lc.page_table, pad], -1)


def refresh_summaries(lc: LayerCache, page_size: int, device: torch.device) -> None:
    """Recompute key_min / key_max of every page in use from its valid slots."""
    ps = page_size
    n = lc.lengths.long()[..., None]
    start = torch.arange(lc.page_table.shape[-1], device=device) * ps
    used = start < n
    pages = lc.page_table[used].long()
    valid = (n - start).clamp(0, ps)[used]
    ks = None if lc.k_scale is None else lc.k_scale[pages]
    keys = dequant(lc.k_pages[pages], ks)  # [N, ps, D]
    dead = (torch.arange(ps, device=device) >= valid[:, None])[..., None]
    lc.key_min[pages] = ref.round_bf16(keys.masked_fill(dead, math.inf).amin(1), up=False)
    lc.key_max[pages] = ref.round_bf16(keys.masked_fill(dead, -math.inf).amax(1), up=True)


def write_kv(lc: LayerCache, flat: Tensor, k: Tensor, v: Tensor, kv_dtype: str | None) -> Tensor:
    """Store k, v (N, D) at pool slots ``flat`` (N,), quantised in an FP8 cache; returns the
    float32 keys as stored (for the page summaries and labels)."""
    if kv_dtype == "fp8":
        q8, sc = quantize_fp8(torch.stack([k, v]))  # K and V in one pass: fewer launches
        lc.k_scale.view(-1)[flat], lc.v_scale.view(-1)[flat] = sc[0], sc[1]
        k, v = q8[0], q8[1]
        kf = dequant(k, sc[0])
    else:
        kf = k.float()
    raw(lc.k_pages).flatten(0, 1)[flat] = raw(k)
    raw(lc.v_pages).flatten(0, 1)[flat] = raw(v)
    return kf


def log_weights(lc: LayerCache, flat: Tensor, ok: Tensor) -> Tensor:
    """The log weights of the entries at pool slots ``flat``, 0 where not ``ok``."""
    return lc.log_weight.view(-1)[flat].masked_fill(~ok, 0)


def slots(lc: LayerCache, page_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pool slot of every head entry, padded to the longest head (B, H_kv, L), and which
    entries are valid."""
    ps, longest = page_size, int(lc.host_lengths.max())
    tok = torch.arange(longest, device=device)
    ok = tok < lc.lengths[..., None]  # [B, H, L]
    phys = lc.page_table.gather(-1, (tok // ps).expand(*ok.shape)).long().clamp(min=0)
    return phys * ps + tok % ps, ok
