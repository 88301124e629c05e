"""Pool `attnsieve eval` runs of several seeds into one accuracy table, paired sample by sample.

At 20 samples a cell one sample is 5 points, so a "within N points of dense" target measured on
one seed mostly measures which samples were drawn. This reads the results.json of runs that share
methods and tasks but differ in ``--seed``, pairs each method's score on a sample with the
reference method's on the same sample, and prints, per length and task: each method's accuracy
pooled over every seed, its difference from the reference in points, the samples it answers
better / worse than the reference, and the spread of the per-seed differences.

    PYTHONPATH=. python3 benchmarks/pool_accuracy.py RUN_DIR... [--reference dense] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from attnsieve.eval.harness import paired_difference


def load_cells(paths: list[str]) -> list[dict]:
    cells = []
    for path in paths:
        file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise ValueError(f"{path}: no results.json there")
        cells += json.loads(file.read_text())["cells"]
    return cells


def pool(cells: list[dict], reference: str) -> list[dict]:
    """One row per (length, task, method other than the reference), in the cells' order."""
    scores: dict[tuple, dict[tuple, float]] = defaultdict(dict)  # (length, task, method) -> ...
    for cell in cells:
        mine = scores[cell["length"], cell["task"], cell["method"]]
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
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
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
