"""Host time of each part of a dense prompt layer inside a real forward, stock against patched.

A SmolLM2-shaped model (random weights, bf16, CUDA) runs ``--forwards`` forwards at each of
``--lengths`` with transformers' "sdpa" and with `attnsieve.patch` (default config: every layer
dense through the cost model at these lengths), alternating. Timers (wall time, no
synchronisation) wrap the attention function, the SDPA call and the adapter's helpers; the
mean microseconds per call of each are printed, nested parts included in their callers.

    PYTHONPATH=. python3 benchmarks/time_adapter_parts.py --lengths 3k,4k
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from attnsieve.eval.harness import parse_length
from attnsieve.integrations import patch
from attnsieve.integrations import transformers as adapter
from benchmarks.time_short_prompts import smollm2_shaped

spent: dict[str, list[float]] = collections.defaultdict(list)


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[name].append(time.perf_counter() - start)
        return out

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="3k,4k")
    parser.add_argument("--forwards", type=int, default=20)
    args = parser.parse_args()
    model = smollm2_shaped()
    for name, fn in (("stock", sdpa_attention_forward), ("attnsieve", adapter.attention_forward)):
        AttentionInterface.register(f"timed_{name}", timed(f"{name} attention function", fn))
        AttentionMaskInterface.register(f"timed_{name}", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    functional = torch.nn.functional
    functional.scaled_dot_product_attention = timed(
        "SDPA call", functional.scaled_dot_product_attention
    )
    for part in ("_dense", "_prompt_sdpa", "resolve_backend"):
        setattr(adapter, part, timed(part, getattr(adapter, part)))
    for part in ("cost_says_dense", "plan_pays"):
        setattr(adapter.PatchHandle, part, timed(part, getattr(adapter.PatchHandle, part)))
    adapter.PatchStats.record = timed("stats.record", adapter.PatchStats.record)
    handle = patch(model)
    with torch.inference_mode():
        for n in (parse_length(t) for t in args.lengths.split(",")):
            ids = torch.randint(0, 49152, (1, n), device="cuda")
            means = {}
            for impl in ("timed_stock", "timed_attnsieve"):
                model.set_attn_implementation(impl)
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
                spent.clear()
                for _ in range(args.forwards):
                    model(input_ids=ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                means[impl] = {k: 1e6 * sum(v) / len(v) for k, v in spent.items()}
            for impl, parts in means.items():
                print(f"{n} tokens, {impl.removeprefix('timed_')}: " + ", ".join(
                    f"{k} {v:.1f} us" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
                ), flush=True)  # fmt: skip
    handle.remove()


if __name__ == "__main__":
    main()
