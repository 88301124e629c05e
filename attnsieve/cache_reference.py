"""Reference twin of `attnsieve.cache.Cache`: plain tensors per (layer, batch row, KV head).

It defines what the paged cache means: each head holds a list of (key, value, position, log weight)
in order; `compact` keeps the listed entries and inserts the extras (`Kept`) by position, each with
the log of its weight (plain tokens: 0); a page is ``page_size`` consecutive entries of a head, and
its summary the channel-wise min / max of its keys, in bfloat16 rounded outward (`round_bf16`). FP8
stores ``fp8(x / scale) * scale`` with one scale per token: the smallest power of two at or above
absmax over D / 448 (`attnsieve.kernels.decode_reference.fp8_scales`). The argument
checks both share live here (as the kernels' twins hold theirs).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.checks import (
    cdiv,
    check_device,
    check_index,
    check_int,
    check_pow2,
    check_tensor,
)
from attnsieve.kernels.decode_reference import quantize_fp8
from attnsieve.views import Kept, KVView, PageView

MODEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUMMARY_DTYPE = torch.bfloat16  # page key min / max: half the bytes Quest's scores read


def round_bf16(x: Tensor, up: bool) -> Tensor:
    """float32 x as bfloat16 rounded toward +inf (``up``) or -inf: the nearest bfloat16 that
    stays a bound. bfloat16 is float32's top 16 bits: truncate (toward 0), then step one unit
    away from 0 where that moved the value the wrong way."""
    bits = x.float().contiguous().view(torch.int32)
    truncated = bits & -65536  # 0xFFFF0000: keep sign, exponent and 7 mantissa bits
    t = truncated.view(torch.float32)
    wrong = t < x if up else t > x
    out = torch.where(wrong, (truncated + 65536).view(torch.float32), t)
    return torch.where(x.isnan(), x.float(), out).to(SUMMARY_DTYPE)  # NaN stays NaN


# ---- argument checks, shared with the reference twin ------------------------------------------


def check_layer(layer: object, num_layers: int) -> None:
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < num_layers:
        raise ValueError(f"layer: expected an int in [0, {num_layers}), got {layer!r}")


def check_kv_append(k: object, v: object, shape: tuple[int, int, int], dtype, device) -> None:
    """k, v: (B, H_kv, T >= 1, D) of the cache's batch, heads, head_dim, dtype and device."""
    b, h, d = shape
    for name, t in (("k", k), ("v", v)):
        check_tensor(name, t, 4, "(batch, kv_heads, seq, head_dim)")
        if t.dtype != dtype:
            raise TypeError(f"{name}: expected the cache's dtype {dtype}, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name}: expected the cache's device {device}, got {t.device}")
        n, hh, seq, dd = t.shape
        if (n, hh, dd) != (b, h, d) or seq < 1:
            raise ValueError(
                f"{name}: expected shape ({b}, {h}, T >= 1, {d}), got {tuple(t.shape)}"
            )
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes, got {tuple(k.shape)} and {tuple(v.shape)}")


def check_positions(positions: object, seen: Tensor, t: int, device) -> Tensor:
    """Explicit positions: int64 (B, T), strictly ascending, not before a row's next position.
    Returns them on the CPU (one sync)."""
    check_index("positions", positions, (seen.shape[0], t), torch.int64, device)
    p = positions.cpu()
    if (p[:, 1:] <= p[:, :-1]).any() or (p[:, 0] < seen).any():
        raise ValueError(
            f"positions: expected strictly ascending rows starting at or after each row's next "
            f"position {seen.tolist()}"
        )
    return p


def check_kept(
    kept: object, host_lengths: Tensor, seen: Tensor, dtype, head_dim: int, device
) -> Tensor:
    """Per head: count in [0, length], idx[:count] strictly ascending in [0, length), -1 after;
    the extras (`Kept`) all given or none, at positions the batch row has seen (``seen`` (B,),
    its next position). Returns int64 (B, H_kv) on the CPU: the extras each head stores
    (weight > 0)."""

    if not isinstance(kept, Kept):
        raise TypeError(f"kept: expected a Kept, got {type(kept).__name__}")
    b, h = host_lengths.shape
    if isinstance(kept.idx, Tensor) and kept.idx.dim() != 3:
        raise ValueError(f"kept.idx: expected 3 dims (batch, kv_heads, kept), got {kept.idx.dim()}")
    width = kept.idx.shape[-1] if isinstance(kept.idx, Tensor) else 0
    check_index("kept.idx", kept.idx, (b, h, width), torch.int32, device)
    check_index("kept.count", kept.count, (b, h), torch.int32, device)
    idx, count = kept.idx.cpu().long(), kept.count.cpu().long()
    if ((count < 0) | (count > host_lengths) | (count > idx.shape[-1])).any():
        raise ValueError("kept.count: expected values in [0, min(head length, kept.idx width)]")
    valid = torch.arange(idx.shape[-1]) < count[..., None]
    if (valid & ((idx < 0) | (idx >= host_lengths[..., None]))).any():
        raise ValueError("kept.idx: kept entries must lie in [0, the head's length)")
    if (valid[..., 1:] & (idx[..., 1:] <= idx[..., :-1])).any():
        raise ValueError("kept.idx: kept entries must be strictly ascending")
    if (~valid & (idx != -1)).any():
        raise ValueError("kept.idx: entries past kept.count must be -1")
    stored = _check_extras(kept, b, h, seen, dtype, head_dim, device)
    if (count + stored > host_lengths).any():
        raise ValueError(
            "kept.extra_weight: kept entries plus stored extras must not outnumber a head's "
            "entries before compaction"
        )
    return stored


def _check_extras(kept: Kept, b: int, h: int, seen: Tensor, dtype, head_dim: int, device) -> Tensor:
    """int64 (B, H_kv) extras stored per head (0 without extras), after checking them."""
    extras = {
        "kept.extra_keys": kept.extra_keys,
        "kept.extra_values": kept.extra_values,
        "kept.extra_weight": kept.extra_weight,
        "kept.extra_positions": kept.extra_positions,
    }
    given = [name for name, t in extras.items() if t is not None]
    if not given:
        return torch.zeros(b, h, dtype=torch.int64)
    if len(given) < len(extras):
        raise ValueError(f"{', '.join(extras)}: give all four or none, got only {given}")
    w = kept.extra_weight
    e = w.shape[-1] if isinstance(w, Tensor) and w.dim() == 3 else 0
    check_index("kept.extra_weight", w, (b, h, e), torch.float32, device)
    check_index("kept.extra_positions", kept.extra_positions, (b, h, e), torch.int64, device)
    for name in ("kept.extra_keys", "kept.extra_values"):
        check_index(name, extras[name], (b, h, e, head_dim), dtype, device)
    w, pos = w.cpu(), kept.extra_positions.cpu()
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("kept.extra_weight: expected finite weights >= 0")
    stored = w > 0
    if (stored[..., 1:] & ~stored[..., :-1]).any():
        raise ValueError("kept.extra_weight: the stored extras (weight > 0) must come first")
    if (stored[..., 1:] & (pos[..., 1:] <= pos[..., :-1])).any():
        raise ValueError("kept.extra_positions: stored extras must be strictly ascending")
    if (stored & ((pos < 0) | (pos >= seen[:, None, None]))).any():
        # a later token would land before it: the head's order would break
        raise ValueError(
            f"kept.extra_positions: stored extras must take positions the row has seen, in "
            f"[0, {seen.tolist()})"
        )
    return stored.sum(-1)


def check_queries(
    queries: object, query_positions: object, b: int, h: int, d: int, device, dtype
) -> None:
    """The observation window a KV policy scores with: queries in the cache's attention dtype
    (a policy would cast others silently), their positions >= 0, or -1 for an absent query."""
    check_tensor("queries", queries, 4, "(batch, q_heads, window, head_dim)")
    n, hq, w, dd = queries.shape
    if n != b or dd != d or hq % h or hq == 0 or queries.device != device:
        raise ValueError(
            f"queries: expected ({b}, a positive multiple of {h}, W, {d}) on {device}, got "
            f"{tuple(queries.shape)} on {queries.device}"
        )
    if queries.dtype != dtype:
        raise TypeError(f"queries: expected the cache's dtype {dtype}, got {queries.dtype}")
    check_index("query_positions", query_positions, (b, w), torch.int64, device)
    if bool((query_positions < -1).any()):
        raise ValueError("query_positions: expected positions >= 0, or -1 for an absent query")


def check_label_channels(channels: object, h: int, d: int, device) -> None:
    if isinstance(channels, Tensor) and channels.dim() != 2:
        raise ValueError(f"channels: expected 2 dims (kv_heads, R), got {channels.dim()}")
    check_index(
        "channels",
        channels,
        (h, channels.shape[-1] if isinstance(channels, Tensor) else 0),
        torch.int64,
        device,
    )
    if channels.shape[1] < 1 or ((channels < 0) | (channels >= d)).any():
        raise ValueError(f"channels: expected R >= 1 channel indices in [0, {d})")
    if (channels.sort(-1).values.diff(dim=-1) == 0).any():  # one would count twice in a score
        raise ValueError("channels: expected R distinct channel indices per KV head")


def check_config(num_layers, batch, kv_heads, head_dim, page_size, dtype, kv_dtype) -> None:
    for name, value in (("num_layers", num_layers), ("batch", batch), ("kv_heads", kv_heads)):
        check_int(name, value, 1)
    check_int("head_dim", head_dim, 1)
    check_pow2("page_size", page_size, 8, 256)
    if dtype not in MODEL_DTYPES:
        raise TypeError(f"dtype: expected one of {MODEL_DTYPES}, got {dtype!r}")
    if kv_dtype not in (None, "fp8"):
        raise ValueError(f"kv_dtype: expected None or 'fp8', got {kv_dtype!r}")


class ReferenceCache:
    """Same public methods as `attnsieve.cache.Cache`, slowly and obviously, but those of the pool
    (``kernel_args``, ``validate``, ``page_bytes``, ``reserved_bytes``, ``ahead_bytes``) and of
    CUDA-graph steps (``reserve``, ``reserved_tokens``, ``advance_host``, ``host_state``,
    ``set_host_state``); ``shrink`` does nothing."""

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
        check_config(num_layers, batch, kv_heads, head_dim, page_size, dtype, kv_dtype)
        self.num_layers, self.batch = num_layers, batch
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.page_size, self.dtype, self.kv_dtype = page_size, dtype, kv_dtype
        self.device = check_device(device)
        self._channels: list[Tensor | None] = [None] * num_layers
        self.reset()

    def __len__(self) -> int:
        return self.num_layers

    def reset(self) -> None:
        """Empty every layer; label channels are kept."""
        shape = (self.num_layers, self.batch, self.kv_heads)
        self._k = _nested(shape, lambda: torch.zeros(0, self.head_dim, device=self.device))
        self._v = _nested(shape, lambda: torch.zeros(0, self.head_dim, device=self.device))
        self._pos = _nested(shape, lambda: torch.zeros(0, dtype=torch.int64, device=self.device))
        self._lw = _nested(shape, lambda: torch.zeros(0, device=self.device))  # log weights
        self._weighted = [False] * self.num_layers  # a layer holds log weights once it stored one
        self._seen = [torch.zeros(self.batch, dtype=torch.int64) for _ in range(self.num_layers)]

    def _lengths(self, layer: int) -> Tensor:
        rows = [[len(k) for k in row] for row in self._k[layer]]
        return torch.tensor(rows, dtype=torch.int64)

    def _store(self, x: Tensor) -> Tensor:
        """The float32 value the cache holds for x (T, D)."""
        x = x.float()
        if self.kv_dtype != "fp8":
            return x
        data, scale = quantize_fp8(x)
        return data.float() * scale[..., None]

    def append(self, layer: int, k: Tensor, v: Tensor, positions: Tensor | None = None) -> None:
        check_layer(layer, self.num_layers)
        check_kv_append(k, v, (self.batch, self.kv_heads, self.head_dim), self.dtype, self.device)
        t = k.shape[2]
        if positions is None:
            pos = self._seen[layer][:, None] + torch.arange(t)
        else:
            pos = check_positions(positions, self._seen[layer], t, self.device)
        for b in range(self.batch):
            for h in range(self.kv_heads):
                self._k[layer][b][h] = torch.cat([self._k[layer][b][h], self._store(k[b, h])])
                self._v[layer][b][h] = torch.cat([self._v[layer][b][h], self._store(v[b, h])])
                p = pos[b].to(self.device)
                self._pos[layer][b][h] = torch.cat([self._pos[layer][b][h], p])
                zeros = torch.zeros(t, device=self.device)
                self._lw[layer][b][h] = torch.cat([self._lw[layer][b][h], zeros])
        self._seen[layer] = pos[:, -1] + 1

    def compact(self, layer: int, kept: Kept) -> None:
        check_layer(layer, self.num_layers)
        lengths = self._lengths(layer)
        stored = check_kept(
            kept, lengths, self._seen[layer], self.dtype, self.head_dim, self.device
        )
        stores = (self._k, self._v, self._pos, self._lw)
        for b in range(self.batch):
            for h in range(self.kv_heads):
                keep = kept.idx[b, h, : int(kept.count[b, h])].long()
                k, v, pos, lw = (store[layer][b][h][keep] for store in stores)
                e = int(stored[b, h])
                if e:
                    # extras go after kept entries of their position: sort on (position, is extra)
                    pos = torch.cat([pos, kept.extra_positions[b, h, :e]])
                    is_extra = torch.arange(len(pos), device=self.device) >= len(keep)
                    order = torch.argsort(pos * 2 + is_extra, stable=True)
                    k = torch.cat([k, self._store(kept.extra_keys[b, h, :e])])[order]
                    v = torch.cat([v, self._store(kept.extra_values[b, h, :e])])[order]
                    lw = torch.cat([lw, kept.extra_weight[b, h, :e].log()])[order]
                    pos = pos[order]
                    self._weighted[layer] = True
                for store, x in zip(stores, (k, v, pos, lw), strict=True):
                    store[layer][b][h] = x

    def shrink(self, layer: int | None = None) -> None:
        if layer is not None:
            check_layer(layer, self.num_layers)

    def set_label_channels(self, layer: int, channels: Tensor) -> None:
        check_layer(layer, self.num_layers)
        check_label_channels(channels, self.kv_heads, self.head_dim, self.device)
        self._channels[layer] = channels.clone()

    def _padded(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        n = self._lengths(layer)
        longest = int(n.max())
        b, h, d = self.batch, self.kv_heads, self.head_dim
        keys = torch.zeros(b, h, longest, d, device=self.device)
        values = torch.zeros_like(keys)
        pos = torch.full((b, h, longest), -1, dtype=torch.int64, device=self.device)
        lw = torch.zeros(b, h, longest, device=self.device)
        for i in range(b):
            for j in range(h):
                m = int(n[i, j])
                keys[i, j, :m], values[i, j, :m] = self._k[layer][i][j], self._v[layer][i][j]
                pos[i, j, :m], lw[i, j, :m] = self._pos[layer][i][j], self._lw[layer][i][j]
        lw = lw if self._weighted[layer] else None
        return keys.to(self.dtype), values.to(self.dtype), pos, lw

    def gather(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        check_layer(layer, self.num_layers)
        keys, values, _, _ = self._padded(layer)
        return keys, values, self._lengths(layer).to(torch.int32).to(self.device)

    def log_weights(self, layer: int) -> Tensor | None:
        check_layer(layer, self.num_layers)
        return self._padded(layer)[3]

    def kv_view(self, layer: int, queries: Tensor, query_positions: Tensor) -> KVView:

        check_layer(layer, self.num_layers)
        check_queries(
            queries, query_positions, self.batch, self.kv_heads, self.head_dim, self.device,
            self.dtype,
        )  # fmt: skip
        keys, values, pos, lw = self._padded(layer)
        lengths = self._lengths(layer).to(torch.int32).to(self.device)
        return KVView(
            keys, values, pos, lengths, queries, query_positions, layer, self.num_layers,
            log_weights=lw,
        )  # fmt: skip

    def page_view(self, layer: int, scale: float | None = None) -> PageView:

        check_layer(layer, self.num_layers)
        n, ps, ch = self._lengths(layer), self.page_size, self._channels[layer]
        b, h, d, pages = self.batch, self.kv_heads, self.head_dim, int(cdiv(n.max(), ps))
        kmin = torch.full((b, h, pages, d), math.inf, dtype=SUMMARY_DTYPE, device=self.device)
        kmax = torch.full((b, h, pages, d), -math.inf, dtype=SUMMARY_DTYPE, device=self.device)
        labels = None
        if ch is not None:
            labels = torch.zeros(b, h, pages, ps, ch.shape[1], dtype=self.dtype, device=self.device)
        for i in range(b):
            for j in range(h):
                for p in range(int(cdiv(n[i, j], ps))):
                    chunk = self._k[layer][i][j][p * ps : (p + 1) * ps]
                    kmin[i, j, p] = round_bf16(chunk.amin(0), up=False)
                    kmax[i, j, p] = round_bf16(chunk.amax(0), up=True)
                    if labels is not None:
                        labels[i, j, p, : len(chunk)] = chunk[:, ch[j]].to(self.dtype)
        count = cdiv(n, ps).to(torch.int32).to(self.device)
        lengths = n.to(torch.int32).to(self.device)
        keys = torch.zeros(b, h, pages * ps, d, device=self.device)
        for i in range(b):
            for j in range(h):
                keys[i, j, : int(n[i, j])] = self._k[layer][i][j]
        keys = keys.view(b, h, pages, ps, d).to(self.dtype)
        table = torch.arange(b * h * pages, dtype=torch.int32, device=self.device).view(b, h, pages)
        return PageView(
            kmin.view(-1, d), kmax.view(-1, d), table, count, ps, lengths, labels, layer,
            self.num_layers, ch, lambda: keys, weighted_pages=self._weighted_pages(layer),
            scale=scale,
        )  # fmt: skip

    def _weighted_pages(self, layer: int) -> Tensor | None:
        """Per head, the pages holding a token of nonzero log weight; see `PageView`."""
        heads = [
            [sorted({int(t) // self.page_size for t in torch.nonzero(lw).flatten()}) for lw in row]
            for row in self._lw[layer]
        ]
        width = max(len(pages) for row in heads for pages in row)
        if width == 0:
            return None
        out = torch.full((self.batch, self.kv_heads, width), -1, dtype=torch.int32)
        for i, row in enumerate(heads):
            for j, pages in enumerate(row):
                out[i, j, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
        return out.to(self.device)

    def head_tokens(self, layer: int) -> Tensor:
        check_layer(layer, self.num_layers)
        return self._lengths(layer)

    def memory_bytes(self, layer: int | None = None) -> int:
        """Pages held (ceil(length / page_size) per head) times the bytes of a page."""
        layers = range(self.num_layers) if layer is None else [layer]
        if layer is not None:
            check_layer(layer, self.num_layers)
        ps, d = self.page_size, self.head_dim
        fp8 = self.kv_dtype == "fp8"
        elem = 1 if fp8 else torch.finfo(self.dtype).bits // 8
        total = 0
        for i in layers:
            page = 2 * ps * d * elem + (2 * ps * 4 if fp8 else 0) + ps * 8 + 2 * d * 2
            page += ps * 4 if self._weighted[i] else 0
            if self._channels[i] is not None:
                page += ps * self._channels[i].shape[1] * (torch.finfo(self.dtype).bits // 8)
            total += int(cdiv(self._lengths(i), ps).sum()) * page
        return total

    def seq_length(self, layer: int | None = None) -> int:
        layers = range(self.num_layers) if layer is None else [layer]
        if layer is not None:
            check_layer(layer, self.num_layers)
        return max(int(self._seen[i].max()) for i in layers)


def _nested(shape: tuple[int, int, int], make) -> list:
    return [[[make() for _ in range(shape[2])] for _ in range(shape[1])] for _ in range(shape[0])]
