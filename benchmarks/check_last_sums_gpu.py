"""`last_query_stats` (current module and variants) against its float32 twin on the GPU, output by
output, at aligned and unaligned lengths: relative errors and the worst slash blocks.

    PYTHONPATH=. python3 benchmarks/check_last_sums_gpu.py [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.bench.common import rel_err
from attnsieve.kernels import planning, planning_reference
from benchmarks.check_masked_cost import load

# (query heads, KV heads, head_dim, tokens, last queries, block_k)
CASES = [
    (1, 1, 64, 4099, 128, 128),
    (1, 1, 64, 8192, 128, 128),
    (1, 1, 64, 8192 + 77, 128, 128),
    (9, 3, 64, 8192, 128, 128),
    (1, 1, 64, 8192, 100, 128),
    (1, 1, 64, 8192, 128, 64),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    args = parser.parse_args()
    modules = {"current": planning}
    modules.update({e.split("=")[0]: load(*e.split("=", 1)) for e in args.variant})
    for h_q, h_kv, d, n, last_q, block_k in CASES:
        g = torch.Generator(device="cuda").manual_seed(n)
        q = torch.randn(1, h_q, n, d, generator=g, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, h_kv, n, d, generator=g, device="cuda", dtype=torch.bfloat16)
        want_v, want_s = planning_reference.last_query_stats(q, k, last_q=last_q, block_k=block_k)
        for name, module in modules.items():
            got_v, got_s = module.last_query_stats(q, k, last_q=last_q, block_k=block_k)
            diff = (got_s - want_s).abs().flatten()
            worst = diff.topk(3).indices.tolist()
            blocks = [(i, f"{float(got_s.flatten()[i]):.3e}", f"{float(want_s.flatten()[i]):.3e}")
                      for i in worst]  # fmt: skip
            print(f"H {h_q}/{h_kv} d {d} N {n} last {last_q} bk {block_k} {name:8s} "
                  f"vertical {rel_err(got_v, want_v):.1e} slash {rel_err(got_s, want_s):.1e} "
                  f"worst (block, got, want) {blocks}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
