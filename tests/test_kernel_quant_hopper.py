"""The Hopper (Gluon) path of the INT8·FP8 kernel, in order and over key-block layouts, against
the twin and exact attention, and the dispatch that picks it. Gluon has no interpreter: the kernel
tests need an sm_90 GPU."""

import math

import pytest
import torch

from attnsieve.kernels import quant_hopper
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.kernels.quant import quant_attention
from attnsieve.kernels.quant_reference import quant_attention_reference
from attnsieve.layout import Layout
from tests.test_kernel_quant import (
    MIN_COSINE,
    _check,
    _head_cosines,
    _qkv,
    _random_layout,
    _rel_rms,
)

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
# P·V accumulates inside the FP8 MMA (about 14 bits kept from tile to tile) where the twin adds
# each tile's product in fp32: up to 2.3e-3 relative RMS on these cases on the H200 (1e-3 for the
# Triton kernel), while the cosine to exact attention stays above MIN_COSINE
TWIN_RTOL = 5e-3
needs_hopper = pytest.mark.skipif(not HOPPER, reason="Gluon wgmma kernel: an sm_90 GPU only")
pytestmark = pytest.mark.usefixtures("nan_empty")


@pytest.fixture
def launches(monkeypatch):
    """Calls of the Hopper kernel's launcher, so a test knows which path ran."""
    calls = []
    real = quant_hopper.attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(quant_hopper, "attention", spy)
    return calls


def test_only_what_the_kernel_covers_is_sent_to_it():
    """Causal, head dim 128, M >= N, 64 x 128 quantisation tiles, key blocks alone, on an sm_90
    GPU: anything else (and every CPU tensor) stays on the Triton kernel."""
    dev = "cuda" if HOPPER else "cpu"
    q = torch.zeros(1, 2, 100, 128, device=dev)
    k = torch.zeros(1, 1, 200, 128, device=dev)
    blocks = Layout.dense(100, 200, block_q=64, block_k=128, device=dev)
    assert quant_hopper.fits(q, k, None, True, (64, 128)) == HOPPER
    assert quant_hopper.fits(q, k, blocks, True, (64, 128)) == HOPPER
    columns = blocks.with_columns(torch.zeros(1, 1, 2, 1, dtype=torch.int32, device=dev))
    assert not quant_hopper.fits(q, k, columns, True, (64, 128))
    spans = blocks.with_diagonals(torch.full((1, 1, 1), 150, device=dev), width=1)
    assert spans.has_spans and not quant_hopper.fits(q, k, spans, True, (64, 128))
    assert not quant_hopper.fits(q, k, None, False, (64, 128))
    assert not quant_hopper.fits(q, k, None, True, (64, 64))
    assert not quant_hopper.fits(q[..., :64], k[..., :64], None, True, (64, 128))
    assert not quant_hopper.fits(k, q, None, True, (64, 128))  # more queries than keys
    assert not quant_hopper.fits(q.cpu(), k.cpu(), None, True, (64, 128))


# (b, h_q, h_kv, n, m, block_q, layout heads, layout batch, p): GQA 1 and 4, layout heads 1, H_kv
# and H_q, a layout batch of 2 and one broadcast, 64- and 128-row blocks, M - N of 0, 60 (the
# diagonal across two key tiles) and 3000, partial last blocks; p = 0: every list empty
SPARSE_CASES = [
    (1, 4, 1, 1000, 1000, 128, "q", 1, 0.4),
    (2, 8, 2, 700, 1100, 64, "kv", 2, 0.5),
    (1, 4, 4, 200, 260, 128, "one", 1, 0.6),
    (2, 4, 1, 129, 3129, 64, "q", 1, 0.3),
    (1, 2, 1, 300, 300, 128, "q", 1, 0.0),
]


@needs_hopper
@pytest.mark.parametrize("case", SPARSE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_block_lists_match_twin_and_exact(launches, case):
    """A layout of key blocks runs this kernel: each program walks its query block's sorted list
    (loaded two tiles ahead), its blocks seen whole first and the masked ones after; a row that
    sees no key (an empty list, or only blocks past its position) gives 0 and lse -inf."""
    b, h_q, h_kv, n, m, block_q, heads, batch, p = case
    q, k, v = _qkv(b, h_q, h_kv, n, m, 128)
    h = {"q": h_q, "kv": h_kv, "one": 1}[heads]
    layout = _random_layout(batch, h, n, m, block_q, 128, p=p)
    if p == 0:  # no output to compare the twin's with
        out, lse = quant_attention(q, k, v, layout, return_lse=True)
        assert not out.any() and (lse == -math.inf).all()
    else:
        _check(q, k, v, layout, True, twin_rtol=TWIN_RTOL)
    assert len(launches) == 1


@needs_hopper
def test_rows_before_their_only_block_see_no_key(launches):
    """A 64-row program whose one listed block starts among its rows: the rows before it see no
    key (0 and lse -inf, no NaN from a row maximum of -inf), the rows from it on attend to it."""
    n, m = 128, 224  # query i sits at key position i + 96
    q, k, v = _qkv(1, 2, 1, n, m, 128)
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 1] = True  # rows 0-63 (positions 96-159): key block 1 (keys 128-223) alone
    mask[0, 0, 1, 0] = True  # rows 64-127: key block 0, seen whole
    layout = Layout.from_block_mask(mask.cuda(), block_q=64, block_k=128, num_queries=n,
                                    num_keys=m)  # fmt: skip
    out, lse = _check(q, k, v, layout, True, twin_rtol=TWIN_RTOL)
    assert (lse[..., :32] == -math.inf).all() and not out[..., :32, :].any()  # positions 96-127
    assert lse[..., 32:].isfinite().all() and out[..., 32:, :].abs().sum(-1).gt(0).all()
    assert len(launches) == 1


@needs_hopper
def test_block_lists_flag_the_rows_that_see_a_nan(launches):
    """A non-finite key in a listed block reaches exactly the rows that see it, in a block seen
    whole and in a masked diagonal block; unlisted blocks' NaN and inf reach no row."""
    n = m = 512
    q, k, v = _qkv(1, 2, 1, n, m, 128)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    for q_block, key_blocks in enumerate([[0], [1], [0, 2], [3]]):
        mask[0, 0, q_block, key_blocks] = True
    layout = Layout.from_block_mask(mask.cuda(), block_q=128, block_k=128, num_queries=n,
                                    num_keys=m)  # fmt: skip
    k[:, :, 10, 3] = math.nan  # block 0: query block 0's diagonal from row 10, query block 2 whole
    k[:, :, 200, 1] = math.inf  # block 1: query block 1's diagonal from row 200
    out, lse = quant_attention(q, k, v, layout, return_lse=True)
    _, ref_lse = quant_attention_reference(q, k, v, layout, return_lse=True)
    expect = torch.zeros(1, 2, n, dtype=torch.bool, device="cuda")
    expect[..., 10:128] = expect[..., 200:256] = expect[..., 256:384] = True  # query block 3: none
    assert torch.equal(out.isnan().all(-1), expect) and torch.equal(out.isnan().any(-1), expect)
    assert torch.equal(lse.isnan(), expect) and torch.equal(ref_lse.isnan(), expect)
    assert len(launches) == 1


@needs_hopper
@pytest.mark.parametrize(
    ("b", "h_q", "h_kv", "n", "m"),
    [
        (1, 4, 1, 200, 260),  # M - N = 60: the diagonal crosses two key tiles
        (2, 8, 2, 1000, 1000),
        (1, 4, 4, 64, 64),
        (1, 2, 1, 1, 300),  # one query at the end of 300 keys
        (1, 2, 1, 129, 4096),
        (2, 4, 2, 700, 1100),
    ],
)
def test_matches_twin_and_exact(launches, b, h_q, h_kv, n, m):
    q, k, v = _qkv(b, h_q, h_kv, n, m, 128)
    _check(q, k, v, None, True, twin_rtol=TWIN_RTOL)
    dense = Layout.dense(n, m, block_q=64, block_k=128, device="cuda")
    _check(q, k, v, dense, True, twin_rtol=TWIN_RTOL)
    assert len(launches) == 2


@needs_hopper
def test_a_score_scale_that_underflows_gives_uniform_weights(launches):
    """A softmax scale whose product with the block scales underflows float32 (1e-46 passes the
    scale check): every score is 0 and each row averages the keys it sees, in order and over a
    layout, in whole and masked tiles alike (a masked score's -inf times a 0 scale was NaN)."""
    q, k, v = _qkv(1, 4, 1, 200, 260, 128)
    _check(q, k, v, None, True, scale=1e-46, twin_rtol=TWIN_RTOL)
    dense = Layout.dense(200, 260, block_q=64, block_k=128, device="cuda")
    out, _ = _check(q, k, v, dense, True, scale=1e-46, twin_rtol=TWIN_RTOL)
    seen = torch.arange(1, 201, device="cuda") + 60  # query i sees keys 0 .. i + 60
    uniform = v.float().cumsum(2)[:, :, 60:] / seen[:, None]
    assert _rel_rms(out[:, :1], uniform) < 0.05  # query head 0; all four read KV head 0
    assert len(launches) == 2


@needs_hopper
def test_bf16_4k_llama_heads(launches):
    """bf16 inputs, 4K tokens, Llama-3 heads (32 / 8): the benchmark's shapes."""
    q, k, v = _qkv(1, 32, 8, 4096, 4096, 128, dtype=torch.bfloat16)
    out, lse = quant_attention(q, k, v, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, k, v, return_lse=True)
    assert launches and _rel_rms(out, ref) < 5e-3
    assert (lse - ref_lse).abs().max() < 0.05
    exact = attention_reference(q, k, v, None, causal=True)
    assert _head_cosines(out, exact).min() >= MIN_COSINE


@needs_hopper
def test_visible_nan_flags_exactly_the_rows_that_see_it(launches):
    """A non-finite key reaches the rows that see it: in a tile seen whole (one flag a K block)
    and in a masked diagonal tile (a flag a key); a non-finite query only its own row."""
    n, m = 320, 384  # M - N = 64
    q, k, v = _qkv(1, 2, 1, n, m, 128)
    q[:, 1, 5] = 0
    k[:, :, [50, 300]] = 0
    clean = quant_attention(q, k, v, causal=True)
    q[:, 1, 5, 3] = math.inf
    k[:, :, 50, 7] = math.nan  # whole tile 0 for rows 0..63 (positions 64..): rows 0.. see it
    k[:, :, 300, 1] = -math.inf  # seen from position 300, row 236: the last rows' masked tile
    out, lse = quant_attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = quant_attention_reference(q, k, v, causal=True, return_lse=True)
    expect = torch.ones(1, 2, n, dtype=torch.bool, device="cuda")
    assert torch.equal(out.isnan().all(-1), expect) and torch.equal(lse.isnan(), expect)
    assert torch.equal(ref_lse.isnan(), expect)
    k[:, :, 50] = 0  # now only key 300 and query (1, 5)
    out, lse = quant_attention(q, k, v, causal=True, return_lse=True)
    expect[:] = False
    expect[:, :, 236:] = True
    expect[:, 1, 5] = True
    assert torch.equal(out.isnan().any(-1), expect) and torch.equal(out.isnan().all(-1), expect)
    assert torch.equal(lse.isnan(), expect)
    assert torch.equal(out[~expect], clean[~expect])
    assert len(launches) == 3


@needs_hopper
def test_out_buffer_any_strides(launches):
    q, k, v = _qkv(2, 4, 2, 300, 300, 128)
    out = torch.empty(2, 300, 4, 128, dtype=q.dtype, device="cuda").transpose(1, 2)
    got = quant_attention(q, k, v, out=out)
    assert got is out and launches
    assert torch.equal(out, quant_attention(q, k, v))


@needs_hopper
def test_q_is_quantised_in_the_kernel_as_the_twin_does(launches):
    """Q's tiles hold halves after scaling (127 in every row sets each tile's scale to 1): the
    kernel rounds them half away from zero as the twin does, far closer to that twin than to one
    whose Q rounds toward zero; Q viewed from (B, N, H, D) gives the same output bit for bit."""
    n, m, d = 96, 128, 128
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-126, 126, (1, 2, n, d), generator=g) + 0.5
    q[..., 0] = 127
    q = q.to(torch.float16).to("cuda")  # x.5 is exact in fp16 below 1024
    _, k, v = _qkv(1, 2, 1, n, m, d)
    got = quant_attention(q, k, v, scale=1e-3)
    right = _rel_rms(got, quant_attention_reference(q, k, v, scale=1e-3))
    toward_zero = (q - q.sign() * 0.0625).where(q.abs() != 127, q)  # x.4375: rounds down
    wrong = _rel_rms(got, quant_attention_reference(toward_zero, k, v, scale=1e-3))
    assert right < TWIN_RTOL and right < wrong / 4
    strided = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(quant_attention(strided, k, v, scale=1e-3), got)
    assert len(launches) == 2
