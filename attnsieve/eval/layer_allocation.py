"""The per-layer choice of `attnsieve.eval.calibrate` (``granularity="layer"``, ``attnsieve
calibrate --per-layer``): each candidate's predicted time on a layer by the cost model
(`predicted_ms`), and one candidate per layer, together the least predicted time whose recall,
averaged over layers and heads, reaches the target (`per_layer`; `_allocate` solves that
multiple-choice knapsack exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnsieve.integrations.cost import CostModel

_RECALL_STEPS = 10_000  # `_allocate` counts a layer's recall in steps of 1e-4


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
    choice, reached = _allocate(ms, recall, target_recall)
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


def _allocate(ms: Tensor, recall: Tensor, target_recall: float) -> tuple[list[int], bool]:
    """One candidate per layer from (L, C) predicted ms and mean recalls: the least total ms whose
    mean recall reaches the target. A multiple-choice knapsack, solved exactly by dynamic
    programming over the layers' summed recall, each counted in steps of 1e-4 rounded down (the
    choice's true mean is then at least the target; a recall within 1e-6 below a step counts as
    the step: recalls come in float32, and a target met exactly counts). Ties go to the earlier
    candidate. Where even each layer's best recall (the cheapest of equals) misses the target,
    those. Returns the choices and whether the target was reached."""
    ms = ms.double()
    layers, count = ms.shape
    steps = torch.floor((recall.double() + 1e-6) * _RECALL_STEPS).long().tolist()
    need = max(0, math.ceil((target_recall - 1e-6) * layers * _RECALL_STEPS))
    best = torch.where(recall == recall.amax(1, keepdim=True), ms, torch.inf).argmin(1).tolist()
    if sum(steps[row][c] for row, c in enumerate(best)) < need:
        return best, False
    # least[s]: the least ms of the layers so far whose steps sum to s (s = need: at least need)
    least = torch.full((need + 1,), torch.inf, dtype=torch.float64)
    least[0] = 0.0
    small = torch.int16 if count < 2**15 else torch.int32  # 80 layers: 120 MB of int16
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
