"""Timing behind `attnsieve bench e2e`: time to first token of one forward, stock and patched
forwards alternated, the attention-free forward that bounds every method's speed-up, and the
correctness check that must pass before any speed-up is reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attnsieve.bench.common import rel_err
from attnsieve.integrations import AttentionConfig, patch

CHECK_LENGTH = 4096
CHECK_REL_ERR = 0.05  # bf16 through every layer; a wrong kernel or transpose gives O(1)
# INT8 Q.K and FP8 P.V through every layer drift further from SDPA's logits (0.22 on 32 random
# Llama-3-8B layers at 32K, select/e2e_llama_inorder/); this bound catches a broken kernel (zero
# output or another head's: 1.4), and bench kernels' per-head cosine checks its precision
CHECK_REL_ERR_INT8 = 0.5
ATTENTION_FREE = "attnsieve_attention_free"  # the attention implementation of the bound's runs

Run = tuple[float, Tensor, float]  # seconds to first token, last-position logits, peak GiB
Tick = Callable[[str], None]  # told each forward's attention implementation, for a progress bar


@torch.inference_mode()
def _forward(model: Any, ids: Tensor) -> Run:
    torch.cuda.synchronize(ids.device)
    torch.cuda.reset_peak_memory_stats(ids.device)
    start = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    out.logits[:, -1].argmax(-1)
    torch.cuda.synchronize(ids.device)
    elapsed = time.perf_counter() - start
    logits = out.logits[0, -1].float()
    del out  # frees the KV cache before the next run
    return elapsed, logits, torch.cuda.max_memory_allocated(ids.device) / 2**30


def best(runs: list[Run]) -> float:
    """The best seconds to first token of ``runs``."""
    return min(run[0] for run in runs)


def median(runs: list[Run]) -> float:
    """The median seconds to first token of ``runs``."""
    return statistics.median(run[0] for run in runs)


def time_prefill(model: Any, ids: Tensor, repeats: int, tick: Tick | None = None) -> Run:
    """(best seconds to first token, last-position logits, peak GiB) after one warm-up run;
    ``tick(attention implementation)`` after every forward."""
    runs = []
    for _ in range(repeats + 1):
        runs.append(_forward(model, ids))
        if tick is not None:
            tick(model.config._attn_implementation)
    return best(runs[1:]), runs[-1][1], max(run[2] for run in runs)


def time_alternating(
    model: Any, ids: Tensor, repeats: int, stock: str, tick: Tick | None = None
) -> tuple[list[Run], list[Run]]:
    """Runs of the stock model (attention implementation ``stock``) and of the patched one,
    alternated after one warm-up of each, so that drift in clocks or host load weighs on both
    alike, and each going first in every other pair (ABBA), so that neither always runs right
    after the other. The model is patched; it runs stock by switching its attention
    implementation. ``tick(implementation)`` after every forward."""
    patched = model.config._attn_implementation
    runs: dict[str, list[Run]] = {stock: [], patched: []}
    for i in range(repeats + 1):
        for impl in (stock, patched) if i % 2 == 0 else (patched, stock):
            model.set_attn_implementation(impl)
            runs[impl].append(_forward(model, ids))
            if tick is not None:
                tick(impl)
    model.set_attn_implementation(patched)
    return runs[stock][1:], runs[patched][1:]


def attention_free(
    module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any
) -> tuple[Tensor, None]:
    """Attention that computes nothing: zeros shaped like its output (B, N, H_q, D_v)."""
    b, h, n, _ = query.shape
    return query.new_zeros(b, n, h, value.shape[-1]), None


def time_attention_free(model: Any, ids: Tensor, repeats: int, tick: Tick | None = None) -> float:
    """Best seconds to first token with `attention_free` as every layer's attention: what the
    forward costs besides attention (its logits are meaningless)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION_FREE, attention_free)
    AttentionMaskInterface.register(ATTENTION_FREE, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_FREE)
    try:
        return time_prefill(model, ids, repeats, tick)[0]
    finally:
        model.set_attn_implementation(previous)


def correctness_check(model: Any, device: torch.device, precision: str = "bf16") -> dict[str, Any]:
    """Every block through the attnsieve kernel of ``precision`` ("bf16" or "int8-fp8"; a
    streaming window over the whole prompt, not a layout flagged dense, so SDPA dispatch is
    bypassed) must give SDPA's last-position logits, within `CHECK_REL_ERR` (bf16) or
    `CHECK_REL_ERR_INT8`.

    The cost model is off: it would send every layer of this full-density layout to SDPA, and the
    check would compare SDPA with itself. A layer that still ran dense fails the check. On CUDA
    the plans run from CUDA graphs, as in the timed runs: the checked forward is the third, a
    replay (the second captures), and a check without a replay fails."""
    ids = torch.randint(0, model.config.vocab_size, (1, CHECK_LENGTH), device=device)
    full = AttentionConfig(
        prefill={"method": "streaming", "sink_tokens": 0, "window_tokens": CHECK_LENGTH},
        min_prefill_length=1,
        precision=precision,
    )
    tolerance = CHECK_REL_ERR if precision == "bf16" else CHECK_REL_ERR_INT8
    _, reference, _ = time_prefill(model, ids, 1)
    graphs = device.type == "cuda"
    handle = patch(model, full, cost=None, graphs=graphs)
    with handle as stats:
        _, logits, _ = time_prefill(model, ids, 2)
        dense_layers = sum(f is not None for f in stats.fallback_per_layer)
        replayed = graphs and handle.graphs.captured > 0
    err = rel_err(logits, reference)
    return {
        "length": CHECK_LENGTH,
        "rel_err": err,
        "precision": precision,
        "tolerance": tolerance,
        "dense_fallback_layers": dense_layers,
        "graph_replay": replayed,
        "passed": err < tolerance and dense_layers == 0 and replayed == graphs,
    }
