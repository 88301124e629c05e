"""The cost model: when sparse prefill is predicted to pay for itself, and its use in the patch."""

import pytest
import torch

from attnsieve.integrations.cost import CostModel
from attnsieve.layout_counts import causal_pairs

SMOLLM2 = {"batch": 1, "heads": 9, "head_dim": 64}  # SmolLM2-135M: 9 query heads of 64


def shape(n: int) -> tuple[int, int, int, int, int]:
    return (SMOLLM2["batch"], SMOLLM2["heads"], n, n, SMOLLM2["head_dim"])


def test_dense_time_is_flops_over_rate():
    model = CostModel(dense_tflops={64: 500.0})
    flops = 4 * 9 * 64 * causal_pairs(32768, 32768)
    assert model.dense_ms(*shape(32768)) == pytest.approx(flops / 500e9)


def test_rates_are_read_at_the_nearest_measured_head_dim():
    model = CostModel(dense_tflops={64: 1.0, 128: 2.0}, sparse_tflops={64: 3.0, 128: 4.0})
    rates = [model.dense_ms(1, 1, 64, 64, d) / (4 * d * causal_pairs(64, 64) / 1e9)
             for d in (32, 64, 96, 128, 256)]  # fmt: skip
    assert rates == pytest.approx([1.0, 1.0, 1 / 2, 1 / 2, 1 / 2])
    sparse = model.sparse_ms(1.0, 1, 1, 64, 64, 256) - model.call_ms
    assert sparse == pytest.approx(4 * 256 * causal_pairs(64, 64) / 4e9)


def test_narrow_heads_break_even_at_a_higher_density():
    """At head dim 64 cuDNN leads the sparse kernel by less than at 128 (H200): the same plan
    pays up to a denser layout."""
    model = CostModel()
    narrow = model.break_even_density("flexprefill", 1, 32, 65536, 65536, 64, graphed=True)
    wide = model.break_even_density("flexprefill", 1, 16, 65536, 65536, 128, graphed=True)
    assert narrow > wide + 0.1


def test_a_slower_layout_runs_at_its_fraction_of_the_rate():
    """vertical_slash's spans and columns run below the block rate: its sparse time and break-even
    density are priced at its fraction; other planners keep the block rate."""
    model = CostModel(sparse_tflops={64: 400.0}, layout_rate={"slow": 0.5}, call_ms=0.0)
    blocks = model.sparse_ms(0.2, *shape(65536))
    assert model.sparse_ms(0.2, *shape(65536), "slow") == pytest.approx(2 * blocks)
    assert model.sparse_ms(0.2, *shape(65536), "fast") == blocks
    slow = model.break_even_density("slow", *shape(131072))
    fast = model.break_even_density("fast", *shape(131072))
    plan = model.planning_ms("slow", 131072)
    whole = model.sparse_ms(1.0, *shape(131072), "slow")
    assert slow == pytest.approx((model.dense_ms(*shape(131072)) - plan) / whole)
    assert fast > slow
    with pytest.raises(ValueError, match=r"layout_rate\['slow'\]"):
        CostModel(layout_rate={"slow": 1.5})


def test_short_prompts_stay_dense_long_sparse_ones_plan():
    model = CostModel()
    # 8K on SmolLM2: a whole layer of dense attention costs less than planning
    assert model.dense_ms(*shape(8192)) < model.planning_ms("flexprefill", 8192)
    assert not model.plan_pays("flexprefill", 0.1, *shape(8192))
    assert model.plan_pays("flexprefill", 0.1, *shape(131072))
    # a denser plan needs a longer prompt to pay
    assert not model.plan_pays("flexprefill", 0.95, *shape(131072))


def test_planning_time_is_read_at_the_nearest_measured_length():
    model = CostModel(plan_ms={"a": (1.0, 2.0, 3.0)}, plan_lengths=(10, 20, 30))
    assert [model.planning_ms("a", n) for n in (5, 10, 11, 25, 99)] == [1, 1, 2, 3, 3]
    assert model.planning_ms("per_head", 15) == 2.0  # unknown: the slowest planner's time
    # the slowest at the length asked: "b" is slower at 10 and 20 tokens, "a" only at 30 (its
    # worst time); reading the planner of the largest worst time priced 2.0 at 10 tokens
    crossing = CostModel(
        plan_ms={"a": (1.0, 2.0, 9.0), "b": (4.0, 5.0, 6.0)}, plan_lengths=(10, 20, 30)
    )
    assert [crossing.planning_ms("per_head", n) for n in (10, 20, 30)] == [4.0, 5.0, 9.0]


def test_graphed_plans_cost_their_gpu_time_scaled_by_heads():
    model = CostModel(
        plan_ms={"a": (5.0, 5.0, 5.0)},
        graph_plan_ms={"a": (1.0, 2.0)},
        graph_plan_lengths=(10, 20),
        graph_plan_heads=4,
    )
    assert model.planning_ms("a", 15, graphed_heads=8) == 4.0  # twice the measured heads
    assert model.planning_ms("a", 15, graphed_heads=40) == 5.0  # never above the eager time
    # a planner without a graph time (it cannot be captured) keeps its eager time
    assert model.planning_ms("vertical_slash", 8192, graphed_heads=9) == model.planning_ms(
        "vertical_slash", 8192
    )


def test_graphs_make_planning_pay_from_32k_on_smollm2():
    """The H200 measurements (graphs/no_sync.json, e2e_*_nocost*.json): replayed, flexprefill's
    plan + attention beats dense from 32K on; eager planning does not at 32K."""
    model = CostModel()
    assert not model.plan_pays("flexprefill", None, *shape(8192), graphed=True)
    assert model.plan_pays("flexprefill", None, *shape(32768), graphed=True)
    assert not model.plan_pays("flexprefill", None, *shape(32768))


@pytest.mark.parametrize("graphed", [False, True])
def test_break_even_density_separates_paying_from_losing_plans(graphed):
    model = CostModel()
    for n in (8192, 32768, 131072):
        limit = model.break_even_density("flexprefill", *shape(n), graphed=graphed)
        for density in (0.0, 0.05, 0.3, 0.9):
            expected = density < limit
            assert model.plan_pays("flexprefill", density, *shape(n), graphed=graphed) == expected
    # the plan alone costs more than dense attention at 8K: no density pays
    assert model.break_even_density("flexprefill", *shape(8192)) < 0


def test_patch_handle_decides_from_the_layers_last_density():
    """The handle memoises the break-even density per shape; the layer's own density (once its
    copy has landed) decides, the prior before."""
    from attnsieve.integrations.config import AttentionConfig
    from attnsieve.integrations.transformers import PatchHandle

    model = CostModel(prior_density=0.3)
    handle = PatchHandle(AttentionConfig(), 2, model)
    q, k = torch.empty(1, 9, 65536, 64, device="meta"), torch.empty(1, 3, 65536, 64, device="meta")
    limit = model.break_even_density("flexprefill", *shape(65536))
    assert 0.3 < limit < 0.9  # both outcomes reachable at this length
    assert handle.plan_pays("flexprefill", 0, q, k)  # no density yet: the prior
    handle.keep_density(0, torch.tensor(0.9))
    assert not handle.plan_pays("flexprefill", 0, q, k)
    handle.keep_density(0, torch.tensor(0.05))
    assert handle.plan_pays("flexprefill", 0, q, k)
    assert handle.plan_pays("flexprefill", 1, q, k)  # another layer: still the prior


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [("dense_tflops", {64: -1.0}, ValueError), ("sparse_tflops", {0: 1.0}, ValueError),
     ("dense_tflops", 570.0, TypeError), ("sparse_tflops", {}, TypeError),
     ("call_ms", -1.0, ValueError), ("prior_density", -1.0, ValueError)],
)  # fmt: skip
def test_bad_fields_are_named(field, value, exc):
    with pytest.raises(exc, match=field):
        CostModel(**{field: value})


@torch.no_grad()
def test_patch_records_cost_fallbacks_on_the_triton_backend():
    transformers = pytest.importorskip("transformers")
    from attnsieve.integrations import AttentionConfig, patch

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    model = model.half()
    ids = torch.randint(0, 64, (1, 48))
    base = model(input_ids=ids).logits
    never = CostModel(dense_tflops={16: 1e6})  # dense is predicted faster than any plan
    attn = AttentionConfig(prefill="streaming", min_prefill_length=16, backend="triton")
    with patch(model, attn, cost=never) as stats:
        logits = model(input_ids=ids).logits
    assert stats.fallback_per_layer == ["cost", "cost"]
    torch.testing.assert_close(logits, base)
    with pytest.raises(TypeError, match="cost"):
        patch(model, attn, cost="fast")


@pytest.mark.parametrize(
    "fields, error, match",
    [
        ({"plan_ms": {"streaming": (1.0,)}}, ValueError, r"plan_ms\['streaming'\]: expected 3"),
        ({"plan_ms": [1, 2]}, TypeError, "plan_ms: expected a mapping"),
        ({"plan_lengths": (3, 2, 1)}, ValueError, "plan_lengths: expected ascending"),
        ({"graph_plan_ms": {"x": (1.0, -2.0, 3.0)}}, ValueError, r"graph_plan_ms\['x'\]"),
        ({"graph_plan_heads": 0}, ValueError, "graph_plan_heads"),
    ],
)
def test_timing_tables_it_cannot_read_are_refused(fields, error, match):
    """They were taken and failed inside a forward, on the GPU only (IndexError,
    ZeroDivisionError), or were priced unsorted."""
    with pytest.raises(error, match=match):
        CostModel(**fields)
