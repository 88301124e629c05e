"""Replayed (CUDA-graph) time of flexprefill's whole plan, variants side by side in rounds.

Run-to-run noise in `bench prefill`'s graph_plan_ms (one graph, 20 replays, a run a variant) is
about 0.01-0.02 ms at 32K, as large as what a change to the plan gains. Here every variant is
captured in one process and timed in ``--rounds`` interleaved rounds of ``--reps`` replays (L2
flushed before each), and the median of the rounds' medians is printed, with their spread.

Variants: "current" (this checkout) and NAME=PATH for a copy of
`attnsieve/methods/prefill/flexprefill.py` (its planner class, on this checkout's kernels).

    PYTHONPATH=. python3 benchmarks/time_plan_variants.py [--shape llama] [--lengths 32768,65536] \
        [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from attnsieve.bench.common import graph_ms
from attnsieve.eval.workloads import MODEL_SHAPES, model_workload
from attnsieve.methods.prefill import flexprefill
from benchmarks.check_masked_cost import load


def _planners(variants: list[str]) -> dict[str, object]:
    planners = {"current": flexprefill.FlexPrefillPlanner()}
    for text in variants:
        name, path = text.split("=", 1)
        planners[name] = load(f"variant_{name}", path).FlexPrefillPlanner()
    return planners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(MODEL_SHAPES), default="llama")
    parser.add_argument("--lengths", default="32768,65536")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    planners = _planners(args.variant)
    for n in map(int, args.lengths.split(",")):
        w = model_workload(args.shape, n, device="cuda", dtype=torch.bfloat16)
        want = planners["current"].plan(w.q, w.k)
        for name, planner in planners.items():
            got = planner.plan(w.q, w.k)
            same = torch.equal(got.block_idx, want.block_idx)
            if not same:
                print(f"  {name}: a different layout from current's")
        times = {name: [] for name in planners}
        for _ in range(args.rounds):
            for name, planner in planners.items():
                times[name].append(graph_ms(lambda p=planner, w=w: p.plan(w.q, w.k), args.reps))
        for name, ms in times.items():
            print(f"{args.shape} {n:>7} {name:>12}: {statistics.median(ms):.4f} ms "
                  f"(rounds {min(ms):.4f}-{max(ms):.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
