"""Decode tiles and waves of programs for short and sparse reads (H200).

For Llama-3-8B and SmolLM2 heads, batch 1 and 8: dense reads of 8K and 16K tokens and 1/16 sparse
reads (random pages, as `attnsieve bench decode`'s sparse rows) of 32K and 128K caches, on bf16 and
FP8 pages, each (BLOCK_N, warps, stages) of TILES over 2 / 4 / 8 / 16 waves of programs against the
kernel's own choice. CUDA-graph medians, L2 flushed. Writes waves.json.

    PYTHONPATH=. python3 benchmarks/time_decode_waves.py --out DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms, rel_err
from attnsieve.bench.decode import make_cache, random_pages
from attnsieve.kernels import decode
from attnsieve.kernels.decode_reference import decode_reference

SHAPES = {
    "llama": {"heads": 32, "kv_heads": 8, "head_dim": 128, "page_size": 16},
    "smollm2": {"heads": 9, "kv_heads": 3, "head_dim": 64, "page_size": 16},
}
READS = ((8192, 1), (16384, 1), (32768, 16), (131072, 16))  # (cache length, 1/keep read)
TILES = ((128, 8, 2), (128, 4, 2), (64, 4, 2))
WAVES = (2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = decode._tile
    for (name, shape), b, (n, keep) in itertools.product(SHAPES.items(), (1, 8), READS):
        c = make_cache(b, n, argparse.Namespace(**shape))
        sel = {}
        if keep > 1:
            pages, count = random_pages(keep)(c.q, c)
            sel = {"pages": pages, "page_count": count}
        for dtype, pool in (("bf16", c.paged), ("fp8", c.fp8)):
            ref = decode_reference(c.q, **pool, **sel)

            def fn(q=c.q, pool=pool, sel=sel):
                return decode.decode_attention(q, **pool, **sel)

            default = graph_ms(fn, 30)
            best = (default, "default")
            for (bn, warps, stages), waves in itertools.product(TILES, WAVES):
                decode._tile = lambda *s, t=(bn, warps, stages, waves): t
                try:
                    err = rel_err(fn(), ref)
                    ms = graph_ms(fn, 30)
                finally:
                    decode._tile = chosen
                rows.append({"shape": name, "B": b, "L": n, "keep": keep, "dtype": dtype,
                             "tile": [bn, warps, stages, waves], "ms": ms,
                             "default_ms": default, "rel_err": err})  # fmt: skip
                best = min(best, (ms, f"{bn}x{warps}x{stages} waves {waves}"))
            print(f"{name} B{b} L{n:6d} 1/{keep:2d} {dtype}: default {default * 1e3:7.1f} us, "
                  f"best {best[0] * 1e3:7.1f} us ({best[1]}, {default / best[0]:.2f}x)",
                  flush=True)  # fmt: skip
        torch.cuda.empty_cache()
        payload = {"environment": environment("cuda"), "rows": rows}
        (args.out / "waves.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
