"""Shared benchmark helpers: GPU check, median timing, attention FLOPs, JSON + PNG writers."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnsieve.kernels import call_ms
from attnsieve.layout import Layout


def require_cuda() -> torch.device:
    """The CUDA device benchmarks run on; a clear error where there is none."""
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda")


MIN_CALLS = 5  # timed calls a median is taken over, however long a call


def median_ms(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 200) -> float:
    """Median wall time of eager calls of ``fn`` in ms, from CUDA events, each after L2 is flushed
    by zeroing a 256 MB buffer: at least `MIN_CALLS` calls, and ``rep_ms`` of them where calls
    are short.

    Short calls go through triton.testing.do_bench. Calls so long that `MIN_CALLS` of them (and a
    margin) fill ``rep_ms`` are timed `MIN_CALLS` times directly, after the two calls that
    estimated them: do_bench alone would time max(1, rep_ms / estimate) calls (one call of a
    250 ms kernel at the default 200 ms), and before them spend seven more (one, five to
    estimate, one to warm up), which for cuDNN at 1M tokens (about 18 s a call) is minutes."""
    import triton.testing

    if 1.2 * MIN_CALLS * call_ms(fn) >= rep_ms:  # with a margin: do_bench estimates anew
        return _median_of_calls(fn, MIN_CALLS)
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def on_inputs(fn: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[..., Callable]:
    """What `median_ms_over_copies` takes: inputs -> the call ``fn(*inputs, *args, **kwargs)``."""
    return lambda *inputs: partial(fn, *inputs, *args, **kwargs)


def median_ms_over_copies(
    make_call: Callable[..., Callable[[], object]],
    inputs: Sequence[Tensor],
    copies: int,
    rep_ms: float = 200,
) -> tuple[float, list[float]]:
    """`median_ms` of ``make_call`` on ``copies`` clones of ``inputs``, each kept until all are
    timed so that every one lies at new addresses. Returns the median of those medians, and each.
    A kernel's time can depend on where its inputs lie: the bf16 sparse kernel's 64K row took
    7.05-7.20 ms on 15 of 18 copies of the same values and 7.8-8.2 ms on the others, in one
    process on one H100 (benchmarks/check_sparse_tuning.py), and the inputs as `bench kernels`
    first allocated them were slow in 9 of its 10 processes: clones only, so that one placement
    that is slow in most processes does not weigh in every median."""
    kept: list[list[Tensor]] = []
    times = []
    for _ in range(copies):
        kept.append([t.clone() for t in inputs])
        times.append(median_ms(make_call(*kept[-1]), rep_ms=rep_ms))
    return statistics.median(times), times


def time_on_copies(
    row: dict[str, Any],
    make_call: Callable[..., Callable[[], object]],
    inputs: Sequence[Tensor],
    copies: int,
    rep_ms: float,
) -> bool:
    """``row``'s ms and copies_ms from `median_ms_over_copies`, and status ok; False, with an error
    status and no time, where the copies do not fit in GPU memory (the row passed its check)."""
    try:
        row["ms"], row["copies_ms"] = median_ms_over_copies(make_call, inputs, copies, rep_ms)
    except torch.OutOfMemoryError:
        row["status"] = f"error: out of memory holding {copies} copies of the inputs (--copies)"
        return False
    row["status"] = "ok"
    return True


def _median_of_calls(fn: Callable[[], object], calls: int, device: str = "cuda") -> float:
    """Median ms of ``calls`` calls of ``fn``, from CUDA events, L2 flushed before each (as
    do_bench flushes it)."""
    flush = torch.empty(2**26, dtype=torch.int32, device=device)  # 256 MB, past L2 (50 MB)
    events = []
    for _ in range(calls):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def ints(text: str) -> list[int]:
    """Comma-separated ints >= 1, at least one (an argparse type)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 1, got {text!r}")
    return list(dict.fromkeys(values))  # a length given twice is one row (speed-ups key on it)


def ints_in(low: int, high: int | None, pow2: bool = False) -> Callable[[str], int]:
    """An argparse type: an int in [low, high] (no upper bound where None), a power of two with
    ``pow2``."""
    what = f"a power of two in [{low}, {high}]" if pow2 else f"an int in [{low}, {high}]"
    what = what if high is not None else f"an int >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if pow2 and value & (value - 1):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = ints_in(1, None)
# what the prefill and decode kernels take (attnsieve.kernels.prefill, .decode_reference): checked
# while parsing, as the kernels check it only once the inputs are on the GPU
head_dim = ints_in(16, 256, pow2=True)
seed = ints_in(0, 2**64 - 1)  # what torch.manual_seed takes, non-negative


def folder(text: str) -> Path:
    """A results folder (--out; an argparse type), not '' (which wrote into the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}")
    return Path(text)


def positive_float(text: str) -> float:
    """A finite float > 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fractions(text: str) -> list[float]:
    """Comma-separated numbers in (0, 1], at least one (an argparse type)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < x <= 1 for x in values):  # NaN fails the comparison
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in (0, 1], got {text!r}"
        )
    return list(dict.fromkeys(values))  # one row a density: speed-ups key on it


def fraction(text: str) -> float:
    """A number in (0, 1] (an argparse type)."""
    try:
        (value,) = fractions(text)
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    return value


def check_out(out: str | Path) -> None:
    """Refuse a results folder ``out`` (--out) that could not be made or written in, before the
    benchmark: its results file is first written once the benchmark has begun. A missing folder is
    made and removed again: an access test passes root where none can be made (under /proc), and a
    refused command leaves no folder behind."""
    folder = Path(out)
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # made from here on
    if not existing.is_dir():
        raise ValueError(f"--out: expected a folder (made if missing); {existing} is not a folder")
    missing = [p for p in (folder, *folder.parents) if not p.exists()]  # the deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: cannot make the folder {folder} ({e.strerror})") from None
    for made in missing:
        made.rmdir()
    if not missing and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out: cannot write in {folder}")


def check_heads(args: argparse.Namespace) -> None:
    """ValueError naming the options unless --kv-heads divides --heads (grouped-query
    attention: SDPA and every kernel need whole groups)."""
    if args.heads % args.kv_heads:
        raise ValueError(
            f"--heads, --kv-heads: expected --kv-heads to divide --heads, got {args.heads} and "
            f"{args.kv_heads}"
        )


def sdpa_choice(q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> str:
    """The SDPA backend PyTorch picks for these inputs ("FLASH_ATTENTION", "CUDNN_ATTENTION", ...),
    through its private but long-standing chooser: the name is informative only."""
    from torch.nn.attention import SDPBackend

    try:
        choice = torch._fused_sdp_choice(q, k, v, **kwargs)
        names = {int(v): k for k, v in SDPBackend.__members__.items()}
        return names.get(int(choice), f"unknown ({choice})")
    except (AttributeError, RuntimeError, TypeError) as e:
        return f"unknown ({type(e).__name__})"


def rel_err(out: Tensor, ref: Tensor) -> float:
    """|out - ref| / |ref| over all elements, in float32."""
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-12))


def next_token_kl(out: Tensor, ref: Tensor) -> float:
    """KL(ref || out) in nats between the next-token distributions that the logits ``ref`` and
    ``out`` (..., V) give, in float32, averaged over the leading dimensions. A shift common to
    every logit, which softmax ignores, leaves it unchanged; `rel_err` of the logits counts it
    (SmolLM2's last-position logits at 1M tokens, session 39: rel_err 0.74 at a KL of 0.60,
    where at 512K 0.13 came with a KL of 1.49)."""
    ref_log, out_log = ref.float().log_softmax(-1), out.float().log_softmax(-1)
    terms = torch.where(ref_log > -math.inf, ref_log.exp() * (ref_log - out_log), 0.0)
    return float(terms.sum(-1).mean())


def attention_tflops(ms: float, batch: int, heads: int, head_dim: int, pairs: float) -> float:
    """Forward attention TFLOP/s.

    FLOPs = 4 * B * H * D * pairs: per computed (query, key) pair, QK^T costs 2*D (multiply + add)
    and PV another 2*D; softmax is not counted (the convention of FlashAttention and Triton's
    tutorial). ``pairs`` are the pairs actually computed (causal: about N^2 / 2; sparse: density x
    that).
    """
    return 4.0 * batch * heads * head_dim * pairs / (ms * 1e-3) / 1e12


def sampled_blocks(layout: Layout, blocks: int) -> list[tuple[int, int, Layout]]:
    """Up to ``blocks`` query blocks of a causal ``layout``, the middle blocks of ``blocks`` equal
    parts of its sequence (every block where ``blocks`` covers them), each as (first row, end
    row, the layout of that block alone). Evenly spaced from block 0, as before the twenty-eighth
    session, the first block (recall about 1 under every planner: its keys are its sink and
    diagonal) weighed 1 / ``blocks`` instead of 1 / QB and biased recall upwards.

    Query rows [r0, r1) with the keys up to the last one's position (M - N + r1) are a smaller
    bottom-right aligned causal problem: an exact reference of the block sees (block_q × M)
    scores per head, not (N × M). Blocks whose rows see no key are left out.
    """
    n, m, bq, bk = layout.num_queries, layout.num_keys, layout.block_q, layout.block_k
    total = layout.num_q_blocks
    picked = ((torch.arange(blocks) + 0.5) * total / blocks).long().clamp(max=total - 1)
    picked = picked.unique().tolist()
    block_mask = layout.block_mask()
    out = []
    for qb in picked:
        r0, r1 = qb * bq, min(n, (qb + 1) * bq)
        m_sub = m - n + r1
        if m_sub <= 0:
            continue
        sub = Layout.from_block_mask(
            block_mask[:, :, qb : qb + 1, : math.ceil(m_sub / bk)],
            block_q=bq, block_k=bk, num_queries=r1 - r0, num_keys=m_sub,
        )  # fmt: skip
        if layout.has_columns:
            cols = layout.column_idx[:, :, qb : qb + 1].long()
            slot = torch.arange(cols.shape[-1], device=cols.device)
            valid = (slot < layout.column_count[:, :, qb : qb + 1, None]) & (cols < m_sub)
            sub = sub.with_columns(torch.where(valid, cols, -1))
        if layout.has_spans:  # with_spans clips the ranges to the cropped keys
            part = (layout.span_start, layout.span_end, layout.span_count)
            sub = sub.with_spans(*(t[:, :, qb : qb + 1] for t in part))
        out.append((r0, r1, sub))
    return out


def environment(device: torch.device | str) -> dict:
    """Versions and the device the run used (``device``: the GPU's name for a CUDA device, "cpu"
    otherwise, whatever else the machine has) for a results file."""
    import triton

    device = torch.device(device)
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    return {
        "device": props.name if props else "cpu",
        "sm_count": props.multi_processor_count if props else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def command_line(name: str, args: argparse.Namespace) -> str:
    """The command line that reproduces a run of ``attnsieve NAME`` (every option spelled out):
    store_true flags present or absent, lists comma-joined, values shell-quoted."""
    parts = [f"attnsieve {name}"]
    for key, value in vars(args).items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):  # a store_true flag: present or absent
            parts += [flag] if value else []
        elif value is not None and not callable(value):
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            parts += [flag, shlex.quote(text)]
    return " ".join(parts)


STEM_BYTES = 200  # a file name holds 255 bytes; ".json" and write_json's temporary name add 19


def results_paths(out: Path, stem: str) -> tuple[Path, Path]:
    """``out``/``stem``.json and .png, a run's results files. ``stem`` names what ran (a sweep's
    labels, e.g. "dense+quest@0.125"); past `STEM_BYTES` it keeps its start and a hash of the
    whole: a long sweep's labels make a name the file system refuses, and each configuration
    keeps files of its own."""
    raw = stem.encode()
    if len(raw) > STEM_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        stem = raw[: STEM_BYTES - 17].decode(errors="ignore") + "-" + digest
    # appended, not Path.with_suffix, which took the end of "quest@0.125" for a suffix
    return Path(out) / f"{stem}.json", Path(out) / f"{stem}.png"


def write_json(path: Path, payload: dict, default: Callable[[Any], Any] | None = str) -> Path:
    """Write ``payload`` to ``path`` whole or not at all, so that a long run writing its partial
    results again after every row and cut short by a timeout never leaves a truncated file: through
    a temporary file of its own beside it (two writers never share one), removed if the write
    fails. ``default``: json's, for values JSON cannot hold (None: they raise TypeError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=default) + "\n"
    return replace_file(path, lambda tmp: tmp.write_text(text))


def replace_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Replace ``path`` by what ``write`` writes to a temporary path beside it, at once (a reader
    or a run cut short sees the old file or the new one, never a part)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~umask)  # a plain file's mode (mkstemp's is private: 0600)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_line_plots(
    path: Path,
    panels: Sequence[dict],
    title: str,
) -> Path:
    """One PNG, a panel per dict: {"series": {label: (xs, ys)}, "xlabel", "ylabel"} plus optional
    "logx", "logy", "title" and "hlines" ({label: y}: grey reference lines, dashed, dotted,
    dash-dot). A panel's series never share a colour and line style (past ten series, twenty
    colours; past twenty, dashes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        count = len(panel["series"])
        colors = plt.get_cmap("tab10" if count <= 10 else "tab20").colors
        for i, (label, (xs, ys)) in enumerate(panel["series"].items()):
            style = ("-", "--", ":", "-.")[i // len(colors) % 4]
            ax.plot(xs, ys, marker="o", label=label, color=colors[i % len(colors)], ls=style)
        for i, (label, y) in enumerate(panel.get("hlines", {}).items()):
            ax.axhline(y, color="0.4", ls=("--", ":", "-.")[i % 3], lw=1, label=label)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("logx"):
            ax.set_xscale("log", base=2)
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("title"):
            ax.set_title(panel["title"])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (dicts) restricted to ``columns``."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_FLUSH: list[Tensor] = []
FLUSHES = ("read", "write", "none")


def graph_ms(fn: Callable[[], object], reps: int, flush: str = "read") -> float:
    """Median ms of one replay of ``fn`` captured in a CUDA graph, L2 flushed before each.

    ``flush``: "read" reads a 256 MB buffer, leaving L2 full of clean lines; "write" sets it to
    zero (as `triton.testing.do_bench` flushes), which leaves up to an L2's worth of dirty lines
    (50 MB on an H100 or H200) whose write-back to HBM can then run during ``fn`` and be timed with
    it (benchmarks/check_flush.py measures both); "none" keeps L2 as ``fn`` left it.
    """
    if flush not in FLUSHES:
        raise ValueError(f"flush: expected one of {FLUSHES}, got {flush!r}")
    if not _FLUSH:
        _FLUSH.append(torch.zeros(256 * 2**20, dtype=torch.int8, device="cuda"))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up: compile, autotune, allocate outside the graph
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps + 3):
        if flush == "read":
            _FLUSH[0].max()
        elif flush == "write":
            _FLUSH[0].zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(torch.tensor(times[3:]).median())
