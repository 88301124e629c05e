"""Issue 11's decode soak on a real model: 2000 greedy decode steps under StreamingLLM, with the
time of every step, the tokens the heads hold, the cache's held and reserved bytes and the count
of live Python objects. Memory must stay at the budget and the step time flat (a benchmark: the
test suite checks the memory and the objects, never the time). Each step is one call of
`attnsieve.integrations.generate.decode`; with ``--graphs`` (CUDA) the steps between two passes
replay a CUDA graph.

    PYTHONPATH=. python3 benchmarks/soak_decode.py --device cpu --out benchmarks/results/cpu-soak
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from pathlib import Path

import torch

from attnsieve.bench.common import environment
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import make_samples
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.generate import decode
from attnsieve.integrations.transformers import cache_keyword

WINDOW = 200  # steps per summary window: medians of the first and last ones are compared


@torch.no_grad()
def soak(
    model,
    ids: torch.Tensor,
    config: AttentionConfig,
    steps: int,
    graphs: bool = False,
    chunk: int = 1,
) -> list[dict]:
    """Prefill ``ids``, then ``steps`` greedy decode steps on the patched model's paged cache, in
    `decode` calls of ``chunk`` steps: a row per call, its time spread evenly over its steps (a
    call of one step never replays a graph: the step after its eager warm-up is the capture)."""
    keyword = cache_keyword(model)
    handle = patch(model, config, cost=None, graphs=graphs)
    rows: list[dict] = []
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=ids, use_cache=True, **{keyword: cache})
        paged = handle.session.paged
        token = out.logits[:, -1].argmax(-1)
        for step in range(0, steps, chunk):
            new, _, seconds = decode(model, token, cache, min(chunk, steps - step))  # synced
            token = new[-1]
            row = {
                "step": step,
                "ms": 1e3 * seconds / len(new),
                "tokens": int(paged.head_tokens(0).max()),
                "held_bytes": paged.memory_bytes(),
                "reserved_bytes": paged.reserved_bytes(),
            }
            if step // 100 != (step + len(new)) // 100:  # every 100 steps
                gc.collect()
                row["python_objects"] = len(gc.get_objects())
            rows.append(row)
    return rows


def summary(rows: list[dict], budget: int, interval: int) -> dict:
    end = rows[-1]["step"] + 1
    first = [r["ms"] for r in rows if 100 <= r["step"] < 100 + WINDOW]  # past the warm-up
    last = [r["ms"] for r in rows if r["step"] >= end - WINDOW]
    objects = [r["python_objects"] for r in rows if "python_objects" in r]
    settled = [r for r in rows if r["step"] >= interval]  # after the first periodic pass

    def span(key: str, among: list[dict]) -> list[int]:
        return [min(r[key] for r in among), max(r[key] for r in among)]

    return {
        "median_ms_steps_100_300": statistics.median(first),
        "median_ms_last_200": statistics.median(last),
        "last_over_first": statistics.median(last) / statistics.median(first),
        "max_tokens_after_first_pass": max(r["tokens"] for r in settled),
        "bound_tokens": budget + interval,
        "held_bytes_range": span("held_bytes", settled),
        "reserved_bytes_range": span("reserved_bytes", rows),
        "python_objects_first_last": [objects[0], objects[-1]] if objects else None,
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.plot(steps, [r["ms"] for r in rows], lw=0.5, color="tab:blue")
    top.set_ylabel("step time (ms)")
    top.set_ylim(0, 3 * statistics.median(r["ms"] for r in rows))
    top.set_title(title, fontsize=9)
    bottom.plot(steps, [r["tokens"] for r in rows], lw=0.8, color="tab:green", label="tokens held")
    bottom.set_ylabel("tokens held (layer 0)")
    twin = bottom.twinx()
    twin.plot(steps, [r["reserved_bytes"] / 2**20 for r in rows], color="tab:red", lw=0.8)
    twin.set_ylabel("reserved MiB", color="tab:red")
    bottom.set_xlabel("decode step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--prompt-length", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=512, help="StreamingLLM's token budget")
    parser.add_argument("--interval", type=int, default=64, help="kv_interval: steps per pass")
    parser.add_argument("--graphs", action="store_true", help="replay steps from CUDA graphs")
    parser.add_argument("--chunk", type=int, default=1, help="decode steps per call (timed)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.steps < 100 + WINDOW:
        raise SystemExit(f"--steps: expected at least {100 + WINDOW}, got {args.steps}")
    model, tokenizer, name = load_model(args.model, device=args.device)
    sample = make_samples("niah_single", tokenizer, args.prompt_length, 1, 0)[0]
    ids = torch.tensor([list(tokenizer.encode(sample.prompt))], device=model.device)
    kv = {"method": "streaming", "budget": args.budget}
    config = AttentionConfig(prefill="dense", kv=kv, kv_interval=args.interval)
    rows = soak(model, ids, config, args.steps, args.graphs, args.chunk)
    options = [
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in vars(args).items()
        if v is not False
    ]
    result = {
        "command": "PYTHONPATH=. python3 benchmarks/soak_decode.py " + " ".join(options),
        "model": name,
        "prompt_tokens": ids.shape[1],
        "config": {"kv": kv, "kv_interval": args.interval},
        "graphs": args.graphs,
        "environment": environment(model.device),
        "summary": summary(rows, args.budget, args.interval),
        "steps": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    title = f"{name}, StreamingLLM budget {args.budget}, pass every {args.interval} steps, "
    title += f"{ids.shape[1]}-token prompt, {'CUDA graphs, ' if args.graphs else ''}"
    title += result["environment"]["device"]
    plot(rows, out / "soak.png", title)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
