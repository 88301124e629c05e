"""XAttention's strided antidiagonal block scores in Triton (arXiv 2503.16428): softmax per strided
row, summed per (query block, key block); one pass over K per tile of strided rows plus a cheap
reduction.

The twin of the same name and signature is
`attnsieve.kernels.antidiagonal_reference.antidiagonal_block_scores`, which defines the
semantics; `attnsieve.api` picks between them and checks the arguments (the launcher trusts its
callers). Scores are kept in base 2 inside the kernels (log2(e) folded into the scale).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import INTERPRET, check_interpreter_dots, check_triton_device, tune_timing
from attnsieve.kernels.prefill import LOG2E, unit_last

# the per-(strided row, key block) scratch is split over launches beyond this size
_SCRATCH_BYTES = 1 << 30

# fmt: off


def _antidiag_configs() -> list[triton.Config]:
    if INTERPRET:  # the smallest tile that holds the blocks is kept (`_keep_antidiag`): one config
        return [triton.Config({"BLOCK_R": r, "BLOCK_C": c}, num_warps=4)
                for r in (16, 32, 64, 128) for c in (32, 64, 128)]
    return [
        triton.Config({"BLOCK_R": r, "BLOCK_C": c}, num_warps=w, num_stages=s)
        for r, c, w, s in ((64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (64, 128, 4, 2),
                           (64, 64, 4, 1), (128, 128, 8, 1))
    ]


def _keep_antidiag(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    # a row tile must hold whole query blocks and a key tile whole key blocks (reshape-reduce)
    rq, rb = kwargs["RQ"], kwargs["RB"]
    kept = [c for c in configs if c.kwargs["BLOCK_R"] % rq == 0 and c.kwargs["BLOCK_C"] % rb == 0]
    if not kept:
        raise ValueError(
            f"stride: blocks of {rq} x {rb} strided rows / columns exceed the tiles (at most 128 "
            "each: block_q / stride and block_k / stride)"
        )
    # the interpreter times nothing: one config, so the autotuner runs it without a benchmark (a
    # 16-row tile under a larger block read scratch its causal end left unwritten)
    return kept[:1] if INTERPRET else kept


@triton.autotune(configs=_antidiag_configs(), key=["STRIDE", "HEAD_DIM", "RQ", "RB", "CAUSAL"],
                 prune_configs_by={"early_config_prune": _keep_antidiag}, do_bench=tune_timing)
@triton.jit
def _antidiag_lse_kernel(
    Q, K, LSE_RB, LSE_R, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_xb, stride_xh, stride_xr, stride_yb, stride_yh, H_Q, GROUP, N, M, R, C, KB, ROW0,
    qk_scale,
    STRIDE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, RQ: tl.constexpr,
    RB: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Per strided row: log-sum-exp (base 2) of its scores within every key block, and overall.
    The launch covers strided rows [ROW0, R); the scratch holds them from ROW0 on."""
    i_bh, i_r = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_r = ROW0 + i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    m_r = o_r < R
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    p_q = Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    p_k = K + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    o_pos = M - N + tl.minimum(o_r * STRIDE + STRIDE - 1, N - 1)  # last query of each strided row
    c_end = C
    if CAUSAL:
        last = M - N + tl.minimum(tl.minimum(ROW0 + i_r * BLOCK_R + BLOCK_R, R) * STRIDE, N) - 1
        c_end = tl.where(last >= 0, tl.minimum(C, last // STRIDE + 1), 0)
    b_m = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_R], dtype=tl.float32)
    p_x = LSE_RB + i_b.to(tl.int64) * stride_xb + i_h.to(tl.int64) * stride_xh
    p_x = p_x + (o_r - ROW0).to(tl.int64)[:, None] * stride_xr
    for c0 in range(0, c_end, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        b_s = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
        # a runtime loop, not unrolled: unrolling keeps STRIDE q/k tiles per pipeline stage in
        # shared memory (787 KB at stride 8 on an H100, over its 227 KB)
        for t in range(STRIDE):  # one antidiagonal of every (row, column) S×S tile
            o_qn = o_r * STRIDE + (STRIDE - 1 - t)
            o_kn = o_c * STRIDE + t
            b_q = tl.load(p_q + o_qn.to(tl.int64)[:, None] * stride_qn + o_d[None, :],
                          mask=(o_qn < N)[:, None] & m_d[None, :], other=0.0)
            b_k = tl.load(p_k + o_kn.to(tl.int64)[:, None] * stride_kn + o_d[None, :],
                          mask=(o_kn < M)[:, None] & m_d[None, :], other=0.0)
            b_s = tl.dot(b_q, tl.trans(b_k), b_s)  # [BLOCK_R, BLOCK_C]
        m_s = m_r[:, None] & (o_c < C)[None, :]
        if CAUSAL:
            m_s = m_s & (o_c[None, :] * STRIDE <= o_pos[:, None])
        b_s = tl.where(m_s, b_s * qk_scale, float("-inf"))
        # the tile holds BLOCK_C // RB whole key blocks: reduce each to a log-sum-exp
        b_s3 = tl.reshape(b_s, (BLOCK_R, BLOCK_C // RB, RB))
        b_mb = tl.max(b_s3, 2)  # [BLOCK_R, BLOCK_C // RB]
        b_mb_sub = tl.where(b_mb == float("-inf"), 0.0, b_mb)
        b_lb = tl.sum(tl.exp2(b_s3 - b_mb_sub[:, :, None]), 2)
        # b_lb >= 1 wherever a key is visible (its max contributes exp2(0)); -inf elsewhere
        b_lse_b = tl.where(b_lb > 0, b_mb_sub + tl.log2(tl.maximum(b_lb, 1.0)), float("-inf"))
        o_kb = c0 // RB + tl.arange(0, BLOCK_C // RB)
        tl.store(p_x + o_kb[None, :], b_lse_b, mask=m_r[:, None] & (o_kb < KB)[None, :])
        # fold the block sums into the row's running log-sum-exp (no second pass over the tile)
        b_m_new = tl.maximum(b_m, tl.max(b_mb, 1))
        b_m_sub = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_l = b_l * tl.exp2(b_m - b_m_sub) + tl.sum(b_lb * tl.exp2(b_mb - b_m_sub[:, None]), 1)
        b_m = b_m_new
    b_lse = tl.where(b_l > 0, b_m + tl.log2(tl.maximum(b_l, 1.0)), float("-inf"))
    p_y = LSE_R + i_b.to(tl.int64) * stride_yb + i_h.to(tl.int64) * stride_yh
    tl.store(p_y + (o_r - ROW0), b_lse, mask=m_r)


@triton.jit
def _antidiag_sum_kernel(
    LSE_RB, LSE_R, OUT, stride_xb, stride_xh, stride_xr, stride_yb, stride_yh,
    stride_ob, stride_oh, stride_oq, H_Q, N, M, R, KB, QB0, BLOCK_Q, BLOCK_K,
    CAUSAL: tl.constexpr, RQ: tl.constexpr, BLOCK_KB: tl.constexpr,
):
    """Block score = sum over the query block's strided rows of exp2(lse(row, kb) - lse(row)).
    The launch covers query blocks from QB0 on, whose rows the scratch holds from QB0 * RQ on."""
    i_q, i_bh = QB0 + tl.program_id(0), tl.program_id(1)  # query blocks on x, as the mean pool's
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    o_r = i_q * RQ + tl.arange(0, RQ)
    m_r = o_r < R
    p_y = LSE_R + i_b.to(tl.int64) * stride_yb + i_h.to(tl.int64) * stride_yh
    b_lse = tl.load(p_y + (o_r - QB0 * RQ), mask=m_r, other=float("-inf"))
    # -inf: the row saw no key, or its sum is NaN (a NaN or +inf score, a NaN softmax that the
    # twin zeroes) while some of its block entries are finite: it adds nothing either way
    m_r = m_r & (b_lse != float("-inf"))
    b_sub = tl.where(m_r, b_lse, 0.0)
    kb_end = KB
    if CAUSAL:
        last = M - N + tl.minimum((i_q + 1) * BLOCK_Q, N) - 1
        kb_end = tl.where(last >= 0, tl.minimum(KB, last // BLOCK_K + 1), 0)
    p_x = LSE_RB + i_b.to(tl.int64) * stride_xb + i_h.to(tl.int64) * stride_xh
    p_x = p_x + (o_r - QB0 * RQ).to(tl.int64)[:, None] * stride_xr
    p_o = OUT + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    p_o = p_o + i_q.to(tl.int64) * stride_oq
    for kb0 in range(0, kb_end, BLOCK_KB):
        o_kb = kb0 + tl.arange(0, BLOCK_KB)
        m_kb = o_kb < kb_end
        b_x = tl.load(p_x + o_kb[None, :], mask=m_r[:, None] & m_kb[None, :], other=float("-inf"))
        tl.store(p_o + o_kb, tl.sum(tl.exp2(b_x - b_sub[:, None]), 0), mask=m_kb)


# fmt: on


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
    """float32 (B, H_q, QB, KB): XAttention's antidiagonal block scores (arXiv 2503.16428).

    q (B, H_q, N, D), k (B, H_kv, M, D). Strided row r pairs the query group [rS, rS+S) read
    backwards with key group c read forwards (one antidiagonal per S×S tile), is softmax-normalised
    over the key groups it sees (logits scaled by ``scale / stride``, as the paper), and its
    probabilities are summed per (query block, key block). Semantics: the twin
    `antidiagonal_reference.antidiagonal_block_scores`.

    The kernel makes one pass over K per tile of strided rows, keeping a log-sum-exp per (row, key
    block) in a float32 scratch of B·H_q·(N/S)·KB entries, then a second small kernel turns it
    into block sums. The scratch is kept within 1 GiB by launching per group of KV heads and, where
    one KV head's rows exceed it (17 GB at 1M tokens on Llama-3-8B's heads), per run of query
    blocks. ``block_q / stride`` and ``block_k / stride`` must be powers of two, at most 128.
    """
    check_triton_device("q", q)
    check_interpreter_dots("q", q)
    rq, rb = block_q // stride, block_k // stride
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    g = h_q // h_kv
    q, k = unit_last(q), unit_last(k)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    rows, cols = triton.cdiv(n, stride), triton.cdiv(m, stride)
    qb, kb = triton.cdiv(n, block_q), triton.cdiv(m, block_k)
    out = torch.zeros(b, h_q, qb, kb, device=q.device, dtype=torch.float32)
    if out.numel() == 0:  # no query, key or batch: nothing to launch (and no scratch to size)
        return out
    # the scratch holds (strided row, key block) entries of a launch's heads: launch per group of
    # KV heads, and per run of query blocks where one KV head's rows alone exceed the bound
    row_bytes = b * g * kb * 4
    kv_per_launch = max(1, _SCRATCH_BYTES // (row_bytes * rows))
    blocks_per_launch = (
        qb if row_bytes * rows <= _SCRATCH_BYTES else max(1, _SCRATCH_BYTES // (row_bytes * rq))
    )
    for h0 in range(0, h_kv, kv_per_launch):
        h1 = min(h_kv, h0 + kv_per_launch)
        qc, kc, oc = q[:, h0 * g : h1 * g], k[:, h0:h1], out[:, h0 * g : h1 * g]
        heads = qc.shape[1]
        chunk = min(rows, blocks_per_launch * rq)
        lse_rb = torch.empty(b, heads, chunk, kb, device=q.device, dtype=torch.float32)
        lse_r = torch.empty(b, heads, chunk, device=q.device, dtype=torch.float32)
        for qb0 in range(0, qb, blocks_per_launch):
            qb1 = min(qb, qb0 + blocks_per_launch)
            row0, row1 = qb0 * rq, min(rows, qb1 * rq)
            _antidiag_lse_kernel[_row_grid(b * heads, row1 - row0)](
                qc, kc, lse_rb, lse_r, *qc.stride()[:3], *kc.stride()[:3], *lse_rb.stride()[:3],
                *lse_r.stride()[:2], heads, g, n, m, row1, cols, kb, row0, scale / stride * LOG2E,
                STRIDE=stride, HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), RQ=rq,
                RB=rb, CAUSAL=causal,
            )  # fmt: skip
            _antidiag_sum_kernel[(qb1 - qb0, b * heads)](
                lse_rb, lse_r, oc, *lse_rb.stride()[:3], *lse_r.stride()[:2], *oc.stride()[:3],
                heads, n, m, rows, kb, qb0, block_q, block_k, CAUSAL=causal, RQ=rq, BLOCK_KB=64,
            )  # fmt: skip
    return out


def _row_grid(programs: int, rows: int):
    return lambda meta: (programs, triton.cdiv(rows, meta["BLOCK_R"]))
