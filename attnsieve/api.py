"""`attnsieve.attention`: one entry point that picks the backend for the tensors' device."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from attnsieve.layout import Layout
from attnsieve.reference import attention_reference, check_qkv

BACKENDS = ("auto", "triton", "reference")


def resolve_backend(backend: str | None, device_type: str) -> str:
    """'triton' or 'reference' for a device: the argument, else $ATTNSIEVE_BACKEND, else auto."""
    choice = backend or os.environ.get("ATTNSIEVE_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {choice!r}")
    if choice == "auto":
        return "triton" if device_type == "cuda" else "reference"
    return choice


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of q (B, H_q, N, D) over k, v (B, H_kv, M, D), restricted to ``layout`` if given.

    ``layout=None`` is dense attention. Causal masking is bottom-right aligned. On CUDA the Triton
    kernel runs (a dense causal layout with N == M and no lse goes to PyTorch SDPA's cuDNN / flash
    backends, which are faster); on CPU the exact reference runs, except dense float32 work
    without lse (causal only when N == M), which PyTorch SDPA does faster. ``backend``
    ("auto", "triton", "reference") or $ATTNSIEVE_BACKEND forces one; "triton" on CPU needs
    TRITON_INTERPRET=1 set before triton is imported.
    """
    check_qkv(q, k, v)
    if resolve_backend(backend, q.device.type) == "reference":
        # SDPA's causal mask is top-left aligned: it equals ours only when N == M
        dense = layout is None or (layout.is_dense and causal)
        plain = dense and not return_lse and (not causal or q.shape[2] == k.shape[2])
        if plain and q.dtype in (torch.float32, torch.float64):
            if layout is not None:
                layout.check_inputs(q, k)
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
            )
        return attention_reference(
            q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse
        )
    from attnsieve.kernels.prefill import sparse_attention

    if layout is None:
        layout = Layout.dense(q.shape[2], k.shape[2], causal=causal, device=q.device)
    return sparse_attention(q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse)
