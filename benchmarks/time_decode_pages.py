"""Decode time against page size and page order, beside SDPA on contiguous K/V, and FP8 pages at
more waves of programs (H200).

For Llama-3-8B heads (pages of 16 / 64 / 128, the pool shuffled or in order) and SmolLM2 heads
(pages of 16, shuffled), batch 1 and 8, 32K and 128K tokens: SDPA decode on the contiguous cache,
the paged kernel on bf16 pages, and on FP8 pages at its default tile and at 128-token tiles, 4
warps, over 4 and 8 waves of programs (checked against the float32 twin). Since the eleventh
session of 2026-11-30 the FP8 default is the 8-wave tile; the run in decode_vt/pages.json was
made before, against two waves. CUDA-graph medians, L2
flushed, as `attnsieve bench decode`. Writes pages.json.

    PYTHONPATH=. python3 benchmarks/time_decode_pages.py --out DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms, rel_err
from attnsieve.bench.decode import make_cache
from attnsieve.kernels import decode
from attnsieve.kernels.decode_reference import decode_reference

SHAPES = {  # heads, page sizes, pool orders (shuffled?)
    "llama": ({"heads": 32, "kv_heads": 8, "head_dim": 128}, (16, 64, 128), (True, False)),
    "smollm2": ({"heads": 9, "kv_heads": 3, "head_dim": 64}, (16,), (True,)),
}


def time_one(name: str, heads: dict, b: int, n: int, page_size: int, shuffled: bool) -> dict:
    c = make_cache(b, n, argparse.Namespace(page_size=page_size, **heads), shuffled=shuffled)
    q4 = c.q.unsqueeze(2)
    row = {"shape": name, "B": b, "L": n, "page_size": page_size, "shuffled": shuffled}
    sdpa = torch.nn.functional.scaled_dot_product_attention
    row["sdpa_ms"] = graph_ms(lambda: sdpa(q4, c.k, c.v, enable_gqa=True), 30)
    row["bf16_ms"] = graph_ms(lambda: decode.decode_attention(c.q, **c.paged), 30)
    row["fp8_ms"] = graph_ms(lambda: decode.decode_attention(c.q, **c.fp8), 30)
    ref = decode_reference(c.q, **c.fp8)
    chosen = decode._tile
    for waves in (4, 8):
        decode._tile = lambda *shape, w=waves: (128, 4, 2, w)  # FP8 pages only below
        try:
            row[f"fp8_w{waves}_err"] = rel_err(decode.decode_attention(c.q, **c.fp8), ref)
            row[f"fp8_w{waves}_ms"] = graph_ms(lambda: decode.decode_attention(c.q, **c.fp8), 30)
        finally:
            decode._tile = chosen
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (heads, page_sizes, orders) in SHAPES.items():
        for b, n, ps, shuffled in itertools.product((1, 8), (32768, 131072), page_sizes, orders):
            r = time_one(name, heads, b, n, ps, shuffled)
            rows.append(r)
            print(f"{name} B{b} L{n:6d} page {ps:3d} {'shuffled' if shuffled else 'in order'}: "
                  f"sdpa {r['sdpa_ms'] * 1e3:7.1f}  bf16 {r['bf16_ms'] * 1e3:7.1f} "
                  f"({r['sdpa_ms'] / r['bf16_ms']:.2f}x sdpa)  fp8 {r['fp8_ms'] * 1e3:7.1f} "
                  f"w4 {r['fp8_w4_ms'] * 1e3:7.1f} w8 {r['fp8_w8_ms'] * 1e3:7.1f} us "
                  f"(w8 {r['bf16_ms'] / r['fp8_w8_ms']:.2f}x bf16)", flush=True)  # fmt: skip
            torch.cuda.empty_cache()
            payload = {"environment": environment("cuda"), "rows": rows}
            (args.out / "pages.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
