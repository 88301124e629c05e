"""Is Quest's page selection the limit on SmolLM2, or something after it? (CPU, the real model.)

For one sample per task at ``--length`` tokens: the stock model's first decode step after the
prompt, each layer's attention mass held by Quest's pages (`attnsieve.api.quest_page_scores`,
top ``--ratio`` of the tokens in 16-token pages, the pages a KV head's query heads share)
against the best pages for the same budget (by the true mass of the group) and random pages.
Then greedy answers, and the target's probability at each answer token with the dense answer
fed in (teacher forcing), dense against Quest on attnsieve's paged cache.

    PYTHONPATH=. python3 benchmarks/check_quest_selection.py --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnsieve.api import quest_page_scores
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import encode, make_samples
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.transformers import cache_keyword, handle_of, observe_attention

PAGE = 16


def page_mass(q, k, scale, ratio: float) -> tuple[float, float, float]:
    """Mean over query heads of the attention mass held by Quest's, the best and random pages."""
    b, hq, _, d = q.shape
    hk, n = k.shape[1], k.shape[2]
    g, pages, pad = hq // hk, -(-n // PAGE), -n % PAGE
    probs = ((q.view(b, hk, g, d) @ k.transpose(-1, -2)) * (scale or d**-0.5)).softmax(-1)
    mass = torch.nn.functional.pad(probs, (0, pad)).view(b, hk, g, pages, PAGE).sum(-1)
    keys = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(b, hk, pages, PAGE, d)
    valid = (torch.arange(pages * PAGE) < n).view(1, 1, pages, PAGE, 1)
    kmin = keys.masked_fill(~valid, float("inf")).amin(3)
    kmax = keys.masked_fill(~valid, float("-inf")).amax(3)
    count = torch.full((b, hk), pages, dtype=torch.int32)
    score = quest_page_scores(q[:, :, 0], kmin, kmax, count)
    width = max(1, int(ratio * n) // PAGE)

    def held(idx):
        return mass.gather(-1, idx[:, :, None, :].expand(-1, -1, g, -1)).sum(-1).mean().item()

    chosen = score.topk(width, -1).indices
    best = mass.sum(2).topk(width, -1).indices
    rand = torch.randperm(pages, generator=torch.Generator().manual_seed(0))[:width]
    return held(chosen), held(best), held(rand.expand(b, hk, -1))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default="passkey,niah_single")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--ratio", type=float, default=0.125)
    args = parser.parse_args()
    model, tok, _ = load_model("smollm2", device="cpu", dtype="float32")
    key = cache_keyword(model)
    result = {"length": args.length, "ratio": args.ratio, "tasks": {}}
    for task in args.tasks.split(","):
        sample = make_samples(task, tok, args.length, 1, 0)[0]
        ids = torch.tensor([encode(tok, sample.prompt)])
        out = model(input_ids=ids, use_cache=True)
        caught: dict[int, tuple] = {}

        def keep(module, q, k, v, scale, caught=caught):
            caught[module.layer_idx] = (q, k, scale)

        with observe_attention(model, keep):
            model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values)
        layers = [page_mass(*caught[i], args.ratio) for i in sorted(caught)]
        answer = tok.encode(" " + sample.answers[0], add_special_tokens=False)
        runs = {}
        for label, decode in (("dense", None), ("quest", {"method": "quest", "ratio": args.ratio})):
            config = AttentionConfig(prefill="dense", decode=decode, paged_cache=True)
            with patch(model, config):
                cache = handle_of(model).new_cache()
                logits = model(input_ids=ids, **{key: cache}, use_cache=True).logits[0, -1]
                probs = [float(logits.softmax(-1)[answer[0]])]
                for t_in, t_next in zip(answer[:-1], answer[1:], strict=True):
                    step = model(input_ids=torch.tensor([[t_in]]), **{key: cache}, use_cache=True)
                    probs.append(float(step.logits[0, -1].softmax(-1)[t_next]))
            runs[label] = [round(p, 3) for p in probs]
        mean = [sum(x[i] for x in layers) / len(layers) for i in range(3)]
        result["tasks"][task] = {"answer": sample.answers[0], "tokens": ids.shape[1],
                                 "mass_quest_best_random": layers, "mean": mean,
                                 "p_answer_teacher_forced": runs}  # fmt: skip
        print(f"{task}: {ids.shape[1]} tokens, mean mass held: Quest {mean[0]:.3f}, best pages "
              f"{mean[1]:.3f}, random {mean[2]:.3f}")  # fmt: skip
        for label, probs in runs.items():
            print(f"  p(answer token | dense answer so far), {label}: {probs}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quest_selection.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
