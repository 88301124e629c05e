"""GPU time of the planning kernels under flexprefill (and vertical_slash), current vs variants.

`last_query_stats` on Llama-3-8B heads at 128K and SmolLM2's at 8K and 32K, `block_mean_pool` of
Llama-3-8B queries at 128K and `mass_threshold` on FlexPrefill's 32 x 1M query-aware maps
(CUDA-graph medians). A variant is a module file given
by path: a copy of `attnsieve/kernels/planning.py` or of `attnsieve/kernels/mass_threshold.py`
(told apart by the function it defines); its outputs are compared with the current module's.

    PYTHONPATH=. python3 benchmarks/time_planning_kernels.py [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import functools

import torch

from attnsieve.bench.common import graph_ms, rel_err
from attnsieve.kernels import mass_threshold, planning
from benchmarks.check_masked_cost import load
from benchmarks.time_mass_threshold import flexprefill_maps

# (label, query heads, KV heads, head_dim, tokens, last queries, block_k)
STATS_CASES = [
    ("llama 128K flexprefill", 32, 8, 128, 131072, 128, 128),
    ("smollm2 8K flexprefill", 9, 3, 64, 8192, 128, 128),
    ("smollm2 32K flexprefill", 9, 3, 64, 32768, 128, 128),
    ("llama 128K vertical_slash", 32, 8, 128, 131072, 64, 1),
]


def compare(label: str, modules: dict, call) -> None:
    ref = call(modules["current"])
    for name, module in modules.items():
        fn = functools.partial(call, module)
        out = fn()
        outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
        err = max(rel_err(a.float(), b.float()) for a, b in zip(outs, refs, strict=True))
        print(f"{label:26s} {name:10s} {graph_ms(fn, 20) * 1e3:8.1f} us  err {err:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    args = parser.parse_args()
    stats, thresholds = {"current": planning}, {"current": mass_threshold}
    for entry in args.variant:
        module = load(*entry.split("=", 1))
        kind = stats if hasattr(module, "last_query_stats") else thresholds
        kind[entry.split("=")[0]] = module
    for label, h_q, h_kv, d, n, last_q, block_k in STATS_CASES:
        q = torch.randn(1, h_q, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, h_kv, n, d, device="cuda", dtype=torch.bfloat16)
        compare(label, stats, lambda m: m.last_query_stats(q, k, last_q=last_q, block_k=block_k))  # noqa: B023
    x = torch.randn(1, 32, 131072, 128, device="cuda", dtype=torch.bfloat16)
    compare("block_mean_pool llama 128K", stats, lambda m: m.block_mean_pool(x, 128))
    maps = flexprefill_maps()
    compare("mass_threshold 32 x 1M", thresholds, lambda m: m.mass_threshold(maps, 0.9))


if __name__ == "__main__":
    main()
