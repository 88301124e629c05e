"""What `attnsieve bench e2e` reports beside its timings: each method's summary line, the PNG
plot, the recorded command, the transformers version and the SDPA backend of the baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from attnsieve.bench.common import command_line, save_line_plots, sdpa_choice
from attnsieve.integrations.transformers import head_dim_of


def sdpa_backend(model: Any, device: torch.device) -> str:
    """The SDPA backend PyTorch picks for this model's prefill (causal, GQA, no mask, bf16)."""
    config = model.config
    head_dim = head_dim_of(config)
    q = torch.zeros(
        1, config.num_attention_heads, 1024, head_dim, device=device, dtype=torch.bfloat16
    )
    kv = torch.zeros(1, config.num_key_value_heads, 1024, head_dim, device=device, dtype=q.dtype)
    return sdpa_choice(q, kv, kv, is_causal=True, enable_gqa=True)


def summary(length: int, sdpa_s: float, label: str, r: dict[str, Any]) -> str:
    """One method's line at one length: its time and SDPA's, density, dense-fallback layers,
    graphs captured, how far its last-position logits are from SDPA's, and the speed-up of the
    best runs and of the medians."""
    speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "not reported (check failed)"
    density = "n/a" if r["mean_density"] is None else f"{r['mean_density']:.3f}"
    dense = sum(f is not None for f in r["fallback_per_layer"])
    paired = r["paired_sdpa_median_ttft_s"] / r["median_ttft_s"]
    top1 = "same" if r["top1_match"] else "another"
    return (
        f"{length:>7} tokens: sdpa {sdpa_s * 1e3:.1f} ms, {label} {r['ttft_s'] * 1e3:.1f} ms "
        f"(density {density}, {dense} dense-fallback layers, {r['graphs_captured']} graphs; "
        f"logits {r['logits_rel_err']:.2g} from sdpa's, KL {r['logits_kl']:.2g} nats, {top1} top "
        "token), "
        f"speed-up {speedup} (of the medians: {paired:.2f}x)"
    )


def plot(result: dict[str, Any], path: Path) -> None:
    rows = result["results"]
    lengths = [r["length"] for r in rows]
    labels = list(result["methods"])

    def series(key: str) -> dict[str, tuple[list[int], list[Any]]]:
        return {m: (lengths, [r["methods"][m][key] for r in rows]) for m in labels}

    axis = {"xlabel": "prompt tokens", "logx": True}
    ttft = {
        f"sdpa ({result['sdpa_backend']})": (lengths, [r["sdpa_ttft_s"] for r in rows]),
        "attention-free forward": (lengths, [r["attention_free_ttft_s"] for r in rows]),
    }
    panels = [
        {"series": {**ttft, **series("ttft_s")}, "ylabel": "time to first token (s)", **axis},
        {"series": series("mean_density"), "ylabel": "mean layout density", **axis},
    ]
    # a method has speed-ups where its precision's correctness check passed (bf16 or int8-fp8)
    speedup = {m: s for m, s in series("speedup").items() if any(y is not None for y in s[1])}
    if speedup:
        bound = {"bound (attention free)": (lengths, [r["speedup_bound"] for r in rows])}
        panels.insert(1, {"series": {**speedup, **bound}, "ylabel": "speed-up over sdpa", **axis})
    model = result["model"]
    title = f"{model['name']}, {model['layers']} layers, {model['weights']} weights, "
    save_line_plots(path, panels, title + result["environment"]["device"])


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (every option spelled out)."""
    return command_line("bench e2e", args)


def transformers_version() -> str:
    """The installed transformers' version."""
    import transformers

    return transformers.__version__
