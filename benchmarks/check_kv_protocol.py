"""Why KV policies fail retrieval under kvpress's protocol on SmolLM2: the same samples with the
question prefilled after compression (kvpress, what ``attnsieve eval`` does) and before it (the
policy's observation window then holds the question), and the share of layer-heads that kept the
needle's tokens under the first. CPU is enough at 2K.

    PYTHONPATH=. python3 benchmarks/check_kv_protocol.py --policy snapkv --ratio 0.25
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.eval.harness import split_question
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import answer_budget, make_samples
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.generate import eos_token_ids, generate


def needle_kept(paged, ids: list[int], target: list[int]) -> float | None:
    """Share of (layer, KV head) pairs whose cache holds every token of the first ``target``."""
    starts = [i for i in range(len(ids) - len(target) + 1) if ids[i : i + len(target)] == target]
    if not starts:
        return None
    want = torch.arange(starts[0], starts[0] + len(target), device=paged.device)
    kept = []
    for layer in range(paged.num_layers):
        positions = paged._gather(paged.layers[layer])[2][0]  # (H_kv, L), -1 past a head's end
        kept.append((positions[:, :, None] == want).any(1).all(-1).float())
    return float(torch.cat(kept).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="snapkv")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--tasks", default="passkey,niah_single")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    model, tok, _ = load_model("smollm2", device=args.device, dtype=dtype)
    eos = eos_token_ids(model, tok)
    config = AttentionConfig(
        prefill="dense", kv={"method": args.policy, "ratio": args.ratio}, min_prefill_length=1
    )
    handle = patch(model, config, cost=None)
    with handle:
        for task in args.tasks.split(","):
            samples = make_samples(task, tok, args.length, args.samples, 0)
            scores, kept = {"question after": 0.0, "question before": 0.0}, []
            for s in samples:
                ids = torch.tensor([list(tok.encode(s.prompt))], device=model.device)
                context = len(tok.encode(split_question(s.prompt)[0]))
                for protocol in scores:
                    split = context if protocol == "question after" else ids.shape[1]
                    tokens, *_ = generate(
                        model, ids, answer_budget(tok, s.target), ids.shape[1], eos, handle.stats,
                        handle.new_cache(), split, handle.compress,
                    )  # fmt: skip
                    text = tok.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
                    scores[protocol] += s.score(text) / len(samples)
                    if protocol == "question after":
                        target = tok.encode(s.target, add_special_tokens=False)
                        kept.append(needle_kept(handle.session.paged, ids[0].tolist(), target))
            print(f"{args.policy}@{args.ratio:g} {task} {args.length}: accuracy {scores}; "
                  f"needle kept whole in layer-heads (question after): {kept}")  # fmt: skip


if __name__ == "__main__":
    main()
