"""`attnsieve bench e2e`: time to first token of a Llama-3-8B-shaped model, sparse prefill vs SDPA.

The model has Llama-3-8B's shapes (hidden 4096, 32 heads, 8 KV heads, head_dim 128, MLP 14336,
vocabulary 128256) and random weights in bf16 on one GPU; the prompt is random tokens. Time to
first token is one forward over the whole prompt (KV cache filled, logits of the last position
only) plus the argmax, timed after one warm-up, best of ``--repeats``. The baseline is
transformers' own "sdpa" attention; the same weights then run under `attnsieve.patch`.

Random weights give diffuse attention, so adaptive planners (FlexPrefill) keep more blocks than on
a trained model: the density is reported beside every time. Before timing, a full-budget streaming
layout (every block, through the Triton kernel) must reproduce SDPA's last-position logits; if it
does not, no speed-up is reported and the command exits 1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnsieve.bench.common import (
    environment,
    rel_err,
    require_cuda,
    save_line_plots,
    write_json,
)
from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.transformers import patch

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    bos_token_id=128000,
    eos_token_id=128001,
)
CHECK_LENGTH = 4096
CHECK_REL_ERR = 0.05  # bf16 through every layer; a wrong kernel or transpose gives O(1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[65536, 131072], help="prompt lengths"
    )
    parser.add_argument("--method", default="flexprefill", help="planner name")
    parser.add_argument("--config", default=None, help="AttentionConfig JSON (overrides --method)")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (fewer runs faster)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--out", default="benchmarks/results", help="directory for JSON + PNG")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    device = require_cuda()
    for name in ("layers", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}: expected >= 1, got {getattr(args, name)}")
    if any(n < CHECK_LENGTH or n > LLAMA3_8B["max_position_embeddings"] for n in args.lengths):
        raise ValueError(
            f"--lengths: expected values in [{CHECK_LENGTH}, 131072], got {args.lengths}"
        )
    config = (
        AttentionConfig.from_json(args.config)
        if args.config
        else AttentionConfig(prefill=args.method)
    )
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model = build_model(args.layers, device)
    print(
        f"model: Llama-3-8B shapes, {args.layers} layers, bf16, "
        f"built in {time.perf_counter() - started:.0f} s"
    )

    check = correctness_check(model, device)
    print(
        f"check (full-budget layout vs sdpa, {CHECK_LENGTH} tokens): rel err {check['rel_err']:.2e}"
    )
    rows = []
    for length in args.lengths:
        ids = torch.randint(0, LLAMA3_8B["vocab_size"], (1, length), device=device)
        sdpa_s, sdpa_logits, sdpa_mem = time_prefill(model, ids, args.repeats)
        with patch(model, config) as stats:
            sparse_s, sparse_logits, sparse_mem = time_prefill(model, ids, args.repeats)
        row = {
            "length": length,
            "sdpa_ttft_s": sdpa_s,
            f"{config.prefill}_ttft_s": sparse_s,
            "speedup": sdpa_s / sparse_s if check["passed"] else None,
            "mean_density": stats.mean_density,
            "density_per_layer": stats.density_per_layer,
            "fallback_per_layer": stats.fallback_per_layer,
            "top1_match": bool(sdpa_logits.argmax() == sparse_logits.argmax()),
            "logits_rel_err": rel_err(sparse_logits, sdpa_logits),
            "peak_mem_gb": {"sdpa": sdpa_mem, config.prefill: sparse_mem},
        }
        rows.append(row)
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] else "not reported (check failed)"
        density = "n/a" if stats.mean_density is None else f"{stats.mean_density:.3f}"
        print(
            f"{length:>7} tokens: sdpa {sdpa_s:.2f} s, {config.prefill} {sparse_s:.2f} s "
            f"(density {density}), speed-up {speedup}"
        )
        del ids
        torch.cuda.empty_cache()

    result = {
        "command": "attnsieve bench e2e " + " ".join(_argv(args)),
        "environment": {**environment(), "transformers": _transformers_version()},
        "model": {
            "shape": "Llama-3-8B",
            "layers": args.layers,
            "dtype": "bfloat16",
            "weights": "random",
        },
        "method": config.prefill,
        "attention_config": config.to_dict(),
        "sdpa_backend": sdpa_backend(device),
        "correctness_check": check,
        "results": rows,
        "wall_s": time.perf_counter() - started,
    }
    stem = Path(args.out) / f"e2e_{config.prefill}"
    write_json(stem.with_suffix(".json"), result)
    plot(result, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png in {result['wall_s']:.0f} s")
    return 0 if check["passed"] else 1


def build_model(layers: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, **LLAMA3_8B)
    with torch.device(device):  # initialise on the GPU: 16 GB of random bf16 weights in seconds
        model = LlamaForCausalLM._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    return model.eval()


@torch.inference_mode()
def time_prefill(model: Any, ids: Tensor, repeats: int) -> tuple[float, Tensor, float]:
    """(best seconds to first token, last-position logits, peak GB) after one warm-up run."""
    times = []
    torch.cuda.reset_peak_memory_stats(ids.device)
    for _ in range(repeats + 1):
        torch.cuda.synchronize(ids.device)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        out.logits[:, -1].argmax(-1)
        torch.cuda.synchronize(ids.device)
        times.append(time.perf_counter() - start)
        logits = out.logits[0, -1].float()
        del out  # frees the KV cache before the next run
    return min(times[1:]), logits, torch.cuda.max_memory_allocated(ids.device) / 2**30


def correctness_check(model: Any, device: torch.device) -> dict[str, Any]:
    """Every block through the attnsieve kernel (a streaming window over the whole prompt, not a
    layout flagged dense, so SDPA dispatch is bypassed) must give SDPA's last-position logits."""
    ids = torch.randint(0, LLAMA3_8B["vocab_size"], (1, CHECK_LENGTH), device=device)
    full = AttentionConfig(
        prefill="streaming",
        prefill_kwargs={"sink_tokens": 0, "window_tokens": CHECK_LENGTH},
        min_prefill_length=1,
    )
    _, reference, _ = time_prefill(model, ids, 1)
    with patch(model, full):
        _, logits, _ = time_prefill(model, ids, 1)
    err = rel_err(logits, reference)
    return {
        "length": CHECK_LENGTH,
        "rel_err": err,
        "tolerance": CHECK_REL_ERR,
        "passed": err < CHECK_REL_ERR,
    }


def sdpa_backend(device: torch.device) -> str:
    """The SDPA backend PyTorch picks for this model's prefill (causal, GQA, no mask, bf16)."""
    from torch.nn.attention import SDPBackend

    q = torch.zeros(1, 32, 1024, 128, device=device, dtype=torch.bfloat16)
    kv = torch.zeros(1, 8, 1024, 128, device=device, dtype=torch.bfloat16)
    try:  # private but long-standing; the name is informative only
        choice = torch._fused_sdp_choice(q, kv, kv, is_causal=True, enable_gqa=True)
        names = {int(v): k for k, v in SDPBackend.__members__.items()}
        return names.get(int(choice), f"unknown ({choice})")
    except (AttributeError, RuntimeError, TypeError) as e:
        return f"unknown ({type(e).__name__})"


def plot(result: dict[str, Any], path: Path) -> None:
    rows, method = result["results"], result["method"]
    lengths = [r["length"] for r in rows]
    panels = [
        {
            "series": {
                f"sdpa ({result['sdpa_backend']})": (lengths, [r["sdpa_ttft_s"] for r in rows]),
                method: (lengths, [r[f"{method}_ttft_s"] for r in rows]),
            },
            "xlabel": "prompt tokens",
            "ylabel": "time to first token (s)",
            "logx": True,
        }
    ]
    if all(r["speedup"] is not None for r in rows):  # none when the correctness check failed
        series = {f"{method} over sdpa": (lengths, [r["speedup"] for r in rows])}
        panels.append(
            {"series": series, "xlabel": "prompt tokens", "ylabel": "speed-up", "logx": True}
        )
    layers = result["model"]["layers"]
    device = result["environment"]["device"]
    save_line_plots(path, panels, f"Llama-3-8B shapes, {layers} layers, random weights, {device}")


def _argv(args: argparse.Namespace) -> list[str]:
    argv = [
        "--lengths",
        *map(str, args.lengths),
        "--method",
        args.method,
        "--layers",
        str(args.layers),
    ]
    argv += ["--repeats", str(args.repeats)] + (["--config", args.config] if args.config else [])
    return argv


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
