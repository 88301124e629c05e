"""vertical_slash's layout on the GPU, every row built by the Triton kernel (`attnsieve.api.
line_layout`) against its twin (`Layout.from_lines`).

The columns and diagonals are vertical_slash's own, from its plan of a synthetic workload
(Llama-3-8B heads, or SmolLM2's with ``--shape smollm2``). Per length: both layouts compared part
by part, then the median time of each backend and of the whole plan.

PYTHONPATH=. python3 benchmarks/time_line_rows.py --lengths 16384,131072
"""

import argparse

import torch
from triton.testing import do_bench

from attnsieve.api import line_layout
from attnsieve.eval.workloads import MODEL_SHAPES, model_workload
from attnsieve.layout import Layout
from attnsieve.methods import get_planner
from attnsieve.methods.prefill import vertical_slash

PARTS = ("block_idx", "block_count", "column_idx", "column_count", "span_start", "span_end",
         "span_count")  # fmt: skip


def captured_lines(planner, q, k) -> dict:
    """The columns, offsets and sizes ``planner`` passes to `line_layout` in one plan."""
    lines = {}

    def capture(columns, offsets, **kwargs):
        lines.update(columns=columns, offsets=offsets, kwargs=kwargs)
        return line_layout(columns, offsets, **kwargs)

    vertical_slash.line_layout = capture
    try:
        planner.plan(q, k)
    finally:
        vertical_slash.line_layout = line_layout
    return lines


def build_with(lines: dict, backend: str) -> Layout:
    if backend == "reference":
        return Layout.from_lines(lines["columns"], lines["offsets"], **lines["kwargs"])
    return line_layout(lines["columns"], lines["offsets"], backend=backend, **lines["kwargs"])


parser = argparse.ArgumentParser()
parser.add_argument("--lengths", default="16384,65536,131072")
parser.add_argument("--shape", choices=sorted(MODEL_SHAPES), default="llama")
args = parser.parse_args()
for n in map(int, args.lengths.split(",")):
    w = model_workload(args.shape, n, device="cuda", dtype=torch.bfloat16)
    planner = get_planner("vertical_slash")
    lines = captured_lines(planner, w.q, w.k)
    layouts = {b: build_with(lines, b) for b in ("triton", "reference")}
    ms = {
        b: do_bench(lambda b=b, x=lines: build_with(x, b), warmup=20, rep=200, return_mode="median")
        for b in layouts
    }
    same = all(torch.equal(getattr(layouts["triton"], p), getattr(layouts["reference"], p))
               for p in PARTS)  # fmt: skip
    plan_ms = do_bench(
        lambda p=planner, w=w: p.plan(w.q, w.k), warmup=20, rep=200, return_mode="median"
    )
    print(
        f"{args.shape} N={n}: layouts equal {same}; line_layout triton {ms['triton']:.3f} ms, "
        f"reference {ms['reference']:.3f} ms; whole plan {plan_ms:.3f} ms; spans width "
        f"{layouts['triton'].span_start.shape[-1]}"
    )
