"""INT8 Q·Kᵀ / FP8 P·V prefill kernel vs its twin (same quantisation, float32 attention), and the
twin vs exact float32 attention (TRITON_INTERPRET=1 on CPU, fp16 inputs; bf16 on CUDA)."""

import math
from unittest import mock

import pytest
import torch

from attnsieve.kernels import quant
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.kernels.quant import quant_attention
from attnsieve.kernels.quant_reference import quant_attention_reference
from attnsieve.kernels.quantize import quantize_kv, quantize_q
from attnsieve.kernels.quantize_reference import quantize_kv_reference, quantize_q_reference
from attnsieve.layout import Layout

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TWIN_RTOL = 1e-3  # relative RMS kernel vs twin: identical quantisation, fp32 summation order
MIN_COSINE = 0.999  # per head, twin vs exact attention, random data


def _qkv(b, h_q, h_kv, n, m, d, dtype=torch.float16):
    q = torch.randn(b, h_q, n, d, dtype=dtype, device=DEVICE)
    k = torch.randn(b, h_kv, m, d, dtype=dtype, device=DEVICE)
    v = torch.randn(b, h_kv, m, d, dtype=dtype, device=DEVICE)
    return q, k, v


def _random_layout(b, h, n, m, bq, bk, p=0.5, columns=0, empty_blocks=False):
    # drawn on the CPU: CUDA's generator would give the GPU run other layouts than the cases
    # were chosen on (one span case then had no blocks there)
    mask = (torch.rand(b, h, -(-n // bq), -(-m // bk)) < p).to(DEVICE)
    if empty_blocks:
        mask[:] = False
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        cols = torch.randint(-1, m, (b, h, layout.num_q_blocks, columns)).to(DEVICE)
        layout = layout.with_columns(cols)
    return layout


def _span_layout(b, h, n, m, bq, bk, p=0.15, columns=0, width=1, slashes=4):
    """Random blocks and columns plus spans: the diagonals 0 and 3 (across the causal diagonal)
    and random ones, ``width`` diagonals wide; span starts fall off the key tile grid."""
    layout = _random_layout(b, h, n, m, bq, bk, p=p, columns=columns)
    offsets = torch.cat(
        [
            torch.tensor([0, 3], device=DEVICE).expand(b, h, 2),
            torch.randint(0, m, (b, h, slashes)).to(DEVICE),
        ],
        -1,
    )
    return layout.with_diagonals(offsets, width=width)


def _rel_rms(a, b):
    a, b = a.float(), b.float()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp(min=1e-12))


def _head_cosines(a, b):
    """Cosine similarity per (batch, head) of two (B, H, N, D) tensors, heads with output only."""
    a, b = a.float().flatten(2), b.float().flatten(2)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return cos[b.norm(dim=-1) > 0]


def _check(q, k, v, layout, causal, scale=None, exact_inputs=None, twin_rtol=TWIN_RTOL):
    """Kernel vs twin (tight), twin vs exact attention (cosine per head); returns (out, lse)."""
    out, lse = quant_attention(q, k, v, layout, causal=causal, scale=scale, return_lse=True)
    ref, ref_lse = quant_attention_reference(
        q, k, v, layout, causal=causal, scale=scale, return_lse=True
    )
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert not out.isnan().any() and not lse.isnan().any()
    err = _rel_rms(out, ref)
    assert err < twin_rtol, f"kernel vs twin: relative RMS {err:.2e}"
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-4, rtol=0)
    assert not out[~finite].any()  # rows without a key are exactly 0

    exact, exact_lse = attention_reference(
        *(exact_inputs or (q, k, v)), layout, causal=causal, scale=scale, return_lse=True
    )
    cos = _head_cosines(ref, exact)
    assert cos.numel() and cos.min() >= MIN_COSINE, f"twin vs exact: min cosine {cos.min():.5f}"
    assert torch.equal(exact_lse.isfinite(), finite)
    # the lse carries back the shift K smoothing took out of every score
    torch.testing.assert_close(ref_lse[finite], exact_lse[finite], atol=0.1, rtol=0)
    return out, lse


# (b, h_q, h_kv, n, m, d, block_q, block_k, density, columns, causal, layout heads, layout batch)
# Small, as the interpreter's cost grows with heads x row tiles x key tiles; between them still
# GQA 1, 2 and 4, layout heads 1, H_kv (of groups of 2) and H_q, a layout batch of 2 and one
# broadcast, partial last blocks everywhere, 129 keys: one past a 128-key block.
CASES = [
    (1, 4, 1, 63, 150, 64, 32, 64, 0.6, 0, True, "q", 1),
    (2, 2, 2, 70, 100, 128, 64, 32, 0.5, 8, False, "kv", 2),
    (1, 4, 2, 150, 160, 64, 64, 64, 0.4, 16, True, "kv", 1),
    (2, 2, 1, 70, 129, 128, 16, 128, 0.5, 5, True, "one", 1),
    (1, 2, 2, 200, 333, 64, 128, 32, 0.3, 12, False, "q", 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_sparse_layouts_match_twin_and_exact(case):
    b, h_q, h_kv, n, m, d, bq, bk, p, cols, causal, heads, lb = case
    q, k, v = _qkv(b, h_q, h_kv, n, m, d)
    h_l = {"one": 1, "kv": h_kv, "q": h_q}[heads]
    _check(q, k, v, _random_layout(lb, h_l, n, m, bq, bk, p=p, columns=cols), causal)


# (b, h_q, h_kv, n, m, d, block_q, block_k, density, columns, causal, layout heads, batch, width)
SPAN_CASES = [
    (1, 4, 1, 63, 150, 64, 32, 64, 0.2, 0, True, "q", 1, 1),
    (2, 2, 2, 70, 100, 64, 64, 32, 0.2, 6, False, "kv", 2, 2),
    (1, 4, 2, 150, 97, 64, 32, 32, 0.15, 4, True, "kv", 1, 3),
    (2, 2, 1, 70, 129, 128, 16, 128, 0.1, 5, False, "one", 1, 1),
    (1, 2, 2, 97, 97, 64, 64, 32, 0.1, 3, True, "q", 1, 1),
]


@pytest.mark.parametrize("case", SPAN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_spans_with_blocks_and_columns_match_twin_and_exact(case):
    b, h_q, h_kv, n, m, d, bq, bk, p, cols, causal, heads, lb, width = case
    q, k, v = _qkv(b, h_q, h_kv, n, m, d)
    h_l = {"one": 1, "kv": h_kv, "q": h_q}[heads]
    layout = _span_layout(lb, h_l, n, m, bq, bk, p=p, columns=cols, width=width)
    assert int(layout.span_count.sum()) > 0 and int(layout.block_count.sum()) > 0
    live = torch.arange(layout.span_start.shape[-1], device=DEVICE) < layout.span_count[..., None]
    assert bool((layout.span_start[live] % quant.quant_tiles(layout)[1] != 0).any())  # off grid
    _check(q, k, v, layout, causal)


def test_long_unaligned_spans_take_each_keys_own_k_scale():
    """Spans only, many tiles long, starting off the tile grid, over K whose quantisation blocks
    have scales 1 and 4 in turn: a span tile that took one scale for all its keys would fail."""
    n, m = 64, 200
    q, k, v = _qkv(1, 1, 1, n, m, 64)
    block_n = 32  # K's quantisation block under the interpreter (block_k 32)
    k = k * (1 + 3 * ((torch.arange(m, device=DEVICE) // block_n) % 2)).to(k.dtype)[:, None]
    empty = _random_layout(1, 1, n, m, 32, 32, empty_blocks=True)
    layout = empty.with_spans(
        torch.tensor([[[[3, 77], [150, 0]]]], device=DEVICE),
        torch.tensor([[[[70, 160], [190, 1]]]], device=DEVICE),
    )
    assert int(layout.block_count.sum()) == 0 and layout.span_count.tolist() == [[[2, 2]]]
    assert quant.quant_tiles(layout)[1] == block_n
    for causal in (True, False):
        _check(q, k, v, layout, causal, scale=0.05)


def test_nan_outside_every_span_block_and_column_changes_nothing():
    """Query blocks at positions [96, 127] and [128, 159]: diagonals 0, 3 and 50 give spans
    [46, 78), [93, 128) and [78, 110), [125, 160); block 0 (keys 0..31) serves query block 1 and
    key 40 is a column of query block 0. Keys 32..39 and 41..45 are in no part of any row: NaN /
    inf there changes no bit of the output. Key 60, in a span of query block 0 only, reaches
    exactly the rows of that block (they come out NaN) and no other row."""
    n, m = 64, 160
    q, k, v = _qkv(1, 4, 2, n, m, 64)
    mask = torch.zeros(1, 1, 2, 5, dtype=torch.bool, device=DEVICE)
    mask[0, 0, 1, 0] = True
    layout = Layout.from_block_mask(mask, block_q=32, block_k=32, num_queries=n, num_keys=m)
    layout = layout.with_columns(torch.tensor([[[[40], [-1]]]], device=DEVICE))
    layout = layout.with_diagonals(torch.tensor([[[0, 3, 50]]], device=DEVICE))
    seen = layout.to_dense_mask()[0, 0]  # (N, M), causality aside
    assert not seen[:, 32:40].any() and not seen[:, 41:46].any() and seen[:32, 40].all()
    assert seen[:32, 60].all() and not seen[32:, 60].any()
    k[:, :, [35, 45, 60]] = 0
    v[:, :, [35, 45, 60]] = 0
    nan_k, nan_v = k.clone(), v.clone()
    nan_k[:, 1, 45, 9] = math.nan
    nan_v[:, 0, 35, 2] = math.inf
    nan_v[:, 1, 35] = math.nan
    for causal in (False, True):  # the causal clean run serves the check below too
        out, lse = _check(q, nan_k, nan_v, layout, causal, exact_inputs=(q, k, v))
        clean, clean_lse = quant_attention(q, k, v, layout, causal=causal, return_lse=True)
        assert torch.equal(out, clean) and torch.equal(lse, clean_lse)
    nan_v[:, 0, 60, 5] = math.nan  # KV head 0: query heads 0 and 1 see it
    out, lse = quant_attention(q, nan_k, nan_v, layout, causal=True, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, nan_k, nan_v, layout, causal=True, return_lse=True)
    expect = torch.zeros(1, 4, n, dtype=torch.bool, device=DEVICE)
    expect[:, :2, :32] = True
    assert torch.equal(out.isnan().all(-1), expect) and torch.equal(out.isnan().any(-1), expect)
    assert torch.equal(lse.isnan(), expect) and torch.equal(ref_lse.isnan(), expect)
    assert torch.equal(ref.isnan().any(-1), expect)
    assert torch.equal(out[~expect], clean[~expect])


@pytest.mark.parametrize(
    ("b", "h_q", "h_kv", "n", "m", "d", "causal"),
    [(1, 4, 1, 100, 130, 128, True), (2, 2, 1, 77, 90, 64, False), (1, 2, 2, 96, 161, 64, True)],
)
def test_dense_matches_twin_and_exact(b, h_q, h_kv, n, m, d, causal):
    q, k, v = _qkv(b, h_q, h_kv, n, m, d)
    _check(q, k, v, None, causal)


# N != M with partial last blocks (32-row and 64-key tiles, two per key block); N == M, whole blocks
@pytest.mark.parametrize(("n", "m", "bq", "bk"), [(100, 130, 64, 128), (64, 64, 32, 32)])
def test_a_dense_causal_layout_runs_in_block_order(monkeypatch, n, m, bq, bk):
    """`Layout.dense` (the dense planner's) takes the in-order path, with its own tiles: the
    same result bit for bit as the table path on the same blocks (a layout not marked dense), and
    as the twin. Not causal, the layout decides which blocks run: the table path."""
    q, k, v = _qkv(1, 2, 1, n, m, 64)  # GQA 2
    dense = Layout.dense(n, m, block_q=bq, block_k=bk, device=DEVICE)
    listed = Layout.from_block_mask(
        Layout.causal_block_mask(n, m, bq, bk, DEVICE)[None, None],
        block_q=bq, block_k=bk, num_queries=n, num_keys=m,
    )  # fmt: skip
    launched = []
    name = "_quant_fwd_kernel" if quant.INTERPRET else "_quant_fwd_tuned"  # what the launcher runs
    kernel = getattr(quant, name)

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                launched.append(meta["DENSE"])
                return kernel[grid](*args, **meta)

            return launch

    monkeypatch.setattr(quant, name, Spy())
    out = quant_attention(q, k, v, dense, causal=True)
    assert torch.equal(out, quant_attention(q, k, v, listed, causal=True))
    quant_attention(q, k, v, dense, causal=False)
    assert launched == [True, False, False]
    _check(q, k, v, dense, True)


@pytest.mark.parametrize("layout", [False, True], ids=["dense", "layout"])
def test_lse_adds_back_the_smoothing_shift_of_q_as_given(layout):
    """A large mean of K on every channel: the lse matches exact attention's as closely as
    without one. The shift q . mean(K) is taken of Q as given; of its INT8 rounding, the lse was
    off by that rounding times mean(K) (0.46 at |mean(K)| 235, the first review's reproducer)."""
    n, m, d = 70, 96, 64
    lay = _random_layout(1, 1, n, m, 32, 32, p=0.7) if layout else None
    errors = []
    for offset in (0.0, 30.0):
        torch.manual_seed(0)
        q, k, v = _qkv(1, 2, 1, n, m, d)
        k += (offset * torch.randn(1, 1, 1, d, device=DEVICE)).to(k.dtype)
        out, lse = _check(q, k, v, lay, True)
        _, exact_lse = attention_reference(q, k, v, lay, causal=True, return_lse=True)
        finite = exact_lse.isfinite()
        errors.append(float((lse - exact_lse)[finite].abs().max()))
    assert errors[1] < 0.02, errors
    assert errors[1] < 3 * errors[0] + 0.005, errors


def test_custom_scale_and_smoothing_of_a_key_offset():
    """A large shared offset in K (the outlier channel smoothing is for) leaves the accuracy and,
    once the shift is added back, the lse exact."""
    q, k, v = _qkv(1, 4, 1, 90, 120, 64)
    k[..., 3] += 30.0
    k += torch.randn(1, 1, 1, 64, device=DEVICE, dtype=k.dtype)
    _check(q, k, v, _random_layout(1, 1, 90, 120, 32, 32, p=0.7), True, scale=0.07)


def test_empty_rows_give_zero_and_minus_inf():
    q, k, v = _qkv(1, 2, 1, 70, 100, 64)
    layout = _random_layout(1, 1, 70, 100, 32, 32, p=0.5)
    layout = Layout.from_block_mask(
        layout.block_mask() & (torch.arange(3, device=DEVICE) != 1)[:, None],  # q block 1 empty
        block_q=32,
        block_k=32,
        num_queries=70,
        num_keys=100,
    )
    out, lse = _check(q, k, v, layout, causal=True)
    assert not out[:, :, 32:64].any() and bool((lse[:, :, 32:64] == -math.inf).all())
    nothing = _random_layout(1, 1, 70, 100, 32, 32, empty_blocks=True)
    out, lse = quant_attention(q, k, v, nothing, return_lse=True)
    assert not out.any() and bool((lse == -math.inf).all())


def test_zero_lengths():
    q, k, v = _qkv(1, 4, 2, 0, 30, 64)
    assert quant_attention(q, k, v).shape == (1, 4, 0, 64)
    q, k, v = _qkv(1, 4, 2, 20, 0, 64)
    out, lse = quant_attention(q, k, v, return_lse=True)
    assert not out.any() and bool((lse == -math.inf).all())


@pytest.mark.parametrize("shape", [(1, 0, 30), (1, 20, 0), (0, 20, 30)], ids=["n0", "m0", "b0"])
def test_twin_zero_lengths_match_kernel(shape):
    """No query, no key or no batch: the twin returns what the kernel does (rows without a key:
    0 and lse -inf), as the bf16 twin does; it used to fail inside its dense layout or amax."""
    b, n, m = shape
    q, k, v = _qkv(b, 4, 2, n, m, 64)
    out, lse = quant_attention(q, k, v, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, k, v, return_lse=True)
    assert ref.shape == out.shape == q.shape and ref_lse.shape == lse.shape == q.shape[:3]
    assert torch.equal(ref, out) and not ref.any()
    assert bool((ref_lse == -math.inf).all()) and bool((lse == -math.inf).all())
    buf = torch.ones_like(q)
    assert quant_attention_reference(q, k, v, out=buf) is buf and not buf.any()


def test_empty_batch_on_the_tma_path():
    """No batch: nothing to launch. The Hopper path used to build its TMA descriptors over the
    empty (0, M, D) K buffer first, which TensorDescriptor refuses (AssertionError)."""
    q, k, v = _qkv(0, 4, 2, 20, 30, 64)
    with mock.patch.object(quant, "_use_tma", lambda *_: True):
        out, lse = quant_attention(q, k, v, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:3]


def test_columns_only():
    q, k, v = _qkv(1, 2, 1, 100, 130, 64)
    layout = _random_layout(1, 1, 100, 130, 32, 32, columns=40, empty_blocks=True)
    assert layout.has_columns and int(layout.block_count.sum()) == 0
    _check(q, k, v, layout, causal=False)


def test_nan_in_hidden_keys_changes_nothing():
    """NaN / inf in K / V rows that the layout hides from every query is quantised as 0: the
    output equals that of zeros there, bit for bit, with no NaN."""
    n, m = 64, 160
    q, k, v = _qkv(1, 2, 1, n, m, 64)
    mask = torch.ones(1, 1, 2, 5, dtype=torch.bool, device=DEVICE)
    mask[..., 2] = False  # keys 64..95, causally visible to every query, hidden by the layout
    layout = Layout.from_block_mask(mask, block_q=32, block_k=32, num_queries=n, num_keys=m)
    k[:, :, [70, 90]] = 0
    v[:, :, [70, 90]] = 0
    nan_k, nan_v = k.clone(), v.clone()
    nan_k[:, :, 70] = math.nan
    nan_v[:, :, 90, 5] = math.inf
    out, lse = _check(q, nan_k, nan_v, layout, True, exact_inputs=(q, k, v))
    clean, clean_lse = quant_attention(q, k, v, layout, return_lse=True)
    assert torch.equal(out, clean) and torch.equal(lse, clean_lse)


def test_visible_nan_flags_exactly_the_rows_that_see_it():
    """A non-finite key reaches only the rows that see it causally (they come out NaN, as in the
    bf16 kernel); a non-finite query only its own row. Every other row is unchanged, bit for bit."""
    n, m = 160, 192  # 64-row tiles (interpreter): key 50 is in a full tile of rows 64..127
    q, k, v = _qkv(1, 2, 1, n, m, 64)
    q[:, 1, 5] = 0
    k[:, :, 50] = 0
    clean = quant_attention(q, k, v, causal=True)
    q[:, 1, 5, 3] = math.inf  # query row 5 of head 1 (it sees keys 0..37)
    k[:, :, 50, 7] = math.nan  # seen by queries at position >= 50: rows 18.. (M - N = 32)
    out, lse = quant_attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, k, v, causal=True, return_lse=True)
    expect = torch.zeros(1, 2, n, dtype=torch.bool, device=DEVICE)
    expect[:, :, 18:] = True
    expect[:, 1, 5] = True
    assert torch.equal(out.isnan().any(-1), expect) and torch.equal(out.isnan().all(-1), expect)
    assert torch.equal(lse.isnan(), expect) and torch.equal(ref_lse.isnan(), expect)
    assert torch.equal(ref.isnan().any(-1), expect)
    assert torch.equal(out[~expect], clean[~expect])


def test_a_non_finite_key_is_quantised_as_zero_after_the_mean():
    """K's NaN / inf elements are quantised as 0 after K's mean is subtracted, by the kernel and by
    the twin alike (the twin once zeroed them before the subtraction: -mean, which with a channel
    offset of 100 set its block's scale, and the rows that never see the key drifted 0.4 from the
    kernel's)."""
    q, k, v = _qkv(1, 1, 1, 64, 64, 32)
    k[..., 0] += 100
    k[0, 0, 50, 0] = math.nan  # in key block 1 (rows 32..63 at block_n 32)
    got, want = quantize_kv(k, v, block_n=32), quantize_kv_reference(k, v, block_n=32)
    assert got.k[0, 0, 50, 0] == 0 and want.k[0, 0, 50, 0] == 0
    torch.testing.assert_close(got.k_scale, want.k_scale, rtol=1e-6, atol=0)
    assert want.k_scale[0, 0, 1] < 0.1  # set by the finite values (|k - mean| < 5), not by 100
    out, ref = quant_attention(q, k, v), quant_attention_reference(q, k, v)
    assert (out[0, 0, :50].float() - ref[0, 0, :50].float()).abs().max() < 2e-3  # keys 0..49
    assert out[0, 0, 50:].isnan().all() and ref[0, 0, 50:].isnan().all()


def test_quantizers_match_twin_and_respect_strides():
    """Every quantised value and scale equals the twin's; inputs viewed from (B, N, H, D).

    K is quantised after its mean is subtracted. The kernel sums that mean in chunks, torch sums
    it in a tree on CUDA, so there the mean's last bit, and with it K's scale, can differ (the
    H200 measured it): on CUDA K's scale agrees to 1e-6 and its values to one step."""
    q = torch.randn(2, 90, 4, 128, dtype=torch.float16, device=DEVICE).transpose(1, 2)
    q[1, 2, 7, 3] = math.inf
    kv = torch.randn(2, 2, 150, 2, 128, dtype=torch.float16, device=DEVICE).transpose(2, 3)
    k, v = kv[0] * 3 + 1, kv[1]
    for got, want in zip(quantize_q(q, block_m=32), quantize_q_reference(q, 32), strict=True):
        assert torch.equal(got, want)
    got = quantize_kv(k, v, block_n=64)
    want = quantize_kv_reference(k, v, block_n=64)
    exact = ("v_scale", "kv_bad", "k_block_bad")
    for name in exact + (("k", "k_scale") if DEVICE == "cpu" else ()):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got.k_scale, want.k_scale, atol=0, rtol=1e-6)
    assert int((got.k.int() - want.k.int()).abs().max()) <= 1
    assert got.v_t.dtype == torch.float8_e4m3fn and got.v_t.shape == (2, 2, 128, 150)
    assert torch.equal(got.v_t.float(), want.v_t.float())
    torch.testing.assert_close(got.k_mean, want.k_mean, atol=1e-6, rtol=0)


def test_blocks_below_2_to_the_minus_100_quantise_to_full_scale():
    """A block (or V channel) whose absmax is below 2^-100, where 127 / absmax would overflow
    float32, still maps its largest value to +-127 (448 for V's FP8), bit for bit as the twin.
    Magnitudes in [2^-124, 2^-123): 127 / absmax overflows, and none is a float32 subnormal."""
    q, k, v = (
        (t.sign() * (1 + t.abs().frac())).bfloat16() * 2.0**-124 for t in _qkv(1, 2, 2, 64, 64, 64)
    )
    q[:, :, 32:] *= 2.0**100  # the second query block is an ordinary one
    q8, q_scale, _ = quantize_q(q, block_m=32)
    want_q8, want_q_scale, _ = quantize_q_reference(q, 32)
    assert torch.equal(q8, want_q8) and torch.equal(q_scale, want_q_scale)
    got = quantize_kv(k, v, block_n=32)
    want = quantize_kv_reference(k, v, block_n=32)
    for name in ("k", "k_scale", "v_scale"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(got.v_t.float(), want.v_t.float())
    assert (q8.unflatten(2, (2, 32)).abs().amax((-1, -2)) == 127).all()
    assert (got.k.unflatten(2, (2, 32)).abs().amax((-1, -2)) == 127).all()
    assert (got.v_t.float().abs().amax(-1) == 448).all()
    q_deq = q8.float() * q_scale.repeat_interleave(32, -1)[..., None]
    torch.testing.assert_close(q_deq, q.float(), atol=0, rtol=0.01 * 127 / 64)
    torch.testing.assert_close(got.dequantize()[1], v.float(), atol=0, rtol=2**-4)


def test_block_flags_mark_the_k_blocks_that_hold_a_flagged_row():
    """A NaN in a K row or an inf in a V row flags that row and its block of block_n keys (the
    last one partial): unmasked tiles read the block's flag alone."""
    _, k, v = _qkv(2, 2, 2, 40, 150, 64)
    k[0, 1, 70, 5] = math.nan
    v[1, 0, 149, 0] = math.inf
    got = quantize_kv(k, v, block_n=64)
    want = torch.zeros(2, 2, 3, dtype=torch.int8, device=DEVICE)
    want[0, 1, 1] = want[1, 0, 2] = 1
    assert torch.equal(got.k_block_bad, want)
    assert torch.equal(quantize_kv_reference(k, v, block_n=64).k_block_bad, want)


def test_quantizer_round_trip_bounds_and_k_mean():
    q, k, v = _qkv(1, 2, 1, 100, 140, 64)
    k = k + 5.0 * torch.randn(64, device=DEVICE, dtype=k.dtype)  # channel offsets
    q8, q_scale, _ = quantize_q(q, block_m=32)
    z = quantize_kv(k, v, block_n=32)
    torch.testing.assert_close(z.k_mean, k.float().mean(2), atol=1e-5, rtol=0)
    k_deq, v_deq = z.dequantize()
    q_step = q_scale.repeat_interleave(32, -1)[..., :100, None]
    k_step = z.k_scale.repeat_interleave(32, -1)[..., :140, None]
    # INT8 rounds to the nearest step: error at most half a step
    assert bool(((q8.float() * q_step - q.float()).abs() <= q_step * 0.5001).all())
    smoothed = k.float() - z.k_mean[:, :, None]
    assert bool(((k_deq - smoothed).abs() <= k_step * 0.5001).all())
    # the scale is set by the block's absmax: the largest value maps to +-127 exactly
    assert int(q8.abs().amax()) == 127 and int(z.k.abs().amax()) == 127
    # smoothing removed the offsets: K's steps are far smaller than unsmoothed K would need
    assert float(z.k_scale.max()) < float(k.float().abs().amax()) / 127 / 2
    # FP8 e4m3 rounds to nearest with 3 mantissa bits: relative error <= 2^-4, absolute 2^-10
    # of the channel scale in the subnormal range
    bound = torch.maximum(v.float().abs() * 2**-4, 2**-10 * z.v_scale[:, :, None])
    assert bool(((v_deq - v.float()).abs() <= bound * 1.0001).all())
    assert float(z.v_t.float().abs().amax()) == 448.0


def test_q_rounds_half_away_from_zero_as_in_the_twin():
    """Q's tiles hold halves after scaling (127 in every row sets each block's scale to 1), where
    rounding half away from zero and toward it part: the kernel matches the twin, which a Q rounded
    the other way would not; Q viewed from (B, N, H, D) gives the same output bit for bit."""
    n, m, d = 96, 128, 64
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-126, 126, (1, 2, n, d), generator=g) + 0.5
    q[..., 0] = 127
    q = q.to(torch.float16).to(DEVICE)  # x.5 is exact in fp16 below 1024
    _, k, v = _qkv(1, 2, 1, n, m, d)
    got = quant_attention(q, k, v, scale=1e-3)
    assert _rel_rms(got, quant_attention_reference(q, k, v, scale=1e-3)) < TWIN_RTOL
    toward_zero = (q - q.sign() * 0.0625).where(q.abs() != 127, q)  # x.4375: rounds down
    assert _rel_rms(got, quant_attention_reference(toward_zero, k, v, scale=1e-3)) > 10 * TWIN_RTOL
    strided = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(quant_attention(strided, k, v, scale=1e-3), got)


def test_out_buffer_any_strides():
    q, k, v = _qkv(1, 2, 1, 80, 100, 64)
    layout = _random_layout(1, 2, 80, 100, 32, 32, p=0.6, columns=4)
    buf = torch.zeros(1, 80, 2, 64, dtype=q.dtype, device=DEVICE).transpose(1, 2)
    got = quant_attention(q, k, v, layout, out=buf)
    assert got is buf
    assert torch.equal(buf, quant_attention(q, k, v, layout))


@pytest.mark.parametrize("kind", ["dense", "sparse", "spans"])
def test_tma_descriptor_path(kind):
    """The Hopper path (int8 K and fp8 Vᵀ tiles through TMA descriptors) forced on; columns and
    spans still gather."""
    q, k, v = _qkv(1, 2, 1, 70, 150, 64)  # GQA 2
    layout = {
        "dense": lambda: None,
        "sparse": lambda: _random_layout(1, 2, 70, 150, 32, 64, p=0.6, columns=3),
        "spans": lambda: _span_layout(1, 2, 70, 150, 32, 64, p=0.3, columns=3, width=2),
    }[kind]()
    with mock.patch.object(quant, "_use_tma", lambda *_: True):
        _check(q, k, v, layout, causal=True)


def _layout(**kw):
    return Layout.dense(**{"num_queries": 64, "num_keys": 80, "device": DEVICE, **kw})


def _bad_inputs():
    """(name, call, exception type, text the message must contain)."""
    q, k, v = _qkv(1, 4, 2, 64, 80, 64)
    return [
        ("q not a tensor", lambda: quant_attention(q.tolist(), k, v), TypeError, "q:"),
        ("q 3 dims", lambda: quant_attention(q[0], k, v), ValueError, "q:"),
        ("q float32", lambda: quant_attention(q.float(), k.float(), v.float()), TypeError, "q:"),
        ("k dtype", lambda: quant_attention(q, k.bfloat16(), v), TypeError, "q, k"),
        ("v dtype", lambda: quant_attention(q, k, v.bfloat16()), TypeError, "k, v"),
        ("v shape", lambda: quant_attention(q, k, v[:, :, :70]), ValueError, "k, v"),
        ("gqa", lambda: quant_attention(q[:, :3], k, v), ValueError, "H_q"),
        ("head_dim 48", lambda: quant_attention(q[..., :48], k[..., :48], v[..., :48]),
         ValueError, "head_dim"),
        ("head_dim 16", lambda: quant_attention(q[..., :16], k[..., :16], v[..., :16]),
         ValueError, "head_dim"),
        ("scale <= 0", lambda: quant_attention(q, k, v, scale=-1.0), ValueError, "scale"),
        ("scale type", lambda: quant_attention(q, k, v, scale="0.1"), TypeError, "scale"),
        ("causal type", lambda: quant_attention(q, k, v, causal=1), TypeError, "causal"),
        ("layout type", lambda: quant_attention(q, k, v, layout="dense"), TypeError, "layout"),
        ("return_lse type", lambda: quant_attention(q, k, v, return_lse="no"), TypeError,
         "return_lse"),
        ("twin return_lse type", lambda: quant_attention_reference(q, k, v, return_lse=1),
         TypeError, "return_lse"),
        ("layout N", lambda: quant_attention(q, k, v, _layout(num_queries=65)), ValueError,
         "layout"),
        ("layout block_k", lambda: quant_attention(q, k, v, _layout(block_k=16)), ValueError,
         "layout.block_k"),
        ("layout block_q", lambda: quant_attention(q, k, v, _layout(block_q=256)), ValueError,
         "layout.block_q"),
        ("out shape", lambda: quant_attention(q, k, v, out=q[:, :2]), ValueError, "out"),
        ("out dtype", lambda: quant_attention(q, k, v, out=q.float()), ValueError, "out"),
        ("out overlapping", lambda: quant_attention(q, k, v, out=q[:, :1].expand(q.shape)),
         ValueError, "out"),
        ("out is q", lambda: quant_attention(q, k, v, out=q), ValueError,
         "out: expected a buffer apart from q"),
        ("twin out overlapping",
         lambda: quant_attention_reference(q, k, v, out=q[:, :1].expand(q.shape)), ValueError,
         "out"),
        ("block_n", lambda: quantize_kv(k, v, block_n=16), ValueError, "block_n"),
        ("no key", lambda: quantize_kv(k[:, :, :0], v[:, :, :0]), ValueError, "k:"),
        ("twin no key", lambda: quantize_kv_reference(k[:, :, :0], v[:, :, :0]), ValueError,
         "k:"),
        ("kv shapes", lambda: quantize_kv(k, v[:, :, :3]), ValueError, "k, v"),
        ("kv dims", lambda: quantize_kv(k[0], v[0]), ValueError, "k:"),
        ("kv float32", lambda: quantize_kv(k.float(), v.float()), TypeError, "k:"),
        ("block_m", lambda: quantize_q(q, block_m=48), ValueError, "block_m"),
        ("quantize_q dims", lambda: quantize_q(q[0]), ValueError, "q:"),
        ("quantize_q float32", lambda: quantize_q(q.float()), TypeError, "q:"),
        ("twin q", lambda: quant_attention_reference(q[0], k, v), ValueError, "q:"),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(len(_bad_inputs())), ids=[c[0] for c in _bad_inputs()])
def test_malformed_inputs_raise_named_errors(index):
    _, call, exc, text = _bad_inputs()[index]
    with pytest.raises(exc, match=text):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real INT8 / FP8 tensor cores: CUDA only")
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_bf16_4k(sparse):
    """The real FP8 path (no emulated rounding), bf16 inputs, 4K tokens, Llama-3 heads (32 / 8)."""
    q, k, v = _qkv(1, 32, 8, 4096, 4096, 128, dtype=torch.bfloat16)
    layout = _random_layout(1, 8, 4096, 4096, 128, 128, p=0.3, columns=64) if sparse else None
    out, lse = quant_attention(q, k, v, layout, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, k, v, layout, return_lse=True)
    # GPU exp2 and FMA differ from the twin's in the last bits, which flips a few FP8 roundings
    assert _rel_rms(out, ref) < 5e-3
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    # K's mean is summed in another order: a few K values round the other way, which moves the
    # lse of rows with few keys by up to ~1e-2
    diff = (lse - ref_lse)[finite].abs()
    assert (diff <= 1e-3).float().mean() > 0.999 and diff.max() < 0.05
    exact = attention_reference(q, k, v, layout, causal=True)
    assert _head_cosines(out, exact).min() >= MIN_COSINE


@pytest.mark.parametrize(
    ("capability", "refused"), [((8, 0), True), ((8, 9), False), ((9, 0), False)]
)
def test_fp8_needs_compute_capability_8_9(monkeypatch, capability, refused):
    """On a GPU older than Ada (an A100: 8.0) FP8 e4m3 does not compile: the INT8·FP8 kernels,
    the FP8 KV cache and `patch` with an FP8 precision name the argument before Triton fails."""
    import attnsieve.kernels as kernels

    monkeypatch.setattr(kernels, "INTERPRET", False)
    monkeypatch.setattr(kernels, "capability", lambda device: capability)
    cuda = torch.device("cuda", 0)
    if refused:
        with pytest.raises(
            ValueError, match=r"^q: FP8 e4m3 needs a GPU of compute capability 8\.9"
        ):
            kernels.check_fp8_device("q", cuda)
    else:
        kernels.check_fp8_device("q", cuda)
    kernels.check_fp8_device("q", torch.zeros(1))  # CPU tensors run the twins
