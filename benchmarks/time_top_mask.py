"""`attnsieve.methods.kv.base.top_mask` (a stable sort: ties to the lower index) against the same
mask from topk's values and a scan over the ties, and a plain topk (ties in an order of its own)
on the GPU: what the deterministic tie-break costs a decode step of Double Sparsity / TidalDecode
or a compression pass.

    PYTHONPATH=. python3 benchmarks/time_top_mask.py --out benchmarks/results/h200/top_mask32
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms, write_json
from attnsieve.methods.kv.base import top_mask


def scan_mask(key: torch.Tensor, count: torch.Tensor, width: int) -> torch.Tensor:
    """Every entry above a row's count-th largest (topk's values), then the first equal ones."""
    nth = key.topk(width, dim=-1).values.gather(-1, (count - 1).clamp(min=0)[..., None].long())
    above, tied = key > nth, key == nth
    room = count[..., None] - above.sum(-1, keepdim=True)
    return (above | (tied & (tied.cumsum(-1) <= room))) & (count[..., None] > 0)


def topk_mask(key: torch.Tensor, count: torch.Tensor, width: int) -> torch.Tensor:
    order = key.topk(width, dim=-1).indices
    rank_ok = torch.arange(width, device=key.device) < count[..., None]
    return torch.zeros_like(key, dtype=torch.bool).scatter_(-1, order, rank_ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for batch, heads, tokens, keep in [(1, 3, 32768, 2048), (8, 3, 32768, 2048),
                                       (1, 8, 131072, 8192), (8, 8, 131072, 8192)]:  # fmt: skip
        key = torch.randn(batch, heads, tokens, device="cuda", dtype=torch.float64)
        count = torch.full((batch, heads), keep, device="cuda")
        mask = top_mask(key, count, keep)
        assert torch.equal(mask, scan_mask(key, count, keep))
        assert torch.equal(mask, topk_mask(key, count, keep))  # random keys: no ties
        tied = key.round()  # a few values, each tied many times over
        assert torch.equal(top_mask(tied, count, keep), scan_mask(tied, count, keep))
        row = {"batch": batch, "heads": heads, "tokens": tokens, "keep": keep}
        for name, fn in (
            ("top_mask", top_mask),
            ("scan", scan_mask),
            ("topk", topk_mask),
        ):
            row[f"{name}_ms"] = graph_ms(functools.partial(fn, key, count, keep), 50)
        rows.append(row)
        print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "top_mask.json", {"environment": environment("cuda"), "rows": rows})


if __name__ == "__main__":
    main()
