"""The INT8·FP8 prefill kernel against variants of it, on the bench's dense and sparse points.

Times ``quant_attention`` (quantisation included, as `attnsieve bench kernels --precision int8-fp8`
times it) of the current module and of copies given by path, beside cuDNN bf16 (dense causal) and
our bf16 kernel (sparse), all on the same inputs (Llama-3-8B heads: 32 / 8, head_dim 128). Each
output is checked against cuDNN's (dense) or the float32 reference on sampled rows (sparse): the
smallest per-head cosine, the relative error, and the norm ratio |out| / |ref| (a bias that shrinks
every row, which a cosine cannot see). The current module runs first and again last, so drift
between the two shows the run's scatter. Writes quant_variants.json.

    PYTHONPATH=. python3 benchmarks/time_quant_variants.py --out DIR [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

from attnsieve.bench.baselines import (
    min_head_cosine,
    on_reference_rows,
    random_causal_layout,
    sampled_reference,
    sdpa_call,
)
from attnsieve.bench.common import environment, ints, median_ms, rel_err
from attnsieve.kernels import quant
from attnsieve.kernels.prefill import sparse_attention
from benchmarks.check_masked_cost import load


def checked(row: dict, fn, ref, rep_ms: float) -> dict:
    got, want = on_reference_rows(fn(), ref)
    row["cosine"], row["rel_err"] = min_head_cosine(got, want), rel_err(got, want)
    row["norm_ratio"] = float(got.float().norm() / want.float().norm())
    del got
    row["ms"] = median_ms(fn, rep_ms=rep_ms)
    print(f"{row['N']:7d} {row['density']:.3f} {row['kernel']:10s} {row['ms']:9.3f} ms  cos "
          f"{row['cosine']:.5f}  err {row['rel_err']:.2e}  norm {row['norm_ratio']:.5f}",
          flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    parser.add_argument("--lengths", type=ints, default=ints("32768,131072"))
    parser.add_argument("--sparse-lengths", type=ints, default=ints("65536"))
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--rep-ms", type=float, default=200)
    args = parser.parse_args()
    modules = [("current", quant)]
    modules += [(v.split("=")[0], load(*v.split("=", 1))) for v in args.variant]
    modules.append(("current", quant))
    dev, gen = torch.device("cuda"), torch.Generator(device="cuda").manual_seed(0)
    rows = []

    def inputs(n):
        return [torch.randn(1, h, n, 128, device=dev, dtype=torch.bfloat16, generator=gen)
                for h in (32, 8, 8)]  # fmt: skip

    for n in args.lengths:
        q, k, v = inputs(n)
        cudnn = sdpa_call(q, k, v, "CUDNN_ATTENTION")
        ref = cudnn()
        base = {"N": n, "density": 1.0}
        rows.append(checked({**base, "kernel": "sdpa-cudnn"}, cudnn, ref, args.rep_ms))
        for name, module in modules:
            fn = functools.partial(module.quant_attention, q, k, v)
            rows.append(checked({**base, "kernel": name}, fn, ref, args.rep_ms))
        del q, k, v, ref
        torch.cuda.empty_cache()
    for n in args.sparse_lengths:
        q, k, v = inputs(n)
        layout = random_causal_layout(n, 32, 128, args.density, dev, gen)
        ref = sampled_reference(q, k, v, layout)
        base = {"N": n, "density": layout.density(causal=True)}
        bf16 = functools.partial(sparse_attention, q, k, v, layout)
        rows.append(checked({**base, "kernel": "bf16"}, bf16, ref, args.rep_ms))
        for name, module in modules:
            fn = functools.partial(module.quant_attention, q, k, v, layout)
            rows.append(checked({**base, "kernel": name}, fn, ref, args.rep_ms))
        del q, k, v
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(sys.argv), "environment": environment("cuda"), "rows": rows}
    (args.out / "quant_variants.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
