"""Host and GPU cost of the adapter's dense path against bare SDPA (SmolLM2 shapes, bf16, CUDA).

At 8K, SmolLM2's forward is host-bound (graphs/overhead_8k.log), so a dense layer's host time
decides whether the patched model keeps up with stock SDPA. For each length this prints, per
call: the GPU time (median of triton.testing.do_bench) and the host time (wall time of issuing
200 calls on a tiny 128-token input, where the GPU is never the bound) of

- ``sdpa``: torch's SDPA with its own backend order (what stock transformers runs);
- ``cudnn-first``: `kernels.prefill.sdpa_dense` (SDPA inside ``sdpa_kernel`` with cuDNN first);
- ``api``: `attnsieve.api.dense_attention`, the adapter's dense path (checks included).

    PYTHONPATH=. python3 benchmarks/time_dense_path.py [--lengths 8192,32768]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from attnsieve.api import dense_attention
from attnsieve.kernels.prefill import sdpa_dense


def paths(scale: float) -> dict:
    return {
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=True
        ),
        "cudnn-first": lambda q, k, v: sdpa_dense(q, k, v, scale),
        "api": lambda q, k, v: dense_attention(q, k, v, scale=scale, causal=True),
    }


def qkv(n: int) -> tuple[torch.Tensor, ...]:
    make = lambda h: torch.randn(1, h, n, 64, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    return make(9), make(3), make(3)


def host_us(fn, q, k, v, calls: int = 200) -> float:
    for _ in range(20):
        fn(q, k, v)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn(q, k, v)
    issued = time.perf_counter() - start
    torch.cuda.synchronize()
    return 1e6 * issued / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="8192,32768")
    args = parser.parse_args()
    small = qkv(128)
    for n in map(int, args.lengths.split(",")):
        q, k, v = qkv(n)
        for name, fn in paths(0.125).items():
            call = functools.partial(fn, q, k, v)
            gpu = do_bench(call, warmup=25, rep=100, return_mode="median")
            print(f"N={n:6d} {name:12s} GPU {gpu:7.3f} ms  host {host_us(fn, *small):6.1f} us/call")


if __name__ == "__main__":
    main()
