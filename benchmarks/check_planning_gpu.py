"""The planning kernels compiled for the GPU against their float32 twins, in bf16 and fp16.

The CPU tests run the kernels through Triton's interpreter in fp16 only; this is their GPU twin
(bf16 included, odd lengths, N != M, GQA 4). Prints one line per check and exits 1 on a mismatch.

    PYTHONPATH=. python3 benchmarks/check_planning_gpu.py
"""

import sys

import torch

from attnsieve.kernels import (
    antidiagonal,
    antidiagonal_reference,
    planning,
    planning_reference,
    pooling,
    pooling_reference,
)

# 8192: lengths Triton specialises as multiples of 16 (the last-query sums once failed only there)
SHAPES = [
    (2, 8, 2, 4099, 4099, 128),
    (1, 8, 2, 1000, 5003, 64),
    (1, 4, 4, 3000, 700, 128),
    (1, 9, 3, 8192, 8192, 64),
]
failed = False


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    global failed
    err = float((got - want).abs().max())
    ok = err <= tol * max(1.0, float(want.abs().max())) and bool(torch.isfinite(got).all())
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e}")


torch.manual_seed(0)
for b, h_q, h_kv, n, m, d in SHAPES:
    for dtype in (torch.bfloat16, torch.float16):
        q = (torch.randn(b, h_q, n, d, device="cuda") * 2).to(dtype)
        k = torch.randn(b, h_kv, m, d, device="cuda").to(dtype)
        tag = f"{tuple(q.shape)} k {tuple(k.shape)} {dtype}"
        for block in (64, 128):
            got = pooling.block_mean_pool(q, block)
            check(
                f"block_mean_pool {block} {tag}",
                got,
                pooling_reference.block_mean_pool(q, block),
                1e-3,
            )
        for last_q, block_k in ((64, 1), (64, 64), (128, 128), (100, 16)):
            last_q = min(last_q, n)
            got = planning.last_query_stats(q, k, last_q=last_q, block_k=block_k)
            want = planning_reference.last_query_stats(q, k, last_q=last_q, block_k=block_k)
            for part, g, w in zip(("vertical", "slash"), got, want, strict=True):
                # probabilities and their sums: float32 sums in another order, far below 1e-5
                check(
                    f"last_query_stats {part} last_q={last_q} block_k={block_k} {tag}", g, w, 1e-5
                )
        qp, kp = pooling.block_mean_pool(q, 64), pooling.block_mean_pool(k, 64)
        kwargs = dict(num_queries=n, num_keys=m, block_q=64, block_k=64)
        got = pooling.pooled_block_probs(qp, kp, **kwargs)
        check(
            f"pooled_block_probs {tag}",
            got,
            pooling_reference.pooled_block_probs(qp, kp, **kwargs),
            1e-3,
        )
        kwargs = dict(stride=8, block_q=128, block_k=128)
        got = antidiagonal.antidiagonal_block_scores(q, k, **kwargs)
        want = antidiagonal_reference.antidiagonal_block_scores(q, k, **kwargs)
        check(f"antidiagonal_block_scores {tag}", got, want, 5e-3)
sys.exit(1 if failed else 0)
