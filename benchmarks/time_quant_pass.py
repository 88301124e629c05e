"""Where the INT8·FP8 quantisation passes spend their time, stage by stage (H200).

`attnsieve bench kernels --precision int8-fp8` times what runs before the attention kernel as
quant_ms: `quantize_kv`, and `quantize_q` before the Triton kernel (the Hopper one quantises Q
itself). This times, at each length, the K / V pass eagerly (`median_ms`, as the bench) and from a
CUDA graph, each of its three kernels and the Q pass alone, and a bf16 copy of Q, K and V (the
bandwidth floor of reading them once); each ``--variant
NAME=PATH`` (a copy of `attnsieve.kernels.quantize`) times its whole pass beside. Writes
quant_pass.json.

    PYTHONPATH=. python3 benchmarks/time_quant_pass.py --out DIR [--lengths 32768,65536,131072]
        [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import triton

from attnsieve.bench.common import environment, graph_ms, ints, median_ms, write_json
from attnsieve.kernels import quantize
from benchmarks.check_masked_cost import load


def stages(q, k, v, block: int = 128) -> dict:
    """Each kernel of `quantize.quantize_kv_blocks` as a closure over buffers allocated once, and
    `quantize.quantize_q_blocks` (64-row tiles, as before the Triton kernel)."""
    b, h_kv, m, d = k.shape
    chunks = triton.cdiv(m, quantize._STATS_CHUNK)
    f32 = dict(dtype=torch.float32, device=k.device)
    stats = torch.empty((2, b, h_kv, chunks, d), **f32)
    kv_bad = torch.zeros((b, h_kv, m), dtype=torch.int8, device=k.device)
    scales = torch.empty((4, b, h_kv, d), **f32)
    k8 = torch.empty_like(k, dtype=torch.int8)
    k_scale = torch.empty((b, h_kv, triton.cdiv(m, block)), **f32)
    k_block_bad = torch.empty((b, h_kv, k_scale.shape[-1]), dtype=torch.int8, device=k.device)
    v_t = torch.empty((b, h_kv, d, triton.cdiv(m, 16) * 16), dtype=torch.float8_e4m3fn,
                      device=k.device)  # fmt: skip

    def kv_stats():
        quantize._kv_stats_kernel[(chunks, b * h_kv)](
            k, v, stats, kv_bad, *k.stride(), *v.stride(), h_kv, m,
            CHUNK=quantize._STATS_CHUNK, BLOCK=quantize._STATS_BLOCK, HEAD_DIM=d,
            num_warps=quantize._STATS_WARPS,
        )  # fmt: skip

    def kv_scales():
        quantize._kv_scales_kernel[(b * h_kv,)](stats, scales, b * h_kv, m, chunks, HEAD_DIM=d)

    def quant_kv():
        quantize._quant_kv_kernel[(k_scale.shape[-1], b * h_kv, 2)](
            k, v, k8, k_scale, v_t, scales, kv_bad, k_block_bad, *k.stride(), *v.stride(),
            v_t.stride(2), h_kv, m, BLOCK=block, HEAD_DIM=d, EMULATE_FP8=False, num_warps=8,
        )  # fmt: skip

    def quant_q():
        quantize.quantize_q_blocks(q, 64)

    copies = [torch.empty_like(t) for t in (q, k, v)]

    def copy_qkv():
        for dst, src in zip(copies, (q, k, v), strict=True):
            dst.copy_(src)

    return {"kv_stats": kv_stats, "kv_scales": kv_scales, "quant_kv": quant_kv, "quant_q": quant_q,
            "copy_qkv (bf16)": copy_qkv}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=ints, default=ints("32768,65536,131072"))
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    args = parser.parse_args()
    variants = [(v.split("=")[0], load(*v.split("=", 1))) for v in args.variant]
    rows = []
    for n in args.lengths:
        q = torch.randn(1, args.heads, n, args.head_dim, device="cuda", dtype=torch.bfloat16)
        k, v = torch.randn(2, 1, args.kv_heads, n, args.head_dim, device="cuda").bfloat16()
        whole = lambda k=k, v=v: quantize.quantize_kv(k, v)  # noqa: E731
        row = {
            "length": n,
            "whole_eager_ms": median_ms(whole),
            "whole_graph_ms": graph_ms(whole, 20),
        }
        for name, module in variants:
            fn = lambda k=k, v=v, module=module: module.quantize_kv(k, v)  # noqa: E731
            row[f"{name}_whole_eager_ms"] = median_ms(fn)
            row[f"{name}_whole_graph_ms"] = graph_ms(fn, 20)
        for name, fn in stages(q, k, v).items():
            fn()
            row[f"{name}_ms"] = graph_ms(fn, 20)
        rows.append(row)
        print(" ".join(f"{key} {val:.3f}" if isinstance(val, float) else f"{key} {val}"
                       for key, val in row.items()), flush=True)  # fmt: skip
        del q, k, v
        torch.cuda.empty_cache()
    write_json(args.out / "quant_pass.json", {"environment": environment("cuda"), "rows": rows})


if __name__ == "__main__":
    main()
