"""`attnsieve run`: generate from a transformers model with sparse prefill, and say what it cost.

Prefill runs in chunks of ``--chunk-size`` tokens with a progress bar (each chunk attends to the
cache plus itself; the kernels' bottom-right causal alignment makes that exact), then greedy decode.
Prints the output text, time to first token, decode tokens/s and the mean density of each layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import torch
from torch import Tensor

from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.transformers import PatchStats, patch
from attnsieve.layout import causal_pairs

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local model directory or Hub id")
    parser.add_argument(
        "--method", default=None, help="planner name; overrides the config's 'prefill'"
    )
    parser.add_argument(
        "--config", default=None, help="AttentionConfig JSON (e.g. from attnsieve calibrate)"
    )
    parser.add_argument("--prompt-file", required=True, help="text file holding the prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--min-prefill-length", type=int, default=None, help="override the config's value"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=8192, help="prefill chunk length in tokens"
    )


def main(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: expected >= 1, got {args.max_new_tokens}")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size: expected >= 1, got {args.chunk_size}")
    config = AttentionConfig.from_json(args.config) if args.config else AttentionConfig()
    changes: dict[str, Any] = {}
    if args.method is not None:
        changes["prefill"] = args.method
        if args.method != config.prefill:
            changes["prefill_kwargs"] = {}  # the config's kwargs belong to its own planner
    if args.min_prefill_length is not None:
        changes["min_prefill_length"] = args.min_prefill_length
    config = dataclasses.replace(config, **changes)
    with open(args.prompt_file) as f:
        prompt = f.read()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=DTYPES[args.dtype])
    model = model.to(args.device).eval()
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(args.device)
    eos_ids = eos_token_ids(model, tokenizer)

    with patch(model, config) as stats:
        new_tokens, ttft, decode_s, density = generate(
            model, input_ids, args.max_new_tokens, args.chunk_size, eos_ids, stats
        )
    print(tokenizer.decode(new_tokens, skip_special_tokens=True))
    print("---")
    print(
        f"prompt tokens: {input_ids.shape[1]}, new tokens: {len(new_tokens)}, "
        f"method: {config.prefill}"
    )
    print(f"time to first token: {ttft:.3f} s")
    decoded = len(new_tokens) - 1
    rate = f"{decoded / decode_s:.1f} tokens/s" if decoded and decode_s > 0 else "n/a (one token)"
    print(f"decode: {rate}")
    print("mean density per layer: " + " ".join(f"{d:.3f}" for d in density))
    if density:
        print(f"mean density: {sum(density) / len(density):.3f}")
    fallbacks: dict[str, list[int]] = {}
    for layer, reason in enumerate(stats.fallback_per_layer):
        if reason is not None:
            fallbacks.setdefault(reason, []).append(layer)
    for reason, layers in fallbacks.items():
        print(f"dense fallback ({reason}): layers {layers}")
    return 0


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Tokens that end generation: the model's generation config's and the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    ids = {*(eos if isinstance(eos, list) else [eos]), getattr(tokenizer, "eos_token_id", None)}
    ids.discard(None)
    return ids


@torch.inference_mode()
def generate(
    model: Any,
    input_ids: Tensor,
    max_new_tokens: int,
    chunk_size: int,
    eos_ids: set[int],
    stats: PatchStats,
) -> tuple[list[int], float, float, list[float]]:
    """Greedy generation with chunked prefill for a batch of one.

    Returns (new token ids, seconds to first token, seconds of decode, density per layer). The
    density of a layer is over the whole prompt: each chunk's density weighted by its number of
    dense-causal pairs; a chunk that ran dense (shorter than ``min_prefill_length``) counts as 1.
    """
    length = input_ids.shape[1]
    bounds = list(range(0, length, chunk_size)) + [length]
    num_layers = len(stats.density_per_layer)
    weighted, total = [0.0] * num_layers, 0
    cache = None
    _sync(input_ids.device)
    start = time.perf_counter()
    with _progress(length, enabled=len(bounds) > 2) as bar:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            stats.clear()  # a layer still None after the forward ran this chunk dense
            out = model(
                input_ids=input_ids[:, lo:hi],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.past_key_values
            pairs = causal_pairs(hi - lo, hi)
            for i, d in enumerate(stats.density_per_layer[:num_layers]):
                weighted[i] += pairs * (1.0 if d is None else d)
            total += pairs
            bar.update(hi - lo)
    token = out.logits[:, -1].argmax(-1)
    _sync(input_ids.device)
    ttft = time.perf_counter() - start

    new_tokens = [int(token)]
    start = time.perf_counter()
    while len(new_tokens) < max_new_tokens and new_tokens[-1] not in eos_ids:
        out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1)
        new_tokens.append(int(token))  # int() syncs, so the timing below is complete
    decode_s = time.perf_counter() - start
    return new_tokens, ttft, decode_s, [w / total for w in weighted]


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc="prefill", disable=not enabled, file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
