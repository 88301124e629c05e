"""GPU tuning sweep for attnsieve/kernels/prefill.py (run on the H100; see NOTES-kernels.md).

PYTHONPATH=. python benchmarks/tune_prefill.py [--lengths 16384,65536] [--out DIR]

1. correctness on odd shapes vs the float32 reference, with TMA on and off;
2. every candidate (BLOCK_M, BLOCK_N, warps, stages) x {TMA, pointer loads} on a dense causal layout
   and random block layouts at 10 % and 5 %, against FlexAttention on the same block mask and SDPA.
Prints one table; writes tune.json under --out.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import triton

from attnsieve.bench.baselines import random_causal_layout, sdpa_call
from attnsieve.bench.common import attention_tflops, environment, median_ms
from attnsieve.bench.kernels import _compiled_flex, flex_block_mask
from attnsieve.kernels import prefill as P
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout
from attnsieve.layout_counts import causal_pairs

CANDIDATES = [  # (BLOCK_M, BLOCK_N, warps, stages, TMA)
    (128, 128, 8, 2, True),
    (128, 128, 8, 3, True),
    (64, 64, 4, 3, True),
    (128, 128, 8, 3, False),
]
_ORIGINAL_TMA = P._use_tma


def use(cfg):
    bm, bn, w, s, tma = cfg
    P._sparse_fwd_tuned.configs = [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn},
            num_warps=w,
            num_stages=s,
            pre_hook=P._set_tma_block,
        )
    ]
    P._sparse_fwd_tuned.cache = {}
    P._use_tma = (lambda q, k, v: _ORIGINAL_TMA(q, k, v)) if tma else (lambda q, k, v: False)


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def correctness():
    cases = [  # b, hq, hkv, n, m, d, bq, bk, causal, columns, layout heads, cfg
        (2, 8, 2, 1000, 1300, 128, 64, 128, True, 24, 8, (64, 64, 4, 3)),
        (2, 8, 2, 777, 777, 64, 128, 128, True, 0, 2, (128, 64, 8, 3)),
        (1, 4, 4, 300, 500, 256, 64, 64, False, 8, 1, (64, 32, 4, 2)),
        (1, 8, 1, 513, 260, 128, 128, 128, True, 16, 8, (128, 128, 8, 2)),
        (1, 8, 2, 2000, 2100, 128, 128, 16, True, 0, 8, (128, 16, 4, 2)),
    ]
    lines = []
    for b, hq, hkv, n, m, d, bq, bk, causal, cols, hl, cfg in cases:
        q = torch.randn(b, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, hkv, m, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, hkv, m, d, device="cuda", dtype=torch.bfloat16)
        qb, kb = -(-n // bq), -(-m // bk)
        mask = torch.rand(1, hl, qb, kb, device="cuda") < 0.4
        mask[..., 3, :] = False  # an empty row block
        lay = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
        if cols:
            lay = lay.with_columns(torch.randint(-1, m, (1, hl, qb, cols), device="cuda"))
        ref, ref_lse = attention_reference(q, k, v, lay, causal=causal, return_lse=True)
        for tma in (False, True):
            use((*cfg, tma))
            out, lse = P.sparse_attention(q, k, v, lay, causal=causal, return_lse=True)
            fin = ref_lse.isfinite()
            ok = (
                rel(out, ref) < 1e-2
                and torch.equal(lse.isfinite(), fin)
                and float((lse[fin] - ref_lse[fin]).abs().max()) < 1e-2
                and not out.isnan().any()
                and not out[~fin].any()
            )
            lines.append(f"check n={n} m={m} d={d} tma={tma}: rel={rel(out, ref):.2e} ok={ok}")
    q = torch.randn(1, 8, 3000, 128, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 2, 3000, 128, device="cuda", dtype=torch.bfloat16)
    dense = Layout.dense(3000, 3000, device="cuda")
    use((128, 64, 8, 3, True))
    e = rel(
        P.sparse_attention(q, k, v, dense), P.sparse_attention(q, k, v, dense, dense_dispatch=False)
    )
    lines.append(f"check dense dispatch vs triton: rel={e:.2e} ok={e < 1e-2}")
    return lines


def sweep(n, flex, h=32, hkv=8, d=128):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    pairs, rows = causal_pairs(n, n), []
    for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION"):
        ms = median_ms(sdpa_call(q, k, v, backend), rep_ms=100)
        rows.append((n, "dense", backend, ms, attention_tflops(ms, 1, h, d, pairs), None))
    layouts = {"dense": Layout.dense(n, n, device="cuda")}
    for dens in (0.1, 0.05):
        layouts[f"{dens}"] = random_causal_layout(n, h, 128, dens, torch.device("cuda"), gen)
    for name, lay in layouts.items():
        frac = lay.density()
        mask = flex_block_mask(lay)
        ref = flex(q, k, v, block_mask=mask, enable_gqa=True)
        ms = median_ms(lambda m=mask: flex(q, k, v, block_mask=m, enable_gqa=True), rep_ms=100)
        rows.append((n, name, "flex", ms, attention_tflops(ms, 1, h, d, frac * pairs), None))
        for cfg in CANDIDATES:
            use(cfg)
            try:
                fn = lambda lay=lay: P.sparse_attention(q, k, v, lay, dense_dispatch=False)  # noqa: E731
                err = rel(fn(), ref)
                ms = median_ms(fn, rep_ms=100)
            except Exception as exc:  # out of resources for a config is a result
                print(f"{n} {name} {cfg}: {type(exc).__name__} {exc}"[:300], flush=True)
                continue
            tf = attention_tflops(ms, 1, h, d, frac * pairs)
            rows.append((n, name, str(cfg), ms, tf, err))
        print(f"done n={n} {name}", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="16384,65536")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    print(environment("cuda"), flush=True)
    for line in correctness():
        print(line, flush=True)
    print(f"correctness done {time.time() - t0:.0f}s", flush=True)
    if args.check_only:
        return
    flex = _compiled_flex()
    rows = []
    for n in [int(x) for x in args.lengths.split(",")]:
        rows += sweep(n, flex)
        print(f"done n={n} {time.time() - t0:.0f}s", flush=True)
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune.json").write_text(
        json.dumps({"env": environment("cuda"), "rows": rows}, indent=1)
    )
    for n, name, what, ms, tf, err in rows:
        e = "" if err is None else f"{err:.1e}"
        print(f"{n:>6} {name:>5} {what:<36} {ms:8.3f} ms {tf:6.1f} TF/s {e}")


if __name__ == "__main__":
    main()
