"""KV-cache compression policies (methods/kv): the Kept contract, budgets, planted structure."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnsieve.cache import Cache
from attnsieve.methods.kv import (
    A2SF,
    H2O,
    POLICIES,
    AdaKV,
    KVView,
    PyramidKV,
    RazorAttention,
    SnapKV,
    StreamingLLM,
    echo_induction_scores,
    get_policy,
)
from attnsieve.methods.kv.base import top_mask

D = 16


def make_view(lengths, g=2, window=8, seq_len=None, layer=0, num_layers=4, seed=0, nan_pad=True):
    """A cache view with ragged heads: head (b, h) holds ``lengths[b][h]`` entries, a sorted random
    subset of the sequence's positions that ends with the window's ``window`` positions (earlier
    eviction leaves gaps). Padding keys/values are NaN: a policy that reads them breaks."""
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths, dtype=torch.int32)
    b, h = lens.shape
    n = int(lens.max())
    seq = seq_len or n + 5
    keys = torch.randn(b, h, n, D, generator=gen)
    values = torch.randn(b, h, n, D, generator=gen)
    positions = torch.zeros(b, h, n, dtype=torch.int64)
    for i in range(b):
        for j in range(h):
            m = int(lens[i, j])
            tail = torch.arange(max(seq - window, seq - m), seq)
            early = torch.randperm(seq - window, generator=gen)[: m - len(tail)].sort().values
            positions[i, j, :m] = torch.cat([early, tail])
            positions[i, j, m:] = seq + 100  # padding: beyond every query
    if nan_pad:
        pad = torch.arange(n) >= lens[..., None]
        keys[pad] = float("nan")
        values[pad] = float("nan")
    queries = torch.randn(b, h * g, window, D, generator=gen)
    qpos = torch.arange(seq - window, seq).expand(b, window).clone()
    return KVView(keys, values, positions, lens, queries, qpos, layer, num_layers)


def kept_sets(kept):
    """[b][h] -> set of kept indices, checking the Kept contract on the way."""
    idx, count = kept.idx, kept.count
    assert idx.dtype == torch.int32 and count.dtype == torch.int32
    assert idx.shape[:2] == count.shape
    out = []
    for i in range(idx.shape[0]):
        row = []
        for j in range(idx.shape[1]):
            c = int(count[i, j])
            assert c <= idx.shape[2]
            head = idx[i, j, :c].tolist()
            assert head == sorted(set(head)), "ascending, no duplicates"
            assert bool((idx[i, j, c:] == -1).all()), "padded with -1 past the count"
            row.append(set(head))
        out.append(row)
    return out


def assert_valid(kept, view):
    for i, row in enumerate(kept_sets(kept)):
        for j, head in enumerate(row):
            assert all(0 <= t < int(view.lengths[i, j]) for t in head), "padding never kept"


LENGTHS = [[40, 25, 33], [12, 40, 40]]  # batch 2, 3 KV heads, ragged
SMALL = {"window": 8}  # a window that fits the small views
SCORED = [
    ("streaming", {}),
    ("snapkv", SMALL),
    ("pyramidkv", SMALL),
    ("h2o", SMALL),
    ("a2sf", SMALL),
]


def test_registry_names_every_policy():
    assert set(POLICIES) == {"streaming", "snapkv", "pyramidkv", "h2o", "a2sf", "adakv", "razor"}
    for name, cls in POLICIES.items():
        assert cls.name == name
        assert isinstance(get_policy(name), cls)


def test_the_three_registries_are_reachable_from_attnsieve_methods():
    """attnsieve.methods exported get_planner only: `from attnsieve.methods import get_policy`,
    as a user would write it after get_planner, failed."""
    import attnsieve.methods as methods
    from attnsieve.methods import decode, kv, prefill

    assert (methods.get_planner, methods.PLANNERS) == (prefill.get_planner, prefill.PLANNERS)
    assert (methods.get_policy, methods.POLICIES) == (kv.get_policy, kv.POLICIES)
    assert (methods.get_selector, methods.SELECTORS) == (decode.get_selector, decode.SELECTORS)


LONG = [[3000, 2100, 2501], [900, 3000, 2600]]  # past the default budgets of 2004-2048 tokens


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_with_its_defaults(name):
    """kvpress style: each registered policy, paper defaults, on a ragged GQA view long enough
    for every default budget to evict (on 40-token heads the budget policies kept everything
    and Razor's counts went unchecked: the test could not fail)."""
    view = make_view(LONG, g=4, window=32)
    policy = get_policy(name)
    kept = policy.compress(view)
    assert_valid(kept, view)
    lengths, count = view.lengths.long(), kept.count.long()
    if policy.budget is not None:  # PyramidKV too: no head reaches 2 (budget - window)
        target = lengths.clamp(max=policy.budget)
    else:
        target = torch.floor(policy.ratio * lengths.double() + 0.5).long()
    assert bool((target < lengths).any())
    if name == "adakv":  # the layer's total, spread over its heads
        assert torch.equal(count.sum(-1), target.sum(-1))
    elif name == "razor":  # one retrieval head a row (15 % of 3, rounded up) keeps everything
        whole = count == lengths
        assert whole.sum(-1).tolist() == [1, 1]
        assert torch.equal(count[~whole], target[~whole])
        weight = kept.extra_weight[..., 0][~whole]
        assert torch.equal(weight, (lengths - target)[~whole].float())
    else:
        assert torch.equal(count, target)


@pytest.mark.parametrize("name,fields", SCORED)
@pytest.mark.parametrize("budget", [0, 1, 10, 30])
def test_budget_honoured_exactly(name, fields, budget):
    view = make_view(LENGTHS, layer=1)
    kept = get_policy(name, budget=budget, **fields).compress(view)
    assert_valid(kept, view)
    expected = view.lengths.long().clamp(max=budget)
    if name == "pyramidkv":  # per layer: checked against the schedule in its own test
        expected = get_policy(name, budget=budget, **fields).targets(view)
    assert torch.equal(kept.count.long(), expected)


@pytest.mark.parametrize("name,fields", SCORED)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.55])
def test_ratio_honoured_exactly(name, fields, ratio):
    view = make_view(LENGTHS, layer=1)
    policy = get_policy(name, ratio=ratio, **fields)
    kept = policy.compress(view)
    assert_valid(kept, view)
    if name != "pyramidkv":
        lengths = view.lengths.long()
        assert torch.equal(kept.count.long(), torch.floor(ratio * lengths.double() + 0.5).long())


@pytest.mark.parametrize("name,fields", SCORED)
def test_ratio_target_and_width_round_alike(name, fields):
    """0.043 x 2500 is 107.4999... in float64 and 107.5 in float32: the targets rounded in float32
    (108) and the width of `Kept.idx` in float64 (107), so a head kept one token fewer than its
    own target."""
    view = make_view([[2500]], g=1)
    policy = get_policy(name, ratio=0.043, **fields)
    kept = policy.compress(view)
    if name != "pyramidkv":  # whose width is twice the mean (its layer 0 keeps up to 2c)
        assert policy.max_keep(2500) == 107
        assert policy.targets(view).tolist() == [[107]] == kept.count.tolist()
    assert int(policy.targets(view).max()) <= policy.max_keep(2500)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_full_budget_keeps_everything(name):
    view = make_view(LENGTHS, g=1)
    for fields in ({"budget": 40}, {"budget": 10**6}, {"ratio": 1.0}):
        kept = get_policy(name, **fields).compress(view)
        for i, row in enumerate(kept_sets(kept)):
            for j, head in enumerate(row):
                assert head == set(range(int(view.lengths[i, j])))
        if kept.extra_weight is not None:
            assert bool((kept.extra_weight == 0).all()), "nothing evicted, no compensation"


def test_streaming_keeps_sinks_and_recent():
    view = make_view(LENGTHS)
    kept = kept_sets(StreamingLLM(budget=10, sink=4).compress(view))
    for i, row in enumerate(kept):
        for j, head in enumerate(row):
            n = int(view.lengths[i, j])
            assert head == set(range(4)) | set(range(n - 6, n))


def test_razor_refuses_to_guess_every_head_of_a_layer():
    """15 % of one KV head rounds up to the head: the guess kept the whole cache of a one-KV-head
    (MQA) model, silently. Two heads guess one; given heads are used as given."""
    one = make_view([[20], [12]])
    with pytest.raises(ValueError, match="retrieval_heads: expected a list"):
        RazorAttention(budget=8).compress(one)
    assert RazorAttention(budget=8, retrieval_heads={0: []}).compress(one).count.tolist() == [
        [8],
        [8],
    ]
    two = RazorAttention(budget=8).compress(make_view([[20, 20]])).count.tolist()
    assert sorted(two[0]) == [8, 20]


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_streaming_budget_below_the_sinks_keeps_the_first_tokens(budget):
    """The attention sink is the first token: a budget under ``sink`` keeps the first entries
    (it kept the last of the four sinks, dropping token 0)."""
    kept = kept_sets(StreamingLLM(budget=budget, sink=4).compress(make_view(LENGTHS)))
    assert all(head == set(range(budget)) for row in kept for head in row)


def heavy_hitter_view(lengths, g=2, window=8, hitter=5, seed=0):
    """Every query of every head attends mostly to entry ``hitter`` (not a sink, not recent)."""
    view = make_view(lengths, g=g, window=window, seed=seed)
    keys, queries = view.keys.clone(), view.queries.clone()
    u = F.normalize(torch.randn(D, generator=torch.Generator().manual_seed(1)), dim=0)
    keys[:, :, hitter] = 6 * u
    queries += 6 * u
    return KVView(
        keys, view.values, view.positions, view.lengths, queries, view.query_positions, 0, 4
    )


@pytest.mark.parametrize(
    "policy",
    [
        SnapKV(budget=10, window=4),
        PyramidKV(budget=10, window=4),
        H2O(budget=10, window=4),
        A2SF(budget=10, window=4),
        AdaKV(budget=10, inner=SnapKV(window=4)),
        AdaKV(budget=10, inner=H2O(window=4)),
    ],
    ids=lambda p: type(p).__name__ + ("-" + type(p.inner).__name__ if hasattr(p, "inner") else ""),
)
def test_heavy_hitter_is_kept(policy):
    view = heavy_hitter_view([[40, 30], [36, 40]], window=8)
    for row in kept_sets(policy.compress(view)):
        for head in row:
            assert 5 in head
    # the same budget without scores (StreamingLLM) drops it: the test can fail
    for row in kept_sets(StreamingLLM(budget=10).compress(view)):
        for head in row:
            assert 5 not in head


def snapkv_reference(view, window, kernel, budget):
    """SnapKV written out with loops, head by head (MHA or GQA)."""
    out = []
    for i in range(view.keys.shape[0]):
        row = []
        for j in range(view.keys.shape[1]):
            n = int(view.lengths[i, j])
            k, pos = view.keys[i, j, :n], view.positions[i, j, :n]
            g = view.queries.shape[1] // view.keys.shape[1]
            votes = torch.zeros(n)
            for qh in range(j * g, (j + 1) * g):
                for w in range(window):
                    q = view.queries[i, qh, -window + w]
                    qp = view.query_positions[i, -window + w]
                    logits = (k @ q) / math.sqrt(D)
                    logits[pos > qp] = -math.inf
                    votes += logits.softmax(0) / g
            own = set(torch.nonzero(pos >= view.query_positions[i, -window]).flatten().tolist())
            before = votes[: n - len(own)]  # the official code pools [..., :-window] only
            pooled = F.max_pool1d(before[None, None], kernel, 1, kernel // 2)[0, 0].tolist()
            # pooled score first; its ties (a peak's neighbourhood) broken by the raw vote
            rest = sorted(range(len(pooled)), key=lambda t: (pooled[t], float(votes[t])),
                          reverse=True)  # fmt: skip
            row.append(own | set(rest[: max(budget - len(own), 0)]))
        out.append(row)
    return out


@pytest.mark.parametrize("g", [1, 3])
def test_snapkv_matches_a_loop_reference(g):
    view = make_view([[40, 29], [35, 40]], g=g, window=8, seed=3)
    kept = kept_sets(SnapKV(budget=17, window=8, kernel=5).compress(view))
    assert kept == snapkv_reference(view, 8, 5, 17)


def test_snapkv_absent_queries_and_short_heads():
    """A sequence shorter than the window: absent queries (-1) vote for nothing, no NaN."""
    view = make_view([[6, 12]], window=8, seq_len=12)
    qpos = view.query_positions.clone()
    qpos[:, :3] = -1
    view = KVView(view.keys, view.values, view.positions, view.lengths, view.queries, qpos, 0, 2)
    assert torch.isfinite(SnapKV(window=8).score(view)[:, :, :6]).all()
    kept = SnapKV(budget=5, window=8).compress(view)
    assert_valid(kept, view)
    assert kept.count.tolist() == [[5, 5]]


def test_h2o_keeps_the_recent_half():
    view = make_view(LENGTHS)
    kept = kept_sets(H2O(budget=10, window=8).compress(view))
    for row, lengths in zip(kept, view.lengths, strict=True):
        for head, n in zip(row, lengths.tolist(), strict=True):
            assert set(range(n - 5, n)) <= head


@pytest.mark.parametrize(
    "policy,scored,forced", [(H2O(budget=10, window=8), 5, 5), (SnapKV(budget=10, window=8), 2, 8)]
)
def test_score_ties_go_to_the_lower_index(policy, scored, forced):
    """Queries of zeros attend uniformly: every entry before the window gets the same vote. The
    scored part of the budget goes to the first entries, on every device (the CPU top-k took
    entries from the middle of the tie)."""
    view = make_view([[40, 30], [36, 40]], window=8, nan_pad=False)
    view = KVView(
        view.keys, view.values, view.positions, view.lengths, torch.zeros_like(view.queries),
        view.query_positions, 0, 4,
    )  # fmt: skip
    for row, lengths in zip(kept_sets(policy.compress(view)), view.lengths.tolist(), strict=True):
        for head, n in zip(row, lengths, strict=True):
            assert head == set(range(scored)) | set(range(n - forced, n))


def test_top_mask_equals_a_stable_sort_on_ties_and_padding():
    """`top_mask` keeps what a stable descending sort's first ``count`` entries are (ties to the
    lower index), on keys full of ties and -inf padding, counts 0 to the width."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 40, (1,), generator=gen))
        key = torch.randint(-3, 3, (2, 3, n), generator=gen).double()
        key[torch.rand(2, 3, n, generator=gen) < 0.2] = -math.inf
        width = int(torch.randint(1, n + 3, (1,), generator=gen))
        count = torch.randint(0, min(width, n) + 1, (2, 3), generator=gen)
        order = key.sort(dim=-1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand_as(order))
        assert torch.equal(top_mask(key, count, width), rank < count[..., None])


def test_a2sf_forgets_old_votes():
    """Seven old queries vote for entry 3, the newest for entry 7, one heavy slot: H2O-like
    accumulation (factor 1) keeps 3, a strong forgetting factor keeps 7."""
    view = make_view([[30]], g=1, window=8, nan_pad=False)
    keys, queries = view.keys.clone() * 0.1, torch.zeros_like(view.queries)
    keys[0, 0, 3], keys[0, 0, 7] = 10 * torch.eye(D)[0], 10 * torch.eye(D)[1]
    queries[0, 0, :7] = torch.eye(D)[0]
    queries[0, 0, 7] = 1.5 * torch.eye(D)[1]
    view = KVView(
        keys, view.values, view.positions, view.lengths, queries, view.query_positions, 0, 1
    )

    def heavy(factor):
        kept = A2SF(budget=2, window=8, forgetting_factor=factor, recent_ratio=0.5)
        return kept_sets(kept.compress(view))[0][0] - {29}

    assert heavy(1.0) == {3}
    assert heavy(0.1) == {7}


def test_pyramid_budgets_decrease_with_depth_and_average_to_the_budget():
    counts = []
    for layer in range(8):
        view = make_view([[200, 160]], window=8, layer=layer, num_layers=8, seq_len=260)
        kept = PyramidKV(budget=40, window=8).compress(view)
        assert_valid(kept, view)
        counts.append(kept.count[0].tolist())
    per_head = list(zip(*counts, strict=True))
    for series in per_head:
        assert all(a >= b for a, b in zip(series[:-1], series[1:], strict=True))
        assert series[0] > series[-1]
        assert abs(sum(series) / len(series) - 40) <= 0.5
    single = make_view([[200, 160]], window=8, num_layers=1, seq_len=260)
    assert kept_sets(PyramidKV(budget=40, window=8).compress(single)) == kept_sets(
        SnapKV(budget=40, window=8).compress(single)
    )


def test_pyramid_keeps_the_budget_in_every_layer_below_twice_it():
    """The official code builds the pyramid only for prompts of at least 2c = 2 (budget -
    window) tokens; below, every layer keeps the budget, as SnapKV (a head of 60 tokens kept 60
    at layer 0 and 20 at the last, budget 40). The default window is the official runs' 8."""
    assert PyramidKV().window == 8
    for layer in (0, 7):
        view = make_view([[60, 70]], window=8, layer=layer, num_layers=8, seq_len=80)
        kept = PyramidKV(budget=40, window=8).compress(view)
        assert kept.count[0, 0] == 40  # 60 < 2 x 32
        assert (kept.count[0, 1] > 40) == (layer == 0)  # 70 >= 64: the pyramid


def test_adakv_gives_concentrated_heads_fewer_tokens():
    """Head 0's queries all point at one key, head 1's attention is uniform: Ada-KV moves budget
    from head 0 to head 1, keeps the layer total and each head's floor; SnapKV splits evenly."""
    view = make_view([[60, 60]], g=2, window=8, seed=2, nan_pad=False)
    keys, queries = view.keys.clone(), view.queries.clone()
    keys[0, 0, 10] = 8 * torch.eye(D)[0]
    queries[0, :2] = 8 * torch.eye(D)[0]
    queries[0, 2:] = 0.0  # uniform attention
    view = KVView(
        keys, view.values, view.positions, view.lengths, queries, view.query_positions, 0, 4
    )
    ada = AdaKV(budget=20, inner=SnapKV(window=8)).compress(view)
    assert_valid(ada, view)
    concentrated, diffuse = ada.count[0].tolist()
    assert concentrated < 20 < diffuse
    assert concentrated + diffuse == 40
    assert concentrated >= 8 + math.floor(0.2 * (20 - 8))  # the window, then 0.2 of the rest
    assert 10 in kept_sets(ada)[0][0]
    assert SnapKV(budget=20, window=8).compress(view).count[0].tolist() == [20, 20]
    # a 2-query window without pooling: head 0 wants 3 tokens; the safeguard floor gives it its
    # window and 0.2 of the rest, 2 + 3 (the authors' floor; kvpress's, 0.2 x 20 = 4, counted
    # the window in: at budget 20 and window 8 it guaranteed no scored token)
    floor = AdaKV(budget=20, inner=SnapKV(window=2, kernel=1)).compress(view)
    assert floor.count[0].tolist() == [5, 35]


def test_adakv_budget_goes_to_the_inner_policy():
    ada = get_policy("adakv", budget=64)
    assert isinstance(ada.inner, SnapKV) and ada.inner.budget == 64 and ada.budget == 64
    ada = AdaKV(ratio=0.25, inner=PyramidKV(window=8))
    assert ada.inner.ratio == 0.25 and ada.inner.budget is None
    view = make_view(LENGTHS, layer=2)
    kept = ada.compress(view)  # Ada-Pyramid: the layer total is the pyramid's
    assert_valid(kept, view)
    assert torch.equal(kept.count.sum(-1).long(), ada.inner.targets(view).sum(-1))


@pytest.mark.parametrize("name,fields", SCORED)
def test_a_budget_set_after_construction_replaces_the_ratio_and_back(name, fields):
    """A ratio set on a policy built with its default budget was ignored (`targets` read the
    budget first); now either replaces the other, checked by name as in the constructor."""
    view = make_view(LENGTHS, layer=1)
    policy = get_policy(name, **fields)
    policy.ratio = 0.3
    assert policy.budget is None
    assert torch.equal(policy.targets(view), get_policy(name, ratio=0.3, **fields).targets(view))
    policy.budget = 10
    assert policy.ratio is None
    assert torch.equal(policy.targets(view), get_policy(name, budget=10, **fields).targets(view))
    for field, bad in (("budget", None), ("budget", -1), ("ratio", 1.5), ("ratio", None)):
        with pytest.raises(ValueError, match=f"^{field}: expected"):
            setattr(policy, field, bad)
    assert (policy.budget, policy.ratio) == (10, None)


def test_adakv_passes_a_budget_set_after_construction_to_a_copy_of_its_inner_policy():
    """Ada-KV pools its inner policy's targets: a budget set on it afterwards kept the old one."""
    shared = SnapKV(window=8)
    ada = AdaKV(inner=shared)
    ada.budget = 20
    view = make_view(LENGTHS, layer=1)
    assert ada.inner.budget == 20 and shared.budget == 2048  # the caller's policy is not changed
    assert torch.equal(ada.compress(view).count.sum(-1), view.lengths.clamp(max=20).sum(-1))
    ada.ratio = 0.25
    assert (ada.inner.budget, ada.inner.ratio) == (None, 0.25)


def test_other_fields_set_after_construction_are_checked_and_converted_as_in_the_constructor():
    snap = SnapKV()
    for bad in (-3, 0):  # a refusal leaves the next assignment checked too
        with pytest.raises(ValueError, match="^window: expected an int >= 1"):
            snap.window = bad
    assert snap.window == SnapKV().window
    ada = AdaKV(budget=64)
    ada.inner = {"method": "pyramidkv", "window": 8}  # an entry, as in the constructor
    assert isinstance(ada.inner, PyramidKV) and (ada.inner.window, ada.inner.budget) == (8, 64)
    with pytest.raises(TypeError, match="^inner: expected a scoring policy"):
        ada.inner = ada


@pytest.mark.parametrize("inner", ["pyramidkv", {"method": "pyramidkv", "window": 8}])
def test_adakv_takes_its_inner_policy_from_a_config_entry(inner):
    """Ada-Pyramid from JSON: ``inner`` as a name or an entry, as a config holds it, and through
    `to_dict` / `from_json` (an inner policy could only be an object, so no JSON could give one)."""
    import json

    from attnsieve.integrations import AttentionConfig

    config = AttentionConfig(kv={"method": "adakv", "inner": inner, "ratio": 0.25})
    again = AttentionConfig.from_json(json.loads(json.dumps(config.to_dict())))
    window = 8 if isinstance(inner, dict) else PyramidKV.window
    for policy in (config.policy(0), again.policy(0)):
        assert policy.inner == PyramidKV(ratio=0.25, window=window)
    assert get_policy("adakv", inner=inner, ratio=0.25) == config.policy(0)


def test_razor_given_heads_sink_window_and_compensation():
    view = make_view(LENGTHS)
    policy = RazorAttention(budget=10, sink=4, retrieval_heads={0: [1]})
    kept = policy.compress(view)
    sets = kept_sets(kept)
    for i in range(2):
        for j in range(3):
            n = int(view.lengths[i, j])
            if j == 1:
                assert sets[i][j] == set(range(n)) and kept.extra_weight[i, j, 0] == 0
                continue
            assert sets[i][j] == set(range(4)) | set(range(n - 6, n))
            evicted = list(range(4, n - 6))
            assert kept.extra_weight[i, j, 0] == len(evicted)
            if evicted:
                torch.testing.assert_close(
                    kept.extra_keys[i, j, 0], view.keys[i, j, evicted].mean(0)
                )
                torch.testing.assert_close(
                    kept.extra_values[i, j, 0], view.values[i, j, evicted].mean(0)
                )
    assert kept.extra_keys.shape == (2, 3, 1, D) and torch.isfinite(kept.extra_keys).all()
    other_layer = make_view(LENGTHS, layer=3)
    assert (policy.compress(other_layer).extra_weight > 0).all(), "no list for layer 3: none"
    plain = RazorAttention(budget=10, sink=4, retrieval_heads={0: [1]}, compensation=False)
    dropped = plain.compress(view)  # the paper's ablation: the same tokens, no extra one
    assert dropped.extra_weight is None and kept_sets(dropped) == sets
    with pytest.raises(TypeError, match="compensation"):
        RazorAttention(compensation=1)


def test_razor_view_heuristic_finds_the_remote_head():
    """Head 1's queries read a remote token, head 0's the recent ones: head 1 is retrieval."""
    view = make_view([[50, 50]], g=1, window=8, nan_pad=False)
    keys, queries = view.keys.clone(), view.queries.clone()
    keys[0, 1, 20] = 8 * torch.eye(D)[0]
    queries[0, 1] = 8 * torch.eye(D)[0]
    keys[0, 0, 45] = 8 * torch.eye(D)[1]
    queries[0, 0] = 8 * torch.eye(D)[1]
    view = KVView(
        keys, view.values, view.positions, view.lengths, queries, view.query_positions, 0, 1
    )
    kept = RazorAttention(budget=12, retrieval_ratio=0.5, window=8).compress(view)
    assert kept.count[0].tolist() == [12, 50]
    assert kept.extra_weight[0, :, 0].tolist() == [38.0, 0.0]


def test_echo_induction_scores_on_a_planted_pattern():
    n = 16
    tokens = torch.cat([torch.arange(8), torch.arange(8)])[None]  # a repeated random sequence
    probs = torch.zeros(1, 2, n, n)
    probs[0, :, 0, 0] = 1
    for i in range(1, n):
        probs[0, :, i, i - 1] = 1  # default: previous token
    for i in range(8, n):
        probs[0, 0, i] = 0
        probs[0, 0, i, i - 8] = 1  # echo: the earlier copy of the same token
        probs[0, 1, i] = 0
        probs[0, 1, i, i - 7] = 1  # induction: the token that followed it
    echo, induction = echo_induction_scores(probs, tokens)
    torch.testing.assert_close(echo, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(induction, torch.tensor([[0.0, 1.0]]))


def test_echo_induction_scores_refuse_tokens_that_do_not_fit_the_probabilities():
    """One row of tokens against a batch of two was broadcast (the first sequence's tokens
    scored every row) and float token ids were compared as they came."""
    probs = torch.rand(2, 3, 8, 8).softmax(-1)
    tokens = torch.randint(0, 4, (2, 8))
    cases = [
        ((probs, tokens[:1]), ValueError, r"^tokens: expected shape \(2, 8\)"),
        ((probs, tokens[:, :5]), ValueError, r"^tokens: expected shape \(2, 8\)"),
        ((probs, tokens.float()), TypeError, "^tokens: expected an integer tensor"),
        ((probs, tokens.tolist()), TypeError, "^tokens: expected a torch.Tensor"),
        ((probs[..., :5], tokens), ValueError, "^probs: expected as many queries as keys"),
        ((probs[0], tokens), ValueError, "^probs: expected 4 dims"),
        ((probs.long(), tokens), TypeError, "^probs: expected a floating-point tensor"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            echo_induction_scores(*args)


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: get_policy("nope"), ValueError, "name: unknown KV policy"),
        (lambda: get_policy(3), TypeError, "name"),
        (lambda: get_policy("snapkv", bogus=1), TypeError, "bogus"),
        (lambda: SnapKV(budget=10, ratio=0.5), ValueError, "budget, ratio"),
        (lambda: get_policy("h2o", budget=10, ratio=0.1), ValueError, "budget, ratio"),
        (lambda: SnapKV(budget=-1), ValueError, "budget"),
        (lambda: SnapKV(budget=2.5), ValueError, "budget"),
        (lambda: SnapKV(ratio=1.5), ValueError, "ratio"),
        (lambda: SnapKV(ratio="half"), ValueError, "ratio"),
        (lambda: SnapKV(window=0), ValueError, "window"),
        (lambda: SnapKV(kernel=4), ValueError, "kernel"),
        (lambda: StreamingLLM(sink=-1), ValueError, "sink"),
        (lambda: PyramidKV(beta=0.5), ValueError, "beta"),
        (lambda: H2O(recent_ratio=2), ValueError, "recent_ratio"),
        (lambda: A2SF(forgetting_factor=1.5), ValueError, "forgetting_factor"),
        (lambda: AdaKV(inner="razor"), TypeError, "inner: expected a scoring policy"),
        (lambda: AdaKV(inner={"method": "streaming", "window": 4}), TypeError, "inner: "),
        (lambda: AdaKV(inner="nope"), ValueError, "inner: unknown KV policy 'nope'"),
        (lambda: AdaKV(inner={"window": 8}), TypeError, "inner: expected a policy name"),
        (lambda: AdaKV(inner=3), TypeError, "inner: expected a scoring policy"),
        (lambda: AdaKV(inner=AdaKV()), TypeError, "inner"),
        (lambda: AdaKV(alpha_safeguard=2.0), ValueError, "alpha_safeguard"),
        # a budget set on both, which differ: the inner one was silently replaced
        (
            lambda: AdaKV(ratio=0.5, inner={"method": "snapkv", "budget": 100}),
            ValueError,
            "budget, ratio: set on adakv",
        ),  # fmt: skip
        (
            lambda: AdaKV(budget=64, inner={"method": "snapkv", "budget": 100}),
            ValueError,
            "budget, ratio",
        ),  # fmt: skip
        (lambda: RazorAttention(retrieval_heads={0: 1}), TypeError, r"retrieval_heads\[0\]"),
        (lambda: RazorAttention(retrieval_heads={0: "12"}), TypeError, "list of KV head"),
        (lambda: AdaKV(budget=5, ratio=0.5), ValueError, "budget, ratio"),
        (lambda: RazorAttention(retrieval_heads=[1]), TypeError, "retrieval_heads"),
        (lambda: RazorAttention(retrieval_heads={0: [-1]}), ValueError, "retrieval_heads"),
        (lambda: RazorAttention(retrieval_ratio=-0.1), ValueError, "retrieval_ratio"),
        (
            lambda: RazorAttention(retrieval_heads={"1": [0], 1: [1]}),
            ValueError,
            "retrieval_heads: keys '1' and 1 both name layer 1",
        ),
        (lambda: RazorAttention(retrieval_heads={"\u00b2": [0]}), ValueError, "^retrieval_heads"),
    ],
)
def test_malformed_policy_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_layer_holding_nothing_keeps_nothing(name):
    """A layer never written (or compressed to nothing) gives every policy an empty view: each
    keeps nothing (SnapKV's pooling, Razor's max over the window raised on an empty axis)."""
    cache = Cache(2, 1, 2, 16, dtype=torch.float32, device="cpu")
    queries, positions = torch.randn(1, 4, 3, 16), torch.arange(3)[None]
    kept = POLICIES[name]().compress(cache.kv_view(0, queries, positions))
    assert kept.idx.shape == (1, 2, 0) and not kept.count.any()
    cache.compact(0, kept)
    assert cache.seq_length(0) == 0


def test_malformed_views():
    view = make_view([[20, 20]])
    fields = dict(
        keys=view.keys,
        values=view.values,
        positions=view.positions,
        lengths=view.lengths,
        queries=view.queries,
        query_positions=view.query_positions,
        layer=0,
        num_layers=2,
    )
    cases = [
        ({"values": view.values[:, :, :5]}, ValueError, "values"),
        ({"keys": view.keys[0]}, ValueError, "keys"),
        ({"keys": view.keys.long(), "values": view.values.long()}, TypeError, "keys"),
        ({"positions": view.positions[:, :1]}, ValueError, "^positions: expected shape"),
        ({"positions": view.positions.float()}, TypeError, "^positions: expected torch.int64"),
        ({"lengths": view.lengths.long()}, TypeError, "^lengths: expected torch.int32"),
        ({"lengths": None}, TypeError, "^lengths: expected a torch.Tensor"),
        ({"values": view.values.double()}, TypeError, "^values: expected torch.float"),
        ({"query_positions": [[0]]}, TypeError, "^query_positions: expected a torch.Tensor"),
        ({"queries": view.queries[:, :, :0]}, ValueError, "^queries: expected .*W >= 1"),
        (
            {k: getattr(view, k)[:, :0] for k in ("keys", "values", "positions", "lengths")},
            ValueError,
            "^keys: expected at least one KV head",
        ),
        ({"log_weights": view.positions}, TypeError, "^log_weights: expected torch.float32"),
        ({"queries": view.queries[..., :4]}, ValueError, "queries"),
        ({"queries": view.queries[:, :3]}, ValueError, "queries"),
        ({"query_positions": view.query_positions[:, :2]}, ValueError, "query_positions"),
        ({"layer": 2}, ValueError, "layer"),
        ({"num_layers": 0}, ValueError, "num_layers"),
        ({"scale": -1.0}, ValueError, "scale"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            KVView(**{**fields, **change})
    with pytest.raises(ValueError, match=r"retrieval_heads\[0\]"):
        RazorAttention(budget=4, retrieval_heads={0: [5]}).compress(view)
    with pytest.raises(ValueError, match=r"retrieval_heads: layers \[4\] past the model's 4"):
        RazorAttention(budget=4, retrieval_heads={4: [0]}).compress(view)
    for name in sorted(POLICIES):  # not an AttributeError from inside the method
        with pytest.raises(TypeError, match="^view: expected a KVView, got NoneType"):
            POLICIES[name]().compress(None)
        with pytest.raises(ValueError, match="^max_len: expected an int >= 0"):
            POLICIES[name]().max_keep(-1)
    adakv = AdaKV(budget=4)
    with pytest.raises(ValueError, match=r"^total: expected shape \(1,\)"):
        adakv.keep(view, torch.tensor([8, 8]))
    with pytest.raises(TypeError, match="^total: expected torch.int64"):
        adakv.keep(view, torch.tensor([8.0]))
    with pytest.raises(TypeError, match="^view: expected a KVView"):
        adakv.keep(None, torch.tensor([8]))
    # a target per row (or one for all) was broadcast over the heads by Razor, and failed
    # deep inside the top-k of a scored policy
    target = torch.full((1, 2), 8)
    for policy, args in (
        (SnapKV(budget=4), (8,)),
        (RazorAttention(budget=4, retrieval_heads={0: []}), ()),
    ):
        for bad, error in ((target[:, 0], ValueError), (target[0, 0], ValueError),
                           (target.int(), TypeError)):  # fmt: skip
            with pytest.raises(error, match=r"^target: expected (shape \(1, 2\)|torch.int64)"):
                policy.keep(view, bad, *args)
        with pytest.raises(TypeError, match="^view: expected a KVView"):
            policy.keep(None, target, *args)
        assert policy.keep(view, target, *args).count.tolist() == [[8, 8]]
    with pytest.raises(ValueError, match="^width: expected an int >= 0"):
        SnapKV(budget=4).keep(view, target, -1)


def test_razor_folds_its_earlier_compensation_token_by_weight():
    """Compressing again evicts the stored compensation token with the tokens that left the
    window since: the new one is the mean of every token evicted so far, of their total count,
    and each head holds exactly one."""
    from attnsieve.cache import Cache

    cache = Cache(1, 2, 2, D, page_size=8, dtype=torch.float32, device="cpu")
    gen = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, 2, 55, D, generator=gen), torch.randn(2, 2, 55, D, generator=gen)
    policy = RazorAttention(budget=10, sink=4, retrieval_heads={0: []})
    queries = torch.randn(2, 4, 8, D, generator=gen)

    def compress(end):
        qpos = torch.arange(end - 8, end).expand(2, 8).contiguous()
        cache.compact(0, policy.compress(cache.kv_view(0, queries, qpos)))

    cache.append(0, keys[:, :, :40], values[:, :, :40])
    compress(40)  # evicts positions 4..33 into one token of weight 30 at position 33
    view = cache.kv_view(0, queries, torch.zeros(2, 8, dtype=torch.int64))
    assert view.positions[0, 0].tolist() == [0, 1, 2, 3, 33, *range(34, 40)]
    cache.append(0, keys[:, :, 40:], values[:, :, 40:])
    compress(55)  # evicts it and positions 34..48
    view = cache.kv_view(0, queries, torch.zeros(2, 8, dtype=torch.int64))
    assert view.positions[0, 0].tolist() == [0, 1, 2, 3, 48, *range(49, 55)]
    weights = view.log_weights.exp()
    assert torch.allclose(weights[..., 4], torch.tensor(45.0))
    assert torch.equal((weights - 1).abs() > 1e-6, (torch.arange(11) == 4).expand(2, 2, 11))
    torch.testing.assert_close(view.keys[..., 4, :], keys[:, :, 4:49].mean(2))
    torch.testing.assert_close(view.values[..., 4, :], values[:, :, 4:49].mean(2))
