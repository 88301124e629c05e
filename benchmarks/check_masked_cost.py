"""What the masked-key NaN guarantee costs the prefill kernel, against earlier versions of it.

Times ``sparse_attention`` of up to three kernel modules on the same random causal block layouts
(Llama-3-8B heads, bf16): the current one and earlier copies given by path (e.g. extracted with
``git show REV:attnsieve/kernels/prefill.py``); and checks, for the current kernel, that a NaN
value row hidden by causality changes no other row (TMA and strided K/V). Each is timed as called
(launch overhead included) and replayed from a CUDA graph (GPU time only). Writes masked_cost.json.

    PYTHONPATH=. python3 benchmarks/check_masked_cost.py --out DIR [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

from attnsieve.bench.baselines import random_causal_layout
from attnsieve.bench.common import environment, graph_ms, median_ms, rel_err
from attnsieve.kernels import prefill
from attnsieve.layout import Layout

POINTS = [(16384, 0.02), (16384, 0.1), (65536, 0.05), (131072, 0.02), (131072, 0.5)]


def load(name: str, path: str):
    """A kernel module from a file, registered as ``name`` first (a module that defines a
    dataclass, as `attnsieve.kernels.quantize` does, needs to find itself in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def nan_check(strided: bool) -> dict:
    """A NaN in value row 900 of 1000 (causal): rows before it unchanged (up to rounding: the
    program holding rows 900 and before reruns them on smaller tiles), rows from it all NaN."""
    g = torch.Generator(device="cuda").manual_seed(0)
    pad = 8 if strided else 0
    q = torch.randn(1, 8, 1000, 128, generator=g, device="cuda").bfloat16()
    kv = torch.randn(2, 1, 2, 1000, 128 + pad, generator=g, device="cuda").bfloat16()
    k, v = kv[0][..., :128], kv[1][..., :128]
    layout = Layout.dense(1000, 1000, device="cuda")
    clean = prefill.sparse_attention(q, k, v, layout, dense_dispatch=False)
    v[:, :, 900] = math.nan
    out = prefill.sparse_attention(q, k, v, layout, dense_dispatch=False)
    return {
        "strided": strided,
        "rows_before_close": bool(torch.allclose(out[:, :, :900], clean[:, :, :900], 1e-2, 1e-3)),
        "rows_before_max_abs_diff": float((out[:, :, :900] - clean[:, :, :900]).abs().max()),
        "rows_after_all_nan": bool(out[:, :, 900:].isnan().all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a kernel")
    args = parser.parse_args()
    variants = {"current": prefill}
    variants.update({v.split("=")[0]: load(*v.split("=", 1)) for v in args.variant})
    rows, gen = [], torch.Generator(device="cuda").manual_seed(0)
    for n, target in POINTS:
        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16) for _ in "kv")
        layout = random_causal_layout(n, 32, 128, target, torch.device("cuda"), gen)
        ref = prefill.sparse_attention(q, k, v, layout)
        for name, module in variants.items():
            fn = functools.partial(module.sparse_attention, q, k, v, layout)
            err = rel_err(fn(), ref)
            ms, replayed = median_ms(fn, rep_ms=100), graph_ms(fn, reps=30)
            rows.append({"N": n, "density": layout.density(causal=True), "kernel": name,
                         "ms": ms, "graph_ms": replayed, "rel_err_vs_current": err})  # fmt: skip
            print(f"{n:7d} {rows[-1]['density']:.3f} {name:8s} {ms:8.3f} ms  graph {replayed:8.3f}"
                  f" ms  err {err:.1e}")  # fmt: skip
    checks = [nan_check(False), nan_check(True)]
    print(checks)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment("cuda"), "rows": rows, "nan_checks": checks}
    (args.out / "masked_cost.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
