"""Planning and the sparse kernel at long context against their float32 twins, on the GPU.

At 1M tokens, SmolLM2 under flexprefill drifted far from SDPA (session 37: last-position logits
relative error 0.74, against 0.13 at 512K). This tells a fault of ours at such lengths (an index
past int32, a grid limit) from the sparsity itself, on random inputs of SmolLM2's and Llama-3-8B's
head shapes, with a few heavy keys per KV head that every query favours (random keys alone
spread attention so evenly that flexprefill keeps nearly every block):
- each planner on the Triton backend against the same planner on the reference backend: the share
  of kept blocks they disagree on (ties and float32 sums in another order move a few);
- the sparse kernel on the Triton plan against exact float32 attention under the same layout, for
  the first, a middle and the last query block.
Prints one line per check and exits 1 on a mismatch.

    PYTHONPATH=. python3 benchmarks/check_long_context.py --lengths 524288,1048576
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.api import attention
from attnsieve.layout import Layout, causal_token_mask
from attnsieve.methods import get_planner

SHAPES = {"smollm2": (9, 3, 64), "llama": (32, 8, 128)}  # query heads, KV heads, head_dim
ROWS = 64  # query rows per checked block: a float32 (H_q, rows, M) score tile at a time


def inputs(h_q: int, h_kv: int, n: int, d: int, heavy: float) -> tuple[Tensor, Tensor, Tensor]:
    """bf16 q, k, v of random tokens; ``heavy`` of each KV head's keys (at least 4) share that
    head's direction with all its queries, at logits about 15 above the rest."""
    u = torch.randn(1, h_kv, 1, d, device="cuda")
    a = (15 / d**0.5) ** 0.5  # the logit (a·u)·(a·u) / sqrt(D) of about 15
    q = torch.randn(1, h_q, n, d, device="cuda") + a * u.repeat_interleave(h_q // h_kv, 1)
    chosen = torch.rand(1, h_kv, n, 1, device="cuda").argsort(2)[:, :, : max(4, int(heavy * n))]
    k = torch.randn(1, h_kv, n, d, device="cuda")
    k.scatter_add_(2, chosen.expand(-1, -1, -1, d), (a * u).expand(-1, -1, chosen.shape[2], -1))
    v = torch.randn(1, h_kv, n, d, device="cuda")
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


def rows_reference(q: Tensor, k: Tensor, v: Tensor, layout: Layout, start: int) -> Tensor:
    """float32 causal attention of query rows [start, start + ROWS) under ``layout``."""
    n, m, h_q = q.shape[2], k.shape[2], q.shape[1]
    stop = min(n, start + ROWS)
    mask = layout.mask_rows(start, stop) & causal_token_mask(n, m, start, stop, q.device)
    mask = mask.repeat_interleave(h_q // mask.shape[1], 1)  # the layout's heads: 1, H_kv or H_q
    return F.scaled_dot_product_attention(
        q[:, :, start:stop].float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True
    )


def plan_on(backend: str, planner, q: Tensor, k: Tensor) -> Layout:
    os.environ["ATTNSIEVE_BACKEND"] = backend
    try:
        return planner.plan(q, k)
    finally:
        del os.environ["ATTNSIEVE_BACKEND"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="524288,1048576", help="comma-separated tokens")
    parser.add_argument("--shapes", default="smollm2,llama", help=f"of {sorted(SHAPES)}")
    parser.add_argument("--planners", default="flexprefill", help="comma-separated planners")
    parser.add_argument("--heavy", type=float, default=2e-4, help="share of heavy keys")
    parser.add_argument("--plan-tol", type=float, default=1e-2, help="largest disagreeing share")
    parser.add_argument("--out-tol", type=float, default=2e-2, help="largest relative L2 error")
    args = parser.parse_args()
    failed = False
    torch.manual_seed(0)
    for shape in args.shapes.split(","):
        h_q, h_kv, d = SHAPES[shape]
        for n in (int(x) for x in args.lengths.split(",")):
            q, k, v = inputs(h_q, h_kv, n, d, args.heavy)
            for name in args.planners.split(","):
                planner = get_planner(name)
                tag = f"{shape} {n} {name}"
                t0 = time.perf_counter()
                layout = plan_on("triton", planner, q, k)
                want = plan_on("reference", planner, q, k)
                got_blocks, want_blocks = layout.block_mask(), want.block_mask()
                share = float((got_blocks ^ want_blocks).sum() / want_blocks.sum())
                ok = share <= args.plan_tol
                failed |= not ok
                print(
                    f"{'ok  ' if ok else 'FAIL'} {tag} plan: {share:.2e} of the reference's "
                    f"blocks disagree (density {layout.density():.4f} vs {want.density():.4f})",
                    flush=True,
                )
                del got_blocks, want_blocks, want
                with torch.inference_mode():
                    out = attention(q, k, v, layout)
                for start in (0, (n // 2) // ROWS * ROWS, n - ROWS):
                    ref = rows_reference(q, k, v, layout, start)
                    got = out[:, :, start : start + ROWS].float()
                    err = float((got - ref).norm() / ref.norm())
                    ok = err <= args.out_tol and bool(torch.isfinite(got).all())
                    failed |= not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {tag} rows {start}+: rel L2 {err:.2e}")
                del out, layout
                print(f"     {tag}: {time.perf_counter() - t0:.1f} s", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
