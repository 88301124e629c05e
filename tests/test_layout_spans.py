"""Layout spans (token-level key ranges, MInference's slash lines): construction against masks
built by hand, exact density, set algebra, validation, the Triton kernel against the reference
(TRITON_INTERPRET=1 on CPU, fp16), and the vertical-slash planners that use them."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsieve.api import attention
from attnsieve.checks import cdiv
from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.workloads import make_workload
from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout, causal_token_mask
from attnsieve.methods import get_planner

PARTS = ("column_idx", "column_count", "span_start", "span_end", "span_count")
I32 = torch.int32


def random_layout(b, h, n, m, bq, bk, p=0.2, columns=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, -(-n // bq), -(-m // bk), generator=g) < p
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        cols = torch.randint(-1, m, (b, h, layout.num_q_blocks, columns), generator=g)
        layout = layout.with_columns(cols)
    return layout


def diagonal_mask(layout, offsets, width=1):
    """bool (B, H, N, M) by hand: the rows of query block j cover key t iff a chosen offset o has
    t in [P0 - o - width + 1, P1 - o], P0 and P1 the block's first and last positions."""
    n, m, bq, qb = layout.num_queries, layout.num_keys, layout.block_q, layout.num_q_blocks
    if offsets.dim() == 3:
        offsets = offsets[:, :, None].expand(-1, -1, qb, -1)
    out = torch.zeros(*offsets.shape[:2], n, m, dtype=torch.bool)
    for b in range(offsets.shape[0]):
        for h in range(offsets.shape[1]):
            for j in range(qb):
                p0, p1 = j * bq + m - n, min(n, (j + 1) * bq) - 1 + m - n
                for o in offsets[b, h, j].tolist():
                    if o >= 0 and p1 - o >= 0:
                        keys = slice(max(0, p0 - o - width + 1), p1 - o + 1)
                        out[b, h, j * bq : (j + 1) * bq, keys] = True
    return out


def columns_mask(cols, n, m, bq):
    """bool (B, H, N, M) by hand: the listed key columns of each row's query block."""
    out = torch.zeros(*cols.shape[:2], n, m + 1, dtype=torch.bool)
    target = torch.where(cols >= 0, cols, m)[:, :, torch.arange(n) // bq]
    return out.scatter_(-1, target, True)[..., :m]


def brute_density(layout, causal):
    n, m = layout.num_queries, layout.num_keys
    total = int(causal_token_mask(n, m, 0, n).sum()) if causal else n * m
    return layout.to_dense_mask(causal=causal).sum((-1, -2)).double() / max(total, 1)


def rebuilt(layout, **changes):
    """The layout rebuilt from its tensors as a user would, so it is validated in full."""
    parts = {**{f: getattr(layout, f) for f in PARTS}, **changes}
    return Layout(
        layout.block_idx, layout.block_count, layout.block_q, layout.block_k,
        layout.num_queries, layout.num_keys, **parts,
    )  # fmt: skip


# ---- construction, masks, density --------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 130),
    m=st.integers(1, 130),
    bq=st.sampled_from([8, 16, 32]),
    bk=st.sampled_from([8, 16, 32]),
    per_block=st.booleans(),
    width=st.sampled_from([1, 1, 5, 16]),
    slashes=st.integers(0, 7),
    columns=st.integers(0, 5),
    seed=st.integers(0, 10_000),
)
def test_diagonals_cover_exactly_their_ranges(
    n, m, bq, bk, per_block, width, slashes, columns, seed
):
    layout = random_layout(2, 3, n, m, bq, bk, columns=columns, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (1, 3, layout.num_q_blocks, slashes) if per_block else (2, 1, slashes)
    offsets = torch.randint(-1, m, shape, generator=g)
    spans = layout.with_diagonals(offsets, width=width)
    assert spans.has_spans and not spans.is_dense
    rebuilt(spans)  # sorted, disjoint, in range, off the blocks, no column inside
    want = layout.to_dense_mask() | diagonal_mask(layout, offsets, width)
    assert torch.equal(spans.to_dense_mask(), want)  # nothing past causality's reach either
    # density adds the parts up: it equals the union's pairs only if no pair is counted twice
    for causal in (True, False):
        assert torch.allclose(spans.density(causal, reduce=False), brute_density(spans, causal))
    more = torch.randint(-1, m, (2, 3, 4), generator=g)  # merged with the present spans
    both = rebuilt(spans.with_diagonals(more))
    assert torch.equal(both.to_dense_mask(), want | diagonal_mask(layout, more))
    cols = torch.randint(-1, m, (2, 3, layout.num_q_blocks, 4), generator=g)
    with_cols = rebuilt(both.with_columns(cols))  # replaces the columns; those in spans drop
    without = rebuilt(both, column_idx=None, column_count=None).to_dense_mask()
    assert torch.equal(with_cols.to_dense_mask(), without | columns_mask(cols, n, m, bq))


def test_diagonals_worked_example():
    """N = M = 64, blocks of 16, the diagonal blocks kept: offsets {0, 1, 40} in query block j
    (positions [16j, 16j + 15]) cover keys [16j - 1, 16j + 15] and [16j - 40, 16j - 25]."""
    diagonal = torch.eye(4, dtype=torch.bool)[None, None]
    layout = Layout.from_block_mask(diagonal, block_q=16, block_k=16, num_queries=64, num_keys=64)
    layout = layout.with_columns(torch.tensor([[[[20], [15], [5], [30]]]]))
    assert layout.column_count[0, 0].tolist() == [1, 1, 1, 1]
    spans = layout.with_diagonals(torch.tensor([[[40, -1, 1, 0]]]), torch.tensor([[4]]))
    rows = [
        (spans.span_start[0, 0, j, :c].tolist(), spans.span_end[0, 0, j, :c].tolist())
        for j, c in enumerate(spans.span_count[0, 0].tolist())
    ]
    assert rows == [([], []), ([15], [16]), ([0, 31], [8, 32]), ([8, 47], [24, 48])]
    assert spans.column_count[0, 0].tolist() == [1, 0, 0, 1]  # 15 and 5 fell in spans


def test_with_spans_clips_merges_and_cuts_out_blocks():
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 3, 1] = True  # keys [16, 32) in query block 3
    layout = Layout.from_block_mask(mask, block_q=16, block_k=16, num_queries=64, num_keys=64)
    start = torch.tensor([10, 5, 40, -3]).expand(1, 1, 4, 4)
    end = torch.tensor([30, 12, 70, 2]).expand(1, 1, 4, 4)
    spans = layout.with_spans(start, end, torch.full((1, 1, 4), 3))  # the 4th range not counted
    assert spans.span_count[0, 0].tolist() == [2, 2, 2, 2]
    assert spans.span_start[0, 0, :, :2].tolist() == [[5, 40]] * 3 + [[5, 40]]
    assert spans.span_end[0, 0, :, :2].tolist() == [[30, 64]] * 3 + [[16, 64]]


def test_with_spans_clips_a_start_of_minus_one_as_any_other():
    """-1 is a start like -2 (a window start ``pos - w`` meets it): [-1, 10) clips to [0, 10).
    The range was dropped, as if -1 marked an absent slot; uncounted slots are what is absent."""
    layout = Layout.from_block_mask(
        torch.zeros(1, 1, 4, 4, dtype=torch.bool), block_q=16, block_k=16, num_queries=64,
        num_keys=64,
    )  # fmt: skip
    for start in (-3, -1, 0):
        spans = layout.with_spans(torch.full((1, 1, 4, 1), start), torch.full((1, 1, 4, 1), 10))
        assert spans.to_dense_mask(causal=False)[0, 0, -1].sum() == 10, start
    uncounted = layout.with_spans(
        torch.full((1, 1, 4, 1), -1), torch.full((1, 1, 4, 1), 10), torch.zeros(1, 1, 4, dtype=I32)
    )
    assert not uncounted.to_dense_mask(causal=False).any()


def test_ranges_keep_the_counted_columns_only():
    """Column slots past a row's count may hold anything (`validate` reads the counted prefix,
    the kernel and `pairs` ignore the rest); `with_diagonals` brought them back as columns
    (pairs 128 -> 192, the kernel's output off by 1.37 in the review's reproducer)."""
    no_blocks = (torch.full((1, 1, 4, 1), -1, dtype=I32), torch.zeros(1, 1, 4, dtype=I32))
    for stale in (9, 10**6):
        columns = torch.tensor([5, stale], dtype=I32).expand(1, 1, 4, 2).contiguous()
        layout = Layout(*no_blocks, 16, 16, 64, 64, columns, torch.ones(1, 1, 4, dtype=I32))
        far = torch.tensor([[[60]]])
        want = layout.to_dense_mask(causal=False) | Layout.from_block_mask(
            torch.zeros(1, 1, 4, 4, dtype=torch.bool), block_q=16, block_k=16, num_queries=64,
            num_keys=64,
        ).with_diagonals(far).to_dense_mask(causal=False)  # fmt: skip
        assert torch.equal(layout.with_diagonals(far).to_dense_mask(causal=False), want)


def test_layouts_with_no_block_or_span_slots_take_ranges():
    """Zero-width index lists, which the constructor accepts: K = 0 block slots under
    `with_spans` / `with_diagonals`, S = 0 span slots beside columns (both raised IndexError)."""
    columns = (torch.tensor([3, 20], dtype=I32).expand(1, 1, 3, 2).contiguous(),
               torch.full((1, 1, 3), 2, dtype=I32))  # fmt: skip
    empty = (torch.zeros(1, 1, 3, 0, dtype=I32), torch.zeros(1, 1, 3, dtype=I32))
    padded = (torch.full((1, 1, 3, 1), -1, dtype=I32), torch.zeros(1, 1, 3, dtype=I32))
    layouts = [Layout(*blocks, 16, 16, 40, 40, *columns) for blocks in (empty, padded)]
    start, end = torch.full((1, 1, 3, 1), 5), torch.full((1, 1, 3, 1), 9)
    for change in (
        lambda x: x.with_diagonals(torch.tensor([[[0]]])),
        lambda x: x.with_spans(start, end),
    ):
        masks = [change(x).to_dense_mask() for x in layouts]
        assert torch.equal(masks[0], masks[1])
    no_spans = dict(span_start=torch.zeros(1, 1, 3, 0, dtype=I32),
                    span_end=torch.zeros(1, 1, 3, 0, dtype=I32),
                    span_count=torch.zeros(1, 1, 3, dtype=I32))  # fmt: skip
    with_no_spans = Layout(*padded, 16, 16, 40, 40, *columns, **no_spans)
    assert torch.equal(with_no_spans.to_dense_mask(), layouts[1].to_dense_mask())


@pytest.mark.parametrize("seed", range(6))
def test_set_algebra_and_views_with_spans(seed):
    n, m, bq, bk = 70 + seed, 90 - 3 * seed, 16, 8
    g = torch.Generator().manual_seed(seed)
    a = random_layout(2, 3, n, m, bq, bk, columns=3 * (seed % 2), seed=seed)
    a = a.with_diagonals(torch.randint(-1, m, (2, 3, 5), generator=g), width=1 + seed % 3)
    b = random_layout(1, 3, n, m, bq, bk, p=0.3, columns=2, seed=seed + 9)
    if seed % 3:
        b = b.with_diagonals(torch.randint(-1, m, (1, 3, b.num_q_blocks, 3), generator=g))
    for x, y in ((a, b), (b, a)):
        union, inter = x.union(y).validate(), x.intersection(y).validate()
        assert torch.equal(union.to_dense_mask(), x.to_dense_mask() | y.to_dense_mask())
        assert torch.equal(inter.to_dense_mask(), x.to_dense_mask() & y.to_dense_mask())
    plain = random_layout(2, 1, n, m, bq, bk, seed=seed + 5)  # no token-level part at all
    stacked = Layout.cat([a, b, plain], dim=1).validate()
    assert stacked.has_spans and stacked.heads == 7
    assert torch.equal(stacked.to_dense_mask()[:, :3], a.to_dense_mask())
    assert torch.equal(stacked.to_dense_mask()[:, 3:6], b.to_dense_mask().expand(2, -1, -1, -1))
    assert torch.equal(stacked.to_dense_mask()[:, 6:], plain.to_dense_mask())
    batched = Layout.cat([a, a], dim=0).validate()
    assert torch.equal(batched.to_dense_mask(), a.to_dense_mask().repeat(2, 1, 1, 1))
    assert torch.equal(a.to("cpu").span_end, a.span_end)
    assert torch.equal(a.mask_rows(17, 40), a.to_dense_mask()[:, :, 17:40])


# ---- validation --------------------------------------------------------------------------------
def _spans(start, end, count=None):
    """Span fields for a (1, 1, 2)-query-block layout of 32 keys in blocks of 16, block 0 chosen."""
    start, end = torch.tensor(start, dtype=I32), torch.tensor(end, dtype=I32)
    count = torch.tensor([start.shape[-1]] * 2 if count is None else count, dtype=I32)
    return dict(
        span_start=start[None, None], span_end=end[None, None], span_count=count[None, None]
    )


def _base():
    return dict(
        block_idx=torch.tensor([[[[0], [0]]]], dtype=I32),
        block_count=torch.ones(1, 1, 2, dtype=I32),
        block_q=16, block_k=16, num_queries=32, num_keys=32,
    )  # fmt: skip


VALIDATE = [
    ("sorted and disjoint", _spans([[16, 20], [20, 24]], [[22, 24], [24, 30]])),  # overlap
    ("sorted and disjoint", _spans([[24, 16], [16, 30]], [[30, 20], [20, 31]])),  # unsorted
    ("0 <= start < end <= 32", _spans([[16], [20]], [[33], [24]])),  # past the keys
    ("0 <= start < end <= 32", _spans([[20], [25]], [[20], [30]])),  # empty
    ("span_count", _spans([[16], [20]], [[18], [24]], count=[2, 1])),
    ("disjoint from the chosen key blocks", _spans([[10], [20]], [[18], [24]])),
    ("disjoint from the chosen key blocks", _spans([[16], [15]], [[20], [16]])),
    (
        "columns must be disjoint from the spans",
        {
            **_spans([[16], [20]], [[18], [24]]),
            "column_idx": torch.tensor([[[[17], [30]]]], dtype=I32),
            "column_count": torch.ones(1, 1, 2, dtype=I32),
        },
    ),
]


@pytest.mark.parametrize("match,spans", VALIDATE)
def test_validate_rejects_bad_spans(match, spans):
    with pytest.raises(ValueError, match=match):
        Layout(**_base(), **spans)


def test_validate_accepts_touching_spans_and_ignores_padding():
    spans = _spans([[16, 20], [20, 99]], [[20, 24], [32, -5]], count=[2, 1])
    layout = Layout(**_base(), **spans)
    assert layout.density(causal=False) == pytest.approx((2 * 16 * 16 + 8 * 16 + 12 * 16) / 1024)


MALFORMED = [
    ("must all be given", dict(span_start=torch.zeros(1, 1, 2, 1, dtype=I32)), ValueError),
    (
        "span_end: expected dtype",
        {
            **_spans([[16], [20]], [[18], [24]]),
            "span_end": torch.ones(1, 1, 2, 1, dtype=torch.int64),
        },
        TypeError,
    ),  # noqa: E501
    ("span_count: expected shape", _spans([[16], [20]], [[18], [24]], count=[1, 1, 1]), ValueError),
    (
        "span_end: shape",
        {**_spans([[16], [20]], [[18], [24]]), "span_end": torch.ones(1, 1, 2, 2, dtype=I32)},
        ValueError,
    ),  # noqa: E501
]


@pytest.mark.parametrize("match,spans,error", MALFORMED)
def test_malformed_span_fields(match, spans, error):
    with pytest.raises(error, match=match):
        Layout(**_base(), **spans)


def test_bad_diagonal_arguments():
    layout = random_layout(1, 2, 40, 50, 16, 16)
    ok = torch.zeros(1, 2, 3, dtype=torch.long)
    for offsets, match in [
        (torch.full((1, 2, 3), 50), "offsets: diagonal offsets must lie in"),
        (torch.full((1, 2, 3), -2), "offsets: diagonal offsets must lie in"),
        (torch.zeros(1, 2, 4, 3, dtype=torch.long), "offsets: expected shape"),
        (torch.zeros(1, 3, 3, dtype=torch.long), "offsets: heads 3"),
        (torch.zeros(3, dtype=torch.long), "offsets: expected shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            layout.with_diagonals(offsets)
    with pytest.raises(TypeError, match="offsets"):
        layout.with_diagonals(ok.float())
    with pytest.raises(ValueError, match="width"):
        layout.with_diagonals(ok, width=0)
    with pytest.raises(ValueError, match="count: expected shape"):
        layout.with_diagonals(ok, torch.ones(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="end: shape"):
        layout.with_spans(torch.zeros(1, 2, 3, 2, dtype=I32), torch.ones(1, 2, 3, 1, dtype=I32))


# ---- kernel vs reference (compiled on a GPU, else the interpreter) -----------------------------
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def qkv(b, h_q, h_kv, n, m, d=32):
    return (
        torch.randn(b, h, s, d, dtype=torch.float16, device=DEVICE)
        for h, s in ((h_q, n), (h_kv, m), (h_kv, m))
    )


def span_layout(b, h, n, m, bq, bk, p=0.15, columns=0, slashes=5, width=1, seed=0):
    """Random blocks and columns plus the diagonals 0 and 3 (spans across the causal diagonal)
    and random ones."""
    layout = random_layout(b, h, n, m, bq, bk, p=p, columns=columns, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    offsets = torch.cat(
        [torch.tensor([0, 3]).expand(b, h, 2), torch.randint(0, m, (b, h, slashes), generator=g)],
        -1,
    )  # noqa: E501
    return layout.with_diagonals(offsets, width=width)


def check_kernel(q, k, v, layout, causal):
    layout = layout.to(q.device)
    out, lse = sparse_attention(q, k, v, layout, causal=causal, return_lse=True)
    ref, ref_lse = attention_reference(q, k, v, layout, causal=causal, return_lse=True)
    assert not out.isnan().any()
    err = (out.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-6)
    assert err < 4e-3, f"relative error {err:.2e}"
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite) and not out[~finite].any()
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=2e-3, rtol=0)


# N < M, N > M (the first 50 rows see no key), one past whole blocks, a single query row, and
# M - N = 31 (the first row's reach ends on a block edge)
@pytest.mark.parametrize(("n", "m"), [(40, 90), (90, 40), (65, 65), (1, 90), (64, 95)])
@pytest.mark.parametrize("causal", [True, False])
def test_kernel_spans_blocks_columns(n, m, causal, nan_empty):
    q, k, v = qkv(1, 1, 1, n, m)  # one head: GQA and layout heads are the next test's
    layout = span_layout(1, 1, n, m, 32, 16, columns=4, width=1 + n % 3, seed=n + m)
    assert int(layout.span_count.sum()) > 0
    check_kernel(q, k, v, layout, causal)


@pytest.mark.parametrize(("g", "layout_heads"), [(1, 2), (4, 1), (4, 2), (2, 4)])
def test_kernel_spans_gqa_and_broadcast(g, layout_heads, nan_empty):
    # two query blocks, a ragged last key block (56 = 32 + 24), the diagonal inside key blocks
    q, k, v = qkv(2, 2 * g, 2, 32, 56)
    layout = span_layout(1, layout_heads, 32, 56, 16, 32, p=0.1, seed=g)  # batch broadcasts
    check_kernel(q, k, v, layout, causal=True)


def _no_blocks(n, m, block):
    """A one-head layout of n queries and m keys whose blocks (block x block) are all empty."""
    mask = torch.zeros(1, 1, cdiv(n, block), cdiv(m, block), dtype=torch.bool)
    return Layout.from_block_mask(mask, block_q=block, block_k=block, num_queries=n, num_keys=m)


def test_kernel_long_unaligned_spans_only(nan_empty):
    """Spans many BLOCK_N tiles long, starting off the tile grid, and no block at all."""
    q, k, v = qkv(1, 2, 1, 64, 200)
    empty = _no_blocks(64, 200, 32)
    layout = empty.with_spans(
        torch.tensor([[[[3, 77], [150, 0]]]]), torch.tensor([[[[70, 160], [190, 1]]]])
    )  # noqa: E501
    assert int(layout.block_count.sum()) == 0 and layout.span_count.tolist() == [[[2, 2]]]
    for causal in (True, False):
        check_kernel(q, k, v, layout, causal)


def test_spans_hidden_by_causality_are_skipped(nan_empty):
    """A span wholly past a query block's last visible key (sorted spans: a suffix) reads
    nothing, beside a visible one in the same block."""
    q, k, v = qkv(1, 2, 1, 64, 200)
    empty = _no_blocks(64, 200, 32)
    layout = empty.with_spans(
        torch.tensor([[[[170, 3], [150, 0]]]]), torch.tensor([[[[190, 140], [190, 1]]]])
    )  # query block 0 sees keys below 168: its span [170, 190) is hidden
    assert layout.span_count.tolist() == [[[2, 2]]]
    check_kernel(q, k, v, layout, causal=True)


# Two row tiles each, M - N 0 and 16. At M - N = 16 every row sees keys 0..15, where no key is
# poisoned: a span from 16 meets the same tiles as one from 0 there.
@pytest.mark.parametrize(
    ("n", "m", "start"),
    [(32, 32, s) for s in (0, 1, 2, 15, 16)] + [(32, 48, s) for s in (0, 1, 2, 15)],
)
def test_unmasked_span_tiles_stop_where_the_tile_first_row_stops_seeing(n, m, start):
    """A span's whole tiles run without a mask only up to the first key hidden from a row of the
    query tile: a NaN value there (the interpreter's 16-row tiles start every 16 rows) reaches
    exactly the rows that see it. The others keep their output up to rounding: on a GPU the
    kernel recomputes a tile that met a NaN on smaller tiles."""
    g = torch.Generator().manual_seed(start)
    q, k, v = (torch.randn(1, 1, s, 32, generator=g).half().to(DEVICE) for s in (n, m, m))
    empty = _no_blocks(n, m, 32)
    qb = cdiv(n, 32)
    layout = empty.with_spans(torch.full((1, 1, qb, 1), start), torch.full((1, 1, qb, 1), m))
    layout = layout.to(DEVICE)
    clean = sparse_attention(q, k, v, layout, causal=True).float()
    pos = torch.arange(n, device=DEVICE) + m - n
    for key in range(max(start, m - n), m):
        if (key - (m - n)) % 16 not in (0, 1, 15):  # keys at a row tile's reach and beside it
            continue
        poisoned = v.clone()
        poisoned[0, 0, key] = math.nan
        out = sparse_attention(q, k, poisoned, layout, causal=True).float()
        sees = pos >= key
        assert out[0, 0, sees].isnan().all()
        assert not out[0, 0, ~sees].isnan().any(), f"key {key} leaked"
        torch.testing.assert_close(out[0, 0, ~sees], clean[0, 0, ~sees], atol=2e-3, rtol=2e-3)


def test_tensor_built_layout_with_no_block_slots_and_spans(nan_empty):
    """A layout built from tensors with zero block slots (K = 0) and spans only: validated and
    run like one whose slots are all padding."""
    q, k, v = qkv(1, 2, 1, 32, 32)
    layout = Layout(
        block_idx=torch.zeros(1, 1, 2, 0, dtype=I32), block_count=torch.zeros(1, 1, 2, dtype=I32),
        block_q=16, block_k=16, num_queries=32, num_keys=32, **_spans([[0], [0]], [[4], [20]]),
    )  # fmt: skip
    check_kernel(q, k, v, layout, causal=True)


def test_nan_outside_every_part_never_reaches_the_output(nan_empty):
    """Query blocks at positions [96, 127] and [128, 159] with diagonals 0, 3 and 50: spans
    [46, 78), [93, 128) and [78, 110), [125, 160); keys 0..45 are in no part of any row."""
    n, m = 64, 160
    q, k, v = qkv(1, 2, 1, n, m)
    layout = random_layout(1, 1, n, m, 32, 32, p=0.0).with_diagonals(torch.tensor([[[0, 3, 50]]]))
    assert not layout.to_dense_mask()[..., :46].any() and layout.to_dense_mask()[..., 46].any()
    k[0, 0, 45], v[0, 0, 45], v[0, 0, 0] = math.nan, math.inf, math.nan
    layout = layout.to(DEVICE)
    for causal in (True, False):
        check_kernel(q, k, v, layout, causal)
    # a NaN value inside a span reaches exactly the rows that see it, as in the reference
    v[0, 0, 60] = math.nan
    out = sparse_attention(q, k, v, layout, causal=True)
    ref = attention_reference(q, k, v, layout, causal=True)
    rows = layout.to_dense_mask(causal=True)[0, 0, :, 60].to(DEVICE)
    assert rows.any() and not rows.all()
    assert torch.equal(out[0, :, :, 0].isnan(), rows.expand(2, -1))
    assert torch.equal(ref[0, :, :, 0].isnan(), rows.expand(2, -1))
    torch.testing.assert_close(
        out[:, :, ~rows].float(), ref[:, :, ~rows].float(), atol=4e-3, rtol=0
    )


# ---- planners ----------------------------------------------------------------------------------
def block_granular(layout):
    """The same layout with every span widened to the aligned key blocks it touches: what a
    planner had to keep before spans to contain the same diagonals."""
    bk, m = layout.block_k, layout.num_keys
    spans_only = Layout(
        layout.block_idx, layout.block_count * 0, layout.block_q, bk, layout.num_queries, m,
        span_start=layout.span_start, span_end=layout.span_end, span_count=layout.span_count,
    )  # fmt: skip
    tokens = spans_only.mask_rows(0, layout.num_queries)[:, :, :: layout.block_q]
    touched = torch.nn.functional.pad(tokens, (0, -m % bk)).unflatten(-1, (-1, bk)).any(-1)
    blocks = Layout.from_block_mask(
        layout.block_mask() | touched, block_q=layout.block_q, block_k=bk,
        num_queries=layout.num_queries, num_keys=m,
    )  # fmt: skip
    return (
        blocks.with_columns(layout.column_idx, layout.column_count)
        if layout.has_columns
        else blocks
    )


def planted_slash_pairs(w, layout, head, n):
    """bool (N,): rows whose planted slash keys (query i reads key i - o) the layout all keeps."""
    m = w.k.shape[2]
    mask = layout.mask_rows(0, n)[0, head]
    pos = torch.arange(n) + m - n
    ok = torch.ones(n, dtype=torch.bool)
    for o in w.offsets[head].tolist():
        key = pos - o
        seen = key >= 0
        ok &= ~seen | mask[torch.arange(n), key.clamp(min=0)]
    return ok


FLEX_SPANS = dict(block_q=32, block_k=32, min_budget=32, slash_spans=True)
VS = dict(vertical_size=16, slash_size=24, sink_tokens=4, local_slashes=8, block_q=32, block_k=32)
PLANNED = [
    # (name, kwargs, N, max density / block-granular density) measured: 0.61, 0.88, 0.80, 0.99
    ("vertical_slash", VS, 1024, 0.7),  # a diagonal: 32 keys instead of 2 blocks of 32
    ("vertical_slash", {**VS, "block_q": 64}, 1000, 0.95),
    ("flexprefill", FLEX_SPANS, 1000, 0.85),  # N - M unaligned
    # aligned N - M, block_q = block_k: a slash block's span is one key short of its two blocks
    ("flexprefill", FLEX_SPANS, 1024, 1.0),
]


@pytest.mark.parametrize("name,kwargs,n,max_ratio", PLANNED)
def test_planners_keep_every_chosen_diagonal_at_lower_density(name, kwargs, n, max_ratio):
    w = make_workload(
        ["sink_local", "vertical", "slash", "retrieval"], num_kv_heads=2, seq_len=1024,
        head_dim=64, num_spans=1, seed=2,
    )  # fmt: skip
    q = w.q[:, :, 1024 - n :]  # n < 1024: the last queries, bottom-right aligned
    layout = get_planner(name, **kwargs).plan(q, w.k).validate()
    assert layout.has_spans
    before = block_granular(layout).validate()
    assert not (layout.to_dense_mask() & ~before.to_dense_mask()).any()
    assert layout.density() < max_ratio * before.density(), (layout.density(), before.density())
    recall = attention_recall(q, w.k, layout)[0]
    for h in w.heads_of("slash"):  # the rest of a slash head's mass is noise and half-sinks
        assert planted_slash_pairs(w, layout, h if layout.heads == 4 else h // 2, n).all()
        assert recall[h] >= 0.95, recall.tolist()


@pytest.mark.parametrize("n", [1000, 1024])
def test_flexprefill_slash_blocks_are_the_blocks_its_spans_cross(n):
    """The default (blocks) keeps every key block the span plan touches, and nothing more."""
    w = make_workload(
        ["sink_local", "vertical", "slash", "retrieval"], num_kv_heads=2, seq_len=1024,
        head_dim=64, num_spans=1, seed=2,
    )  # fmt: skip
    q = w.q[:, :, 1024 - n :]
    spans = get_planner("flexprefill", **FLEX_SPANS).plan(q, w.k)
    blocks = get_planner("flexprefill", **{**FLEX_SPANS, "slash_spans": False}).plan(q, w.k)
    assert not blocks.has_spans and spans.has_spans
    assert torch.equal(blocks.to_dense_mask(), block_granular(spans).to_dense_mask())
    for h in w.heads_of("slash"):
        assert planted_slash_pairs(w, blocks, h, n).all()


def test_vertical_slash_spans_run_on_the_kernel(nan_empty):
    w = make_workload(["slash", "vertical"], num_kv_heads=1, seq_len=200, head_dim=32, seed=3)
    planner = get_planner(
        "vertical_slash", vertical_size=8, slash_size=12, sink_tokens=2, local_slashes=4,
        block_q=32, block_k=16,
    )  # fmt: skip
    layout = planner.plan(w.q, w.k)
    q, k, v = (t.to(DEVICE, torch.float16) for t in (w.q, w.k, w.v))
    check_kernel(q / 8, k, v, layout, causal=True)  # tamed logits: fp16-friendly scores


@pytest.mark.parametrize("causal", [True, False])
def test_int8_fp8_executes_spans(causal, nan_empty):
    """precision 'int8-fp8' runs span layouts: the kernel matches its twin and the exact attention
    over the same layout (tests/test_kernel_quant.py has the thorough cases)."""
    q, k, v = qkv(1, 1, 1, 70, 90)
    layout = span_layout(1, 1, 70, 90, 32, 32, columns=3, seed=4).to(DEVICE)
    assert int(layout.span_count.sum()) > 0
    got = attention(q, k, v, layout, causal=causal, precision="int8-fp8", backend="triton")
    twin = attention(q, k, v, layout, causal=causal, precision="int8-fp8", backend="reference")
    exact = attention_reference(q, k, v, layout, causal=causal)
    assert not got.isnan().any()
    err = (got.float() - twin.float()).norm() / twin.float().norm()
    assert err < 1e-3, f"kernel vs twin: relative error {err:.2e}"
    cos = torch.nn.functional.cosine_similarity(
        got.float().flatten(2), exact.float().flatten(2), -1
    )
    assert cos.min() >= 0.999, cos.tolist()
    without = Layout.from_block_mask(
        layout.block_mask(), block_q=32, block_k=32, num_queries=70, num_keys=90
    ).with_columns(layout.column_idx, layout.column_count)  # the same layout less its spans
    dropped = attention(q, k, v, without, causal=causal, precision="int8-fp8", backend="triton")
    assert (dropped.float() - got.float()).abs().max() > 0.1  # the spans did count


@pytest.mark.parametrize(("n", "m", "bq", "bk"), [(300, 300, 64, 128), (200, 333, 128, 64)])
def test_refined_layouts_keep_every_pair(n, m, bq, bk):
    """A layout at smaller blocks (its rows repeated for each query sub-block, its key blocks
    split) computes exactly the pairs it did: blocks, columns and spans, ragged last blocks."""
    layout = random_layout(2, 3, n, m, bq, bk, p=0.3, columns=3)
    offsets = torch.randint(-1, m, (2, 3, layout.num_q_blocks, 2), generator=torch.Generator())
    layout = layout.with_diagonals(offsets, width=3)
    for block_q, block_k in ((bq // 2, bk), (bq, bk // 4), (16, 16)):
        fine = layout.refined(block_q, block_k)
        assert (fine.block_q, fine.block_k) == (block_q, block_k)
        assert torch.equal(fine.to_dense_mask(), layout.to_dense_mask())
    assert layout.refined(bq, bk) is layout
    with pytest.raises(ValueError, match="^block_q: expected a divisor of the layout's"):
        layout.refined(bq * 2, bk)
