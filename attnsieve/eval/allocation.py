"""The joint choices of `attnsieve.eval.calibrate`, each a multiple-choice knapsack that
`allocate` solves, exactly for a few rows on a grid of recalls, else within bounds it states:

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
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnsieve.integrations.cost import CostModel
from attnsieve.methods.prefill.base import one_plan_for_heads

_RECALL_STEPS = 10_000  # `_knapsack` counts a row's recall in steps of 1e-4 ...
_MAX_STATES = 2**18  # ... or coarser, so that its table holds at most rows x 2^18 choices
_SLACK = 1e-6  # recalls come in float32: a mean this far below the target reaches it ...
_FLOAT32 = 1e-7  # ... but `_greedy` aims closer, so that a reported mean does not show the gap


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
    total cost whose mean recall reaches the target, a multiple-choice knapsack. Returns the
    choices and whether the target was reached, decided on the true recalls with 1e-6 to spare
    (float32 recalls; a target met exactly counts): iff each row's best recall (the cheapest of
    equals) averages at least ``target_recall - 1e-6``. Where not, those best candidates; else a
    choice that averages at least that (in practice the target, less float32 rounding), the
    cheaper (the DP's on a tie) of:

    - `_knapsack`, a DP over recalls rounded down to steps of 1 / P: P = 1e4 up to 26 rows, past
      that 2^18 // R (1 / 256 for 32 x 32 heads), to keep 2^18 states a row. Optimal for the
      rounded recalls, so exact where recalls and target lie on that grid; off it, a row loses up
      to a step, yet any choice whose mean reaches the target plus 1 / P fits the DP;
    - `_greedy`, the LP greedy on the true recalls, aiming at the target less 1e-7: at most the LP
      bound (at most the optimum for the target itself) plus the cost of one upgrade between
      neighbours on one row's convex hull of (cost, recall).

    So the cost is exact for recalls and target on a 1e-4 grid up to 26 rows; else at most the
    lesser of the optimum for the target raised by 1 / P, and the optimum plus that one upgrade
    (what counts for many rows). Ties go to the earlier candidate."""
    ms, true = ms.double(), recall.double()
    floor = (target_recall - _SLACK) * ms.shape[0]  # the least summed recall that counts
    best = torch.where(recall == recall.amax(1, keepdim=True), ms, torch.inf).argmin(1).tolist()
    if _summed(true, best) < floor:
        return best, False
    aim = (target_recall - _FLOAT32) * ms.shape[0]  # float32 of the target: up to 3e-8 below
    solutions = (_knapsack(ms, true, target_recall), _greedy(ms, true, aim))
    found = [c for c in solutions if c is not None and _summed(true, c) >= floor]
    return min(found or [best], key=lambda c: _summed(ms, c)), True


def _summed(values: Tensor, choice: list[int]) -> float:
    return float(values.gather(1, torch.tensor(choice)[:, None]).sum())


def _knapsack(ms: Tensor, recall: Tensor, target_recall: float) -> list[int] | None:
    """The least cost whose recalls, each rounded down to steps of 1 / P, sum to at least the
    target's steps; None where even the best recalls fall short once rounded. Half of the 1e-6
    allowance goes to each recall (float32 rounding is far less) and half to the target, so that
    the choice's true mean never falls more than 1e-6 below the target."""
    layers, count = ms.shape
    per_row = min(_RECALL_STEPS, max(1, _MAX_STATES // layers))
    steps = torch.floor((recall + _SLACK / 2) * per_row).long().tolist()
    need = max(0, math.ceil((target_recall - _SLACK / 2) * layers * per_row))
    if sum(max(row) for row in steps) < need:
        return None
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
    return choice


def _greedy(ms: Tensor, recall: Tensor, floor: float) -> list[int]:
    """Each row starts at its cheapest candidate; the upgrades along each row's upper convex hull
    of (cost, recall) are taken by the most recall per cost until the summed recall reaches
    ``floor``, or each row has its best. The LP relaxation takes the same upgrades but only a
    fraction of the last, hence the bound. Two repairs then only lower the cost: the last upgrade
    gives way to the cheapest single move (to any candidate) that covers what was missing before
    it, and rows move down to cheaper candidates while the surplus allows, largest saving first."""
    count = ms.shape[1]
    choice, upgrades, rows = [], [], recall.tolist()
    for row, points in enumerate(zip(ms.tolist(), rows, strict=True)):
        hull = _hull(*points)
        choice.append(hull[0])
        upgrades += [(_slope(*points, a, b), row, b) for a, b in itertools.pairwise(hull)]
    # stable, on the very slopes that built the hulls: each row's upgrades stay in order
    upgrades.sort(key=lambda u: -u[0])
    total, last = _summed(recall, choice), None
    for _, row, c in upgrades:
        if total >= floor:
            break
        total += rows[row][c] - rows[row][choice[row]]
        last, choice[row] = (row, choice[row]), c
    if last is not None:
        undone = choice.copy()
        undone[last[0]] = last[1]
        picked = torch.tensor(undone)[:, None]
        covers = recall - recall.gather(1, picked) >= floor - _summed(recall, undone)
        extra = torch.where(covers, ms - ms.gather(1, picked), torch.inf).view(-1)
        at = int(extra.argmin())
        if extra[at] < torch.inf:  # else it ended short (every row at its best) or float rounding
            choice = undone
            choice[at // count] = at % count
    while True:
        picked = torch.tensor(choice)[:, None]
        saving = ms.gather(1, picked) - ms
        loss = recall.gather(1, picked) - recall
        allowed = (saving > 0) & (loss <= _summed(recall, choice) - floor)
        if not allowed.any():
            return choice
        at = int(torch.where(allowed, saving, 0.0).argmax())
        choice[at // count] = at % count


def _slope(costs: list[float], recalls: list[float], a: int, b: int) -> float:
    return (recalls[b] - recalls[a]) / (costs[b] - costs[a])


def _hull(costs: list[float], recalls: list[float]) -> list[int]:
    """A row's candidates on the upper convex hull of (cost, recall), cheapest first: costs and
    recalls strictly rising, slopes not rising (equal slopes kept: finer upgrades). Of equal
    candidates, the earliest."""
    hull: list[int] = []
    for c in sorted(range(len(costs)), key=lambda c: (costs[c], -recalls[c], c)):
        if hull and recalls[c] <= recalls[hull[-1]]:
            continue  # as dear and no better
        while len(hull) > 1 and (
            _slope(costs, recalls, *hull[-2:]) < _slope(costs, recalls, hull[-1], c)
        ):
            hull.pop()  # under the chord from its neighbours: the LP never stops there
        hull.append(c)
    return hull


def head_entries(
    choice: list[int],
    candidates: Sequence[tuple[str, dict[str, Any]]],
    planners: Sequence[Any],
    recall: Tensor,
    density: Tensor,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A layer's config entry for its heads' ``choice`` of candidates (the candidate itself where
    every head chose it; one entry with per-head values where `one_plan_for_heads` merges them:
    vertical_slash's budgets, flexprefill's γ), and each head's record from the (C, H)
    ``recall`` and ``density``."""
    merged = one_plan_for_heads([planners[c] for c in choice])
    if len(set(choice)) == 1:  # one plan of every head, as measured
        entry = {"method": candidates[choice[0]][0], **candidates[choice[0]][1]}
    elif merged is None:
        entry = [{"method": candidates[c][0], **candidates[c][1]} for c in choice]
    else:
        entry = {"method": merged.name, **dataclasses.asdict(merged)}
    records = [
        {"recall": float(recall[c, h]), "density": float(density[c, h])}
        for h, c in enumerate(choice)
    ]
    return {"prefill": entry}, records
