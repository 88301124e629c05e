"""Triton block-sparse prefill kernel vs the float32 reference (TRITON_INTERPRET=1 on CPU, fp16)."""

import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsieve.api import attention
from attnsieve.kernels import prefill
from attnsieve.kernels.prefill import sparse_attention
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.kernels.quant import quant_attention
from attnsieve.kernels.quant_reference import quant_attention_reference
from attnsieve.layout import Layout

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = 4e-3  # relative RMS: fp16 inputs and P, fp32 accumulation


def _qkv(b, h_q, h_kv, n, m, d, dtype=torch.float16):
    q = torch.randn(b, h_q, n, d, dtype=dtype, device=DEVICE)
    k = torch.randn(b, h_kv, m, d, dtype=dtype, device=DEVICE)
    v = torch.randn(b, h_kv, m, d, dtype=dtype, device=DEVICE)
    return q, k, v


def _random_layout(b, h, n, m, bq, bk, p=0.5, columns=0, empty=False):
    qb, kb = -(-n // bq), -(-m // bk)
    mask = torch.rand(b, h, qb, kb, device=DEVICE) < p
    if empty:
        mask = torch.zeros_like(mask)
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        layout = layout.with_columns(torch.randint(-1, m, (b, h, qb, columns), device=DEVICE))
    return layout


def _check(q, k, v, layout, causal, scale=None):
    out, lse = sparse_attention(q, k, v, layout, causal=causal, scale=scale, return_lse=True)
    ref, ref_lse = attention_reference(q, k, v, layout, causal=causal, scale=scale, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert not out.isnan().any() and not lse.isnan().any()
    err = (out.float() - ref.float()).pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt().clamp(
        min=1e-6
    )
    assert err < RTOL, f"relative RMS {err:.2e}"
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    assert torch.equal(lse[~finite], ref_lse[~finite])  # both -inf
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=2e-3, rtol=0)
    assert not out[~finite].any()  # empty rows are exactly 0
    return out, lse


@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_gqa_ratios(g):
    q, k, v = _qkv(1, 2 * g, 2, 48, 48, 64)  # two KV groups, each of g query heads
    _check(q, k, v, _random_layout(1, 2 * g, 48, 48, 32, 32), causal=True)


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_head_dims_and_causality(d, causal):
    q, k, v = _qkv(1, 1, 1, 80, 80, d)
    _check(q, k, v, _random_layout(1, 1, 80, 80, 32, 32, p=0.6), causal=causal)


@pytest.mark.parametrize(
    ("n", "m"), [(40, 90), (90, 40), (33, 33), (1, 90), (90, 1), (32, 62), (32, 63), (32, 65)]
)
@pytest.mark.parametrize("causal", [True, False])
def test_lengths_not_multiple_of_block_and_n_ne_m(n, m, causal):
    """M < N leaves early causal rows with no key: they must come out 0 / -inf. Offsets M - N of
    -2, -1, +1 modulo the block put the diagonal next to a block edge (masked vs unmasked phase)."""
    q, k, v = _qkv(1, 1, 1, n, m, 32)  # one head: heads are the other tests' business
    _check(q, k, v, _random_layout(1, 1, n, m, 32, 32, p=0.7), causal=causal)


@pytest.mark.parametrize(("bq", "bk"), [(16, 64), (64, 16), (32, 128), (128, 32)])
def test_block_q_differs_from_block_k(bq, bk):
    q, k, v = _qkv(1, 1, 1, 200, 220, 32)
    _check(q, k, v, _random_layout(1, 1, 200, 220, bq, bk), causal=True)


@pytest.mark.parametrize("dense", [False, True])
def test_many_blocks_at_or_past_the_diagonal(dense):
    """Many blocks crossing or above the diagonal: the kernel's backward scans for the masked and
    the hidden suffix of the block list walk far (block_q 128 over block_k 16; a non-causal layout
    run causally)."""
    q, k, v = _qkv(1, 1, 1, 256, 256, 32)
    layout = _random_layout(1, 1, 256, 256, 128, 16, p=0.9)
    if dense:
        layout = Layout.dense(256, 256, block_q=128, block_k=16, causal=False, device=DEVICE)
    _check(q, k, v, layout, causal=True)


@pytest.mark.parametrize("causal", [True, False])
def test_columns_only(causal):
    q, k, v = _qkv(1, 2, 1, 100, 130, 64)
    layout = _random_layout(1, 1, 100, 130, 32, 32, empty=True, columns=40)
    assert layout.has_columns and int(layout.block_count.sum()) == 0
    _check(q, k, v, layout, causal=causal)


@pytest.mark.parametrize("causal", [True, False])
def test_blocks_and_columns(causal):
    # a layout per batch row and query head; 88 = 2 x 32 + 24 = 5 x 16 + 8: partial last blocks
    q, k, v = _qkv(2, 2, 1, 88, 88, 64)
    _check(q, k, v, _random_layout(2, 2, 88, 88, 32, 16, p=0.3, columns=20), causal=causal)


def test_empty_layout_gives_zero_and_minus_inf():
    q, k, v = _qkv(1, 2, 1, 50, 70, 64)
    out, lse = _check(q, k, v, _random_layout(1, 1, 50, 70, 32, 32, empty=True), causal=False)
    assert not out.any() and bool((lse == -math.inf).all())


@pytest.mark.parametrize("layout_heads", ["one", "kv", "q"])
def test_layout_head_broadcast(layout_heads):
    h_l = {"one": 1, "kv": 2, "q": 4}[layout_heads]
    q, k, v = _qkv(2, 4, 2, 48, 48, 32)
    _check(q, k, v, _random_layout(2, h_l, 48, 48, 16, 16, p=0.4), causal=True)


def test_layout_batch_broadcast():
    q, k, v = _qkv(2, 2, 1, 64, 80, 32)
    layout = _random_layout(1, 2, 64, 80, 16, 16, p=0.4, columns=6)
    out, _ = _check(q, k, v, layout, causal=True)
    # each batch element must use the same plan as when run on its own
    for i in range(2):
        alone = sparse_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], layout)
        torch.testing.assert_close(alone, out[i : i + 1], atol=0, rtol=0)


def test_dense_layout_and_custom_scale():
    q, k, v = _qkv(1, 2, 1, 100, 100, 64)
    layout = Layout.dense(100, 100, block_q=32, block_k=32, device=DEVICE)
    _check(q, k, v, layout, causal=True, scale=0.3)


def test_strided_inputs():
    """(B, N, H, D) storage viewed as (B, H, N, D): no copy needed, strides are honoured."""
    q = torch.randn(1, 90, 4, 32, dtype=torch.float16, device=DEVICE).transpose(1, 2)
    kv = torch.randn(2, 1, 90, 2, 32, dtype=torch.float16, device=DEVICE).transpose(2, 3)
    _check(q, kv[0], kv[1], _random_layout(1, 2, 90, 90, 32, 32), causal=True)


@pytest.mark.parametrize(
    ("n", "m", "bq", "bk", "columns"),
    [(70, 150, 32, 32, 0), (150, 90, 64, 16, 8), (33, 200, 16, 64, 4)],
)
def test_tma_descriptor_path(n, m, bq, bk, columns):
    """The Hopper path (K/V tiles through TMA descriptors) forced on: zero-filled rows past M."""
    q = torch.randn(1, 90, 2, 32, dtype=torch.float16, device=DEVICE)[:, :n].transpose(1, 2)
    k, v = torch.randn(2, 1, 1, m, 32, dtype=torch.float16, device=DEVICE)  # GQA 2
    with mock.patch.object(prefill, "_use_tma", lambda *_: True):
        layout = _random_layout(1, 2, q.shape[2], m, bq, bk, p=0.6, columns=columns)
        _check(q, k, v, layout, causal=True)


@settings(max_examples=8, deadline=None)
@given(
    b=st.integers(1, 2),
    h_kv=st.integers(1, 2),
    g=st.sampled_from([1, 2, 4]),
    n=st.integers(1, 160),
    m=st.integers(1, 160),
    d=st.sampled_from([16, 32, 64]),
    bq=st.sampled_from([16, 32, 64]),
    bk=st.sampled_from([16, 32, 64]),
    p=st.floats(0.0, 1.0),
    columns=st.sampled_from([0, 5]),
    causal=st.booleans(),
    head_mode=st.sampled_from(["one", "kv", "q"]),
    batch_broadcast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_layouts_match_reference(
    b, h_kv, g, n, m, d, bq, bk, p, columns, causal, head_mode, batch_broadcast, seed
):
    torch.manual_seed(seed)
    h_q = h_kv * g
    h_l = {"one": 1, "kv": h_kv, "q": h_q}[head_mode]
    q, k, v = _qkv(b, h_q, h_kv, n, m, d)
    layout = _random_layout(1 if batch_broadcast else b, h_l, n, m, bq, bk, p=p, columns=columns)
    _check(q, k, v, layout, causal=causal)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SDPA dispatch runs on CUDA only")
def test_dense_dispatch_matches_triton():
    q, k, v = _qkv(1, 8, 2, 1000, 1000, 128, dtype=torch.bfloat16)
    layout = Layout.dense(1000, 1000, device=DEVICE)
    fast = sparse_attention(q, k, v, layout, dense_dispatch=True)
    triton_out = sparse_attention(q, k, v, layout, dense_dispatch=False)
    err = (fast.float() - triton_out.float()).norm() / triton_out.float().norm()
    assert err < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SDPA dispatch runs on CUDA only")
@pytest.mark.parametrize("d", [64, 128])
def test_dense_attention_on_cudnn_matches_default_sdpa(d):
    """api.dense_attention's causal path (cuDNN first) against SDPA's own backend choice, on a
    transposed q as transformers passes it."""
    from attnsieve.api import dense_attention

    q = torch.randn(1, 777, 9, d, dtype=torch.bfloat16, device="cuda").transpose(1, 2)
    k, v = (torch.randn(1, 3, 777, d, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    assert prefill.sdpa_serves(q, k, v)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=True
    )
    got = dense_attention(q, k, v)
    assert ((got.float() - want.float()).norm() / want.float().norm()) < 1e-2


@pytest.mark.parametrize("causal", [True, False])
def test_empty_batch_returns_empty_output(causal):
    """B = 0 returns (0, H_q, N, D) and its lse without a launch: on Hopper the kernel built TMA
    descriptors over the empty K, which TensorDescriptor refuses with an AssertionError."""
    q, k, v = _qkv(0, 4, 2, 100, 100, 64, dtype=torch.bfloat16 if DEVICE == "cuda" else torch.half)
    layout = Layout.dense(100, 100, block_q=32, block_k=32, causal=causal, device=DEVICE)
    out, lse = sparse_attention(q, k, v, layout, causal=causal, return_lse=True)
    assert out.shape == (0, 4, 100, 64) and lse.shape == (0, 4, 100)


def test_sdpa_dispatch_needs_16_byte_rows():
    """K/V rows padded to 72 bytes (fuzz seed 279: cuDNN returned garbage, flash raised) are not
    aligned, so the dense dispatch keeps them in the Triton kernel; plain tensors are aligned."""
    q = torch.zeros(1, 8, 32, 32, dtype=torch.bfloat16)
    kv = torch.zeros(2, 1, 1, 32, 36, dtype=torch.bfloat16)
    assert prefill._aligned(q, kv[0, ..., :32].contiguous(), kv[1, ..., :32].contiguous())
    assert not prefill._aligned(q, kv[0, ..., :32], kv[1, ..., :32])
    assert not prefill._aligned(q.flatten()[1:].view(1, 1, 1, -1))  # start off 16 bytes


# ---- malformed inputs ----------------------------------------------------------------------------
def _ok():
    q, k, v = _qkv(1, 4, 2, 40, 40, 32)
    return q, k, v, Layout.dense(40, 40, block_q=16, block_k=16, device=DEVICE)


def checked_attention(*args, **kwargs):
    """The public entry point, which checks the arguments once, forced onto the Triton kernel."""
    return attention(*args, backend="triton", **kwargs)


def test_rejects_float32():
    q, k, v, layout = _ok()
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        checked_attention(q.float(), k.float(), v.float(), layout)


def test_rejects_mixed_dtypes():
    q, k, v, layout = _ok()
    with pytest.raises(TypeError, match="one dtype"):
        checked_attention(q, k.to(torch.bfloat16), v, layout)


def test_rejects_head_dim_mismatch():
    q, k, v, layout = _ok()
    with pytest.raises(ValueError, match="head_dim"):
        checked_attention(q[..., :16], k, v, layout)


@pytest.mark.parametrize("d", [24, 48, 8, 512])
def test_rejects_unsupported_head_dim(d):
    q, k, v = _qkv(1, 2, 1, 20, 20, d)
    with pytest.raises(ValueError, match="power of two"):
        checked_attention(q, k, v, Layout.dense(20, 20, block_q=16, block_k=16, device=DEVICE))


def test_rejects_heads_not_multiple():
    q, k, v, layout = _ok()
    with pytest.raises(ValueError, match="multiple of H_kv"):
        checked_attention(q[:, :3], k, v, layout)


def test_rejects_layout_length_mismatch():
    q, k, v, _ = _ok()
    with pytest.raises(ValueError, match="built for"):
        checked_attention(q, k, v, Layout.dense(41, 40, block_q=16, block_k=16, device=DEVICE))


def test_rejects_layout_heads_mismatch():
    q, k, v, _ = _ok()
    layout = _random_layout(1, 3, 40, 40, 16, 16)
    with pytest.raises(ValueError, match="heads 3"):
        checked_attention(q, k, v, layout)


def test_rejects_device_mismatch():
    q, k, v, layout = _ok()
    with pytest.raises(ValueError, match="meta"):
        checked_attention(q, k.to("meta"), v, layout)


def test_rejects_unsupported_block_size():
    q, k, v = _qkv(1, 2, 1, 40, 40, 32)
    layout = Layout.dense(40, 40, block_q=16, block_k=24, device=DEVICE)
    with pytest.raises(ValueError, match="block_k"):
        checked_attention(q, k, v, layout)


def test_rejects_bad_layout_type_scale_and_strides():
    q, k, v, layout = _ok()
    with pytest.raises(TypeError, match="layout"):
        checked_attention(q, k, v, layout.block_idx)
    with pytest.raises(ValueError, match="scale"):
        checked_attention(q, k, v, layout, scale=-1.0)
    with pytest.raises(ValueError, match="stride 1"):
        checked_attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v, layout)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ("layout_length", r"layout: built for \(N, M\)=\(128, 128\)"),
        ("layout_heads", "layout: heads 3"),
        ("out_shape", "out: expected shape"),
        ("k_heads", "H_q=4 must be a positive multiple of H_kv=3"),
    ],
)
def test_the_kernel_entry_refuses_what_does_not_fit(bad, pattern):
    """`attnsieve.kernels.prefill.sparse_attention`, called directly (as the benches do), read
    a layout built for 128 queries with 256-query inputs past its block lists: a segmentation
    fault in the interpreter. It now checks what the public entry checks."""
    q, k, v = _qkv(1, 4, 2, 256, 256, 16)
    layout = Layout.dense(256, 256, block_q=64, block_k=64, device=DEVICE)
    out = None
    if bad == "layout_length":
        layout = Layout.dense(128, 128, block_q=64, block_k=64, device=DEVICE)
    elif bad == "layout_heads":
        layout = Layout.cat([layout] * 3, dim=1)
    elif bad == "out_shape":
        out = torch.empty(1, 4, 128, 16, dtype=q.dtype, device=DEVICE)
    else:
        k = k[:, :1].expand(1, 3, 256, 16)
    with pytest.raises(ValueError, match=pattern):
        sparse_attention(q, k, v, layout, dense_dispatch=False, out=out)


def _huge_lists(path, width, fill):
    """(1, 3, 2, width) int32 lists whose heads lie 2^30 entries apart: the head stride fits
    int32 (as Triton then passes it) and head 2 starts 2^31 entries in, past int32 offsets. The
    view starts 2^31 entries into its store, so that an offset wrapped to -2^31 still reads zeros
    rather than faulting. The store is a sparse file on the CPU (no RAM, no disk) and 20 GiB of
    GPU memory on CUDA, where the compiled kernel's address arithmetic is the one that counts.
    ``fill`` writes the lists."""
    import os

    head, offset = 1 << 30, 1 << 31
    numel = offset + 3 * head
    if DEVICE == "cuda":
        if torch.cuda.mem_get_info()[0] < numel * 4 + (4 << 30):
            pytest.skip("a 20 GiB store does not fit this GPU's free memory")
        store = torch.zeros(numel, dtype=torch.int32, device=DEVICE)
    else:
        with open(path, "wb") as f:
            f.truncate(numel * 4)
        if os.stat(path).st_blocks * 512 > 1 << 20:
            pytest.skip("this filesystem has no sparse files")
        store = torch.from_file(str(path), shared=True, size=numel, dtype=torch.int32)
    lists = store.as_strided((1, 3, 2, width), (3 * head, head, width, 1), offset)
    fill(lists)
    return lists


@pytest.mark.parametrize("kernel", ["bf16", "int8-fp8"])
@pytest.mark.parametrize("part", ["blocks", "columns"])
def test_lists_past_2_31_entries_are_read_at_int64_offsets(tmp_path, part, kernel):
    """block_topk's block lists at 1M tokens are (B, 32, 8192, 16384) int32, 2^32 entries: with
    int32 offsets heads 16-31 read their lists 8-16 GiB before the tensor (a review's interpreter
    run). Here a layout of a 64-token prompt whose third head's lists start 2^31 entries in must
    give the dense answer, as its first heads do, through the bf16 and the INT8·FP8 kernel."""
    n, bq, bk = 64, 32, 32
    q, k, v = _qkv(1, 3, 3, n, n, 32)
    count = torch.zeros(1, 3, 2, dtype=torch.int32, device=DEVICE)
    if part == "blocks":

        def fill(lists):
            blocks = torch.arange(2, dtype=torch.int32, device=DEVICE)
            lists[:, :, 0, :1], lists[:, :, 1] = blocks[:1], blocks

        count[..., 0], count[..., 1] = 1, 2
        layout = Layout(_huge_lists(tmp_path / "lists", 2, fill), count, bq, bk, n, n, _valid=True)
    else:  # no blocks; every key a column (keys 0..31 for query block 0, 0..63 for block 1)

        def fill(lists):
            cols = torch.arange(64, device=DEVICE)
            lists[:, :, 0, :32], lists[:, :, 1] = cols[:32], cols

        count[..., 0], count[..., 1] = 32, 64
        layout = Layout(
            torch.zeros(1, 3, 2, 1, dtype=torch.int32, device=DEVICE), torch.zeros_like(count),
            bq, bk, n, n,
            column_idx=_huge_lists(tmp_path / "lists", 64, fill), column_count=count, _valid=True,
        )  # fmt: skip
    if kernel == "bf16":
        out = sparse_attention(q, k, v, layout, dense_dispatch=False).float()
        want = attention_reference(q, k, v).float()
        torch.testing.assert_close(out, want, atol=2e-3, rtol=2e-3)
    else:
        out = quant_attention(q, k, v, layout).float()
        want = quant_attention_reference(q, k, v, layout).float()  # the same quantisation tiles
        err = float((out - want).norm() / want.norm())
        assert err < 5e-3, f"relative error {err:.2e} against the INT8·FP8 twin"
    del layout
    if DEVICE == "cuda":
        torch.cuda.empty_cache()  # the 20 GiB store, for the tests after this one


def test_autotuning_times_a_long_candidate_by_one_call(monkeypatch):
    """do_bench spends seven calls a candidate (five to estimate): at 1M tokens, about 100 s of a
    layout's first call. A candidate of `LONG_CALL_MS` or more is timed by its one call; shorter
    ones by do_bench, and every autotuned kernel tunes this way."""
    import triton.testing

    import attnsieve.kernels as kernels
    from attnsieve.kernels import antidiagonal, quant

    benched = []
    monkeypatch.setattr(
        triton.testing, "do_bench", lambda fn, quantiles: benched.append(fn) or [1.0, 0.9, 1.1]
    )
    monkeypatch.setattr(kernels, "call_ms", lambda fn: 3500.0)
    assert kernels.tune_timing(lambda: None, (0.5, 0.2, 0.8)) == [3500.0] * 3 and benched == []
    monkeypatch.setattr(kernels, "call_ms", lambda fn: kernels.LONG_CALL_MS / 2)
    call = mock.Mock()
    assert kernels.tune_timing(call, (0.5, 0.2, 0.8)) == [1.0, 0.9, 1.1] and benched == [call]
    tuned = (prefill._sparse_fwd_tuned, quant._quant_fwd_tuned, antidiagonal._antidiag_lse_kernel)
    assert all(t.do_bench is kernels.tune_timing for t in tuned)
