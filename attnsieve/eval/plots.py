"""PNG plots of `attnsieve eval` results (matplotlib's object API: no pyplot global state)."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def _figure(cols: int, rows: int, width: float = 4.2, height: float = 3.3) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _length_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def plot_accuracy_vs_length(cells: list[dict], path: Path) -> None:
    """One panel per task plus the mean over tasks; a line per method."""
    tasks = sorted({c["task"] for c in cells})
    panels = (["mean over tasks"] if len(tasks) > 1 else []) + tasks
    cols = min(3, len(panels))
    fig, axes = _figure(cols, math.ceil(len(panels) / cols))
    lengths = sorted({c["length"] for c in cells})
    methods = list(dict.fromkeys(c["method"] for c in cells))
    for ax, panel in zip(axes.flat, panels, strict=False):
        for method in methods:
            points = []
            for n in lengths:
                accs = [
                    c["accuracy"]
                    for c in cells
                    if c["method"] == method
                    and c["length"] == n
                    and (panel == c["task"] or panel == "mean over tasks")
                ]
                if accs:
                    points.append((n, statistics.fmean(accs)))
            ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [_length_label(n) for n in lengths])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(panel)
        ax.set_xlabel("length (prompt + answer, tokens)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    fig.savefig(path, dpi=120)


def plot_frontier(cells: list[dict], path: Path) -> bool:
    """Accuracy (mean over tasks) vs prefill speed-up over dense, one point per (method, length).

    The speed-up at a length is total dense prefill time / total method prefill time over the
    tasks both ran. Returns False (and writes nothing) without dense cells.
    """
    by = defaultdict(dict)  # (method, length) -> task -> cell
    for c in cells:
        by[(c["method"], c["length"])][c["task"]] = c
    if not any(method == "dense" for method, _ in by):
        return False
    fig, axes = _figure(1, 1, width=6.0, height=4.5)
    ax = axes[0, 0]
    methods = list(dict.fromkeys(c["method"] for c in cells))
    for method in methods:
        xs, ys, labels = [], [], []
        for length in sorted({n for m, n in by if m == method}):
            dense, mine = by.get(("dense", length), {}), by[(method, length)]
            shared = [t for t in mine if t in dense]
            if not shared:
                continue
            t_dense = sum(dense[t]["prefill_seconds"] for t in shared)
            t_mine = sum(mine[t]["prefill_seconds"] for t in shared)
            xs.append(t_dense / t_mine)
            ys.append(statistics.fmean(mine[t]["accuracy"] for t in shared))
            labels.append(_length_label(length))
        ax.plot(xs, ys, marker="o", label=method)
        for x, y, label in zip(xs, ys, labels, strict=True):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.axvline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("prefill speed-up over dense (x)")
    ax.set_ylabel("accuracy (mean over tasks)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def plot_kv_frontier(cells: list[dict], path: Path) -> None:
    """Accuracy (mean over tasks) vs KV-cache memory, one point per (method, length)."""
    by = defaultdict(list)  # (method, length) -> cells
    for c in cells:
        by[(c["method"], c["length"])].append(c)
    fig, axes = _figure(1, 1, width=6.0, height=4.5)
    ax = axes[0, 0]
    for method in dict.fromkeys(c["method"] for c in cells):
        points = sorted(
            (statistics.fmean(c["kv_memory_mib"] for c in group), statistics.fmean(
                c["accuracy"] for c in group), length)
            for (m, length), group in by.items()
            if m == method
        )  # fmt: skip
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
        for x, y, length in points:
            ax.annotate(_length_label(length), (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("KV-cache memory after the answer (MiB)")
    ax.set_ylabel("accuracy (mean over tasks)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def budget_lines(cells: list[dict]) -> dict[str, dict[tuple[int, float], list[float]]]:
    """{line name: {(length, ratio): accuracies}} of each config swept over its KV policy's or
    decode selector's ``"ratio"`` (``--kv-ratio`` or ``--decode-ratio`` lists) at two or more
    ratios with all else fixed, named by its label with that ratio as ``@r``. A KV policy sized in
    tokens (``"budget"``) has no ratio."""
    lines: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    names = {}
    for c in cells:
        for role in ("kv", "decode"):
            entry = c["config"].get(role)
            if not isinstance(entry, dict) or entry.get("budget") is not None:
                continue
            ratio = entry.get("ratio")
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
                continue
            rest = {**c["config"], role: {k: v for k, v in entry.items() if k != "ratio"}}
            family = (role, json.dumps(rest, sort_keys=True))
            lines[family][c["length"], float(ratio)].append(c["accuracy"])
            names.setdefault(family, _swept_name(c["method"], role, ratio))
    out: dict[str, dict] = {}
    for family, points in lines.items():
        if len({ratio for _, ratio in points}) > 1:
            name = names[family]
            out[name if name not in out else f"{name} ({len(out) + 1})"] = dict(points)
    return out


def plot_budget(cells: list[dict], path: Path) -> bool:
    """Accuracy (mean over tasks) vs budget ratio, a panel per length and a line per swept config
    (`budget_lines`), ``dense`` dashed where it ran. Returns False, writing nothing, where no
    config was swept."""
    swept = budget_lines(cells)
    if not swept:
        return False
    lengths = sorted({length for points in swept.values() for length, _ in points})
    ratios = {ratio for points in swept.values() for _, ratio in points}
    fig, axes = _figure(len(lengths), 1)
    for ax, length in zip(axes.flat, lengths, strict=True):
        for name, points in swept.items():
            xy = sorted((r, statistics.fmean(a)) for (n, r), a in points.items() if n == length)
            if xy:
                ax.plot(*zip(*xy, strict=True), marker="o", label=name)
        dense = [c["accuracy"] for c in cells if c["method"] == "dense" and c["length"] == length]
        if dense:
            ax.axhline(statistics.fmean(dense), color="gray", linestyle="--", label="dense")
        if min(ratios) > 0:  # a KV ratio of 0 (keep nothing past the window) has no log
            ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(_length_label(length))
        ax.set_xlabel("budget ratio r")
        ax.set_ylabel("accuracy (mean over tasks)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def _swept_name(label: str, role: str, ratio: float) -> str:
    """``label`` with the ratio of its ``role`` part as ``@r``: the KV part is the first after
    the prefill's that ends in ``@ratio``, the decode part the last (`sweep_args` joins
    prefill+kv+decode+precision with "+")."""
    parts = label.split("+")
    suffix = f"@{ratio:g}"
    found = [i for i, part in enumerate(parts) if i > 0 and part.endswith(suffix)]
    if not found:  # a label of the user's own: the config still tells the lines apart
        return f"{label} ({role} ratio r)"
    i = found[0] if role == "kv" else found[-1]
    parts[i] = parts[i].removesuffix(suffix) + "@r"
    return "+".join(parts)


def plot_fidelity(result: dict, path: Path) -> None:
    """Heatmaps (layer x query head) of attention recall and relative output error per method."""
    methods = list(result["methods"])
    fig, axes = _figure(len(methods), 2, width=3.6, height=3.2)
    for col, method in enumerate(methods):
        r = result["methods"][method]
        for row, (metric, cmap, vmax) in enumerate(
            (("recall", "viridis", 1.0), ("rel_l2", "magma", None))
        ):
            ax = axes[row, col]
            image = ax.imshow(
                r[metric], aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest"
            )
            ax.set_title(f"{method}: {metric} (mean {r[f'mean_{metric}']:.3f})", fontsize=9)
            ax.set_xlabel("query head")
            ax.set_ylabel("layer")
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{result['model']}, {result['task']}, {result['num_tokens']} tokens")
    fig.savefig(path, dpi=120)
