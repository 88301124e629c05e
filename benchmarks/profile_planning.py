"""Where a planner's time goes on the GPU: torch.profiler table of one `plan` call.

PYTHONPATH=. python3 benchmarks/profile_planning.py --planner flexprefill --lengths 65536,131072
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from attnsieve.eval.workloads import make_workload
from attnsieve.methods import get_planner

parser = argparse.ArgumentParser()
parser.add_argument("--planner", default="flexprefill")
parser.add_argument("--lengths", default="65536,131072")
args = parser.parse_args()
kinds = ("sink_local", "vertical", "slash", "retrieval") * 8
for n in map(int, args.lengths.split(",")):
    w = make_workload(
        kinds, num_kv_heads=8, seq_len=n, head_dim=128, device="cuda", dtype=torch.bfloat16
    )
    planner = get_planner(args.planner)
    planner.plan(w.q, w.k)
    ms = do_bench(lambda p=planner, w=w: p.plan(w.q, w.k), warmup=50, rep=300, return_mode="median")
    print(f"\n{args.planner} N={n}: {ms:.3f} ms per plan (median)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            planner.plan(w.q, w.k)
        torch.cuda.synchronize()
    for key, rows in (("cuda_time_total", 18), ("cpu_time_total", 12)):
        print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
