"""Sparse-decode selectors (methods/decode): the Pages contract, budgets, planted needles."""

import dataclasses
import math

import pytest
import torch

from attnsieve.cache_reference import round_bf16
from attnsieve.methods.decode import (
    SELECTORS,
    DoubleSparsity,
    PageView,
    Quest,
    StepState,
    TidalDecode,
    calibrate_label_channels,
    get_selector,
)
from attnsieve.methods.decode.tidaldecode import STATE_KEY

D = 16
PS = 4  # page size


def make_view(keys, lengths, page_size=PS, layer=2, num_layers=4, channels=None):
    """A PageView of keys (B, H, N, D) holding ``lengths`` (B, H) tokens per head: summaries over
    the valid tokens, +inf/-inf past the page count, NaN keys in padding slots."""
    b, h, n, d = keys.shape
    lens = torch.tensor(lengths, dtype=torch.int32)
    p = math.ceil(n / page_size)
    slots = torch.full((b, h, p * page_size, d), float("nan"))
    valid = torch.arange(p * page_size) < lens[..., None]
    slots[..., :n, :][valid[..., :n]] = keys[valid[..., :n]]
    paged = slots.view(b, h, p, page_size, d)
    ok = valid.view(b, h, p, page_size, 1)
    key_min = torch.where(ok, paged, math.inf).amin(3)
    key_max = torch.where(ok, paged, -math.inf).amax(3)
    page_count = ((lens + page_size - 1) // page_size).int()
    labels = None
    if channels is not None:  # (B, H, P, page_size, R): each head's label channels
        labels = torch.stack([paged[:, j, ..., channels[j]] for j in range(h)], 1)
    table = torch.arange(b * h * p, dtype=torch.int32).view(b, h, p)  # a pool row per page
    return PageView(
        round_bf16(key_min, up=False).view(-1, d),  # as the cache keeps them
        round_bf16(key_max, up=True).view(-1, d),
        table,
        page_count,
        page_size,
        lens,
        labels,
        layer,
        num_layers,
        label_channels=channels,
        keys=lambda: paged,
    )


def page_sets(pages, view):
    """[b][h] -> set of pages, checking the Pages contract on the way: ascending, valid pages,
    -1 padded, the last (current) page always in."""
    assert pages.idx.dtype == torch.int32 and pages.count.dtype == torch.int32
    out = []
    for i in range(pages.idx.shape[0]):
        row = []
        for j in range(pages.idx.shape[1]):
            c = int(pages.count[i, j])
            head = pages.idx[i, j, :c].tolist()
            assert head == sorted(set(head))
            assert bool((pages.idx[i, j, c:] == -1).all())
            pc = int(view.page_count[i, j])
            assert all(0 <= x < pc for x in head)
            assert pc - 1 in head, "the current page is always read"
            row.append(set(head))
        out.append(row)
    return out


LENGTHS = [[64, 37], [50, 64]]  # batch 2, 2 KV heads, ragged (16, 10, 13, 16 pages)


def random_case(g=2, seed=0, lengths=LENGTHS, seq_len=64):
    gen = torch.Generator().manual_seed(seed)
    b, h = len(lengths), len(lengths[0])
    keys = torch.randn(b, h, seq_len, D, generator=gen)
    q = torch.randn(b, h * g, D, generator=gen)
    return keys, q


def test_registry_names_every_selector():
    assert set(SELECTORS) == {"quest", "double_sparsity", "tidaldecode"}
    for name, cls in SELECTORS.items():
        assert cls.name == name and isinstance(get_selector(name), cls)


DENSE_LAYERS = {"quest": {0, 1}, "double_sparsity": {0, 1}, "tidaldecode": {0, 1, 2, 13}}


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_with_its_defaults_through_all_layers(name):
    """Each registered selector, paper defaults, one step through every layer (GQA, ragged),
    on heads long enough for the default budgets (4096 tokens, 1/16) to read sparsely: on 64
    tokens Quest and TidalDecode read every page at every layer, and the test checked nothing
    of theirs. Only the paper's dense layers (and TidalDecode's selection layers) read all."""
    lengths = [[8192, 5001], [6000, 8192]]
    keys, q = random_case(g=4, lengths=lengths, seq_len=8192)
    channels = torch.tensor([[0, 3], [5, 9]])
    selector, step = get_selector(name), StepState()
    for layer in range(16):
        view = make_view(keys, lengths, layer=layer, num_layers=16, channels=channels)
        pages = selector.select(q, view, step)
        assert (pages is None) == (layer in DENSE_LAYERS[name])
        if pages is not None:
            page_sets(pages, view)
            assert bool((pages.count < view.page_count).all())
            if name == "quest":
                assert torch.equal(pages.count, selector.page_targets(view))


@pytest.mark.parametrize("g", [1, 2])
def test_quest_bound_is_the_paper_formula_and_an_upper_bound(g):
    keys, q = random_case(g=g, seed=1)
    view = make_view(keys, LENGTHS)
    key_min, key_max = view.bounds()
    b, h, p, _ = key_min.shape
    seen = {}  # the bound, recomputed channel by channel; GQA: max over the group
    for i in range(b):
        for j in range(h):
            for qh in range(j * g, (j + 1) * g):
                for page in range(int(view.page_count[i, j])):
                    lo, hi = key_min[i, j, page], key_max[i, j, page]
                    bound = torch.maximum(q[i, qh] * lo, q[i, qh] * hi).sum()
                    start, stop = page * PS, min((page + 1) * PS, int(view.lengths[i, j]))
                    actual = keys[i, j, start:stop] @ q[i, qh]
                    assert bool((actual <= bound + 1e-5).all()), "an upper bound of q.k"
                    seen[i, j, page] = max(seen.get((i, j, page), -math.inf), float(bound))
    small = Quest(budget_tokens=3 * PS, dense_layers=0).select(q, view, StepState())
    for i, row in enumerate(page_sets(small, view)):
        for j, chosen in enumerate(row):
            pc = int(view.page_count[i, j])
            ranked = sorted(range(pc - 1), key=lambda x: seen[i, j, x], reverse=True)
            assert chosen == {pc - 1} | set(ranked[:2])


def test_quest_finds_the_needle_page_for_one_query_head_of_the_group():
    keys, q = random_case(g=2, seed=2)
    keys = keys * 0.1
    needle = {(0, 0): 5, (0, 1): 2, (1, 0): 9, (1, 1): 0}
    for (i, j), page in needle.items():
        keys[i, j, page * PS + 1] = 5 * torch.eye(D)[3]
        q[i, 2 * j + 1] = 0.1 * q[i, 2 * j + 1] + 5 * torch.eye(D)[3]  # only one query head
    view = make_view(keys, LENGTHS)
    pages = Quest(budget_tokens=2 * PS, dense_layers=0).select(q, view, StepState())
    for i, row in enumerate(page_sets(pages, view)):
        for j, chosen in enumerate(row):
            assert needle[i, j] in chosen and len(chosen) == 2


@pytest.mark.parametrize("budget", [1, PS, 3 * PS, 5 * PS + 2])
def test_quest_budget_honoured_exactly(budget):
    keys, q = random_case()
    view = make_view(keys, LENGTHS)
    pages = Quest(budget_tokens=budget, dense_layers=0).select(q, view, StepState())
    page_sets(pages, view)
    expected = torch.minimum(torch.tensor(max(1, budget // PS)), view.page_count)
    assert torch.equal(pages.count, expected.int())


def test_quest_ratio_and_dense_cases():
    keys, q = random_case()
    view = make_view(keys, LENGTHS)
    pages = Quest(ratio=0.25, dense_layers=0).select(q, view, StepState())
    expected = (torch.ceil(0.25 * view.lengths.double()).long() // PS).clamp(min=1)
    assert torch.equal(pages.count.long(), expected.minimum(view.page_count.long()))
    assert Quest(budget_tokens=64, dense_layers=0).select(q, view, StepState()) is None
    assert Quest(budget_tokens=8).select(q, make_view(keys, LENGTHS, layer=1), StepState()) is None
    assert Quest(budget_tokens=8).select(q, make_view(keys, LENGTHS, layer=2), StepState())


def test_a_token_budget_set_after_construction_replaces_the_ratio_and_back():
    """A ratio set on a selector built with its default token budget was ignored; now either
    replaces the other, checked by name as in the constructor."""
    keys, q = random_case()
    view = make_view(keys, LENGTHS)
    quest = Quest(dense_layers=0)
    quest.ratio = 0.25
    assert quest.budget_tokens is None
    want = Quest(ratio=0.25, dense_layers=0).select(q, view, StepState())
    assert torch.equal(quest.select(q, view, StepState()).count, want.count)
    quest.budget_tokens = 3 * PS
    assert quest.ratio is None
    for field, bad in (("budget_tokens", 0), ("budget_tokens", None), ("ratio", 0.0)):
        with pytest.raises(ValueError, match=f"^{field}: expected"):
            setattr(quest, field, bad)
    assert (quest.budget_tokens, quest.ratio) == (3 * PS, None)


def test_other_fields_set_after_construction_are_checked_as_in_the_constructor():
    tidal = TidalDecode()
    with pytest.raises(ValueError, match="^reselect_layer: expected an int >= 3"):
        tidal.reselect_layer = 1  # must follow select_layer, as the constructor checks
    assert tidal.reselect_layer == TidalDecode().reselect_layer
    with pytest.raises(ValueError, match="^dense_layers"):
        Quest().dense_layers = -1


def test_calibrate_label_channels_finds_the_outlier_channels():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 30, D, generator=gen)
    k = torch.randn(2, 2, 30, D, generator=gen)
    q[:, :2, :, 3] *= 10  # KV head 0: channels 3 and 11 carry q.k; head 1: channels 0 and 7
    k[:, 0, :, 11] *= 10
    q[:, 2:, :, [0, 7]] *= 10
    k[:, 1, :, [0, 7]] *= 10
    k[:, 0, :, 3] *= 10
    q[:, :2, :, 11] *= 10
    channels = calibrate_label_channels(q, k, 2)
    assert channels.tolist() == [[3, 11], [0, 7]]
    with pytest.raises(ValueError, match="r"):
        calibrate_label_channels(q, k, D + 1)


def test_label_channels_pair_each_query_with_its_own_key():
    """The official statistic: mean |q_t,d k_t,d| over tokens, each query with its own token's
    key. Channel 5's q and k are large on alternate tokens, never together: mean|q| x mean|k|
    (what was computed) ranked it first, the paired product second."""
    q, k = torch.ones(1, 2, 40, D) * 0.1, torch.ones(1, 1, 40, D) * 0.1
    q[..., 0::2, 5], k[..., 1::2, 5] = 10.0, 10.0  # never on one token
    q[..., 9], k[..., 9] = 1.5, 1.5  # moderate, together: 2.25 a token against channel 5's 1
    assert calibrate_label_channels(q, k, 1).tolist() == [[9]]
    # fewer queries than keys: query i is the token of key M - N + i
    assert calibrate_label_channels(q[:, :, -10:], k, 1).tolist() == [[9]]
    with pytest.raises(ValueError, match=r"^q_samples, k_samples: expected 1 <= N <= M"):
        calibrate_label_channels(q, k[:, :, :20], 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_label_channels_refuse_non_finite_samples(bad):
    """A NaN in one query ranked its channel first (topk puts NaN above every number)."""
    q, k = torch.randn(1, 2, 40, D), torch.randn(1, 1, 40, D)
    q[0, 0, 7, 2] = bad
    with pytest.raises(ValueError, match=r"^q_samples, k_samples: expected finite values"):
        calibrate_label_channels(q, k, 1)


def test_double_sparsity_with_all_channels_reads_the_pages_of_the_exact_top_tokens():
    keys, q = random_case(g=2, seed=3)
    channels = torch.arange(D).expand(2, D)
    view = make_view(keys, LENGTHS, channels=channels)
    pages = DoubleSparsity(budget_tokens=5, dense_layers=0).select(q, view, StepState())
    for i, row in enumerate(page_sets(pages, view)):
        for j, chosen in enumerate(row):
            n = int(view.lengths[i, j])
            # GQA: each query head's attention (here exact: every channel), summed over the group
            probs = (keys[i, j, :n] @ q[i, 2 * j : 2 * j + 2].T / math.sqrt(D)).softmax(0)
            top = probs.sum(1).topk(5).indices // PS
            assert chosen == set(top.tolist()) | {int(view.page_count[i, j]) - 1}


def test_double_sparsity_finds_the_needle_on_its_label_channels():
    keys, q = random_case(g=1, seed=4)
    keys = keys * 0.1
    keys[:, :, 21, 6] = 5.0  # page 5, visible on label channel 6
    keys[:, :, 42, 2] = 5.0  # page 10, on a channel the labels do not hold: not seen
    q[..., 6] = 5.0
    q[..., 2] = 6.0
    channels = torch.tensor([[1, 6], [6, 12]])
    view = make_view(keys, LENGTHS, channels=channels)
    pages = DoubleSparsity(budget_tokens=1, dense_layers=0).select(q, view, StepState())
    for row, counts in zip(page_sets(pages, view), view.page_count.tolist(), strict=True):
        for chosen, pc in zip(row, counts, strict=True):
            assert chosen == {5, pc - 1}


def test_double_sparsity_keeps_a_token_one_query_head_of_the_group_attends_to():
    """GQA: query head 0 of KV head 0 attends almost only to token 21, head 1 points the other
    way on that label channel and weakly at token 42. The group's summed approximate logits
    cancelled on token 21 and a one-token budget read token 42's page; the group's summed
    attention keeps token 21."""
    keys, q = random_case(g=2, seed=6)
    keys, q = keys * 0.1, q * 0.1
    keys[:, :, 21, 6] = 5.0  # page 5
    q[:, 0, 6], q[:, 1, 6] = 5.0, -5.0
    keys[:, 0, 42, 1], q[:, :2, 1] = 1.0, 0.5  # page 10: a little for both heads
    view = make_view(keys, LENGTHS, channels=torch.tensor([[1, 6], [6, 12]]))
    pages = DoubleSparsity(budget_tokens=1, dense_layers=0).select(q, view, StepState())
    for row, counts in zip(page_sets(pages, view), view.page_count.tolist(), strict=True):
        assert row[0] == {5, counts[0] - 1}


def test_selections_break_ties_towards_the_lower_index():
    """A query of zeros scores every token alike: Double Sparsity and TidalDecode pick the first
    tokens, as `select_pages` (Quest) picks the lower pages, on every device (the CPU top-k took
    tokens from the middle of the tie)."""
    keys, q = random_case(g=2, seed=7)
    q = torch.zeros_like(q)
    view = make_view(keys, LENGTHS, channels=torch.tensor([[1, 6], [6, 12]]))
    pages = DoubleSparsity(budget_tokens=2 * PS, dense_layers=0).select(q, view, StepState())
    for row, counts in zip(page_sets(pages, view), view.page_count.tolist(), strict=True):
        assert row == [{0, 1, pc - 1} for pc in counts]
    step = StepState()
    TidalDecode(budget_tokens=2 * PS, select_layer=0, reselect_layer=None).select(q, view, step)
    assert step.values[STATE_KEY].tolist() == [[list(range(2 * PS))] * 2] * 2


def test_double_sparsity_needs_labels():
    keys, q = random_case()
    with pytest.raises(ValueError, match="view.labels"):
        DoubleSparsity(budget_tokens=8, dense_layers=0).select(
            q, make_view(keys, LENGTHS), StepState()
        )


def test_tidaldecode_selects_at_layer_2_and_13_and_reuses_between():
    keys, q = random_case(g=2, seed=5)
    selector, step = TidalDecode(budget_tokens=6), StepState()
    results = {}
    for layer in range(20):
        qq = q if layer < 13 else torch.flip(q, dims=[0])  # a different query from layer 13 on
        view = make_view(keys, LENGTHS, layer=layer, num_layers=20)
        results[layer] = selector.select(qq, view, step)
        if layer in (2, 13):
            chosen = step.values[STATE_KEY]
            b, h = view.lengths.shape
            for i in range(b):
                for j in range(h):
                    n = int(view.lengths[i, j])
                    probs = (keys[i, j, :n] @ qq[i, 2 * j : 2 * j + 2].T / math.sqrt(D)).softmax(0)
                    top = set(probs.sum(1).topk(6).indices.tolist())
                    assert set(chosen[i, j].tolist()) == top
                    tokens_pages = {t // PS for t in top} | {int(view.page_count[i, j]) - 1}
                    results[layer, i, j] = tokens_pages
    for layer in range(20):
        view = make_view(keys, LENGTHS, layer=layer, num_layers=20)
        if layer <= 2 or layer == 13:
            assert results[layer] is None  # dense layers and the selection layers
            continue
        source = 2 if layer < 13 else 13
        sets = page_sets(results[layer], view)
        for i in range(2):
            for j in range(2):
                assert sets[i][j] == results[source, i, j]
    assert any(results[2, i, j] != results[13, i, j] for i in range(2) for j in range(2))


def test_tidaldecode_needs_keys_and_an_ordered_step():
    keys, q = random_case()
    view = make_view(keys, LENGTHS, layer=2)
    no_keys = PageView(
        view.key_min_pool, view.key_max_pool, view.page_table, view.page_count, view.page_size,
        view.lengths, None, 2, 4,
    )  # fmt: skip
    with pytest.raises(ValueError, match="view.keys"):
        TidalDecode(budget_tokens=8).select(q, no_keys, StepState())
    # a layer past select_layer with no selection in its step (the model ran select_layer whole:
    # a sliding-window layer) is a selection layer: it attends densely and picks
    step = StepState()
    assert TidalDecode(budget_tokens=8).select(q, make_view(keys, LENGTHS, layer=3), step) is None
    assert step.values[STATE_KEY].shape == (2, 2, 8)
    assert TidalDecode(budget_tokens=8).select(
        q, make_view(keys, LENGTHS, layer=5, num_layers=6), step
    )


def test_tidaldecode_reselects_at_the_first_layer_past_a_whole_reselect_layer():
    """Gemma 3 runs its sliding-window layers whole, without the selector: of the default
    selection layers 2 and 13 only global layers 5, 11, 17 and 23 run it. 5 takes layer 2's
    role and 17 layer 13's; 11 and 23 read the selection before them."""
    keys, q = random_case(g=2, seed=7)
    selector, step = TidalDecode(budget_tokens=6), StepState()
    made = {}
    for layer in (5, 11, 17, 23):
        qq = q if layer < 13 else torch.flip(q, dims=[0])  # a different query past layer 13
        before = step.values.get(STATE_KEY)
        pages = selector.select(qq, make_view(keys, LENGTHS, layer=layer, num_layers=26), step)
        made[layer] = step.values[STATE_KEY] is not before
        assert (pages is None) == made[layer]  # a selecting layer attends to everything
    assert made == {5: True, 11: False, 17: True, 23: False}


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: get_selector("nope"), ValueError, "name: unknown decode selector"),
        (lambda: get_selector(None), TypeError, "name"),
        (lambda: get_selector("quest", page_size=16), TypeError, "page_size"),
        (lambda: Quest(budget_tokens=8, ratio=0.5), ValueError, "budget_tokens, ratio"),
        (lambda: Quest(budget_tokens=0), ValueError, "budget_tokens"),
        (lambda: Quest(budget_tokens=-4), ValueError, "budget_tokens"),
        (lambda: Quest(ratio=2.0), ValueError, "ratio"),
        *(
            (lambda cls=cls, r=r: cls(ratio=r), ValueError, r"ratio: .* in \(0, 1\]")
            for cls in (Quest, DoubleSparsity, TidalDecode)
            for r in (0.0, 0)
        ),  # ratio 0 had read only the current page; budget_tokens=0 was already refused
        (lambda: Quest(dense_layers=-1), ValueError, "dense_layers"),
        (lambda: DoubleSparsity(budget_tokens=1.5), ValueError, "budget_tokens"),
        (lambda: DoubleSparsity(channels=[[False, 3], [0, 2]]), ValueError, "channels"),  # bools
        (lambda: DoubleSparsity(channels=[[0, 3], [2]]), ValueError, "channels"),
        (lambda: DoubleSparsity(channels=[[3, 0], [0, 2]]), ValueError, "channels"),
        (lambda: DoubleSparsity(channels=[[[0]]]), ValueError, "^channels"),  # unhashable
        (lambda: DoubleSparsity(channels=[[0, "a"]]), ValueError, "^channels"),  # unorderable
        (lambda: TidalDecode(select_layer=2, reselect_layer=2), ValueError, "reselect_layer"),
        (lambda: TidalDecode(select_layer=-1), ValueError, "select_layer"),
    ],
)
def test_malformed_selector_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_malformed_views_and_queries():
    keys, q = random_case()
    view = make_view(keys, LENGTHS, channels=torch.tensor([[0, 1], [2, 3]]))
    fields = dict(
        key_min_pool=view.key_min_pool,
        key_max_pool=view.key_max_pool,
        page_table=view.page_table,
        page_count=view.page_count,
        page_size=PS,
        lengths=view.lengths,
        labels=view.labels,
        layer=2,
        num_layers=4,
        label_channels=view.label_channels,
    )
    cases = [
        ({"key_max_pool": view.key_max_pool[:1]}, ValueError, "key_max_pool"),
        ({"page_table": view.page_table.long()}, TypeError, "page_table"),
        ({"page_table": view.page_table[0]}, ValueError, "page_table"),
        ({"lengths": view.lengths.long()}, TypeError, "lengths"),
        ({"page_count": view.page_count.long()}, TypeError, "page_count"),
        ({"page_count": view.page_count[:1]}, ValueError, "page_count, lengths"),
        ({"page_size": 0}, ValueError, "page_size"),
        ({"label_channels": None}, ValueError, "labels, label_channels"),
        ({"labels": view.labels[..., :1]}, ValueError, "label_channels"),
        ({"labels": view.labels[:, :, :, :2]}, ValueError, "labels"),
        ({"layer": 4}, ValueError, "layer"),
        ({"key_min_pool": view.key_min_pool.int()}, TypeError, "key_min_pool"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            PageView(**{**fields, **change})
    selector = Quest(budget_tokens=8, dense_layers=0)
    for bad, error in [
        (q[None], ValueError),
        (q[:, :3], ValueError),
        (q[..., :4], ValueError),
        (q.long(), TypeError),
    ]:
        with pytest.raises(error, match="q"):
            selector.select(bad, view, StepState())
    tidal = TidalDecode(budget_tokens=8, select_layer=1, reselect_layer=None)
    with pytest.raises(TypeError, match="^step: expected a StepState"):
        tidal.select(q, view, None)
    step = StepState()
    tidal.select(q[:1], make_view(keys[:1], LENGTHS[:1], layer=1), step)  # batch 1 selects
    with pytest.raises(ValueError, match="^step: holds a selection for"):
        tidal.select(q, view, step)  # read by a batch-2 view
    for name in sorted(SELECTORS):  # not an AttributeError from inside the method
        selector = get_selector(name, budget_tokens=8)
        with pytest.raises(TypeError, match="^view: expected a PageView, got NoneType"):
            selector.select(q, None, StepState())
        with pytest.raises(ValueError, match="^max_len: expected an int >= 0"):
            selector.max_tokens(-1)
        for args, match in [((-1, 2, 16), "^layer"), ((0, 0, 16), "^kv_heads"),
                            ((0, 2, 1.5), "^head_dim")]:  # fmt: skip
            with pytest.raises(ValueError, match=match):
                selector.check_layer(*args)


@pytest.mark.parametrize(
    "name, fields, num_layers, warned",
    [
        ("quest", {}, 2, "dense_layers=2 on a model of 2 layers: every layer reads every page"),
        ("double_sparsity", {"dense_layers": 4}, 3, "dense_layers=4 on a model of 3 layers"),
        ("tidaldecode", {}, 13, "reselect_layer=13 on a model of 13 layers: no layer re-selects"),
    ],
)
def test_a_layer_field_that_leaves_no_sparse_layer_warns(name, fields, num_layers, warned):
    """Quest's default two dense layers on a 2-layer model decode densely under a Quest label;
    valid, so a warning, not an error. A model with a layer past the field gets none."""
    import warnings

    selector = get_selector(name, budget_tokens=8, **fields)
    with pytest.warns(UserWarning, match=f"^{warned}"):
        selector.check_layer(0, 2, 16, num_layers=num_layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selector.check_layer(0, 2, 16, num_layers=30)
        selector.check_layer(0, 2, 16)  # layers unknown


def test_selectors_always_read_the_pages_of_weighted_tokens():
    """A compensation token's page is read even where its bound ranks it last (Quest) or no
    token of it is chosen (pages_of, Double Sparsity's and TidalDecode's): its one key stands for
    many. Without weighted tokens the same page is skipped."""
    from attnsieve.cache import Cache
    from attnsieve.methods.decode.base import pages_of
    from attnsieve.views import Kept

    torch.manual_seed(0)
    cache = Cache(1, 1, 2, D, page_size=8, dtype=torch.float32, device="cpu")
    keys = torch.randn(1, 2, 64, D)
    cache.append(0, keys, torch.randn(1, 2, 64, D))
    q = torch.zeros(1, 2, D)
    q[..., 0] = 10.0  # ranks pages by channel 0 of their keys
    low = torch.zeros(1, 2, 1, D)
    low[..., 0] = -50.0  # a compensation token no bound would pick
    keep = torch.arange(1, 64, dtype=torch.int32).expand(1, 2, 63).contiguous()  # evict token 0
    cache.compact(
        0,
        Kept(
            keep,
            torch.full((1, 2), 63, dtype=torch.int32),
            low,
            low.clone(),
            torch.tensor([[[30.0], [0.0]]]),
            torch.zeros(1, 2, 1, dtype=torch.long),
        ),
    )
    view = cache.page_view(0)
    assert view.weighted_pages.tolist() == [[[0], [-1]]]  # head 1 stored none
    quest = Quest(budget_tokens=3 * 8, dense_layers=0)
    chosen = page_sets(quest.select(q, view, StepState()), view)[0]
    assert 0 in chosen[0] and len(chosen[0]) == 3  # within the budget
    one_page = Quest(budget_tokens=8, dense_layers=0).select(q, view, StepState())
    assert page_sets(one_page, view)[0][0] == {7}  # a one-page budget: the current page first
    plain = dataclasses.replace(view, weighted_pages=None)
    assert 0 not in page_sets(quest.select(q, plain, StepState()), plain)[0][0]
    tokens = torch.zeros(1, 2, view.num_pages * 8, dtype=torch.bool)
    tokens[..., 40] = True
    assert page_sets(pages_of(tokens, view, 2), view)[0][0] == {0, 5, 7}
    assert page_sets(pages_of(tokens, plain, 2), plain)[0][0] == {5, 7}


def test_ratio_width_covers_the_float32_target():
    """ceil(ratio x length) is computed in float32 (token_targets, page_budget): the host-side
    width must not be the float64 value, one less where float32 rounds up (0.15 x 100 = 15 in
    float64, 15.000001 in float32), which silently dropped a page or a token."""
    keys = torch.randn(1, 1, 100, D, generator=torch.Generator().manual_seed(0))
    q = torch.randn(1, 1, D, generator=torch.Generator().manual_seed(1))
    view = make_view(keys, [[100]], layer=0)
    quest = Quest(ratio=0.15, dense_layers=0)
    assert quest.max_tokens(100) == int(quest.token_targets(view)) == 16
    assert int(quest.select(q, view, StepState()).count) == int(quest.page_targets(view)) == 4
    view = make_view(keys[:, :, :50], [[50]], page_size=2, layer=0)
    tidal, step = TidalDecode(ratio=0.3, select_layer=0, reselect_layer=None), StepState()
    assert tidal.select(q, view, step) is None
    assert int((step.values[STATE_KEY] >= 0).sum()) == int(tidal.token_targets(view)) == 16


def test_quest_reads_every_page_of_a_head_its_budget_covers():
    """A ragged batch: 38 tokens cover the 37-token head, which reads its 10 pages (it read 9, 36
    tokens' worth, dropping one page), while the 64-token head reads 9 of its 16."""
    keys, q = random_case()
    view = make_view(keys[:, :1], [[64], [37]], layer=0)
    pages = Quest(budget_tokens=38, dense_layers=0).select(q[:, :2], view, StepState())
    assert page_sets(pages, view)[1][0] == set(range(10))
    assert pages.count.tolist() == [[9], [10]]
