"""Where a patched SmolLM2-shaped model (random weights, bf16) loses time on short prompts.

Time to first token over ``--lengths`` of, in rotating order within each round (so that drift in
clocks or host load weighs on all alike), best and median of ``--repeats`` rounds:

- ``stock``: transformers' "sdpa";
- ``renamed``: transformers' own SDPA function registered under another name (what being a
  custom attention implementation costs by itself, mask creation included);
- ``patched``: the adapter with the default config (cost model and graphs on);
- ``direct``: the adapter with ``min_prefill_length`` above every length (no cost decision);
- ``unplanned``: the adapter with no planner (every prompt layer dense, recorded as such);

and, per attention call, the host time spent inside the attention function (wall time of the
call, no synchronisation: the forward is host-bound at these lengths) for stock and patched.

    PYTHONPATH=. python3 benchmarks/time_short_prompts.py --lengths 2k,3k,4k,6k --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from attnsieve.bench.common import environment
from attnsieve.eval.sweep_args import parse_length
from attnsieve.integrations import AttentionConfig
from attnsieve.integrations import transformers as adapter

ADAPTER_CONFIGS = {
    "patched": AttentionConfig(),
    "direct": AttentionConfig(min_prefill_length=1 << 30),
    "unplanned": AttentionConfig(prefill=None),
}


def smollm2_shaped() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        max_position_embeddings=32768, attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).cuda().to(torch.bfloat16).eval()


def timed(fn, spent: list[float]):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    return wrapper


def register(name: str, fn) -> None:
    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class Variants:
    """Switches one model between the variants: an attention implementation, and for the
    adapter's a handle of its own (kept across runs, as one patch would keep it)."""

    def __init__(self, model) -> None:
        self.model = model
        self.modules = [m for m in model.modules() if getattr(m, "layer_idx", None) is not None]
        self.handles = {
            name: adapter.PatchHandle(config, 30, adapter.DEFAULT_COST, graphs=True)
            for name, config in ADAPTER_CONFIGS.items()
        }

    def use(self, name: str, impl: str | None = None) -> None:
        handle = self.handles.get(name)
        for module in self.modules:
            setattr(module, adapter._HANDLE_ATTR, handle)
        default = adapter.ATTN_NAME if handle else {"stock": "sdpa"}.get(name, "sdpa_renamed")
        self.model.set_attn_implementation(impl or default)


@torch.inference_mode()
def forward_ms(model, ids: torch.Tensor) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    out.logits[:, -1].argmax(-1)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


@torch.inference_mode()
def host_us(variants: Variants, ids: torch.Tensor, name: str, impl: str, spent: list[float]):
    variants.use(name, impl)
    variants.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    spent.clear()
    variants.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    return 1e6 * sum(spent) / max(len(spent), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1k,2k,4k,8k,16k")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = smollm2_shaped()
    adapter.register()
    register("sdpa_renamed", sdpa_attention_forward)
    spent: list[float] = []
    register("timed_sdpa", timed(sdpa_attention_forward, spent))
    register("timed_attnsieve", timed(adapter.attention_forward, spent))
    variants = Variants(model)
    names = ["stock", "renamed", *ADAPTER_CONFIGS]
    rows = []
    for n in (parse_length(t) for t in args.lengths.split(",")):
        ids = torch.randint(0, 49152, (1, n), device="cuda")
        runs: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeats + 1):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                variants.use(name)
                ms = forward_ms(model, ids)
                if r:  # the first round warms up
                    runs[name].append(ms)
        row = {"length": n}
        for name, times in runs.items():
            row[f"{name}_best_ms"] = min(times)
            row[f"{name}_median_ms"] = statistics.median(times)
        row["stock_attn_host_us"] = host_us(variants, ids, "stock", "timed_sdpa", spent)
        row["patched_attn_host_us"] = host_us(variants, ids, "patched", "timed_attnsieve", spent)
        row["fallbacks"] = sorted(
            {str(f) for f in variants.handles["patched"].stats.fallback_per_layer}
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "benchmarks/time_short_prompts.py", "environment": environment("cuda"),
              "rows": rows}  # fmt: skip
    (out / "short_prompts.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
