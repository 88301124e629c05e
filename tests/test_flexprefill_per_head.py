"""flexprefill with one γ per query head: one plan equal to each head planned with its own γ."""

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from attnsieve.eval.calibrate import calibrate
from attnsieve.eval.workloads import make_workload
from attnsieve.integrations.config import AttentionConfig
from attnsieve.methods import get_planner
from attnsieve.methods.prefill.base import one_plan_for_heads

SMALL = {"block_q": 16, "block_k": 16, "min_budget": 16}


def qk(b, h_q, h_kv, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h_q, n, 16, generator=g), torch.randn(b, h_kv, n, 16, generator=g)


@pytest.mark.parametrize(
    "tau,sharp,extra",
    [(0.0, 3, {}), (1.0, 3, {}), (0.1, 3, {}),  # no head, every head, some heads query-aware
     (0.0, 3, {"max_budget": 64}), (1.0, 300, {})],  # a γ-1 head that a budget or its map
)  # would leave sparse, were it not dense  # fmt: skip
@pytest.mark.parametrize("n", [160, 333])
def test_per_head_gamma_equals_each_head_planned_with_its_own(tau, sharp, extra, n):
    """Vertical-slash heads (τ 0) and query-aware ones (τ 1) alike; γ 1 keeps that head dense."""
    q, k = qk(2, 4, 2, n, seed=n)
    q = q * sharp  # sharper attention: budgets differ between the γs
    gammas = (0.3, 0.9, 1.0, 0.6)
    fields = {**SMALL, "tau": tau, **extra}
    both = get_planner("flexprefill", gamma=list(gammas), **fields).plan(q, k)
    mask = both.to_dense_mask(causal=True)
    distinct = set()
    for h, gamma in enumerate(gammas):
        alone = get_planner("flexprefill", gamma=gamma, **fields).plan(q, k)
        own = alone.to_dense_mask(causal=True).expand_as(mask)[:, h]
        assert torch.equal(mask[:, h], own), (h, gamma)
        distinct.add(int(own.sum()))
    assert len(distinct) > 1  # the heads' plans differ
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    assert torch.equal(mask[:, 2], causal.expand(2, -1, -1))  # γ 1


def test_per_head_gamma_survives_fake_tensors_and_new_values():
    """The per-device γ tensor is neither made from nor handed to fake tensors, and follows
    ``gamma`` when it changes."""
    planner = get_planner("flexprefill", gamma=[0.3, 0.9], **SMALL)
    q, k = qk(1, 2, 1, 160)
    with FakeTensorMode():
        planner.plan(torch.randn(1, 2, 160, 16), torch.randn(1, 1, 160, 16))
    first = planner.plan(q, k).to_dense_mask(causal=True)
    with FakeTensorMode():
        planner.plan(torch.randn(1, 2, 160, 16), torch.randn(1, 1, 160, 16))
    planner.gamma = (0.9, 0.3)
    swapped = planner.plan(q, k).to_dense_mask(causal=True)
    for h, gamma in enumerate((0.9, 0.3)):
        alone = get_planner("flexprefill", gamma=gamma, **SMALL).plan(q, k)
        assert torch.equal(swapped[:, h], alone.to_dense_mask(causal=True)[:, h])
    assert not torch.equal(first, swapped)


def test_per_head_gamma_all_one_is_dense():
    q, k = qk(1, 2, 1, 160)
    layout = get_planner("flexprefill", gamma=[1.0, 1], **SMALL).plan(q, k)
    assert layout.density(causal=True) == 1.0


@pytest.mark.parametrize(
    "gamma,match",
    [([], r"gamma: expected a number or a non-empty list, got \[\]"),
     ([0.9, 0.0], r"gamma\[1\]: expected a number in \(0, 1\], got 0"),
     ([0.9, 1.5], r"gamma\[1\]: expected a number in \[0.0, 1.0\], got 1.5"),
     ([True], r"gamma\[0\]: expected a number")],
)  # fmt: skip
def test_bad_per_head_gamma_is_refused(gamma, match):
    with pytest.raises(ValueError, match=match):
        get_planner("flexprefill", gamma=gamma)


def test_per_head_gamma_must_match_the_query_heads():
    entry = {"method": "flexprefill", "gamma": [0.9, 0.8, 0.7], **SMALL}
    with pytest.raises(ValueError, match="^gamma: 3 per-head values, but the model plans 4 query"):
        get_planner("flexprefill", **{k: v for k, v in entry.items() if k != "method"}).plan(
            *qk(1, 4, 2, 160)
        )
    config = AttentionConfig(prefill=entry)
    with pytest.raises(ValueError, match=r"^prefill \(layer 0\): gamma: 3 per-head values"):
        config.check_model(num_layers=2, num_heads=4, kv_heads=2)
    config.check_model(num_layers=2, num_heads=3, kv_heads=1)


def test_one_plan_for_heads_merges_flexprefill_differing_in_gamma_only():
    heads = [get_planner("flexprefill", gamma=g, **SMALL) for g in (0.8, 0.95, 0.8)]
    merged = one_plan_for_heads(heads)
    assert merged.gamma == (0.8, 0.95, 0.8) and merged.block_q == 16 and merged.tau == 0.1
    other = get_planner("flexprefill", gamma=0.8, tau=0.2, **SMALL)
    for group in ([heads[0], other], [merged], [heads[0], get_planner("streaming")]):
        assert one_plan_for_heads(group) is None


def test_calibrate_writes_one_flexprefill_entry_with_per_head_gamma(tmp_path):
    """Heads that all chose flexprefill at different γ get one entry (one plan a layer), which
    plans every head as its chosen candidate alone, and reads back through the config."""
    w = make_workload(["sink_local", "vertical", "slash", "retrieval"], num_kv_heads=2,
                      seq_len=512, head_dim=32, num_columns=4, local_window=16)  # fmt: skip
    candidates = [("flexprefill", {"gamma": g, **SMALL}) for g in (0.3, 0.6, 0.9, 0.99)]
    result = calibrate([(w.q, w.k)], 0.97, candidates, mean_recall=True)
    entry = result["layers"]["0"]["prefill"]
    assert entry["method"] == "flexprefill" and len(entry["gamma"]) == 4
    assert len(set(entry["gamma"])) > 1  # the heads did not all choose alike
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(result))
    got = AttentionConfig.from_json(path).planner(0).plan(w.q, w.k).to_dense_mask(causal=True)
    for h, gamma in enumerate(entry["gamma"]):
        alone = get_planner("flexprefill", gamma=gamma, **SMALL).plan(w.q, w.k)
        assert torch.equal(got[:, h], alone.to_dense_mask(causal=True)[:, h])
