"""The top-``count`` page-selection kernel vs its PyTorch twin (exactly equal, ties included), what
both pick, and the argument checks of `api.select_pages` (TRITON_INTERPRET=1 on CPU)."""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import page_select, page_select_reference

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _scores(b, h, p, levels=None, transposed=False):
    """float32 (B, H, P): normal, or drawn from ``levels`` distinct values (many ties); each row
    with its last valid page +inf and a random tail of -inf, as Quest's scores; (B, P, H)
    storage transposed when asked."""
    if levels:
        score = torch.randint(0, levels, (b, h, p)).float() - levels // 2
    else:
        score = torch.randn(b, h, p)
    valid = torch.randint(1, p + 1, (b, h))
    pages = torch.arange(p)
    score = score.masked_fill(pages >= valid[..., None], -math.inf)
    score = score.masked_fill(pages == valid[..., None] - 1, math.inf)
    if transposed:
        return score.transpose(1, 2).contiguous().to(DEVICE).transpose(1, 2), valid.to(DEVICE)
    return score.to(DEVICE), valid.to(DEVICE)


def _check(score, count, width):
    """Kernel == twin exactly; the lists ascending, -1 padded, the top entries of each row."""
    idx, n = page_select.select_pages(score, count, width)
    ref_idx, ref_n = page_select_reference.select_pages(score, count, width)
    assert idx.dtype == n.dtype == torch.int32 and idx.shape == (*score.shape[:2], width)
    assert idx.is_contiguous()
    assert torch.equal(n, ref_n) and torch.equal(idx, ref_idx)
    for row, s, k in zip(idx.flatten(0, 1), score.flatten(0, 1), n.flatten().tolist(), strict=True):
        head, pad = row[:k], row[k:]
        assert bool((pad == -1).all()) and bool((head >= 0).all())
        assert bool((head[1:] > head[:-1]).all()), "strictly ascending"
        if 0 < k < s.numel():  # nothing left out beats the least picked; ties by lowest index
            key = page_select_reference.order_key(s)
            picked = torch.zeros_like(s, dtype=torch.bool)
            picked[head.long()] = True
            low = key[picked].min()
            assert bool((key[~picked] <= low).all())
            tied_out = (~picked & (key == low)).nonzero()
            if tied_out.numel():
                assert int(tied_out.min()) > int(head[key[head.long()] == low].max())


def _counts(valid, width, kind):
    """Counts clamped as `page_budget` clamps them (1 <= count <= min(width, valid pages))."""
    cap = valid.clamp(max=width)
    if kind == "one":
        return torch.ones_like(valid)
    if kind == "width":
        return cap
    return torch.randint(1, 1 << 20, valid.shape, device=valid.device) % cap + 1  # ragged


# (B, H, P, width, levels, transposed); the in-register path: P <= the kernel's block
SINGLE = [
    (2, 3, 300, 40, None, False),
    (1, 4, 129, 129, 3, True),
    (3, 1, 1000, 250, 2, False),
    (1, 2, 77, 16, 1, False),  # every finite score equal: ties decide everything
]


@pytest.mark.parametrize("kind", ["one", "width", "ragged"])
@pytest.mark.parametrize(("b", "h", "p", "width", "levels", "transposed"), SINGLE)
def test_matches_twin(b, h, p, width, levels, transposed, kind):
    score, valid = _scores(b, h, p, levels, transposed)
    _check(score, _counts(valid, width, kind), width)


# P over several blocks of 64 (the last partial), width over one block too
CHUNKED = [
    (1, 2, 300, 70, None),
    (2, 1, 201, 33, 4),
]


@pytest.mark.parametrize(("b", "h", "p", "width", "levels"), CHUNKED)
def test_matches_twin_over_blocks(monkeypatch, b, h, p, width, levels):
    monkeypatch.setattr(page_select, "_MAX_BLOCK", 64)
    score, valid = _scores(b, h, p, levels)
    count = _counts(valid, width, "ragged")
    count[0, 0] = min(width, int(valid[0, 0]))
    _check(score, count, width)


def test_counts_clamped_and_signed_zeros_and_nan():
    """Counts past width or P, 0 and negative are clamped identically; -0.0 ranks just below
    +0.0; NaNs rank by their bits (a positive NaN above +inf); int64 counts work."""
    score = torch.zeros(1, 5, 90)
    score[0, 1, ::2] = -0.0
    score[0, 2, 7] = math.nan
    score[0, 3, :] = -math.inf
    score[0, 4, 50:] = math.inf
    score = score.to(DEVICE)
    count = torch.tensor([[1 << 40, 3, 2, 0, -4]], device=DEVICE)
    _check(score, count, 60)
    idx, n = page_select_reference.select_pages(score, count, 60)
    assert n.tolist() == [[60, 3, 2, 0, 0]]
    assert idx[0, 1, :3].tolist() == [1, 3, 5]  # the +0.0 pages first
    assert idx[0, 2, :2].tolist() == [0, 7]
    assert idx[0, 0, :60].tolist() == list(range(60))
    _check(score, count, 120)  # width > P: the extra slots stay -1


def test_distinct_scores_pick_what_topk_picks():
    score, valid = _scores(2, 4, 500)
    count = _counts(valid, 64, "ragged")
    idx, n = api.select_pages(score, count, 64, backend="triton")
    for row, s, k in zip(idx.flatten(0, 1), score.flatten(0, 1), n.flatten().tolist(), strict=True):
        assert row[:k].tolist() == sorted(s.topk(k).indices.tolist())


def _bits(b, h, p, spread):
    """float32 (B, H, P) scores whose bits differ only in their low ``spread`` bits around 1.0,
    -1.0 and 0.0: the search must settle on the last byte, on either side of zero."""
    base = torch.tensor([1.0, -1.0, 0.0]).view(torch.int32)[torch.randint(0, 3, (b, h, p))]
    return (base + torch.randint(0, 1 << spread, (b, h, p), dtype=torch.int32)).view(torch.float32)


@pytest.mark.parametrize("spread", [4, 12, 20])
def test_scores_close_in_their_bits(spread):
    score = _bits(2, 3, 700, spread).to(DEVICE)
    count = torch.randint(0, 701, (2, 3), device=DEVICE)
    _check(score, count, 700)
    assert torch.equal(
        page_select.top_mask(score, count), page_select_reference.top_mask(score, count)
    )


def _check_mask(score, count):
    """The mask kernel == its twin exactly, and keeps what `select_pages` lists."""
    got = page_select.top_mask(score, count)
    assert got.dtype == torch.bool and got.shape == score.shape and got.is_contiguous()
    assert torch.equal(got, page_select_reference.top_mask(score, count))
    idx, n = page_select_reference.select_pages(score, count, score.shape[2])
    listed = torch.zeros_like(got)
    for row, (i, k) in enumerate(zip(idx.flatten(0, 1), n.flatten().tolist(), strict=True)):
        listed.flatten(0, 1)[row, i[:k].long()] = True
    assert torch.equal(got, listed)


@pytest.mark.parametrize("kind", ["one", "width", "ragged"])
@pytest.mark.parametrize(("b", "h", "p", "levels", "transposed"), [
    (2, 3, 300, None, False), (1, 4, 129, 3, True), (1, 2, 77, 1, False),
])  # fmt: skip
def test_top_mask_matches_twin(b, h, p, levels, transposed, kind):
    score, valid = _scores(b, h, p, levels, transposed)
    _check_mask(score, _counts(valid, p, kind))


def test_top_mask_over_blocks_and_clamped_counts(monkeypatch):
    monkeypatch.setattr(page_select, "_MAX_BLOCK", 64)
    score, _ = _scores(2, 2, 201, levels=4)
    _check_mask(score, torch.tensor([[0, 201], [1 << 40, -3]], device=DEVICE))
    _check_mask(score, torch.tensor([[5, 64], [65, 130]], device=DEVICE))


def test_top_mask_empty():
    score = torch.randn(2, 0, 5, device=DEVICE)
    assert (
        page_select.top_mask(score, torch.ones(2, 0, dtype=torch.int32, device=DEVICE)).shape
        == score.shape
    )
    score = torch.randn(1, 2, 0, device=DEVICE)
    _check_mask(score, torch.ones(1, 2, dtype=torch.int32, device=DEVICE))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_api_dispatch(backend):
    score, valid = _scores(1, 2, 50, levels=3)
    out = api.select_pages(score, valid.clamp(max=8), 8, backend=backend)
    ref = page_select_reference.select_pages(score, valid.clamp(max=8), 8)
    assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))
    mask = api.top_mask(score, valid.clamp(max=8), backend=backend)
    assert torch.equal(mask, page_select_reference.top_mask(score, valid.clamp(max=8)))


def _args():
    return {"score": torch.randn(2, 3, 10), "count": torch.ones(2, 3, dtype=torch.int32),
            "width": 4}  # fmt: skip


MALFORMED = [
    ({"score": torch.randn(2, 3)}, ValueError, "score"),
    ({"score": torch.randn(2, 3, 10).double()}, TypeError, "score"),
    ({"score": torch.ones(2, 3, 10, dtype=torch.int32)}, TypeError, "score"),
    ({"count": torch.ones(2, 3)}, TypeError, "count"),
    ({"count": torch.ones(2, 3, dtype=torch.bool)}, TypeError, "count"),
    ({"count": torch.ones(2, 3, dtype=torch.complex64)}, TypeError, "count"),
    ({"count": [[1]]}, TypeError, "count"),
    ({"count": torch.ones(2, 4, dtype=torch.int32)}, ValueError, "count"),
    ({"width": 0}, ValueError, "width"),
    ({"width": 2.0}, ValueError, "width"),
    ({"backend": "fast"}, ValueError, "backend"),
]


@pytest.mark.parametrize(("change", "error", "name"), MALFORMED)
def test_malformed_input_is_named(change, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        api.select_pages(**{**_args(), **change})
    args = {**_args(), **change}
    del args["width"]
    if name != "width":
        with pytest.raises(error, match=f"^{name}:"):
            api.top_mask(**args)


@pytest.mark.parametrize(
    "budget", [{"budget_tokens": 100}, {"budget_tokens": 1}, {"ratio": 0.125}, {"ratio": 0.3},
               {"ratio": 1.0}, {"ratio": 0.0}],
)  # fmt: skip
@pytest.mark.parametrize("page_size", [16, 64])
def test_page_budget_matches_twin_and_the_token_rule(budget, page_size):
    """Pages per head: the token target (budget, or ceil(ratio x length) in float32, at most the
    length) in whole pages, at least 1, at most the head's pages; all of them when the target is
    the whole length (a budget of 100 tokens reads both pages of a 17-token head, not one); 0 for
    an empty head. Ragged
    lengths, one transposed (B, H) input."""
    lengths = torch.randint(0, 40_000, (5, 7), dtype=torch.int32)
    lengths[0, :4] = torch.tensor([0, 1, page_size, page_size + 1])
    count = (lengths + page_size - 1) // page_size
    lengths = lengths.to(DEVICE)
    count = count.t().contiguous().t().to(DEVICE)  # (B, H) with strides (1, B)
    out = page_select.page_budget(lengths, count, page_size, budget.get("budget_tokens"),
                                  budget.get("ratio"))  # fmt: skip
    ref = page_select_reference.page_budget(lengths, count, page_size, budget.get("budget_tokens"),
                                            budget.get("ratio"))  # fmt: skip
    assert out.dtype == torch.int32 and torch.equal(out, ref)
    for n, pages, got in zip(lengths.flatten().tolist(), count.flatten().tolist(),
                             out.flatten().tolist(), strict=True):  # fmt: skip
        if "budget_tokens" in budget:
            target = min(n, budget["budget_tokens"])
        else:
            target = min(n, math.ceil(float(torch.tensor(budget["ratio"]) * n)))
        assert got == (pages if target >= n else min(max(target // page_size, 1), pages))


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"lengths": torch.ones(2, 3)}, TypeError, "lengths"),
        ({"lengths": torch.ones(2, 3, 1, dtype=torch.int32)}, ValueError, "lengths"),
        ({"page_count": torch.ones(3, 2, dtype=torch.int32)}, ValueError, "page_count"),
        ({"page_size": 0}, ValueError, "page_size"),
        ({"ratio": 0.5}, ValueError, "budget_tokens, ratio"),
        ({"budget_tokens": None}, ValueError, "budget_tokens, ratio"),
        ({"budget_tokens": 0}, ValueError, "budget_tokens"),
        ({"budget_tokens": None, "ratio": 1.5}, ValueError, "ratio"),
    ],
)
def test_page_budget_malformed_input_is_named(change, error, name):
    args = {"lengths": torch.ones(2, 3, dtype=torch.int32),
            "page_count": torch.ones(2, 3, dtype=torch.int32), "page_size": 16,
            "budget_tokens": 64}  # fmt: skip
    with pytest.raises(error, match=f"^{name}:"):
        api.page_budget(**{**args, **change})
