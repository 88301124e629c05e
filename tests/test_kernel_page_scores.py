"""Quest's page-score kernel vs its float32 twin, Quest's selection vs the float64 path it replaced,
and the argument checks of `api.quest_page_scores` (TRITON_INTERPRET=1 on CPU)."""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import page_scores, page_scores_reference
from attnsieve.methods.decode import PageView, Quest, StepState
from attnsieve.methods.decode.base import last_page
from attnsieve.methods.kv.base import pack_indices, rank_key, top_mask

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _summaries(counts, p, d, fill=(math.inf, -math.inf), dtype=torch.float32):
    """Random key min / max pools (N, D) with min <= max, as non-contiguous views of one (N, 2, D)
    buffer, and a page table (B, H_kv, P) onto shuffled rows; the rows of pages past ``counts``
    (B, H_kv) hold ``fill`` (min, max), as does a spare row no page uses."""
    count = torch.tensor(counts, dtype=torch.int32)
    b, h = count.shape
    rows = b * h * p + 1
    lo = torch.randn(rows, d)
    both = torch.stack([lo, lo + torch.rand(rows, d)], 1)
    table = torch.randperm(rows)[: b * h * p].view(b, h, p)
    dead = torch.arange(p) >= count[..., None]
    both[table[dead], 0], both[table[dead], 1] = fill
    both[torch.ones(rows, dtype=torch.bool).index_fill_(0, table.flatten(), False)] = fill[0]
    both = both.to(dtype).to(DEVICE)
    return both[:, 0], both[:, 1], table.int().to(DEVICE), count.to(DEVICE)


def _query(b, h_q, d, dtype, transposed=False):
    if transposed:  # strides (h_q * d, 1, h_q): no unit stride on D
        return torch.randn(b, d, h_q, dtype=dtype, device=DEVICE).transpose(1, 2)
    return torch.randn(b, h_q, d, dtype=dtype, device=DEVICE)


# (page counts per (batch, KV head), g, head_dim, P, q dtype, q transposed, summary dtype); page
# blocks are 64 pages at D = 64 and 32 at D = 128 (32 on the tensor-core path), so every P here
# ends in a partial block
BF16 = torch.bfloat16
CASES = [
    ([[70, 0], [1, 33]], 1, 64, 70, torch.float16, False, BF16),
    ([[45, 12, 1]], 3, 128, 45, torch.float32, False, torch.float32),
    ([[130, 129], [64, 0]], 4, 64, 130, torch.float16, True, BF16),
    ([[37], [2]], 8, 128, 37, torch.float32, False, BF16),
    ([[99, 1, 50]], 4, 128, 100, torch.bfloat16, False, torch.float32),
    ([[77, 5], [1, 40]], 4, 128, 80, torch.bfloat16, False, BF16),  # the cache's case
    ([[70, 33, 1]], 3, 64, 70, torch.bfloat16, True, BF16),  # SmolLM2's heads
]


@pytest.mark.parametrize(("counts", "g", "d", "p", "dtype", "transposed", "summary"), CASES)
def test_matches_twin(counts, g, d, p, dtype, transposed, summary):
    """Ragged page counts (0, 1, all, P - 1), GQA 1-8, partial page blocks, strided views,
    shuffled pool rows, float32 and bfloat16 summaries."""
    key_min, key_max, table, count = _summaries(counts, p, d, dtype=summary)
    q = _query(count.shape[0], g * count.shape[1], d, dtype, transposed)
    out = page_scores.page_scores(q, key_min, key_max, table, count)
    ref = page_scores_reference.page_scores(q, key_min, key_max, table, count)
    assert out.shape == ref.shape == (*count.shape, p) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)  # infinities must match exactly
    pages = torch.arange(p, device=DEVICE)
    n = count[..., None].long()
    assert torch.equal(out == math.inf, pages == n - 1), "the current page, and only it, is +inf"
    assert torch.equal(out == -math.inf, pages >= n), "-inf past the count (count 0: everywhere)"


@pytest.mark.parametrize("scores", [page_scores.page_scores, page_scores_reference.page_scores])
def test_pages_past_the_count_change_nothing(scores):
    """Bit-identical scores whether pages past a head's count hold +-inf, NaN or 0."""
    outs = []
    for fill in ((math.inf, -math.inf), (math.nan, math.nan), (0.0, 0.0)):
        torch.manual_seed(1)
        key_min, key_max, table, count = _summaries([[40, 3], [0, 64]], 64, 64, fill)
        outs.append(scores(_query(2, 4, 64, torch.float16), key_min, key_max, table, count))
    assert not outs[0].isnan().any()
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def _view(counts, p, d, page_size=16):
    key_min, key_max, table, count = _summaries(counts, p, d)
    tail = torch.randint(1, page_size + 1, count.shape, device=DEVICE, dtype=torch.int32)
    lengths = torch.where(count > 0, (count - 1) * page_size + tail, 0).int()
    return PageView(key_min, key_max, table, count, page_size, lengths, None, 2, 4)


def _previous_selection(selector, q, view):
    """Quest's selection as it was: float32 matmul bounds, float64 ranking key, a bool mask."""
    key_min, key_max = view.bounds()
    b, h, p, d = key_min.shape
    width = min(p, -(-selector.max_tokens(p * view.page_size) // view.page_size))
    qg = q.float().view(b, h, -1, d)
    bound = qg.clamp(min=0) @ key_max.mT + qg.clamp(max=0) @ key_min.mT
    valid = torch.arange(p, device=q.device) < view.page_count[..., None]
    key = rank_key(bound.amax(2), last_page(view), valid)
    target = selector.token_targets(view)
    count = (target // view.page_size).clamp(min=1)
    count = torch.where(target >= view.lengths, view.page_count.long(), count)  # budget covers it
    count = torch.minimum(count, view.page_count.long())
    return pack_indices(top_mask(key, count, width), width)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("selector", [Quest(budget_tokens=160, dense_layers=0),
                                      Quest(ratio=0.3, dense_layers=0)])  # fmt: skip
def test_quest_picks_what_the_float64_path_picked(monkeypatch, backend, selector):
    monkeypatch.setenv("ATTNSIEVE_BACKEND", backend)
    counts = [[40, 7, 1, 0], [33, 40, 12, 25]]
    for seed in range(3):
        torch.manual_seed(seed)
        view = _view(counts, 40, 64)
        q = _query(2, 16, 64, torch.float16)
        pages = selector.select(q, view, StepState())
        idx, count = _previous_selection(selector, q, view)
        assert pages.idx.dtype == pages.count.dtype == torch.int32
        assert pages.idx.shape == idx.shape and pages.idx.is_contiguous()
        assert torch.equal(pages.count, count)
        heads = zip(pages.idx.flatten(0, 1), idx.flatten(0, 1), count.flatten(), strict=True)
        for row, old, n in heads:
            head = row[:n].tolist()
            assert head == sorted(head) and set(head) == set(old[:n].tolist())
            assert bool((row[n:] == -1).all())


def _args(b=2, h_q=4, h_kv=2, p=10, d=16):
    key_min, key_max, table, count = _summaries([[p] * h_kv] * b, p, d)
    return {"q": _query(b, h_q, d, torch.float16), "key_min": key_min, "key_max": key_max,
            "page_table": table, "page_count": count}  # fmt: skip


MALFORMED = [
    ({"q": _args()["q"][0]}, ValueError, "q"),
    ({"q": _args()["q"].double()}, TypeError, "q"),
    ({"q": _args()["q"].int()}, TypeError, "q"),
    ({"q": _args(h_q=3)["q"]}, ValueError, "q"),  # not a multiple of H_kv
    ({"q": _args(d=8)["q"]}, ValueError, "q"),
    ({"q": _args(b=1)["q"]}, ValueError, "q"),
    ({"key_min": _args()["key_min"][0]}, ValueError, "key_min"),
    ({"key_min": _args()["key_min"].half()}, TypeError, "key_min"),
    ({"key_min": [[0.0]]}, TypeError, "key_min"),
    ({"key_max": _args()["key_max"].double()}, TypeError, "key_max"),
    ({"key_max": _args(p=11)["key_max"]}, ValueError, "key_max"),
    ({"page_table": _args()["page_table"].long()}, TypeError, "page_table"),
    ({"page_table": _args()["page_table"][0]}, ValueError, "page_table"),
    ({"page_table": _args(b=1)["page_table"]}, ValueError, "q"),
    ({"page_count": _args()["page_count"].long()}, TypeError, "page_count"),
    ({"page_count": _args()["page_count"][:1]}, ValueError, "page_count"),
    ({"backend": "fast"}, ValueError, "backend"),
]


@pytest.mark.parametrize(("change", "error", "name"), MALFORMED)
def test_malformed_input_is_named(change, error, name):
    kwargs = {**_args(), **change}
    with pytest.raises(error, match=f"^{name}:"):
        api.quest_page_scores(**kwargs)


@pytest.mark.parametrize("scores", [page_scores.page_scores, page_scores_reference.page_scores])
def test_a_nan_summary_ranks_last_unless_it_holds_the_current_token(scores):
    key_min, key_max, table, count = _summaries([[20, 9]], 20, 64)
    key_min[table[0, 0, 3], 5] = math.nan  # a valid page of head 0
    key_max[table[0, 1, 8], 0] = math.nan  # head 1's current (last) page
    out = scores(_query(1, 4, 64, torch.float16), key_min, key_max, table, count)
    assert out[0, 0, 3] == -math.inf and out[0, 1, 8] == math.inf
    assert not out.isnan().any()


@pytest.mark.parametrize("summary", [torch.float32, BF16])
def test_an_infinite_summary_scores_as_the_twin(summary):
    """An infinite key min / max (keys past the summary dtype's range) met by a query channel of
    the other sign contributes 0 x inf = NaN to ``q+ . max + q- . min``: the page ranks last, as a
    NaN summary does; met by a query channel of its own sign it is an infinite bound. The kernel
    (both of its forms) and the twin agree on both."""
    key_min, key_max, table, count = _summaries([[20, 9]], 20, 64, dtype=summary)
    q = _query(1, 4, 64, torch.bfloat16)
    q[0, :2, 7] = 1.0  # head group 0: channel 7 positive in both query heads
    q[0, 2:, 7] = -1.0  # group 1: negative
    key_max[table[0, 0, 3], 7] = math.inf  # met by q+ > 0: +inf bound
    key_max[table[0, 1, 4], 7] = math.inf  # met by q+ = 0: NaN, ranks last
    key_min[table[0, 1, 5], 7] = -math.inf  # met by q- < 0: +inf bound
    out = page_scores.page_scores(q, key_min, key_max, table, count)
    ref = page_scores_reference.page_scores(q, key_min, key_max, table, count)
    assert out[0, 0, 3] == math.inf and out[0, 1, 4] == -math.inf and out[0, 1, 5] == math.inf
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    assert not out.isnan().any()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_pools_score_every_page_minus_inf(backend):
    """Pools with no row: no page can be counted, so every page scores -inf on both backends; the
    reference refuses a counted page there, and the Triton kernel, which trusts the counts (no
    device read), no longer reads the empty pools for one (it had crashed the process)."""
    q = torch.randn(1, 4, 16, device=DEVICE)
    empty = torch.zeros(0, 16, device=DEVICE)
    table = torch.zeros(1, 2, 3, dtype=torch.int32, device=DEVICE)
    none = torch.zeros(1, 2, dtype=torch.int32, device=DEVICE)
    got = api.quest_page_scores(q, empty, empty, table, none, backend=backend)
    assert got.shape == (1, 2, 3) and bool((got == -math.inf).all())
    if backend == "reference":
        with pytest.raises(ValueError, match="page_table: counted entries must be pool rows"):
            api.quest_page_scores(q, empty, empty, table, none + 1, backend=backend)
    else:
        got = api.quest_page_scores(q, empty, empty, table, none + 2, backend=backend)
        assert bool((got == -math.inf).all())
