"""`attnsieve calibrate`: per layer and head, the cheapest planner and budget reaching a recall.

Offline per-head configuration as in MInference (arXiv 2407.02490: one pattern and budget per head,
searched once on a sample), MoA (arXiv 2406.14909: heterogeneous budgets across heads and layers)
and TCA-Attention (one calibration pass over a sample, no training). Every candidate (planner
name, hyper-parameters) plans every layer of a captured sample once; each query head then takes
the candidate of least density (computed / dense-causal pairs) among those whose attention recall
(`attnsieve.eval.fidelity.attention_recall`) reaches the target, else the least dense of those of
highest recall.
With ``--per-layer`` each layer takes one candidate instead: together the fastest by the cost model
(`attnsieve.integrations.cost`: planning replayed from a CUDA graph + the sparse kernel at the
density) whose recall, averaged over layers and heads, reaches the target, as the issue's metric
and MoA's (a whole-model budget shared unevenly) count it. With ``--mean-recall`` the heads keep
one candidate each but reach the target together, on the recall averaged over every layer and
head, with the least computed pairs (`attnsieve.eval.allocation`). A per-head mix costs one plan
per head at run time, except where every head of a layer chose vertical_slash, or flexprefill:
then one entry with per-head budgets (or γ) plans them at once; a layer's single planner costs
one plan, one graph and one cost decision.

With ``--retrieval-heads PATH`` it finds RazorAttention's retrieval heads instead (arXiv 2407.15891,
section 3.2: the echo and induction heads of the model, on random tokens repeated;
`attnsieve.eval.retrieval_heads`) and writes the KV-policy entry ``{"method": "razor",
"retrieval_heads": {layer: [KV heads]}}`` that ``attnsieve eval --kv PATH`` and
``AttentionConfig(kv=...)`` take; the options of the calibration are refused with it (and its
``--echo-ratio`` / ``--induction-ratio`` without it). The output path, ``--candidates``,
``--target-recall`` and the two ratios are checked before any model runs.

Output: an `attnsieve.integrations.AttentionConfig` JSON (its ``planner(layer)`` is the layer's
`PerHeadPlanner`, or one `VerticalSlashPlanner` with per-head budgets, or one
`FlexPrefillPlanner` with per-head γ) with the calibration record under "metadata"::

    {"prefill": "dense",
     "layers": {"0": {"prefill": [{"method": "xattention", "threshold": 0.9}, ...one per head]}},
     "min_prefill_length": 2048,
     "metadata": {"granularity": "head", "heads_jointly": false, "target_recall": 0.95,
                  "candidates": [...], "layers": {"0": [{"recall": 0.97, "density": 0.08}, ...]}}}

(heads that all chose vertical_slash: ``"prefill": {"method": "vertical_slash", "vertical_size":
[one per head], "slash_size": [one per head], ...}``; flexprefill: ``"gamma": [one per head]``;
with ``--mean-recall`` the metadata also
holds the whole sample's ``mean_recall``, ``mean_density`` and ``target_reached``)

and with ``--per-layer`` ``"layers": {"0": {"prefill": {"method": "streaming", ...}}}`` (None for
dense SDPA), one record a layer with its ``predicted_ms`` and every candidate's recall, density and
ms (``by_candidate``), and the whole model's ``mean_recall`` and ``predicted_ms``.

``min_prefill_length`` is `AttentionConfig`'s default, written out so that the file means one
thing everywhere: ``attnsieve eval`` gives a file that sets none its own default (1), ``attnsieve
run`` and `AttentionConfig.from_json` 2048.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from attnsieve.api.backend import FLOAT
from attnsieve.checks import check_dtype, check_float, check_qk
from attnsieve.eval.allocation import head_entries, per_head_mean, per_layer, predicted_ms
from attnsieve.eval.fidelity import attention_recall, dense_attention
from attnsieve.eval.retrieval_heads import repeated_random_tokens, retrieval_heads
from attnsieve.integrations.config import AttentionConfig, read_json
from attnsieve.integrations.cost import CostModel
from attnsieve.methods import get_planner
from attnsieve.methods.prefill.base import at_default_scale

Candidate = tuple[str, dict[str, Any]]
# Families in increasing budget; dense last so every head has a candidate of recall 1.
DEFAULT_CANDIDATES: list[Candidate] = [
    ("streaming", {"window_tokens": 256}),
    ("streaming", {"window_tokens": 1024}),
    ("streaming", {"window_tokens": 2048}),
    ("streaming", {"window_tokens": 4096}),
    ("streaming", {"window_tokens": 8192}),
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


QK = tuple[Tensor, Tensor]


def by_layer(qk_per_layer: Mapping[int, QK] | Iterable[QK]) -> list[tuple[int, QK]]:
    """(layer index, (q, k)) pairs: a mapping's own layer indices (as `capture_qk` returns, so a
    model whose attention layers are not numbered 0..L-1 keeps its numbers), or positions."""
    if isinstance(qk_per_layer, Mapping):
        return sorted(qk_per_layer.items())
    return list(enumerate(qk_per_layer))


def checked_layers(
    qk_per_layer: Mapping[int, QK] | Iterable[QK], name: str, where: str
) -> list[tuple[int, QK]]:
    """`by_layer`'s pairs, every one checked before any is calibrated (a calibration takes a
    while): at least one, each of non-empty, finite tensors; an error names them all as ``name``
    and layer i as ``where.format(i)``."""
    pairs = by_layer(qk_per_layer)
    if not pairs:
        raise ValueError(f"{name}: expected at least one (q, k) layer")
    for index, pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2) or not all(
            isinstance(t, torch.Tensor) for t in pair
        ):
            raise ValueError(f"{where.format(index)}: expected a (q, k) pair of tensors")
        try:
            check_qk(*pair)
            check_dtype("q", pair[0], FLOAT)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{where.format(index)}: {e}") from None
        if 0 in pair[0].shape or 0 in pair[1].shape:
            shapes = [tuple(t.shape) for t in pair]
            raise ValueError(f"{where.format(index)}: expected no empty dimension, got {shapes}")
        if not all(bool(torch.isfinite(t).all()) for t in pair):
            raise ValueError(f"{where.format(index)}: q and k must be finite (a NaN or inf)")
    return pairs


def calibrate(
    qk_per_layer: Mapping[int, QK] | Iterable[QK],
    target_recall: float = 0.95,
    candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
    *,
    causal: bool = True,
    granularity: str = "head",
    cost: CostModel | None = None,
    mean_recall: bool = False,
) -> dict[str, Any]:
    """Choose a candidate per (layer, query head); returns the JSON-ready dict described above.

    ``qk_per_layer`` maps layer indices to (q (B, H_q, N, D), k (B, H_kv, M, D)), as `capture_qk`
    returns, or lists them from layer 0; recall and density are averaged over the batch.
    ``candidates`` are (planner name, kwargs) pairs; on equal density the earlier candidate
    wins. With ``granularity="layer"`` each layer instead takes one candidate, so that together
    they take the least predicted time by ``cost`` (default `CostModel()`, the H200's: the
    planning time of a plan replayed from a CUDA graph plus the sparse kernel at the layer's mean
    density; dense SDPA for "dense") while their recall, averaged over layers and heads, reaches
    the target (`attnsieve.eval.allocation`); a layer that takes "dense" gets no planner
    (``None``: SDPA, unplanned). One planner a layer keeps the layer one plan, one CUDA graph and
    one cost decision at run time. With ``mean_recall`` (per head only) the heads instead reach
    the target together: the least summed density whose recall, averaged over every layer and
    head, reaches it, so a head whose last few points of recall cost many pairs can give them up
    to cheaper heads. Heads of a layer that all chose vertical_slash (or flexprefill), differing
    in budgets (or γ) only, get one entry with per-head values (`one_plan_for_heads`): one plan a
    layer.
    """
    check_float("target_recall", target_recall, 0.0, 1.0)
    if granularity not in ("head", "layer"):
        raise ValueError(f"granularity: expected 'head' or 'layer', got {granularity!r}")
    if not isinstance(mean_recall, bool) or (mean_recall and granularity != "head"):
        raise ValueError(f"mean_recall: expected a bool, True with granularity 'head' only, got "
                         f"{mean_recall!r} with {granularity!r}")  # fmt: skip
    if cost is not None and not isinstance(cost, CostModel):
        raise TypeError(f"cost: expected a CostModel or None, got {type(cost).__name__}")
    layer_cost = (cost or CostModel()) if granularity == "layer" else None
    if isinstance(candidates, (str, bytes)) or not candidates:
        raise ValueError("candidates: expected a non-empty list of (planner name, kwargs) pairs")
    candidates = [_candidate(c, i) for i, c in enumerate(candidates)]
    planners = [get_planner(name, **kwargs) for name, kwargs in candidates]  # fail early
    for i, planner in enumerate(planners):
        if granularity == "head" and getattr(planner, "share_kv_group", False):
            # measured here on every head at once, it plans a KV group together; a layer of
            # several per-head choices runs each head alone (`PerHeadPlanner`)
            raise ValueError(
                f"candidates[{i}]: share_kv_group plans the query heads of a KV head together, "
                "which a per-head choice cannot keep; leave it out, or calibrate per layer"
            )

    layers: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    options: list[tuple[int, Tensor, Tensor, Tensor]] = []  # per layer: index, ms, recall, density
    head_options: list[tuple[int, Tensor, Tensor]] = []  # per layer: index, recall, density
    pairs = checked_layers(qk_per_layer, "qk_per_layer", "qk_per_layer[{}]")
    for index, (q, k) in tqdm(pairs, desc="attnsieve calibrate", unit="layer"):
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
        if not torch.isfinite(recall_t).all():
            raise ValueError(
                f"qk_per_layer[{index}]: the attention recall is not finite (q·k overflows?)"
            )
        if layer_cost is not None:
            ms = predicted_ms(layer_cost, candidates, density_t.mean(1), q, k)
            options.append((index, ms, recall_t.mean(1), density_t.mean(1)))
            continue
        if mean_recall:
            head_options.append((index, recall_t, density_t))
            continue
        reached = recall_t >= target_recall
        cheapest = torch.where(reached, density_t, torch.inf).argmin(0)  # first of equal minima
        # short of the target: the sparsest of the highest recall (as `allocate`), not the first
        best = torch.where(recall_t == recall_t.amax(0), density_t, torch.inf).argmin(0)
        choice = torch.where(reached.any(0), cheapest, best).tolist()
        layers[str(index)], stats[str(index)] = head_entries(
            choice, candidates, planners, recall_t, density_t
        )
    metadata: dict[str, Any] = {"granularity": granularity, "heads_jointly": mean_recall}
    if options:
        layers, stats, summary = per_layer(options, candidates, target_recall)
        metadata.update(summary)
    if head_options:
        choices, summary = per_head_mean(head_options, target_recall)
        for (index, choice), (_, recall_t, density_t) in zip(choices, head_options, strict=True):
            layers[str(index)], stats[str(index)] = head_entries(
                choice, candidates, planners, recall_t, density_t
            )
        metadata.update(summary)
    metadata.update(
        target_recall=target_recall, candidates=[list(c) for c in candidates], layers=stats
    )
    return {
        "prefill": "dense",
        "layers": layers,
        "min_prefill_length": AttentionConfig.min_prefill_length,  # see the module docstring
        "metadata": metadata,
    }


def capture_qk(model: Any, input_ids: Tensor) -> dict[int, QK]:
    """{layer index: (q, k)} of every attention layer of a transformers model for one forward
    pass, on the CPU.

    q and k are what the attention receives (after RoPE), seen through `observe_attention`; q
    rescaled where the model's softmax scale is not 1/sqrt(D) (`at_default_scale`), as recall
    and every planner here assume it.
    """
    from attnsieve.integrations.transformers import observe_attention

    captured: dict[int, tuple[Tensor, Tensor]] = {}

    def keep(module: Any, query: Tensor, key: Tensor, value: Tensor, scaling: Any) -> None:
        query = at_default_scale(query.detach(), scaling)
        captured[module.layer_idx] = (query.cpu(), key.detach().cpu())

    with observe_attention(model, keep), torch.no_grad():
        model(input_ids=input_ids, use_cache=False)
    return dict(sorted(captured.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--qk",
        help=".pt file holding a list, per layer, of (q, k) tensors (attention at 1/sqrt(D))",
    )
    source.add_argument(
        "--model", help="'smollm2', 'probe', a .gguf file or a transformers model path or name"
    )
    parser.add_argument(
        "--prompt-file",
        help="text whose first --length tokens (the tokenizer's BOS included) are the sample "
        "(default: a generated needle-in-a-haystack prompt of up to --length tokens, whole)",
    )
    parser.add_argument("--length", type=int, help="sample length in tokens (default 8192)")
    parser.add_argument("--rope-scale", type=float, default=None, help="YaRN factor (--model)")
    parser.add_argument("--target-recall", type=float, help="default 0.95")
    parser.add_argument(
        "--per-layer",
        action="store_true",
        default=None,  # given or not (see _CALIBRATION_OPTIONS)
        help="one candidate per layer: together the fastest by the H200 cost model whose recall, "
        "averaged over layers and heads, reaches the target (default: the sparsest per head)",
    )
    parser.add_argument(
        "--mean-recall",
        action="store_true",
        default=None,  # given or not (see _CALIBRATION_OPTIONS)
        help="per head, but the heads reach the target together: the least computed pairs whose "
        "recall, averaged over every layer and head, reaches it (default: each head on its own)",
    )
    parser.add_argument(
        "--label-channels",
        type=int,
        help="also calibrate R label channels per KV head for the double_sparsity decode selector "
        "(default 0: none)",
    )
    parser.add_argument(
        "--candidates", help="JSON file with a list of [planner name, kwargs] (default: built-in)"
    )
    parser.add_argument(
        "--retrieval-heads",
        metavar="PATH",
        help="instead: find RazorAttention's retrieval heads (--model) and write its KV-policy "
        "entry to PATH (the options of the calibration are refused with it)",
    )
    parser.add_argument(
        "--echo-ratio", type=float, help="--retrieval-heads: fraction of echo heads (default 0.01)"
    )
    parser.add_argument(
        "--induction-ratio",
        type=float,
        help="--retrieval-heads: fraction of induction heads (default 0.14)",
    )
    from attnsieve.eval.models import add_device_argument  # as main's: loaded on use

    add_device_argument(parser)
    parser.add_argument("--output", help="the config JSON to write (default calibration.json)")


# Options of one mode only (the calibration, or --retrieval-heads) and their defaults; the parser
# leaves them None unless given, so that given to the other mode they are refused, not ignored.
_CALIBRATION_OPTIONS = {
    "prompt_file": None,
    "length": 8192,
    "target_recall": 0.95,
    "per_layer": False,
    "mean_recall": False,
    "label_channels": 0,
    "candidates": None,
    "output": "calibration.json",
}
_RETRIEVAL_OPTIONS = {"echo_ratio": 0.01, "induction_ratio": 0.14}
_SAMPLE_OPTIONS = ("prompt_file", "length", "rope_scale")  # of a --model's sample only


def main(args: argparse.Namespace) -> int:
    retrieval = args.retrieval_heads is not None  # '' is a path given (and refused), not absent
    own, other = (_RETRIEVAL_OPTIONS, _CALIBRATION_OPTIONS)
    if not retrieval:
        own, other = other, own
    given = [f"--{n.replace('_', '-')}" for n in other if getattr(args, n) is not None]
    if given:
        mode = "not used with" if retrieval else "used only with"
        raise ValueError(f"{', '.join(given)}: {mode} --retrieval-heads")
    sample = [f"--{n.replace('_', '-')}" for n in _SAMPLE_OPTIONS if getattr(args, n) is not None]
    if args.qk is not None and sample:
        raise ValueError(f"{', '.join(sample)}: shape the sample of --model, not used with --qk")
    for name, default in own.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("target_recall", "echo_ratio", "induction_ratio"):  # before the model runs
        if name in own:
            check_float(f"--{name.replace('_', '-')}", getattr(args, name), 0.0, 1.0)
    if retrieval:
        return _main_retrieval_heads(args)
    _check_output(args.output, "--output")  # before the calibration, which takes a while
    candidates = (
        DEFAULT_CANDIDATES if args.candidates is None else _read_candidates(args.candidates)
    )
    if args.per_layer and args.mean_recall:
        raise ValueError("--mean-recall: not used with --per-layer (one candidate a layer)")
    if args.length < 1:
        raise ValueError(f"--length: expected a positive number of tokens, got {args.length}")
    if args.label_channels < 0:
        raise ValueError(f"--label-channels: expected R >= 0 (0: none), got {args.label_channels}")
    if args.qk:
        try:
            layers = torch.load(args.qk, map_location="cpu")
        except pickle.UnpicklingError:  # torch's weights_only refusal advises an unsafe load
            raise ValueError(
                f"--qk: {args.qk} is not a file of tensors that torch.load(weights_only=True) reads"
            ) from None
        except Exception as e:  # missing, or not a torch file: OS, zip and key errors
            raise ValueError(f"--qk: cannot read {args.qk} as a torch file ({e})") from None
        if not isinstance(layers, (list, tuple, dict)):
            raise ValueError(
                f"--qk: expected a list of (q, k) per layer or a dict {{layer: (q, k)}}, got "
                f"{type(layers).__name__}"
            )
        if isinstance(layers, dict) and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
        ):
            raise ValueError(
                f"--qk: expected layer numbers >= 0 as the dict's keys, got {list(layers)[:8]}"
            )
        for index, (q, k) in checked_layers(layers, "--qk", "--qk: layer {}"):
            if args.label_channels and q.shape[2] > k.shape[2]:
                raise ValueError(
                    f"--label-channels: expected N <= M (each query with its own key), got "
                    f"N={q.shape[2]}, M={k.shape[2]} in layer {index} of --qk"
                )
    else:
        layers = _model_sample(args)
    device = torch.device(args.device)
    layers = {index: (q.to(device), k.to(device)) for index, (q, k) in by_layer(layers)}
    for q, _ in layers.values():  # before the calibration, which takes a while
        _check_label_channels(args.label_channels, q.shape[-1])
    granularity = "layer" if args.per_layer else "head"
    result = calibrate(
        layers, args.target_recall, candidates, granularity=granularity,
        mean_recall=args.mean_recall,
    )  # fmt: skip
    if args.label_channels:
        add_label_channels(result, layers, args.label_channels)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    records = result["metadata"]["layers"].values()
    heads = [[r] if args.per_layer else r for r in records]  # one record a layer, or a head
    densities = [h["density"] for r in heads for h in r]
    mean = sum(densities) / len(densities)
    print(f"wrote {args.output}: {len(result['layers'])} layers, mean density {mean:.3f}")
    return 0


def _main_retrieval_heads(args: argparse.Namespace) -> int:
    from attnsieve.eval.models import load_model

    if not args.model:
        raise ValueError("--retrieval-heads: needs --model (it runs the model on its own probe)")
    _check_output(args.retrieval_heads, "--retrieval-heads")
    model, tokenizer, _ = load_model(
        args.model, device=args.device, dtype="auto", rope_scale=args.rope_scale
    )
    heads, echo, induction = retrieval_heads(
        model,
        repeated_random_tokens(tokenizer),
        echo=args.echo_ratio,
        induction=args.induction_ratio,
    )
    entry = {"method": "razor", "retrieval_heads": {str(k): v for k, v in heads.items()}}
    with open(args.retrieval_heads, "w") as f:
        json.dump(entry, f, indent=1)
    total = sum(len(v) for v in heads.values())
    print(
        f"wrote {args.retrieval_heads}: {total} of {echo.numel()} KV heads in {len(heads)} layers "
        f"(echo scores up to {echo.max():.2f}, induction up to {induction.max():.2f})"
    )
    return 0


def add_label_channels(
    result: dict[str, Any], layers: Mapping[int, QK] | Iterable[QK], r: int
) -> None:
    """Put Double Sparsity's calibrated label channels of every layer into the config ``result``:
    each layer's ``decode`` entry gets its ``channels`` (one list per KV head)."""
    from attnsieve.methods.decode.double_sparsity import calibrate_label_channels

    result["decode"] = {"method": "double_sparsity"}
    for index, (q, k) in by_layer(layers):
        channels = calibrate_label_channels(q, k, r).tolist()
        entry = result["layers"].setdefault(str(index), {})
        entry["decode"] = {"method": "double_sparsity", "channels": channels}


def _check_label_channels(channels: int, head_dim: int | None) -> None:
    if head_dim is not None and channels > head_dim:
        raise ValueError(
            f"--label-channels: expected at most the head dimension {head_dim}, got {channels}"
        )


def _model_sample(args: argparse.Namespace) -> list[tuple[Tensor, Tensor]]:
    from attnsieve.eval.models import (
        load_model,
        model_text_config,
        read_prompt_file,
        spec_tokenizer,
    )
    from attnsieve.eval.sweep_args import check_lengths_fit
    from attnsieve.integrations.transformers import head_dim_of

    # the length, the label channels and the prompt are checked before the weights load
    text_config = model_text_config(args.model, args.rope_scale)
    check_lengths_fit([args.length], text_config.max_position_embeddings, name="--length")
    _check_label_channels(args.label_channels, head_dim_of(text_config))
    text = read_prompt_file(args.prompt_file) if args.prompt_file else None
    tokenizer = spec_tokenizer(args.model)
    if text is None:
        text = _generated_prompt(tokenizer, args.length)
    ids = torch.tensor([list(tokenizer.encode(text))])
    if ids.shape[1] < args.length and args.prompt_file:
        raise ValueError(f"--length: the prompt file has {ids.shape[1]} tokens < {args.length}")
    model, _, _ = load_model(
        args.model,
        device=args.device,
        dtype="auto",
        rope_scale=args.rope_scale,
        tokenizer=tokenizer,
    )
    return capture_qk(model, ids[:, : args.length].to(model.device))


def _generated_prompt(tokenizer: Any, length: int) -> str:
    """A needle-in-a-haystack prompt of up to ``length`` tokens counted with those the tokenizer
    adds (BOS), whole, as `attnsieve eval --fidelity` builds its own: Q/K of the prompt alone are
    captured, so it takes the whole length. Too short a length names --length."""
    from attnsieve.eval.tasks import LengthTooShortError, prefill_sample

    try:
        return prefill_sample("niah_single", tokenizer, length, 0).prompt
    except LengthTooShortError as e:  # it names make_samples' own length, not the option
        shortest = str(e).partition(": ")[2]
        raise ValueError(
            f"--length: {length} tokens cannot hold the generated sample: {shortest}"
        ) from None


def _check_output(path: str, name: str) -> None:
    """Refuse an output ``path`` that cannot be written (a folder, or in a missing or read-only
    one), naming the option ``name``: before the work whose result it would hold."""
    if not path:
        raise ValueError(f"{name}: expected a path to write, got ''")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path} is a folder; expected a file to write")
    if not os.path.isdir(folder):
        raise ValueError(f"{name}: no such folder: {folder}")
    existed = os.path.exists(path)
    try:  # by opening it: permission bits do not bind root, and /proc takes no new file
        with open(path, "a"):
            pass
    except OSError as e:
        raise ValueError(f"{name}: cannot write {path} ({e.strerror})") from None
    if not existed:
        os.remove(path)


def _read_candidates(path: str) -> list[Candidate]:
    """The (planner name, kwargs) pairs of a --candidates JSON file, each checked."""
    data = read_json(path, f"--candidates: {path}", "the file")
    if not isinstance(data, list) or not data:
        raise ValueError(
            f"--candidates: expected a non-empty JSON list of [planner name, kwargs] pairs, got "
            f"{json.dumps(data):.60}"
        )
    try:
        candidates = [_candidate(c, i) for i, c in enumerate(data)]
    except ValueError as e:
        raise ValueError(f"--candidates: {e}") from None
    planners = []
    for i, (name, kwargs) in enumerate(candidates):  # before the model loads
        try:
            planners.append(get_planner(name, **kwargs))
        except (ValueError, TypeError) as e:
            raise type(e)(f"--candidates: {path}: entry {i}: {e}") from None
        if planners[-1] in planners[:-1]:  # measured twice, and a tie between the two
            first = planners.index(planners[-1])
            raise ValueError(
                f"--candidates: {path}: entry {i} plans as entry {first}; give each candidate once"
            )
    return candidates


def _candidate(c: Any, i: int) -> Candidate:
    if (
        not isinstance(c, (tuple, list))
        or len(c) != 2
        or not isinstance(c[0], str)
        or not isinstance(c[1], dict)
    ):
        raise ValueError(f"candidates[{i}]: expected (planner name, kwargs dict), got {c!r}")
    return c[0], dict(c[1])
