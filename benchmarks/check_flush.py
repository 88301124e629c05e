"""Does the way L2 is flushed change a decode kernel's measured bandwidth? (GPU.)

`attnsieve.bench.common.graph_ms` flushes L2 before each replay. Zeroing a 256 MB buffer (the
"write" flush, as `triton.testing.do_bench` does) leaves up to an L2's worth of dirty lines, whose
write-back can overlap the timed kernel; reading it (the "read" flush) leaves clean lines. For
Llama-3-8B's decode shapes (8 KV heads, head_dim 128, pages of 16) at batch 1 and 8, 32K and 128K
tokens: SDPA decode, attnsieve's dense decode kernel and a plain read of the same K/V bytes (two
`torch.sum`), under each flush, as TB/s of K/V read and as a share of the device-to-device copy
rate; the kernel also on pages that lie in order in the pool (elsewhere they are shuffled, as in
`attnsieve bench decode`). Writes flush.json to --out.

    PYTHONPATH=. python3 benchmarks/check_flush.py --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms
from attnsieve.bench.decode import LLAMA3_8B_DECODE, copy_bandwidth, make_cache
from attnsieve.kernels.decode import decode_attention


def time_shape(b: int, n: int, copy: float, reps: int) -> list[dict]:
    shape = LLAMA3_8B_DECODE
    c = make_cache(b, n, shape)
    in_order = make_cache(b, n, shape, shuffled=False).paged
    q4 = c.q.unsqueeze(2)
    k_pages, v_pages = c.paged["k_pages"], c.paged["v_pages"]
    fns = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(
            q4, c.k, c.v, enable_gqa=True
        ),
        "dense kernel": lambda: decode_attention(c.q, **c.paged),
        "dense kernel, pages in order": lambda: decode_attention(c.q, **in_order),
        "read (sum)": lambda: (k_pages.sum(dtype=torch.float32), v_pages.sum(dtype=torch.float32)),
    }
    gbytes = 2 * c.k.numel() * c.k.element_size() / 1e9
    rows = []
    for name, fn in fns.items():
        for flush in ("write", "read"):
            ms = graph_ms(fn, reps, flush=flush)
            row = {"B": b, "L": n, "what": name, "flush": flush, "ms": ms, "tbps": gbytes / ms}
            row["pct_copy"] = 100 * row["tbps"] / copy
            rows.append(row)
            print(f"B={b} L={n:>6} {name:>28} flush={flush:<5} {ms * 1e3:8.1f} us "
                  f"{row['tbps']:5.2f} TB/s {row['pct_copy']:5.1f} % of copy")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    copy = copy_bandwidth()
    rows = []
    for b, n in ((1, 32768), (1, 131072), (8, 32768), (8, 131072)):
        rows += time_shape(b, n, copy, args.reps)
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment("cuda"), "copy_tbps": copy, "rows": rows}
    (args.out / "flush.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
