"""Prefill attention: over a `Layout` (`attention`) and dense with transformers' conventions
(`dense_attention`). See `attnsieve.api` for the backends."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.api.backend import FLOAT, check_forward_only, resolve_backend
from attnsieve.checks import (
    check_bool,
    check_dtype,
    check_float,
    check_out,
    check_qkv,
    check_scale,
    check_storage,
)
from attnsieve.kernels import check_triton_device
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout, causal_token_mask, check_layout

PRECISIONS = ("bf16", "int8-fp8")
_CHUNK_ELEMENTS = 1 << 24  # score elements per chunk of the soft-capping path


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
    precision: str = "bf16",
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of q (B, H_q, N, D) over k, v (B, H_kv, M, D), restricted to ``layout`` if given.

    Args:
        q, k, v: one dtype (float16, bfloat16 or float32) and device; H_q a multiple of H_kv
            (native GQA, K/V never repeated); any N and M, any strides. The Triton backend takes
            float16 / bfloat16 with D a power of two in [16, 256] and unit stride on D;
            int8-fp8 (either backend) D a power of two in [32, 256].
        layout: the key blocks (and columns, spans) each query block computes; None is dense.
            Block sizes: powers of two in [16, 128] on the Triton backend and at int8-fp8
            (there block_k >= 32).
        causal: bottom-right aligned (query i sits at key position M - N + i = query_offset + i).
        scale: softmax scale, default 1/sqrt(D); a positive finite number.
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q, N).
        out: optional (B, H_q, N, D) buffer of q's dtype written in place (any strides with a
            unit last one on the Triton backend, e.g. a transposed view of a (B, N, H_q, D)
            tensor); returned.
        precision: "bf16" (inputs' precision) or "int8-fp8" (SageAttention2-style INT8 Q·Kᵀ and
            FP8 P·V; the reference twin quantises identically and computes in float32).
        backend: see `attnsieve.api`.

    Rows that see no key give 0 and lse -inf. Keys that the layout or causality hides never
    contribute, whatever their values, on every backend (with int8-fp8 their finite values still
    set the quantisation scales of the keys a row sees: `attnsieve.kernels.quant`). A dense
    causal layout with N == M and no lse runs PyTorch SDPA (cuDNN / flash) on CUDA, faster than
    the Triton kernel on dense work; SDPA propagates a NaN in a hidden key (see README, "Use").
    """
    check_qkv(q, k, v)
    # the reference computes in float32: a float64 input would be cast silently, float8 rounded
    check_dtype("q", q, FLOAT)
    check_scale(scale)
    check_bool("causal", causal)
    check_bool("return_lse", return_lse)
    check_layout(layout, q, k, optional=True)
    if out is not None:
        check_out(out, q, q=q, k=k, v=v)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    use = resolve_backend(backend, q)
    check_forward_only(use, precision, q=q, k=k, v=v)
    if precision == "int8-fp8":
        if use == "reference":
            from attnsieve.kernels.quant_reference import quant_attention_reference as run
        else:
            from attnsieve.kernels.quant import quant_attention as run
        return run(q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out)
    # no Layout has an empty side: empty calls (0 rows, or rows that see no key: 0 and lse -inf)
    # take the reference on every backend, once the Triton backend has checked its device
    empty = layout is None and 0 in (q.shape[2], k.shape[2])
    if use == "triton" and empty:
        check_triton_device("q", q)
    if use == "reference" or empty:
        result = attention_reference(
            q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse
        )
        if return_lse:
            return _into(out, result[0]), result[1]
        return _into(out, result)
    from attnsieve.kernels.prefill import sparse_attention

    if layout is None:
        layout = Layout.dense(q.shape[2], k.shape[2], causal=causal, device=q.device)
    return sparse_attention(
        q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out
    )


def _into(out: Tensor | None, result: Tensor) -> Tensor:
    if out is None:
        return result
    return out.copy_(result)


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
) -> Tensor:
    """Dense attention with transformers' "sdpa" conventions, (B, H_q, N, D).

    q (B, H_q, N, D) and k, v (B, H_kv, M, D) share one float dtype (float16, bfloat16, float32
    or float64) and device, H_q a multiple of H_kv (native GQA); ``scale`` defaults to 1/sqrt(D);
    ``dropout`` in [0, 1] applies whenever it is above 0 (pass 0 at inference).
    ``mask`` is None or a bool (True = attend) / additive float mask of q's dtype broadcasting to
    (B, H_q, N, M); ``causal`` applies only without a mask, top-left aligned as in SDPA (keys past
    N are empty static-cache slots and are dropped). ``softcap`` is Gemma-2's tanh logit
    soft-capping, computed chunked over queries (no N × M score tensor). Causal attention without
    a mask on CUDA half tensors runs SDPA's cuDNN backend first (`kernels.prefill.sdpa_dense`).
    """
    check_qkv(q, k, v)
    check_dtype("q", q, (*FLOAT, torch.float64))  # SDPA's dtypes
    check_scale(scale)
    check_bool("causal", causal)
    check_float("dropout", dropout, 0.0, 1.0)
    check_scale(softcap, "softcap")  # inf would be tanh(0) * inf = NaN, not "no capping"
    if mask is not None and (
        not isinstance(mask, Tensor)
        or mask.dtype.is_complex
        or not (mask.dtype == torch.bool or mask.is_floating_point())
    ):
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected None, a bool or an additive float tensor, got {got}")
    b, h_q, n, m = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if mask is not None:
        if mask.dtype not in (torch.bool, q.dtype):  # SDPA's rule, on both paths
            raise TypeError(f"mask: expected bool or q's dtype {q.dtype}, got {mask.dtype}")
        if mask.device != q.device:
            raise ValueError(f"mask: expected q's device {q.device}, got {mask.device}")
        check_storage("mask", mask)
        full = (b, h_q, n, m)
        try:
            fits = mask.dim() <= 4 and torch.broadcast_shapes(mask.shape, full) == full
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"mask: expected a shape that broadcasts to (B, H_q, N, M) = {full}, got "
                f"{tuple(mask.shape)}"
            )
        mask = mask[(None,) * (4 - mask.dim())]  # SDPA takes no mask of fewer than 2 dims
    causal = mask is None and n > 1 and causal
    if causal and m > n:
        k, v = k[:, :, :n], v[:, :, :n]
    if causal and dropout == 0 and softcap is None:
        from attnsieve.kernels.prefill import sdpa_dense, sdpa_serves

        if sdpa_serves(q, k, v):
            return sdpa_dense(q, k, v, 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    gqa = q.shape[1] != k.shape[1]
    if softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale,
            enable_gqa=gqa,
        )  # fmt: skip
    if mask is not None:  # a view: one indexing in the chunks for every accepted shape
        mask = mask.expand(b, h_q, n, m)
    return _softcap_attention(q, k, v, mask, scale, dropout, softcap, causal)


def _softcap_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    scale: float | None,
    dropout: float,
    softcap: float,
    causal: bool,
) -> Tensor:
    """Gemma-2 attention (tanh logit soft-capping) chunked over queries; GQA through views."""
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kt = k[:, :, None].transpose(-1, -2)  # (B, H_kv, 1, D, M)
    out = torch.empty(b, h_q, n, d, dtype=q.dtype, device=q.device)
    rows = max(1, _CHUNK_ELEMENTS // max(b * h_q * m, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        qc = q[:, :, start:stop].unflatten(1, (h_kv, h_q // h_kv))  # (B, H_kv, g, rows, D)
        scores = (qc @ kt).to(torch.promote_types(q.dtype, torch.float32))  # float64 stays
        scores = torch.tanh(scores * (scale / softcap)) * softcap
        if mask is not None:
            visible = mask[:, :, start:stop].unflatten(1, (h_kv, h_q // h_kv))
        elif causal:  # top-left aligned as SDPA's is_causal (here m <= n: longer K was cut)
            visible = causal_token_mask(n, n, start, stop, q.device)[:, :m]
        else:
            visible = None
        # finfo.min, not -inf: fully masked (padding) rows stay finite, under either kind of mask
        if visible is not None and visible.dtype != torch.bool:  # an additive float mask
            scores = scores + visible.clamp(min=torch.finfo(visible.dtype).min)
        elif visible is not None:
            scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(-1).to(q.dtype), p=dropout, training=dropout > 0)
        out[:, :, start:stop] = (probs @ v[:, :, None]).flatten(1, 2)
    return out
