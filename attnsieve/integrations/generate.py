"""Greedy generation with chunked prefill, timed: shared by `attnsieve run`, eval and bench."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import torch
from torch import Tensor

from attnsieve.checks import check_int
from attnsieve.integrations import decode_graphs
from attnsieve.integrations.handle import PatchStats
from attnsieve.integrations.hf_cache import AttnsieveCache
from attnsieve.integrations.transformers import cache_keyword, head_dim_of, output_cache
from attnsieve.layout_counts import causal_pairs


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Tokens that end generation: the model's generation config's and the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    # transformers takes a tuple as it takes a list (a tuple kept whole never matched a token)
    many = isinstance(eos, (list, tuple))
    ids = {*(eos if many else [eos]), getattr(tokenizer, "eos_token_id", None)}
    ids.discard(None)
    return ids


def _check_token_ids(name: str, ids: Any) -> None:
    """TypeError naming ``name`` unless ``ids`` is an int64 or int32 tensor."""
    if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32):
        kind = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(f"{name}: expected an int64 or int32 tensor of token ids, got {kind}")


@torch.inference_mode()
def generate(
    model: Any,
    input_ids: Tensor,
    max_new_tokens: int,
    chunk_size: int,
    eos_ids: set[int],
    stats: PatchStats,
    cache: Any = None,
    context_length: int | None = None,
    after_context: Callable[[], None] | None = None,
) -> tuple[list[int], float, float, list[float]]:
    """Greedy generation with chunked prefill for a batch of one.

    ``cache`` is the initial ``past_key_values`` (None: transformers' default cache). With
    ``context_length``, the first that many tokens are prefilled (in chunks), then
    ``after_context()`` runs (e.g. KV compression), then the rest of the prompt (the question)
    is prefilled as one chunk. Returns
    (new token ids, seconds to first token, seconds of decode, density per layer). The density of
    a layer is over the whole prompt: each chunk's density weighted by its number of dense-causal
    pairs; a chunk that ran dense (shorter than ``min_prefill_length``) counts as 1. ``stats``'
    fallback of a layer is then its outcome over most of the prompt's pairs (None: planned).
    """
    key = cache_keyword(model)
    _check_token_ids("input_ids", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(
            f"input_ids: expected (1, L), a batch of one, got {tuple(input_ids.shape)}"
        )
    length = input_ids.shape[1]
    if length == 0:
        raise ValueError("input_ids: the prompt has no tokens")
    check_int("max_new_tokens", max_new_tokens, 1)
    check_int("chunk_size", chunk_size, 1)
    if context_length is not None and not (
        isinstance(context_length, int)
        and not isinstance(context_length, bool)
        and 1 <= context_length <= length
    ):
        raise ValueError(f"context_length: expected 1 to {length} tokens, got {context_length!r}")
    split = length if context_length is None else context_length
    bounds = list(range(0, split, chunk_size)) + [split] + ([length] if split < length else [])
    num_layers = len(stats.density_per_layer)
    weighted, total = [0.0] * num_layers, 0
    outcomes: list[dict[str | None, int]] = [{} for _ in range(num_layers)]  # pairs per outcome
    _sync(input_ids.device)
    start = time.perf_counter()
    paged = cache if isinstance(cache, AttnsieveCache) else None
    with _progress(length, enabled=len(bounds) > 2) as bar, _prompt(paged):
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            stats.clear()  # a layer still None after the forward ran this chunk dense
            out = model(
                input_ids=input_ids[:, lo:hi], **{key: cache}, use_cache=True, logits_to_keep=1
            )
            cache = output_cache(out)
            pairs = causal_pairs(hi - lo, hi)
            for i, d in enumerate(stats.density_per_layer[:num_layers]):
                weighted[i] += pairs * (1.0 if d is None else d)
                if d is not None:  # the layer recorded this chunk: its planner ran, or why not
                    reason = stats.fallback_per_layer[i]
                    outcomes[i][reason] = outcomes[i].get(reason, 0) + pairs
            total += pairs
            bar.update(hi - lo)
            if hi == split and after_context is not None:
                after_context()
    token = out.logits[:, -1].argmax(-1)
    _sync(input_ids.device)
    ttft = time.perf_counter() - start
    # the prompt's, not its last chunk's: each layer's outcome over most of its pairs (a short
    # last chunk ran dense as "short" where every chunk before it was planned)
    for i, outcome in enumerate(outcomes):
        if outcome:
            stats.fallback_per_layer[i] = max(outcome, key=outcome.__getitem__)

    steps, _, decode_s = decode(model, token, cache, max_new_tokens - 1, eos_ids)
    new_tokens = [int(t) for t in [token, *steps]]
    return new_tokens, ttft, decode_s, [w / total for w in weighted]


@contextlib.contextmanager
def _prompt(cache: AttnsieveCache | None) -> Iterator[None]:
    """Within the block, ``cache`` takes every update as prompt (a chunk of one token too)."""
    if cache is not None:
        cache.prompt = True
    try:
        yield
    finally:
        if cache is not None:
            cache.prompt = False


@torch.inference_mode()
def decode(
    model: Any, token: Tensor, cache: Any, steps: int, eos_ids: Collection[int] = ()
) -> tuple[list[Tensor], Any, float]:
    """Up to ``steps`` greedy decode steps after ``token`` (B,), each one forward of one token per
    row on ``cache``: (the new tokens, each (B,); the cache; seconds, synchronised at both ends).
    On a patched model's paged cache on CUDA the steps replay a CUDA graph
    (`attnsieve.integrations.decode_graphs`).

    A batch of one stops before a step once its last token is in ``eos_ids`` (a host read per
    step, as generation needs); with no ``eos_ids``, or a larger batch, all steps run and this
    loop adds no host wait."""
    _check_token_ids("token", token)
    if token.dim() != 1:  # a (B, 1) token ran a batch of one row per token, silently
        raise ValueError(f"token: expected (B,), one token per row, got {tuple(token.shape)}")
    check_int("steps", steps, 0)
    key = cache_keyword(model)
    handle = decode_graphs.graph_handle(model, cache)
    if handle is not None:
        return decode_graphs.decode(model, handle, token, cache, steps, eos_ids, key)
    tokens = []
    _sync(token.device)
    start = time.perf_counter()
    for _ in range(steps):
        if decode_graphs.at_eos(token, eos_ids):
            break
        out = model(input_ids=token[:, None], **{key: cache}, use_cache=True)
        cache = output_cache(out)
        token = out.logits[:, -1].argmax(-1)
        tokens.append(token)
    _sync(token.device)
    return tokens, cache, time.perf_counter() - start


def dense_cache_bytes(model: Any, tokens: int) -> int:
    """Bytes transformers' own cache holds for ``tokens`` tokens (summed over the batch): K and V
    of every token of every layer, in the model's dtype."""
    cfg = model.config.get_text_config()
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim_of(cfg)
    return per_token * tokens * model.dtype.itemsize


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc="prefill", disable=not enabled, file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
