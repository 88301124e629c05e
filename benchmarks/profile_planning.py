"""Where a planner's time goes on the GPU: torch.profiler tables of `plan` calls.

Llama-3-8B heads (32 query / 8 KV, d 128) or SmolLM2's (9 / 3, d 64) with ``--shape smollm2``;
per length the median plan time, then the kernels by their own GPU time and the ops by host time.

PYTHONPATH=. python3 benchmarks/profile_planning.py --planner flexprefill --lengths 65536,131072
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from attnsieve.eval.workloads import MODEL_SHAPES, model_workload
from attnsieve.methods import get_planner

parser = argparse.ArgumentParser()
parser.add_argument("--planner", default="flexprefill")
parser.add_argument("--lengths", default="65536,131072")
parser.add_argument("--shape", choices=sorted(MODEL_SHAPES), default="llama")
args = parser.parse_args()
for n in map(int, args.lengths.split(",")):
    w = model_workload(args.shape, n, device="cuda", dtype=torch.bfloat16)
    planner = get_planner(args.planner)
    planner.plan(w.q, w.k)
    ms = do_bench(lambda p=planner, w=w: p.plan(w.q, w.k), warmup=50, rep=300, return_mode="median")
    print(f"\n{args.planner} {args.shape} N={n}: {ms:.3f} ms per plan (median)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            planner.plan(w.q, w.k)
        torch.cuda.synchronize()
    for key, rows in (("self_cuda_time_total", 40), ("cpu_time_total", 12)):
        print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
