"""`attnsieve.eval.allocation.allocate`: exact where the DP is, on true recalls past 26 rows."""

import itertools
import math

import pytest
import torch

from attnsieve.eval.allocation import _greedy, _hull, _knapsack, allocate


def _cost(ms, choice):
    return float(ms.double().gather(1, torch.tensor(choice)[:, None]).sum())


def _mean(recall, choice):
    return float(recall.double().gather(1, torch.tensor(choice)[:, None]).mean())


def _rows(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def _every_choice(ms, recall):
    """Summed cost and mean recall of every one of the C^R choices."""
    rows, count = ms.shape
    picks = torch.tensor(list(itertools.product(range(count), repeat=rows)))  # (C^R, R)
    return ms.double()[torch.arange(rows), picks].sum(1), recall.double()[
        torch.arange(rows), picks
    ].mean(1)


def _old_steps_reach(recall, target):
    """Whether the steps of the pre-greedy `allocate` (1e-6 allowance on both sides) let each
    row's best recall reach the target: where not, it returned (best, False)."""
    rows = recall.shape[0]
    per_row = min(10_000, 2**18 // rows)
    steps = torch.floor((recall.double().amax(1) + 1e-6) * per_row).long()
    return int(steps.sum()) >= math.ceil((target - 1e-6) * rows * per_row)


@pytest.mark.parametrize("seed", range(12))
def test_small_instances_cost_the_exhaustive_optimum(seed):
    """6 rows x 3 candidates: costs from {0, 1, 2, 3} (zero and equal costs) or floats, recalls
    on a 1e-2 grid (equal recalls), where counting in 1e-4 steps loses nothing."""
    gen = torch.Generator().manual_seed(seed)
    ms = torch.randint(0, 4, (6, 3), generator=gen).float()
    if seed % 2:
        ms = torch.rand(6, 3, generator=gen) * 10
    recall = torch.randint(60, 101, (6, 3), generator=gen) / 100
    for target in (0.6, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0):
        costs, means = _every_choice(ms, recall)
        reachable = means >= target - 1e-6
        choice, reached = allocate(ms, recall, target)
        assert reached == bool(reachable.any())
        if reached:
            assert _cost(ms, choice) == pytest.approx(float(costs[reachable].min()), abs=1e-9)
            assert _mean(recall, choice) >= target - 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_off_the_grid_the_cost_keeps_the_stated_bounds(seed):
    """Float recalls: at most the optimum for the target raised by one DP step (1e-4 here), and
    the greedy alone at most the optimum plus one row's dearest upgrade."""
    gen = torch.Generator().manual_seed(seed)
    ms = torch.rand(6, 3, generator=gen) * 10
    recall = 0.7 + 0.3 * torch.rand(6, 3, generator=gen)
    costs, means = _every_choice(ms, recall)
    top = float(recall.amax(1).double().mean())
    for target in torch.linspace(0.7, top - 2e-4, 9).tolist():
        choice, reached = allocate(ms, recall, target)
        assert reached and _mean(recall, choice) >= target - 1e-6
        assert _cost(ms, choice) <= float(costs[means >= target + 1e-4].min()) + 1e-9
        greedy = _greedy(ms.double(), recall.double(), target * 6)
        optimum = float(costs[means >= target - 1e-12].min())
        assert _mean(recall, greedy) >= target - 1e-12
        spread = float((ms.amax(1) - ms.amin(1)).max())
        assert optimum <= _cost(ms, greedy) <= optimum + spread + 1e-9


def test_hull_keeps_the_cheapest_of_equals_and_drops_what_lies_under_a_chord():
    costs, recalls = [1.0, 1.0, 2.0, 3.0, 0.0, 5.0], [0.5, 0.6, 0.6, 0.9, 0.5, 0.9]
    assert _hull(costs, recalls) == [4, 3]  # 1 lies under the chord from 4 to 3
    assert _hull([0.0, 1.0, 2.0], [0.1, 0.2, 0.3]) == [0, 1, 2]  # equal slopes: finer upgrades
    assert _hull([2.0, 2.0, 2.0], [0.5, 0.5, 0.5]) == [0]


def test_greedy_repairs_its_last_upgrade_and_downgrades_what_the_surplus_allows():
    # the steepest upgrade (row 0, +0.5 for 1) overshoots; row 1's +0.125 for 0.5 covers it
    ms, recall = _rows([0, 1], [0, 0.5]), _rows([0.5, 1.0], [0.5, 0.625])
    assert _greedy(ms, recall, 1.125) == [0, 1]
    # row 0 first (+0.25 for 1), then row 1 (+0.5 for 4) alone would have done
    ms, recall = _rows([0, 1], [0, 4]), _rows([0.5, 0.75], [0.5, 1.0])
    assert _greedy(ms, recall, 1.5) == [0, 1]


def test_reached_on_the_true_recalls_where_the_rounded_steps_fall_short():
    """1024 rows count in steps of 1 / 256: 0.95 (0.94999999 in float32) rounds down to 243 / 256
    = 0.9492, so the old steps never reached 0.95 or even 0.9499, and the old `allocate` answered
    (best, False) though the best recalls average 0.95."""
    ms = torch.tensor([[1.0, 2, 3, 4]]).repeat(1024, 1)
    recall = torch.tensor([[0.5, 0.8, 0.9, 0.95]]).repeat(1024, 1)
    for target in (0.95, 0.9499):
        assert not _old_steps_reach(recall, target)
    choice, reached = allocate(ms, recall, 0.95)  # only every row's best reaches it
    assert reached and choice == [3] * 1024 and _mean(recall, choice) >= 0.95 - 1e-6
    choice, reached = allocate(ms, recall, 0.9499)  # 0.1 to spare: two rows may keep 0.9
    assert reached and sorted(choice) == [2, 2] + [3] * 1022
    assert _mean(recall, choice) >= 0.9499


def test_the_greedy_beats_the_rounding_dp_on_many_rows():
    """Each row: nothing at 230 / 256 - 1e-4, which the DP counts as 229 steps of 1 / 256, or
    1.0 for a cost of 1 (a third, 0.9 for 0.99, below the hull and of little use to the DP).
    Half the rows moving up reach the mean exactly, 512; the DP must move 531, as the old
    `allocate` did."""
    a = torch.tensor(230 / 256 - 1e-4)
    rows = 1024
    recall = torch.stack([a.repeat(rows), torch.ones(rows), torch.full((rows,), 0.9)], 1)
    ms = torch.tensor([[0.0, 1.0, 0.99]]).repeat(rows, 1)
    target = float((a.double() + 1) / 2)
    choice, reached = allocate(ms, recall, target)
    assert reached and _cost(ms, choice) == 512 and _mean(recall, choice) >= target - 1e-6
    old = _knapsack(ms.double(), recall.double(), target)
    assert _cost(ms, old) == 531 and _mean(recall, old) >= target


def test_on_random_rows_cheaper_than_the_dp():
    """400 rows count in steps of 1 / 655: the DP overshoots by about half a step a row."""
    gen = torch.Generator().manual_seed(0)
    recall = torch.rand(400, 4, generator=gen).sort(1).values
    ms = recall + 0.05 * torch.rand(400, 4, generator=gen)
    for target in (0.6, 0.75):
        choice, reached = allocate(ms, recall, target)
        old = _knapsack(ms.double(), recall.double(), target)
        assert reached and _cost(ms, choice) < _cost(ms, old) - 0.2
        assert target - 1e-7 <= _mean(recall, choice) < _mean(recall, old) - 5e-4


def test_many_rows_that_cannot_reach_the_target_take_their_best():
    gen = torch.Generator().manual_seed(1)
    recall = torch.rand(1024, 4, generator=gen) * 0.9
    recall[:, 2] = recall[:, 3]  # equal best recalls: the cheaper wins
    ms = torch.rand(1024, 4, generator=gen)
    top = recall.argmax(1)
    best = torch.where(top >= 2, torch.where(ms[:, 2] <= ms[:, 3], 2, 3), top).tolist()
    assert allocate(ms, recall, 0.9) == (best, False)


def test_edge_cases_on_many_rows():
    gen = torch.Generator().manual_seed(2)
    recall = torch.rand(1024, 4, generator=gen)
    ms = torch.rand(1024, 4, generator=gen)
    best = torch.where(recall == recall.amax(1, keepdim=True), ms, torch.inf).argmin(1).tolist()
    # reachable only by every row's best: the old steps missed it
    target = float(recall.double().amax(1).mean())
    assert not _old_steps_reach(recall, target)
    assert allocate(ms, recall, target) == (best, True)
    assert allocate(ms, recall, target + 1e-5) == (best, False)
    # one candidate a row
    assert allocate(ms[:, :1], recall[:, :1], float(recall[:, 0].double().mean())) == (
        [0] * 1024,
        True,
    )
    # free candidates, alone (the DP's choice, as on every tie) or beside dear ones
    choice, reached = allocate(torch.zeros(300, 4), recall[:300], 0.5)
    assert reached and _mean(recall[:300], choice) >= 0.5
    ms[:, :2] = 0.0
    choice = _greedy(ms.double(), recall.double(), 0.75 * 1024)
    free = recall[:, :2].amax(1).double()
    assert _mean(recall, choice) >= 0.75 and _cost(ms, choice) > 0 and free.mean() < 0.75
    assert all(c >= 2 or recall[r, c] == free[r] for r, c in enumerate(choice))
    # equal candidates: the earliest
    same = torch.tensor([[0.9, 0.9, 0.9]]).repeat(1024, 1)
    assert allocate(torch.ones(1024, 3), same, 0.9) == ([0] * 1024, True)
