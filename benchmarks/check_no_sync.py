"""GPU check: does a layer's plan + attention run without a host synchronisation, and how long
does planning take on SmolLM2's shapes?

For every planner, plan + attention runs once to compile, then again under
``torch.cuda.set_sync_debug_mode("error")``, which raises at the first operation that waits for
the device; the table says "none" or the operation that synchronised. Planning time is the median
of 20 CUDA-event timings of ``plan`` alone, on SmolLM2-135M shapes (9 query / 3 KV heads,
head_dim 64, bf16) at ``--lengths``: launched eagerly (``plan_ms``: host launch cost included),
and, for a plan without a host sync, replayed from a CUDA graph (``graph_plan_ms``: what
`attnsieve.patch` pays per layer once a shape repeats). ``graph_attention_ms`` is plan +
attention replayed, ``dense_ms`` SDPA's causal attention on the same tensors.

    PYTHONPATH=. python3 benchmarks/check_no_sync.py --out benchmarks/results/h200
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback
from pathlib import Path

import torch

import attnsieve
from attnsieve.bench.common import graph_ms
from attnsieve.eval.workloads import make_workload
from attnsieve.integrations.graphs import forbid_host_sync
from attnsieve.methods import PLANNERS, get_planner


def plan_ms(planner, q, k, reps: int = 20) -> float:
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        planner.plan(q, k)
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def sync_point(planner, q, k, v) -> str:
    """'none', or the last line of the error raised by the first synchronising operation."""
    try:
        with forbid_host_sync():
            attnsieve.attention(q, k, v, planner.plan(q, k))
        return "none"
    except RuntimeError:
        lines = [s for s in traceback.format_exc().splitlines() if "attnsieve/" in s]
        return lines[-1].strip() if lines else "synchronised (outside attnsieve)"


GRAPHED = ("graph_plan_ms", "graph_attention_ms", "dense_ms")


def measure(name: str, w, n: int) -> dict:
    planner = get_planner(name)
    attnsieve.attention(w.q, w.k, w.v, planner.plan(w.q, w.k))  # compile
    torch.cuda.synchronize()
    row = {
        "planner": name,
        "length": n,
        "plan_ms": plan_ms(planner, w.q, w.k),
        "sync": sync_point(planner, w.q, w.k, w.v),
    }
    if row["sync"] == "none":
        row["graph_plan_ms"] = graph_ms(lambda: planner.plan(w.q, w.k), 20)
        row["graph_attention_ms"] = graph_ms(
            lambda: attnsieve.attention(w.q, w.k, w.v, planner.plan(w.q, w.k)), 20
        )
    row["dense_ms"] = graph_ms(lambda: attnsieve.api.dense_attention(w.q, w.k, w.v), 20)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="8192,32768")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--planners", default=",".join(PLANNERS), help="comma-separated names")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        kinds = ["sink_local", "vertical", "slash"] * 3  # 9 query heads over 3 KV heads
        w = make_workload(
            kinds, num_kv_heads=3, seq_len=n, head_dim=64, dtype=torch.bfloat16, device="cuda"
        )
        for name in args.planners.split(","):
            row = measure(name, w, n)
            rows.append(row)
            graphed = " ".join(f"{k} {row[k]:.3f}" for k in GRAPHED if k in row)
            print(f"{name:>15} {n:>7}  plan_ms {row['plan_ms']:.3f} {graphed}  sync: {row['sync']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    (out / "no_sync.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
