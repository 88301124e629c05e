"""Fuzz the Triton prefill kernel against its float32 twin over thousands of random cases.

Each case draws, from its own seed, a shape (batch 1-3, N and M 1-2000 log-uniform so most are
small, N > M or not, lengths next to block edges), a GQA ratio 1-8, head_dim 32/64/128, the dtype
(fp16; bf16 too on CUDA), causality, block sizes 16-128, a layout (random blocks and columns, dense
or empty; key spans over random diagonals where the Layout has them; batch and heads broadcast),
strided K/V and ``out=`` buffers, ``return_lse``, and the entry point:
`attnsieve.attention(..., backend="triton")` or
`attnsieve.kernels.prefill.sparse_attention(..., dense_dispatch=False)`. The result is compared
in float32 with `attention_reference` run on the same inputs upcast to float32:

- relative RMS error of the output <= 3e-3 (fp16) or 1e-2 (bf16), no NaN;
- lse within 1e-2 (absolute) where finite, -inf exactly where the reference's is;
- rows that see no key exactly 0.

Compilation: the kernel's autotuner keys on (head_dim, block_q, block_k, causal, columns, dtype),
so each run draws those from a palette of ``--palette`` (dtype, head_dim, block_q, block_k)
combinations (default 6: every dtype x head_dim once, each with its own block pair) and compiles
a few dozen variants; ``--seed`` picks other block pairs and other cases. Triton compiles each
specialization on the host, so ``--workers`` processes (default: one per 2 CPU cores, at most 8)
run chunks of cases side by side and share its on-disk cache. Writes
``fuzz_prefill.log`` and ``fuzz_prefill.json`` (cases, error maxima, every mismatch with its seed,
shape and the arguments that run it again) to ``--out``; exits 1 on any mismatch.

    PYTHONPATH=. python3 benchmarks/fuzz_prefill.py --cases 2000 --out DIR
    PYTHONPATH=. python3 benchmarks/fuzz_prefill.py --seed S --only SEED --out DIR  # one case

On CPU it runs under Triton's interpreter (set TRITON_INTERPRET=1; fp16 only; use --max-len).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import attnsieve
from attnsieve.kernels import prefill
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout

OUT_TOL = {"float16": 3e-3, "bfloat16": 1e-2}  # relative RMS of the output
LSE_TOL = 1e-2  # absolute, natural log
HEAD_DIMS = (32, 64, 128)
BLOCKS = (16, 32, 64, 128)
SPANS = hasattr(Layout, "with_diagonals")  # key spans (slash lines), where the Layout has them


@dataclass(frozen=True)
class Case:
    """Everything a case needs, drawn from ``seed`` (and the run's palette)."""

    seed: int
    entry: str  # "attention" (public API) or "kernel" (sparse_attention, no dense dispatch)
    dtype: str
    batch: int
    kv_heads: int
    group: int  # H_q / H_kv
    n: int
    m: int
    head_dim: int
    block_q: int
    block_k: int
    causal: bool
    layout: str  # "random", "dense" or "empty"
    density: float
    columns: int  # column slots per query block (0: no column part)
    diagonals: int  # diagonals covered by key spans (0: none; only where Layout has spans)
    layout_batch: int
    layout_heads: int
    return_lse: bool
    strided_kv: bool  # K/V rows padded: strides that are not 16-byte multiples (no TMA)
    out_buffer: bool  # write into a (B, N, H_q, D) tensor through a transposed view

    @property
    def shape(self) -> str:
        h_q = self.kv_heads * self.group
        return (
            f"q ({self.batch}, {h_q}, {self.n}, {self.head_dim}) kv ({self.batch}, "
            f"{self.kv_heads}, {self.m}) {self.dtype} blocks {self.block_q}x{self.block_k}"
        )


def palette(seed: int, size: int, dtypes: tuple[str, ...]) -> list[tuple[str, int, int, int]]:
    """``size`` (dtype, head_dim, block_q, block_k) combinations, every dtype x head_dim present."""
    rng = random.Random(f"palette-{seed}")
    base = [(t, d) for t in dtypes for d in HEAD_DIMS]
    pairs = [(bq, bk) for bq in BLOCKS for bk in BLOCKS]
    rng.shuffle(pairs)
    chosen = []
    for i in range(max(size, len(base))):
        dtype, d = base[i % len(base)] if i < len(base) else rng.choice(base)
        chosen.append((dtype, d, *pairs[i % len(pairs)]))
    return chosen


def _length(rng: random.Random, cap: int, blocks: tuple[int, ...]) -> int:
    """1..cap, log-uniform; one in four lands next to a multiple of a block size."""
    x = int(math.exp(rng.uniform(0, math.log(cap + 1))))
    if rng.random() < 0.25:
        block = rng.choice(blocks)
        x = block * max(1, round(x / block)) + rng.choice((-1, 0, 1))
    return min(max(x, 1), cap)


def draw(seed: int, combos: list[tuple[str, int, int, int]], max_len: int) -> Case:
    rng = random.Random(seed)
    dtype, d, bq, bk = rng.choice(combos)
    batch, kv_heads, group = rng.randint(1, 3), rng.choice((1, 1, 2)), rng.randint(1, 8)
    n = _length(rng, max_len, (bq, bk))
    m = (
        _length(rng, max_len, (bq, bk))
        if rng.random() < 0.5
        else max(n, _length(rng, max_len, (bk,)))
    )
    layout = rng.choices(("random", "dense", "empty"), weights=(8, 1, 1))[0]
    h_q = kv_heads * group
    return Case(
        seed=seed,
        entry=rng.choice(("attention", "kernel")),
        dtype=dtype,
        batch=batch,
        kv_heads=kv_heads,
        group=group,
        n=n,
        m=m,
        head_dim=d,
        block_q=bq,
        block_k=bk,
        causal=rng.random() < 0.7,
        layout=layout,
        density=rng.random(),
        columns=rng.choice((0, 0, 1, 4, 16)) if layout == "random" else 0,
        diagonals=rng.choice((0, 0, 0, 0, 0, 1, 3)) if layout == "random" and SPANS else 0,
        layout_batch=rng.choice((1, batch)),
        layout_heads=rng.choice(sorted({1, kv_heads, h_q})),
        return_lse=rng.random() < 0.6,
        strided_kv=rng.random() < 0.2,
        out_buffer=rng.random() < 0.2,
    )


def build(case: Case, device: torch.device):
    """(q, k, v, layout) of ``case`` on ``device``."""
    g = torch.Generator(device=device).manual_seed(case.seed)
    dtype = getattr(torch, case.dtype)
    h_q = case.kv_heads * case.group

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    q = randn(case.batch, h_q, case.n, case.head_dim) * 1.5  # peakier than unit logits
    pad = 4 if case.strided_kv else 0  # 8-byte row padding breaks TMA's 16-byte stride rule
    kv = randn(2, case.batch, case.kv_heads, case.m, case.head_dim + pad)[..., : case.head_dim]
    k, v = kv[0], kv[1]
    qb, kb = -(-case.n // case.block_q), -(-case.m // case.block_k)
    sizes = dict(block_q=case.block_q, block_k=case.block_k, num_queries=case.n, num_keys=case.m)
    shape = (case.layout_batch, case.layout_heads, qb, kb)
    if case.layout == "dense":
        layout = Layout.dense(
            case.n, case.m, causal=case.causal, batch=case.layout_batch,
            heads=case.layout_heads, device=device, block_q=case.block_q, block_k=case.block_k,
        )  # fmt: skip
    else:
        p = case.density if case.layout == "random" else 0.0
        mask = torch.rand(shape, generator=g, device=device) < p
        layout = Layout.from_block_mask(mask, **sizes)
    if case.columns:
        cols = torch.randint(-1, case.m, (*shape[:3], case.columns), generator=g, device=device)
        layout = layout.with_columns(cols)
    if case.diagonals:
        offsets = torch.randint(
            -1, case.m, (*shape[:2], case.diagonals), generator=g, device=device
        )
        layout = layout.with_diagonals(offsets)
    return q, k, v, layout


def run_case(case: Case, device: torch.device) -> dict:
    """Run ``case`` and compare with the reference; the record lists what, if anything, broke."""
    q, k, v, layout = build(case, device)
    record = {"seed": case.seed, "shape": case.shape, "problems": []}
    out = None
    if case.out_buffer:  # (B, N, H_q, D) storage written through a (B, H_q, N, D) view
        out = torch.full_like(q.transpose(1, 2).contiguous(), math.nan).transpose(1, 2)
    kwargs = dict(causal=case.causal, return_lse=case.return_lse, out=out)
    try:
        if case.entry == "attention":
            result = attnsieve.attention(q, k, v, layout, backend="triton", **kwargs)
        else:
            result = prefill.sparse_attention(q, k, v, layout, dense_dispatch=False, **kwargs)
    except Exception as e:  # noqa: BLE001  (any failure of the kernel is a finding)
        record["problems"].append(f"raised {type(e).__name__}: {e}")
        return record
    got, lse = result if case.return_lse else (result, None)
    if out is not None and got.data_ptr() != out.data_ptr():
        record["problems"].append("out= buffer was not the returned tensor")
    ref, ref_lse = attention_reference(
        q.float(), k.float(), v.float(), layout, causal=case.causal, return_lse=True
    )
    got = got.float()
    if got.shape != q.shape or torch.isnan(got).any():
        record["problems"].append(f"shape {tuple(got.shape)} or NaN in the output")
        return record
    empty = ref_lse == -math.inf  # rows that see no key
    if got[empty].any():
        record["problems"].append(f"{int(got[empty].ne(0).any(-1).sum())} empty rows not zero")
    norm = float(ref.norm())
    err = float((got - ref).norm()) / norm if norm > 0 else float(got.norm())
    record["err"] = err
    if not err <= OUT_TOL[case.dtype]:
        record["problems"].append(f"relative RMS error {err:.2e} > {OUT_TOL[case.dtype]:.0e}")
    if lse is not None:
        if not torch.equal(lse == -math.inf, empty) or torch.isnan(lse).any():
            record["problems"].append("lse: -inf / NaN pattern differs from the reference")
        else:
            finite = ~empty
            lse_err = float((lse[finite] - ref_lse[finite]).abs().max()) if finite.any() else 0.0
            record["lse_err"] = lse_err
            if not lse_err <= LSE_TOL:
                record["problems"].append(f"lse error {lse_err:.2e} > {LSE_TOL:.0e}")
    return record


def run_chunk(seeds: list[int], combos: list, max_len: int, device: str) -> list[tuple]:
    """(case, record) for each seed; runs in a worker process."""
    return [
        (case, run_case(case, torch.device(device)))
        for case in (draw(seed, combos, max_len) for seed in seeds)
    ]


def _chunk_results(chunks, combos, max_len, device, workers):
    """Each chunk's results as it finishes: in this process for one worker, else in a pool."""
    if workers == 1:
        for chunk in chunks:
            yield run_chunk(chunk, combos, max_len, device.type)
        return
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        futures = [pool.submit(run_chunk, c, combos, max_len, device.type) for c in chunks]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="first case seed; picks the palette")
    parser.add_argument("--palette", type=int, default=6, help="(dtype, D, blocks) combos")
    parser.add_argument("--max-len", type=int, default=2000, help="largest N and M")
    parser.add_argument("--only", type=int, default=None, help="run the case of this seed only")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores/2)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the log and JSON")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.max_len < 1 or args.palette < 1 or (args.workers or 1) < 1:
        parser.error("--cases, --max-len, --palette and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if torch.cuda.is_available() and not interpret:
        device, dtypes = torch.device("cuda"), ("float16", "bfloat16")
    elif interpret:
        device, dtypes = torch.device("cpu"), ("float16",)  # as the CPU tests; bf16 on the GPU
    else:
        print("fuzz_prefill: needs CUDA, or TRITON_INTERPRET=1 for the CPU", file=sys.stderr)
        return 2
    combos = palette(args.seed, args.palette, dtypes)
    seeds = [args.only] if args.only is not None else range(args.seed, args.seed + args.cases)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "fuzz_prefill.log").open("w")

    def say(line: str) -> None:
        print(line, file=log, flush=True)
        print(line, flush=True)

    say(f"fuzz_prefill: {len(seeds)} cases from seed {seeds[0]} on {device}; palette {combos}")
    start, mismatches, worst, counts, done = time.perf_counter(), [], {}, {}, 0
    workers = 1 if args.only is not None else args.workers
    if workers is None:  # the interpreter is CPU-bound already: one process unless asked
        workers = 1 if interpret else max(1, min(8, (os.cpu_count() or 2) // 2))
    size = min(20, max(1, len(seeds) // workers))  # chunks small enough to share out
    chunks = [list(seeds[i : i + size]) for i in range(0, len(seeds), size)]
    for results in _chunk_results(chunks, combos, args.max_len, device, workers):
        for case, record in results:
            key = f"{case.dtype} {case.entry}"
            counts[key] = counts.get(key, 0) + 1
            for name in ("err", "lse_err"):
                if name in record:
                    slot = f"{name} {case.dtype}"
                    worst[slot] = max(worst.get(slot, 0.0), record[name])
            if record["problems"]:
                again = f"--seed {args.seed} --palette {args.palette} --max-len {args.max_len}"
                record["repro"] = f"{again} --only {case.seed}"
                mismatches.append({**record, "case": asdict(case)})
                say(f"MISMATCH seed {case.seed}: {case.shape}: {'; '.join(record['problems'])}")
        done += len(results)
        if done % 100 < 20 or done == len(seeds):
            elapsed = time.perf_counter() - start
            say(f"{done}/{len(seeds)} cases, {len(mismatches)} mismatches, {elapsed:.0f} s")
    mismatches.sort(key=lambda r: r["seed"])
    summary = {
        "cases": len(seeds),
        "first_seed": seeds[0],
        "mismatches": mismatches,
        "max_errors": worst,
        "tolerances": {"out_rel_rms": OUT_TOL, "lse_abs": LSE_TOL},
        "cases_by_dtype_and_entry": counts,
        "palette": combos,
        "seconds": round(time.perf_counter() - start, 1),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "interpreter": interpret,
        "workers": workers,
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "command": "PYTHONPATH=. python3 benchmarks/fuzz_prefill.py " + " ".join(sys.argv[1:]),
    }
    (args.out / "fuzz_prefill.json").write_text(json.dumps(summary, indent=1))
    say(f"max errors {json.dumps(worst)}; {len(mismatches)} mismatches in {len(seeds)} cases")
    log.close()
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
