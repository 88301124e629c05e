"""Triton paged decode kernel vs its float32 twin (TRITON_INTERPRET=1 on CPU: fp16; CUDA: bf16)."""

import math

import pytest
import torch

from attnsieve.kernels import decode
from attnsieve.kernels.decode import decode_attention, num_splits_for
from attnsieve.kernels.decode_reference import FP8, decode_reference, fp8_scales

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
UNUSED_SCALE = math.inf  # a slot read by mistake poisons the output
RTOL = 4e-3  # relative RMS: fp16 inputs and P, fp32 accumulation


def _paged(lengths, h_q, d, page_size, dtype=torch.float16, fp8=False, fill=math.nan, spare=2):
    """A paged cache holding ``lengths`` (B, H_kv) tokens per head, on shuffled physical pages.

    Every slot that no valid token uses (the tail of a head's last page, unused and spare pages)
    holds ``fill`` in the pages, and in FP8 pools an infinite scale."""
    lengths = torch.tensor(lengths, dtype=torch.int32)
    b, h_kv = lengths.shape
    n_pages = (lengths + page_size - 1) // page_size
    max_pages = int(n_pages.max()) + 1  # one never-used column of -1
    num = int(n_pages.sum()) + spare
    phys = torch.randperm(num)
    table = torch.full((b, h_kv, max_pages), -1, dtype=torch.int32)
    valid = torch.zeros(num, page_size, dtype=torch.bool)
    used = 0
    for i_b in range(b):
        for i_h in range(h_kv):
            n, pg = int(lengths[i_b, i_h]), int(n_pages[i_b, i_h])
            ids = phys[used : used + pg]
            used += pg
            table[i_b, i_h, :pg] = ids.int()
            valid[ids] = (torch.arange(pg)[:, None] * page_size + torch.arange(page_size)) < n
    k = torch.randn(num, page_size, d)
    v = torch.randn(num, page_size, d)
    k_scale = v_scale = None
    if fp8:  # per-token powers of two, up to 2x the least that fits; values within ±448 after
        k_scale = fp8_scales(k.abs().amax(-1) * torch.rand(num, page_size).add(0.5))
        v_scale = fp8_scales(v.abs().amax(-1) * torch.rand(num, page_size).add(0.5))
        k = (k / k_scale[..., None]).clamp(-448, 448).to(FP8)
        v = (v / v_scale[..., None]).clamp(-448, 448).to(FP8)
        k_scale = torch.where(valid, k_scale, UNUSED_SCALE).to(DEVICE)
        v_scale = torch.where(valid, v_scale, UNUSED_SCALE).to(DEVICE)
        bits = torch.tensor([fill]).to(FP8).view(torch.uint8)  # fp8 has no masked_fill on CPU
        k.view(torch.uint8)[~valid] = bits
        v.view(torch.uint8)[~valid] = bits
    else:
        k, v = k.to(dtype), v.to(dtype)
        k[~valid] = fill
        v[~valid] = fill
    q = torch.randn(b, h_q, d, dtype=dtype, device=DEVICE)
    cache = {"k_pages": k.to(DEVICE), "v_pages": v.to(DEVICE), "page_table": table.to(DEVICE)}
    cache["lengths"] = lengths.to(DEVICE)
    if fp8:
        cache.update(k_scale=k_scale, v_scale=v_scale)
    return q, cache


def _select(lengths, page_size, frac=0.5, beyond=0):
    """Random ascending logical pages per head (about ``frac`` of them), -1 padded; ``beyond``
    extra listed pages past a head's length (they hold no token)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int32, device="cpu")
    b, h_kv = lengths.shape
    n_pages = (lengths + page_size - 1) // page_size
    width = int(n_pages.max()) + beyond + 1
    idx = torch.full((b, h_kv, width), -1, dtype=torch.int32)
    count = torch.zeros(b, h_kv, dtype=torch.int32)
    for i_b in range(b):
        for i_h in range(h_kv):
            n = int(n_pages[i_b, i_h])
            sel = torch.nonzero(torch.rand(n) < frac).flatten()
            sel = torch.cat([sel, torch.arange(n, n + beyond)]).int()
            idx[i_b, i_h, : len(sel)], count[i_b, i_h] = sel, len(sel)
    return {"pages": idx.to(DEVICE), "page_count": count.to(DEVICE)}


def _rel_rms(out, ref):
    return float(
        (out.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt()
    )


def _check(q, cache, rtol=RTOL, lse_rtol=0.0, **kw):
    out, lse = decode_attention(q, **cache, return_lse=True, **kw)
    kw.pop("num_splits", None)
    ref, ref_lse = decode_reference(q, **cache, return_lse=True, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:2] and lse.dtype == torch.float32
    assert not out.isnan().any() and not lse.isnan().any()
    assert _rel_rms(out, ref) < rtol, f"relative RMS {_rel_rms(out, ref):.2e}"
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    assert (lse[~finite] == -math.inf).all()
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=2e-3, rtol=lse_rtol)
    assert not out[~finite].any()  # heads that read nothing are exactly 0
    return out, lse


# (lengths per (batch, KV head), g, head_dim, page_size, sparse, splits)
CASES = [
    ([[37, 0]], 1, 64, 8, False, None),
    ([[100, 17], [0, 64]], 3, 64, 16, False, 3),
    ([[130], [5], [64]], 4, 128, 64, False, 2),
    ([[61, 200]], 8, 64, 8, False, 4),
    ([[150, 9, 0]], 4, 64, 16, True, None),
    ([[90, 33], [128, 1]], 3, 128, 8, True, 3),
    ([[200], [71]], 8, 64, 64, True, 2),
    ([[256, 255]], 1, 128, 16, False, 1),
]


@pytest.mark.parametrize(("lengths", "g", "d", "page_size", "sparse", "splits"), CASES)
def test_matches_twin(lengths, g, d, page_size, sparse, splits):
    """Ragged lengths (0, < a page, not multiples of the page), GQA 1-8, pages smaller and larger
    than the 16-token tile, NaN in every slot no valid token uses."""
    q, cache = _paged(lengths, g * len(lengths[0]), d, page_size)
    sel = _select(lengths, page_size) if sparse else {}
    _check(q, cache, num_splits=splits, **sel)


@pytest.mark.parametrize(("d", "sparse", "splits"), [(64, False, 1), (128, True, 3)])
def test_fp8_pool(d, sparse, splits):
    lengths = [[70, 0], [33, 128]]
    q, cache = _paged(lengths, 8, d, 16, fp8=True)
    sel = _select(lengths, 16) if sparse else {}
    _check(q, cache, num_splits=splits, **sel)


@pytest.mark.parametrize(("fp8", "sparse", "splits"), [(False, False, 1), (False, True, 3),
                                                      (True, False, 2)])  # fmt: skip
def test_log_weights(fp8, sparse, splits):
    """Per-token log weights (compensation tokens) are added to the logits, also in FP8 pools
    and over sparse reads; NaN in slots no valid token uses stays out."""
    lengths = [[70, 0], [33, 128]]
    q, cache = _paged(lengths, 8, 64, 16, fp8=fp8)
    lw = torch.rand(cache["k_pages"].shape[:2]) * 5
    lw.view(-1)[torch.randperm(lw.numel())[: lw.numel() // 2]] = 0  # plain tokens among them
    unused = (
        cache["k_scale"] == UNUSED_SCALE if fp8 else cache["k_pages"][..., 0].float().isnan()
    ).cpu()
    lw[unused] = math.nan
    sel = _select(lengths, 16) if sparse else {}
    out, _ = _check(q, cache, num_splits=splits, log_weight=lw.to(DEVICE), **sel)
    plain = decode_reference(q, **cache, **sel)
    assert _rel_rms(out, plain) > 10 * RTOL  # the weights change the result


def test_log_weight_of_a_token_is_that_many_copies():
    """Twin: a token of log weight log(w) attends as w copies of itself would (exact softmax)."""
    q, cache = _paged([[9]], 2, 64, 16, dtype=torch.float32, fill=0.0)
    lw = torch.zeros(cache["k_pages"].shape[:2], device=DEVICE)
    phys = int(cache["page_table"][0, 0, 0])
    lw[phys, 3] = math.log(5)
    out = decode_reference(q, **cache, log_weight=lw)
    k, v = cache["k_pages"][phys, :9], cache["v_pages"][phys, :9]
    copies = torch.tensor([1, 1, 1, 5, 1, 1, 1, 1, 1], device=DEVICE)
    k, v = k.repeat_interleave(copies, 0), v.repeat_interleave(copies, 0)
    want = torch.softmax(q[0] @ k.T / 8.0, -1) @ v
    torch.testing.assert_close(out[0], want, rtol=1e-5, atol=1e-5)


def test_masked_garbage_changes_nothing():
    """Bit-identical outputs whether unused slots hold NaN, Inf or 0 (sparse, several splits)."""
    lengths = [[45, 3], [0, 100]]
    outs = []
    for fill in (math.nan, math.inf, 0.0):
        torch.manual_seed(1)
        q, cache = _paged(lengths, 4, 64, 16, fill=fill)
        torch.manual_seed(2)
        sel = _select(lengths, 16, beyond=1)
        outs.append(decode_attention(q, **cache, num_splits=3, return_lse=True, **sel))
    for out, lse in outs[1:]:
        assert torch.equal(out, outs[0][0]) and torch.equal(lse, outs[0][1])
    assert not outs[0][0].isnan().any()


def test_listed_pages_past_length_and_empty_selection():
    """A head whose list is empty (count 0) or holds only pages past its length reads nothing."""
    lengths = [[40, 40, 20]]
    q, cache = _paged(lengths, 3, 64, 8)
    sel = _select(lengths, 8)
    sel["page_count"][0, 0] = 0
    sel["pages"][0, 0] = -1
    sel["pages"][0, 2, :2] = torch.tensor([3, 4], dtype=torch.int32)  # tokens 24..39 > 20
    sel["page_count"][0, 2] = 2
    out, lse = _check(q, cache, num_splits=2, **sel)
    assert (lse[0, [0, 2]] == -math.inf).all() and lse[0, 1].isfinite()


@pytest.mark.parametrize("splits", [1, 4])
def test_all_heads_empty(splits):
    q, cache = _paged([[0, 0], [0, 0]], 4, 64, 16)
    out, lse = decode_attention(q, **cache, return_lse=True, num_splits=splits)
    assert not out.any() and (lse == -math.inf).all()


def test_empty_batch_gives_empty_outputs_like_the_twin():
    """A batch of no rows: the split count must not divide by the programs (it raised
    ZeroDivisionError); both sides return (0, H_q, D) and lse (0, H_q)."""
    _, cache = _paged([[5, 3]], 4, 64, 8)
    cache = {**cache, "page_table": cache["page_table"][:0], "lengths": cache["lengths"][:0]}
    q = torch.randn(0, 4, 64, dtype=torch.float16, device=DEVICE)
    for fn in (decode_attention, decode_reference):
        out, lse = fn(q, **cache, return_lse=True)
        assert out.shape == (0, 4, 64) and lse.shape == (0, 4)


def test_more_splits_than_tiles():
    """Splits past a short head's last tile are empty and must merge as weight 0."""
    q, cache = _paged([[20, 1], [3, 47]], 2, 64, 8)
    _check(q, cache, num_splits=9)


def test_out_buffer_and_scale():
    q, cache = _paged([[77, 12]], 6, 64, 16)
    buf = torch.full((q.shape[2], q.shape[0], q.shape[1]), math.nan, dtype=q.dtype, device=DEVICE)
    out_view = buf.permute(1, 2, 0)  # non-contiguous (B, H_q, D)
    res = decode_attention(q, **cache, out=out_view, scale=0.3, num_splits=2)
    assert res is out_view
    ref = decode_reference(q, **cache, scale=0.3)
    assert _rel_rms(out_view, ref) < RTOL
    res = decode_attention(q, **cache, out=out_view, scale=0.3, num_splits=1)  # direct write
    assert _rel_rms(res, ref) < RTOL


def test_float32_pool():
    q, cache = _paged([[30, 70]], 4, 64, 8, dtype=torch.float32)
    _check(q, cache, rtol=1e-5, num_splits=2)


def test_num_splits_fill_the_gpu(monkeypatch):
    """Batch 1 at 32K-128K fills 132 SMs at least twice over; short caches take one split."""
    monkeypatch.setattr(decode, "sm_count", lambda device: 132)
    dev = torch.device("cuda")
    for tokens in (32768, 131072):
        assert 8 * num_splits_for(1, 8, tokens, dev) >= 2 * 132
    assert num_splits_for(1, 8, 512, dev) == 1
    assert num_splits_for(64, 8, 131072, dev) == 1


def _valid():
    q, cache = _paged([[20, 9]], 4, 64, 8)
    return {"q": q, **cache, **_select([[20, 9]], 8, frac=1.0)}


def _fp8():
    q, cache = _paged([[20, 9]], 4, 64, 8, fp8=True)
    return {"q": q, **cache}


def _with(**changes):
    return lambda a: {**a, **{k: f(a) for k, f in changes.items()}}


BAD = [
    (_with(q=lambda a: a["q"][None]), ValueError, "q"),
    (_with(q=lambda a: a["q"].int()), TypeError, "q"),
    (_with(q=lambda a: a["q"][..., :48]), ValueError, "q"),
    (_with(q=lambda a: a["q"].repeat(1, 1, 2)[..., ::2]), ValueError, "q"),
    (_with(q=lambda a: a["q"][:, :3]), ValueError, "^q: expected batch"),
    (_with(k_pages=lambda a: a["k_pages"].bfloat16()), TypeError, "v_pages"),
    (
        _with(k_pages=lambda a: a["k_pages"].bfloat16(), v_pages=lambda a: a["v_pages"].bfloat16()),
        TypeError,
        "k_pages",
    ),
    (_with(k_pages=lambda a: a["k_pages"].tolist()), TypeError, "k_pages"),
    (_with(k_pages=lambda a: a["k_pages"][:, :4]), ValueError, "v_pages"),
    (
        _with(k_pages=lambda a: a["k_pages"][..., :32], v_pages=lambda a: a["v_pages"][..., :32]),
        ValueError,
        "k_pages",
    ),
    (_with(v_pages=lambda a: a["v_pages"][0]), ValueError, "v_pages"),
    (
        _with(k_pages=lambda a: a["k_pages"][:, :6], v_pages=lambda a: a["v_pages"][:, :6]),
        ValueError,
        "k_pages",
    ),
    (_with(page_table=lambda a: a["page_table"].long()), TypeError, "page_table"),
    (_with(page_table=lambda a: a["page_table"][0]), ValueError, "page_table"),
    (_with(page_table=lambda a: a["page_table"].repeat(2, 1, 1)), ValueError, "page_table"),
    (_with(lengths=lambda a: a["lengths"].long()), TypeError, "lengths"),
    (_with(lengths=lambda a: a["lengths"][0]), ValueError, "lengths"),
    (_with(pages=lambda a: a["pages"].long()), TypeError, "pages"),
    (_with(pages=lambda a: a["pages"][0]), ValueError, "pages"),
    (_with(page_count=lambda a: None), ValueError, "page_count"),
    (_with(page_count=lambda a: a["page_count"][..., None]), ValueError, "page_count"),
    (_with(scale=lambda a: -1.0), ValueError, "scale"),
    (_with(scale=lambda a: math.nan), ValueError, "scale"),
    (_with(scale=lambda a: "0.1"), TypeError, "scale"),
    (_with(k_scale=lambda a: torch.ones(a["k_pages"].shape[:2])), ValueError, "k_scale"),
    (_with(log_weight=lambda a: torch.zeros(a["k_pages"].shape[:2]).half()), TypeError, "log_w"),
    (_with(log_weight=lambda a: torch.zeros(a["k_pages"].shape[0])), ValueError, "log_weight"),
    (_with(log_weight=lambda a: 0.0), TypeError, "log_weight"),
    (_with(out=lambda a: torch.zeros_like(a["q"])[:, :1]), ValueError, "out"),
    (_with(out=lambda a: torch.zeros_like(a["q"]).float()), ValueError, "out"),
    (_with(out=lambda a: a["q"].tolist()), TypeError, "out"),
    (_with(out=lambda a: a["q"]), ValueError, "out: expected a buffer apart from q"),
]
BAD_FP8 = [
    (_with(k_scale=lambda a: None), TypeError, "k_scale"),
    (_with(v_scale=lambda a: a["v_scale"].half()), TypeError, "v_scale"),
    # the fiftieth session's one-byte exponents, not scales
    (_with(k_scale=lambda a: a["k_scale"].to(torch.uint8)), TypeError, "k_scale: expected float32"),
    (_with(v_scale=lambda a: a["v_scale"][:, :4]), ValueError, "v_scale"),
    # other strides than k_scale's: the kernel reads both scales with one offset
    (_with(v_scale=lambda a: a["v_scale"][:, :4].repeat(1, 4)[:, ::2]), ValueError, "v_scale"),
    (_with(k_scale=lambda a: a["k_scale"].t().contiguous().t()), ValueError, "v_scale: expected"),
]


@pytest.mark.parametrize("fn", [decode_attention, decode_reference], ids=["kernel", "twin"])
@pytest.mark.parametrize(
    ("make", "bad", "exc", "name"), [(_valid, *c) for c in BAD] + [(_fp8, *c) for c in BAD_FP8]
)
def test_malformed_inputs(fn, make, bad, exc, name):
    args = bad(make())
    with pytest.raises(exc, match=name):
        fn(**args)


def test_api_decode_attention_names_bad_arguments():
    from attnsieve import api
    from attnsieve.cache import Cache
    from attnsieve.views import Pages

    cache = Cache(1, 1, 2, 64, dtype=torch.float16, device="cpu")
    cache.append(0, torch.randn(1, 2, 20, 64).half(), torch.randn(1, 2, 20, 64).half())
    q = torch.randn(1, 4, 64).half()
    one = torch.ones(1, 2, 1, dtype=torch.int32)
    cases = [
        (dict(cache=None), TypeError, "cache"),
        (dict(pages=(one, one[..., 0])), TypeError, "pages"),
        (dict(pages=Pages(one * 0, one[..., 0]), return_lse="yes"), TypeError, "return_lse"),
        (dict(q=torch.randn(2, 4, 64).half()), ValueError, "q"),  # batch 2 on a batch-1 cache
        (dict(q=torch.randn(1, 3, 64).half()), ValueError, "q"),  # 3 heads over 2 KV heads
        (dict(q=torch.randn(1, 1, 4, 64).half()), ValueError, "q"),  # a shape: ValueError
        (dict(q=torch.ones(1, 4, 64, dtype=torch.int32)), TypeError, "q"),
        # the kernel computes no gradient: one asked for would silently be missing
        (dict(q=q.clone().requires_grad_(), backend="triton"), ValueError, "q"),
    ]
    for change, error, name in cases:
        with pytest.raises(error, match=f"^{name}:"):
            api.decode_attention(**{"q": q, "cache": cache, "layer": 0, **change})


def test_num_splits_argument():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_splits"):
            decode_attention(**_valid(), num_splits=bad)


@pytest.mark.parametrize(
    ("key", "edit", "name"),
    [
        ("lengths", lambda t: t.fill_(10_000), "lengths"),
        ("page_table", lambda t: t.fill_(10_000), "page_table"),
        ("page_count", lambda t: t.fill_(100), "page_count"),
        ("pages", lambda t: t.fill_(-1), "pages"),
    ],
)
def test_twin_checks_values(key, edit, name):
    """Values the launcher trusts (reading them would sync with the GPU), the twin checks."""
    args = _valid()
    edit(args[key])
    with pytest.raises(ValueError, match=name):
        decode_reference(**args)


@pytest.mark.parametrize(
    ("dtype", "q_gain", "v_gain"),
    [
        (torch.bfloat16, 1e6, 0),  # past float16's range: the query rows are scaled first
        (torch.float16, 25.0, 0),  # a non-power-of-two row scale would round every element
        (torch.bfloat16, 1.0, -10),  # V scales near 2^-18: P times them underflows in float16
        (torch.float16, 1.0, 10),
    ],
)
def test_fp8_pages_keep_their_range_in_float16(dtype, q_gain, v_gain):
    """FP8 pages with 16-bit queries run both dots in float16 (bfloat16 ones too, so this runs
    under the interpreter): queries far outside float16's range and V scales far from 1 (times
    2^v_gain) keep the twin's accuracy."""
    q, cache = _paged([[300, 17, 0], [64, 129, 1]], 9, 64, 16, dtype=dtype, fp8=True)
    q = (q.float() * q_gain).to(dtype)
    cache["v_scale"] = _times_pow2(cache["v_scale"], v_gain)
    _check(q, cache, rtol=1e-2, lse_rtol=1e-5)  # log-sum-exps near 1e6 at q_gain 1e6


@pytest.mark.parametrize("log_weight", [False, True])
def test_query_heads_of_far_apart_magnitudes_in_float16(log_weight):
    """The float16 path scales each query row by its own power of two: the query heads of a KV
    head whose magnitudes differ by 1e7, over keys large enough that the small heads' scores
    matter, keep the twin's accuracy (one scale for the whole tile flushed the small heads to
    zero: 53 % off)."""
    q, cache = _paged([[300, 17, 0], [64, 129, 1]], 9, 64, 16, fp8=True)
    gains = torch.tensor([1e4, 1e-3, 1.0] * 3, device=DEVICE)
    q = (q.float() * gains[:, None]).half()
    cache["k_scale"] = _times_pow2(cache["k_scale"], 10)
    kw = (
        {"log_weight": torch.zeros(cache["k_pages"].shape[:2], device=DEVICE)} if log_weight else {}
    )
    out = _check(q, cache, rtol=1e-2, lse_rtol=1e-5, **kw)[0]
    ref = decode_reference(q, **cache, **kw)
    small = gains == 1e-3
    assert _rel_rms(out[:, small], ref[:, small]) < 1e-2


def _times_pow2(scales, k):
    """Scales times 2^k (k an int or a tensor like them), the unused slots' left as they are."""
    shifted = scales * torch.exp2(torch.as_tensor(k, dtype=torch.float32, device=scales.device))
    return torch.where(scales == UNUSED_SCALE, scales, shifted)


def test_fp8_tiles_of_far_apart_v_scales():
    """Tiles whose largest V scales differ by 2^130 and 2^132 (1.4e39, 5.4e39; the first 128
    tokens against the next 128, so every tile size, 16 to 128, keeps them apart): the
    accumulator's rescale between them stays finite, also where the first tiles have no weight
    at all (it was inf and 0 · inf)."""
    for v0, v1, w0 in [(120, -10, -math.inf), (66, -66, -46.0)]:
        q, cache = _paged([[256]], 2, 64, 16, fp8=True)
        first = cache["page_table"][0, 0, :8].long()  # the pages of tokens 0-127
        gain = torch.full(cache["v_scale"].shape, v1, device=DEVICE)
        gain[first] = v0
        cache["v_scale"] = _times_pow2(cache["v_scale"], gain)
        lw = torch.zeros(cache["k_pages"].shape[:2], device=DEVICE)
        lw[first] = w0
        _check(q, cache, rtol=1e-2, log_weight=lw, num_splits=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("sparse", [False, True])
def test_scales_of_any_shared_stride(dtype, sparse):
    """K and V scales stored page-major (strides (1, num_pages)) read as their rows do, through
    the float16 and float32 dots, dense and sparse."""
    lengths = [[300, 17, 0], [64, 129, 1]]
    q, cache = _paged(lengths, 6, 32, 16, dtype=dtype, fp8=True)
    for name in ("k_scale", "v_scale"):
        cache[name] = cache[name].t().contiguous().t()
    assert cache["k_scale"].stride(0) == 1
    _check(q, cache, rtol=1e-2, lse_rtol=1e-5, **(_select(lengths, 16) if sparse else {}))


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_int64_row_addresses(fp8, sparse, monkeypatch):
    """Pools past int32 offsets take int64 row addresses (a pool that large does not fit a test,
    so the choice is forced)."""
    monkeypatch.setattr(decode, "_fits_int32", lambda *pools: False)
    lengths = [[300, 17, 0], [64, 129, 1]]
    q, cache = _paged(lengths, 6, 32, 16, fp8=fp8)
    _check(q, cache, **(_select(lengths, 16) if sparse else {}))


def test_large_query_groups_stay_off_one_warp_tiles(monkeypatch):
    """More than 16 query heads a KV head would hold 128+ accumulator registers a thread in a
    one-warp program: those reads keep multi-warp tiles."""
    monkeypatch.setattr(decode, "INTERPRET", False)
    assert decode._tile(8, 131072, 128, True, False)[1] == 1
    assert decode._tile(24, 65536, 64, True, False)[1] == 1
    for g_pad in (32, 64):
        assert decode._tile(8, 131072, 128, True, False, g_pad)[1] > 1
        assert decode._tile(64, 8192, 128, False, False, g_pad)[1] > 1
        assert decode._tile(24, 65536, 64, True, False, g_pad)[1] > 1


def test_fits_int32_reads_shape_and_strides():
    meta = {"device": "meta", "dtype": torch.float16}
    assert decode._fits_int32(torch.empty(2**16, 16, 128, **meta), None)
    assert decode._fits_int32(torch.empty(2**20, 16, 128, **meta))  # last offset 2^31 - 1
    assert not decode._fits_int32(torch.empty(2**20 + 1, 16, 128, **meta))
    # a view whose rows lie far apart in a larger pool: its last element is past 2^31
    assert not decode._fits_int32(torch.empty_strided((4, 16, 128), (2**30, 128, 1), **meta))
    assert decode._fits_int32(torch.empty(0, 16, 128, **meta))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA runs the GPU's own tiles")
@pytest.mark.parametrize("block_n", [32, 64, 128])
@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_gpu_tile_sizes_under_the_interpreter(block_n, fp8, sparse, monkeypatch):
    """The interpreter takes 16-token tiles; the GPU's 32-, 64- and 128-token tiles, forced here,
    gather across pages of 8 and 16 and read part of a page of 64, on ragged heads."""
    monkeypatch.setattr(decode, "_tile", lambda *shape: (block_n, 4, 1, 2))
    lengths = [[300, 17, 0], [64, 129, 1]]
    for page_size in (8, 16, 64):
        q, cache = _paged(lengths, 6, 32, page_size, fp8=fp8)
        sel = _select(lengths, page_size, frac=0.5) if sparse else {}
        _check(q, cache, **sel)


LLAMA_LENGTHS = [[4096, 32768, 9000, 20001, 0, 16384, 31000, 5555], [32768] * 4 + [4097] * 4]
SMOLLM2_LENGTHS = [[4096, 32768, 0], [20001, 5555, 31000]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 tl.dot, long caches)")
@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(
    ("lengths", "h_q", "d"), [(LLAMA_LENGTHS, 32, 128), (SMOLLM2_LENGTHS, 9, 64)]
)
def test_cuda_long_bf16_and_fp8(fp8, sparse, lengths, h_q, d):
    """Llama-3-8B heads (32 / 8, D 128) and SmolLM2's (9 / 3, D 64), batch 2, ragged 4K-32K
    tokens, default tiles and splits (dense bf16 reads: 64-token tiles over four waves; sparse
    reads and FP8 pages: 128-token tiles over eight)."""
    q, cache = _paged(lengths, h_q, d, 16, dtype=torch.bfloat16, fp8=fp8)
    sel = _select(lengths, 16, frac=1 / 16) if sparse else {}
    _check(q, cache, rtol=1e-2, **sel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 tl.dot, long caches)")
@pytest.mark.parametrize("fp8", [False, True])
def test_cuda_one_warp_tiles_at_64_heads(fp8):
    """Batch 8 of Llama-3-8B's heads (64 KV heads) takes one-warp programs of 32 tokens on dense
    reads; ragged 0-9000 tokens, pages of 16 and of 64 (a page spanning two tiles)."""
    assert decode._tile(64, 16384, 128, fp8, False)[:2] == (32, 1)
    lengths = [[4096, 9000, 0, 33, 5555, 8192, 16, 7001]] * 4 + [
        [17, 4097, 8191, 1, 0, 2048, 63, 64]
    ] * 4
    for page_size in (16, 64):
        q, cache = _paged(lengths, 32, 128, page_size, dtype=torch.bfloat16, fp8=fp8)
        _check(q, cache, rtol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 tl.dot, long caches)")
def test_cuda_fp8_tiles_of_long_reads():
    """FP8 pages read 32K tokens or more in one-warp programs at D 128 (8 KV heads) and at D 64
    and 24 KV heads (SmolLM2, batch 8); ragged heads (splits ending in partial tiles), float16
    dots."""
    assert decode._tile(8, 32768, 128, True, False)[:2] == (32, 1)
    assert decode._tile(24, 32768, 64, True, False)[:2] == (32, 1)
    for long in (32768, 70001):
        q, cache = _paged([[long, 5, 0, 20001, 31000, 4096, 1, 32767]], 32, 128, 16,
                          dtype=torch.bfloat16, fp8=True)  # fmt: skip
        _check(q, cache, rtol=1e-2)
    lengths = [[32768, 0, 7], [20001, 5555, 31000]] * 4
    q, cache = _paged(lengths, 9, 64, 16, dtype=torch.bfloat16, fp8=True)
    _check(q, cache, rtol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 tl.dot, long caches)")
@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_long_log_weights(fp8, sparse):
    """Compiled log weights on SmolLM2's heads: a few heavy tokens among 4K-32K plain ones."""
    q, cache = _paged(SMOLLM2_LENGTHS, 9, 64, 16, dtype=torch.bfloat16, fp8=fp8)
    lw = torch.zeros(cache["k_pages"].shape[:2], device=DEVICE)
    lw.view(-1)[torch.randperm(lw.numel(), device=DEVICE)[:64]] = 8.0
    sel = _select(SMOLLM2_LENGTHS, 16, frac=1 / 16) if sparse else {}
    _check(q, cache, rtol=1e-2, log_weight=lw, **sel)
