"""Launch one decode kernel four times on a random paged cache, for Nsight Compute.

CASE is ``bf16`` or ``fp8`` (the paged split kernel on those pages) or ``sdpa`` (SDPA decode on
the same K/V, contiguous); heads default to Llama-3-8B's (32 query, 8 KV, head_dim 128), pages of
16. Profile the third launch, e.g.:

    ncu --section SpeedOfLight --section Occupancy -k regex:_decode_split_kernel -s 2 -c 1 \
        python3 benchmarks/profile_decode_ncu.py fp8 8 131072
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.bench.decode import make_cache
from attnsieve.kernels import decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("bf16", "fp8", "sdpa"))
    parser.add_argument("batch", type=int)
    parser.add_argument("length", type=int)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args()
    shape = argparse.Namespace(
        heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim, page_size=16
    )
    c = make_cache(args.batch, args.length, shape)
    q4 = c.q.unsqueeze(2)
    for _ in range(4):
        if args.case == "sdpa":
            torch.nn.functional.scaled_dot_product_attention(q4, c.k, c.v, enable_gqa=True)
        else:
            decode.decode_attention(c.q, **(c.paged if args.case == "bf16" else c.fp8))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
