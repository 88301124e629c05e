"""`attnsieve calibrate`: per layer and head, the cheapest planner and budget reaching a recall.

Offline per-head configuration as in MInference (arXiv 2407.02490: one pattern and budget per head,
searched once on a sample), MoA (arXiv 2406.14909: heterogeneous budgets across heads and layers)
and TCA-Attention (one calibration pass over a sample, no training). Every candidate (planner
name, hyper-parameters) plans every layer of a captured sample once; each query head then takes
the candidate of least density (computed / dense-causal pairs) among those whose attention recall
(`attnsieve.eval.fidelity.attention_recall`) reaches the target, else the one of highest recall.

Output: an `attnsieve.integrations.AttentionConfig` JSON (its ``planner(layer)`` is the layer's
`PerHeadPlanner`) with the calibration record under "metadata"::

    {"prefill": "dense",
     "layers": {"0": {"prefill": [{"method": "xattention", "threshold": 0.9}, ...one per head]}},
     "metadata": {"target_recall": 0.95, "candidates": [...],
                  "layers": {"0": [{"recall": 0.97, "density": 0.08}, ...]}}}
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_qk
from attnsieve.eval.fidelity import attention_recall, dense_attention
from attnsieve.methods import get_planner

Candidate = tuple[str, dict[str, Any]]
# Families in increasing budget; dense last so every head has a candidate of recall 1.
DEFAULT_CANDIDATES: list[Candidate] = [
    ("streaming", {"window_tokens": 256}),
    ("streaming", {"window_tokens": 1024}),
    ("streaming", {"window_tokens": 4096}),
    ("vertical_slash", {"vertical_size": 100, "slash_size": 500}),
    ("vertical_slash", {"vertical_size": 500, "slash_size": 2000}),
    ("vertical_slash", {"vertical_size": 1000, "slash_size": 6096}),
    ("flexprefill", {"gamma": 0.85}),
    ("flexprefill", {"gamma": 0.9}),
    ("flexprefill", {"gamma": 0.95}),
    ("xattention", {"threshold": 0.8}),
    ("xattention", {"threshold": 0.9}),
    ("xattention", {"threshold": 0.95}),
    ("dense", {}),
]


def calibrate(
    qk_per_layer: Iterable[tuple[Tensor, Tensor]],
    target_recall: float = 0.95,
    candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
    *,
    causal: bool = True,
) -> dict[str, Any]:
    """Choose a candidate per (layer, query head); returns the JSON-ready dict described above.

    ``qk_per_layer`` yields (q (B, H_q, N, D), k (B, H_kv, M, D)) per layer, e.g. from
    `capture_qk`; recall and density are averaged over the batch. ``candidates`` are
    (planner name, kwargs) pairs; on equal density the earlier candidate wins.
    """
    check_float("target_recall", target_recall, 0.0, 1.0)
    if isinstance(candidates, (str, bytes)) or not candidates:
        raise ValueError("candidates: expected a non-empty list of (planner name, kwargs) pairs")
    candidates = [_candidate(c, i) for i, c in enumerate(candidates)]
    planners = [get_planner(name, **kwargs) for name, kwargs in candidates]  # fail early

    layers: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for index, (q, k) in enumerate(qk_per_layer):
        check_qk(q, k)
        h_q, h_kv = q.shape[1], k.shape[1]
        recall, density = [], []
        lse = dense_attention(q, k, k, causal=causal)[1]  # shared by every candidate's recall
        for planner in planners:
            layout = planner.plan(q, k, causal=causal)
            recall.append(
                attention_recall(q, k, layout, causal=causal, dense_lse=lse).mean(0).cpu()
            )
            per_head = layout.density(causal=causal, reduce=False).mean(0)
            density.append(per_head[layout.heads_for(h_q, h_kv)].cpu())
        recall_t, density_t = torch.stack(recall), torch.stack(density).float()  # (C, H_q)
        reached = recall_t >= target_recall
        cheapest = torch.where(reached, density_t, torch.inf).argmin(0)  # first of equal minima
        choice = torch.where(reached.any(0), cheapest, recall_t.argmax(0)).tolist()
        layers[str(index)] = {
            "prefill": [{"method": candidates[c][0], **candidates[c][1]} for c in choice]
        }
        stats[str(index)] = [
            {"recall": float(recall_t[c, h]), "density": float(density_t[c, h])}
            for h, c in enumerate(choice)
        ]
    if not layers:
        raise ValueError("qk_per_layer: expected at least one (q, k) layer")
    metadata = {
        "target_recall": target_recall,
        "candidates": [list(c) for c in candidates],
        "layers": stats,
    }
    return {"prefill": "dense", "layers": layers, "metadata": metadata}


def capture_qk(model: Any, input_ids: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(q, k) of every attention layer of a transformers model for one forward pass, on the CPU.

    q and k are what the attention receives (after RoPE), seen through `observe_attention`.
    """
    from attnsieve.integrations.transformers import observe_attention

    captured: dict[int, tuple[Tensor, Tensor]] = {}

    def keep(module: Any, query: Tensor, key: Tensor, value: Tensor, scaling: Any) -> None:
        captured[module.layer_idx] = (query.detach().cpu(), key.detach().cpu())

    with observe_attention(model, keep), torch.no_grad():
        model(input_ids=input_ids, use_cache=False)
    return [captured[i] for i in sorted(captured)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--qk", help=".pt file holding a list, per layer, of (q, k) tensors")
    source.add_argument(
        "--model", help="'smollm2', 'probe', a .gguf file or a transformers model path or name"
    )
    parser.add_argument(
        "--prompt-file",
        help="text whose first --length tokens are the sample (default: a generated "
        "needle-in-a-haystack prompt of --length tokens)",
    )
    parser.add_argument("--length", type=int, default=8192, help="sample length in tokens")
    parser.add_argument("--rope-scale", type=float, default=None, help="YaRN factor (--model)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument(
        "--label-channels",
        type=int,
        default=0,
        help="also calibrate R label channels per KV head for the double_sparsity decode selector",
    )
    parser.add_argument(
        "--candidates", help="JSON file with a list of [planner name, kwargs] (default: built-in)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="calibration.json")


def main(args: argparse.Namespace) -> int:
    candidates = DEFAULT_CANDIDATES
    if args.candidates:
        with open(args.candidates) as f:
            candidates = [tuple(c) for c in json.load(f)]
    if args.qk:
        layers = torch.load(args.qk, map_location="cpu")
        if not isinstance(layers, (list, tuple)):
            raise ValueError(
                f"--qk: expected a list of (q, k) per layer, got {type(layers).__name__}"
            )
    else:
        layers = _model_sample(args)
    device = torch.device(args.device)
    layers = [(q.to(device), k.to(device)) for q, k in layers]
    result = calibrate(layers, args.target_recall, candidates)
    if args.label_channels:
        add_label_channels(result, layers, args.label_channels)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    densities = [h["density"] for heads in result["metadata"]["layers"].values() for h in heads]
    mean = sum(densities) / len(densities)
    print(f"wrote {args.output}: {len(result['layers'])} layers, mean density {mean:.3f}")
    return 0


def add_label_channels(result: dict[str, Any], layers: list[tuple[Tensor, Tensor]], r: int) -> None:
    """Put Double Sparsity's calibrated label channels of every layer into the config ``result``:
    each layer's ``decode`` entry gets its ``channels`` (one list per KV head)."""
    from attnsieve.methods.decode.double_sparsity import calibrate_label_channels

    result["decode"] = {"method": "double_sparsity"}
    for index, (q, k) in enumerate(layers):
        channels = calibrate_label_channels(q, k, r).tolist()
        entry = result["layers"].setdefault(str(index), {})
        entry["decode"] = {"method": "double_sparsity", "channels": channels}


def _model_sample(args: argparse.Namespace) -> list[tuple[Tensor, Tensor]]:
    from attnsieve.eval.models import load_model
    from attnsieve.eval.tasks import make_samples

    model, tokenizer, _ = load_model(
        args.model, device=args.device, dtype="auto", rope_scale=args.rope_scale
    )
    if args.prompt_file:
        with open(args.prompt_file) as f:
            text = f.read()
    else:
        text = make_samples("niah_single", tokenizer, args.length, 1, 0)[0].prompt
    ids = torch.tensor([list(tokenizer.encode(text))])
    if ids.shape[1] < args.length and args.prompt_file:
        raise ValueError(f"--length: the prompt file has {ids.shape[1]} tokens < {args.length}")
    return capture_qk(model, ids[:, : args.length].to(model.device))


def _candidate(c: Any, i: int) -> Candidate:
    if (
        not isinstance(c, (tuple, list))
        or len(c) != 2
        or not isinstance(c[0], str)
        or not isinstance(c[1], dict)
    ):
        raise ValueError(f"candidates[{i}]: expected (planner name, kwargs dict), got {c!r}")
    return c[0], dict(c[1])
