"""FlexPrefill's pooled estimate from the last-query pass against the old way, on the GPU.

For Llama-3-8B's heads (32K, 64K, 128K) and SmolLM2's (8K, 32K), synthetic workloads: the pass's
pooled scores against the mean last query · `block_mean_pool`'s keys (their largest difference,
and each way's query-aware heads at tau 0.1 with their smallest sqrt(JS) divergences), then the
replayed (CUDA-graph) time of `last_query_stats` with and without ``pooled`` and of pooling K.

    PYTHONPATH=. python3 benchmarks/check_pooled_pass.py
"""

from __future__ import annotations

import math

import torch

from attnsieve.bench.common import graph_ms
from attnsieve.eval.workloads import model_workload
from attnsieve.kernels import line_choice_reference, planning, pooling


def report(shape: str, n: int) -> None:
    w = model_workload(shape, n, device="cuda", dtype=torch.bfloat16)
    q, k = w.q, w.k
    b, h_q, _, d = q.shape
    h_kv = k.shape[1]
    v, _, pooled = planning.last_query_stats(q, k, last_q=128, block_k=128, pooled=True)
    q_mean = q[:, :, -128:].float().mean(2).view(b, h_kv, h_q // h_kv, d)
    k_mean = pooling.block_mean_pool(k, 128)
    old = (q_mean @ k_mean.transpose(-1, -2) / math.sqrt(d)).view(b, h_q, -1)
    js_new = line_choice_reference.sqrt_js_divergence(pooled.softmax(-1), v)
    js_old = line_choice_reference.sqrt_js_divergence(old.softmax(-1), v)
    print(shape, n, f"max|new-old| {(pooled - old).abs().max().item():.2e}",
          "aware new", (js_new < 0.1).nonzero()[:, 1].tolist(), "old",
          (js_old < 0.1).nonzero()[:, 1].tolist())  # fmt: skip
    print("  smallest js new", [round(x, 4) for x in sorted(js_new.flatten().tolist())[:4]],
          "old", [round(x, 4) for x in sorted(js_old.flatten().tolist())[:4]])  # fmt: skip
    for name, fn in (
        ("stats pooled", lambda: planning.last_query_stats(
            q, k, last_q=128, block_k=128, pooled=True)),
        ("stats", lambda: planning.last_query_stats(q, k, last_q=128, block_k=128)),
        ("k pool", lambda: pooling.block_mean_pool(k, 128)),
    ):  # fmt: skip
        print(f"  {name}: {graph_ms(fn, 50):.4f} ms")


def main() -> None:
    for shape, lengths in (("llama", (32768, 65536, 131072)), ("smollm2", (8192, 32768))):
        for n in lengths:
            report(shape, n)


if __name__ == "__main__":
    main()
