"""GPU time of the planning kernels under flexprefill (and vertical_slash), current vs variants.

`last_query_stats` on Llama-3-8B heads at 32K, 64K and 128K and SmolLM2's at 8K, 32K and 128K,
`pooled_block_probs` of Llama-3-8B's pooled heads at 64K and 128K, `block_mean_pool` of
Llama-3-8B queries at 32K, 64K and 128K (both also with one head of 32 asked for, as FlexPrefill
asks for its query-aware heads, in the modules that take ``heads``) and `mass_threshold` on
FlexPrefill's 32 x 1M query-aware maps, and on one of 32 x 65K, 262K and 1M (the others keep
nothing) (CUDA-graph medians; last_query_stats' and pooled_block_probs' errors against their
float32 twins), and `line_block_mask` against its twin; with ``--lines-only``, `choose_lines`
alone (see `line_choices`). A variant is a module file given by path: a copy of
`attnsieve/kernels/planning.py`, `pooling.py`, `mass_threshold.py` or (with ``--lines-only``)
`line_choice.py` (told apart by the function it defines; a planning.py from before the pooling
moved out serves both); its outputs are compared with the current module's.

    PYTHONPATH=. python3 benchmarks/time_planning_kernels.py [--variant NAME=PATH ...]
        [--stats-only | --mass-only | --pool-only | --lines-only]
"""

from __future__ import annotations

import argparse
import functools
from inspect import signature

import torch

from attnsieve import api
from attnsieve.bench.common import graph_ms, rel_err
from attnsieve.eval.workloads import model_workload
from attnsieve.kernels import (
    line_choice,
    mass_threshold,
    planning,
    planning_reference,
    pooling,
    pooling_reference,
)
from benchmarks.check_masked_cost import load
from benchmarks.time_mass_threshold import flexprefill_maps

# (label, query heads, KV heads, head_dim, tokens, last queries, block_k)
STATS_CASES = [
    ("llama 32K flexprefill", 32, 8, 128, 32768, 128, 128),
    ("llama 64K flexprefill", 32, 8, 128, 65536, 128, 128),
    ("llama 128K flexprefill", 32, 8, 128, 131072, 128, 128),
    ("smollm2 8K flexprefill", 9, 3, 64, 8192, 128, 128),
    ("smollm2 32K flexprefill", 9, 3, 64, 32768, 128, 128),
    ("smollm2 128K flexprefill", 9, 3, 64, 131072, 128, 128),
    ("llama 128K vertical_slash", 32, 8, 128, 131072, 64, 1),
]


def compare(label: str, modules: dict, call, ref=None) -> None:
    """Each module's time and its outputs' error against ``ref`` (default: the current's)."""
    ref = call(modules["current"]) if ref is None else ref
    for name, module in modules.items():
        fn = functools.partial(call, module)
        out = fn()
        outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
        err = max(rel_err(a.float(), b.float()) for a, b in zip(outs, refs, strict=True))
        print(f"{label:26s} {name:10s} {graph_ms(fn, 20) * 1e3:8.1f} us  err {err:.1e}", flush=True)


def block_stats(module, q: torch.Tensor, k: torch.Tensor, *, last_q: int, block_k: int) -> tuple:
    """A module's `last_query_stats`, its vertical summed per block of keys where the module is
    from before 2026-12-03 and summed per key (as flexprefill then did). At blocks of more than
    one key the keys are pooled too by the current `block_mean_pool`, as flexprefill needed them
    before 2026-12-04 (not compared; it now takes its pooled logits from `last_query_stats` with
    ``pooled`` and pools only its query-aware heads' keys). For pool43/ and pool43b/ this
    function also called uncommitted variants that pooled in the same pass with their
    `pool_keys` (25c4885's version of this script)."""
    vertical, slash = module.last_query_stats(q, k, last_q=last_q, block_k=block_k)
    if block_k > 1:
        pooling.block_mean_pool(k, block_k)
    if vertical.shape == slash.shape:
        return vertical, slash
    pad = slash.shape[-1] * block_k - vertical.shape[-1]
    vertical = torch.nn.functional.pad(vertical, (0, pad))
    return vertical.view(*slash.shape, block_k).sum(-1), slash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--stats-only", action="store_true", help="last_query_stats alone")
    only.add_argument("--mass-only", action="store_true", help="mass_threshold alone")
    only.add_argument("--pool-only", action="store_true", help="the pooling kernels alone")
    only.add_argument("--lines-only", action="store_true", help="choose_lines alone")
    opts = parser.parse_args()
    stats, pools, thresholds = (
        {"current": planning},
        {"current": pooling},
        {"current": mass_threshold},
    )
    if opts.lines_only:
        return line_choices(opts.variant)
    for entry in opts.variant:
        name, module = entry.split("=")[0], load(*entry.split("=", 1))
        for kind, op in ((stats, "last_query_stats"), (pools, "pooled_block_probs"),
                         (thresholds, "mass_threshold")):  # fmt: skip
            if hasattr(module, op):
                kind[name] = module
    skip_stats = opts.mass_only or opts.pool_only
    for label, h_q, h_kv, d, n, last_q, block_k in [] if skip_stats else STATS_CASES:
        q = torch.randn(1, h_q, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, h_kv, n, d, device="cuda", dtype=torch.bfloat16)
        args = dict(last_q=last_q, block_k=block_k)
        twin = planning_reference.last_query_stats(q, k, **args)  # the float32 twin
        compare(label, stats, lambda m: block_stats(m, q, k, **args), twin)  # noqa: B023
        del twin
    if opts.stats_only:
        return
    one_head = torch.arange(32, device="cuda")[None] == 7  # one query-aware head of 32
    with_heads = {
        name: m for name, m in pools.items() if "heads" in signature(m.block_mean_pool).parameters
    }
    for n in [] if opts.mass_only else (65536, 131072):  # FlexPrefill's query-aware maps
        qp = torch.randn(1, 32, n // 128, 128, device="cuda")
        kp = torch.randn(1, 8, n // 128, 128, device="cuda")
        sizes = dict(num_queries=n, num_keys=n, block_q=128, block_k=128)
        twin = pooling_reference.pooled_block_probs(qp, kp, **sizes)
        compare(f"pooled_block_probs llama {n // 1024}K", pools,
                lambda m: m.pooled_block_probs(qp, kp, **sizes), twin)  # noqa: B023  # fmt: skip
        # head 7 only: the heads left out are not written (zeros before 2026-12-04)
        compare(f"pooled_block_probs {n // 1024}K 1 head", with_heads,
                lambda m: m.pooled_block_probs(qp, kp, **sizes, heads=one_head)[:, 7],  # noqa: B023
                twin[:, 7])  # fmt: skip
        del twin
    for n in [] if opts.mass_only else (32768, 65536, 131072):
        x = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
        compare(f"block_mean_pool llama {n // 1024}K", pools,
                lambda m: m.block_mean_pool(x, 128))  # noqa: B023  # fmt: skip
        compare(f"block_mean_pool {n // 1024}K 1 head", with_heads,
                lambda m: m.block_mean_pool(x, 128, heads=one_head))  # noqa: B023  # fmt: skip
    if opts.pool_only:
        return
    maps = flexprefill_maps()
    compare("mass_threshold 32 x 1M", thresholds, lambda m: m.mass_threshold(maps, 0.9))
    # at 32K, 64K and 128K: one query-aware head's map searched, the other 31 given 0 (as
    # flexprefill does)
    one_row = torch.where(one_head[0, :, None], 0.9, 0.0)
    for blocks in (256, 512, 1024):
        maps_one = flexprefill_maps(blocks=blocks)
        compare(f"mass_threshold 1 of 32 x {blocks**2 // 1000}K", thresholds,
                lambda m: m.mass_threshold(maps_one, one_row))  # noqa: B023  # fmt: skip
    if not opts.mass_only:
        line_masks(maps)


def line_choices(variants: list[str]) -> None:
    """`choose_lines` (FlexPrefill's gate and lines, γ 0.9, τ 0.1, 8 to all blocks) of the
    synthetic heads' last-query statistics (`model_workload`, as `bench prefill` plans them) on
    Llama-3-8B's heads at 32K-128K and SmolLM2's at 8K and 32K, this checkout's module against
    variants (copies of `attnsieve/kernels/line_choice.py`)."""
    modules = {"current": line_choice}
    modules.update({text.split("=")[0]: load(*text.split("=", 1)) for text in variants})
    for shape, n in (("llama", 32768), ("llama", 65536), ("llama", 131072), ("smollm2", 8192),
                     ("smollm2", 32768)):  # fmt: skip
        w = model_workload(shape, n, device="cuda", dtype=torch.bfloat16)
        stats = planning.last_query_stats(w.q, w.k, last_q=128, block_k=128, pooled=True)
        compare(f"choose_lines {shape} {n // 1024}K", modules,
                lambda m: m.choose_lines(*stats, gamma=0.9, tau=0.1, lo=8, hi=n // 128))  # noqa: B023  # fmt: skip


def line_masks(maps: torch.Tensor) -> None:
    """`api.line_block_mask` on FlexPrefill's Llama-3-8B shapes at 128K (32 heads, 1024 blocks
    of 128), the kernel against its twin: chosen verticals and bands, every head's query-aware
    map, half the heads query-aware."""
    g = torch.Generator(device="cuda").manual_seed(0)
    lines = torch.rand(1, 32, 2, 1024, generator=g, device="cuda") < 0.05
    extra = mass_threshold.mass_threshold(maps, 0.9).view(1, 32, 1024, 1024)
    heads = torch.rand(1, 32, generator=g, device="cuda") < 0.5
    sizes = dict(band=128, block_q=128, block_k=128, num_queries=131072, num_keys=131072)
    twin = api.line_block_mask(*lines.unbind(2), **sizes, extra=extra, extra_heads=heads,
                               backend="reference")  # fmt: skip
    for backend in ("triton", "reference"):
        fn = functools.partial(api.line_block_mask, *lines.unbind(2), **sizes, extra=extra,
                               extra_heads=heads, backend=backend)  # fmt: skip
        same = bool(torch.equal(fn(), twin))
        print(f"line_block_mask llama 128K {backend:10s} {graph_ms(fn, 20) * 1e3:8.1f} us  "
              f"equal to the twin: {same}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
