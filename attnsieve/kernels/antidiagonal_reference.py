"""Plain-PyTorch twin of `attnsieve.kernels.antidiagonal`: what runs on CPU, with the kernel's
signature and exact semantics, in float32. The strided XAttention scores are built a chunk of rows
at a time: memory stays O(N·D + N·M/S²) per chunk, never O(N·M). Positions are bottom-right
aligned: query ``i`` of ``N`` sits at absolute position ``M - N + i``; GQA query head ``h`` reads
KV head ``h // (H_q // H_kv)`` through a view, K is never repeated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.checks import cdiv

_CHUNK_ELEMENTS = 1 << 26  # score elements per chunk of strided rows (256 MiB of float32)


def antidiagonal_block_scores(
    q: Tensor,
    k: Tensor,
    *,
    stride: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
) -> Tensor:
    """float32 (B, H_q, QB, KB): XAttention's strided antidiagonal block scores (arXiv 2503.16428).

    Queries and keys are cut into groups of ``stride`` tokens; strided row r pairs query group r
    read backwards with key group c read forwards, so its score is the sum over one antidiagonal
    of the (r, c) tile: ``sum_t q[r·S + S-1-t] · k[c·S + t] · scale / S`` (tokens past N or M count
    as zero). Every row is softmax-normalised over the key groups it sees (with ``causal``, group c
    is visible iff its first key is at or before the row's last query), and the probabilities are
    summed per (query block, key block), so a full query block's row sums to ``block_q / stride``.
    ``stride`` must divide ``block_q`` and ``block_k``.
    """
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    g = h_q // h_kv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows, cols = cdiv(n, stride), cdiv(m, stride)
    # reshaped Q: row r = [q[rS+S-1], ..., q[rS]]; reshaped K: column c = [k[cS], ..., k[cS+S-1]]
    q_r = torch.nn.functional.pad(q.float(), (0, 0, 0, rows * stride - n))
    q_r = q_r.reshape(b, h_q, rows, stride, d).flip(3).reshape(b, h_kv, g, rows, stride * d)
    k_r = torch.nn.functional.pad(k.float(), (0, 0, 0, cols * stride - m))
    k_r = k_r.reshape(b, h_kv, 1, cols, stride * d)
    row_block = torch.arange(rows, device=q.device) * stride // block_q
    col_block = torch.arange(cols, device=q.device) * stride // block_k
    qb, kb = cdiv(n, block_q), cdiv(m, block_k)
    out = torch.zeros(b, h_kv, g, qb, kb, device=q.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * h_q * cols))
    for r0 in range(0, rows, chunk):
        r = torch.arange(r0, min(rows, r0 + chunk), device=q.device)
        s = (q_r[..., r, :] @ k_r.transpose(-1, -2)) * (scale / stride)
        if causal:
            pos = torch.clamp(r * stride + stride - 1, max=n - 1) + (m - n)
            s = s.masked_fill(
                torch.arange(cols, device=q.device)[None, :] * stride > pos[:, None], -math.inf
            )
        p = s.softmax(-1).nan_to_num(0.0)
        per_kb = torch.zeros(*p.shape[:-1], kb, device=q.device).index_add_(-1, col_block, p)
        out.index_add_(3, row_block[r], per_kb)
    return out.view(b, h_q, qb, kb)
