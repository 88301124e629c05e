"""Where one row of `attnsieve bench prefill` spends its time at long lengths (GPU).

The thirty-sixth session's run at 256K took about 80 s per planner row, streaming included, whose
plan and attention take milliseconds. This times each step of a row (`bench.prefill._bench`) on
its own, CUDA-synchronised, for one planner at each length (a sampled block's two reference
passes as the row runs them since that session; its runs `long36/row_time*.log` timed the three
passes before):

    PYTHONPATH=. python3 benchmarks/time_bench_prefill_row.py --lengths 131072,262144 \
        --planner streaming --recall-blocks 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from attnsieve.bench.common import median_ms, sampled_blocks
from attnsieve.bench.prefill import KINDS, _graph_plan_ms
from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.workloads import make_workload
from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.methods import get_planner


def timed(label: str, fn: Callable[[], object]) -> object:
    torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    torch.cuda.synchronize()
    print(f"  {label:<44} {time.perf_counter() - start:8.3f} s", flush=True)
    return value


def time_row(planner: object, name: str, n: int, recall_blocks: int) -> None:
    print(f"N={n} {name}", flush=True)
    heads = [KINDS[h % len(KINDS)] for h in range(32)]
    w = timed(
        "workload",
        lambda: make_workload(
            heads, num_kv_heads=8, seq_len=n, head_dim=128, device="cuda", dtype=torch.bfloat16
        ),
    )
    q, k, v = w.q, w.k, w.v
    layout = timed("plan (first)", lambda: planner.plan(q, k))
    timed("attention (first)", lambda: sparse_attention(q, k, v, layout))
    timed("density", layout.density)
    blocks = timed("sampled_blocks", lambda: sampled_blocks(layout, recall_blocks))
    r0, r1, sub = blocks[len(blocks) // 2]
    q_sub, k_sub, v_sub = q[:, :, r0:r1], k[:, :, : sub.num_keys], v[:, :, : sub.num_keys]
    for i in range(2):  # the row's two passes a sampled block (`_sampled_recall_and_error`)
        _, lse = timed(
            f"reference + lse, one block ({sub.num_keys} keys) #{i}",
            lambda: attention_reference(q_sub, k_sub, v_sub, sub, return_lse=True),
        )
        timed(
            f"dense lse and recall, one block #{i}",
            lambda lse=lse: attention_recall(
                q_sub, k_sub, sub, backend="reference", layout_lse=lse
            ),
        )
    timed("median_ms(plan)", lambda: median_ms(lambda: planner.plan(q, k), rep_ms=50))
    timed(
        "median_ms(attention)",
        lambda: median_ms(lambda: sparse_attention(q, k, v, layout), rep_ms=50),
    )
    timed("graph plan", lambda: _graph_plan_ms(planner, q, k))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="131072,262144")
    parser.add_argument("--planner", default="streaming")
    parser.add_argument("--recall-blocks", type=int, default=8)
    args = parser.parse_args()
    planner = get_planner(args.planner)
    for n in [int(x) for x in args.lengths.split(",")]:
        time_row(planner, args.planner, n, args.recall_blocks)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
