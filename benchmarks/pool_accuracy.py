"""Pool `attnsieve eval` runs of several seeds into one accuracy table, paired sample by sample.

At 20 samples a cell one sample is 5 points, so a "within N points of dense" target measured on
one seed mostly measures which samples were drawn. This reads the results.json of runs that share
methods and tasks but differ in ``--seed``, pairs each method's score on a sample with the
reference method's on the same sample (of one model, dtype and tasks' version), and prints, per
length and task: each method's accuracy pooled over every seed, its difference from the reference
in points, the samples it answers better / worse than the reference, and the spread of the
per-seed differences. A method's cells must share the model, dtype, tasks' version and config of
every run, and the reference's its model, dtype and tasks' version; a run given twice, or two
runs of one seed (the same samples counted twice), are refused.

    PYTHONPATH=. python3 benchmarks/pool_accuracy.py RUN_DIR... [--reference dense] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from attnsieve.eval.harness import paired_difference

_CELL_FIELDS = ("length", "task", "method", "seed", "samples", "scores")
# what makes two runs' cells of one method, length and task the same measurement
_SAME = ("model", "model_source", "dtype", "tasks_version", "config")
# what makes two methods' cells of one length, task and seed hold the same samples, measured alike
_PAIRED = _SAME[:-1]


def load_cells(paths: list[str]) -> list[dict]:
    """Every run's cells, each with its file under "run", its model's source (path or Hub id,
    from the run's header) under "model_source" and the version of its samples (`TASKS_VERSION`,
    read from its key; None before there was one) under "tasks_version"."""
    cells, files = [], set()
    for path in paths:
        file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise ValueError(f"{path}: no results.json there")
        if file.resolve() in files:
            raise ValueError(f"{path}: the run {file} is given twice")
        files.add(file.resolve())
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: not JSON ({error})") from None
        run = data.get("cells") if isinstance(data, dict) else None
        if not isinstance(run, list) or not all(
            isinstance(c, dict) and all(f in c for f in _CELL_FIELDS) for c in run
        ):
            raise ValueError(
                f'{file}: expected the results.json of attnsieve eval, a "cells" list of cells '
                f"with {list(_CELL_FIELDS)}"
            )
        source = data.get("model_source")
        cells += [{**c, "run": str(file), "model_source": source, "tasks_version": _version(c)}
                  for c in run]  # fmt: skip
    return cells


def _version(cell: dict) -> int | None:
    """The `TASKS_VERSION` in a cell's resume key (None: a cell from before it, or no key)."""
    found = re.search(r"\|tasks-v(\d+)\|", str(cell.get("key", "")))
    return int(found[1]) if found else None


def pool(cells: list[dict], reference: str) -> list[dict]:
    """One row per (length, task, method other than the reference), in the cells' order. Cells of
    one (length, task, method) that differ in model, dtype, tasks' version or config, cells of
    one (length, task) that differ in model, dtype or tasks' version (paired, their samples would
    differ), or two of one seed (the same samples counted twice), are refused, naming their
    runs."""
    scores: dict[tuple, dict[tuple, float]] = defaultdict(dict)  # (length, task, method) -> ...
    first: dict[tuple, dict] = {}  # (length, task, method) -> its first cell
    by_seed: dict[tuple, dict] = {}  # (length, task, method, seed) -> its cell
    paired: dict[tuple, dict] = {}  # (length, task) -> its first cell, of any method
    for cell in cells:
        where = cell["length"], cell["task"], cell["method"]
        mine, other = scores[where], first.setdefault(where, cell)
        differ = [field for field in _SAME if cell.get(field) != other.get(field)]
        if differ:
            raise ValueError(
                f"runs {other.get('run')} and {cell.get('run')}: {cell['method']} at "
                f"{cell['length']} on {cell['task']} differs in {', '.join(differ)}; pool runs "
                "of one model, dtype, tasks' version and config"
            )
        other = paired.setdefault((cell["length"], cell["task"]), cell)
        differ = [field for field in _PAIRED if cell.get(field) != other.get(field)]
        if differ:
            raise ValueError(
                f"runs {other.get('run')} and {cell.get('run')}: {other['method']} and "
                f"{cell['method']} at {cell['length']} on {cell['task']} differ in "
                f"{', '.join(differ)}; pool runs of one model, dtype and tasks' version"
            )
        other = by_seed.setdefault((*where, cell["seed"]), cell)
        if other is not cell:
            raise ValueError(
                f"runs {other.get('run')} and {cell.get('run')}: both hold seed {cell['seed']} of "
                f"{cell['method']} at {cell['length']} on {cell['task']}; pool runs of "
                "different --seed"
            )
        for i, score in enumerate(cell["scores"]):
            mine[cell["seed"], cell["samples"], i] = score
    rows = []
    for (length, task, method), mine in scores.items():
        base = scores.get((length, task, reference))
        if method == reference or base is None:
            continue
        shared = sorted(mine.keys() & base.keys())
        if not shared:
            continue
        seeds = sorted({sample[0] for sample in shared})
        seed_points = [
            paired_difference(*([d[s] for s in shared if s[0] == seed] for d in (mine, base)))[0]
            for seed in seeds
        ]
        points, better, worse = paired_difference(
            [mine[s] for s in shared], [base[s] for s in shared]
        )
        rows.append(
            {
                "length": length,
                "task": task,
                "method": method,
                "samples": len(shared),
                "seeds": seeds,
                "reference_accuracy": statistics.fmean(base[s] for s in shared),
                "accuracy": statistics.fmean(mine[s] for s in shared),
                "points": points,
                "better": better,
                "worse": worse,
                "seed_points": seed_points,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="eval output folders or their results.json")
    parser.add_argument("--reference", default="dense", help="the method others are paired with")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        rows = pool(load_cells(args.runs), args.reference)
        if not rows:
            raise ValueError(f"no method shares samples with {args.reference!r}")
    except (ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"| length | task | method | samples | {args.reference} | method | points | better / worse "
        "| per seed (points) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        seeds = " / ".join(f"{p:+.0f}" for p in r["seed_points"])
        print(
            f"| {r['length']} | {r['task']} | {r['method']} | {r['samples']} | "
            f"{r['reference_accuracy']:.3f} | {r['accuracy']:.3f} | {r['points']:+.1f} | "
            f"{r['better']} / {r['worse']} | {seeds} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
