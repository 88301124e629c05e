"""vertical_slash with one budget per head: one plan equal to planning each head alone."""

import pytest
import torch

from attnsieve.methods import get_planner
from attnsieve.methods.prefill.base import one_plan_for_heads

SMALL = {"block_q": 32, "block_k": 16, "last_q": 17}


def qk(b, h_q, h_kv, n, m, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h_q, n, d, generator=g), torch.randn(b, h_kv, m, d, generator=g)


@pytest.mark.parametrize("n,m", [(333, 333), (100, 257), (257, 100)])
@pytest.mark.parametrize(
    "vertical,slash,kept",
    [
        ((0, 5, 40, 1000), (0, 9, 3, 50), {"sink_tokens": 0, "local_slashes": 0}),
        ((0, 5, 40, 7), (2, 0, 300, 11), {"sink_tokens": 4, "local_slashes": 8}),
        (12, (0, 1, 2, 60), {"sink_tokens": 0, "local_slashes": 3}),
    ],
)
def test_per_head_budgets_equal_each_head_planned_with_its_own(n, m, vertical, slash, kept):
    """Every head's token mask equals that of the planner with that head's budgets alone, a budget
    of 0 (nothing forced) included: the repeats that pad a smaller budget add no pair."""
    q, k = qk(2, 4, 2, n, m, seed=1)
    layout = get_planner(
        "vertical_slash", vertical_size=vertical, slash_size=slash, **kept, **SMALL
    )
    mask = layout.plan(q, k).to_dense_mask(causal=True)
    for h in range(4):
        own = {
            "vertical_size": vertical if isinstance(vertical, int) else vertical[h],
            "slash_size": slash[h],
        }
        alone = get_planner("vertical_slash", **own, **kept, **SMALL).plan(q, k)
        assert torch.equal(mask[:, h], alone.to_dense_mask(causal=True)[:, h]), h


def test_per_kv_head_budgets_with_shared_groups():
    """With ``share_kv_group`` the budgets are per KV head; each one plans as its int budget."""
    q, k = qk(1, 6, 3, 300, 300, seed=2)
    budgets = {"vertical_size": (3, 0, 30), "slash_size": (20, 4, 0), "share_kv_group": True}
    mask = get_planner("vertical_slash", **budgets, **SMALL).plan(q, k).to_dense_mask(causal=True)
    assert mask.shape[1] == 3
    for h in range(3):
        own = {"vertical_size": budgets["vertical_size"][h], "slash_size": budgets["slash_size"][h]}
        alone = get_planner("vertical_slash", **own, share_kv_group=True, **SMALL).plan(q, k)
        assert torch.equal(mask[:, h], alone.to_dense_mask(causal=True)[:, h]), h


def test_per_head_budgets_are_kept_as_tuples_and_checked():
    planner = get_planner("vertical_slash", vertical_size=[1, 2], slash_size=[3, 4])
    assert planner.vertical_size == (1, 2) and planner.slash_size == (3, 4)
    with pytest.raises(ValueError, match=r"slash_size\[1\]"):
        get_planner("vertical_slash", slash_size=[3, -1])
    with pytest.raises(ValueError, match="vertical_size: expected an int or a non-empty list"):
        get_planner("vertical_slash", vertical_size=[])
    with pytest.raises(
        ValueError, match=r"^vertical_size: 3 per-head budgets, but the model plans 4 query heads$"
    ):
        get_planner("vertical_slash", vertical_size=[1, 2, 3]).plan(*qk(1, 4, 2, 64, 64))


def test_one_plan_for_heads_only_where_nothing_but_the_budgets_differs():
    vs = [get_planner("vertical_slash", vertical_size=v, slash_size=9) for v in (3, 30)]
    merged = one_plan_for_heads(vs)
    assert merged.vertical_size == (3, 30) and merged.slash_size == (9, 9)
    assert merged.last_q == 64 and merged.block_q == 64
    other = get_planner("vertical_slash", vertical_size=3, slash_size=9, last_q=32)
    shared = get_planner("vertical_slash", vertical_size=3, slash_size=9, share_kv_group=True)
    for heads in ([vs[0], other], [vs[0], shared], [vs[0], get_planner("streaming")], [merged], []):
        assert one_plan_for_heads(heads) is None


def test_tied_scores_break_as_with_each_head_s_budget_alone():
    """Keys all zero: every column and diagonal ties, and top-k breaks ties by k; each head's
    budget still selects what that budget alone selects."""
    q, k = qk(1, 2, 1, 64, 256)
    k = torch.zeros_like(k)
    common = {"sink_tokens": 0, "local_slashes": 0, "block_q": 32, "block_k": 16, "last_q": 64}
    both = get_planner("vertical_slash", vertical_size=(5, 150), slash_size=(7, 90), **common)
    mask = both.plan(q, k).to_dense_mask(causal=True)
    for h, (v, s) in enumerate([(5, 7), (150, 90)]):
        alone = get_planner("vertical_slash", vertical_size=v, slash_size=s, **common).plan(q, k)
        assert torch.equal(mask[:, h], alone.to_dense_mask(causal=True)[:, h]), h


def test_budgets_set_after_construction_are_checked():
    """A list set on a built planner stayed a list: `check_heads` skipped it, so a list shorter
    than the heads planned the heads past its end without their columns, sinks too, silently."""
    q, k = qk(1, 4, 2, 300, 300)
    planner = get_planner("vertical_slash", **SMALL)
    planner.vertical_size = [5, 6]
    with pytest.raises(ValueError, match=r"^vertical_size: 2 per-head budgets, but the model"):
        planner.plan(q, k)
    planner.vertical_size = [5, 6, 7, 8]
    assert planner.vertical_size == (5, 6, 7, 8)
    planner.plan(q, k).validate()
    for bad in ([], [5, -1], 2.5):  # refused by name where set, as in the constructor
        with pytest.raises(ValueError, match=r"^vertical_size"):
            planner.vertical_size = bad
    with pytest.raises(ValueError, match=r"^slash_size"):
        planner.slash_size = -3
