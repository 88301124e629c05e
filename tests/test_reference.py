import math

import pytest
import torch

import attnsieve
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout
from tests.test_layout import random_layout


def naive(q, k, v, mask, scale):
    """Textbook attention on an explicit (B, H_q, N, M) mask, K/V repeated (fine at test sizes)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(scores, -1)
    return torch.softmax(scores, -1).nan_to_num(0.0) @ v, lse


@pytest.mark.parametrize("g", [1, 2, 4, 8])
@pytest.mark.parametrize("n,m", [(50, 50), (17, 70), (70, 17)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("layout_heads", ["one", "kv", "q"])
def test_reference_matches_naive(g, n, m, causal, layout_heads):
    h_kv = 2
    q = torch.randn(2, g * h_kv, n, 32)
    k, v = torch.randn(2, h_kv, m, 32), torch.randn(2, h_kv, m, 32)
    heads = {"one": 1, "kv": h_kv, "q": g * h_kv}[layout_heads]
    layout = random_layout(2, heads, n, m, 16, 8, columns=3)
    out, lse = attention_reference(q, k, v, layout, causal=causal, scale=0.3, return_lse=True)
    mask = layout.to_dense_mask(causal=causal)[:, layout.heads_for(g * h_kv, h_kv)]
    ref_out, ref_lse = naive(q, k, v, mask, 0.3)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = ~torch.isinf(lse)
    torch.testing.assert_close(lse[finite].double(), ref_lse[finite], atol=1e-5, rtol=1e-5)
    assert not out.isnan().any()
    # without lse the reference takes its fused-softmax path: same output, empty rows still 0
    alone = attention_reference(q, k, v, layout, causal=causal, scale=0.3)
    torch.testing.assert_close(alone.double(), ref_out, atol=1e-5, rtol=1e-5)
    assert not alone.isnan().any()


def test_empty_layout_gives_zero_and_minus_inf():
    q, k = torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    empty = Layout.from_block_mask(
        torch.zeros(1, 1, 3, 3, dtype=torch.bool),
        block_q=16,
        block_k=16,
        num_queries=40,
        num_keys=40,
    )
    out, lse = attention_reference(q, k, k, empty, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isneginf(lse).all()
    assert torch.equal(attention_reference(q, k, k, empty), torch.zeros_like(out))


def test_dense_reference_matches_sdpa_and_keeps_dtype():
    q, k, v = (torch.randn(1, 4, 33, 64, dtype=torch.float16) for _ in range(3))
    out = attnsieve.attention(q, k, v, causal=True)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True
    )
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=2e-3)


MALFORMED = [
    (
        "^q: ",
        lambda: (torch.randn(2, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)),
        ValueError,
    ),
    (
        "^q: ",
        lambda: (
            torch.randint(0, 3, (1, 2, 8, 16)),
            torch.randn(1, 2, 8, 16),
            torch.randn(1, 2, 8, 16),
        ),
        TypeError,
    ),
    (
        "one dtype",
        lambda: (
            torch.randn(1, 2, 8, 16),
            torch.randn(1, 2, 8, 16).half(),
            torch.randn(1, 2, 8, 16),
        ),
        TypeError,
    ),
    (
        "k, v",
        lambda: (torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 9, 16)),
        ValueError,
    ),
    (
        "batch",
        lambda: (torch.randn(2, 2, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)),
        ValueError,
    ),
    (
        "head_dim",
        lambda: (torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)),
        ValueError,
    ),
    (
        "multiple",
        lambda: (torch.randn(1, 3, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)),
        ValueError,
    ),
    ("^k: ", lambda: (torch.randn(1, 2, 8, 16), "k", torch.randn(1, 2, 8, 16)), TypeError),
]


@pytest.mark.parametrize("match,make,error", MALFORMED)
def test_malformed_attention_inputs(match, make, error):
    with pytest.raises(error, match=match):
        attnsieve.attention(*make())


def test_unknown_backend_is_rejected(monkeypatch):
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="backend"):
        attnsieve.attention(q, q, q, backend="cuda")
    monkeypatch.setenv("ATTNSIEVE_BACKEND", "fast")
    with pytest.raises(ValueError, match="backend"):
        attnsieve.attention(q, q, q)


def test_an_empty_batch_gives_an_empty_output():
    q = torch.randn(0, 2, 16, 16)
    assert attnsieve.attention(q, q, q, backend="reference").shape == (0, 2, 16, 16)


@pytest.mark.parametrize("precision", ["bf16", "int8-fp8"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(("n", "m"), [(16, 0), (0, 16)])
def test_no_keys_or_no_queries_agree_on_every_backend(n, m, backend, precision):
    """No Layout has an empty side, yet attention of N queries over no key (or of no query) is
    defined: rows that see no key are 0 with lse -inf, on every backend and precision."""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: CUDA or the interpreter
    q = torch.randn(1, 2, n, 32, dtype=torch.float16, device=device)
    k, v = torch.randn(2, 1, 2, m, 32, dtype=torch.float16, device=device)
    out, lse = attnsieve.attention(q, k, v, backend=backend, precision=precision, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:3]
    assert not out.any() and (lse == -math.inf).all()


@pytest.mark.parametrize("shape", ["nm", "1nm", "b1nm", "bhnm"])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_dense_attention_softcap_takes_every_mask_sdpa_takes(shape, kind):
    """Gemma-2's soft-capped path indexed the mask as (B, 1, N, M): a (N, M) mask raised an
    IndexError, a (1, N, M) or per-head one a RuntimeError, where the SDPA path takes them. With a
    cap far above the scores tanh is the identity to float32's precision: both paths agree."""
    from attnsieve.api import dense_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((4, 7), (2, 11), (2, 11)))
    full = torch.rand(2, 4, 7, 11, generator=g) > 0.3
    full[..., 0] = True
    mask = {"nm": full[0, 0], "1nm": full[0, :1], "b1nm": full[:, :1], "bhnm": full}[shape]
    if kind == "float":
        mask = torch.zeros(mask.shape).masked_fill(~mask, -1e9)
    want = dense_attention(q, k, v, mask)
    got = dense_attention(q, k, v, mask, softcap=1e6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dense_attention_refuses_a_mask_of_another_shape_or_dtype():
    from attnsieve.api import dense_attention

    q, k, v = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 11, 16), torch.randn(2, 2, 11, 16)
    for softcap in (None, 30.0):
        with pytest.raises(ValueError, match=r"^mask: expected a shape that broadcasts to"):
            dense_attention(q, k, v, torch.ones(7, 5, dtype=torch.bool), softcap=softcap)
        with pytest.raises(ValueError, match=r"^mask: expected a shape that broadcasts to"):
            dense_attention(q, k, v, torch.ones(1, 1, 1, 7, 11, dtype=torch.bool), softcap=softcap)
        with pytest.raises(TypeError, match=r"^mask: expected bool or q's dtype torch.float32"):
            dense_attention(q, k, v, torch.zeros(7, 11, dtype=torch.float64), softcap=softcap)
