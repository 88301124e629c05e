"""`attnsieve calibrate`: per-head choice, JSON round trip, CLI and Q/K capture."""

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attnsieve.eval.allocation import allocate
from attnsieve.eval.calibrate import calibrate, capture_qk, main
from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.workloads import make_workload
from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.cost import CostModel
from attnsieve.methods import PerHeadPlanner, get_planner

BLOCKS = {"block_q": 32, "block_k": 32}
CANDIDATES = [
    ("streaming", {"window_tokens": 64, **BLOCKS}),
    ("streaming", {"window_tokens": 256, **BLOCKS}),
    ("dense", BLOCKS),
]


def layers():
    """Layer 0: a sharp local head and a diffuse head; layer 1: a wider local head."""
    opts = dict(seq_len=512, head_dim=32, num_columns=2, num_spans=1, local_window=16)
    sharp = make_workload(["sink_local", "diffuse"], temperature=0.05, **opts)
    wide = make_workload(["sink_local", "diffuse"], temperature=0.15, seed=1, **opts)
    return [(sharp.q, sharp.k), (wide.q, wide.k)]


def _candidate(entry: dict) -> tuple:
    """(name, fields) of a config entry, as the candidates list spells it."""
    return entry["method"], {k: v for k, v in entry.items() if k != "method"}


def test_picks_the_cheapest_candidate_that_reaches_the_target():
    qk = layers()
    result = calibrate(qk, 0.95, CANDIDATES)
    chosen = {
        layer: [CANDIDATES.index(_candidate(h)) for h in entry["prefill"]]
        for layer, entry in result["layers"].items()
    }
    assert chosen == {"0": [0, 2], "1": [1, 2]}
    # layer 1's local head: the 64-token window misses the target, 256 tokens reach it
    q, k = qk[1]
    narrow = attention_recall(q, k, get_planner(*CANDIDATES[0][:1], **CANDIDATES[0][1]).plan(q, k))
    assert narrow[0, 0] < 0.95
    stats = result["metadata"]["layers"]
    assert stats["1"][0]["recall"] >= 0.95 and stats["0"][1]["recall"] == pytest.approx(1.0)
    assert stats["0"][0]["density"] < stats["1"][0]["density"] < stats["1"][1]["density"] == 1.0
    assert result["metadata"]["target_recall"] == 0.95


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_key_is_refused_not_calibrated(bad):
    """One key row of inf gave its rows a non-finite dense lse, which the recall left out as rows
    without keys: a head read recall 1 and was written at a density that recalls half."""
    (q, k), _ = layers()
    k = k.clone()
    k[0, 0, 40] = bad
    with pytest.raises(ValueError, match=r"^qk_per_layer\[0\]: q and k must be finite"):
        calibrate([(q, k)], 0.9, CANDIDATES)


def test_logits_that_overflow_are_refused_not_calibrated():
    """Finite q and k whose products overflow float32 give the same non-finite recall."""
    (q, k), _ = layers()
    k = k.clone()
    k[0, 0, 40] = 1e37
    with pytest.raises(ValueError, match=r"qk_per_layer\[0\]: the attention recall is not finite"):
        calibrate([(q, k)], 0.9, CANDIDATES)


@pytest.mark.parametrize(
    ("qk", "pattern"),
    [
        ([], r"^qk_per_layer: expected at least one \(q, k\) layer"),
        (
            [(torch.randn(1, 4, 0, 16), torch.randn(1, 2, 0, 16))],
            r"^qk_per_layer\[0\]: expected no empty dimension",
        ),
    ],
)
def test_nothing_to_calibrate_is_refused_before_the_progress_bar(qk, pattern, capsys):
    with pytest.raises(ValueError, match=pattern):
        calibrate(qk, 0.9, CANDIDATES)
    assert capsys.readouterr().err == ""


def test_without_a_candidate_reaching_the_target_the_best_recall_wins():
    result = calibrate(layers()[:1], 0.999999, CANDIDATES[:2])
    # both heads recall best with the wider window (the diffuse head needs it): one entry
    assert result["layers"]["0"]["prefill"] == {"method": "streaming", **CANDIDATES[1][1]}


def test_heads_of_one_choice_get_one_entry_and_share_kv_group_is_refused():
    """Every head of a layer on one candidate: the candidate itself, one plan as measured, not a
    per-head list of H plans. A share_kv_group candidate, measured here with its KV group planned
    together, ran each head alone once written per head (recall 0.3885 recorded, 0.4204 run, in
    the review's reproducer): refused per head, taken per layer."""
    sharp = CANDIDATES[0]
    result = calibrate(layers()[:1], 0.0, [sharp])
    assert result["layers"]["0"]["prefill"] == {"method": "streaming", **sharp[1]}
    shared = ("vertical_slash", {"vertical_size": 64, "slash_size": 128, "share_kv_group": True})
    with pytest.raises(ValueError, match=r"^candidates\[1\]: share_kv_group plans the query"):
        calibrate(layers()[:1], 0.9, [sharp, shared])
    calibrate(layers()[:1], 0.9, [sharp, shared], granularity="layer")


def test_per_layer_takes_the_fastest_choices_whose_mean_recall_reaches_the_target(tmp_path):
    opts = dict(seq_len=512, head_dim=32, num_columns=2, num_spans=1, local_window=16)
    local = make_workload(["sink_local", "sink_local"], temperature=0.05, **opts)
    qk = {0: (local.q, local.k), 3: layers()[0]}  # layer 3: a sharp local and a diffuse head
    slow = CostModel(dense_tflops={16: 1e-3}, sparse_tflops={16: 1e-3})  # attention dwarfs planning
    window = {c[1]["window_tokens"]: {"method": "streaming", **c[1]} for c in CANDIDATES[:2]}
    # layer 0's 64-token window keeps ~0.999, so layer 3 may keep less than 0.97 (its 256-token
    # window: ~0.95) and the mean still reach 0.97
    result = calibrate(qk, 0.97, CANDIDATES, granularity="layer", cost=slow)
    assert [e["prefill"] for e in result["layers"].values()] == [window[64], window[256]]
    meta = result["metadata"]
    assert meta["granularity"] == "layer" and 0.97 <= meta["mean_recall"] < 0.99
    record = meta["layers"]["3"]
    assert record["recall"] < 0.97 and record["density"] < 1.0
    assert record["by_candidate"]["recall"][2] == pytest.approx(1.0)  # dense, as a candidate
    assert meta["predicted_ms"] == pytest.approx(
        sum(r["predicted_ms"] for r in meta["layers"].values())
    )
    # at 0.99 the diffuse head needs dense: no planner there
    strict = calibrate(qk, 0.99, CANDIDATES, granularity="layer", cost=slow)
    assert [e["prefill"] for e in strict["layers"].values()] == [window[64], None]
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(result))
    planner = AttentionConfig.from_json(path).planner(3)
    assert planner == get_planner("streaming", window_tokens=256, **BLOCKS)
    # planning dearer than dense attention: dense everywhere, although streaming would do
    dear = {"streaming": (1e9, 1e9, 1e9)}
    costly = replace(slow, plan_ms={**slow.plan_ms, **dear}, graph_plan_ms=dear)
    result = calibrate(qk, 0.97, CANDIDATES, granularity="layer", cost=costly)
    assert [e["prefill"] for e in result["layers"].values()] == [None, None]
    # a target no choice reaches: the best recall of each layer
    unreachable = calibrate(qk, 0.999999, CANDIDATES[:2], granularity="layer", cost=slow)
    assert [e["prefill"] for e in unreachable["layers"].values()] == [window[256]] * 2
    assert not unreachable["metadata"]["target_reached"] and result["metadata"]["target_reached"]
    with pytest.raises(TypeError, match="cost"):
        calibrate(qk, 0.95, CANDIDATES, granularity="layer", cost="cost")
    with pytest.raises(ValueError, match="granularity"):
        calibrate(qk, 0.95, CANDIDATES, granularity="layers")


@pytest.mark.parametrize(
    "ms, recall, target, want",
    [
        # two equal layers: one moving up is enough, not both (the Lagrangian moves both)
        ([[1, 5], [1, 5]], [[0.9, 1.0], [0.9, 1.0]], 0.95, [[0, 1], [1, 0]]),
        ([[0, 10], [0, 11]], [[0.8, 1.0], [0.8, 1.0]], 0.9, [[1, 0]]),
        ([[1, 2]], [[0.9, 1.0]], 0.9, [[0]]),  # met exactly (float32 recall), no dearer choice
        ([[3, 1, 2]], [[0.5, 0.5, 0.4]], 0.99, [[1]]),  # unreachable: best recall, cheapest
    ],
)
def test_allocation_spends_the_least_time_that_reaches_the_mean(ms, recall, target, want):
    choice, reached = allocate(torch.tensor(ms, dtype=torch.float32), torch.tensor(recall), target)
    assert choice in want and reached == (target < 0.99)


def test_allocation_over_many_heads_keeps_the_mean_with_coarser_steps():
    """1024 rows (32 layers x 32 heads) take steps of 1 / 256: at most 2^18 states, and the
    chosen recalls still average at least the target."""
    g = torch.Generator().manual_seed(0)
    recall = torch.rand(1024, 6, generator=g).sort(1).values
    recall[:, -1] = 1.0
    ms = recall + 0.01 * torch.rand(1024, 6, generator=g)
    choice, reached = allocate(ms, recall, 0.9)
    chosen = recall[torch.arange(1024), choice]
    assert reached and float(chosen.mean()) >= 0.9
    assert float(chosen.mean()) < 0.9 + 0.01  # not the best recall everywhere: a real trade


def test_allocation_is_the_least_time_of_every_choice_that_reaches_the_target():
    """Against brute force on random layers, candidates off the convex hull among them (where a
    Lagrangian relaxation never picks); recalls on a 1e-3 grid, so counting them in 1e-4 steps
    loses nothing."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        layers, count = (int(x) for x in torch.randint(1, 5, (2,), generator=gen))
        ms = torch.rand(layers, count, generator=gen) * 100
        recall = torch.randint(500, 1001, (layers, count), generator=gen) / 1000
        target = float(torch.randint(500, 1001, (), generator=gen)) / 1000
        reachable = [
            (sum(float(ms[r, c]) for r, c in enumerate(pick)), pick)
            for pick in itertools.product(range(count), repeat=layers)
            if sum(float(recall[r, c]) for r, c in enumerate(pick)) >= target * layers - 1e-6
        ]
        choice, reached = allocate(ms, recall, target)
        assert reached == bool(reachable)
        if reachable:
            spent = sum(float(ms[r, c]) for r, c in enumerate(choice))
            assert spent == pytest.approx(min(reachable)[0], abs=1e-9)
            assert float(recall.gather(1, torch.tensor(choice)[:, None]).mean()) >= target - 1e-6


@pytest.mark.parametrize("target", [0.9, 0.95, 0.99])
def test_mean_recall_takes_the_sparsest_heads_whose_mean_reaches_the_target(target):
    """Against every combination of the heads' candidates (3 ** 4): the least summed density whose
    mean recall over both layers' heads reaches the target, recorded per head."""
    qk = layers()
    each = calibrate(qk, target, CANDIDATES)["metadata"]["layers"]
    result = calibrate(qk, target, CANDIDATES, mean_recall=True)
    # per head alone, every candidate's (recall, density) from a one-candidate run
    table = [
        [calibrate(qk, 0.0, [c])["metadata"]["layers"][str(i)][h] for c in CANDIDATES]
        for i in range(2) for h in range(2)
    ]  # fmt: skip
    best = min(
        (sum(table[r][c]["density"] for r, c in enumerate(pick)), pick)
        for pick in itertools.product(range(3), repeat=4)
        if sum(table[r][c]["recall"] for r, c in enumerate(pick)) / 4 >= target
    )
    records = [r for layer in ("0", "1") for r in result["metadata"]["layers"][layer]]
    assert sum(r["density"] for r in records) == pytest.approx(best[0], abs=1e-6)
    assert result["metadata"]["mean_recall"] >= target and result["metadata"]["target_reached"]
    each_density = sum(r["density"] for layer in ("0", "1") for r in each[layer])
    assert sum(r["density"] for r in records) <= each_density + 1e-6


def test_mean_recall_is_per_head_only():
    with pytest.raises(ValueError, match="mean_recall"):
        calibrate(layers(), 0.9, CANDIDATES, granularity="layer", mean_recall=True)


def test_json_round_trips_into_per_head_planners(tmp_path):
    qk = layers()
    result = calibrate(qk, 0.95, CANDIDATES)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(result))
    config = AttentionConfig.from_json(path)
    assert sorted(config.layers) == [0, 1]
    for layer, (q, k) in enumerate(qk):
        planner = config.planner(layer)
        assert isinstance(planner, PerHeadPlanner)
        got = planner.plan(q, k).block_mask()
        for h, entry in enumerate(result["layers"][str(layer)]["prefill"]):
            name, fields = _candidate(entry)
            want = get_planner(name, **fields).plan(q, k)
            assert torch.equal(got[:, h], want.block_mask().expand(1, 2, -1, -1)[:, h])


def test_a_per_head_mix_of_block_sizes_plans_each_head_as_its_planner():
    """calibrate's default candidates mix vertical_slash's 64-token blocks with 128-token ones:
    a layer's per-head mix is stacked at the smallest blocks (it was refused as layouts of
    another geometry, so `attnsieve run` could not run what calibrate wrote)."""
    q, k = torch.randn(1, 4, 700, 32), torch.randn(1, 2, 700, 32)
    planners = [
        get_planner("vertical_slash", vertical_size=64, slash_size=128, last_q=32),
        get_planner("streaming", window_tokens=256),
        get_planner("dense"),
        get_planner("vertical_slash", vertical_size=8, slash_size=64, last_q=32),
    ]
    got = PerHeadPlanner(planners).plan(q, k)
    assert (got.block_q, got.block_k) == (64, 64)
    for h, planner in enumerate(planners):
        want = planner.plan(q[:, h : h + 1], k[:, h // 2 : h // 2 + 1])
        assert torch.equal(got.to_dense_mask()[:, h], want.to_dense_mask()[:, 0])


def test_heads_that_all_choose_vertical_slash_get_one_entry_with_per_head_budgets(tmp_path):
    """A sink+local head and a vertical head need different budgets: the layer's entry is one
    vertical_slash with a budget list per field (one plan a layer), which plans every head as
    its chosen candidate alone, and reads back through the config."""
    w = make_workload(["sink_local", "vertical", "slash", "retrieval"], num_kv_heads=2,
                      seq_len=512, head_dim=32, num_columns=4, local_window=16)  # fmt: skip
    vs = [("vertical_slash", {"vertical_size": v, "slash_size": s, "last_q": 32, **BLOCKS})
          for v in (0, 8, 64) for s in (0, 16, 128)]  # fmt: skip
    result = calibrate([(w.q, w.k)], 0.9, vs)
    entry = result["layers"]["0"]["prefill"]
    assert entry["method"] == "vertical_slash" and len(entry["vertical_size"]) == 4
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(result))
    got = AttentionConfig.from_json(path).planner(0).plan(w.q, w.k).to_dense_mask(causal=True)
    chosen = list(zip(entry["vertical_size"], entry["slash_size"], strict=True))
    assert len(set(chosen)) > 1  # the heads did not all choose alike
    for h, (v, s) in enumerate(chosen):
        alone = get_planner("vertical_slash", vertical_size=v, slash_size=s, last_q=32, **BLOCKS)
        assert torch.equal(got[:, h], alone.plan(w.q, w.k).to_dense_mask(causal=True)[:, h])


def test_cli_with_captured_qk(tmp_path, capsys):
    qk_path, cand_path, out = tmp_path / "qk.pt", tmp_path / "cands.json", tmp_path / "out.json"
    torch.save(layers()[:1], qk_path)
    cand_path.write_text(json.dumps([list(c) for c in CANDIDATES]))
    args = ["--qk", str(qk_path), "--candidates", str(cand_path), "--output", str(out)]
    import argparse

    from attnsieve.eval.calibrate import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args([*args, "--device", "cpu", "--target-recall", "0.9"])) == 0
    result = json.loads(out.read_text())
    assert len(result["layers"]["0"]["prefill"]) == 2 and result["metadata"]["target_recall"] == 0.9
    assert "mean density" in capsys.readouterr().out
    assert main(parser.parse_args([*args, "--device", "cpu", "--per-layer"])) == 0
    per_layer = json.loads(out.read_text())
    # 512 tokens: dense attention costs less than any plan by the H200's cost model
    assert per_layer["layers"]["0"]["prefill"] is None
    assert per_layer["metadata"]["granularity"] == "layer"
    assert len(per_layer["metadata"]["layers"]["0"]["by_candidate"]["ms"]) == len(CANDIDATES)
    assert "1 layers, mean density" in capsys.readouterr().out
    assert main(parser.parse_args([*args, "--device", "cpu", "--mean-recall"])) == 0
    mean = json.loads(out.read_text())["metadata"]
    assert mean["heads_jointly"] and mean["mean_recall"] >= 0.95 and mean["target_reached"]
    with pytest.raises(ValueError, match="--mean-recall: not used with --per-layer"):
        main(parser.parse_args([*args, "--per-layer", "--mean-recall"]))


@pytest.mark.parametrize("r", ["-1", "33"])  # head_dim 32
def test_cli_label_channels_out_of_range_is_named(tmp_path, r, monkeypatch):
    """A bad --label-channels is refused under its own name, before the calibration runs (it
    reached calibrate_label_channels as "r" after every layer had been calibrated)."""
    import argparse

    from attnsieve.eval import calibrate as module
    from attnsieve.eval.calibrate import add_arguments

    qk_path, cand_path = tmp_path / "qk.pt", tmp_path / "cands.json"
    torch.save(layers()[:1], qk_path)
    cand_path.write_text(json.dumps(CANDIDATES))
    monkeypatch.setattr(module, "calibrate", lambda *a, **k: pytest.fail("checked too late"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--qk", str(qk_path), "--candidates", str(cand_path), "--device", "cpu"]
    args = parser.parse_args([*argv, "--label-channels", r, "--output", str(tmp_path / "o.json")])
    with pytest.raises(ValueError, match="--label-channels"):
        main(args)
    assert not (tmp_path / "o.json").exists()


def test_capture_qk_from_a_transformers_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    captured = capture_qk(model, torch.randint(0, 64, (1, 40)))
    assert list(captured) == [0, 1]  # the model's layer indices
    shapes = [(q.shape, k.shape) for q, k in captured.values()]
    assert shapes == [((1, 4, 40, 16), (1, 2, 40, 16))] * 2
    assert model.config._attn_implementation == "sdpa"
    result = calibrate(captured, 0.9, [("dense", BLOCKS)])
    assert len(result["layers"]) == 2
    model.model.layers[1].self_attn.layer_idx = 5  # attention layers 0 and 5, as in a hybrid model
    captured = capture_qk(model, torch.randint(0, 64, (1, 40)))
    assert list(captured) == [0, 5]
    assert set(calibrate(captured, 0.9, [("dense", BLOCKS)])["layers"]) == {"0", "5"}


def test_capture_qk_rescales_queries_of_a_model_scale_to_1_over_sqrt_d():
    """Gemma 3 scales by query_pre_attn_scalar^-0.5, not head_dim^-0.5: recall and the planners
    here assume the latter, so q comes at it."""
    from attnsieve.integrations.transformers import observe_attention

    transformers = pytest.importorskip("transformers")
    config = transformers.Gemma3TextConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=64,
        layer_types=["full_attention"],
    )  # fmt: skip
    model = transformers.Gemma3ForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    ids = torch.randint(0, 64, (1, 40))
    seen = {}

    def keep(module, query, key, value, scaling):
        seen.update(q=query, k=key, scale=scaling)

    with observe_attention(model, keep), torch.no_grad():
        model(input_ids=ids, use_cache=False)
    assert seen["scale"] == 64**-0.5
    q, k = capture_qk(model, ids)[0]
    torch.testing.assert_close(q, seen["q"] * (16 / 64) ** 0.5)
    torch.testing.assert_close(k, seen["k"])


@pytest.mark.parametrize(
    "kwargs,error,field",
    [
        ({"target_recall": 1.5}, ValueError, "target_recall"),
        ({"candidates": []}, ValueError, "candidates"),
        ({"candidates": [("dense",)]}, ValueError, "candidates"),
        ({"candidates": [("nope", {})]}, ValueError, "name"),
    ],
)
def test_bad_arguments(kwargs, error, field):
    with pytest.raises(error, match=field):
        calibrate(layers()[:1], **kwargs)


def _tiny_llama(attn="sdpa"):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn).eval()
    for p in model.model.layers.parameters():  # peakier attention: scores that differ
        p.data.mul_(3.0)
    return model


def test_retrieval_heads_score_the_model_s_own_attention():
    """Scores equal echo_induction_scores over the eager attention's probabilities (max over a
    KV head's query heads); the picks are the top 1 % by echo and 14 % by induction."""
    from attnsieve.eval.retrieval_heads import retrieval_heads
    from attnsieve.methods.kv import echo_induction_scores

    model = _tiny_llama()
    tokens = torch.randperm(60)[:12].repeat(4)[None]
    heads, echo, induction = retrieval_heads(model, tokens, echo=0.2, induction=0.34)
    assert echo.shape == induction.shape == (3, 2)
    eager = _tiny_llama("eager")
    with torch.no_grad():
        probs = eager(input_ids=tokens, output_attentions=True).attentions
    for layer, p in enumerate(probs):
        want_echo, want_induction = (
            s.view(2, 2).amax(-1) for s in echo_induction_scores(p, tokens)
        )
        torch.testing.assert_close(echo[layer], want_echo)
        torch.testing.assert_close(induction[layer], want_induction)
    picked = set(echo.flatten().topk(2).indices.tolist()) | set(
        induction.flatten().topk(3).indices.tolist()
    )  # ceil(0.2 * 6) = 2, ceil(0.34 * 6) = 3
    assert {2 * layer + h for layer, hs in heads.items() for h in hs} == picked


def test_retrieval_probe_leaves_out_the_byte_tokenizer_s_special_tokens():
    """The probe's byte tokenizer has no all_special_ids: its PAD, BOS and EOS (256-258) were
    drawn among the random tokens."""
    from attnsieve.eval.probe.tokenizer import ByteTokenizer
    from attnsieve.eval.retrieval_heads import repeated_random_tokens

    tokens = repeated_random_tokens(ByteTokenizer())
    assert tokens.shape == (1, 1024) and int(tokens.max()) < 256


def test_retrieval_heads_cli_writes_a_razor_entry_that_eval_and_config_take(tmp_path, monkeypatch):
    import argparse

    from attnsieve.eval import calibrate as module
    from attnsieve.eval.calibrate import add_arguments
    from attnsieve.eval.sweep_args import add_arguments as eval_arguments
    from attnsieve.eval.sweep_args import method_configs

    model = _tiny_llama()
    tokenizer = type("Tok", (), {"all_special_ids": [0, 1], "__len__": lambda self: 64})()
    monkeypatch.setattr(
        "attnsieve.eval.models.load_model", lambda *a, **k: (model, tokenizer, "tiny")
    )
    out = tmp_path / "razor_tiny.json"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert module.main(parser.parse_args(["--model", "x", "--retrieval-heads", str(out)])) == 0
    entry = json.loads(out.read_text())
    assert entry["method"] == "razor" and all(k.isdigit() for k in entry["retrieval_heads"])
    parser = argparse.ArgumentParser()
    eval_arguments(parser)
    args = parser.parse_args(
        ["--model", "x", "--methods", "dense", "--kv", f"none,{out}", "--kv-ratio", "0.3"]
    )
    (_, plain), (label, config) = method_configs(args)
    assert plain.policy(0) is None and label == "dense+razor_tiny@0.3"
    unsized = tmp_path / "unsized.json"
    unsized.write_text(json.dumps({**entry, "budget": None, "ratio": None}))
    args.kv = str(unsized)
    (label_unsized, _), *_ = method_configs(args)
    assert label_unsized == "dense+unsized@0.3"  # null budget and ratio: --kv-ratio
    policy = config.policy(0)
    assert policy.ratio == 0.3
    assert policy.retrieval_heads == {int(k): v for k, v in entry["retrieval_heads"].items()}
    with pytest.raises(ValueError, match="needs --model"):
        module.main(parser_for_qk(tmp_path, out))


def parser_for_qk(tmp_path, out):
    import argparse

    from attnsieve.eval.calibrate import add_arguments

    qk = tmp_path / "qk.pt"
    torch.save(layers()[:1], qk)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--qk", str(qk), "--retrieval-heads", str(out)])


def _cli_error(capsys, argv):
    """The one-line message of ``attnsieve calibrate ARGV``, which must exit 2."""
    from attnsieve import cli

    assert cli.main(["calibrate", *argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnsieve calibrate: error: "), err
    return err[0].removeprefix("attnsieve calibrate: error: ")


@pytest.mark.parametrize(
    "text",
    [
        "5",
        '{"streaming": {}}',
        '"dense"',
        "[]",
        "[5]",
        "[1",
        '[["nope", {}]]',  # these two were found only after the model had loaded and run
        '[["streaming", {"window_tokens": -1}]]',
        # one candidate twice (its default spelled out): measured twice, and tied with itself
        '[["streaming", {}], ["dense", {}], ["streaming", {"sink_tokens": 4}]]',
    ],
)
def test_cli_candidates_file_of_another_shape_is_named(tmp_path, capsys, text):
    """A --candidates file that is not a list of pairs is refused under its option's name (a
    number gave "'int' object is not iterable"; a dict's keys were split into letters)."""
    qk, cands = tmp_path / "qk.pt", tmp_path / "cands.json"
    torch.save(layers()[:1], qk)
    cands.write_text(text)
    out = tmp_path / "out.json"
    argv = ["--qk", str(qk), "--candidates", str(cands), "--output", str(out)]
    assert _cli_error(capsys, argv).startswith("--candidates: ")
    assert not out.exists()


@pytest.mark.parametrize("where", ["no_such_folder/out.json", ".", "/proc/out.json"])
def test_cli_output_that_cannot_be_written_is_refused_before_calibrating(
    tmp_path, capsys, monkeypatch, where
):
    """--output (and --retrieval-heads' PATH) in a missing folder, naming a folder, or where no
    file can be made (/proc, whose permission bits let root through) fails before the calibration
    (or the model) runs, not after; the probe leaves no file behind."""
    if where.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    from attnsieve.eval import calibrate as module

    monkeypatch.setattr(module, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    monkeypatch.setattr("attnsieve.eval.models.load_model", lambda *a, **k: pytest.fail("loaded"))
    qk = tmp_path / "qk.pt"
    torch.save(layers()[:1], qk)
    path = str(tmp_path / where)
    assert _cli_error(capsys, ["--qk", str(qk), "--output", path]).startswith("--output: ")
    message = _cli_error(capsys, ["--model", "x", "--retrieval-heads", path])
    assert message.startswith("--retrieval-heads: ")


def test_cli_output_probe_leaves_no_file(tmp_path):
    from attnsieve.eval.calibrate import _check_output

    _check_output(str(tmp_path / "new.json"), "--output")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.json").write_text("kept")
    _check_output(str(tmp_path / "old.json"), "--output")
    assert (tmp_path / "old.json").read_text() == "kept"


def test_cli_options_of_the_other_mode_are_refused(tmp_path, capsys, monkeypatch):
    """Options --retrieval-heads ignores are refused with it, naming them, and its own ratios
    without it."""
    monkeypatch.setattr("attnsieve.eval.models.load_model", lambda *a, **k: pytest.fail("loaded"))
    out = str(tmp_path / "razor.json")
    argv = ["--model", "x", "--retrieval-heads", out, "--label-channels", "4", "--per-layer"]
    assert _cli_error(capsys, argv) == (
        "--per-layer, --label-channels: not used with --retrieval-heads"
    )
    argv = ["--model", "x", "--echo-ratio", "0.1", "--output", out]
    assert _cli_error(capsys, argv) == "--echo-ratio: used only with --retrieval-heads"


def test_cli_an_empty_output_path_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """--retrieval-heads '' was read as "not given" and ran a whole calibration instead, and
    --output '' failed only after the calibration: both are refused by the output check."""
    from attnsieve.eval import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    message = _cli_error(capsys, ["--model", "probe", "--retrieval-heads", ""])
    assert message.startswith("--retrieval-heads: expected a path")
    qk = tmp_path / "qk.pt"
    torch.save(layers()[:1], qk)
    message = _cli_error(capsys, ["--qk", str(qk), "--output", ""])
    assert message.startswith("--output: expected a path")


def test_cli_sample_options_with_qk_are_refused(tmp_path, capsys):
    """--length, --prompt-file and --rope-scale shape the sample a --model is run on: with --qk
    (captured q, k) they would be ignored, so they are refused, naming them."""
    qk = tmp_path / "qk.pt"
    torch.save(layers()[:1], qk)
    argv = ["--qk", str(qk), "--length", "4096", "--rope-scale", "4"]
    assert _cli_error(capsys, argv) == (
        "--length, --rope-scale: shape the sample of --model, not used with --qk"
    )


def test_cli_a_sample_longer_than_the_model_is_refused(tiny_probe_dir, capsys, monkeypatch):
    """Checked against the model's config before its weights load: one line, nothing loaded."""
    from attnsieve.eval import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    positions = json.loads((tiny_probe_dir / "config.json").read_text())["max_position_embeddings"]
    message = _cli_error(capsys, ["--model", str(tiny_probe_dir), "--length", str(positions + 1)])
    assert message.startswith(f"--length: expected 1 to {positions} tokens")


def test_cli_label_channels_past_the_head_dim_are_refused_before_the_model_loads(
    tiny_probe_dir, tmp_path, capsys, monkeypatch
):
    """Read from the model's config (head_dim 64): it was checked on the captured q, after the
    weights had loaded and the sample had run."""
    from attnsieve.eval import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    argv = ["--model", str(tiny_probe_dir), "--length", "512", "--label-channels", "65",
            "--output", str(tmp_path / "o.json")]  # fmt: skip
    assert (
        _cli_error(capsys, argv)
        == "--label-channels: expected at most the head dimension 64, got 65"
    )


@pytest.mark.parametrize(
    "content, message", [(None, "no such file"), (b"\xff\xfe\x00", "is not UTF-8 text")]
)
def test_cli_a_bad_prompt_file_is_refused_before_the_model_loads(
    tiny_probe_dir, tmp_path, capsys, monkeypatch, content, message
):
    """It was read after the model loaded, a missing file as a bare [Errno 2]."""
    from attnsieve.eval import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    prompt = tmp_path / "prompt.txt"
    if content is not None:
        prompt.write_bytes(content)
    argv = ["--model", str(tiny_probe_dir), "--length", "64", "--prompt-file", str(prompt)]
    error = _cli_error(capsys, argv)
    assert error.startswith("--prompt-file: ") and message in error


def test_cli_qk_dict_keys_must_be_layer_numbers(tmp_path, capsys):
    qk = tmp_path / "qk.pt"
    torch.save({"layer0": layers()[0]}, qk)
    assert _cli_error(capsys, ["--qk", str(qk)]) == (
        "--qk: expected layer numbers >= 0 as the dict's keys, got ['layer0']"
    )


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--target-recall", "1.5", "--length", "256"], "--target-recall"),
        (["--retrieval-heads", "RAZOR", "--echo-ratio", "2"], "--echo-ratio"),
        (["--retrieval-heads", "RAZOR", "--induction-ratio", "-0.1"], "--induction-ratio"),
    ],
)
def test_cli_a_ratio_out_of_range_is_refused_before_the_model_loads(
    tmp_path, capsys, monkeypatch, argv, option
):
    """They were checked by calibrate() and retrieval_heads(), after the model and its sample."""
    from attnsieve.eval import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    argv = [str(tmp_path / "razor.json") if a == "RAZOR" else a for a in argv]
    message = _cli_error(capsys, ["--model", "probe", *argv])
    assert message.startswith(f"{option}: expected a number in [0.0, 1.0], got ")


def test_cli_model_sample_is_the_whole_prompt_with_bos_and_the_file_means_one_thing(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """The generated sample took --length tokens of the prompt and then the tokenizer's BOS, and
    the cut dropped the prompt's last token (the question's end); the file wrote no
    min_prefill_length, so eval (1) and run (2048) ran it differently."""
    import argparse

    from attnsieve import cli
    from attnsieve.eval import calibrate as module
    from attnsieve.eval.probe.tokenizer import ByteTokenizer
    from attnsieve.eval.sweep_args import add_arguments, method_configs
    from attnsieve.eval.tasks import make_samples

    seen = []
    monkeypatch.setattr(module, "capture_qk", lambda model, ids: seen.append(ids) or layers()[:1])
    cands, out = tmp_path / "cands.json", tmp_path / "cal.json"
    cands.write_text(json.dumps(CANDIDATES))
    argv = ["calibrate", "--model", str(tiny_probe_dir), "--length", "415", "--device", "cpu"]
    assert cli.main([*argv, "--candidates", str(cands), "--output", str(out)]) == 0
    [ids] = seen
    tokenizer = ByteTokenizer()
    # 415: the length at which the prompt alone takes every token, so the cut dropped one
    assert make_samples("niah_single", tokenizer, 415, 1, 0, answer_room=False)[0].num_tokens == 415
    prompt = make_samples("niah_single", tokenizer, 414, 1, 0, answer_room=False)[0].prompt
    assert ids.tolist() == [tokenizer.encode(prompt)] and ids.shape[1] <= 415
    assert ids[0, 0] == tokenizer.bos_token_id
    written = json.loads(out.read_text())
    assert written["min_prefill_length"] == AttentionConfig.min_prefill_length
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    [(_, in_eval)] = method_configs(parser.parse_args(["--model", "x", "--methods", str(out)]))
    assert in_eval.min_prefill_length == AttentionConfig.from_json(out).min_prefill_length


@pytest.mark.parametrize("length, plus", [("300", ""), ("362", " and the tokenizer adds 1")])
def test_cli_a_length_too_short_for_the_generated_sample_names_the_option(
    tiny_probe_dir, capsys, length, plus
):
    """It was make_samples' own "length=300 is too short for task 'niah_single'"; 362 holds the
    prompt alone but not its BOS too (it was cut instead)."""
    from attnsieve import cli

    argv = ["calibrate", "--model", str(tiny_probe_dir), "--length", length, "--device", "cpu"]
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()  # before the weights' loading bar
    message = line.removeprefix("attnsieve calibrate: error: ")
    assert message.startswith(f"--length: {length} tokens cannot hold the generated sample: its ")
    assert message.endswith(f" tokens{plus}")


def test_short_of_the_target_the_sparsest_of_the_best_recall_wins():
    """A head no candidate brings to the target took the first candidate of the highest recall,
    though a later one of that recall computes fewer pairs (``mean_recall`` took the sparser).
    Here the wider sink adds key block 1, which holds no weight."""
    n, d = 512, 32
    q, k = torch.zeros(1, 1, n, d), torch.zeros(1, 1, n, d)
    q[..., 0], k[..., 0] = 20 * d**0.5, -1.0
    k[:, :, :32, 0] = k[:, :, 160:192, 0] = 1.0  # the mass: the sink block and block 5
    wide, narrow = ({"sink_tokens": s, "window_tokens": 64, **BLOCKS} for s in (64, 4))
    candidates = [("streaming", wide), ("streaming", narrow)]
    for mean_recall in (False, True):
        result = calibrate([(q, k)], 0.99, candidates, mean_recall=mean_recall)
        assert _candidate(result["layers"]["0"]["prefill"]) == candidates[1]
        assert result["metadata"]["layers"]["0"][0]["recall"] < 0.99


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (lambda q, k: (q[0], k[0]), ValueError, "q: expected 4 dims"),
        (lambda q, k: (q.double(), k.double()), TypeError, "q: expected dtype in"),
        (lambda q, k: (q, k.half()), TypeError, "q, k: expected one dtype"),
        (lambda q, k: (q, k[:, :, :0]), ValueError, "expected no empty dimension"),
        (lambda q, k: (q * math.nan, k), ValueError, "q and k must be finite"),
    ],
)
def test_cli_a_bad_qk_layer_is_named_before_any_layer_is_calibrated(
    tmp_path, monkeypatch, bad, error, message
):
    """Layer 1 was checked by calibrate() after layer 0 had been calibrated, in a message naming
    neither --qk nor the layer."""
    import argparse

    from attnsieve.eval import calibrate as module
    from attnsieve.eval.calibrate import add_arguments

    qk = tmp_path / "qk.pt"
    torch.save([layers()[0], bad(*layers()[1])], qk)
    monkeypatch.setattr(module, "calibrate", lambda *a, **k: pytest.fail("checked too late"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--qk", str(qk), "--device", "cpu", "--output", str(tmp_path / "o")])
    with pytest.raises(error, match=f"^--qk: layer 1: {message}"):
        main(args)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (lambda q, k: (q[0], k[0]), ValueError, "q: expected 4 dims"),
        (lambda q, k: (q.double(), k.double()), TypeError, "q: expected dtype in"),
        (lambda q, k: (q, k.half()), TypeError, "q, k: expected one dtype"),
        (lambda q, k: (q,), ValueError, "expected a \\(q, k\\) pair of tensors"),
    ],
)
def test_a_bad_layer_is_named_before_any_layer_is_calibrated(monkeypatch, bad, error, message):
    """calibrate() checked each layer inside its loop: a bad last layer failed after every layer
    before it had been calibrated, in a message naming neither qk_per_layer nor the layer."""
    from attnsieve.eval import calibrate as module

    monkeypatch.setattr(module, "dense_attention", lambda *a, **k: pytest.fail("checked too late"))
    good, last = layers()[:2]
    with pytest.raises(error, match=f"^qk_per_layer\\[7\\]: {message}"):
        calibrate({3: good, 7: bad(*last)})


def test_cli_label_channels_with_fewer_keys_than_queries_are_refused_before_calibrating(
    tmp_path, monkeypatch
):
    """calibrate_label_channels pairs each query with its own key: N > M failed there, after the
    whole calibration, naming its own arguments."""
    import argparse

    from attnsieve.eval import calibrate as module
    from attnsieve.eval.calibrate import add_arguments

    q, k = layers()[0]
    qk = tmp_path / "qk.pt"
    torch.save([(q, k[:, :, :100])], qk)
    monkeypatch.setattr(module, "calibrate", lambda *a, **k: pytest.fail("checked too late"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--qk", str(qk), "--device", "cpu", "--output", str(tmp_path / "o.json")]
    args = parser.parse_args([*argv, "--label-channels", "4"])
    with pytest.raises(ValueError, match=r"^--label-channels: expected N <= M .* N=512, M=100"):
        main(args)


def test_cli_qk_that_is_not_a_tensor_file_is_refused_without_torchs_unsafe_advice(tmp_path, capsys):
    """torch.load's weights_only refusal was passed on whole, advising to load with
    weights_only=False: "arbitrary code execution" for a file the user only mistyped."""
    qk = tmp_path / "qk.json"
    qk.write_text("{}")
    message = _cli_error(capsys, ["--qk", str(qk)])
    reads = "is not a file of tensors that torch.load(weights_only=True) reads"
    assert message == f"--qk: {qk} {reads}"
