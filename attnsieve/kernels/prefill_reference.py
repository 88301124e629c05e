"""Exact prefill attention in plain PyTorch: the twin of `attnsieve.kernels.prefill`, and the
oracle every kernel and planner is tested against.

Float32 throughout, chunked over queries so that the (rows × M) score tile stays within a memory
budget (32K × 32K with 32 heads fits in a few GB). GQA is computed by viewing the g query heads of
a KV group together; K/V are never repeated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.layout import Layout, causal_token_mask

_CHUNK_BYTES = 1 << 28


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

    Rows that see no key give output 0 and lse -inf. A hidden key contributes nothing whatever its
    values: a NaN or Inf in a K/V row reaches only the rows that see that key (as NaN, unless the
    key's logit is -inf: it then weighs 0, as in the kernel). Without
    ``return_lse`` the rows run through PyTorch SDPA with the token mask (same values, faster).
    """
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    g = h_q // h_kv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kf = k.float()[:, :, None]  # (B, H_kv, 1, M, D)
    vf = v.float()[:, :, None]
    # 0 · NaN is NaN in P·V: non-finite values are multiplied as 0 and flagged separately
    bad_v = ~torch.isfinite(vf).all(-1)  # (B, H_kv, 1, M)
    any_bad = bool(bad_v.any())
    if any_bad:
        vf = torch.where(bad_v[..., None], 0.0, vf)
    out = torch.empty(b, h_q, n, d, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, n, dtype=torch.float32, device=q.device) if return_lse else None
    # without lse, SDPA's masked path computes the same rows much faster; non-finite keys are
    # zeroed for it and the rows that see one are flagged, as for values, but where the key's
    # logit is -inf: it weighs 0 there (as in the kernel), so it is masked instead
    fused = not return_lse
    if fused:
        bad_k = ~torch.isfinite(kf).all(-1)  # (B, H_kv, 1, M)
        k_bad = torch.where(bad_k[..., None], kf, 0.0) if bool(bad_k.any()) else None
        bad = bad_v | bad_k
        kf = torch.where(bad[..., None], 0.0, kf)
    rows = max(1, _CHUNK_BYTES // (4 * max(b * h_q * m, 1) * 3))  # an empty batch: one chunk
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        visible = torch.ones(1, 1, 1, stop - start, m, dtype=torch.bool, device=q.device)
        if causal:
            visible = visible & causal_token_mask(n, m, start, stop, q.device)
        if layout is not None:
            visible = visible & _layout_rows(layout, start, stop, h_q, h_kv)
        if fused:
            visible = visible.expand(b, h_kv, g, -1, -1)
            if k_bad is not None:  # the logits of the non-finite keys (0 for the others)
                logits = _group_scores(q[:, :, start:stop], k_bad, h_kv) * scale
                visible = visible & (logits != -math.inf)
            mask = visible.reshape(b, h_q, stop - start, m)
            rows_out = F.scaled_dot_product_attention(
                q[:, :, start:stop].float(), kf[:, :, 0], vf[:, :, 0], attn_mask=mask,
                scale=scale, enable_gqa=g > 1,
            )  # fmt: skip
            rows_out = torch.where(mask.any(-1, keepdim=True), rows_out, 0.0)
            touched = (visible & bad[..., None, :]).any(-1, keepdim=True)  # (B, H_kv, g, rows, 1)
            touched = touched.expand(b, h_kv, g, -1, 1).reshape(b, h_q, stop - start, 1)
            out[:, :, start:stop] = torch.where(touched, math.nan, rows_out).to(q.dtype)
            continue
        scores = _group_scores(q[:, :, start:stop], kf, h_kv) * scale  # (B, H_kv, g, rows, M)
        scores = scores.masked_fill(~visible, -math.inf)
        row_lse = torch.logsumexp(scores, -1)  # -inf for a row without a visible key: probs 0
        probs = torch.exp(scores - row_lse.clamp(min=-1e30)[..., None])
        lse[:, :, start:stop] = row_lse.view(b, h_q, stop - start)
        # the g heads' rows stacked against one V: broadcasting V over g would copy it
        stacked = probs.reshape(b, h_kv, g * (stop - start), m)
        rows_out = (stacked @ vf[:, :, 0]).view(b, h_kv, g, stop - start, d)
        if any_bad:
            touched = ((probs > 0) & bad_v[..., None, :]).any(-1, keepdim=True)
            rows_out = torch.where(touched, math.nan, rows_out)
        out[:, :, start:stop] = rows_out.view(b, h_q, stop - start, d).to(q.dtype)
    return (out, lse) if return_lse else out


def _group_scores(q: Tensor, k: Tensor, h_kv: int) -> Tensor:
    """float32 (B, H_kv, g, rows, M) q·kᵀ of q (B, H_q, rows, D) against k (B, H_kv, 1, M, D): the
    g query heads of a KV head stacked as one (g·rows, D) matrix, since broadcasting k over g would
    copy it per call (two thirds of the reference's time at 256K keys)."""
    b, h_q, rows, d = q.shape
    g, m = h_q // h_kv, k.shape[-2]
    qc = q.float().reshape(b, h_kv, g * rows, d)
    return (qc @ k[:, :, 0].transpose(-1, -2)).view(b, h_kv, g, rows, m)


def _layout_rows(layout: Layout, start: int, stop: int, h_q: int, h_kv: int) -> Tensor:
    """Layout mask of rows [start, stop) shaped to broadcast against (B, H_kv, g, rows, M)."""
    mask = layout.mask_rows(start, stop)
    if layout.heads == h_q and h_q != h_kv:
        return mask.view(mask.shape[0], h_kv, h_q // h_kv, *mask.shape[2:])
    return mask[:, :, None]
