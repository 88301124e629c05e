"""Launch one causal prefill kernel three times on random inputs, for Nsight Compute.

CASE is ``bf16`` (the Triton block-sparse kernel), ``int8-fp8`` (the INT8·FP8 kernel with its
quantisation passes) or ``sdpa`` (PyTorch SDPA: cuDNN, dense only); Llama-3-8B heads (32 query,
8 KV, head_dim 128), batch 1, LENGTH tokens, over a dense layout or, with ``--density D``, the
random causal block layout `attnsieve bench kernels` times its sparse rows on. The third launch
runs inside an NVTX range, "profiled"; profile the attention kernel there, e.g.:

    ncu --section SpeedOfLight --nvtx --nvtx-include "profiled/" -k regex:_quant_fwd_kernel -c 1 \
        python3 benchmarks/profile_prefill_ncu.py int8-fp8 32768
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.bench.baselines import random_causal_layout
from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.quant import quant_attention
from attnsieve.layout import Layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("bf16", "int8-fp8", "sdpa"))
    parser.add_argument("length", type=int)
    parser.add_argument("--density", type=float, default=1.0, help="below 1: a random layout")
    args = parser.parse_args()
    if args.case == "sdpa" and args.density < 1:
        parser.error("--density: SDPA runs dense only")
    n = args.length
    q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    layout = Layout.dense(n, n, causal=True, device=q.device)
    if args.density < 1:
        gen = torch.Generator(device="cuda").manual_seed(0)
        layout = random_causal_layout(n, 32, 128, args.density, q.device, gen)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for i in range(3):
        if i == 2:  # the bf16 kernel's autotuner launches it an unknown number of times before
            torch.cuda.nvtx.range_push("profiled")
        if args.case == "bf16":
            sparse_attention(q, k, v, layout, causal=True, dense_dispatch=False)
        elif args.case == "sdpa":
            sdpa(q, k, v, is_causal=True, enable_gqa=True)
        else:
            quant_attention(q, k, v, None if args.density == 1 else layout)
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
