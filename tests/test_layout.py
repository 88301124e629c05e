import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsieve.api import attention
from attnsieve.layout import Layout, causal_token_mask


def random_layout(b, h, n, m, bq, bk, p=0.4, columns=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    qb, kb = -(-n // bq), -(-m // bk)
    mask = torch.rand(b, h, qb, kb, generator=g) < p
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        layout = layout.with_columns(torch.randint(-1, m, (b, h, qb, columns), generator=g))
    return layout


def brute_density(layout, causal):
    mask = layout.to_dense_mask(causal=causal)
    n, m = layout.num_queries, layout.num_keys
    total = causal_token_mask(n, m, 0, n).sum() if causal else n * m
    return mask.sum((-1, -2)).double() / max(int(total), 1)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 150),
    m=st.integers(1, 150),
    bq=st.sampled_from([8, 16, 32]),
    bk=st.sampled_from([8, 16, 32]),
    causal=st.booleans(),
    columns=st.integers(0, 6),
    seed=st.integers(0, 10_000),
)
def test_layout_invariants(n, m, bq, bk, causal, columns, seed):
    a = random_layout(2, 3, n, m, bq, bk, columns=columns, seed=seed).validate()
    b = random_layout(1, 3, n, m, bq, bk, p=0.5, columns=columns, seed=seed + 1).validate()
    assert torch.allclose(a.density(causal, reduce=False), brute_density(a, causal))
    union, inter = a.union(b).validate(), a.intersection(b).validate()
    assert torch.equal(union.to_dense_mask(), a.to_dense_mask() | b.to_dense_mask())
    assert torch.equal(inter.to_dense_mask(), a.to_dense_mask() & b.to_dense_mask())
    assert inter.density(causal) <= min(a.density(causal), b.density(causal)) + 1e-12
    stacked = Layout.cat([a, b], dim=1).validate()
    assert torch.equal(stacked.to_dense_mask()[:, :3], a.to_dense_mask())


@pytest.mark.parametrize("causal", [True, False])
def test_pair_counts_a_query_block_at_a_time_match_the_exact_count(monkeypatch, causal):
    """`count_pairs` runs a chunk of query blocks a pass (in one pass, the int64 temporaries of a
    1M-token plan ran an H200 out of memory): one block a pass, over blocks, columns and spans of
    ragged rows, counts every visible pair once."""
    import attnsieve.layout_counts as counts

    g = torch.Generator().manual_seed(5)
    layout = random_layout(2, 3, 150, 170, 16, 32, columns=5, seed=3)
    start = torch.randint(-1, 170, (2, 3, layout.num_q_blocks, 3), generator=g)
    layout = layout.with_spans(start, start + torch.randint(1, 40, start.shape, generator=g))
    assert layout.has_columns and layout.has_spans
    monkeypatch.setattr(counts, "_CHUNK_SLOTS", 1)
    assert torch.allclose(layout.density(causal, reduce=False), brute_density(layout, causal))


def test_cat_stacks_layouts_whose_stacked_axis_differs():
    """Head counts may differ when stacking heads, batch sizes when stacking batch; the other
    axis must broadcast."""
    two, three = random_layout(1, 2, 40, 70, 16, 16, seed=1), random_layout(2, 3, 40, 70, 16, 16)
    heads = Layout.cat([two, three], dim=1).validate()
    assert (heads.batch, heads.heads) == (2, 5)
    assert torch.equal(heads.to_dense_mask()[:, 2:], three.to_dense_mask())
    assert torch.equal(heads.to_dense_mask()[1, :2], two.to_dense_mask()[0])
    batch = Layout.cat([three, random_layout(1, 3, 40, 70, 16, 16, seed=2)], dim=0)
    assert (batch.batch, batch.heads) == (3, 3)
    with pytest.raises(ValueError, match="heads 3 does not broadcast with 2"):
        Layout.cat([two, three], dim=0)


@pytest.mark.parametrize("n,m", [(100, 100), (37, 90), (1, 300), (64, 64)])
def test_dense_layout_covers_causal_region_exactly(n, m):
    layout = Layout.dense(n, m, block_q=16, block_k=32, causal=True).validate()
    assert layout.is_dense
    assert layout.density(True) == pytest.approx(1.0)
    causal = causal_token_mask(n, m, 0, n)
    assert torch.equal(layout.to_dense_mask(causal=True)[0, 0], causal)
    # every chosen block holds at least one visible key: nothing wasted
    assert layout.block_count.sum() == Layout.causal_block_mask(n, m, 16, 32).sum()


def test_topk_respects_causality_and_minus_inf():
    scores = torch.randn(1, 2, 4, 4)
    scores[0, 0, 3, 0] = -math.inf
    layout = Layout.from_topk(scores, 3, block_q=16, block_k=16, num_queries=64, num_keys=64)
    mask = layout.block_mask()
    assert not (mask & ~torch.ones(4, 4, dtype=torch.bool).tril()).any()
    assert layout.block_count[0, 0].tolist() == [1, 2, 3, 3]
    assert not mask[0, 0, 3, 0]
    full = Layout.from_topk(
        torch.randn(1, 1, 4, 4), 99, block_q=16, block_k=16, num_queries=64, num_keys=64
    )
    assert torch.equal(full.block_mask(), Layout.dense(64, 64, block_q=16, block_k=16).block_mask())


def test_columns_inside_blocks_are_dropped_and_sorted():
    layout = Layout.from_block_mask(
        torch.tensor([[[[True, False, False]]]]),
        block_q=32,
        block_k=16,
        num_queries=32,
        num_keys=48,
    )
    layout = layout.with_columns(torch.tensor([[[[40, 3, 20, 40, -1]]]]))
    assert layout.column_count.item() == 2
    assert layout.column_idx[0, 0, 0, :2].tolist() == [20, 40]


def test_heads_for_broadcasts():
    layout = random_layout(1, 4, 32, 32, 16, 16)
    assert layout.heads_for(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert random_layout(1, 8, 32, 32, 16, 16).heads_for(8, 4).tolist() == list(range(8))
    assert random_layout(1, 1, 32, 32, 16, 16).heads_for(8, 4).tolist() == [0] * 8


def good():
    return dict(
        block_idx=torch.zeros(1, 1, 2, 2, dtype=torch.int32),
        block_count=torch.ones(1, 1, 2, dtype=torch.int32),
        block_q=16,
        block_k=16,
        num_queries=32,
        num_keys=32,
    )


MALFORMED = [
    ("block_idx", dict(block_idx=torch.zeros(1, 1, 2, 2, dtype=torch.int64)), TypeError),
    ("block_count", dict(block_count=torch.ones(1, 1, 2)), TypeError),
    ("block_idx", dict(block_idx=[[0]]), TypeError),
    ("block_idx", dict(block_idx=torch.zeros(1, 2, 2, dtype=torch.int32)), ValueError),
    ("block_idx", dict(block_idx=torch.zeros(1, 1, 3, 2, dtype=torch.int32)), ValueError),
    ("block_count", dict(block_count=torch.ones(1, 2, 2, dtype=torch.int32)), ValueError),
    ("block_q", dict(block_q=0), ValueError),
    ("num_keys", dict(num_keys=-5), ValueError),
    ("num_queries", dict(num_queries=3.5), ValueError),
    (
        "column_idx and column_count",
        dict(column_idx=torch.zeros(1, 1, 2, 1, dtype=torch.int32)),
        ValueError,
    ),
    (
        "column_count",
        dict(
            column_idx=torch.zeros(1, 1, 2, 1, dtype=torch.int32),
            column_count=torch.ones(1, 1, 3, dtype=torch.int32),
        ),
        ValueError,
    ),
]


@pytest.mark.parametrize("name,override,error", MALFORMED)
def test_malformed_construction(name, override, error):
    with pytest.raises(error, match=name):
        Layout(**{**good(), **override})


VALIDATE = [
    (
        "block_idx",
        dict(
            block_idx=torch.tensor([[[[0, 5], [0, 0]]]], dtype=torch.int32),
            block_count=torch.tensor([[[2, 1]]], dtype=torch.int32),
        ),
    ),
    (
        "strictly increasing",
        dict(
            block_idx=torch.tensor([[[[1, 0], [0, 0]]]], dtype=torch.int32),
            block_count=torch.tensor([[[2, 1]]], dtype=torch.int32),
        ),
    ),
    ("block_count", dict(block_count=torch.tensor([[[3, 1]]], dtype=torch.int32))),
    (
        "disjoint",
        dict(
            column_idx=torch.tensor([[[[3], [20]]]], dtype=torch.int32),
            column_count=torch.ones(1, 1, 2, dtype=torch.int32),
        ),
    ),
    (
        "column_idx",
        dict(
            column_idx=torch.tensor([[[[99], [20]]]], dtype=torch.int32),
            column_count=torch.ones(1, 1, 2, dtype=torch.int32),
        ),
    ),
]


@pytest.mark.parametrize("match,override", VALIDATE)
def test_validate_rejects_bad_contents(match, override):
    with pytest.raises(ValueError, match=match):
        Layout(**{**good(), **override}).validate()


def test_validate_ignores_column_padding_past_the_keys():
    """Slots past column_count are padding, whatever they hold (here 99 > M)."""
    layout = Layout(
        **{**good(), "block_idx": torch.zeros(1, 1, 2, 1, dtype=torch.int32)},
        column_idx=torch.tensor([[[[20, 99], [20, 99]]]], dtype=torch.int32),
        column_count=torch.ones(1, 1, 2, dtype=torch.int32),
    )
    assert layout.to_dense_mask()[0, 0, :, 20].sum() == 32


def test_malformed_operations():
    layout = Layout(**good())
    other = Layout.dense(32, 48, block_q=16, block_k=16)
    with pytest.raises(ValueError, match="other"):
        layout.union(other)
    with pytest.raises(TypeError, match="other"):
        layout.intersection("dense")
    with pytest.raises(ValueError, match="mask"):
        Layout.from_block_mask(
            torch.ones(1, 1, 3, 3, dtype=torch.bool),
            block_q=16,
            block_k=16,
            num_queries=32,
            num_keys=32,
        )
    with pytest.raises(TypeError, match="mask"):
        Layout.from_block_mask(
            torch.ones(1, 1, 2, 2), block_q=16, block_k=16, num_queries=32, num_keys=32
        )
    with pytest.raises(ValueError, match="^k: expected a non-negative int"):
        Layout.from_topk(
            torch.randn(1, 1, 2, 2), -1, block_q=16, block_k=16, num_queries=32, num_keys=32
        )
    with pytest.raises(ValueError, match="column_idx"):
        layout.with_columns(torch.tensor([[[[40], [1]]]]))
    two_heads = random_layout(1, 2, 32, 32, 16, 16)
    with pytest.raises(ValueError, match="column_idx: heads 3"):
        two_heads.with_columns(torch.zeros(1, 3, 2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="column_count"):
        two_heads.with_columns(torch.zeros(1, 2, 2, 1, dtype=torch.long), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="column_count: expected shape"):
        two_heads.with_columns(
            torch.zeros(1, 2, 2, 1, dtype=torch.long), torch.ones(2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="dim"):
        Layout.cat([layout], dim=2)
    with pytest.raises(ValueError, match="rows"):
        layout.mask_rows(10, 5)
    q, k = torch.randn(1, 4, 32, 16), torch.randn(1, 2, 40, 16)
    with pytest.raises(ValueError, match="layout"):
        attention(q, k, k, layout, backend="reference")
    with pytest.raises(ValueError, match="heads"):
        attention(
            torch.randn(1, 4, 32, 16),
            torch.randn(1, 4, 32, 16),
            torch.randn(1, 4, 32, 16),
            random_layout(1, 3, 32, 32, 16, 16),
            backend="reference",
        )


def test_a_layout_from_tensors_cannot_claim_to_be_dense():
    """Dense dispatch (SDPA) trusts is_dense and reads no block: only Layout.dense sets it."""
    dense = Layout.dense(32, 32, block_q=16, block_k=16)
    diagonal = torch.tensor([[[[0, -1], [1, -1]]]], dtype=torch.int32)
    with pytest.raises(ValueError, match="^is_dense: set only by Layout.dense"):
        dataclasses.replace(dense, block_idx=diagonal, block_count=torch.ones(1, 1, 2).int())
    with pytest.raises(ValueError, match="^k: expected a non-negative int"):
        Layout.from_topk(
            torch.zeros(1, 1, 2, 2), True, block_q=16, block_k=16, num_queries=32, num_keys=32
        )
