"""How much of the exact attention the pages Quest picks hold on SmolLM2, against the best pages
any page selector could pick (CPU, the real model).

For one sample of each task at ``--length`` tokens, each layer from Quest's first sparse one
(layer 2) takes the queries of the prompt's last ``--queries`` positions as decode queries, each
over the keys before it, in 16-token pages. Every KV head keeps ``--ratio`` of its pages (the
current one always), ranked three ways:

- ``quest``: Quest's bound, max over the GQA group (`attnsieve.api.quest_page_scores`);
- ``quest_group_softmax``: the same bounds per query head, each head's softmax over its pages,
  summed over the group (the aggregation TidalDecode and Double Sparsity use for exact scores);
- ``oracle``: each page's exact attention mass summed over the group.

The recall of a query head is the share of its exact attention mass on the kept pages. The
oracle's recall bounds every page selector at this budget.

    PYTHONPATH=. python3 benchmarks/quest_page_recall.py --length 4096 --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from attnsieve.api import quest_page_scores
from attnsieve.eval.calibrate import capture_qk
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import prefill_sample

PAGE = 16
FIRST_SPARSE_LAYER = 2  # Quest's dense_layers default
RANKINGS = ("quest", "quest_group_softmax", "oracle")


def page_recall(q: torch.Tensor, k: torch.Tensor, ratio: float) -> dict[str, torch.Tensor]:
    """Recall (H_q,) of each ranking for query q (H_q, D) over keys k (H_kv, N, D)."""
    hk, n, d = k.shape
    g = q.shape[0] // hk
    p = math.ceil(n / PAGE)
    valid = (torch.arange(p * PAGE) < n).view(p, PAGE, 1)
    keys = torch.nn.functional.pad(k, (0, 0, 0, p * PAGE - n)).view(hk, p, PAGE, d)
    low = torch.where(valid, keys, math.inf).amin(2)
    high = torch.where(valid, keys, -math.inf).amax(2)
    grouped = q.view(hk, g, d)
    probs = (grouped @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # (H_kv, g, N)
    mass = torch.nn.functional.pad(probs, (0, p * PAGE - n)).view(hk, g, p, PAGE).sum(-1)
    table = torch.arange(hk * p, dtype=torch.int32).view(1, hk, p)
    count = torch.full((1, hk), p, dtype=torch.int32)
    bounds = torch.maximum(grouped[:, :, None] * low[:, None], grouped[:, :, None] * high[:, None])
    last = torch.full((hk, 1), math.inf)
    scores = {
        "quest": quest_page_scores(q[None], low.view(-1, d), high.view(-1, d), table, count)[0],
        "quest_group_softmax": torch.cat(
            [(bounds.sum(-1) / math.sqrt(d)).softmax(-1).sum(1)[:, :-1], last], 1
        ),
        "oracle": torch.cat([mass.sum(1)[:, :-1], last], 1),
    }
    width = max(1, math.ceil(ratio * p))
    out = {}
    for name, score in scores.items():
        top = score.topk(width, -1).indices
        kept = torch.zeros(hk, p, dtype=torch.bool).scatter_(-1, top, True)
        out[name] = (mass * kept[:, None]).sum(-1).flatten()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--ratio", type=float, default=0.125)
    parser.add_argument("--queries", type=int, default=16, help="decode queries per sample")
    parser.add_argument("--tasks", default="niah_single,passkey,niah_multikey")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model, tokenizer, _ = load_model("smollm2", device="cpu", dtype=torch.float32)
    per_layer: dict[int, dict[str, list[torch.Tensor]]] = {}
    for seed, task in enumerate(args.tasks.split(",")):
        text = prefill_sample(task, tokenizer, args.length, seed).prompt
        ids = torch.tensor([tokenizer.encode(text)])
        for layer, (q, k) in capture_qk(model, ids).items():
            if layer < FIRST_SPARSE_LAYER:
                continue
            n = q.shape[2]
            for pos in range(n - args.queries, n):
                recall = page_recall(q[0, :, pos].float(), k[0, :, : pos + 1].float(), args.ratio)
                for name, r in recall.items():
                    per_layer.setdefault(layer, {}).setdefault(name, []).append(r)
    summary = {}
    for name in RANKINGS:
        every = torch.cat([torch.cat(v[name]) for v in per_layer.values()])
        summary[name] = {
            "mean": round(float(every.mean()), 4),
            "p10": round(float(every.quantile(0.1)), 4),
            "min": round(float(every.min()), 4),
            "per_layer_mean": {
                i: round(float(torch.cat(v[name]).mean()), 4) for i, v in per_layer.items()
            },
        }
        print(f"{name:20s} mean {summary[name]['mean']:.4f}  p10 {summary[name]['p10']:.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "page_size": PAGE, "summary": summary}
    (out / "quest_page_recall.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'quest_page_recall.json'}")


if __name__ == "__main__":
    main()
