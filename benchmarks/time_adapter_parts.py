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

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from attnsieve.eval.sweep_args import parse_length
from attnsieve.integrations import handle as state
from attnsieve.integrations import patch
from attnsieve.integrations import transformers as adapter
from benchmarks.time_short_prompts import register, smollm2_shaped, timed

spent: dict[str, list[float]] = collections.defaultdict(list)


def timer(name: str, fn):
    return timed(fn, spent[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="3k,4k")
    parser.add_argument("--forwards", type=int, default=20)
    args = parser.parse_args()
    model = smollm2_shaped()
    for name, fn in (("stock", sdpa_attention_forward), ("attnsieve", adapter.attention_forward)):
        register(f"timed_{name}", timer(f"{name} attention function", fn))
    functional = torch.nn.functional
    functional.scaled_dot_product_attention = timer(
        "SDPA call", functional.scaled_dot_product_attention
    )
    for part in ("_dense", "_prompt_sdpa"):
        setattr(adapter, part, timer(part, getattr(adapter, part)))
    state.resolve_backend = timer("resolve_backend", state.resolve_backend)  # the cost decision's
    for part in ("cost_says_dense", "_pays"):
        setattr(state.PatchHandle, part, timer(part, getattr(state.PatchHandle, part)))
    state.PatchStats.record = timer("stats.record", state.PatchStats.record)
    handle = patch(model)
    with torch.inference_mode():
        for n in (parse_length(t) for t in args.lengths.split(",")):
            ids = torch.randint(0, 49152, (1, n), device="cuda")
            means = {}
            for impl in ("timed_stock", "timed_attnsieve"):
                model.set_attn_implementation(impl)
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
                for times in spent.values():
                    times.clear()
                for _ in range(args.forwards):
                    model(input_ids=ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                means[impl] = {k: 1e6 * sum(v) / len(v) for k, v in spent.items() if v}
            for impl, parts in means.items():
                print(f"{n} tokens, {impl.removeprefix('timed_')}: " + ", ".join(
                    f"{k} {v:.1f} us" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
                ), flush=True)  # fmt: skip
    handle.remove()


if __name__ == "__main__":
    main()
