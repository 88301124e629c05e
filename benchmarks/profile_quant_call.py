"""Where a `quant_attention` call spends its time outside the attention kernel (H200).

For Llama-3-8B's heads (32 / 8, head_dim 128) at 32K and 128K dense causal and 64K on a random
10 % block layout: the host time of the K / V quantisation pass and of the whole call, measured
while the GPU is kept busy so that the host never waits; the same two timed as `bench kernels`
does (`median_ms`); and each CUDA kernel's time in one call from torch.profiler. Writes
quant_call.json.

    PYTHONPATH=. python3 benchmarks/profile_quant_call.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from attnsieve.bench.baselines import random_causal_layout
from attnsieve.bench.common import environment, median_ms, write_json
from attnsieve.kernels.quant import quant_attention, quant_tiles
from attnsieve.kernels.quantize import quantize_kv_blocks


def host_us(fn, reps: int = 20) -> float:
    """Host time of one call of ``fn`` in µs, behind a second of GPU sleep: launches only."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    elapsed = (time.perf_counter() - start) / reps * 1e6
    torch.cuda.synchronize()
    return elapsed


def kernel_us(fn) -> dict[str, float]:
    """GPU time of each kernel of one call of ``fn``, in µs, by (truncated) kernel name."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    times: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[event.name[:60]] = times.get(event.name[:60], 0.0) + event.device_time_total
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for n, density in ((32768, None), (65536, 0.1), (131072, None)):
        q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16, generator=gen)
        k, v = torch.randn(2, 1, 8, n, 128, device=dev, dtype=torch.bfloat16, generator=gen)
        layout = None if density is None else random_causal_layout(n, 32, 128, density, dev, gen)
        block_n = quant_tiles(layout)[1]

        def call(q=q, k=k, v=v, layout=layout):
            return quant_attention(q, k, v, layout)

        def kv_pass(k=k, v=v, block_n=block_n):
            return quantize_kv_blocks(k, v, block_n)

        row = {"N": n, "density": density}
        row["host_pass_us"], row["host_call_us"] = host_us(kv_pass), host_us(call)
        row["pass_ms"] = median_ms(kv_pass, rep_ms=300)
        row["call_ms"] = median_ms(call, rep_ms=300 if n < 131072 else 1500)
        row["kernel_us"] = kernel_us(call)
        print(json.dumps(row), flush=True)
        rows.append(row)
        del q, k, v
        torch.cuda.empty_cache()
    write_json(args.out / "quant_call.json", {"environment": environment("cuda"), "rows": rows})


if __name__ == "__main__":
    main()
