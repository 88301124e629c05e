"""The share of the cached pages a decode selector reads, measured through `attnsieve eval`.

A selector's ``ratio`` is a token budget. Quest ranks whole pages, so it reads about that share of
each head's pages. Double Sparsity and TidalDecode rank tokens, and a step reads every page that
holds a chosen token (`attnsieve.methods.decode.base.pages_of`), which can be many more pages.
This wraps each selector's ``select`` and counts, over every decode step of every layer that
selects (layers left dense, such as the first ``dense_layers``, are not counted), the pages
returned against the pages each KV head holds. Then it runs ``attnsieve eval`` with the given
arguments, unchanged, and prints one line a selector.

    PYTHONPATH=. python3 benchmarks/decode_read_fraction.py eval --model smollm2 --lengths 4k \\
        --tasks passkey --samples 2 --methods benchmarks/configs/double_sparsity_r16.json
"""

from __future__ import annotations

import sys
from typing import Any

from attnsieve.cli import main
from attnsieve.methods.decode import SELECTORS

READ: dict[str, list[float]] = {}  # selector name -> [pages read, pages held]


def count_reads(cls: type) -> None:
    """Wrap ``cls.select`` to add each call's pages read and held to READ[cls.name]."""
    select = cls.select

    def counted(self: Any, q: Any, view: Any, step: Any) -> Any:
        pages = select(self, q, view, step)
        if pages is not None:
            totals = READ.setdefault(cls.name, [0.0, 0.0])
            totals[0] += pages.count.sum().item()
            totals[1] += view.page_count.sum().item()
        return pages

    cls.select = counted


if __name__ == "__main__":
    for selector in SELECTORS.values():
        count_reads(selector)
    try:
        status = main(sys.argv[1:])
    finally:
        for name, (read, held) in READ.items():
            print(f"{name}: read {read:.0f} of {held:.0f} pages held ({read / held:.3f})")
    sys.exit(status)
