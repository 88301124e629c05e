"""Launch one dense causal prefill kernel three times on random inputs, for Nsight Compute.

CASE is ``bf16`` (the Triton block-sparse kernel over a dense layout), ``int8-fp8`` (the INT8·FP8
kernel with its quantisation passes) or ``sdpa`` (PyTorch SDPA: cuDNN); Llama-3-8B heads (32
query, 8 KV, head_dim 128), batch 1, LENGTH tokens. Profile the second launch of the attention
kernel, e.g.:

    ncu --section SpeedOfLight -k regex:_quant_fwd_kernel -s 1 -c 1 \
        python3 benchmarks/profile_prefill_ncu.py int8-fp8 32768
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.quant import quant_attention
from attnsieve.layout import Layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("bf16", "int8-fp8", "sdpa"))
    parser.add_argument("length", type=int)
    args = parser.parse_args()
    n = args.length
    q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    layout = Layout.dense(n, n, causal=True, device=q.device)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for _ in range(3):
        if args.case == "bf16":
            sparse_attention(q, k, v, layout, causal=True, dense_dispatch=False)
        elif args.case == "sdpa":
            sdpa(q, k, v, is_causal=True, enable_gqa=True)
        else:
            quant_attention(q, k, v)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
