"""Where a patched SmolLM2-shaped model (random weights) loses time at 8K: median time to first
token of the stock model and of three patches (flexprefill with the cost model and graphs, the
same eager, the dense planner through the kernel), and torch.profiler tables of one patched and
one stock forward (host time per op).

    PYTHONPATH=. python3 benchmarks/profile_adapter_8k.py
"""

import time

import torch
import transformers
from torch.profiler import ProfilerActivity, profile

from attnsieve.integrations import AttentionConfig, patch

cfg = transformers.LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=16384,
    attn_implementation="sdpa",
)
model = transformers.LlamaForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
ids = torch.randint(0, 49152, (1, 8192), device="cuda")


@torch.inference_mode()
def ttft(reps=7):
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        out.logits.argmax()
        torch.cuda.synchronize()
        ts.append(1000 * (time.perf_counter() - t))
        del out
    return sorted(ts)[len(ts) // 2]


print(f"stock sdpa      {ttft():7.2f} ms")
for name, kw in [
    ("flex cost+graphs", {}),
    ("flex cost, eager", {"graphs": False}),
    ("dense planner", {"cost": None}),
]:
    pre = "dense" if name == "dense planner" else "flexprefill"
    h = patch(model, AttentionConfig(prefill={"method": pre}), **kw)
    with h as stats:
        ms = ttft()
        print(f"{name:16s} {ms:7.2f} ms  fallbacks {set(stats.fallback_per_layer)}")
        if name == "flex cost+graphs":
            with (
                torch.inference_mode(),
                profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof,
            ):
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
            print(
                prof.key_averages().table(
                    sort_by="cpu_time_total", row_limit=25, max_name_column_width=45
                )
            )
    h.remove()
with (
    torch.inference_mode(),
    profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof,
):
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
print("STOCK")
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=45))
