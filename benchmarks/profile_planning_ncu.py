"""Run FlexPrefill's last-query pass (`last_query_stats`, 128 last queries, 128-key blocks) three
times on random Llama-3-8B heads (32 query, 8 KV, head_dim 128), batch 1, LENGTH tokens, for
Nsight Compute; ``--module PATH`` takes the pass from a copy of `attnsieve/kernels/planning.py`.
Profile its second launch of the one-pass kernel: on an sm_90 GPU the Gluon one
(`attnsieve.kernels.planning_hopper`, named ``_kernel``), elsewhere, or with a module from before
it, the Triton one, e.g.:

    ncu --section SpeedOfLight --section WarpStateStats -k "regex:^_kernel$" \
        -s 1 -c 1 python3 benchmarks/profile_planning_ncu.py 65536
    ncu ... -k regex:_last_block_parts_kernel ... 65536 --module OLD_PLANNING_PY
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.kernels import planning
from benchmarks.check_masked_cost import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("length", type=int)
    parser.add_argument("--module", help="a copy of attnsieve/kernels/planning.py to run instead")
    args = parser.parse_args()
    module = load("planning_variant", args.module) if args.module else planning
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 32, args.length, 128, generator=g, device="cuda").bfloat16()
    k = torch.randn(1, 8, args.length, 128, generator=g, device="cuda").bfloat16()
    for _ in range(3):
        module.last_query_stats(q, k, last_q=128, block_k=128)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
