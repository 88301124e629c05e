"""Change of attnsieve's rows (low-precision ones too) between two `attnsieve bench kernels` JSON
files (a baseline and a rerun): raw, and normalised by FlexAttention's time on the same row of each
run, which cancels drift between machines and sessions (Flex's kernel did not change between them).

    python3 benchmarks/compare_kernels.py BASELINE.json NEW.json [--min-ms 1.0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(path: Path) -> dict[tuple, dict]:
    """bf16 rows by (N, method, density), low-precision rows with their precision in the method."""
    data = json.loads(path.read_text())
    found = {(r["N"], r["method"], r["density_target"]): r for r in data["rows"]}
    for r in data.get("precision_rows", []):
        found[(r["N"], f"{r['method']} {r['precision']}", r["density_target"])] = r
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--min-ms", type=float, default=0.0, help="skip rows faster than this")
    args = parser.parse_args()
    base, new = rows(args.baseline), rows(args.new)
    header = ("N", "method", "density", "base ms", "new ms", "raw", "vs Flex")
    print("{:>7} {:22} {:>7} {:>9} {:>9} {:>7} {:>8}".format(*header))
    for key in sorted(new, key=lambda k: (k[0], k[1], k[2] or 1.0)):
        n, method, density = key
        if not method.startswith("attnsieve") or key not in base:
            continue
        old, cur = base[key]["ms"], new[key]["ms"]
        if old < args.min_ms:
            continue
        flex = (n, "flex", density)
        normalised = ""
        if flex in base and flex in new:
            normalised = f"{100 * ((cur / new[flex]['ms']) / (old / base[flex]['ms']) - 1):+.1f}%"
        print(f"{n:7d} {method:22} {density or 1.0:7.2f} {old:9.3f} {cur:9.3f} "
              f"{100 * (cur / old - 1):+6.1f}% {normalised:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
