"""`attnsieve run`: generate from a transformers model with sparse prefill, and say what it cost.

Prefill runs in chunks of ``--chunk-size`` tokens with a progress bar (each chunk attends to the
cache plus itself; the kernels' bottom-right causal alignment makes that exact), then greedy decode.
The prompt is ``--prompt`` text or a ``--prompt-file``; ``--chat`` sends it as one user turn of
the model's chat template.
Prints the output text, the layers' prefill method, time to first token, decode tokens/s, the KV
memory held (on the paged cache only), the mean density of each layer and the layers that fell back
to dense, by reason.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import torch

from attnsieve.eval.models import (
    DTYPE_HELP,
    DTYPES,
    add_device_argument,
    load_model,
    model_text_config,
    read_prompt_file,
    spec_tokenizer,
)
from attnsieve.eval.sweep_args import EXTEND_HINT, by_option
from attnsieve.integrations.config import PRECISIONS, ROLES, AttentionConfig, read_entry
from attnsieve.integrations.generate import eos_token_ids, generate
from attnsieve.integrations.transformers import check_fits, patch
from attnsieve.methods.prefill.base import PerHeadPlanner, Planner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="'smollm2', 'probe', a .gguf file, or a transformers model directory or Hub id",
    )
    parser.add_argument(
        "--rope-scale", type=float, default=None, help="YaRN factor (smollm2: past 8K tokens)"
    )
    parser.add_argument(
        "--method",
        default=None,
        help="planner name; replaces the config's 'prefill' (its per-layer entries too)",
    )
    parser.add_argument(
        "--kv",
        default=None,
        help="KV policy name, or a KV-entry JSON file (attnsieve calibrate --retrieval-heads), or "
        "none; replaces the config's 'kv' (its per-layer entries too)",
    )
    parser.add_argument(
        "--decode",
        default=None,
        help="decode selector name, or none; replaces the config's 'decode' (its per-layer "
        "entries too); double_sparsity needs its label channels, so give the config that "
        "attnsieve calibrate --label-channels R writes to --config instead",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="replaces the config's precision"
    )
    parser.add_argument(
        "--paged-cache",
        action="store_true",
        help="decode on attnsieve's paged cache even without --kv, --decode or an FP8 cache (on "
        "CUDA its decode steps replay a CUDA graph)",
    )
    parser.add_argument(
        "--config", default=None, help="AttentionConfig JSON (e.g. from attnsieve calibrate)"
    )
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", default=None, help="the prompt itself, as text")
    prompt.add_argument(
        "--prompt-file", default=None, help="text file holding the prompt (- for standard input)"
    )
    parser.add_argument(
        "--chat",
        action="store_true",
        help="send the prompt as one user turn in the model's chat template: an instruct model "
        "answers it instead of continuing the text",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="at most this many tokens (default 64; an end-of-sequence token stops sooner)",
    )
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help=DTYPE_HELP)
    add_device_argument(parser)
    parser.add_argument(
        "--min-prefill-length",
        type=int,
        default=None,
        help="prompts shorter than this stay dense (default: the config's, 2048 where it sets "
        "none)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=8192, help="prefill chunk length in tokens"
    )


# the option that sets each of AttentionConfig's fields here (`by_option`)
RUN_OPTIONS = {
    "prefill": "--method",
    "kv": "--kv",
    "decode": "--decode",
    "precision": "--precision",
    "min_prefill_length": "--min-prefill-length",
    "paged_cache": "--paged-cache",
}


def main(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: expected >= 1, got {args.max_new_tokens}")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size: expected >= 1, got {args.chunk_size}")
    if args.prompt is None:
        prompt, prompt_option = read_prompt_file(args.prompt_file), "--prompt-file"
    elif args.prompt.strip():
        prompt, prompt_option = args.prompt, "--prompt"
    else:
        raise ValueError(f"--prompt: expected text, got {args.prompt!r}")
    try:
        if args.config is not None and not args.config.strip():  # not the default config
            raise ValueError(f"expected an AttentionConfig JSON file, got {args.config!r}")
        config = AttentionConfig.from_json(args.config) if args.config else AttentionConfig()
    except (ValueError, TypeError) as e:  # the file's own errors begin with its path
        raise type(e)(f"--config: {e}") from None
    changes: dict[str, Any] = {
        role: getattr(args, name)
        for role, name in (("prefill", "method"), ("kv", "kv"), ("decode", "decode"))
        if getattr(args, name) is not None
    }
    for role in ("kv", "decode"):  # none switches a config file's role off, as in eval
        if changes.get(role) == "none":
            changes[role] = None
    if isinstance(changes.get("kv"), str) and changes["kv"].endswith(".json"):
        changes["kv"] = read_entry(changes["kv"], "--kv")
    if args.precision is not None:
        changes["precision"] = args.precision
    if args.min_prefill_length is not None:
        changes["min_prefill_length"] = args.min_prefill_length
    if args.paged_cache:
        changes["paged_cache"] = True
    given = {field: option for field, option in RUN_OPTIONS.items() if field in changes}
    try:  # a role given here replaces the config's in every layer
        config = config.override(**changes)
    except (ValueError, TypeError) as e:
        raise by_option(e, given) from None

    # the config and the prompt are checked against the model's config before its weights load
    text_config = model_text_config(args.model, args.rope_scale)
    try:
        check_fits(config, text_config)
    except ValueError as e:  # e.g. a layer past the model's last
        error = by_option(e, given)
        from_file = args.config and str(e).startswith(("layers[", *ROLES))  # not head_dim: ...
        raise (ValueError(f"--config: {e}") if error is e and from_file else error) from None
    tokenizer = spec_tokenizer(args.model)
    ids = prompt_ids(tokenizer, prompt, args.chat)
    positions = text_config.max_position_embeddings
    if len(ids) + args.max_new_tokens > positions:
        raise ValueError(
            f"{prompt_option}: {len(ids)} prompt tokens and --max-new-tokens "
            f"{args.max_new_tokens} need more than the model's {positions} positions; "
            + EXTEND_HINT
        )
    model, tokenizer, _ = load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        rope_scale=args.rope_scale,
        tokenizer=tokenizer,
    )
    input_ids = torch.tensor([ids], device=model.device)
    eos_ids = eos_token_ids(model, tokenizer)

    handle = patch(model, config)
    with handle as stats:
        cache = handle.new_cache() if config.paged else None
        new_tokens, ttft, decode_s, density = generate(
            model, input_ids, args.max_new_tokens, args.chunk_size, eos_ids, stats, cache
        )
    print(tokenizer.decode(new_tokens, skip_special_tokens=True))
    print("---")
    print(
        f"prompt tokens: {input_ids.shape[1]}, new tokens: {len(new_tokens)}, "
        f"prefill: {prefill_methods(config, model.config.get_text_config().num_hidden_layers)}"
    )
    print(f"time to first token: {ttft:.3f} s")
    decoded = len(new_tokens) - 1
    rate = f"{decoded / decode_s:.1f} tokens/s" if decoded and decode_s > 0 else "n/a (one token)"
    print(f"decode: {rate}")
    if handle.session is not None and handle.session.paged is not None:
        print(f"KV cache: {handle.session.paged.memory_bytes() / 2**20:.1f} MiB held")
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


def prefill_methods(config: AttentionConfig, num_layers: int) -> str:
    """What the layers' prefill runs: one planner's name, or each with its layer count (a
    calibrated config's default is dense, every layer overriding it)."""
    counts = Counter(_planner_name(config.planner(layer)) for layer in range(num_layers))
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} ({n} layer{'s' * (n > 1)})" for name, n in counts.most_common())


def _planner_name(planner: Planner | None) -> str:
    if planner is None:
        return "dense"
    if isinstance(planner, PerHeadPlanner):
        return "per-head " + "/".join(sorted({p.name for p in planner.planners}))
    return planner.name


def prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> list[int]:
    """The prompt's tokens: as text (with the tokenizer's BOS), or as one user turn of the chat
    template, which places its own special tokens. The turn leaves out the file's trailing
    whitespace: a final newline before the end-of-turn token turned SmolLM2's "Paris" into
    "L'Étoile, la Marseillaise"."""
    if not chat:
        return list(tokenizer.encode(prompt))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat: the model's tokenizer has no chat template")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt.rstrip()}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(text, add_special_tokens=False))
