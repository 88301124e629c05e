"""`Cache`: the paged KV cache, ragged per KV head, with the page summaries selectors read.

Per layer it holds a `cache_pages.LayerCache`: the pool and tables `kernels/decode.py` reads
(described there, with the operations on its pages); `cache_compact` applies a policy's `Kept`.

The pool grows geometrically on demand and reuses freed pages through a free list; `compact` moves
only the kept tokens into their head's first pages and frees the rest; `shrink` re-allocates the
pool to the pages in use. Page allocation is host bookkeeping over a host mirror of ``lengths``, so
`append` never waits for the device; `compact`, `shrink` and explicit ``positions`` do (once).
`reserve` hands out the pages of the tokens ahead at once, so that a CUDA graph of decode steps
appends into fixed pools and tables (`attnsieve.integrations.decode_graphs`).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor

from attnsieve import cache_reference as ref  # the argument checks both share
from attnsieve.cache_compact import compact_layer
from attnsieve.cache_pages import (
    KernelArgs,
    LayerCache,
    dequant,
    empty_layer,
    ensure_table,
    log_weights,
    pool,
    raw,
    slots,
    take,
    write_kv,
)
from attnsieve.checks import cdiv, check_device, check_int
from attnsieve.kernels import INTERPRET, check_fp8_device
from attnsieve.kernels.cache_append import append_one
from attnsieve.views import Kept, KVView, PageView

P, R = ParamSpec("P"), TypeVar("R")


def normal_tensors(method: Callable[P, R]) -> Callable[P, R]:
    """Run ``method`` with inference mode off and autograd off. Every method that changes the cache
    runs so, and the tensors it stores are normal tensors, which a later call may update in place
    under any mode: PyTorch refuses in-place updates of inference tensors outside
    ``torch.inference_mode()``, so a cache filled under it (attnsieve's decode) could not take a
    prompt chunk under ``torch.no_grad()`` (``model.generate``) after it, nor the reverse."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        if not (torch.is_inference_mode_enabled() or torch.is_grad_enabled()):
            return method(*args, **kwargs)  # already so: the two guards cost ~5 us a call
        with torch.inference_mode(False), torch.no_grad():
            return method(*args, **kwargs)

    return run


class Cache:
    """Paged KV cache of ``num_layers`` layers, ragged per (batch row, KV head).

    Example:
        >>> cache = Cache(2, batch=1, kv_heads=2, head_dim=64, dtype=torch.float16, device="cuda")
        >>> cache.append(0, k, v)            # k, v: (1, 2, T, 64); all heads grow by T
        >>> cache.compact(0, policy.compress(cache.kv_view(0, q_window, q_positions)))
        >>> attnsieve.api.decode_attention(q, cache, 0)  # all of kernel_args(0), log weights too
    """

    @normal_tensors
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
        self.device = check_device(device)
        if kv_dtype is not None:
            check_fp8_device("kv_dtype", self.device)
        # A CPU cache appends by the PyTorch path, as every op's "auto" backend runs the reference
        # on CPU: the interpreted kernel took ~60 ms a (layer, KV head) and decode step, the bulk
        # of CPU decode; it runs only where $ATTNSIEVE_BACKEND is "triton" (its tests)
        self.append_kernel = self.device.type == "cuda" or (
            INTERPRET and os.environ.get("ATTNSIEVE_BACKEND") == "triton"
        )
        self.layers = [self._empty_layer() for _ in range(num_layers)]
        # bumped whenever a pool, table or page assignment changes: a CUDA graph that captured
        # decode steps is valid while it holds (`attnsieve.integrations.decode_graphs`)
        self.version = 0

    def __len__(self) -> int:
        return self.num_layers

    def _empty_layer(self) -> LayerCache:
        return empty_layer(
            self.batch, self.kv_heads, self.head_dim, self.page_size,
            dtype=self.dtype, kv_dtype=self.kv_dtype, device=self.device,
        )  # fmt: skip

    def _allocate(self, lc: LayerCache, t: int) -> None:
        """Pages for ``t`` more tokens in every head, entered in the page table with empty
        summaries; pages already there (`reserve`) are kept. Sizes come from the host mirrors;
        page ids and indices stay on the device."""
        ps = self.page_size
        last = torch.maximum(cdiv(lc.host_lengths + t, ps), lc.host_pages)
        total = int((last - lc.host_pages).sum())
        ensure_table(lc, int(last.max()))
        if total:
            self.version += 1
            pages = take(lc, total, self.device)
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

    @normal_tensors
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

    @normal_tensors
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

    @normal_tensors
    def set_host_state(self, state: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Restore what `host_state` returned."""
        now = [(lc.host_lengths, lc.host_pages, lc.seen) for lc in self.layers]
        if not isinstance(state, list) or len(state) != len(now):
            raise TypeError(
                f"state: expected host_state's list of {len(now)} layers, got {state!r:.80}"
            )
        for layer, (given, held) in enumerate(zip(state, now, strict=True)):
            if not (
                isinstance(given, tuple)
                and len(given) == 3
                and all(
                    isinstance(t, Tensor)
                    and (t.shape, t.dtype, t.device) == (h.shape, h.dtype, h.device)
                    for t, h in zip(given, held, strict=True)
                )
            ):
                raise ValueError(  # on the CPU: host bookkeeping must never wait for the device
                    f"state[{layer}]: expected host_state's (lengths, pages, seen) of that layer, "
                    "CPU tensors"
                )
        for lc, (lengths, pages, seen) in zip(self.layers, state, strict=True):
            # copies: appends count in place, which would change ``state`` for a later restore
            lc.host_lengths, lc.host_pages, lc.seen = lengths.clone(), pages.clone(), seen.clone()

    @normal_tensors
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
        kf = write_kv(
            lc, flat, k.reshape(-1, self.head_dim), v.reshape(-1, self.head_dim), self.kv_dtype
        )
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

    def _fused(self, lc: LayerCache, k: Tensor, v: Tensor) -> bool:
        """Whether `append` can take the one-launch decode path (`kernels.cache_append`) for a
        default-positioned token: one token, no label channels, a Triton device (`append_kernel`),
        and the layouts that kernel indexes."""
        scales = [t for t in (lc.k_scale, lc.v_scale) if t is not None]
        return (
            self.append_kernel
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

    @normal_tensors
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
        compact_layer(
            lc, kept, stored,
            page_size=ps, kv_heads=self.kv_heads, kv_dtype=self.kv_dtype, device=self.device,
        )  # fmt: skip

    @normal_tensors
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

    @normal_tensors
    def set_label_channels(self, layer: int, channels: Tensor) -> None:
        """Store channels ``channels`` int64 (H_kv, R) of every key of ``layer`` (Double Sparsity's
        label cache), from now on and for the tokens already cached."""
        ref.check_layer(layer, self.num_layers)
        ref.check_label_channels(channels, self.kv_heads, self.head_dim, self.device)
        lc, ps = self.layers[layer], self.page_size
        self.version += 1
        lc.label_channels = channels.clone()
        lc.labels = pool(
            lc.k_pages.shape[0], ps, channels.shape[1], dtype=self.dtype, device=self.device, fill=0
        )
        used = lc.page_table >= 0
        pages = lc.page_table[used].long()
        heads = torch.arange(self.kv_heads, device=self.device)[None, :, None].expand_as(used)[used]
        ks = None if lc.k_scale is None else lc.k_scale[pages]
        keys = dequant(lc.k_pages[pages], ks)  # [N, ps, D]
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
        length), or None until a compaction stored a compensation token in the layer (zeros once
        a later one dropped it)."""
        ref.check_layer(layer, self.num_layers)
        lc, ps = self.layers[layer], self.page_size
        return None if lc.log_weight is None else log_weights(lc, *slots(lc, ps, self.device))

    def _gather(self, lc: LayerCache) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        flat, ok = slots(lc, self.page_size, self.device)
        out = []
        for data, scale in ((lc.k_pages, lc.k_scale), (lc.v_pages, lc.v_scale)):
            sc = None if scale is None else scale.view(-1)[flat]
            x = dequant(raw(data).flatten(0, 1)[flat].view(data.dtype), sc)
            out.append(x.masked_fill(~ok[..., None], 0).to(self.dtype))
        positions = lc.positions.view(-1)[flat].masked_fill(~ok, -1)
        lw = None if lc.log_weight is None else log_weights(lc, flat, ok)
        return out[0], out[1], positions, lw

    def kv_view(self, layer: int, queries: Tensor, query_positions: Tensor) -> KVView:
        """What a KV policy sees of ``layer``: a padded copy, positions -1 past a head's end.
        ``queries`` (B, H_q, W, D) are in the cache's ``dtype`` (an FP8 cache's too: the policy
        scores them against keys read back in that dtype), ``query_positions`` int64 (B, W)
        >= 0, or -1 for an absent query."""

        ref.check_layer(layer, self.num_layers)
        ref.check_queries(
            queries, query_positions, self.batch, self.kv_heads, self.head_dim, self.device,
            self.dtype,
        )  # fmt: skip
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
            return dequant(lc.k_pages[rows], sc).to(self.dtype)

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

    @normal_tensors
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
