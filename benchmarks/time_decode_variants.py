"""The paged decode kernel against variants of its module, dense reads of bf16 and FP8 pools (H200).

Each module (the current `attnsieve.kernels.decode` and variants given by path) runs
`decode_attention` at its own tile choice on the same caches as `attnsieve bench decode`
(Llama-3-8B heads, shuffled 16-token pages), is checked against the float32 twin, and is timed as
a CUDA-graph median with L2 flushed (`attnsieve.bench.common.graph_ms`). A variant that skips a
step (say the split merge) can fail the check and still be timed: its error is printed beside its
time (its output buffer starts as NaN). Writes time_decode_variants.json.

    PYTHONPATH=. python3 benchmarks/time_decode_variants.py --out DIR --variant NAME=PATH ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnsieve.bench.common import environment, graph_ms, rel_err, write_json
from attnsieve.bench.decode import LLAMA3_8B_DECODE, make_cache
from attnsieve.kernels import decode
from attnsieve.kernels.decode_reference import decode_reference
from benchmarks.check_masked_cost import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    parser.add_argument("--lengths", default="32768,131072")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--reps", type=int, default=50, help="graph replays a median")
    parser.add_argument("--rounds", type=int, default=3, help="times each module is timed, in turn")
    args = parser.parse_args()
    modules = {"current": decode}
    for spec in args.variant:
        name, path = spec.split("=", 1)
        modules[name] = load(f"decode_{name}", path)
    rows = []
    for b in (int(x) for x in args.batch.split(",")):
        for n in (int(x) for x in args.lengths.split(",")):
            c = make_cache(b, n, LLAMA3_8B_DECODE)
            for dtype, pool in (("bf16", c.paged), ("fp8", c.fp8)):
                ref = decode_reference(c.q, **pool)
                times: dict[str, list[float]] = {name: [] for name in modules}
                errors = {}
                for name, module in modules.items():
                    # into NaN: a fresh buffer can hold the last module's output
                    out = torch.full_like(c.q, float("nan"))
                    errors[name] = rel_err(module.decode_attention(c.q, **pool, out=out), ref)
                for _ in range(args.rounds):  # in turn, so that a drift of the GPU hits them all
                    for name, module in modules.items():
                        fn = lambda m=module, p=pool, q=c.q: m.decode_attention(q, **p)  # noqa: E731
                        times[name].append(graph_ms(fn, args.reps))
                for name in modules:
                    us = 1e3 * min(times[name])
                    rows.append({"batch": b, "length": n, "dtype": dtype, "module": name,
                                 "us": us, "us_rounds": [1e3 * t for t in times[name]],
                                 "rel_err": errors[name]})  # fmt: skip
                    print(
                        f"B{b} {n:>6} {dtype:<4} {name:<12} {us:8.1f} us  "
                        f"rounds {' '.join(f'{1e3 * t:.1f}' for t in times[name])}  "
                        f"rel_err {errors[name]:.2e}",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment("cuda"), "variants": args.variant, "rows": rows}
    write_json(args.out / "time_decode_variants.json", result)


if __name__ == "__main__":
    main()
