"""`attnsieve bench prefill`: every planner's density, recall and time against SDPA dense (GPU).

For each length N (= M) a synthetic workload with Llama-3-8B head shapes (32 query / 8 KV heads,
head_dim 128, batch 1, bf16; `attnsieve.eval.workloads`, planted sink+local / vertical / slash /
retrieval heads cycling over the query heads) is planned by every planner with its default
(paper) hyper-parameters. Reported per (length, planner):

- ``density``: computed / dense-causal (query, key) pairs (`Layout.density`, exact);
- ``recall``: dense attention mass the layout keeps (`attnsieve.eval.fidelity.attention_recall`
  on the exact float32 reference backend, not the Triton kernel under test), over
  ``--recall-blocks`` query blocks spread evenly over the sequence (all heads, every key) rather
  than all N rows, which would cost an fp32 dense attention per planner; the mean, the worst head
  and the mean per head kind;
- ``plan_ms``, ``attn_ms`` (`attnsieve.kernels.prefill.sparse_attention` on the layout),
  ``total_ms`` and ``speedup`` = SDPA causal dense ms / total_ms (cuDNN, or flash where cuDNN
  has no kernel for the inputs: ``baseline`` records which; the plot's axes name it);
  ``plan_fraction`` = plan_ms / attn_ms. Times are CUDA-event medians of eager calls
  (`median_ms`: `triton.testing.do_bench`, or five direct calls where a call is long; L2 is
  flushed by zeroing a 256 MB buffer before each call).
- ``graph_plan_ms``: the plan replayed from a CUDA graph, as `attnsieve.patch` runs it once a
  shape repeats (None where the plan waits for the GPU and cannot be captured), with L2 flushed
  by reading a 256 MB buffer before each replay (`attnsieve.bench.common.graph_ms`), and
  ``graph_speedup`` = dense ms / (graph_plan_ms + attn_ms).
- ``peak_gib``: the most CUDA memory allocated while the planner's first plan and attention ran,
  the workload's Q/K/V included (not the recall check's float32 copies): what a long prompt needs
  on the device beside the model.

prefill.json's ``settings.l2_flush`` says which flush preceded each timed field. It is written
before the first row and again after every row (``"complete": false`` until the last), so a run
cut short keeps the rows it finished; prefill.png is drawn at the end (an earlier run's is removed
first, so that it never sits beside this run's rows).

The sparse output is checked against the float32 reference on the sampled rows first; a planner
whose check fails gets no times or speed-up, and the command exits 1. Writes prefill.json and
prefill.png (recall vs speed-up per length, speed-up vs length).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnsieve.bench.common import (
    check_heads,
    check_out,
    command_line,
    environment,
    folder,
    format_table,
    graph_ms,
    head_dim,
    ints,
    median_ms,
    positive_float,
    positive_int,
    require_cuda,
    sampled_blocks,
    save_line_plots,
    seed,
    write_json,
)
from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.sweep_args import entries, planner_kwargs
from attnsieve.eval.workloads import canonical_kind, make_workload, min_seq_len
from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout
from attnsieve.methods import PLANNERS, PerHeadPlanner, get_planner

KINDS = ("sink_local", "vertical", "slash", "retrieval")
REL_TOL = 2e-2  # bf16 kernel output vs the fp32 reference (relative Frobenius error)
_DO_BENCH = (
    "eager calls timed by median_ms (triton.testing.do_bench, or five direct calls where a call is "
    "long): a 256 MB buffer zeroed (written) before each call"
)
L2_FLUSH = {  # the flush before each timed field of a row
    "dense_ms": _DO_BENCH,
    "plan_ms": _DO_BENCH,
    "attn_ms": _DO_BENCH,
    "graph_plan_ms": "CUDA-graph replays timed by attnsieve.bench.common.graph_ms: a 256 MB "
    "buffer read before each replay",
}
TARGETS = {"min_recall": 0.95, "max_density": 0.10, "min_speedup": 8.0, "max_plan_fraction": 0.10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lengths",
        type=ints,
        default=ints("16384,65536,131072"),
        help="comma-separated prompt lengths (default 16384,65536,131072)",
    )
    parser.add_argument(
        "--planners", default=",".join(sorted(PLANNERS)), help="comma-separated planner names"
    )
    parser.add_argument(
        "--kwargs", default="{}", help="JSON {planner: {field: value}} overriding the defaults"
    )
    parser.add_argument(
        "--config",
        type=lambda text: [path for path in text.split(",") if path],
        default=[],
        metavar="PATHS",
        help="also bench layer 0's planner of each AttentionConfig JSON (comma-separated; as "
        "`attnsieve calibrate` writes them), as the row 'config:<file name>'",
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="head kinds, cycled over heads")
    parser.add_argument("--heads", type=positive_int, default=32, help="query heads H_q")
    parser.add_argument("--kv-heads", type=positive_int, default=8, help="key/value heads H_kv")
    parser.add_argument(
        "--head-dim", type=head_dim, default=128, help="head dimension (default 128)"
    )
    parser.add_argument(
        "--recall-blocks",
        type=positive_int,
        default=64,  # 8 (block 0 among them) read 0.003-0.009 above 64's at 128K: too few
        help="query blocks for recall, the middle ones of equal parts (default 64)",
    )
    parser.add_argument(
        "--rep-ms", type=positive_float, default=100.0, help="timing budget per measure"
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the heads (default 0)")
    parser.add_argument(
        "--out", type=folder, default=Path("benchmarks/results"), help="folder for JSON + PNG"
    )


def main(args: argparse.Namespace) -> int:
    check_heads(args)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds:
        raise ValueError(f"--kinds: expected at least one head kind, got {args.kinds!r}")
    # 'block' as 'retrieval': settings.head_kinds then names the kinds rows' recall_by_kind keys
    kinds = [canonical_kind(kind, "--kinds") for kind in kinds]
    if short := [n for n in args.lengths if n < min_seq_len()]:
        raise ValueError(
            f"--lengths: expected at least {min_seq_len()} tokens (the synthetic heads' sinks and "
            f"spans), got {short}"
        )
    # every argument is checked before the GPU is asked for
    planners = _planners(args.planners, args.kwargs)
    planners.update(_config_planners(args.config, args.heads, args.kv_heads))
    if not planners:
        raise ValueError("--planners: expected at least one planner (or a --config)")
    check_out(args.out)
    device = require_cuda()
    from tqdm import tqdm

    head_kinds = [kinds[h % len(kinds)] for h in range(args.heads)]
    rows: list[dict[str, Any]] = []
    json_path, png_path = args.out / "prefill.json", args.out / "prefill.png"
    png_path.unlink(missing_ok=True)
    write_json(json_path, _payload(args, planners, head_kinds, rows, device, complete=False))
    with tqdm(total=len(args.lengths) * (1 + len(planners)), desc="bench prefill") as bar:
        for n in args.lengths:
            w = make_workload(
                head_kinds, num_kv_heads=args.kv_heads, seq_len=n, head_dim=args.head_dim,
                seed=args.seed, device=device, dtype=torch.bfloat16,
            )  # fmt: skip
            dense_ms, baseline = _dense_ms(w.q, w.k, w.v, args.rep_ms)
            bar.update()
            for name, planner in planners.items():
                bar.set_postfix_str(f"N={n} {name}")
                row = _bench(planner, w, args)
                row.update(length=n, planner=name, baseline=baseline, dense_ms=dense_ms)
                if "total_ms" in row:
                    row["speedup"] = dense_ms / row["total_ms"]
                if row.get("graph_plan_ms") is not None:
                    row["graph_speedup"] = dense_ms / (row["graph_plan_ms"] + row["attn_ms"])
                rows.append(row)
                write_json(
                    json_path, _payload(args, planners, head_kinds, rows, device, complete=False)
                )
                bar.update()
            del w
            gc.collect()
            torch.cuda.empty_cache()
    write_json(json_path, _payload(args, planners, head_kinds, rows, device, complete=True))
    _plot(png_path, rows, args.lengths)
    columns = ["length", "planner", "density", "recall", "plan_ms", "graph_plan_ms", "attn_ms",
               "speedup", "graph_speedup", "peak_gib", "check"]  # fmt: skip
    print(format_table(rows, columns))
    return 1 if any(row["check"] != "ok" for row in rows) else 0  # as the other benches do


def _payload(
    args: argparse.Namespace,
    planners: dict[str, Any],
    head_kinds: list[str],
    rows: list[dict],
    device: torch.device,
    *,
    complete: bool,
) -> dict[str, Any]:
    """prefill.json: the command that ran, the environment, the settings and the rows (all of
    them once ``complete``)."""
    return {
        "command": command_line("bench prefill", args),
        "complete": complete,
        "environment": environment(device),
        "settings": {
            "lengths": args.lengths, "heads": args.heads, "kv_heads": args.kv_heads,
            "head_dim": args.head_dim, "batch": 1, "dtype": "bfloat16", "head_kinds": head_kinds,
            "seed": args.seed, "rep_ms": args.rep_ms,
            "kwargs": {name: _fields(p) for name, p in planners.items()},
            "configs": args.config,
            "recall": f"exact fp32 recall (attention_recall on the reference backend, not the "
            f"Triton kernel) over {args.recall_blocks} query blocks spread evenly over the "
            "sequence (all heads, all keys), not over all N rows",
            "l2_flush": L2_FLUSH,
        },
        "targets": TARGETS,
        "rows": rows,
    }  # fmt: skip


def _planners(text: str, kwargs: str) -> dict[str, Any]:
    """{name: planner} of --planners, each built with its fields of --kwargs (errors name the
    option)."""
    names = entries(text, "--planners")
    for name in names:
        if name not in PLANNERS:
            raise ValueError(f"--planners: unknown planner {name!r}; available: {sorted(PLANNERS)}")
    overrides = planner_kwargs(kwargs, "--kwargs", names)
    planners = {}
    for name in names:
        try:
            planners[name] = get_planner(name, **overrides.get(name, {}))
        except (TypeError, ValueError) as e:  # a field the planner lacks, or a value it refuses
            raise ValueError(f"--kwargs: {name}: {e}") from None
    return planners


def _config_planners(paths: list[str], heads: int, kv_heads: int) -> dict[str, Any]:
    """{'config:<file name>': layer 0's prefill planner} of each AttentionConfig JSON, checked
    against the bench's heads before anything runs (named errors; one name per file). The bench
    times bf16 planning and attention at every length: a file's int8-fp8 prefill is refused, its
    min_prefill_length and other roles are not timed."""
    from attnsieve.integrations.config import AttentionConfig

    planners: dict[str, Any] = {}
    for path in paths:
        name = f"config:{Path(path).stem}"
        if paths.count(path) > 1:
            raise ValueError(f"--config: {path} given twice")
        if name in planners:
            raise ValueError(f"--config: two files named {Path(path).stem!r}: rename one")
        try:
            config = AttentionConfig.from_json(path)  # its errors name the file
        except (ValueError, TypeError) as e:
            raise type(e)(f"--config: {e}") from None
        try:  # per-head entries against the bench's heads ("the model" is --heads, --kv-heads)
            config.check_model(max(config.layers, default=0) + 1, heads, kv_heads)
        except ValueError as e:
            given = f"(--heads {heads}, --kv-heads {kv_heads})"
            raise ValueError(f"--config: {path}: {e} {given}") from None
        if config.prefill_precision != "bf16":
            raise ValueError(
                f"--config: {path} sets precision {config.precision!r}; bench prefill times bf16 "
                "(bench kernels --precision int8-fp8 times the INT8·FP8 kernel)"
            )
        if (planner := config.planner(0)) is None:
            raise ValueError(f"--config: {path} gives layer 0 no prefill planner (dense)")
        planners[name] = planner
    return planners


def _fields(planner: Any) -> dict[str, Any]:
    """prefill.json's record of a planner: its method and fields (a per-head planner's, each)."""
    if isinstance(planner, PerHeadPlanner):
        return {"method": planner.name, "planners": [_fields(p) for p in planner.planners]}
    return {"method": planner.name, **dataclasses.asdict(planner)}


def _bench(planner: Any, w: Any, args: argparse.Namespace) -> dict[str, Any]:
    q, k, v = w.q, w.k, w.v
    if q.is_cuda:
        torch.cuda.reset_peak_memory_stats(q.device)
    layout = planner.plan(q, k)  # warm-up: compiles / autotunes the planning kernels
    out = sparse_attention(q, k, v, layout)
    row: dict[str, Any] = {"density": layout.density()}
    if q.is_cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated(q.device) / 2**30
    recall, err = _sampled_recall_and_error(q, k, v, layout, out, args.recall_blocks)
    row["recall"] = float(recall.mean())
    row["recall_min_head"] = float(recall.min())
    row["recall_by_kind"] = {
        kind: float(recall[[h for h, hk in enumerate(w.head_kinds) if hk == kind]].mean())
        for kind in dict.fromkeys(w.head_kinds)
    }
    row["rel_err"] = err
    if not err <= REL_TOL:
        row["check"] = f"FAILED: relative error {err:.3g} > {REL_TOL}"
        return row  # no timings or speed-up for a wrong result
    row["check"] = "ok"
    del out
    row["plan_ms"] = median_ms(lambda: planner.plan(q, k), rep_ms=args.rep_ms)
    row["attn_ms"] = median_ms(lambda: sparse_attention(q, k, v, layout), rep_ms=args.rep_ms)
    row["total_ms"] = row["plan_ms"] + row["attn_ms"]
    row["plan_fraction"] = row["plan_ms"] / row["attn_ms"]
    row["graph_plan_ms"] = _graph_plan_ms(planner, q, k)
    return row


def _graph_plan_ms(planner: Any, q: Tensor, k: Tensor) -> float | None:
    """The plan's median ms replayed from a CUDA graph; None if it waits for the GPU (checked
    under the sync debug mode first, as `attnsieve.integrations.graphs` does)."""
    from attnsieve.integrations.graphs import forbid_host_sync

    try:
        with forbid_host_sync():
            planner.plan(q, k)
    except RuntimeError:
        return None
    return graph_ms(lambda: planner.plan(q, k), 20)


def _sampled_recall_and_error(
    q: Tensor, k: Tensor, v: Tensor, layout: Layout, out: Tensor, blocks: int
) -> tuple[Tensor, float]:
    """Per-head recall (H_q,) over sampled query blocks, and the output's relative error there.

    Each block is a smaller problem of its own (`attnsieve.bench.common.sampled_blocks`), so the
    exact float32 reference (recall and error alike) only sees (block_q × M) scores per head.
    """
    kept, rows, err2, norm2 = 0.0, 0, 0.0, 0.0
    for r0, r1, sub in sampled_blocks(layout, blocks):
        m_sub = sub.num_keys
        q_sub, k_sub, v_sub = q[:, :, r0:r1], k[:, :, :m_sub], v[:, :, :m_sub]
        # the reference, not the auto choice (on CUDA the Triton kernel whose layout is checked);
        # one pass gives its output and lse (an output pass of its own took about half of the
        # sampled blocks' time at 256K: long36/row_time_after.log)
        want, want_lse = attention_reference(q_sub, k_sub, v_sub, sub, return_lse=True)
        recall = attention_recall(q_sub, k_sub, sub, backend="reference", layout_lse=want_lse)
        kept = kept + recall.mean(0) * (r1 - r0)
        rows += r1 - r0
        want = want.float()
        err2 += float((out[:, :, r0:r1].float() - want).square().sum())
        norm2 += float(want.square().sum())
    return kept / rows, math.sqrt(err2 / max(norm2, 1e-30))


def _dense_ms(q: Tensor, k: Tensor, v: Tensor, rep_ms: float) -> tuple[float, str]:
    """SDPA causal dense time: cuDNN, or flash where cuDNN has no kernel for these inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):

        def run(backend: str = backend) -> Tensor:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1]
                )

        try:
            run()
        except RuntimeError:
            continue
        return median_ms(run, rep_ms=rep_ms), f"sdpa-{backend.split('_')[0].lower()}"
    raise SystemExit("no SDPA cuDNN or flash kernel for these inputs")


def _plot(path: Path, rows: list[dict[str, Any]], lengths: list[int]) -> None:
    timed = [r for r in rows if "speedup" in r]
    planners = list(dict.fromkeys(r["planner"] for r in timed))

    def baseline(rows: list[dict[str, Any]]) -> str:  # the SDPA backend(s) that ran, as recorded
        return " / ".join(dict.fromkeys(r["baseline"] for r in rows)) or "SDPA"

    panels = [
        {
            "series": {
                p: ([r["speedup"] for r in timed if r["planner"] == p and r["length"] == n],
                    [r["recall"] for r in timed if r["planner"] == p and r["length"] == n])
                for p in planners
            },
            "xlabel": f"speed-up vs {baseline([r for r in timed if r['length'] == n])} dense "
            "(plan + attention)",
            "ylabel": "attention recall (sampled rows)",
            "logx": True,
            "title": f"N = {n}",
        }
        for n in lengths
    ]  # fmt: skip
    panels.append(
        {
            "series": {
                p: ([r["length"] for r in timed if r["planner"] == p],
                    [r["speedup"] for r in timed if r["planner"] == p])
                for p in planners
            },
            "xlabel": "sequence length",
            "ylabel": f"speed-up vs {baseline(timed)} dense",
            "logx": True,
            "title": "speed-up",
        }
    )  # fmt: skip
    save_line_plots(path, panels, "attnsieve bench prefill: recall vs speed-up (Llama-3-8B heads)")
