"""`attnsieve bench decode`: the paged decode kernel vs PyTorch SDPA on Llama-3-8B heads (GPU).

For every (batch, context length): SDPA decode (one query token, enable_gqa) over the same tokens
laid out contiguously, our dense paged kernel in bf16 and over an FP8 pool, and sparse reads of
1/``--keep`` (16) of the pages (bf16 and FP8). Each kernel row is checked against SDPA or the
float32 twin before it is timed; a failed check is reported as such, with no speed-up, and the
command exits 1 (as it does where a row did not run). Times are medians of
CUDA-graph replays with L2 flushed before each by reading a 256 MB buffer (a decode step runs in a
graph, after other layers evicted L2; `attnsieve.bench.common.graph_ms` says why reading).
Bandwidth = bytes of K, V (and FP8 scales) read / time, also as a share of the
4.3 TB/s quoted copy rate and of the device-to-device copy rate measured in the same run. Writes
decode.json and decode.png.

Sparse rows take a selector ``select(q, cache) -> (pages, page_count)``: ``sparse_cases`` lists a
random page list (not timed: it stands for a plan made elsewhere) and Quest's selection (timed:
its time is added to the kernel's); a selector added there with ``timed=True`` gets the same.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

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
    ints_in,
    median_ms,
    positive_int,
    rel_err,
    require_cuda,
    save_line_plots,
    sdpa_choice,
    seed,
    write_json,
)
from attnsieve.checks import cdiv
from attnsieve.kernels.decode_reference import quantize_fp8

# one Llama-3-8B layer's decode shapes, the defaults of the options below (scripts reuse them)
LLAMA3_8B_DECODE = argparse.Namespace(heads=32, kv_heads=8, head_dim=128, page_size=16)
PEAK_TBPS = 4.3  # measured copy bandwidth quoted for H200 HBM3e (brief); re-measured below
REL_TOL = 2e-2  # bf16 outputs of two exact kernels differ by ~4e-3 relative RMS


@dataclass
class Paged:
    """One layer's cache in both layouts: contiguous (for SDPA) and paged on shuffled pages."""

    q: Tensor  # (B, H_q, D)
    k: Tensor  # (B, H_kv, L, D)
    v: Tensor
    paged: dict  # k_pages, v_pages, page_table, lengths
    fp8: dict  # the same pages quantised to float8_e4m3fn with per-token scales
    page_size: int


@dataclass
class SparseCase:
    name: str
    select: Callable[[Tensor, Paged], tuple[Tensor, Tensor]]  # (q, cache) -> pages, page_count
    timed: bool  # a real selector: its time is reported and added to the kernel's


def random_pages(keep: int) -> Callable[[Tensor, Paged], tuple[Tensor, Tensor]]:
    """1/keep of each head's pages, at random, ascending."""

    def select(q: Tensor, cache: Paged) -> tuple[Tensor, Tensor]:
        table = cache.paged["page_table"]
        b, h_kv, n_pages = table.shape
        n = max(1, n_pages // keep)
        pick = torch.rand(b, h_kv, n_pages, device=q.device).argsort(-1)[..., :n]
        pages = pick.sort(-1).values.to(torch.int32)
        return pages, torch.full((b, h_kv), n, dtype=torch.int32, device=q.device)

    return select


def quest_pages(keep: int) -> Callable[[Tensor, Paged], tuple[Tensor, Tensor]]:
    """Quest's selection (`attnsieve.methods.decode.quest`) at a 1/keep token budget, over the
    page summaries the paged cache keeps (bfloat16, rounded outward; built here once, outside the
    timed selection), read through the cache's own page table."""
    from attnsieve.cache_reference import round_bf16
    from attnsieve.methods.decode import get_selector
    from attnsieve.methods.decode.base import StepState
    from attnsieve.views import PageView

    selector = get_selector("quest", ratio=1.0 / keep, dense_layers=0)
    views: dict[int, PageView] = {}

    def select(q: Tensor, cache: Paged) -> tuple[Tensor, Tensor]:
        if id(cache) not in views:
            pages, table = cache.paged["k_pages"].float(), cache.paged["page_table"]
            lengths = cache.paged["lengths"]
            count = (lengths + cache.page_size - 1) // cache.page_size
            views.clear()
            views[id(cache)] = PageView(
                round_bf16(pages.amin(1), up=False), round_bf16(pages.amax(1), up=True), table,
                count, cache.page_size, lengths, None, 2, 32,
            )  # fmt: skip
        view = views[id(cache)]
        picked = selector.select(q, view, StepState())
        if picked is None:  # the budget covers every page (--keep 1, or one page a head)
            every = torch.arange(view.page_table.shape[-1], dtype=torch.int32, device=q.device)
            return every.expand_as(view.page_table).contiguous(), view.page_count
        return picked.idx, picked.count

    return select


def sparse_cases(args: argparse.Namespace) -> list[SparseCase]:
    return [
        SparseCase(f"sparse 1/{args.keep}", random_pages(args.keep), timed=False),
        SparseCase(f"quest 1/{args.keep}", quest_pages(args.keep), timed=True),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lengths", type=ints, default=ints("32768,131072"), help="context L")
    parser.add_argument("--batch", type=ints, default=ints("1,8"), help="comma-separated batches")
    shape = LLAMA3_8B_DECODE
    parser.add_argument("--heads", type=positive_int, default=shape.heads, help="query heads H_q")
    parser.add_argument(
        "--kv-heads", type=positive_int, default=shape.kv_heads, help="key/value heads"
    )
    parser.add_argument(
        "--head-dim",
        type=head_dim,
        default=shape.head_dim,
        help=f"head dimension (default {shape.head_dim})",
    )
    parser.add_argument(
        "--page-size",
        type=ints_in(8, 256, pow2=True),
        default=shape.page_size,
        help=f"tokens a cache page (default {shape.page_size})",
    )
    parser.add_argument(
        "--keep", type=positive_int, default=16, help="sparse rows read 1/keep of pages"
    )
    parser.add_argument("--reps", type=positive_int, default=50, help="timed graph replays per row")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the inputs (default 0)")
    parser.add_argument(
        "--out", type=folder, default=Path("benchmarks/results"), help="folder for JSON + PNG"
    )


def main(args: argparse.Namespace) -> int:
    check_heads(args)
    check_out(args.out)
    device = require_cuda()
    torch.manual_seed(args.seed)
    copy_tbps = copy_bandwidth()
    rows: list[dict] = []
    cells = [(b, n) for b in args.batch for n in args.lengths]
    for b, n in tqdm(cells, desc="bench decode", unit="cell"):
        rows += bench_one(b, n, args, copy_tbps)
        torch.cuda.empty_cache()
    env = environment(device)
    payload = {
        "benchmark": "decode",
        "command": command_line("bench decode", args),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **env,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "copy_tbps": copy_tbps,
        "bytes": "K + V (+ FP8 scales) of the tokens read, per decode step of one layer",
        "l2_flush": "a 256 MB buffer read before each replay (attnsieve.bench.common.graph_ms)",
        "rows": rows,
    }
    json_path = write_json(args.out / "decode.json", payload)
    png_path = _plot(rows, args.out / "decode.png", env["device"], copy_tbps)
    cols = ["B", "L", "method", "ms", "tbps", "pct_4.3", "pct_copy", "speedup", "vs", "rel_err"]
    print(f"device-to-device copy: {copy_tbps:.2f} TB/s")
    print(format_table(rows, [*cols, "status"]))
    print(f"wrote {json_path} and {png_path}")
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def copy_bandwidth(gib: float = 4.0) -> float:
    """Device-to-device copy TB/s (bytes read + written) of a ``gib`` GiB buffer. Timed eagerly:
    in a CUDA graph the copy becomes a copy-engine memcpy node, slower than the SMs' copy."""
    src = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e12


def selection_ms(case: SparseCase, c: Paged, reps: int) -> tuple[float, str]:
    """(a selector's time, "graph" or "eager"): in a CUDA graph when it can be captured, else
    eagerly (its launches and any host synchronisation then count, as they would when serving)."""
    try:
        return graph_ms(lambda: case.select(c.q, c), reps), "graph"
    except RuntimeError:
        torch.cuda.synchronize()
        times = []
        for _ in range(reps + 3):
            start = time.perf_counter()
            case.select(c.q, c)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        return float(torch.tensor(times[3:]).median()), "eager"


def make_cache(
    b: int, n: int, args: argparse.Namespace, shuffled: bool = True, device: str = "cuda"
) -> Paged:
    """One layer's random cache; its pages lie in the pool in random order (a cache that has
    allocated and freed pages for a while), or in order with ``shuffled=False``. A length that is
    not a multiple of the page size leaves each head's last page partly empty (zeros)."""
    h, h_kv, d, ps = args.heads, args.kv_heads, args.head_dim, args.page_size
    dev, bf16 = torch.device(device), torch.bfloat16
    q = torch.randn(b, h, d, device=dev, dtype=bf16)
    k = torch.randn(b, h_kv, n, d, device=dev, dtype=bf16)
    v = torch.randn(b, h_kv, n, d, device=dev, dtype=bf16)
    per_head = cdiv(n, ps)
    n_pages = b * h_kv * per_head
    # logical page i lives at physical page perm[i]
    perm = torch.randperm(n_pages, device=dev) if shuffled else torch.arange(n_pages, device=dev)

    def pool(x: Tensor) -> Tensor:
        out = torch.empty(n_pages, ps, *x.shape[3:], device=dev, dtype=x.dtype)
        out[perm] = x.reshape(n_pages, ps, *x.shape[3:])
        return out

    table = perm.view(b, h_kv, per_head).to(torch.int32)
    lengths = torch.full((b, h_kv), n, dtype=torch.int32, device=dev)
    kp, vp = (torch.nn.functional.pad(x, (0, 0, 0, per_head * ps - n)) for x in (k, v))
    paged = {"k_pages": pool(kp), "v_pages": pool(vp), "page_table": table, "lengths": lengths}
    (k8, ks), (v8, vs) = quantize_fp8(kp), quantize_fp8(vp)  # per-token scales, as the cache's
    fp8 = {"k_pages": pool(k8), "v_pages": pool(v8), "k_scale": pool(ks[..., None])[..., 0]}
    fp8.update(v_scale=pool(vs[..., None])[..., 0], page_table=table, lengths=lengths)
    return Paged(q, k, v, paged, fp8, ps)


def bench_one(b: int, n: int, args: argparse.Namespace, copy_tbps: float) -> list[dict]:
    """Rows of one (batch, length): SDPA, dense bf16 / FP8, and every sparse case."""
    from attnsieve.kernels.decode import decode_attention
    from attnsieve.kernels.decode_reference import decode_reference

    c = make_cache(b, n, args)
    h_kv, d = args.kv_heads, args.head_dim
    tok_bytes = {"bf16": 2 * 2 * d, "fp8": 2 * (d + 4)}  # K + V rows (+ two float32 scales)
    rows: list[dict] = []

    def record(method, fn, tokens, dtype, ref=None, ref_fn=None, extra_ms=0.0):
        row = {"B": b, "L": n, "method": method, "status": "ok"}
        rows.append(row)
        try:
            out = fn()
            expect = ref if ref_fn is None else ref_fn()
            if expect is not None:
                row["rel_err"] = rel_err(out, expect)
                if not row["rel_err"] < REL_TOL:
                    row["status"] = "correctness failed"
                    return row
            row["ms"] = graph_ms(fn, args.reps) + extra_ms
        except Exception as exc:  # a backend missing on this GPU / torch is a result, not a crash
            row["status"] = f"error: {type(exc).__name__}: {str(exc)[:100]}"
            return row
        row["tbps"] = b * h_kv * tokens * tok_bytes[dtype] / (row["ms"] * 1e-3) / 1e12
        row["pct_4.3"] = 100 * row["tbps"] / PEAK_TBPS
        row["pct_copy"] = 100 * row["tbps"] / copy_tbps
        return row

    q4 = c.q.unsqueeze(2)  # (B, H_q, 1, D)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q4, c.k, c.v, enable_gqa=True)

    ref = sdpa()[:, :, 0]
    sd = record("sdpa", sdpa, n, "bf16")
    sd["backend"] = sdpa_choice(q4, c.k, c.v, enable_gqa=True)  # the baseline's kernel, named
    dense = record("dense bf16", lambda: decode_attention(c.q, **c.paged), n, "bf16", ref=ref)

    def twin(cache, **kw):
        return lambda: decode_reference(c.q, **cache, **kw)

    fp8 = record("dense fp8", lambda: decode_attention(c.q, **c.fp8), n, "fp8", ref_fn=twin(c.fp8))
    if fp8["status"] == "ok":  # what FP8 storage costs in accuracy, against bf16 SDPA
        fp8["err_vs_bf16"] = rel_err(decode_attention(c.q, **c.fp8), ref)
    _speedup(dense, sd)
    _speedup(fp8, dense)
    for case in sparse_cases(args):
        pages, count = case.select(c.q, c)
        sel = {"pages": pages, "page_count": count}
        sel_ms, sel_timing = selection_ms(case, c, args.reps) if case.timed else (0.0, None)
        kept = tokens_read(pages, count, c.paged["lengths"], c.page_size)
        for label, cache in (("bf16", c.paged), ("fp8", c.fp8)):
            row = record(
                f"{case.name} {label}",
                lambda ca=cache, se=sel: decode_attention(c.q, **ca, **se),
                kept,
                label,
                ref_fn=twin(cache, **sel),
                extra_ms=sel_ms,
            )
            if case.timed:
                row["select_ms"], row["select_timing"] = sel_ms, sel_timing
            _speedup(row, dense if label == "bf16" else fp8)
    return rows


def tokens_read(pages: Tensor, count: Tensor, lengths: Tensor, page_size: int) -> float:
    """Mean tokens per (batch, KV head) that the first ``count`` of ``pages`` (logical page
    indices, (B, H_kv, P)) hold: full pages, and a head's last page only as far as its length."""
    valid = torch.arange(pages.shape[-1], device=pages.device) < count[..., None]
    held = (lengths[..., None].long() - pages.long() * page_size).clamp(0, page_size)
    return float((held * valid).sum()) / count.numel()


def _speedup(row: dict, base: dict) -> None:
    """Only between two rows that passed their checks."""
    if row["status"] == "ok" and base["status"] == "ok":
        row["speedup"], row["vs"] = base["ms"] / row["ms"], base["method"]


def _plot(rows: list[dict], path: Path, device: str, copy_tbps: float) -> Path:
    """Per batch size: achieved TB/s by context length against the measured copy bandwidth and
    85 % of it (the dense kernel's target), and time by context length."""
    batches = sorted({r["B"] for r in rows})
    bw: dict[int, dict] = {b: {} for b in batches}
    ms: dict[int, dict] = {b: {} for b in batches}
    for r in rows:
        if r["status"] != "ok":
            continue
        for store, key in ((bw, "tbps"), (ms, "ms")):
            xs, ys = store[r["B"]].setdefault(r["method"], ([], []))
            xs.append(r["L"])
            ys.append(r[key])
    lines = {f"copy {copy_tbps:.2f} TB/s": copy_tbps, "85 % of copy": 0.85 * copy_tbps}
    panels = [
        {"series": bw[b], "xlabel": "context L", "ylabel": "TB/s read", "logx": True,
         "title": f"batch {b}", "hlines": lines}
        for b in batches
    ] + [
        {"series": ms[b], "xlabel": "context L", "ylabel": "ms per layer step", "logx": True,
         "logy": True, "title": f"batch {b}"}
        for b in batches
    ]  # fmt: skip
    return save_line_plots(path, panels, f"attnsieve bench decode on {device}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
