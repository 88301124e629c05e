"""Is Quest's page selection the limit on SmolLM2, or its budget? (CPU, the real model.)

For ``--samples`` samples per task at ``--length`` tokens:

1. the stock model's first decode step after the prompt: each layer's attention mass held by
   Quest's pages (`attnsieve.api.quest_page_scores`, top ``--ratio`` of the tokens in
   ``--page-size``-token pages, the pages a KV head's query heads share) against the best pages
   for the same budget (by the true mass of the group) and random pages;
2. the probability of each answer token with the dense answer fed in (teacher forcing) on
   attnsieve's paged cache, for: dense; Quest; the best pages of the same budget ("best": what a
   perfect selector would read); Quest with each head's first page always read ("quest+first",
   the attention sink of StreamingLLM, arXiv 2309.17453; one of the budget's pages); Quest's
   bound ranked per query head, then the best rank of the group ("quest per head"); each query
   head's bounds through a softmax over the pages, summed over the group ("quest group softmax").
   The random pages are one draw for every head and sample: their mass swings with whether the
   draw holds the first page (the attention sink).

``--ablate N``: on sample N (of ``--samples``) of the first task, Quest in one layer at a time and
the best pages in every other: which layers' selections cost the answer.

    PYTHONPATH=. python3 benchmarks/check_quest_selection.py --out DIR [--samples 4 --length 2048]
        [--page-size 8 --variants quest,best]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor

from attnsieve.api import quest_page_scores, select_pages
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import encode, make_samples
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.transformers import (
    cache_keyword,
    handle_of,
    observe_attention,
    output_cache,
)
from attnsieve.methods.decode.base import last_page
from attnsieve.methods.decode.quest import Quest
from attnsieve.views import Pages

quest_select = Quest.select


def page_mass(q, k, scale, ratio: float, page: int) -> tuple[float, float, float]:
    """Mean over query heads of the attention mass held by Quest's, the best and random pages."""
    b, hq, _, d = q.shape
    hk, n = k.shape[1], k.shape[2]
    g, pages, pad = hq // hk, -(-n // page), -n % page
    probs = ((q.view(b, hk, g, d) @ k.transpose(-1, -2)) * (scale or d**-0.5)).softmax(-1)
    mass = torch.nn.functional.pad(probs, (0, pad)).view(b, hk, g, pages, page).sum(-1)
    keys = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(b, hk, pages, page, d)
    valid = (torch.arange(pages * page) < n).view(1, 1, pages, page, 1)
    kmin = keys.masked_fill(~valid, float("inf")).amin(3)
    kmax = keys.masked_fill(~valid, float("-inf")).amax(3)
    count = torch.full((b, hk), pages, dtype=torch.int32)
    table = torch.arange(b * hk * pages, dtype=torch.int32).view(b, hk, pages)  # row per page
    score = quest_page_scores(q[:, :, 0], kmin.view(-1, d), kmax.view(-1, d), table, count)
    width = max(1, int(ratio * n) // page)

    def held(idx):
        return mass.gather(-1, idx[:, :, None, :].expand(-1, -1, g, -1)).sum(-1).mean().item()

    chosen = score.topk(width, -1).indices
    best = mass.sum(2).topk(width, -1).indices
    rand = torch.randperm(pages, generator=torch.Generator().manual_seed(0))[:width]
    return held(chosen), held(best), held(rand.expand(b, hk, -1))


def best_pages(self: Quest, q: Tensor, view, step):
    """Quest's budget spent on the pages of largest true attention mass of the group."""
    if (width := self.width(view)) is None:
        return None
    p = view.num_pages
    keys = view.keys().float()  # (B, H_kv, P, page, D)
    b, hk, _, page, d = keys.shape
    logits = torch.einsum("bhgd,bhptd->bhgpt", q.float().view(b, hk, -1, d), keys)
    valid = (torch.arange(p * page) < view.lengths[..., None]).view(b, hk, 1, p, page)
    logits = logits.masked_fill(~valid, float("-inf")) * (view.scale or d**-0.5)
    mass = logits.flatten(-2).softmax(-1).view_as(logits).sum((2, 4))
    score = mass.masked_fill(~valid.any(-1).squeeze(2), float("-inf"))
    score = score.masked_fill(last_page(view), float("inf"))
    return Pages(*select_pages(score, self.page_targets(view), width))


def quest_with_first_page(self: Quest, q: Tensor, view, step):
    """Quest's pages, with each head's first page (the attention sink) ranked first."""
    if (width := self.width(view)) is None:
        return None
    score = quest_page_scores(
        q, view.key_min_pool, view.key_max_pool, view.page_table, view.page_count
    )
    first = torch.arange(score.shape[-1], device=score.device) == 0
    score = score.masked_fill(first, float("inf"))
    return Pages(*select_pages(score, self.page_targets(view), width))


def head_bounds(q: Tensor, view) -> tuple[Tensor, Tensor]:
    """Each query head's Quest bound of every page, float32 (B, H_kv, g, P), -inf past a head's
    pages, and which pages are valid, bool (B, H_kv, P)."""
    key_min, key_max = view.bounds()  # (B, H_kv, P, D), +-inf past the pages
    b, hk, p, d = key_min.shape
    qg = q.float().view(b, hk, -1, 1, d)
    valid = torch.arange(p) < view.page_count[..., None]
    lo, hi = key_min.nan_to_num(posinf=0.0)[:, :, None], key_max.nan_to_num(neginf=0.0)[:, :, None]
    bound = torch.maximum(qg * lo, qg * hi).sum(-1).masked_fill(~valid[:, :, None], -torch.inf)
    return bound, valid


def quest_per_head(self: Quest, q: Tensor, view, step):
    """Quest's bound ranked per query head: each head's bounds less that head's largest, the
    group's score the largest of those (a page near the top for any head, whatever the scale of
    that head's logits), instead of the largest raw bound of the group."""
    if (width := self.width(view)) is None:
        return None
    bound, valid = head_bounds(q, view)
    score = (bound - bound.amax(-1, keepdim=True)).amax(2).masked_fill(~valid, -torch.inf)
    score = score.masked_fill(last_page(view), torch.inf)
    return Pages(*select_pages(score, self.page_targets(view), width))


def quest_group_softmax(self: Quest, q: Tensor, view, step):
    """Quest's bound as each query head's logit of a page: a softmax over the pages per query
    head (the layer's scale), summed over the group, as Double Sparsity sums a group's
    approximate attention here (`top_group_attention`), instead of the largest raw bound: a head
    whose bounds are large everywhere no longer decides the group's pages alone."""
    if (width := self.width(view)) is None:
        return None
    bound, valid = head_bounds(q, view)
    probs = (bound * (view.scale or view.head_dim**-0.5)).softmax(-1)
    score = probs.sum(2).masked_fill(~valid, -torch.inf)
    score = score.masked_fill(last_page(view), torch.inf)
    return Pages(*select_pages(score, self.page_targets(view), width))


def only_in_layer(layer: int) -> Callable:
    """Quest's own pages in ``layer``, the best pages in every other."""

    def select(self: Quest, q: Tensor, view, step):
        return (quest_select if view.layer == layer else best_pages)(self, q, view, step)

    return select


VARIANTS = {
    "quest": quest_select,
    "best": best_pages,
    "quest+first": quest_with_first_page,
    "quest per head": quest_per_head,
    "quest group softmax": quest_group_softmax,
}


@torch.no_grad()
def teacher_forced(
    model, ids: Tensor, answer: list[int], decode, select=None, page_size: int = 16
) -> list[float]:
    """p(answer token | prompt + the answer's previous tokens), one per answer token."""
    key = cache_keyword(model)
    config = AttentionConfig(prefill="dense", decode=decode, paged_cache=True, page_size=page_size)
    with mock.patch.object(Quest, "select", select or quest_select), patch(model, config):
        cache = handle_of(model).new_cache()
        logits = model(input_ids=ids, **{key: cache}, use_cache=True).logits[0, -1]
        probs = [float(logits.softmax(-1)[answer[0]])]
        for t_in, t_next in zip(answer[:-1], answer[1:], strict=True):
            step = model(input_ids=torch.tensor([[t_in]]), **{key: cache}, use_cache=True)
            probs.append(float(step.logits[0, -1].softmax(-1)[t_next]))
    return [round(p, 3) for p in probs]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default="passkey,niah_single")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=0.125)
    parser.add_argument("--ablate", type=int, default=None, help="sample of the per-layer ablation")
    parser.add_argument("--page-size", type=int, default=16, help="tokens a page (Quest's: 16)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="selectors to compare")
    args = parser.parse_args()
    model, tok, _ = load_model("smollm2", device="cpu", dtype="float32")
    quest = {"method": "quest", "ratio": args.ratio}
    result = {"length": args.length, "ratio": args.ratio, "page_size": args.page_size, "tasks": {}}
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    for task in args.tasks.split(","):
        result["tasks"][task] = []
        for sample in make_samples(task, tok, args.length, args.samples, 0):
            ids = torch.tensor([encode(tok, sample.prompt)])
            out = model(input_ids=ids, use_cache=True)
            caught: dict[int, tuple] = {}

            def keep(module, q, k, v, scale, caught=caught):
                caught[module.layer_idx] = (q, k, scale)

            with observe_attention(model, keep):
                step = {cache_keyword(model): output_cache(out)}
                model(input_ids=out.logits[:, -1:].argmax(-1), **step)
            layers = [page_mass(*caught[i], args.ratio, args.page_size) for i in sorted(caught)]
            mean = [sum(x[i] for x in layers) / len(layers) for i in range(3)]
            answer = tok.encode(" " + sample.answers[0], add_special_tokens=False)
            runs = {"dense": teacher_forced(model, ids, answer, None)}
            for name, select in variants.items():
                runs[name] = teacher_forced(model, ids, answer, quest, select, args.page_size)
            result["tasks"][task].append({
                "answer": sample.answers[0], "tokens": ids.shape[1],
                "mass_quest_best_random": layers, "mean": mean, "p_answer_teacher_forced": runs,
            })  # fmt: skip
            print(f"{task} ({sample.answers[0]}, {ids.shape[1]} tokens): mass held: Quest "
                  f"{mean[0]:.3f}, best pages {mean[1]:.3f}, random {mean[2]:.3f}")  # fmt: skip
            for label, probs in runs.items():
                print(f"  p(answer token | dense answer so far), {label:>11}: {probs}")
    if args.ablate is not None:
        task = args.tasks.split(",")[0]
        sample = make_samples(task, tok, args.length, args.samples, 0)[args.ablate]
        ids = torch.tensor([encode(tok, sample.prompt)])
        answer = tok.encode(" " + sample.answers[0], add_special_tokens=False)
        ablation = {}
        for layer in range(Quest.dense_layers, model.config.num_hidden_layers):
            ablation[layer] = teacher_forced(
                model, ids, answer, quest, only_in_layer(layer), args.page_size
            )
            print(f"  Quest only in layer {layer:>2}, best pages elsewhere: {ablation[layer]}")
        result["ablation"] = {"task": task, "sample": args.ablate, "p_by_layer": ablation}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quest_selection.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
