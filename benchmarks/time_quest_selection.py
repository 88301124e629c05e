"""Where Quest's selection time goes on the GPU: the page scores, the top-pages kernel, and the
whole `Quest.select` (with its budget arithmetic), on the decode bench's Llama-3-8B caches
(8 KV heads, head_dim 128, pages of 16, 1/16 of the tokens), with the page summaries in bfloat16
(as the cache keeps them) read through the page table, and in float32 for comparison; the top
pages also through variants of `attnsieve.kernels.page_select` given by path, checked equal to the
current module. CUDA-graph medians, L2 flushed.

    PYTHONPATH=. python3 benchmarks/time_quest_selection.py [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
from types import ModuleType

import torch

from attnsieve.api import quest_page_scores, select_pages
from attnsieve.bench.common import graph_ms
from attnsieve.bench.decode import LLAMA3_8B_DECODE, make_cache, quest_pages
from attnsieve.cache_reference import round_bf16
from benchmarks.check_masked_cost import load


def time_shape(b: int, n: int, variants: dict[str, ModuleType]) -> dict[str, float]:
    c = make_cache(b, n, LLAMA3_8B_DECODE)
    pages, table = c.paged["k_pages"].float(), c.paged["page_table"]
    kmin, kmax = pages.amin(1), pages.amax(1)  # (pool pages, D)
    low, high = round_bf16(kmin, up=False), round_bf16(kmax, up=True)
    count = torch.full((b, 8), n // 16, dtype=torch.int32, device="cuda")
    keep = torch.full((b, 8), n // 256, dtype=torch.int64, device="cuda")
    score = quest_page_scores(c.q, low, high, table, count)
    select = quest_pages(16)  # builds its page view on the first (warm-up) call
    expected = select_pages(score, keep, n // 256)
    others = {}
    for name, module in variants.items():
        got = module.select_pages(score, keep, n // 256)
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True)), name
        others[f"top pages {name}"] = graph_ms(
            lambda m=module: m.select_pages(score, keep, n // 256), 30
        )
    return {
        "scores fp32": graph_ms(lambda: quest_page_scores(c.q, kmin, kmax, table, count), 30),
        "scores": graph_ms(lambda: quest_page_scores(c.q, low, high, table, count), 30),
        "top pages": graph_ms(lambda: select_pages(score, keep, n // 256), 30),
        **others,
        "Quest.select": graph_ms(lambda: select(c.q, c), 30),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=PATH of a module")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, path = spec.split("=", 1)
        variants[name] = load(f"page_select_{name}", path)
    for b, n in ((1, 32768), (1, 131072), (8, 32768), (8, 131072)):
        times = time_shape(b, n, variants)
        print(f"B={b} L={n:>6}: " + ", ".join(f"{k} {v * 1e3:.1f} us" for k, v in times.items()))


if __name__ == "__main__":
    main()
