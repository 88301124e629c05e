"""`attnsieve.api.dense_attention`: its soft-capped path and its SDPA path agree on every input
both take (with a cap far above the scores, tanh is the identity to float32's precision)."""

import pytest
import torch

from attnsieve.api import attention, dense_attention
from attnsieve.kernels import INTERPRET


def _qkv(n: int, m: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shapes = ((4, n), (2, m), (2, m))
    return tuple(torch.randn(2, h, length, 16, generator=g) for h, length in shapes)


@pytest.mark.parametrize(("n", "m"), [(11, 7), (7, 7), (7, 11)])
def test_softcap_causal_is_top_left_aligned_like_sdpa(n, m):
    """With more queries than keys the soft-capped path aligned causality bottom-right (its first
    N - M rows saw no key and came out a uniform average) where SDPA's is_causal is top-left."""
    q, k, v = _qkv(n, m)
    want = dense_attention(q, k, v)
    got = dense_attention(q, k, v, softcap=1e6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [0, 1])
def test_mask_of_fewer_than_two_dims_runs_on_both_paths(dims):
    """A (M,) or 0-dim mask broadcasts to (B, H_q, N, M), so it is accepted; SDPA raised an
    IndexError on it."""
    q, k, v = _qkv(7, 11)
    keys = torch.ones(11, dtype=torch.bool)
    keys[3] = False
    mask = keys if dims == 1 else torch.tensor(True)
    want = dense_attention(q, k, v, keys.expand(7, 11) if dims == 1 else None, causal=False)
    for softcap in (None, 1e6):
        got = dense_attention(q, k, v, mask, causal=False, softcap=softcap)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_softcap_keeps_float64_precision():
    """float64 inputs: the soft-capped path computed its scores in float32."""
    q, k, v = (t.double() for t in _qkv(7, 11))
    want = dense_attention(q, k, v, causal=False)
    got = dense_attention(q, k, v, causal=False, softcap=1e9)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_softcap_reads_an_additive_mask_as_the_bool_mask_it_encodes():
    """0 / -inf additive masks soft-cap as their bool mask does, a fully masked (padding) row
    included: the additive path added -inf to every score of that row and returned NaN."""
    q, k, v = _qkv(7, 11)
    visible = torch.rand(7, 11, generator=torch.Generator().manual_seed(1)) > 0.4
    visible[2] = False
    additive = torch.zeros(7, 11).masked_fill(~visible, float("-inf"))
    want = dense_attention(q, k, v, visible, softcap=30.0)
    got = dense_attention(q, k, v, additive, softcap=30.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_pooled_block_probs_takes_strided_pooled_queries():
    """The reference merged the query heads of a GQA group with `view`, which a transposed
    q_pooled cannot take (the Triton path takes it)."""
    from attnsieve.api import pooled_block_probs

    kp = torch.randn(2, 2, 4, 32)
    qp = torch.randn(2, 4, 4, 32).transpose(1, 2).contiguous().transpose(1, 2)
    sizes = dict(num_queries=64, num_keys=64, block_q=16, block_k=16, backend="reference")
    want = pooled_block_probs(qp.contiguous(), kp, **sizes)
    torch.testing.assert_close(pooled_block_probs(qp, kp, **sizes), want)


@pytest.mark.skipif(not INTERPRET, reason="Triton on CPU tensors: TRITON_INTERPRET=1 only")
def test_forward_only_paths_refuse_inputs_that_require_a_gradient():
    """The Triton kernels and the quantised path compute no gradient: their outputs came back
    without one, silently. The reference backend's carry one; under no_grad all of them run."""
    q, k, v = (torch.randn(1, 2, 64, 32, dtype=torch.float16) for _ in range(3))
    for backend, precision in (("triton", "bf16"), ("reference", "int8-fp8")):
        with pytest.raises(ValueError, match="^q: requires a gradient, but .* is forward-only"):
            attention(q.requires_grad_(), k, v, backend=backend, precision=precision)
        with torch.no_grad():
            attention(q, k, v, backend=backend, precision=precision)
    out = attention(q.float(), k.float(), v.float().requires_grad_(), backend="reference")
    assert out.requires_grad


@pytest.mark.parametrize(("backend", "precision"), [("triton", "bf16"), ("reference", "int8-fp8")])
def test_forward_only_refusals_name_the_inputs_that_require_a_gradient(backend, precision):
    """The refusal named q whichever input required the gradient."""
    qkv = {name: torch.randn(1, 2, 64, 32, dtype=torch.float16) for name in "qkv"}
    for wanting, names in (("k", "k: requires"), ("kv", "k, v: require")):
        inputs = {name: t.detach().requires_grad_(name in wanting) for name, t in qkv.items()}
        with pytest.raises(ValueError, match=f"^{names} a gradient, but .* is forward-only"):
            attention(**inputs, backend=backend, precision=precision)


@pytest.mark.skipif(not INTERPRET, reason="Triton on CPU tensors: TRITON_INTERPRET=1 only")
def test_block_mean_pool_qk_returns_a_tuple_on_both_backends():
    """The Triton launcher returned a list where the twin (and the annotation) give a tuple."""
    from attnsieve.api import block_mean_pool_qk

    q, k = torch.randn(1, 4, 37, 32).half(), torch.randn(1, 2, 37, 32).half()
    want = block_mean_pool_qk(q, k, block_q=16, block_k=16, backend="reference")
    got = block_mean_pool_qk(q, k, block_q=16, block_k=16, backend="triton")
    assert type(want) is tuple and type(got) is tuple
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
