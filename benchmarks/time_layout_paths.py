"""The prefill kernel's rate on each part of a Layout: key blocks, columns and spans, apart (H200).

`attnsieve bench kernels` draws block layouts only, and vertical_slash's layouts (columns and
spans) ran at about half the dense rate per computed pair on SmolLM2's heads (fourteenth session
of 2026-12-01). For each length this times, on the same Q/K/V (SmolLM2's heads unless
``--heads/--kv-heads/--head-dim`` say otherwise):

- ``dense``: SDPA causal (cuDNN first, as `sparse_attention`'s dense dispatch);
- ``blocks``: random key blocks below the diagonal, the diagonal block always kept;
- ``spans``: the diagonal block plus ``--spans`` key ranges of ``--span-len`` keys a query block,
  at unaligned starts spread below it (a vertical-slash plan's shape);
- ``columns``: the diagonal block plus ``--columns`` random key columns a query block.

Blocks and spans are drawn for about ``--density`` of the causal pairs. Each layout is checked
against the float32 reference on sampled query blocks and timed eagerly (`median_ms`). ``tflops``
counts the pairs the layout computes (`Layout.density`), so the rows compare rates. Writes
layout_paths.json.

    PYTHONPATH=. python3 benchmarks/time_layout_paths.py --out DIR [--lengths 32768,131072]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnsieve.bench.common import environment, ints, median_ms, rel_err, sampled_blocks
from attnsieve.kernels.prefill import sdpa_dense, sparse_attention
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout
from attnsieve.layout_counts import causal_pairs


def block_layout(n: int, block: int, density: float, gen: torch.Generator) -> Layout:
    """Random key blocks below the diagonal at about ``density``, diagonal and sink kept."""
    qb = n // block
    keep = torch.rand(qb, qb, generator=gen) < density
    keep |= torch.eye(qb, dtype=torch.bool)
    keep[:, 0] = True
    keep &= torch.ones(qb, qb, dtype=torch.bool).tril()
    return Layout.from_block_mask(
        keep[None, None].cuda(), block_q=block, block_k=block, num_queries=n, num_keys=n
    )


def diagonal_only(n: int, block: int) -> Layout:
    eye = torch.eye(n // block, dtype=torch.bool)[None, None].cuda()
    return Layout.from_block_mask(eye, block_q=block, block_k=block, num_queries=n, num_keys=n)


def span_layout(n: int, block: int, spans: int, span_len: int) -> Layout:
    """The diagonal block plus ``spans`` ranges of ``span_len`` keys a query block, their starts
    spread evenly below the block and off the block grid."""
    q0 = torch.arange(n // block)[:, None] * block
    reach = torch.arange(1, spans + 1)[None, :]
    start = q0 - reach * (q0 // (spans + 1)).clamp(min=1) - 17
    start = torch.where(start >= 0, start, -1)
    end = torch.where(start >= 0, start + span_len, 0)
    return diagonal_only(n, block).with_spans(start[None, None].cuda(), end[None, None].cuda())


def column_layout(n: int, block: int, columns: int, gen: torch.Generator) -> Layout:
    """The diagonal block plus ``columns`` random key tokens below each query block."""
    q0 = torch.arange(n // block)[:, None] * block
    cols = (torch.rand(n // block, columns, generator=gen) * q0).long()
    cols = torch.where(q0 > 0, cols, -1)
    return diagonal_only(n, block).with_columns(cols[None, None].cuda())


def time_layout(name: str, layout: Layout, q, k, v, dense_ms: float) -> dict:
    n = q.shape[2]
    density = float(layout.density())
    flops = 4 * density * causal_pairs(n, n) * q.shape[0] * q.shape[1] * q.shape[-1]
    out = sparse_attention(q, k, v, layout, dense_dispatch=False)
    err = max(
        rel_err(out[:, :, r0:r1], attention_reference(q[:, :, r0:r1].float(),
                k[:, :, : sub.num_keys].float(), v[:, :, : sub.num_keys].float(), sub))
        for r0, r1, sub in sampled_blocks(layout, 4)
    )  # fmt: skip
    ms = median_ms(lambda: sparse_attention(q, k, v, layout, dense_dispatch=False))
    row = {"layout": name, "length": n, "density": density, "ms": ms, "rel_err": err,
           "tflops": flops / ms / 1e9, "dense_ms_x_density": dense_ms * density}  # fmt: skip
    print(f"N={n:6d} {name:8s} density {density:.3f} {ms:8.3f} ms  {row['tflops']:6.1f} TFLOPS"
          f"  (dense x density {dense_ms * density:7.3f} ms)  err {err:.1e}")  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=ints, default=ints("32768,131072"))
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.3)
    parser.add_argument("--span-len", type=int, default=224, help="keys a span")
    parser.add_argument("--columns", type=int, default=1024, help="columns a query block")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    results = []
    for n in args.lengths:
        shape = (1, args.heads, n, args.head_dim)
        q = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        k, v = torch.randn(2, 1, args.kv_heads, n, args.head_dim, device="cuda").bfloat16()
        dense_ms = median_ms(lambda q=q, k=k, v=v: sdpa_dense(q, k, v, args.head_dim**-0.5))
        flops = 4 * causal_pairs(n, n) * args.heads * args.head_dim
        print(f"N={n:6d} dense    {dense_ms:8.3f} ms  {flops / dense_ms / 1e9:6.1f} TFLOPS")
        results.append({"layout": "dense", "length": n, "density": 1.0, "ms": dense_ms,
                        "tflops": flops / dense_ms / 1e9})  # fmt: skip
        # spans a query block for about --density of the causal pairs (n / 2 keys a block)
        spans = max(1, int(args.density * n / 2) // args.span_len)
        layouts = {
            "blocks": block_layout(n, args.block, args.density, gen),
            "spans": span_layout(n, args.block, spans, args.span_len),
            "columns": column_layout(n, args.block, args.columns, gen),
        }
        for name, layout in layouts.items():
            results.append(time_layout(name, layout, q, k, v, dense_ms))
        del q, k, v
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "layout_paths.json").write_text(
        json.dumps(
            {
                "environment": environment("cuda"),
                "args": vars(args) | {"out": str(args.out)},
                "rows": results,
            },
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
