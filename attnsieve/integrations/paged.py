"""One generation on attnsieve's paged cache: KV compression, sparse decode, FP8 KV.

A `PagedSession` is what a patch handle keeps for the cache it handed out (`PatchHandle.new_cache`):
the `AttnsieveCache` that transformers fills, each layer's most recent queries (the observation
window KV policies read), and the scratch one decode step shares across layers. The adapter calls
it for three things:

- ``observe``: remember the queries of every forward call (prompt chunks and decode steps);
- ``attend``: attention of a call that the paged cache must serve: a decode step (the paged decode
  kernel, over the pages the layer's selector picks), or a prompt chunk after compression made the
  heads ragged (dense attention over each head's kept tokens, masked per head, compensation
  tokens weighted);
- ``compress``: run the layer's KV policy on the cache and compact it (memory is freed per head).
  It runs once when the prompt is done (explicitly, or at the first decode step), then every
  ``kv_interval`` decode steps: a policy that scores tokens (`ScoredPolicy`) back to the tokens
  each head its budget bound kept at the first pass, Ada-KV back to the layer total its budget
  bound, other heads and policies back to the budget (a ratio's of the prompt's length). A
  one-token prompt's first pass comes after ``kv_interval`` steps.

A padded batch (``attention_mask`` hiding keys from a prompt's last query) loses its padding when
the prompt is done, before any compression: the decode kernel and prompt chunks read every token
a head holds, and pad tokens must not be among them. Padding in a later prompt chunk is refused.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.api import decode_attention
from attnsieve.cache import normal_tensors
from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.hf_cache import AttnsieveCache
from attnsieve.methods.decode.base import StepState
from attnsieve.methods.kv.adakv import AdaKV
from attnsieve.methods.kv.base import ScoredPolicy, pack
from attnsieve.methods.kv.razor import RazorAttention

WINDOW = 64  # recent queries kept per layer, at least (more for a policy's longer window)
CHUNK_MASK_ELEMENTS = 1 << 26  # a ragged prompt chunk's mask (and SDPA's scores) per piece


class PagedSession:
    """State of one generation on a paged cache (see the module docstring)."""

    def __init__(self, config: AttentionConfig, num_layers: int) -> None:
        self.config = config
        self.num_layers = num_layers
        self.cache = AttnsieveCache(
            num_layers, page_size=config.page_size, kv_dtype="fp8" if config.fp8_kv else None
        )
        self.cache.on_prefill_end = self._prefill_ended
        self.cache.reader = self
        self.ended = False  # a later generation (or the patch's removal) ended this one
        self._start()

    def _start(self) -> None:
        """The state of a generation that has not begun (again, after ``cache.reset()``)."""
        self.queries: dict[int, tuple[Tensor, Tensor]] = {}  # layer -> (B, H_q, W, D), (B, W)
        self.compressed: set[int] = set()
        # layer -> (policy with its budget fixed, tokens each head kept at the first pass, heads
        # the budget bound there, each head's target there): what a periodic pass compresses
        # back to
        self.periodic: dict[int, tuple[Any, Tensor, Tensor, Tensor]] = {}
        self.steps: dict[int, int] = {}  # layer -> decode steps since the last compression
        # layer -> decode steps whose queries its window lacks (no periodic pass reads them)
        self.unrecorded: dict[int, int] = {}
        self.step = StepState()
        self.step_layer = -1  # the last layer that decoded in this step
        self.scales: dict[int, float | None] = {}
        self.whole: set[int] = set()  # layers whose attention must see every token
        self.started: set[int] = set()  # layers that have seen a call
        self.padding: dict[int, Tensor] = {}  # layer -> (B, M) keys the prompt's last query sees
        self.prompt_done: set[int] = set()  # layers whose prompt has ended
        self.unpadded: set[int] = set()  # layers whose padding was dropped: rows are ragged
        self.decode_graph: Any = None  # the captured decode step (`integrations.decode_graphs`)

    def restart(self) -> None:
        """Forget the generation (`AttnsieveCache.reset` calls it): its compressed layers,
        periodic targets, padding and queries would otherwise apply to the next prompt."""
        self.drop_decode_graph()
        self._start()

    def end(self) -> None:
        """No attention reads this session's pages any more: its cache refuses decode steps."""
        self.drop_decode_graph()
        self.ended = True

    def drop_decode_graph(self) -> None:
        """Release the captured decode step now: left to the garbage collector (the session and
        its cache reference each other), a graph could be freed in the middle of another
        capture, which CUDA forbids."""
        if self.decode_graph is not None:
            self.decode_graph.graph.reset()
            self.decode_graph = None

    @property
    def paged(self) -> Any:
        """The `attnsieve.cache.Cache` (None until transformers' first update)."""
        return self.cache.cache

    @normal_tensors
    def observe(self, layer: int, query: Tensor, scale: float | None) -> None:
        """On the layer's first call, give the cache its selector's label channels (Double
        Sparsity); with a KV policy, keep the layer's last `WINDOW` queries, or as many as the
        policy's observation window if longer (the newest positions), which its observation
        window reads. Without ``kv_interval`` no pass reads a decode step's query once the layer
        has compressed, so those are not kept (each would cost a decode step launches); prompt
        chunks always are, for an explicit `compress` after a later chunk (a new turn)."""
        if layer not in self.started:
            self.started.add(layer)
            channels = getattr(self.config.selector(layer), "label_channels", None)
            if channels is not None and (table := channels(query.device)) is not None:
                self.paged.set_label_channels(layer, table)
        policy = self.config.policy(layer)
        if policy is None:
            return
        if self._is_step(query) and layer in self.compressed and not self.config.kv_interval:
            self.unrecorded[layer] = self.unrecorded.get(layer, 0) + 1
            return
        self.unrecorded.pop(layer, None)
        self.scales[layer] = scale
        window = self._window(layer)
        old = self.queries.get(layer)
        if query.shape[2] == 1 and old is not None and old[0].shape[2] == window:
            # a full window slides in place, its new position read on the device: a decode step
            # replayed from a CUDA graph (`decode_graphs`) updates the tensors a pass reads
            last = self.paged.layers[layer].next_pos.amax() - 1  # seq_length, no host read
            old[0].copy_(torch.cat([old[0][:, :, 1:], query], 2))
            old[1].copy_(torch.cat([old[1][:, 1:], last.expand(old[1].shape[0], 1)], 1))
            return
        n = min(query.shape[2], window)  # only the newest queries are ever read
        end = self.paged.seq_length(layer)
        query = query[:, :, -n:]
        pos = torch.arange(end - n, end, device=query.device).expand(query.shape[0], n)
        if old is not None:
            query, pos = torch.cat([old[0], query], 2), torch.cat([old[1], pos], 1)
            self.drop_decode_graph()  # it slides the window this call replaces
        # copies: a slice would keep the whole prompt's query tensor alive (2 GB a layer for
        # Llama-3-8B at batch 8 and 32K tokens)
        self.queries[layer] = (query[:, :, -window:].clone(), pos[:, -window:].clone())

    def _window(self, layer: int) -> int:
        """Recent queries kept for ``layer``: `WINDOW`, or its policy's observation window (Ada-KV:
        its inner policy's) if longer."""
        policy = self.config.policy(layer)
        return max(WINDOW, getattr(getattr(policy, "inner", policy), "window", 0))

    def free_steps(self) -> int | None:
        """Decode steps that can run before the one that makes a periodic pass (None: no
        ``kv_interval``; 0: the next step passes). A step replayed from a CUDA graph runs no host
        code, so no pass: `decode_graphs` runs at most this many from a graph (the first of them
        the eager warm-up where a capture is needed), then the pass as one eager step."""
        interval = self.config.kv_interval
        if not interval:
            return None
        counts = [self.steps.get(i, 0) for i in self._periodic_layers()]
        return max(0, interval - 1 - max(counts, default=0))

    def windows_full(self) -> bool:
        """Whether every layer a periodic pass reads holds a full window of recent queries (a
        growing window changes shape each step, which a replayed step cannot)."""
        return all(
            i in self.queries and self.queries[i][0].shape[2] == self._window(i)
            for i in self._periodic_layers()
        )

    def advance_steps(self, steps: int) -> None:
        """Count ``steps`` decode steps replayed without host code towards each periodic pass,
        or, without ``kv_interval``, as steps a compressed layer's window lacks."""
        for i in self._periodic_layers():
            self.steps[i] = self.steps.get(i, 0) + steps
        if not self.config.kv_interval:
            for i in self.compressed:
                if self.config.policy(i) is not None:
                    self.unrecorded[i] = self.unrecorded.get(i, 0) + steps

    def step_counters(self) -> tuple[dict[int, int], dict[int, int]]:
        """The host's step counts, which a captured step's host code advances but a replay
        does not (`advance_steps` counts replays): restored after a capture."""
        return dict(self.steps), dict(self.unrecorded)

    def set_step_counters(self, counters: tuple[dict[int, int], dict[int, int]]) -> None:
        self.steps, self.unrecorded = dict(counters[0]), dict(counters[1])

    def _periodic_layers(self) -> list[int]:
        return [
            i
            for i in range(self.num_layers)
            if self.config.policy(i) is not None and i not in self.whole
        ]

    def serves(self, layer: int, key: Tensor) -> bool:
        """Whether this call's keys came from this session's cache (transformers may run a
        forward on another cache while the session exists)."""
        returned = self.cache.returned.get(layer)
        return self.paged is not None and returned is not None and returned() is key

    def keep_whole(self, layer: int) -> None:
        """Never compress ``layer`` (soft-capped or sliding-window attention runs dense)."""
        self.whole.add(layer)

    def note_mask(self, layer: int, mask: Tensor) -> None:
        """A prompt call's (B, 1, N, M) mask (bool, or additive: 0 where visible): the keys its
        last query cannot see are padding, dropped when the prompt is done. Padding inside a
        prompt chunk after that is not supported."""
        last = mask[:, 0, -1]
        visible = (last if last.dtype == torch.bool else last == 0).expand(self.paged.batch, -1)
        if layer in self.prompt_done:
            if not bool(visible[:, -mask.shape[2] :].all()):
                raise NotImplementedError(
                    "attnsieve's paged cache: a prompt chunk after the prompt ended holds padding "
                    "(attention_mask hides some of its own tokens); pad only the first prompt"
                )
            return
        self.padding[layer] = visible

    def ragged(self, layer: int) -> bool:
        return layer in self.compressed or layer in self.unpadded

    def _is_step(self, query: Tensor) -> bool:
        """Whether a call is a decode step: one query token, outside a prompt fed in chunks
        (`AttnsieveCache.prompt`), whose one-token chunks are prompt too."""
        return query.shape[2] == 1 and not self.cache.prompt

    def attend(self, layer: int, query: Tensor, scale: float | None) -> Tensor:
        """(B, N, H_q, D) attention of ``query`` over the layer's paged cache (after update)."""
        if query.shape[2] == 1:
            return self._decode(layer, query, scale)
        return self._chunk(layer, query, scale)

    def _decode(self, layer: int, query: Tensor, scale: float | None) -> Tensor:
        """One query token over the pages: a decode step (its selector's pages, then a periodic
        pass when due), or a one-token prompt chunk (every token; no step, no pass)."""
        step = self._is_step(query)
        if layer <= self.step_layer:  # a new step: not `layer == 0`, which may run whole
            self.step = StepState()  # (a sliding-window layer) and never come here
        self.step_layer = layer
        selector = self.config.selector(layer)
        pages = None
        if selector is not None and step:
            # with the model's softmax scale: TidalDecode ranks tokens by probabilities summed
            # over a GQA group, which the temperature changes
            view = self.paged.page_view(layer, scale)
            pages = selector.select(query[:, :, 0], view, self.step)
        out = decode_attention(
            query[:, :, 0], self.paged, layer, pages=pages, scale=scale,
            backend=self.config.backend,
        )  # fmt: skip
        if step and self.config.kv_interval and self.config.policy(layer) is not None:
            self.steps[layer] = self.steps.get(layer, 0) + 1
            if self.steps[layer] >= self.config.kv_interval:
                self.compress(layer)
        return out[:, None]

    def _chunk(self, layer: int, query: Tensor, scale: float | None) -> Tensor:
        """A prompt chunk over ragged heads: each head's kept tokens then the chunk, causal. Its
        per-head mask (B, H_q, rows, L) is built for `CHUNK_MASK_ELEMENTS` at a time: a long
        chunk (a second turn's document) over a long cache would need it whole otherwise."""
        keys, values, lengths = self.paged.gather(layer)  # the chunk is each head's last n tokens
        b, h_q, n, _ = query.shape
        g = h_q // keys.shape[1]
        col = torch.arange(keys.shape[2], device=query.device)
        log_weights = self.paged.log_weights(layer)
        dtype = query.dtype
        if log_weights is not None:
            # compensation tokens weigh as the tokens they replaced; in float32, as the decode
            # kernel adds them (a bfloat16 mask would move a weight of 64 by 0.3 %)
            bias = log_weights[:, :, None].repeat_interleave(g, 1)
            query, keys, values = query.float(), keys.float(), values.float()
        rows = max(1, CHUNK_MASK_ELEMENTS // (b * h_q * keys.shape[2]))
        out = torch.empty_like(query)
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            row_end = lengths[..., None].long() - n + torch.arange(lo, hi, device=query.device)
            mask = (col <= row_end[..., None]).repeat_interleave(g, 1)  # [B, H_q, rows, L]
            if log_weights is not None:
                mask = bias.masked_fill(~mask, -torch.inf)
            out[:, :, lo:hi] = F.scaled_dot_product_attention(
                query[:, :, lo:hi], keys, values, attn_mask=mask, scale=scale, enable_gqa=g > 1
            )
        return out.to(dtype).transpose(1, 2)

    def _prefill_ended(self, layer: int) -> None:
        self._end_prompt(layer)
        if layer not in self.compressed and self.config.policy(layer) is not None:
            self.compress(layer)
        elif layer in self.unpadded:
            self.paged.shrink(layer)  # the padding's pages go back to the device

    def _end_prompt(self, layer: int) -> None:
        """Mark the layer's prompt done and drop its padding (once)."""
        if layer not in self.prompt_done:
            self.prompt_done.add(layer)
            visible = self.padding.pop(layer, None)
            if visible is not None and not bool(visible.all()):
                self._drop_padding(layer, visible)
                self.unpadded.add(layer)

    def _drop_padding(self, layer: int, visible: Tensor) -> None:
        """Keep, in every head of a row, the tokens ``visible`` (B, M) marks."""
        b, m = visible.shape
        keep = visible[:, None].expand(b, self.paged.kv_heads, m)
        self.paged.compact(layer, pack(keep, int(visible.sum(1).max())))

    @normal_tensors
    def compress(self, layer: int | None = None) -> None:
        """Run the KV policy of ``layer`` (default: every layer with one) and compact the cache."""
        layers = range(self.num_layers) if layer is None else [layer]
        if missed := max((self.unrecorded.get(i, 0) for i in layers), default=0):
            warnings.warn(
                f"attnsieve: compress() after {missed} decode steps with kv_interval=0: the "
                "policy's observation window holds the queries before them (decode steps are "
                "recorded only with kv_interval set; a prompt chunk always is)",
                stacklevel=3,
            )
        for i in layers:
            policy = self.config.policy(i)
            if policy is None or i not in self.queries or i in self.whole or self.paged is None:
                continue
            self._end_prompt(i)  # an explicit pass ends the prompt: its padding goes first
            queries, positions = self.queries[i]
            view = self.paged.kv_view(i, queries, positions)
            view = dataclasses.replace(view, scale=self.scales.get(i))
            if i not in self.periodic:  # the first pass; a ratio counts the prompt's length
                fixed = policy
                if policy.ratio is not None:
                    longest = int(self.paged.head_tokens(i).max())
                    budget = math.floor(policy.ratio * longest + 0.5)
                    fixed = dataclasses.replace(policy, budget=budget, ratio=None)
                kept = policy.compress(view)
                # a head its budget bound keeps that many from now on (PyramidKV's schedule, say,
                # would otherwise be recomputed on the shorter lengths); the others, the budget
                # of a long sequence (`_steady`)
                bound = kept.count < view.lengths
                self.periodic[i] = (fixed, kept.count, bound, policy.targets(view))
            elif isinstance(policy, ScoredPolicy):
                fixed, count, bound, _ = self.periodic[i]
                target = torch.where(bound, count, _steady(fixed, view)).long()
                kept = policy.keep(view, target, int(target.max()))
            elif isinstance(policy, AdaKV):
                # a row its budget cut keeps its layer total: the sum of its heads' targets, each
                # clamped to a head's ragged length, would shrink it at every pass; another row
                # (whose heads are still even) grows towards its heads' targets
                fixed, count, bound, first = self.periodic[i]
                cut = bound.any(-1)
                total = torch.where(cut, count.sum(-1), _steady(fixed.inner, view).sum(-1))
                kept = fixed.keep(view, total.long())
                self.periodic[i] = (fixed, kept.count, bound | (kept.count < view.lengths), first)
            elif isinstance(policy, RazorAttention) and policy.ratio is not None:
                # each row back to its own prompt's ratio: the longest row's budget (``fixed``)
                # would let a shorter row's heads grow towards it
                row = self.periodic[i][3].amax(-1, keepdim=True)
                kept = policy.keep(view, row.minimum(view.lengths.long()))
            else:
                kept = self.periodic[i][0].compress(view)
            self.paged.compact(i, kept)
            if i not in self.compressed:  # the first pass frees most pages: give them back
                self.paged.shrink(i)
            self.compressed.add(i)
            self.steps[i] = 0


def _steady(policy: ScoredPolicy, view: Any) -> Tensor:
    """int64 (B, H_kv): each head's target at a sequence long enough that no schedule is clamped
    to its length, at most the head's length. A head the first pass did not bound (a short
    prompt) grows towards it: PyramidKV's schedule, recomputed on short lengths (its top layer
    budget raised to keep the mean), would hold the top layers far above their budget."""
    long = torch.full_like(view.lengths, torch.iinfo(torch.int32).max)
    return policy.targets(dataclasses.replace(view, lengths=long)).minimum(view.lengths.long())
