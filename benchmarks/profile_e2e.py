"""Where SmolLM2's patched prefill spends its time at one length: GPU time by kernel, and how much
of the wall time the GPU sits idle (H200).

At 128K, flexprefill's time to first token (fourteenth session of 2026-12-01, `w4/e2e/`) leaves
about 1.8 ms a layer that neither its attention at the layer's density nor its replayed plan
explains. This loads the model as `attnsieve bench e2e --model smollm2 --rope-scale 16` does,
patches it the same way (cost model, CUDA graphs), warms it up, and profiles one forward of the
same prompt with torch.profiler: per kernel, the GPU milliseconds summed over the forward and
the launches; per run, the wall time, the GPU's busy time (the union of kernel intervals) and the
idle rest. The stock model (SDPA) and the attention-free forward are profiled alike. Writes
profile.json and prints the tables.

    ATTNSIEVE_SMOLLM2_GGUF=... PYTHONPATH=. python3 benchmarks/profile_e2e.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from attnsieve.bench.common import environment
from attnsieve.bench.e2e import prompt_ids
from attnsieve.bench.e2e_timing import ATTENTION_FREE, attention_free
from attnsieve.eval.models import load_model
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.transformers import DEFAULT_COST


@torch.inference_mode()
def forward(model, ids) -> float:
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1).logits.argmax()
    sync()
    return time.perf_counter() - start


def profiled(model, ids, label: str, top: int) -> dict:
    """One warmed-up forward under the profiler: kernels by GPU time, busy and idle time."""
    for _ in range(2):
        forward(model, ids)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        wall = forward(model, ids)
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]  # none on the CPU
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    spans = []
    for e in kernels:
        start, end = e.time_range.start, e.time_range.end  # microseconds
        by_name[e.name][0] += (end - start) / 1e3
        by_name[e.name][1] += 1
        spans.append((start, end))
    spans.sort()
    busy, reach = 0.0, None
    for start, end in spans:
        if reach is None or start > reach:
            busy += end - start
            reach = end
        elif end > reach:
            busy += end - reach
            reach = end
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    first, last = (spans[0][0], spans[-1][1]) if spans else (0.0, 0.0)
    result = {
        "label": label,
        "wall_ms": wall * 1e3,
        "gpu_busy_ms": busy / 1e3,
        "gpu_first_to_last_ms": (last - first) / 1e3,
        "kernels": [{"name": n[:160], "ms": ms, "launches": c} for n, (ms, c) in rows],
    }
    print(f"== {label}: wall {wall * 1e3:.1f} ms, GPU busy {busy / 1e3:.1f} ms, first kernel to "
          f"last {(last - first) / 1e3:.1f} ms")  # fmt: skip
    for n, (ms, c) in rows[:top]:
        print(f"  {ms:9.3f} ms  {c:5d}x  {n[:110]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--method", default="flexprefill")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of this script")
    args = parser.parse_args()
    device = torch.device(args.device)
    model, tokenizer, _ = load_model("smollm2", device=device, dtype=torch.bfloat16, rope_scale=16)
    ids = prompt_ids(tokenizer, model, args.length, 0, device)
    runs = [profiled(model, ids, "sdpa", args.top)]
    with patch(model, AttentionConfig(prefill=args.method), cost=DEFAULT_COST) as st:
        runs.append(profiled(model, ids, args.method, args.top))
        print(f"mean density {st.mean_density:.3f}")
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION_FREE, attention_free)
    AttentionMaskInterface.register(ATTENTION_FREE, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(ATTENTION_FREE)
    runs.append(profiled(model, ids, "attention-free", args.top))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(
        json.dumps(
            {"environment": environment(device), "length": int(ids.shape[1]), "runs": runs},
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
