"""`attnsieve bench kernels`: the block-sparse prefill kernel against PyTorch SDPA (flash, cuDNN)
and FlexAttention, side by side in one process on identical inputs and block masks (GPU only).

For every length: dense causal attention through SDPA flash, SDPA cuDNN, FlexAttention and attnsieve
(Triton kernel with dense dispatch off, and on), then random causal block layouts (diagonal and sink
block always kept) at several densities through attnsieve and FlexAttention on the same block mask.
Every output is checked before it is timed: dense ones against SDPA, sparse ones (attnsieve's and
FlexAttention's alike, so ``--no-flex`` changes nothing about the check) against the exact float32
reference on query blocks spread evenly over the sequence (all heads, every key;
`attnsieve.bench.baselines.sampled_reference`); a failed check is reported as such, with no
speed-up, and the command exits 1, as where one of attnsieve's kernels raised (another backend
missing on this GPU or torch is its row's status only). ``extra_mem_gb``: the most CUDA memory a
call allocated beyond what was allocated before it, in GiB (2**30 bytes, whatever the name says).
Each row's ``ms`` is the median over ``--copies`` copies of its inputs, each at new addresses
(each copy's median time in ``copies_ms``): a kernel's time can depend on where its inputs lie.
Writes kernels.json and kernels.png.

``--precision bf16,int8-fp8`` adds the low-precision rows (`attnsieve.bench.kernels_precision`):
our INT8·FP8 kernel against cuDNN bf16 and SageAttention dense, and against our bf16 kernel on a
random block layout.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnsieve.bench.baselines import (
    on_reference_rows,
    random_causal_layout,
    sampled_reference,
    sdpa_call,
)
from attnsieve.bench.common import (
    attention_tflops,
    check_heads,
    check_out,
    command_line,
    environment,
    folder,
    format_table,
    fraction,
    fractions,
    head_dim,
    ints,
    ints_in,
    on_inputs,
    positive_float,
    positive_int,
    rel_err,
    require_cuda,
    save_line_plots,
    seed,
    time_on_copies,
    write_json,
)
from attnsieve.layout import Layout
from attnsieve.layout_counts import causal_pairs

REL_TOL = 2e-2  # bf16 outputs of two exact kernels differ by ~4e-3 relative RMS
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("bf16", "int8-fp8")


def _precisions(text: str) -> list[str]:
    values = [x for x in text.split(",") if x]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma list of {PRECISIONS}, got {text!r}")
    for x in values:
        if x not in PRECISIONS:
            raise argparse.ArgumentTypeError(f"expected a comma list of {PRECISIONS}, got {x!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lengths",
        type=ints,
        help="comma-separated sequence lengths N (= M) of the bf16 rows (4096,16384,65536,131072)",
    )
    parser.add_argument(
        "--densities",
        type=fractions,
        help="target fractions in (0, 1] of causal (query, key) pairs for the bf16 rows' sparse "
        "layouts (0.5,0.2,0.1,0.05,0.02)",
    )
    parser.add_argument("--heads", type=positive_int, default=32, help="query heads H_q")
    parser.add_argument("--kv-heads", type=positive_int, default=8, help="key/value heads H_kv")
    parser.add_argument(
        "--head-dim", type=head_dim, default=128, help="head dimension (default 128)"
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    parser.add_argument(
        "--block",
        type=ints_in(16, 128, pow2=True),
        default=128,
        help="layout block size (q and k), as the kernel takes: a power of two in [16, 128]",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="of the bf16 rows (bf16)")
    parser.add_argument(
        "--rep-ms", type=positive_float, default=200.0, help="timing budget per kernel"
    )
    parser.add_argument(
        "--no-flex",
        action="store_true",
        help="skip FlexAttention in the bf16 rows (sparse rows are still checked, against the "
        "float32 reference)",
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the inputs (default 0)")
    parser.add_argument(
        "--copies",
        type=ints_in(1, 16),
        default=3,
        help="time every row on this many copies of its inputs, each at new addresses, and report "
        "the median (default 3): a kernel's time can depend on where its inputs lie; each "
        "copy's time is in the JSON (copies_ms)",
    )
    parser.add_argument(
        "--out", type=folder, default=Path("benchmarks/results"), help="folder for JSON + PNG"
    )
    parser.add_argument(
        "--precision",
        type=_precisions,
        default=["bf16"],
        help="bf16: the rows above; int8-fp8: the low-precision rows "
        "(attnsieve.bench.kernels_precision)",
    )
    parser.add_argument("--quant-lengths", type=ints, help="int8-fp8 dense lengths (32768,131072)")
    parser.add_argument("--quant-sparse-lengths", type=ints, help="int8-fp8 sparse lengths (65536)")
    parser.add_argument("--quant-density", type=fraction, help="int8-fp8 sparse density (0.1)")


# each precision mode's own options and their defaults: given for a mode not asked for, refused
MODE_OPTIONS = {
    "bf16": {
        "lengths": ints("4096,16384,65536,131072"),
        "densities": fractions("0.5,0.2,0.1,0.05,0.02"),
        "dtype": "bf16",
        "no_flex": False,
    },
    "int8-fp8": {
        "quant_lengths": ints("32768,131072"),
        "quant_sparse_lengths": ints("65536"),
        "quant_density": 0.1,
    },
}


def check_mode_options(args: argparse.Namespace) -> None:
    """Refuse an option of a precision mode that --precision leaves out (it would change nothing),
    then fill in the defaults of the modes asked for (the others stay unset: the recorded command
    names only options that apply, so it runs again as it is)."""
    for mode, options in MODE_OPTIONS.items():
        for name, default in options.items():
            given = getattr(args, name) not in (None, False)
            if given and mode not in args.precision:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag}: an option of the {mode} rows, but --precision is "
                                 f"{','.join(args.precision)}")  # fmt: skip
            if getattr(args, name) is None and mode in args.precision:
                setattr(args, name, default)


def check_quant_shapes(args: argparse.Namespace) -> None:
    """--head-dim and --block as the int8-fp8 rows' kernel takes them: from 32, where the bf16
    kernel takes 16 (attnsieve.kernels.quantize and .quant check them only on the GPU inputs)."""
    if "int8-fp8" not in args.precision:
        return
    for flag, value, high in (("--head-dim", args.head_dim, 256), ("--block", args.block, 128)):
        if value < 32:
            raise ValueError(
                f"{flag}: the int8-fp8 rows take a power of two in [32, {high}], got {value}"
            )


def main(args: argparse.Namespace) -> int:
    check_heads(args)
    check_mode_options(args)
    check_quant_shapes(args)
    check_out(args.out)
    device = require_cuda()
    from tqdm import tqdm

    from attnsieve.bench.kernels_precision import QUANT_COLUMNS, bench_precision

    flex = None if args.no_flex else _compiled_flex()
    rows: list[dict] = []
    quant_rows: list[dict] = []
    lengths = args.lengths if "bf16" in args.precision else []
    quant = "int8-fp8" in args.precision
    total = len(lengths) * (5 + 2 * len(args.densities or ()))
    total += 4 * len(args.quant_lengths) + 2 * len(args.quant_sparse_lengths) if quant else 0
    with tqdm(total=total, desc="bench kernels") as bar, flex_compile_budget(len(lengths)):
        for n in lengths:
            rows += _bench_length(n, args, flex, bar, device)
            gc.collect()  # inputs, masks and outputs of this length are gone: free them
            torch.cuda.empty_cache()
        if quant:
            quant_rows = bench_precision(args, bar, device)
    _add_speedups(rows)
    env = environment(device)
    config = {
        key: str(val) if isinstance(val, Path) else val
        for key, val in vars(args).items()
        if not callable(val)
    }
    payload = {
        "benchmark": "kernels",
        "command": command_line("bench kernels", args),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **env,
        "config": config,
        "flops": "4 * B * H_q * D * computed causal pairs",
        "rows": rows,
        "precision_rows": quant_rows,
    }
    json_path = write_json(args.out / "kernels.json", payload)
    png_path = _plot(rows, quant_rows, args.out / "kernels.png", env["device"])
    cols = [
        "N",
        "method",
        "density",
        "ms",
        "tflops",
        "vs_dense",
        "vs_flex",
        "rel_err",
        "extra_mem_gb",
        "status",
    ]
    if rows:
        print(format_table(rows, cols))
    if quant_rows:
        print(format_table(quant_rows, QUANT_COLUMNS))
    print(f"wrote {json_path}" + (f" and {png_path}" if png_path else " (no row ran to plot)"))
    return exit_status(rows + quant_rows)


def exit_status(rows: list[dict]) -> int:
    """1 where a row failed its check or one of attnsieve's kernels did not run (it exited 0 when
    ours raised), else 0: another backend missing on this GPU or torch is a result, its row says
    so."""
    failed = [r for r in rows if r["status"].startswith("correctness")
              or (r["method"].startswith("attnsieve") and r["status"] != "ok")]  # fmt: skip
    return 1 if failed else 0


def _bench_length(
    n: int, args: argparse.Namespace, flex: Callable | None, bar, dev: torch.device
) -> list[dict]:
    """All rows of one sequence length (N = M, causal)."""
    from attnsieve.kernels.prefill import sparse_attention

    dtype = DTYPES[args.dtype]
    b, h, h_kv, d, blk = args.batch, args.heads, args.kv_heads, args.head_dim, args.block
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    q = torch.randn(b, h, n, d, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(b, h_kv, n, d, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(b, h_kv, n, d, device=dev, dtype=dtype, generator=gen)
    full_pairs = causal_pairs(n, n)
    rows: list[dict] = []

    def record(method, make_call, density, target=None, ref=None, needs_ref=False):
        """Check ``make_call(q, k, v)`` against ``ref``, time it on ``--copies`` copies of q, k and
        v, append a row; return its output (or None where it did not run or failed its check)."""
        row = {"N": n, "method": method, "density": density, "density_target": target}
        rows.append(row)
        bar.update()
        if needs_ref and ref is None:  # nothing to check against: refuse to time
            row["status"] = "correctness failed (no reference)"
            return None
        try:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            out = make_call(q, k, v)()
            torch.cuda.synchronize()
        except Exception as exc:  # a backend missing on this GPU / torch is a result, not a crash
            row["status"] = f"error: {type(exc).__name__}: {str(exc)[:100]}"
            return None
        row["extra_mem_gb"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        row["rel_err"] = None if ref is None else rel_err(*on_reference_rows(out, ref))
        if ref is not None and not row["rel_err"] < REL_TOL:
            row["status"] = "correctness failed"
            return None
        if time_on_copies(row, make_call, (q, k, v), args.copies, args.rep_ms):
            row["tflops"] = attention_tflops(row["ms"], b, h, d, density * full_pairs)
        return out  # checked: a reference for the rows after it, timed or not

    # dense causal: the reference is the first backend that runs (flash, else cuDNN)
    dense = Layout.dense(n, n, block_q=blk, block_k=blk, causal=True, device=dev)
    ref = record("sdpa-flash", partial(sdpa_call, backend="FLASH_ATTENTION"), 1.0)
    out = record("sdpa-cudnn", partial(sdpa_call, backend="CUDNN_ATTENTION"), 1.0, ref=ref)
    ref = out if ref is None else ref
    del out
    if flex is not None:
        mask = flex_block_mask(dense)
        record("flex", on_inputs(flex, block_mask=mask, enable_gqa=True), 1.0, ref=ref)
    else:
        bar.update()
    triton_only = on_inputs(sparse_attention, dense, dense_dispatch=False)
    record("attnsieve-triton", triton_only, 1.0, ref=ref, needs_ref=True)
    dispatch = on_inputs(sparse_attention, dense)
    record("attnsieve-dispatch", dispatch, 1.0, ref=ref, needs_ref=True)
    del ref

    # block-sparse: the same random block mask through FlexAttention and attnsieve, both checked
    # against the float32 reference on sampled query blocks (with or without --no-flex)
    for target in args.densities:
        layout = random_causal_layout(n, h, blk, target, dev, gen)
        density = layout.density(causal=True)
        ref = sampled_reference(q, k, v, layout)
        if flex is not None:
            mask = flex_block_mask(layout)
            run = on_inputs(flex, block_mask=mask, enable_gqa=True)
            record("flex", run, density, target, ref=ref)
        else:
            bar.update()
        sparse = on_inputs(sparse_attention, layout)
        record("attnsieve", sparse, density, target, ref=ref, needs_ref=True)
        del ref
    return rows


def flex_block_mask(layout: Layout):
    """FlexAttention BlockMask with exactly the layout's blocks.

    Blocks wholly below the causal diagonal are marked full (no mask_mod call), the diagonal ones
    partial: Flex's best case for this mask."""
    from torch.nn.attention.flex_attention import BlockMask

    n, m, bq, bk = layout.num_queries, layout.num_keys, layout.block_q, layout.block_k
    qb, kb = layout.num_q_blocks, layout.num_k_blocks
    dev = layout.device
    idx = layout.block_idx.long()
    valid = torch.arange(idx.shape[-1], device=dev) < layout.block_count[..., None]
    q_first = (torch.arange(qb, device=dev) * bq + (m - n))[:, None]
    q_last = (torch.clamp((torch.arange(qb, device=dev) + 1) * bq, max=n) - 1 + (m - n))[:, None]
    k_last = torch.clamp((idx + 1) * bk, max=m) - 1
    full = valid & (k_last <= q_first)
    partial = valid & ~full & (idx * bk <= q_last)

    def pack(sel: Tensor) -> tuple[Tensor, Tensor]:
        keyed = torch.where(sel, idx, kb).sort(-1).values
        keyed = torch.nn.functional.pad(keyed, (0, kb - keyed.shape[-1]), value=kb)
        return sel.sum(-1, dtype=torch.int32), torch.where(keyed == kb, 0, keyed).to(torch.int32)

    shift = m - n

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + shift

    p_cnt, p_idx = pack(partial)
    f_cnt, f_idx = pack(full)
    return BlockMask.from_kv_blocks(
        p_cnt, p_idx, f_cnt, f_idx, BLOCK_SIZE=(bq, bk), mask_mod=causal, seq_lengths=(n, m)
    )


def flex_compile_budget(lengths: int) -> Any:
    """Room for the compiled FlexAttention of every length (two each: the dense mask's one head and
    the random masks' H heads), and an error past it: past torch's 8 compiled versions Flex runs
    unfused, slower by far and still correct, which would pass its check and inflate vs_flex."""
    limit = max(torch._dynamo.config.recompile_limit, 2 * lengths + 2)
    return torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True)


def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _add_speedups(rows: list[dict]) -> None:
    """vs_dense: attnsieve-triton (dense layout) time / row time; vs_flex: flex on the same mask."""
    ok = {
        (r["N"], r["method"], r["density_target"]): r.get("ms") for r in rows if r["status"] == "ok"
    }
    for r in rows:
        if r["status"] != "ok":
            continue
        dense = ok.get((r["N"], "attnsieve-triton", None))
        flex = ok.get((r["N"], "flex", r["density_target"]))
        r["vs_dense"] = dense / r["ms"] if dense else None
        r["vs_flex"] = flex / r["ms"] if flex and r["method"].startswith("attnsieve") else None


def _plot(rows: list[dict], quant_rows: list[dict], path: Path, device: str) -> Path | None:
    """Dense TFLOP/s by length; speed-up over the attnsieve dense kernel by density; with
    ``--precision int8-fp8``, dense TFLOP/s by length per precision and each low-precision row's
    speed-up over its bf16 baseline by length."""
    ok = [r for r in rows if r["status"] == "ok"]
    dense_ms = {r["N"]: r["ms"] for r in ok if r["method"] == "attnsieve-triton"}
    dense, sparse = {}, {}
    for r in ok:
        if r["density_target"] is None:
            xs, ys = dense.setdefault(r["method"], ([], []))
            xs.append(r["N"])
            ys.append(r["tflops"])
        elif r["N"] in dense_ms:
            xs, ys = sparse.setdefault(f"{r['method']} N={r['N']}", ([], []))
            xs.append(r["density"])
            ys.append(dense_ms[r["N"]] / r["ms"])
    panels = [
        {
            "series": dense,
            "xlabel": "sequence length N",
            "ylabel": "TFLOP/s",
            "logx": True,
            "title": "dense causal",
        },
        {
            "series": sparse,
            "xlabel": "density (fraction of causal pairs)",
            "logx": True,
            "ylabel": "speed-up vs attnsieve dense kernel",
            "logy": True,
            "title": "block-sparse, same block mask",
        },
    ]
    if not rows:
        panels = []
    precision = {}
    for r in quant_rows:
        if r["status"] == "ok" and r["density_target"] is None:
            xs, ys = precision.setdefault(f"{r['method']} {r['precision']}", ([], []))
            xs.append(r["N"])
            ys.append(r["tflops"])
    if precision:
        panels.append(
            {
                "series": precision,
                "xlabel": "sequence length N",
                "ylabel": "TFLOP/s (bf16-attention FLOPs)",
                "logx": True,
                "title": "dense causal by precision",
            }
        )
    if over_bf16 := _speedups_over_bf16(quant_rows):
        panels.append(
            {
                "series": over_bf16,
                "xlabel": "sequence length N",
                "ylabel": "speed-up over bf16 (its vs_bf16)",
                "logx": True,
                "title": "low precision against bf16, dense and block-sparse",
                "hlines": {"bf16": 1.0},
            }
        )
    if not panels:  # every low-precision dense row failed: its table says why
        path.unlink(missing_ok=True)  # an earlier run's plot, beside this run's kernels.json
        return None
    return save_line_plots(path, panels, f"attnsieve bench kernels on {device}")


def _speedups_over_bf16(quant_rows: list[dict]) -> dict[str, tuple[list, list]]:
    """Each low-precision row's ``vs_bf16`` by length: dense rows against cuDNN bf16, sparse rows
    against our bf16 kernel on the same layout (a series for each requested density)."""
    series: dict[str, tuple[list, list]] = {}
    for r in quant_rows:
        if r["status"] != "ok" or r["precision"] == "bf16" or not r.get("vs_bf16"):
            continue
        if r["density_target"] is None:
            label = f"{r['method']} {r['precision']} dense, vs cuDNN bf16"
        else:
            label = (f"{r['method']} {r['precision']} block-sparse at density "
                     f"{r['density_target']:g}, vs its bf16 kernel")  # fmt: skip
        xs, ys = series.setdefault(label, ([], []))
        xs.append(r["N"])
        ys.append(r["vs_bf16"])
    return series


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
