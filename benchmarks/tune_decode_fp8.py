"""Tile, warps, pipeline depth and split count of the FP8 paged decode against bf16 (H200).

For each kernel module (the current one and variants given by path, e.g. one that dequantises to
another dtype) and each (BLOCK_N, warps, stages, waves of programs over the SMs), times the dense
decode over FP8 pools (and bf16 ones with ``--dtypes fp8,bf16``) at ``--lengths`` x ``--batch``
on Llama-3-8B heads unless ``--heads/--kv-heads/--head-dim`` say otherwise (CUDA-graph median,
L2 flushed, as `attnsieve bench decode`), checks it
against the float32 twin, and prints it beside the current kernel's bf16 time at its own
settings. Writes tune_decode_fp8.json.

    PYTHONPATH=. python3 benchmarks/tune_decode_fp8.py --out DIR [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from attnsieve.bench.common import environment, graph_ms, rel_err
from attnsieve.bench.decode import LLAMA3_8B_DECODE, make_cache
from attnsieve.checks import cdiv
from attnsieve.kernels import decode
from attnsieve.kernels.decode_reference import decode_reference
from benchmarks.check_masked_cost import load


def sweep(
    modules: dict,
    c,
    b: int,
    n: int,
    configs: list,
    dtypes: dict,
    min_split: int = 512,
    max_splits: int = decode.MAX_SPLITS,
) -> list[dict]:
    """Rows of one (batch, length): every module under every config and its pool dtypes, beside
    the current kernel's bf16 at its own settings (each module's tile choice is restored after)."""
    bf16_ms = graph_ms(lambda: decode.decode_attention(c.q, **c.paged), 30)
    refs = {"fp8": decode_reference(c.q, **c.fp8), "bf16": decode_reference(c.q, **c.paged)}
    pools = {"fp8": c.fp8, "bf16": c.paged}
    if any("fp8t" in kinds for kinds in dtypes.values()):
        # the FP8 pools with V stored token-fastest within each page (its D x page_size blocks)
        v_t = c.fp8["v_pages"].transpose(1, 2).contiguous().transpose(1, 2)
        pools["fp8t"], refs["fp8t"] = {**c.fp8, "v_pages": v_t}, refs["fp8"]
    rows = []
    chosen = {name: module._tile for name, module in modules.items()}
    runs = [(name, module, dtype) for name, module in modules.items() for dtype in dtypes[name]]
    for (name, module, dtype), (block_n, warps, stages, waves) in itertools.product(runs, configs):
        module._tile = lambda *shape, t=(block_n, warps, stages, waves): t
        splits = max(1, min(cdiv(n, min_split), cdiv(waves * 132, b * c.k.shape[1]), max_splits))
        pool = pools[dtype]
        fn = lambda m=module, s=splits, p=pool: m.decode_attention(c.q, **p, num_splits=s)  # noqa: E731
        try:
            err = rel_err(fn(), refs[dtype])
            ms = graph_ms(fn, 30)
        except Exception as exc:  # a config that does not compile is a result
            print(f"{b} {n} {name} {dtype} {block_n} {warps} {stages} {waves}: "
                  f"{type(exc).__name__}")  # fmt: skip
            continue
        rows.append({"B": b, "L": n, "kernel": name, "dtype": dtype, "block_n": block_n,
                     "warps": warps, "stages": stages, "waves": waves, "splits": splits,
                     "ms": ms, "bf16_ms": bf16_ms, "vs_bf16": bf16_ms / ms,
                     "rel_err": err})  # fmt: skip
        print(f"B{b} L{n:6d} {name:8s} {dtype:4s} bn{block_n:3d} w{warps} s{stages} "
              f"waves{waves} {ms * 1e3:7.1f} us  bf16 {bf16_ms * 1e3:7.1f} us  "
              f"{bf16_ms / ms:4.2f}x  err {err:.1e}", flush=True)  # fmt: skip
    for name, module in modules.items():
        module._tile = chosen[name]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--variant", action="append", default=[],
        help="NAME=PATH[@DTYPES] of a kernel, DTYPES as --dtypes (default: --dtypes)",
    )  # fmt: skip
    parser.add_argument("--no-current", action="store_true", help="sweep only the variants")
    parser.add_argument("--stages", default="2,3", help="pipeline stages to try")
    parser.add_argument("--page-size", type=int, default=16, help="tokens per page")
    parser.add_argument("--lengths", default="32768,131072")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--waves", default="2,4", help="waves of programs over the SMs")
    parser.add_argument(
        "--dtypes", default="fp8",
        help="pool dtypes to time: fp8, bf16, fp8t (FP8 with V token-fastest in each page: for "
        "variants that read it; the current kernel needs V's head_dim contiguous)",
    )  # fmt: skip
    parser.add_argument(
        "--configs", default=None,
        help="BLOCK_NxWARPSxSTAGESxWAVES,... instead of the sweep, e.g. 128x8x2x2,64x4x2x4",
    )  # fmt: skip
    parser.add_argument("--heads", type=int, default=LLAMA3_8B_DECODE.heads, help="query heads")
    parser.add_argument("--kv-heads", type=int, default=LLAMA3_8B_DECODE.kv_heads, help="KV heads")
    parser.add_argument("--head-dim", type=int, default=LLAMA3_8B_DECODE.head_dim)
    parser.add_argument(
        "--min-split-tokens", type=int, default=512, help="fewest tokens a split reads"
    )
    parser.add_argument(
        "--max-splits", type=int, default=decode.MAX_SPLITS, help="most splits a KV head takes"
    )
    args = parser.parse_args()
    waves = {int(w) for w in args.waves.split(",")}
    stages = [int(s) for s in args.stages.split(",")]
    configs = list(itertools.product((64, 128), (4, 8), stages, sorted(waves)))
    if args.configs:
        configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")]
    modules = {} if args.no_current else {"current": decode}
    dtypes = dict.fromkeys(modules, args.dtypes.split(","))
    for spec in args.variant:
        name, rest = spec.split("=", 1)
        path, _, kinds = rest.partition("@")
        modules[name] = load(name, path)
        dtypes[name] = (kinds or args.dtypes).split(",")
    shape = argparse.Namespace(
        heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim, page_size=args.page_size
    )
    rows = []
    batches, lengths = map(int, args.batch.split(",")), map(int, args.lengths.split(","))
    for b, n in itertools.product(batches, lengths):
        cache = make_cache(b, n, shape)
        rows += sweep(modules, cache, b, n, configs, dtypes, args.min_split_tokens, args.max_splits)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_decode_fp8.json").write_text(
        json.dumps({"environment": environment("cuda"), "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
