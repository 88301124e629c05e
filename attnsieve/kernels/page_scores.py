"""Quest's page scores in Triton: one launch from the query and the page summaries to the score
that decode-time page selection ranks by.

Program (b, h_kv, i) loads the key minima and maxima of the i-th block of BLOCK_P pages of KV head
h_kv straight from the cache's summary pools, through its page table (whole rows of D channels: no
loop over D, and no per-step copy of the summaries), uses them for all g query heads of the group,
and writes the max over those heads of ``sum_d max(q_d min_d, q_d max_d)``, with the head's last
page +inf (always read) and pages past its page count -inf (never loaded).

bfloat16 summaries (the cache's) are scored as two matrix products on tensor cores, ``max . q+ +
min . q-`` (q+ = max(q, 0), q- = min(q, 0)): the same sum wherever min <= max, in 38 % of the
per-channel form's instructions a page, which kept the kernel instruction-bound. A product of two
bfloat16 values is exact in the float32 accumulator; a float16 query is split into two bfloat16
terms that hold it exactly. Float32 summaries or queries take the same sum channel by channel in
float32. A page whose bound is NaN for some query head scores -inf: a NaN summary, or an
infinite one met by a query channel of the other sign (0 x inf in ``q+ . max + q- . min``). The
twin is
:func:`attnsieve.kernels.page_scores_reference.page_scores`.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import INTERPRET, check_triton_device

# summary elements per tile (min and max each): 64 registers a thread at 4 warps
_TILE_ELEMENTS = 4096
# pages per program of the tensor-core form: 32 (mma.sync) took the scores from 118 to 80 us at
# batch 8 / 128K on Llama-3-8B heads (H200); 64 and 128 (wgmma) 91 and 85 us
# (benchmarks/results/h200/quest_mma/selection_time.log)
MMA_PAGES = 32


# fmt: off
@triton.jit
def _page_scores_kernel(
    Q, KMIN, KMAX, TABLE, COUNT, OUT,
    stride_qb, stride_qh, stride_qd, stride_nr, stride_nd, stride_xr, stride_xd,
    stride_tb, stride_th, stride_tp, stride_cb, stride_ch, H_KV, P, D,
    GROUP: tl.constexpr, G_PAD: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
    MMA: tl.constexpr, SPLIT_Q: tl.constexpr,
):
    i_bh, i_p = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    # clamped to the table: a count past it must not read outside
    n_pages = tl.minimum(tl.load(COUNT + i_b * stride_cb + i_h * stride_ch), P)
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o_d = tl.arange(0, BLOCK_D)
    m_p, m_d = o_p < n_pages, o_d < D
    m_pd = m_p[:, None] & m_d[None, :]
    # pages past the count are never loaded: their table entries and rows stay out
    p_t = TABLE + i_b * stride_tb + i_h * stride_th + o_p * stride_tp
    o_row = tl.load(p_t, mask=m_p, other=0).to(tl.int64)[:, None]
    b_min = tl.load(KMIN + o_row * stride_nr + o_d[None, :] * stride_nd, mask=m_pd, other=0.0)
    b_max = tl.load(KMAX + o_row * stride_xr + o_d[None, :] * stride_xd, mask=m_pd, other=0.0)

    if MMA:  # bfloat16 summaries: [BLOCK_P, D] x [D, G_PAD] products for the whole group
        o_g = tl.arange(0, G_PAD)
        m_g = o_g < GROUP
        p_q = Q + i_b * stride_qb + (i_h * GROUP + o_g)[:, None] * stride_qh \
            + o_d[None, :] * stride_qd
        b_q = tl.load(p_q, mask=m_g[:, None] & m_d[None, :], other=0.0).to(tl.float32)
        b_qp, b_qn = tl.maximum(b_q, 0.0), tl.minimum(b_q, 0.0)
        b_hp, b_hn = b_qp.to(tl.bfloat16), b_qn.to(tl.bfloat16)
        b_bound = tl.dot(b_max, tl.trans(b_hp))  # [BLOCK_P, G_PAD]
        b_bound = tl.dot(b_min, tl.trans(b_hn), b_bound)
        if SPLIT_Q:  # what bfloat16 drops of a float16 query fits one more bfloat16 exactly
            b_lp = (b_qp - b_hp.to(tl.float32)).to(tl.bfloat16)
            b_ln = (b_qn - b_hn.to(tl.float32)).to(tl.bfloat16)
            b_bound = tl.dot(b_max, tl.trans(b_lp), b_bound)
            b_bound = tl.dot(b_min, tl.trans(b_ln), b_bound)
        b_nan = tl.sum(((b_bound != b_bound) & m_g[None, :]).to(tl.int32), 1) > 0
        b_score = tl.max(tl.where(m_g[None, :], b_bound, float("-inf")), 1)
    else:  # the same sum per channel, in float32
        b_min, b_max = b_min.to(tl.float32), b_max.to(tl.float32)
        b_score = tl.full([BLOCK_P], float("-inf"), dtype=tl.float32)
        b_nan = tl.zeros([BLOCK_P], dtype=tl.int1)
        p_q = Q + i_b * stride_qb + (i_h * GROUP) * stride_qh + o_d * stride_qd
        for i_g in tl.static_range(GROUP):
            b_q = tl.load(p_q + i_g * stride_qh, mask=m_d, other=0.0).to(tl.float32)[None, :]
            b_qp, b_qn = tl.maximum(b_q, 0.0), tl.minimum(b_q, 0.0)
            b_bound = tl.sum(b_qp * b_max + b_qn * b_min, 1)  # [BLOCK_P]
            b_nan = b_nan | (b_bound != b_bound)  # tl.maximum below would drop a NaN
            b_score = tl.maximum(b_score, b_bound)

    b_score = tl.where(m_p & ~b_nan, b_score, float("-inf"))
    b_score = tl.where(o_p == n_pages - 1, float("inf"), b_score)
    tl.store(OUT + i_bh.to(tl.int64) * P + o_p, b_score, mask=o_p < P)
# fmt: on


def page_scores(
    q: Tensor, key_min: Tensor, key_max: Tensor, page_table: Tensor, page_count: Tensor
) -> Tensor:
    """float32 (B, H_kv, P) Quest scores of the logical pages of each KV head, Triton.

    Args:
        q: (B, H_q, D) float16/bfloat16/float32, H_q = g * H_kv; any strides.
        key_min, key_max: (N, D) pools of per-page channel-wise key min / max (float32 or
            bfloat16, any strides).
        page_table: int32 (B, H_kv, P), the pool row of each logical page; entries past a head's
            count are never read.
        page_count: int32 (B, H_kv) valid pages per head (clamped to P).

    A page's score is the max over the head's g query heads of ``sum_d max(q_d min_d,
    q_d max_d)``; the last valid page scores +inf, pages past the count -inf (a head with no page:
    all -inf). `attnsieve.api.quest_page_scores` checks the arguments.
    """
    check_triton_device("q", q)
    b, h_kv, p = page_table.shape
    d = key_min.shape[1]
    out = torch.empty((b, h_kv, p), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    if key_min.shape[0] == 0:  # no summaries: no page can be counted, and none is read
        return out.fill_(-math.inf)
    g = q.shape[1] // h_kv
    # bfloat16 tl.dot is wrong under the interpreter: the CPU takes the per-channel form
    mma = (
        not INTERPRET
        and key_min.dtype == key_max.dtype == torch.bfloat16
        and q.dtype != torch.float32
    )
    block_d = max(16, triton.next_power_of_2(d)) if mma else triton.next_power_of_2(d)
    block_p = MMA_PAGES if mma else min(128, max(16, _TILE_ELEMENTS // block_d))
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _page_scores_kernel[(b * h_kv, triton.cdiv(p, block_p))](
            q, key_min, key_max, page_table, page_count, out, *q.stride(), *key_min.stride(),
            *key_max.stride(), *page_table.stride(), *page_count.stride(), h_kv, p, d,
            GROUP=g, G_PAD=max(16, triton.next_power_of_2(g)), BLOCK_P=block_p, BLOCK_D=block_d,
            MMA=mma, SPLIT_Q=q.dtype == torch.float16,
        )  # fmt: skip
    return out
