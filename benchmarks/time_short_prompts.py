"""Where a patched SmolLM2-shaped model (random weights, bf16) loses time on short prompts.

Median time to first token over ``--lengths`` of:

- ``stock``: transformers' "sdpa";
- ``renamed``: transformers' own SDPA function registered under another name (what being a
  custom attention implementation costs by itself, mask creation included);
- ``patched``: `attnsieve.patch` with the default config (cost model and graphs on);

and, per attention call, the host time spent inside the attention function (wall time of the call,
no synchronisation: the forward is host-bound at these lengths) for stock and patched.

    PYTHONPATH=. python3 benchmarks/time_short_prompts.py --lengths 1k,2k,4k,8k,16k --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from attnsieve.bench.common import environment
from attnsieve.eval.harness import parse_length
from attnsieve.integrations import patch
from attnsieve.integrations import transformers as adapter


def smollm2_shaped() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        max_position_embeddings=32768, attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).cuda().to(torch.bfloat16).eval()


@torch.inference_mode()
def ttft_ms(model, ids: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        out.logits[:, -1].argmax(-1)
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
        del out
    times = sorted(times[1:])
    return times[len(times) // 2]


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


@torch.inference_mode()
def host_us(model, ids: torch.Tensor, name: str, spent: list[float]) -> float:
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    spent.clear()
    model.set_attn_implementation(name)
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    return 1e6 * sum(spent) / max(len(spent), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1k,2k,4k,8k,16k")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = smollm2_shaped()
    register("sdpa_renamed", sdpa_attention_forward)
    spent: list[float] = []
    register("timed_sdpa", timed(sdpa_attention_forward, spent))
    register("timed_attnsieve", timed(adapter.attention_forward, spent))
    rows = []
    for n in (parse_length(t) for t in args.lengths.split(",")):
        ids = torch.randint(0, 49152, (1, n), device="cuda")
        row = {"length": n}
        model.set_attn_implementation("sdpa")
        row["stock_ms"] = ttft_ms(model, ids, args.repeats)
        row["stock_attn_host_us"] = host_us(model, ids, "timed_sdpa", spent)
        model.set_attn_implementation("sdpa_renamed")
        row["renamed_ms"] = ttft_ms(model, ids, args.repeats)
        model.set_attn_implementation("sdpa")
        with patch(model) as stats:
            row["patched_ms"] = ttft_ms(model, ids, args.repeats)
            row["fallbacks"] = sorted({str(f) for f in stats.fallback_per_layer})
            row["patched_attn_host_us"] = host_us(model, ids, "timed_attnsieve", spent)
        row["speedup"] = row["stock_ms"] / row["patched_ms"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "benchmarks/time_short_prompts.py", "environment": environment(),
              "rows": rows}  # fmt: skip
    (out / "short_prompts.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
