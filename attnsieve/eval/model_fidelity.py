"""`attnsieve eval --fidelity`: each method's layouts on a real model's own Q/K/V, layer by layer.

One prompt runs through the dense model; transformers' AttentionInterface hands every layer's
Q/K/V to `run_fidelity`, which plans each method's layout on them and measures its attention recall
and output error per head (`attnsieve.eval.fidelity`), and what `attnsieve.patch` would run there
("as patched": the cost model's dense layers recall everything). Then each patched model's last
logits are compared with the stock model's.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from attnsieve.bench.common import next_token_kl


def cost_model_runs_dense(planner: Any, query: Tensor, key: Tensor, density: float) -> bool:
    """Whether `attnsieve.patch`'s default cost model sends a layer whose plan has ``density`` to
    dense attention (with CUDA graphs, as patched by default), from the patched model's second
    prompt of these shapes on: a layer that its prior density (no plan measured yet) sends dense
    never plans, so never measures a density that would pay; one that plans goes dense once its
    plan's density does not pay. Only on a GPU: elsewhere the patched model plans every layer."""
    from attnsieve.integrations.handle import planner_name
    from attnsieve.integrations.transformers import DEFAULT_COST

    if not query.is_cuda:
        return False
    b, h, n, d = query.shape
    shape = (b, h, n, key.shape[2], d)
    name = planner_name(planner)
    return not all(
        DEFAULT_COST.plan_pays(name, known, *shape, graphed=True) for known in (None, density)
    )


def check_prefill_only(methods: list[tuple[str, Any]]) -> None:
    """--fidelity measures prefill layouts: a KV policy, a decode selector or an FP8 KV cache
    (from --kv, --decode, --precision or a config file, in any layer) would go unmeasured."""
    decode_side = [label for label, config in methods if config.needs_paged_cache]
    if decode_side:
        raise ValueError(
            f"methods: {decode_side} configure a KV policy, a decode selector or an FP8 KV cache, "
            "and --fidelity measures prefill layouts only (their recall and output error): drop "
            "those roles (--kv, --decode, fp8-kv, or the config file's), or run without --fidelity"
        )


def run_fidelity(model, tokenizer, name, methods, sample, length, args) -> dict:
    """Per layer/head recall and output error of every method's layout on one prompt: ``sample``
    of `prefill_sample` at ``length``."""
    from attnsieve.eval.fidelity import attention_recall, dense_attention, output_error
    from attnsieve.integrations import patch
    from attnsieve.integrations.transformers import observe_attention
    from attnsieve.methods import get_planner

    metrics = ("recall", "rel_l2", "cosine", "density", "cost_dense")
    layers: dict[str, dict[str, dict[int, Any]]] = {
        lab: {m: {} for m in metrics} for lab, _ in methods
    }
    bar = tqdm(
        total=model.config.get_text_config().num_hidden_layers, desc="fidelity", unit="layer"
    )

    quantized = any(config.prefill_precision != "bf16" for _, config in methods)
    unplanned = get_planner("dense")

    def measure(module: Any, query: Tensor, key: Tensor, value: Tensor, scaling: Any) -> None:
        layer = module.layer_idx
        dense_out, dense_lse = dense_attention(query, key, value, scale=scaling)  # once per layer
        exact = None
        if quantized:  # low precision is judged against float32, not the model's bf16
            exact = dense_attention(
                query.float(), key.float(), value.float(), scale=scaling, backend="reference"
            )[0]
        for label, config in methods:
            planner = config.planner(layer)  # None: the layer runs SDPA, measured as dense
            layout = (planner or unplanned).plan(query, key, causal=True, scale=scaling)
            low = config.prefill_precision != "bf16"
            # a layer without a planner runs SDPA at the model's precision, never quantized
            precision = "bf16" if planner is None else config.prefill_precision
            error = output_error(
                query, key, value, layout, scale=scaling, dense_out=exact if low else dense_out,
                precision=precision,
            )  # fmt: skip
            recall = attention_recall(query, key, layout, scale=scaling, dense_lse=dense_lse)
            result = layers[label]
            result["recall"][layer] = recall.mean(0).tolist()  # mean over batch -> per head
            result["rel_l2"][layer] = error["rel_l2"].mean(0).tolist()
            result["cosine"][layer] = error["cosine"].mean(0).tolist()
            result["density"][layer] = layout.density(causal=True)
            # dense as patched: no planner, a prompt under min_prefill_length, or the cost model
            result["cost_dense"][layer] = (
                planner is None
                or query.shape[2] < config.min_prefill_length
                or cost_model_runs_dense(planner, query, key, result["density"][layer])
            )
        bar.update(1)

    ids = torch.tensor([list(tokenizer.encode(sample.prompt))], device=model.device)

    def last_logits() -> Tensor:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()

    try:
        with observe_attention(model, measure), torch.inference_mode():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        bar.close()
    stock = last_logits()
    logits = {}
    for label, config in methods:
        with patch(model, config, cost=None):
            out = last_logits()
        logits[label] = {
            "logit_rel_err": float((out - stock).norm() / stock.norm()),
            "logit_kl": next_token_kl(out, stock),
            "top1_agrees": bool(torch.equal(out.argmax(-1), stock.argmax(-1))),
        }
    results = {}
    for label, config in methods:
        per = {m: [layers[label][m][i] for i in sorted(layers[label][m])] for m in metrics}
        flat = {m: [x for row in per[m] for x in row] for m in ("recall", "rel_l2", "cosine")}
        dense = per.pop("cost_dense")
        numbers = sorted(layers[label]["cost_dense"])  # the model's layer_idx of each row
        as_patched = [[1.0] * len(r) if d else r for r, d in zip(per["recall"], dense, strict=True)]
        results[label] = {
            "config": config.to_dict(),
            **per,
            **{f"mean_{m}": statistics.fmean(v) for m, v in flat.items()},
            "min_cosine": min(flat["cosine"]),
            "mean_density": statistics.fmean(per["density"]),
            **logits[label],
            "as_patched": {
                "cost_dense_layers": [i for i, d in zip(numbers, dense, strict=True) if d],
                "mean_recall": statistics.fmean(x for row in as_patched for x in row),
                "mean_density": statistics.fmean(
                    1.0 if d else x for x, d in zip(per["density"], dense, strict=True)
                ),
            },
        }
    return {
        "model": name,
        "task": sample.task,
        "length": length,
        "num_tokens": ids.shape[1],  # the prompt's, with the tokenizer's BOS
        "seed": args.seed,
        "methods": results,
    }
