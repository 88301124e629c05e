"""Exact attention in plain PyTorch: the oracle every kernel and planner is tested against.

Float32 throughout, chunked over queries so that the (rows × M) score tile stays within a memory
budget (32K × 32K with 32 heads fits in a few GB). GQA is computed by viewing the g query heads of
a KV group together; K/V are never repeated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.layout import Layout, causal_token_mask

_CHUNK_BYTES = 1 << 28


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def check_float(name: str, value: object, low: float, high: float) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")


def check_qk(q: Tensor, k: Tensor) -> None:
    """Raise unless q is (B, H_q, N, D) and k (B, H_kv, M, D) of one float dtype and device, with
    H_q a multiple of H_kv: the contract of every attention and planning entry point."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name}: expected 4 dims (batch, heads, seq, head_dim), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if q.dtype != k.dtype:
        raise TypeError(f"q, k: expected one dtype, got {q.dtype} and {k.dtype}")
    if q.device != k.device:
        raise ValueError(f"q, k: expected one device, got {q.device} and {k.device}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q, k: batch sizes differ ({q.shape[0]} vs {k.shape[0]})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q, k: head_dim differs ({q.shape[-1]} vs {k.shape[-1]})")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"q, k: H_q={q.shape[1]} must be a multiple of H_kv={k.shape[1]}")


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """`check_qk` plus v: same shape, dtype and device as k."""
    check_qk(q, k)
    if not isinstance(v, Tensor):
        raise TypeError(f"v: expected a torch.Tensor, got {type(v).__name__}")
    if v.dtype != k.dtype:
        raise TypeError(f"k, v: expected one dtype, got {k.dtype} and {v.dtype}")
    if v.device != k.device:
        raise ValueError(f"k, v: expected one device, got {k.device} and {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes, got {tuple(k.shape)} and {tuple(v.shape)}")


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Exact (optionally layout-restricted) attention.

    Args:
        q: (B, H_q, N, D); k, v: (B, H_kv, M, D) with H_q a multiple of H_kv.
        layout: keys each query block may see; None means all keys.
        causal: bottom-right aligned causal mask (query i sits at position M - N + i).
        scale: softmax scale, default 1/sqrt(D).
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q, N).

    Rows that see no key give output 0 and lse -inf.
    """
    check_qkv(q, k, v)
    if layout is not None:
        layout.check_inputs(q, k)
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    g = h_q // h_kv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kf = k.float()[:, :, None]  # (B, H_kv, 1, M, D)
    vf = v.float()[:, :, None]
    out = torch.empty(b, h_q, n, d, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, n, dtype=torch.float32, device=q.device) if return_lse else None
    rows = max(1, _CHUNK_BYTES // (4 * b * h_q * max(m, 1) * 3))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        qc = q[:, :, start:stop].float().view(b, h_kv, g, stop - start, d)
        scores = (qc @ kf.transpose(-1, -2)) * scale  # (B, H_kv, g, rows, M)
        visible = torch.ones(1, 1, 1, stop - start, m, dtype=torch.bool, device=q.device)
        if causal:
            visible = visible & causal_token_mask(n, m, start, stop, q.device)
        if layout is not None:
            visible = visible & _layout_rows(layout, start, stop, h_q, h_kv)
        scores = scores.masked_fill(~visible, -math.inf)
        if return_lse:
            row_lse = torch.logsumexp(scores, -1)
            probs = torch.exp(scores - row_lse.clamp(min=-1e30)[..., None])
            lse[:, :, start:stop] = row_lse.view(b, h_q, stop - start)
        else:  # one fused pass; rows without a visible key come out NaN and are zeroed below
            probs = scores.softmax(-1)
        rows_out = probs @ vf
        if not return_lse:
            rows_out = torch.where(visible.any(-1, keepdim=True), rows_out, 0.0)
        out[:, :, start:stop] = rows_out.view(b, h_q, stop - start, d).to(q.dtype)
    return (out, lse) if return_lse else out


def _layout_rows(layout: Layout, start: int, stop: int, h_q: int, h_kv: int) -> Tensor:
    """Layout mask of rows [start, stop) shaped to broadcast against (B, H_kv, g, rows, M)."""
    mask = layout.mask_rows(start, stop)
    if layout.heads == h_q and h_q != h_kv:
        return mask.view(mask.shape[0], h_kv, h_q // h_kv, *mask.shape[2:])
    return mask[:, :, None]
