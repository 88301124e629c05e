"""Operator fidelity of a layout: attention mass it keeps (recall) and output error versus dense.

Both are computed blockwise, never with N × M memory. Recall uses the log-sum-exps: the softmax
mass that row i puts on the layout's keys is exp(lse_layout_i - lse_dense_i), since both sums
share the same logits. Both passes run where `attnsieve.api` sends them (the Triton kernel for
half-precision CUDA inputs, seconds at 128K; the exact float32 reference elsewhere); ``backend``
forces one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.api import attention
from attnsieve.checks import check_index
from attnsieve.layout import Layout


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense (output, lse) on the backend the metrics use: computed once, reused for many layouts
    through the ``dense_lse`` / ``dense_out`` arguments of `attention_recall` and `output_error`."""
    return attention(q, k, v, causal=causal, scale=scale, return_lse=True, backend=backend)


def attention_recall(
    q: Tensor,
    k: Tensor,
    layout: Layout,
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str | None = None,
    dense_lse: Tensor | None = None,
    layout_lse: Tensor | None = None,
) -> Tensor:
    """float32 (B, H_q): mean over query rows of the dense attention mass that ``layout`` covers.

    q is (B, H_q, N, D), k (B, H_kv, M, D). 1 means the layout keeps every visible key with weight;
    an empty layout gives 0. Rows that see no key at all (the first N - M rows when N > M under
    causality) have no mass to recall and are left out of the mean; the last row always sees keys.
    A row whose attention is NaN (a NaN or inf in q or k) makes its head's recall NaN.
    ``dense_lse`` (B, H_q, N), from `dense_attention`, saves recomputing dense attention;
    ``layout_lse`` (B, H_q, N), from ``attention(q, k, v, layout, return_lse=True)``, the layout's
    (a caller that wants that attention's output too computes it once).
    """
    for name, lse in (("dense_lse", dense_lse), ("layout_lse", layout_lse)):
        if lse is not None:
            check_index(name, lse, tuple(q.shape[:3]), torch.float32, q.device)
    # Values do not change the lse: k stands in for v so attention can be reused unchanged.
    if dense_lse is None:
        dense_lse = dense_attention(q, k, k, causal=causal, scale=scale, backend=backend)[1]
    sparse = layout_lse
    if sparse is None:
        _, sparse = attention(
            q, k, k, layout, causal=causal, scale=scale, return_lse=True, backend=backend
        )
    no_keys = dense_lse == -math.inf
    kept = torch.exp(sparse - dense_lse.masked_fill(no_keys, 0.0)).clamp(max=1.0)
    # a NaN or +inf lse (a NaN or inf in q or k) makes the recall NaN; it was left out as a row
    # without keys, and a head with one such row read a recall of 1
    kept = kept.masked_fill(dense_lse.isnan() | (dense_lse == math.inf), math.nan)
    return kept.masked_fill(no_keys, 0.0).sum(-1) / (~no_keys).sum(-1)


def output_error(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout,
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str | None = None,
    dense_out: Tensor | None = None,
    precision: str = "bf16",
) -> dict[str, Tensor | float]:
    """Error of layout-restricted attention against dense attention, per (batch, query head).

    Returns ``rel_l2`` float32 (B, H_q): |O_layout - O_dense|_F / |O_dense|_F over the (N, D)
    output of each head (0 where both are 0); ``cosine`` (B, H_q): cosine similarity of the
    flattened outputs; and their means ``rel_l2_mean`` and ``cosine_mean`` as floats.
    ``dense_out`` (B, H_q, N, D), from `dense_attention` or a float32 reference, saves recomputing
    dense attention. ``precision`` runs the layout's attention at that precision ("int8-fp8").
    """
    if dense_out is None:
        dense_out = attention(q, k, v, causal=causal, scale=scale, backend=backend)
    elif dense_out.shape != q.shape[:3] + v.shape[3:]:
        raise ValueError(
            f"dense_out: expected shape {tuple(q.shape[:3] + v.shape[3:])}, "
            f"got {tuple(dense_out.shape)}"
        )
    dense = dense_out.float().flatten(2)
    sparse = attention(
        q, k, v, layout, causal=causal, scale=scale, backend=backend, precision=precision
    )
    sparse = sparse.float().flatten(2)
    diff = (sparse - dense).norm(dim=-1)
    norm = dense.norm(dim=-1)
    unbounded = torch.where(diff > 0, torch.inf, 0.0)  # dense output 0: any error is infinite
    rel = torch.where(norm > 0, diff / norm.clamp(min=torch.finfo(norm.dtype).tiny), unbounded)
    cosine = torch.nn.functional.cosine_similarity(sparse, dense, dim=-1)
    return {
        "rel_l2": rel,
        "cosine": cosine,
        "rel_l2_mean": float(rel.mean()),
        "cosine_mean": float(cosine.mean()),
    }
