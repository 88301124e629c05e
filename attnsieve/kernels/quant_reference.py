"""The plain-PyTorch twin of `attnsieve.kernels.quant`: the same quantisation
(`attnsieve.kernels.quantize_reference`), then attention on the quantised values in float32.

It quantises exactly as the kernels do (same blocks, scales, rounding, non-finite handling),
and walks each query block's key tiles in the kernel's order with the same online softmax, because
P's FP8 rounding depends on the running row maximum when a tile is folded in. Kernel and twin
therefore differ only by floating-point summation order (and exp2's last bits on the GPU).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.kernels.quant import LOG2_FP8_MAX, LOG2E, check_quant_inputs, quant_tiles
from attnsieve.kernels.quantize_reference import (
    quantize_kv_reference,
    quantize_q_reference,
    round_fp8,
)
from attnsieve.layout import Layout


def quant_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Twin of `attnsieve.kernels.quant.quant_attention` (same arguments and results)."""
    check_quant_inputs(
        q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out, kernel=False
    )
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    block_m, block_n = quant_tiles(layout)
    if q.numel() == 0 or m == 0:  # as the kernel: every row (if any) is empty, 0 and lse -inf
        o = torch.zeros_like(q)
        out = o if out is None else out.copy_(o)
        return (out, torch.full((b, h_q, n), -math.inf, device=q.device)) if return_lse else out
    q8, q_scale, q_bad = quantize_q_reference(q, block_m)
    z = quantize_kv_reference(k, v, block_n=block_n)
    if layout is None:  # the kernel's dense walk: every BLOCK_N tile in order
        layout = Layout.dense(n, m, block_q=block_m, block_k=block_n, causal=False, device=q.device)
    qk_scale = (1.0 / math.sqrt(d) if scale is None else float(scale)) * LOG2E
    # per query row: its tile's Q scale, folded with the softmax scale as the kernel does
    q_scale = (q_scale * qk_scale).repeat_interleave(block_m, -1)[..., :n]  # (B, H_q, N)
    k_scale = z.k_scale.repeat_interleave(block_n, -1)[..., :m]  # (B, H_kv, M)
    qf, kf, vf = q8.float(), z.k.float(), z.v_t.float().mT  # (B, H_kv, M, D)
    i_b = torch.arange(b, device=q.device)[:, None, None]
    i_kv = (torch.arange(h_q, device=q.device) // (h_q // h_kv))[None, :, None]
    heads = layout.heads_for(h_q, h_kv)
    batch = (
        torch.arange(b, device=q.device) if layout.batch == b else torch.zeros_like(i_b[:, 0, 0])
    )

    acc = torch.zeros(b, h_q, n, d, device=q.device)
    row_l = torch.zeros(b, h_q, n, device=q.device)
    row_m = torch.full((b, h_q, n), -math.inf, device=q.device)
    bad = torch.zeros(b, h_q, n, dtype=torch.bool, device=q.device)
    for qb in range(layout.num_q_blocks):
        rows = slice(qb * layout.block_q, min(n, (qb + 1) * layout.block_q))
        pos = torch.arange(rows.start, rows.stop, device=q.device) + (m - n)
        state = acc[:, :, rows], row_l[:, :, rows], row_m[:, :, rows], bad[:, :, rows]
        for keys, valid in _key_tiles(layout, qb, batch, heads, block_n):
            keys = keys.clamp(0, m - 1)
            visible = valid[:, :, None, :]
            if causal:
                visible = visible & (keys[:, :, None, :] <= pos[:, None])
            state = _fold_tile(
                state,
                qf[:, :, rows],
                kf[i_b, i_kv, keys],
                vf[i_b, i_kv, keys] * valid[..., None],
                q_scale[:, :, rows, None] * k_scale[i_b, i_kv, keys][:, :, None, :],
                z.kv_bad[i_b, i_kv, keys] != 0,
                visible,
            )
        acc[:, :, rows], row_l[:, :, rows], row_m[:, :, rows], bad[:, :, rows] = state

    empty = row_l == 0
    bad |= (q_bad != 0) & ~empty
    kv_head = i_kv[0, :, 0]
    o = acc / torch.where(empty, 1.0, row_l)[..., None] * z.v_scale[:, kv_head, None]
    o = torch.where(bad[..., None], math.nan, o).to(q.dtype)
    out = o if out is None else out.copy_(o)
    if not return_lse:
        return out
    # K smoothing's shift, from q as given (as the kernels: not from its INT8 rounding)
    shift = (q.float() * z.k_mean[:, kv_head, None, :]).sum(-1) * qk_scale
    lse = row_m + torch.log2(torch.where(empty, 1.0, row_l)) - LOG2_FP8_MAX + shift
    lse = lse * math.log(2)
    lse = torch.where(empty, -math.inf, lse)
    return out, torch.where(bad, math.nan, lse)


def _key_tiles(layout: Layout, qb: int, batch: Tensor, heads: Tensor, block_n: int):
    """Key tokens (B, H_q, BLOCK_N) and their validity, tile by tile in the kernel's order: the
    listed blocks cut into BLOCK_N tiles, then the columns BLOCK_N at a time, then each span
    BLOCK_N keys at a time from its start. A tile with no valid key is a no-op: rows that walk
    fewer tiles (shorter spans, the kernel's stop at the causal limit) fold the same ones."""
    offs = torch.arange(block_n, device=layout.device)
    idx = layout.block_idx[batch][:, heads, qb].long()  # (B, H_q, width)
    count = layout.block_count[batch][:, heads, qb]
    for j in range(idx.shape[-1]):
        for sub in range(layout.block_k // block_n):
            keys = idx[..., j, None] * layout.block_k + sub * block_n + offs
            yield keys, (j < count)[..., None] & (keys < layout.num_keys)
    if layout.has_columns:
        cols = layout.column_idx[batch][:, heads, qb].long()
        c_count = layout.column_count[batch][:, heads, qb]
        for start in range(0, cols.shape[-1], block_n):
            keys = cols[..., start : start + block_n]
            yield keys, (start + offs[: keys.shape[-1]]) < c_count[..., None]
    if layout.has_spans:
        s_lo = layout.span_start[batch][:, heads, qb].long()  # (B, H_q, S)
        s_hi = layout.span_end[batch][:, heads, qb].long()
        live = (
            torch.arange(s_lo.shape[-1], device=layout.device)
            < layout.span_count[batch][:, heads, qb, None]
        )
        s_hi = torch.where(live, s_hi, s_lo)  # padding slots: empty
        for j in range(s_lo.shape[-1]):
            longest = int((s_hi[..., j] - s_lo[..., j]).clamp(min=0).max())
            for start in range(0, longest, block_n):
                keys = s_lo[..., j, None] + start + offs
                yield keys, keys < s_hi[..., j, None]


def _fold_tile(state, q, k, v, score_scale, k_bad, visible):
    """One key tile into the running softmax of rows ``q`` (B, H_q, R, D): the kernel's steps."""
    acc, row_l, row_m, bad = state
    s = torch.where(visible, (q @ k.mT) * score_scale, -math.inf)  # integer dot: exact in fp32
    m_new = torch.maximum(row_m, s.amax(-1))
    m_sub = torch.where(m_new == -math.inf, 0.0, m_new)
    p = torch.exp2(s - (m_sub - LOG2_FP8_MAX)[..., None])  # P x 448, as the kernel
    alpha = torch.exp2(row_m - m_sub)
    row_l = row_l * alpha + p.sum(-1)
    p8 = round_fp8(p).float()
    acc = acc * alpha[..., None] + p8 @ v
    bad = bad | (visible & k_bad[:, :, None, :]).any(-1)
    return acc, row_l, m_new, bad
