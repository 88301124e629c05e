"""Which tile the bf16 sparse kernel's autotuner picks, per process, on `bench kernels`' sparse
row (64K tokens, Llama-3-8B heads, a random causal block layout of density 0.10), with each
candidate's tuning time, the row's median time, the call's host time (the GPU kept busy) and each
CUDA kernel's time in one call (torch.profiler), and with ``--copies C`` the row's time on C
copies of q, k and v in new allocations: the fifty-eighth session saw that row's bf16
time range 7.07-8.18 ms across processes on one H100 while cuDNN's stayed within 1.5 %.

    PYTHONPATH=. python3 benchmarks/check_sparse_tuning.py --runs 3 [--length 65536] [--copies 6]

Each run is a fresh process (the autotuner's choice lives for a process).
"""

import argparse
import json
import subprocess
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from attnsieve.bench.common import ints_in


def one_run(n: int, copies: int = 0) -> dict:
    from attnsieve.bench.baselines import random_causal_layout
    from attnsieve.bench.common import median_ms, median_ms_over_copies, on_inputs
    from attnsieve.kernels import prefill

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, h, n, 128, device=dev, dtype=torch.bfloat16, generator=gen)
               for h in (32, 8, 8))  # fmt: skip
    layout = random_causal_layout(n, 32, 128, 0.10, dev, gen)
    prefill.sparse_attention(q, k, v, layout)  # tunes
    tuner = prefill._sparse_fwd_tuned
    timings = {str(c): t for c, t in (tuner.configs_timings or {}).items()}
    call = lambda: prefill.sparse_attention(q, k, v, layout)  # noqa: E731
    ms = median_ms(call)
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # the GPU busy: the host never waits, launches only
    start = time.perf_counter()
    for _ in range(10):
        call()
    host_ms = (time.perf_counter() - start) / 10 * 1e3
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    kernels = {e.key[:60]: round(e.device_time_total / 1e3, 4) for e in prof.key_averages()
               if e.device_time_total > 0}  # fmt: skip
    on_copy = on_inputs(prefill.sparse_attention, layout)
    copy_ms = median_ms_over_copies(on_copy, (q, k, v), copies)[1] if copies else []
    return {"best": str(tuner.best_config), "tuning_ms": timings, "median_ms": ms,
            "host_ms": host_ms, "kernels_ms": kernels,
            "copies_ms": [round(t, 3) for t in copy_ms]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument(
        "--copies", type=ints_in(0, 64), default=0, help="also time this many copies of q/k/v"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.length, args.copies)))
        return
    for i in range(args.runs):
        child = ["--child", "--length", str(args.length), "--copies", str(args.copies)]
        out = subprocess.run([sys.executable, __file__, *child],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        print(f"run {i}: {out.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
    main()
