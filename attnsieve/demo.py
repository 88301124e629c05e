"""`attnsieve demo`: what a sparse plan costs and saves, on CPU in under a minute.

Part 1 plans every registered method on synthetic Q/K/V with the head kinds of real LLMs planted
(sinks + local band, vertical lines, slashes, retrieval spans, diffuse) and prints density, the
attention mass each layout keeps and its output error against dense attention. Part 2 loads the
shipped probe model and runs a needle-in-a-haystack task on it, dense vs sparse.
"""

from __future__ import annotations

import argparse
import time

import torch

from attnsieve.eval.fidelity import attention_recall, output_error
from attnsieve.eval.workloads import KINDS, make_workload
from attnsieve.methods import PLANNERS, Planner, get_planner

# small blocks so a CPU-sized sequence still holds enough blocks to be sparse
DEMO_BLOCK = 64
NEEDLES = 3
# The papers size these budgets for 100K-token prompts; at demo length they would keep every block.
DEMO_BUDGETS = {
    "streaming": {"window_tokens": 256},
    "vertical_slash": {"vertical_size": 128, "slash_size": 512},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=2048, help="tokens of the synthetic sequence")
    parser.add_argument("--methods", default=",".join(PLANNERS), help="comma-separated planners")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--probe-lengths", default="1k,2k", help="needle lengths for the probe model part"
    )
    parser.add_argument("--sparse-method", default="flexprefill", help="method of the probe part")


def main(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    work = make_workload(
        KINDS + KINDS[:3], num_kv_heads=4, seq_len=args.length, head_dim=64, seed=args.seed
    )
    print(
        f"synthetic Q/K/V: N={args.length}, 8 query / 4 KV heads, head_dim 64, "
        f"heads {work.head_kinds}"
    )
    print(
        f"paper defaults, {DEMO_BLOCK}-token blocks; budgets scaled to the length: {DEMO_BUDGETS}"
    )
    print(f"{'method':<16}{'density':>9}{'recall':>9}{'rel err':>9}{'plan ms':>9}")
    for name in args.methods.split(","):
        planner = _demo_planner(name)
        start = time.perf_counter()
        layout = planner.plan(work.q, work.k)
        plan_ms = 1e3 * (time.perf_counter() - start)
        recall = float(attention_recall(work.q, work.k, layout).mean())
        error = output_error(work.q, work.k, work.v, layout)["rel_l2_mean"]
        print(f"{name:<16}{layout.density():>9.3f}{recall:>9.3f}{error:>9.3f}{plan_ms:>9.1f}")
    _probe_part(args)
    return 0


def _block_fields(name: str) -> dict[str, int]:
    fields = PLANNERS[name].__dataclass_fields__ if name in PLANNERS else {}
    return {f: DEMO_BLOCK for f in ("block_q", "block_k", "block_size") if f in fields}


def _demo_planner(name: str) -> Planner:
    return get_planner(name, **_block_fields(name), **DEMO_BUDGETS.get(name, {}))


def _probe_part(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from attnsieve.eval.harness import load_model, parse_length, run_cell
    from attnsieve.eval.tasks import make_samples
    from attnsieve.integrations import AttentionConfig

    model, tokenizer, _ = load_model("probe", "cpu", "float32")
    print(f"\nprobe model (attnsieve/eval/probe), needle in a haystack, {NEEDLES} samples per cell")
    print(f"{'length':<8}{'method':<16}{'accuracy':>9}{'density':>9}{'prefill s':>10}")
    methods = ("dense", args.sparse_method)
    lengths = [parse_length(x) for x in args.probe_lengths.split(",")]
    with tqdm(total=len(lengths) * len(methods) * NEEDLES, desc="probe", leave=False) as bar:
        for length in lengths:
            samples = make_samples("niah_single", tokenizer, length, NEEDLES, seed=args.seed)
            for method in methods:
                config = AttentionConfig(
                    prefill=method,
                    prefill_kwargs=_block_fields(method),
                    min_prefill_length=1,
                )
                cell = run_cell(model, tokenizer, samples, config, bar)
                density = cell["density"] if cell["density"] is not None else float("nan")
                bar.write(
                    f"{length:<8}{method:<16}{cell['accuracy']:>9.2f}{density:>9.3f}"
                    f"{cell['prefill_seconds']:>10.2f}"
                )
