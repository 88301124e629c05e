"""dense, streaming, power, vertical_slash, block_topk planners and their shared pooling helpers."""

import math

import pytest
import torch

from attnsieve.api import mass_threshold
from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.workloads import make_workload
from attnsieve.kernels import planning_reference, pooling_reference
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout, causal_token_mask, query_block_positions
from attnsieve.methods import PLANNERS, get_planner
from attnsieve.methods.prefill import masks, scores

BIG = 10**6
# Small blocks so that short sequences still have many blocks; every planner at its full budget.
FULL = [
    ("dense", {"block_q": 32, "block_k": 16}),
    ("streaming", {"window_tokens": BIG, "block_q": 32, "block_k": 16}),
    ("power", {"local_blocks": BIG, "block_q": 16, "block_k": 32}),
    ("vertical_slash", {"slash_size": BIG, "vertical_size": 0, "block_q": 32, "block_k": 16}),
    ("vertical_slash", {"slash_size": BIG, "share_kv_group": True}),
    ("block_topk", {"cdf_threshold": 1.0, "simthreshd1": -1.0, "block_q": 32, "block_k": 16}),
    ("block_topk", {"topk": BIG, "cdf_threshold": None, "share_kv_group": True}),
]
SPARSE = [
    ("dense", {}),
    ("streaming", {}),
    ("streaming", {"sink_tokens": 40, "window_tokens": 50, "block_q": 32, "block_k": 16}),
    ("power", {"block_q": 16, "block_k": 16}),
    ("power", {"local_blocks": 3, "sink_blocks": 0, "block_q": 32, "block_k": 16}),
    ("vertical_slash", {}),
    ("vertical_slash", {"vertical_size": 7, "slash_size": 9, "last_q": 17, "block_q": 32}),
    ("vertical_slash", {"vertical_size": 20, "slash_size": 5, "share_kv_group": True}),
    ("block_topk", {}),
    ("block_topk", {"topk": 2, "cdf_threshold": None, "simthreshd1": -1.0, "block_q": 32}),
    ("block_topk", {"cdf_threshold": 0.5, "simthreshd1": 0.05, "share_kv_group": True}),
]
SHAPES = [(333, 333), (100, 257), (257, 100), (1000, 1000)]


def qk(b, h_q, h_kv, n, m, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h_q, n, d, generator=g), torch.randn(b, h_kv, m, d, generator=g)


def dense_mask_like(layout, causal=True):
    dense = Layout.dense(
        layout.num_queries,
        layout.num_keys,
        block_q=layout.block_q,
        block_k=layout.block_k,
        causal=causal,
    )
    return dense.block_mask().expand(layout.batch, layout.heads, -1, -1)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_a_field_set_on_a_built_planner_is_checked_as_in_the_constructor(name):
    """Fields set after construction went unchecked: a block size of 100 reached the kernels."""
    planner = get_planner(name)
    with pytest.raises(ValueError, match="^block_q: expected a power of two"):
        planner.block_q = 100
    assert planner.block_q == get_planner(name).block_q
    planner.block_q = 32
    assert planner.plan(torch.randn(1, 2, 200, 16), torch.randn(1, 2, 200, 16)).block_q == 32


def test_registry_names_my_planners():
    for name in ("dense", "streaming", "power", "vertical_slash", "block_topk"):
        planner = get_planner(name)
        assert type(planner) is PLANNERS[name] and planner.name == name


@pytest.mark.parametrize("name,kwargs", FULL)
@pytest.mark.parametrize("n,m", SHAPES[:3])
@pytest.mark.parametrize("h_q,h_kv", [(4, 1), (2, 2)])
def test_full_budget_is_dense(name, kwargs, n, m, h_q, h_kv):
    q, k = qk(2, h_q, h_kv, n, m)
    layout = get_planner(name, **kwargs).plan(q, k).validate()
    if layout.has_spans:  # token-level parts: compare the pairs computed
        want = causal_token_mask(n, m, 0, n).expand(layout.batch, layout.heads, -1, -1)
        assert torch.equal(layout.to_dense_mask(causal=True), want)
    else:
        assert torch.equal(layout.block_mask(), dense_mask_like(layout))


@pytest.mark.parametrize("name,kwargs", FULL)
def test_full_budget_output_equals_dense(name, kwargs):
    q, k = qk(2, 4, 2, 200, 257, d=32, seed=1)
    v = torch.randn_like(k)
    layout = get_planner(name, **kwargs).plan(q, k)
    torch.testing.assert_close(attention_reference(q, k, v, layout), attention_reference(q, k, v))


@pytest.mark.parametrize("name,kwargs", SPARSE)
@pytest.mark.parametrize("n,m", SHAPES)
def test_layouts_valid_and_broadcast(name, kwargs, n, m):
    b, h_q, h_kv = 2, 4, 2
    q, k = qk(b, h_q, h_kv, n, m, seed=n + m)
    layout = get_planner(name, **kwargs).plan(q, k).validate()
    layout.check_inputs(q, k)
    assert layout.batch in (1, b) and layout.heads in (1, h_kv, h_q)
    assert 0.0 < layout.density() <= 1.0
    # Sparse planners never keep blocks or columns no query of the row can see.
    assert not (layout.block_mask() & ~dense_mask_like(layout)).any()
    if layout.has_columns:
        _, last = query_block_positions(n, m, layout.block_q)
        slot = torch.arange(layout.column_idx.shape[-1])
        valid = slot < layout.column_count[..., None]
        assert not (valid & (layout.column_idx > last[:, None])).any()
    if layout.has_spans:  # nor spans reaching past the block's last query
        _, last = query_block_positions(n, m, layout.block_q)
        valid = torch.arange(layout.span_end.shape[-1]) < layout.span_count[..., None]
        assert not (valid & (layout.span_end > last[:, None] + 1)).any()


@pytest.mark.parametrize(
    "name,kwargs", [c for c in SPARSE if c[0] in ("vertical_slash", "block_topk")]
)
def test_data_dependent_plans_each_batch_and_head_alone(name, kwargs):
    """A head's plan depends only on its own query head and KV head: no mixing, no repeat bugs."""
    b, h_q, h_kv = 2, 4, 2
    q, k = qk(b, h_q, h_kv, 300, 300, seed=3)
    planner = get_planner(name, **kwargs)
    layout = planner.plan(q, k)
    mask = layout.block_mask()
    share = getattr(planner, "share_kv_group", False)
    assert layout.heads == (h_kv if share else h_q) and layout.batch == b
    for i in range(b):
        for h in range(layout.heads):
            qs = slice(h * 2, h * 2 + 2) if share else slice(h, h + 1)
            kv = h if share else h // 2
            alone = planner.plan(q[i : i + 1, qs], k[i : i + 1, kv : kv + 1])
            assert torch.equal(alone.block_mask()[0, 0], mask[i, h])
            if layout.has_columns or layout.has_spans:
                tokens = layout.mask_rows(0, 300)[i, h]
                assert torch.equal(alone.mask_rows(0, 300)[0, 0], tokens)


BUDGETS = [
    ("streaming", "window_tokens", [1, 20, 100, 400], {"block_q": 16, "block_k": 16}),
    ("power", "local_blocks", [1, 2, 5, 40], {"block_q": 16, "block_k": 16}),
    ("vertical_slash", "slash_size", [0, 4, 30, 300], {"vertical_size": 0, "local_slashes": 0}),
    ("vertical_slash", "vertical_size", [0, 5, 50, 300], {"slash_size": 0, "sink_tokens": 0}),
    (
        "block_topk",
        "topk",
        [1, 2, 6, 30],
        {"cdf_threshold": None, "simthreshd1": -1.0, "block_q": 16},
    ),
    ("block_topk", "cdf_threshold", [0.0, 0.3, 0.8, 1.0], {"simthreshd1": -1.0, "block_k": 16}),
]


@pytest.mark.parametrize("name,field,values,kwargs", BUDGETS)
def test_density_monotone_in_budget(name, field, values, kwargs):
    q, k = qk(2, 2, 1, 300, 300, seed=5)
    layouts = [get_planner(name, **kwargs, **{field: v}).plan(q, k) for v in values]
    masks = [lay.mask_rows(0, 300) & causal_token_mask(300, 300, 0, 300) for lay in layouts]
    for small, large in zip(masks, masks[1:], strict=False):
        assert not (small & ~large).any()  # a larger budget keeps a superset of pairs
    densities = [lay.density() for lay in layouts]
    assert densities == sorted(densities) and densities[0] < densities[-1]


def test_power_pattern_is_sinks_local_and_powers_of_two():
    q, k = qk(1, 1, 1, 16 * 16, 16 * 16)
    mask = get_planner("power", block_q=16, block_k=16).plan(q, k).block_mask()[0, 0]
    for i in range(16):
        expected = {j for j in range(i + 1) if j == 0 or i - j in (0, 1, 2, 4, 8)}
        assert set(mask[i].nonzero().flatten().tolist()) == expected


@pytest.mark.parametrize("n, m, block_q, block_k", [(128, 128, 64, 16), (200, 333, 128, 16)])
def test_power_keeps_every_query_on_its_own_key(n, m, block_q, block_k):
    """A query block four or more key blocks wide keeps every diagonal key block, not only the
    one its last row sits in."""
    q, k = qk(1, 1, 1, n, m)
    planner = get_planner("power", block_q=block_q, block_k=block_k)
    mask = planner.plan(q, k).to_dense_mask(causal=True)[0, 0]
    rows = torch.arange(n)
    assert mask[rows, rows + (m - n)].all()


def test_vertical_slash_keeps_sinks_and_local_diagonals_within_smaller_budgets():
    q, k = qk(1, 1, 1, 512, 512)
    planner = get_planner("vertical_slash", vertical_size=10, slash_size=0, block_q=16, block_k=16)
    last = planner.plan(q, k).to_dense_mask(causal=True)[0, 0, -1]
    assert last[:30].all()  # the 30 sink columns, although only 10 columns are asked for
    assert last[-100:].all()  # the 100 local diagonals, although no slash is asked for


def test_streaming_pattern_rounds_sinks_and_window_out_to_blocks():
    q, k = qk(1, 1, 1, 160, 160)
    layout = get_planner(
        "streaming", sink_tokens=20, window_tokens=24, block_q=16, block_k=16
    ).plan(q, k)
    mask = layout.block_mask()[0, 0]
    for i in range(10):  # rows [16i, 16i + 15] need keys (16i - 24, 16i + 15] and keys < 20
        expected = {0, 1} & set(range(i + 1)) | set(range(max(0, (16 * i - 23) // 16), i + 1))
        assert set(mask[i].nonzero().flatten().tolist()) == expected


def test_block_topk_keeps_dissimilar_blocks_whole():
    """SpargeAttn: a query block whose tokens disagree keeps its row, a key block its column."""
    n, bs, d = 128, 16, 16
    g = torch.Generator().manual_seed(0)
    q = (
        torch.randn(1, 1, n // bs, 1, d, generator=g)
        .expand(-1, -1, -1, bs, -1)
        .reshape(1, 1, n, d)
        .clone()
    )
    k = (
        torch.randn(1, 1, n // bs, 1, d, generator=g)
        .expand(-1, -1, -1, bs, -1)
        .reshape(1, 1, n, d)
        .clone()
    )
    q[:, :, 5 * bs : 6 * bs] = torch.randn(bs, d, generator=g)
    k[:, :, 3 * bs : 4 * bs] = torch.randn(bs, d, generator=g)
    planner = get_planner(
        "block_topk", topk=1, cdf_threshold=None, block_q=bs, block_k=bs, smooth_k=False
    )
    mask = planner.plan(q, k).block_mask()[0, 0]
    visible = Layout.causal_block_mask(n, n, bs, bs)
    assert torch.equal(mask[5], visible[5])
    assert mask[3:, 3].all() and not mask[:3, 3].any()
    assert mask.diagonal().all() and mask[:, 0].all()
    # Other rows: sink, column 3, diagonal and the one best block.
    assert all(mask[i].sum() <= 4 for i in (4, 6, 7))


def test_non_causal():
    q, k = qk(2, 4, 2, 200, 150)
    for name, kwargs in (
        ("dense", {}),
        ("block_topk", {"cdf_threshold": 1.0, "simthreshd1": -1.0}),
    ):
        layout = get_planner(name, **kwargs).plan(q, k, causal=False).validate()
        assert torch.equal(layout.block_mask(), dense_mask_like(layout, causal=False))
    sparse = (
        get_planner(
            "block_topk", topk=2, cdf_threshold=None, simthreshd1=-1.0, block_q=16, block_k=16
        )
        .plan(q, k, causal=False)
        .validate()
    )
    assert sparse.density(causal=False) < 1.0
    for name in ("streaming", "power", "vertical_slash"):
        with pytest.raises(ValueError, match="causal"):
            get_planner(name).plan(q, k, causal=False)


def test_vertical_slash_finds_planted_lines():
    w = make_workload(
        ["vertical", "slash"] * 2, num_kv_heads=2, seq_len=1024, head_dim=64, num_spans=0, seed=1
    )
    planner = get_planner(
        "vertical_slash",
        vertical_size=16,
        slash_size=8,
        sink_tokens=4,
        local_slashes=4,
        block_q=16,
        block_k=16,
    )
    layout = planner.plan(w.q, w.k)
    assert layout.density() < 0.2
    assert (attention_recall(w.q, w.k, layout) >= 0.9).all()
    last = layout.mask_rows(1023, 1024)[0, :, 0]  # what the final query reads, per head
    for h in w.heads_of("vertical"):
        assert last[h, w.columns[0, h // 2]].all() and last[h, : w.num_sinks].all()
    for h in w.heads_of("slash"):
        assert last[h, 1023 - w.offsets[h]].all()


def test_streaming_and_block_topk_find_planted_structure():
    w = make_workload(["sink_local"] * 2, seq_len=1024, head_dim=64, local_window=64)
    layout = get_planner("streaming", sink_tokens=4, window_tokens=64, block_q=32, block_k=32).plan(
        w.q, w.k
    )
    assert layout.density() < 0.25 and (attention_recall(w.q, w.k, layout) >= 0.95).all()
    w = make_workload(["retrieval"] * 2, seq_len=1024, head_dim=64, num_columns=0, span_len=32)
    planner = get_planner(
        "block_topk", topk=4, cdf_threshold=None, simthreshd1=-1.0, block_q=32, block_k=32
    )
    layout = planner.plan(w.q, w.k)
    assert layout.density() < 0.35 and (attention_recall(w.q, w.k, layout) >= 0.95).all()


BAD = [
    ("dense", {"block_q": 0}, "block_q"),
    ("streaming", {"window_tokens": 0}, "window_tokens"),
    ("streaming", {"sink_tokens": -1}, "sink_tokens"),
    ("streaming", {"block_k": 2.5}, "block_k"),
    ("power", {"local_blocks": 0}, "local_blocks"),
    ("power", {"sink_blocks": True}, "sink_blocks"),
    ("vertical_slash", {"last_q": 0}, "last_q"),
    ("vertical_slash", {"slash_size": -3}, "slash_size"),
    ("block_topk", {"cdf_threshold": 1.5}, "cdf_threshold"),
    ("block_topk", {"topk": 3}, "topk, cdf_threshold"),
    ("block_topk", {"topk": 0, "cdf_threshold": None}, "topk"),
    ("block_topk", {"simthreshd1": 2.0}, "simthreshd1"),
]


@pytest.mark.parametrize("name,kwargs,field", BAD)
def test_bad_config_names_the_field(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        get_planner(name, **kwargs)


@pytest.mark.parametrize(
    "name,field",
    [
        ("vertical_slash", "share_kv_group"),
        ("block_topk", "share_kv_group"),
        ("block_topk", "smooth_k"),
    ],
)
@pytest.mark.parametrize("bad", [1, "yes", None])
def test_a_non_bool_flag_is_a_type_error(name, field, bad):
    """A flag of the wrong type is a TypeError, as a plan's ``causal`` is (these raised
    ValueError)."""
    with pytest.raises(TypeError, match=f"^{field}: expected a bool"):
        get_planner(name, **{field: bad})


@pytest.mark.parametrize("name", ["dense", "streaming", "power", "vertical_slash", "block_topk"])
def test_bad_inputs(name):
    planner = get_planner(name)
    q, k = qk(1, 3, 2, 64, 64)
    with pytest.raises(ValueError, match="multiple"):
        planner.plan(q, k)
    with pytest.raises(ValueError, match="q"):
        planner.plan(q[0], k[:, :1])


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_a_float64_q_is_refused_by_its_name(name):
    """float64 is not an attention dtype: hip and block_topk refused it by their pooling
    helper's argument name (x), the static planners planned for it."""
    q, k = qk(1, 2, 1, 64, 64)
    with pytest.raises(TypeError, match=r"^q: expected dtype in"):
        get_planner(name).plan(q.double(), k.double())


# ---- pooling helpers against brute force -------------------------------------------------------
def test_mean_pool_and_self_similarity_ragged():
    x = torch.randn(2, 3, 37, 8)
    pooled = pooling_reference.block_mean_pool(x, 16)
    sim = scores.block_self_similarity(x, 16)
    for i, chunk in enumerate(x.split(16, dim=2)):
        torch.testing.assert_close(pooled[:, :, i], chunk.mean(2))
        unit = torch.nn.functional.normalize(chunk, dim=-1)
        torch.testing.assert_close(sim[:, :, i], (unit @ unit.transpose(-1, -2)).mean((-1, -2)))


def test_pooled_scores_use_gqa_views():
    q, k = qk(2, 6, 3, 50, 70)
    pooled = scores.pooled_scores(q, k, 16, 32)
    pq = pooling_reference.block_mean_pool(q, 16)
    pk = pooling_reference.block_mean_pool(k, 32).repeat_interleave(2, 1)
    torch.testing.assert_close(pooled, pq @ pk.transpose(-1, -2) / 4.0)


@pytest.mark.parametrize("n,m,last_q", [(100, 100, 64), (30, 100, 30), (100, 20, 64)])
def test_last_query_stats_per_key_and_per_diagonal(n, m, last_q):
    """With one-token offset blocks (vertical_slash's use): per-key and per-diagonal mass."""
    q, k = qk(1, 4, 2, n, m)
    vertical, slash = planning_reference.last_query_stats(q, k, last_q=last_q, block_k=1)
    scores = torch.einsum("bhnd,bhmd->bhnm", q[:, :, n - last_q :], k.repeat_interleave(2, 1)) / 4.0
    visible = causal_token_mask(n, m, n - last_q, n)
    brute = scores.masked_fill(~visible, -math.inf).softmax(-1).nan_to_num(0.0)
    torch.testing.assert_close(vertical, brute.mean(2))
    pos = torch.arange(m - last_q, m)[:, None]  # absolute position of each of the last rows
    offset = pos - torch.arange(m)[None, :]
    expected = torch.stack([(brute * (offset == o)).sum((-1, -2)) for o in range(m)], -1)
    torch.testing.assert_close(slash, expected / last_q)


def test_mass_threshold_is_minimal_prefix_plus_ties():
    """The fewest largest entries reaching threshold × total, and every entry tied with the
    smallest of them (the sort used to keep an arbitrary subset of a tie)."""
    probs = torch.rand(3, 5, 40).softmax(-1)
    probs[0, 0, :20] = probs[0, 0, 0]  # a tie across the boundary
    valid = torch.rand(3, 5, 40) > 0.2
    for threshold in (0.0, 0.3, 0.9, 0.999, 1.0):
        keep = mass_threshold(probs, threshold, valid)
        p = probs * valid
        for row, kept, ok in zip(
            p.flatten(0, 1), keep.flatten(0, 1), valid.flatten(0, 1), strict=True
        ):
            ranked = row.sort(descending=True).values
            need = int((ranked.cumsum(0) - ranked < threshold * row.sum()).sum())
            expected = (row >= ranked[need - 1]) & (row > 0) & ok if need else ~ok & ok
            if threshold >= 1.0:
                expected = ok
            assert torch.equal(kept, expected)
    # 3 + 2 < 6 <= 3 + 2 + 2 of 10: the 3 and every 2, not the one 2 a sort would rank first
    tied = mass_threshold(torch.tensor([2.0, 3.0, 2.0, 1.0, 2.0]), 0.6)
    assert tied.tolist() == [True, True, True, False, True]
    # Rounding: the running sum reaches the total before the tiny tail; 1.0 still keeps it all.
    assert mass_threshold(torch.tensor([1.0, 1e-9, 1e-9]), 1.0).all()
    per_head = mass_threshold(probs, torch.tensor([0.2, 1.0, 0.5])[:, None, None], valid)
    assert torch.equal(per_head[1], valid[1])


def test_window_and_sink_block_masks_match_token_masks():
    n, m, bq, bk = 70, 90, 16, 8
    rows = causal_token_mask(n, m, 0, n)
    pos = torch.arange(n)[:, None] + (m - n)
    keys = torch.arange(m)[None, :]
    for window, sinks in [(w, w % 19) for w in range(1, 41)]:
        need = rows & ((keys > pos - window) | (keys < sinks))
        got = masks.window_block_mask(n, m, bq, bk, window) | masks.sink_block_mask(
            n, m, bq, bk, sinks
        )
        for i in range(got.shape[0]):
            want = need[i * bq : (i + 1) * bq].any(0)
            want_blocks = torch.nn.functional.pad(want, (0, -m % bk)).view(-1, bk).any(-1)
            assert torch.equal(got[i], want_blocks), (window, sinks, i)


def test_flexprefill_gamma_just_below_one_keeps_only_visible_blocks():
    """gamma = 0.99999999 rounds to float32's 1.0, which as a per-head threshold would keep every
    block of the pooled map, the zeros above the diagonal too."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 256, 32, generator=g) for _ in range(2))
    planner = get_planner("flexprefill", gamma=0.99999999, min_budget=16, block_q=16, block_k=16)
    hidden = ~Layout.causal_block_mask(256, 256, 16, 16)  # blocks no query of the row sees
    assert not (planner.plan(q, k).block_mask() & hidden).any()
