"""A transformers (>= 5) `Cache` over attnsieve's paged, per-head ragged `attnsieve.cache.Cache`.

    >>> cache = AttnsieveCache(model.config.num_hidden_layers, materialize=True)
    >>> model.generate(input_ids, past_key_values=cache, max_new_tokens=20)

(transformers 5.2x names the argument ``cache`` and warns on ``past_key_values``; both work.)

The paged cache is built on the first ``update`` (batch, KV heads, head_dim, dtype and device come
from the keys) unless one is passed in. What ``update`` returns to the attention function:

- a prompt chunk (a multi-token call, or any call while ``prompt`` is set): the layer's cached
  K/V, then the chunk's; the chunk's own only where attnsieve's attention reads the cached ones
  from the pages itself (the live session's cache, ``reader``: a chunk of one token, or a layer
  the session compressed), or where an eviction left the heads without some of the positions
  seen (plain attention masks by position: only attnsieve's attention can serve the chunk, and
  any other cache refuses it);
- a single-token (decode) call: that token's K/V only, for attnsieve's decode attention, which
  reads the pages itself (the cache of a patched model's live session, ``reader``; any other is
  refused, since plain attention would see that token alone); or, with ``materialize=True``,
  every cached K/V of the layer, for plain attention (SDPA / eager).

Sequence lengths and mask sizes follow the absolute positions seen, not the compressed length,
so RoPE positions stay right after eviction. Plain attention (``materialize=True``) reads a layer
as one dense tensor under the mask transformers builds over those positions (eager attention, a
padded batch), which a compressed layer no longer matches: its heads keep different positions,
ragged heads would need padding (which would take part in the softmax), a compensation token its
weight. A call on a layer whose heads do not hold exactly the positions seen is refused there,
before it changes anything; attnsieve's own attention (``materialize=False``) reads such a layer.

Extension point: ``on_prefill_end``, a callable ``(layer) -> None`` set by its owner (the KV-policy
integration), runs once per layer at that layer's first decode call after a prefill, before the
new token is appended: the prefill attention has run (its queries could be recorded) and the cache
holds exactly the prompt, so compressing it there is safe.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import Cache as HFCache
from transformers.cache_utils import CacheLayerMixin

from attnsieve import cache_reference as ref
from attnsieve.cache import Cache
from attnsieve.checks import check_int, check_pow2, check_tensor


class _Layer(CacheLayerMixin):
    """One layer as transformers sees it; the data live in the owner's paged cache."""

    is_sliding = False
    supports_early_init = False  # the paged cache is built on the first update

    def __init__(self, owner: AttnsieveCache, layer: int) -> None:
        # CacheLayerMixin.__init__ would set is_initialized, a property here
        self.keys = self.values = None
        self._owner, self._layer = owner, layer

    @property
    def is_initialized(self) -> bool:
        return self._owner.cache is not None

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        pass

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any):
        return self._owner.update(key_states, value_states, self._layer)

    def get_seq_length(self) -> int:
        cache = self._owner.cache
        return 0 if cache is None else cache.seq_length(self._layer)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0  # (kv_length, kv_offset)

    def get_max_length(self) -> int:
        return -1  # grows without bound

    def reset(self) -> None:
        pass  # AttnsieveCache.reset empties every layer at once

    def offload(self) -> None:
        raise NotImplementedError("AttnsieveCache: offloading is not supported")

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError("AttnsieveCache: beam search is not supported")

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove != 0:
            raise NotImplementedError("AttnsieveCache: crop (assisted decoding) is not supported")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("AttnsieveCache: expanding the batch is not supported")

    def batch_select_indices(self, indices: Tensor) -> None:
        raise NotImplementedError("AttnsieveCache: selecting batch rows is not supported")


class AttnsieveCache(HFCache):
    """transformers `Cache` of ``num_layers`` layers stored in an `attnsieve.cache.Cache`.

    Args:
        num_layers: decoder layers of the model (``config.num_hidden_layers``).
        page_size, kv_dtype: passed to the paged cache (``kv_dtype="fp8"`` stores FP8 pages); with
            ``cache``, its own (anything else is refused).
        materialize: decode calls return every cached K/V (plain attention) instead of the new
            token's only (attnsieve's paged decode attention).
        cache: an existing paged cache to fill instead of building one on the first update.
    """

    def __init__(
        self,
        num_layers: int,
        *,
        page_size: int = 16,
        kv_dtype: str | None = None,
        materialize: bool = False,
        cache: Cache | None = None,
    ) -> None:
        check_int("num_layers", num_layers, 1)
        check_pow2("page_size", page_size, 8, 256)
        if kv_dtype not in (None, "fp8"):
            raise ValueError(f"kv_dtype: expected None or 'fp8', got {kv_dtype!r}")
        if not isinstance(materialize, bool):
            raise TypeError(f"materialize: expected a bool, got {type(materialize).__name__}")
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache: expected an attnsieve.cache.Cache, got {type(cache).__name__}")
        if cache is not None and len(cache) != num_layers:
            raise ValueError(f"cache: has {len(cache)} layers, expected num_layers={num_layers}")
        if cache is not None and (cache.page_size, cache.kv_dtype) != (page_size, kv_dtype):
            raise ValueError(  # they would be silently ignored: the given cache keeps its own
                f"page_size, kv_dtype: the given cache has {cache.page_size}, "
                f"{cache.kv_dtype!r}; got {page_size}, {kv_dtype!r}"
            )
        super().__init__(layers=[_Layer(self, i) for i in range(num_layers)])
        self.num_layers, self.page_size, self.kv_dtype = num_layers, page_size, kv_dtype
        self.materialize = materialize
        self.cache = cache
        self.on_prefill_end: Callable[[int], None] | None = None
        # the paged session whose attention reads the pages at a decode step and in a prompt
        # chunk on a layer it reads as ragged (`ragged(layer)`; `PatchHandle.new_cache` sets it):
        # without one, or once it has ended, the new token's K/V alone would reach plain
        # attention, which would attend to that token only
        self.reader: Any = None
        # set by a caller while it feeds a prompt in chunks: a chunk of one token is prompt too,
        # where an update of one token otherwise reads as a decode step (which ends the prompt)
        self.prompt = False
        self._prefilled: set[int] = set()  # layers whose last call was a prefill
        self.returned: dict[int, weakref.ref[Tensor]] = {}  # layer -> its last update's keys

    def update(
        self,
        key_states: Tensor,
        value_states: Tensor,
        layer_idx: int,
        cache_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        """Append (B, H_kv, T, D) keys / values to layer ``layer_idx``; return what its attention
        reads (see the module docstring)."""
        ref.check_layer(layer_idx, self.num_layers)
        check_tensor("key_states", key_states, 4, "(batch, kv_heads, seq, head_dim)")
        if self.cache is None:
            if key_states.dtype not in ref.MODEL_DTYPES:  # the cache would name its ``dtype``
                raise TypeError(
                    f"key_states: expected one of {ref.MODEL_DTYPES}, got {key_states.dtype}"
                )
            b, h, _, d = key_states.shape
            dtype, device = key_states.dtype, key_states.device
            # before the cache is built: a refused first call leaves none
            ref.check_kv_append(key_states, value_states, (b, h, d), dtype, device)
            self.cache = Cache(
                self.num_layers, b, h, d, page_size=self.page_size, dtype=dtype, device=device,
                kv_dtype=self.kv_dtype,
            )  # fmt: skip
        prefill = key_states.shape[2] > 1 or self.prompt
        # without a live session, attnsieve's attention does not read the pages: what this call
        # returns is all that plain attention sees (checked before anything changes)
        unread = not self.materialize and (self.reader is None or self.reader.ended)
        if unread and not prefill:
            raise _unread("a decode step")
        if self.materialize:
            self._check_dense(layer_idx)
        if not prefill and layer_idx in self._prefilled:
            # the step's K/V first: ``on_prefill_end`` compresses the prompt, which a refused
            # step must leave as it was
            c = self.cache
            ref.check_kv_append(
                key_states, value_states, (c.batch, c.kv_heads, c.head_dim), c.dtype, c.device
            )
            self._prefilled.discard(layer_idx)
            if self.on_prefill_end is not None:
                self.on_prefill_end(layer_idx)
        past = None
        tokens = key_states.shape[2]
        if prefill and self.cache.seq_length(layer_idx) and not self._paged(layer_idx, tokens):
            # plain attention reads the cached K/V only where every head holds every position
            if self._whole(layer_idx):
                past = self._dense(layer_idx)
            elif unread:
                raise _unread("a prompt chunk after an eviction")
        self.cache.append(layer_idx, key_states, value_states)
        if prefill:
            self._prefilled.add(layer_idx)
            out = (key_states, value_states) if past is None else (
                torch.cat([past[0], key_states], 2), torch.cat([past[1], value_states], 2)
            )  # fmt: skip
        elif self.materialize:
            out = self._dense(layer_idx)
        else:
            out = (key_states, value_states)
        # lets attnsieve's attention recognise this cache; weakly: a strong reference would keep
        # every layer's prompt keys (or, materialised, all its keys) alive after the call
        self.returned[layer_idx] = weakref.ref(out[0])
        return out

    @property
    def is_initialized(self) -> bool:
        """Whether a first update built the paged cache; transformers' own property counts only
        layers that support early initialisation (none here), so it always said False, which
        models such as PaliGemma read as "the first iteration"."""
        return self.cache is not None

    def finish_prefill(self) -> None:
        """Run ``on_prefill_end`` now for every layer whose last call was a prefill, as its next
        decode call would (the cache holds exactly the prompt either way)."""
        for layer in sorted(self._prefilled):
            self._prefilled.discard(layer)
            if self.on_prefill_end is not None:
                self.on_prefill_end(layer)

    def _paged(self, layer: int, tokens: int) -> bool:
        """Whether attnsieve's attention reads the cached K/V of a call of ``tokens`` tokens from
        the pages itself (`integrations.paged`), needing the call's own only: the live session's
        cache, and a call of one token or a layer the session reads as ragged."""
        live = not self.materialize and self.reader is not None and not self.reader.ended
        return live and (tokens == 1 or self.reader.ragged(layer))

    def _whole(self, layer: int) -> bool:
        """Whether every head of ``layer`` holds exactly the positions seen, none of them
        weighted: what plain attention reads under the mask transformers builds over them."""
        n, seen = self.cache.head_tokens(layer), self.cache.seq_length(layer)
        return bool((n == seen).all()) and not self.cache.layers[layer].weighted

    def _check_dense(self, layer: int) -> None:
        """Plain attention (``materialize=True``) reads the layer as one dense tensor, under the
        mask transformers may build over the positions seen (it does for eager attention and a
        padded batch; the cache cannot tell): every head must hold exactly those positions, none
        of them weighted."""
        if self._whole(layer):
            return
        n, seen = self.cache.head_tokens(layer), self.cache.seq_length(layer)
        weighted = self.cache.layers[layer].weighted
        low, high = int(n.min()), int(n.max())
        held = f"{low}" if low == high else f"{low} to {high}"
        raise ValueError(
            f"layer {layer}: its heads hold {held} of the {seen} positions seen"
            + (" and weighted compensation tokens" if weighted else "")
            + " after compression; plain attention (materialize=True) masks the keys by "
            "position and cannot read them: use attnsieve's attention (materialize=False, "
            "the cache of a patched model's handle.new_cache())"
        )

    def _dense(self, layer: int) -> tuple[Tensor, Tensor]:
        """Every cached K/V of ``layer`` as (B, H_kv, L, D); every head holds L tokens."""
        keys, values, _ = self.cache.gather(layer)
        return keys, values

    def reset(self) -> None:
        """Empty the paged cache (its pools are released; label channels are kept) and start its
        session's generation over."""
        if self.cache is not None:
            self.cache.reset()
        self._prefilled.clear()
        self.returned.clear()
        if self.reader is not None:
            self.reader.restart()


def _unread(call: str) -> ValueError:
    return ValueError(
        f"cache: {call} on a paged cache that no attnsieve attention reads (a later generation "
        "or new_cache() replaced it, the patch was removed, or it was built outside "
        "attnsieve.patch): continue with the newest cache (handle.new_cache()), or build it with "
        "materialize=True for plain attention"
    )
