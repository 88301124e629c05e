"""How far attnsieve's kernel, computing every block, moves SmolLM2's last-position logits from
stock SDPA's at long context: the floor under a sparse plan's drift.

`bench e2e` read a relative drift of 0.74 for flexprefill at 1M tokens (YaRN ×128) and 0.13 at
512K (×64), while `eval --fidelity` found its plans as faithful per layer at both (session 38).
Here `bench e2e`'s prompt runs once through stock SDPA and once patched with the full-budget layout
of its correctness check (a streaming window over the whole prompt; cost model and CUDA graphs
off), so that only the kernels' bf16 rounding differs, and patched with each planner of
``--planners`` (flexprefill: the drift to compare). Prints one line per run, with the relative
error of the last position's hidden state after each decoder layer (where the drift grows). Its
seconds are of one eager forward each, the full-budget one including the kernel's tuning for
lengths past 128K (the warm-ups run 4096 tokens): not speed measurements.

    ATTNSIEVE_SMOLLM2_GGUF=PATH PYTHONPATH=. python3 benchmarks/check_full_budget_drift.py \\
        --runs 524288:64,1048576:128
"""

import argparse
import time

import torch

from attnsieve.bench.common import next_token_kl, rel_err
from attnsieve.bench.e2e import prompt_ids
from attnsieve.eval.models import load_model
from attnsieve.integrations import AttentionConfig, patch


def last_logits(model, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """float32 last-position logits of one forward, the last position's hidden state after each
    decoder layer, and the forward's seconds."""
    hidden: list[torch.Tensor] = []

    def keep_last(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        hidden.append(out[:, -1].float().clone())

    hooks = [layer.register_forward_hook(keep_last) for layer in model.model.layers]
    try:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        torch.cuda.synchronize()
    finally:
        for hook in hooks:
            hook.remove()
    return logits, hidden, time.perf_counter() - start


def drift(model, ids: torch.Tensor, config: AttentionConfig, stock: tuple) -> str:
    """How far the model patched with ``config`` (cost model and CUDA graphs off) moves the last
    logits, and the last position's hidden state layer by layer, from ``stock``, and its
    seconds."""
    with patch(model, config, cost=None, graphs=False) as stats:
        ours, hidden, seconds = last_logits(model, ids)
        dense = sum(f is not None for f in stats.fallback_per_layer)
    top1 = "agrees" if torch.equal(ours.argmax(-1), stock[0].argmax(-1)) else "differs"
    layers = " ".join(f"{rel_err(a, b):.2g}" for a, b in zip(hidden, stock[1], strict=True))
    logits, kl = rel_err(ours, stock[0]), next_token_kl(ours, stock[0])
    return (
        f"logits rel err {logits:.3e}, KL {kl:.3e} nats, top token {top1}, {dense} dense layers, "
        f"{seconds:.1f} s; last position's hidden state rel err after each layer: {layers}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="524288:64,1048576:128", help="LENGTH:YARN_FACTOR,...")
    parser.add_argument(
        "--planners", default="flexprefill", help="planners measured beside it ('' for none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the prompt's seed (bench e2e's 0)")
    args = parser.parse_args()
    for run in args.runs.split(","):
        length, factor = run.split(":")
        model, tokenizer, _ = load_model(
            "smollm2", device="cuda", dtype="bfloat16", rope_scale=float(factor)
        )
        ids = prompt_ids(tokenizer, model, int(length), args.seed, torch.device("cuda"))
        full = AttentionConfig(
            prefill={"method": "streaming", "sink_tokens": 0, "window_tokens": ids.shape[1]},
            min_prefill_length=1,
        )
        configs = {"full-budget kernel": full}
        for name in filter(None, args.planners.split(",")):
            configs[name] = AttentionConfig(prefill=name)
        last_logits(model, ids[:, :4096])  # warm-ups: cuDNN's set-up, the kernels' compilation
        for config in configs.values():
            with patch(model, config, cost=None, graphs=False):
                last_logits(model, ids[:, :4096])
        logits, hidden, stock_s = last_logits(model, ids)
        print(f"{ids.shape[1]} tokens, YaRN x{factor}: SDPA {stock_s:.1f} s (eager)", flush=True)
        for label, config in configs.items():
            result = drift(model, ids, config, (logits, hidden))
            print(f"{ids.shape[1]} tokens, {label} vs SDPA: {result}", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
