"""Splits per KV head of the bf16 paged decode kernel, against SDPA, on Llama-3-8B heads (H200).

For each (batch, length): SDPA decode (enable_gqa) and the dense kernel at its default split count
(`kernels.decode.num_splits_for`) and at fixed counts, each as a CUDA-graph median with L2
flushed (as `attnsieve bench decode`), with the share of the measured copy bandwidth. Writes
tune_decode_splits.json.

    PYTHONPATH=. python3 benchmarks/tune_decode_splits.py --out DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms, rel_err
from attnsieve.bench.decode import LLAMA3_8B_DECODE, copy_bandwidth, make_cache
from attnsieve.kernels import decode

SPLITS = (8, 16, 24, 33, 48, 66, 96, 128)


def sweep(c, b: int, n: int, kv_heads: int, copy_tbps: float) -> list[dict]:
    """Rows of one (batch, length): the default split count, then each of SPLITS."""
    q4 = c.q.unsqueeze(2)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q4, c.k, c.v, enable_gqa=True)

    ref, sdpa_ms = sdpa()[:, :, 0], graph_ms(sdpa, 30)
    kv_bytes = b * kv_heads * n * 2 * 2 * c.q.shape[-1]
    default = decode.num_splits_for(b, kv_heads, n, c.q.device)
    rows = []
    for splits in (None, *SPLITS):
        fn = lambda s=splits: decode.decode_attention(c.q, **c.paged, num_splits=s)  # noqa: E731
        err = rel_err(fn(), ref)
        ms = graph_ms(fn, 30)
        pct = 100 * kv_bytes / (ms * 1e-3) / 1e12 / copy_tbps
        rows.append({"B": b, "L": n, "splits": splits or default, "default": splits is None,
                     "ms": ms, "sdpa_ms": sdpa_ms, "vs_sdpa": sdpa_ms / ms,
                     "pct_copy": pct, "rel_err": err})  # fmt: skip
        print(f"B{b} L{n:6d} splits {splits or default:3d}{'*' if splits is None else ' '} "
              f"{ms * 1e3:7.1f} us ({pct:4.1f} % of copy)  sdpa {sdpa_ms * 1e3:7.1f} us  "
              f"{sdpa_ms / ms:4.2f}x  err {err:.1e}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", default="32768,131072")
    parser.add_argument("--batch", default="1,8")
    args = parser.parse_args()
    shape = LLAMA3_8B_DECODE
    copy_tbps = copy_bandwidth()
    rows = []
    batches, lengths = map(int, args.batch.split(",")), map(int, args.lengths.split(","))
    for b, n in itertools.product(batches, lengths):
        rows += sweep(make_cache(b, n, shape), b, n, shape.kv_heads, copy_tbps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_decode_splits.json").write_text(
        json.dumps(
            {"environment": environment("cuda"), "copy_tbps": copy_tbps, "rows": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
