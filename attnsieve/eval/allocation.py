"""The joint choices of `attnsieve.eval.calibrate`, each a multiple-choice knapsack that
`allocate` solves exactly:

- per layer (``granularity="layer"``, ``attnsieve calibrate --per-layer``): each candidate's
  predicted time on a layer by the cost model (`predicted_ms`), and one candidate per layer,
  together the least predicted time whose recall, averaged over layers and heads, reaches the
  target (`per_layer`);
- per head with a mean target (``mean_recall=True``, ``--mean-recall``): one candidate per head,
  together the least computed pairs whose recall, averaged over every layer and head, reaches the
  target (`per_head_mean`), as MoA (arXiv 2406.14909) spreads one budget unevenly over heads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnsieve.integrations.cost import CostModel
from attnsieve.methods.prefill.base import one_plan_for_heads

_RECALL_STEPS = 10_000  # `allocate` counts a row's recall in steps of 1e-4 ...
_MAX_STATES = 2**18  # ... or coarser, so that its table holds at most rows x 2^18 choices


def predicted_ms(
    cost: CostModel,
    candidates: Sequence[tuple[str, dict[str, Any]]],
    density: Tensor,
    q: Tensor,
    k: Tensor,
) -> Tensor:
    """(C,) predicted ms of a layer under each candidate: dense SDPA for "dense", else planning
    replayed from a CUDA graph plus the sparse kernel at the candidate's mean ``density``."""
    b, h_q, n, d = q.shape
    shape = (b, h_q, n, k.shape[2], d)
    return torch.tensor([
        cost.dense_ms(*shape) if name == "dense"
        else cost.planning_ms(name, n, graphed_heads=b * h_q) + cost.sparse_ms(rho, *shape, name)
        for (name, _), rho in zip(candidates, density.tolist(), strict=True)
    ])  # fmt: skip


def per_layer(
    options: list[tuple[int, Tensor, Tensor, Tensor]],
    candidates: Sequence[tuple[str, dict[str, Any]]],
    target_recall: float,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Entries, records and the whole model's summary of the per-layer choice, from each layer's
    (index, predicted ms, mean recall, mean density), each (C,)."""
    ms, recall, density = (torch.stack([o[i] for o in options]) for i in (1, 2, 3))  # (L, C)
    choice, reached = allocate(ms, recall, target_recall)
    layers, stats = {}, {}
    for row, (index, *_) in enumerate(options):
        c = choice[row]
        name, fields = candidates[c]
        layers[str(index)] = {"prefill": None if name == "dense" else {"method": name, **fields}}
        table = {"recall": recall[row], "density": density[row], "ms": ms[row]}
        stats[str(index)] = {
            "recall": float(recall[row, c]),
            "density": float(density[row, c]),
            "predicted_ms": float(ms[row, c]),
            "by_candidate": {key: t.tolist() for key, t in table.items()},
        }
    picked = torch.tensor(choice)[:, None]
    summary = {
        "mean_recall": float(recall.gather(1, picked).mean()),
        "predicted_ms": float(ms.gather(1, picked).sum()),
        "target_reached": reached,
    }
    return layers, stats, summary


def per_head_mean(
    options: list[tuple[int, Tensor, Tensor]], target_recall: float
) -> tuple[list[tuple[int, list[int]]], dict[str, float]]:
    """Each layer's candidate per head, from each layer's (index, recall, density), each (C, H),
    and the summary: the least summed density (computed pairs, as every head of a sample has the
    same length) whose recall, averaged over every layer and head, reaches the target."""
    recall = torch.cat([o[1].T for o in options])  # (sum of H, C)
    density = torch.cat([o[2].T for o in options])
    choice, reached = allocate(density, recall, target_recall)
    picked = torch.tensor(choice)[:, None]
    summary = {
        "mean_recall": float(recall.gather(1, picked).mean()),
        "mean_density": float(density.gather(1, picked).mean()),
        "target_reached": reached,
    }
    per_layer_choice, row = [], 0
    for index, layer_recall, _ in options:
        heads = layer_recall.shape[1]
        per_layer_choice.append((index, choice[row : row + heads]))
        row += heads
    return per_layer_choice, summary


def allocate(ms: Tensor, recall: Tensor, target_recall: float) -> tuple[list[int], bool]:
    """One candidate per row (a layer, or a head) from (R, C) costs ``ms`` and recalls: the least
    total cost whose mean recall reaches the target. A multiple-choice knapsack, solved exactly by
    dynamic programming over the rows' summed recall, each counted in steps of 1e-4 rounded down
    (the choice's true mean is then at least the target; a recall within 1e-6 below a step counts
    as the step: recalls come in float32, and a target met exactly counts). Past 26 rows the steps
    grow to 1 / (2^18 / R) so that the DP keeps at most 2^18 states (0.5 GB of choices per 1000
    rows): the mean still reaches the target; the choice is then optimal for the recalls rounded
    down to those steps.
    Ties go to the earlier candidate. Where even each row's best recall (the cheapest of equals)
    misses the target, those. Returns the choices and whether the target was reached."""
    ms = ms.double()
    layers, count = ms.shape
    per_row = min(_RECALL_STEPS, max(1, _MAX_STATES // layers))
    steps = torch.floor((recall.double() + 1e-6) * per_row).long().tolist()
    need = max(0, math.ceil((target_recall - 1e-6) * layers * per_row))
    best = torch.where(recall == recall.amax(1, keepdim=True), ms, torch.inf).argmin(1).tolist()
    if sum(steps[row][c] for row, c in enumerate(best)) < need:
        return best, False
    # least[s]: the least ms of the layers so far whose steps sum to s (s = need: at least need)
    least = torch.full((need + 1,), torch.inf, dtype=torch.float64)
    least[0] = 0.0
    small = torch.int16 if count < 2**15 else torch.int32  # rows x (need + 1) choices
    picks = torch.zeros(layers, need + 1, dtype=small)  # each layer's choice per state
    into_need = [0] * layers  # the state a layer's choice into `need` came from
    for row in range(layers):
        new = torch.full_like(least, torch.inf)
        for c in range(count):
            step, total = steps[row][c], least + ms[row, c]
            if step < need:  # states s < need - step move to s + step
                moved, kept = total[: need - step], new[step:need]
                better = moved < kept
                new[step:need] = torch.where(better, moved, kept)
                picks[row, step:need][better] = c
            start = max(need - step, 0)  # the rest reach the target: state `need`
            value, at = total[start:].min(0)
            if value < new[need]:
                new[need], picks[row, need], into_need[row] = value, c, start + int(at)
        least = new
    choice, state = [0] * layers, need
    for row in reversed(range(layers)):
        choice[row] = c = int(picks[row, state])
        state = into_need[row] if state == need else state - steps[row][c]
    return choice, True


def head_entries(
    choice: list[int],
    candidates: Sequence[tuple[str, dict[str, Any]]],
    planners: Sequence[Any],
    recall: Tensor,
    density: Tensor,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A layer's config entry for its heads' ``choice`` of candidates (one entry with per-head
    values where `one_plan_for_heads` merges them: vertical_slash's budgets, flexprefill's γ),
    and each head's record from the (C, H) ``recall`` and ``density``."""
    merged = one_plan_for_heads([planners[c] for c in choice])
    entry = (
        [{"method": candidates[c][0], **candidates[c][1]} for c in choice]
        if merged is None
        else {"method": merged.name, **dataclasses.asdict(merged)}
    )
    records = [
        {"recall": float(recall[c, h]), "density": float(density[c, h])}
        for h, c in enumerate(choice)
    ]
    return {"prefill": entry}, records
