"""FlexPrefill's choice of lines in Triton: from the last queries' verticals and slashes to which
heads are query-aware and which key blocks and offset blocks each head keeps, in one launch.

Program (b, h, line) of the query heads' two lines (verticals, slashes):
1. the softmax ā of the head's pooled scores (`last_query_stats`' ``pooled``: the mean last
   query against each block's mean key), and sqrt(JS(ā, â)) against the verticals â: the head
   is query-aware below tau, and then its block map's threshold is gamma (just below 1 at most:
   1.0 is `mass_threshold`'s every entry, zeros above the diagonal too), else 0 (no map);
2. for its line: a query-aware head keeps lo blocks; another the smallest set holding gamma of the
   line's mass (the bisection of `mass_threshold`'s rows in registers), its size clamped to
   [lo, hi]. Where the clamp changes nothing that set is the answer (ties included); otherwise
   that many largest blocks, ties to lower indices (`select_pages`' search). Block 0 always;
   written as a mask.
Both programs of a head compute its gate: two short serial chains in parallel rather than one
long one (one program a head took 75 µs at 64K on the H200, two 67, `lines42/`, `lines42b/`,
when the gate still pooled the last queries and scored the pooled keys itself).

The twenty-odd PyTorch launches this replaces (mean, matmul, softmax, the divergence's sums, the
threshold, the count, the top) cost a replayed plan about 2 µs each. No host synchronisation,
fixed shapes (CUDA-graph capturable). The twin is
:func:`attnsieve.kernels.line_choice_reference.choose_lines`; `attnsieve.api.choose_lines` checks
the arguments.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device, line_choice_reference
from attnsieve.kernels.mass_threshold import mass_cut
from attnsieve.kernels.page_select import count_above, order_keys, store_top, top_threshold

_MAX_BLOCK = 8192  # longest line a program holds in registers
BELOW_ONE = tl.constexpr(line_choice_reference.BELOW_ONE)  # a global a kernel reads: constexpr


# fmt: off
@triton.jit
def _xlogx(x):
    return x * tl.log(tl.where(x == 0.0, 1.0, x))  # 0 ln 0 = 0; NaN stays NaN


@triton.jit
def _query_aware(POOL, VERT, i_b, i_h, stride_pb, stride_ph, stride_pn, stride_vb, stride_vh,
                 stride_vn, KB, tau, BLOCK: tl.constexpr):
    """sqrt(JS(ā, â)) < tau: ā the softmax of the head's pooled scores, â its verticals."""
    p_s = POOL + i_b * stride_pb + i_h * stride_ph
    p_v = VERT + i_b * stride_vb + i_h * stride_vh
    # the softmax's max and sum per lane, reduced once after the walk
    b_m = tl.full([BLOCK], float("-inf"), tl.float32)
    b_l = tl.zeros([BLOCK], dtype=tl.float32)
    for j0 in range(0, KB, BLOCK):
        o_j = j0 + tl.arange(0, BLOCK)
        b_s = tl.load(p_s + o_j.to(tl.int64) * stride_pn, mask=o_j < KB, other=float("-inf"))
        b_new = tl.maximum(b_m, b_s)
        b_new_safe = tl.where(b_new == float("-inf"), 0.0, b_new)  # no -inf - -inf
        b_l = b_l * tl.exp(b_m - b_new_safe) + tl.exp(b_s - b_new_safe)
        b_m = b_new
    b_max = tl.max(b_m, 0)
    b_l = tl.sum(b_l * tl.exp(b_m - b_max), 0)
    b_sp = tl.full([], 0.0, tl.float32)  # Σ ā ln ā, Σ â ln â, Σ m ln m for m = (ā + â) / 2
    b_sv = tl.full([], 0.0, tl.float32)
    b_sm = tl.full([], 0.0, tl.float32)
    for j0 in range(0, KB, BLOCK):
        o_j = j0 + tl.arange(0, BLOCK)
        m_j = o_j < KB
        b_s = tl.load(p_s + o_j.to(tl.int64) * stride_pn, mask=m_j, other=float("-inf"))
        b_p = tl.exp(b_s - b_max) / b_l
        b_v = tl.load(p_v + o_j.to(tl.int64) * stride_vn, mask=m_j, other=0.0)
        b_sp += tl.sum(_xlogx(b_p), 0)
        b_sv += tl.sum(_xlogx(b_v), 0)
        b_sm += tl.sum(_xlogx((b_p + b_v) / 2), 0)
    b_js = (b_sp + b_sv) / 2 - b_sm
    return tl.sqrt(tl.where(b_js < 0.0, 0.0, b_js)) < tau  # a NaN divergence: not query-aware


@triton.jit
def _line_choice_kernel(
    POOL, VERT, SLASH, GAMMA, QA, MAP_GAMMA, OUT,
    stride_pb, stride_ph, stride_pn, stride_vb, stride_vh, stride_vn, stride_sb, stride_sh,
    stride_sn, H_Q, KB, lo, hi, gamma, keep_all, tau,
    SINGLE: tl.constexpr, BLOCK: tl.constexpr, GAMMA_ROW: tl.constexpr,
):
    i_bh, i_line = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H_Q).to(tl.int64), (i_bh % H_Q).to(tl.int64)
    i_row = i_bh.to(tl.int64) * 2 + i_line
    m_qa = _query_aware(POOL, VERT, i_b, i_h, stride_pb, stride_ph, stride_pn, stride_vb,
                        stride_vh, stride_vn, KB, tau, BLOCK)
    g = gamma
    if GAMMA_ROW:
        g = tl.load(GAMMA + i_h)
        keep_all = (g >= 1.0).to(tl.int32)  # in float32, as the twin compares (NaN: keep nothing)
    if i_line == 0:
        tl.store(QA + i_bh, m_qa.to(tl.uint8))
        tl.store(MAP_GAMMA + i_bh, tl.where(m_qa, tl.where(g < BELOW_ONE, g, BELOW_ONE), 0.0))
        p_x = VERT + i_b * stride_vb + i_h * stride_vh
        stride_x = stride_vn
    else:
        p_x = SLASH + i_b * stride_sb + i_h * stride_sh
        stride_x = stride_sn
    o_b = tl.arange(0, BLOCK)
    b_key = order_keys(p_x, o_b, KB, stride_x)  # SINGLE: the line in registers
    b_x = tl.load(p_x + o_b.to(tl.int64) * stride_x, mask=o_b < KB, other=0.0)
    # a query-aware head keeps lo blocks a line; another the fewest holding gamma of the line's
    # mass (a gamma >= 1: every block, zeros too), clamped to [lo, hi]
    n_sel = lo
    t = tl.full([], 0, tl.int32)
    n_cover = KB
    if m_qa == 0:
        b_bits = b_x.to(tl.int32, bitcast=True)
        if SINGLE:
            b_total = tl.sum(b_x, 0)
        else:
            b_total = 0.0
            for i_l in range(0, KB, BLOCK):
                o_l = i_l + o_b
                b_total += tl.sum(tl.load(p_x + o_l.to(tl.int64) * stride_x, mask=o_l < KB,
                                          other=0.0), 0)
        t = mass_cut(p_x, b_x, b_bits, g * b_total, KB, stride_x, SINGLE, BLOCK)
        if keep_all == 0:
            if SINGLE:
                n_cover = tl.sum(((b_bits >= t) & (b_x > 0.0)).to(tl.int32), 0)
            else:
                n_cover = 0
                for i_l in range(0, KB, BLOCK):
                    o_l = i_l + o_b
                    b_c = tl.load(p_x + o_l.to(tl.int64) * stride_x, mask=o_l < KB, other=0.0)
                    n_cover += tl.sum(((b_c.to(tl.int32, bitcast=True) >= t) & (b_c > 0.0))
                                      .to(tl.int32), 0)
        n_sel = tl.minimum(tl.maximum(n_cover, lo), hi)
    n_sel = tl.minimum(tl.maximum(n_sel, 0), KB)
    if i_line == 0:  # a head of gamma >= 1 keeps every key block, query-aware or not: dense
        n_sel = tl.where(keep_all != 0, KB, n_sel)
    # the cut's own blocks, unclamped: they are the n_sel largest (t > 0 is a positive float's
    # bits, so every block at or above it counts), ties included, and need no second search
    if (n_sel == n_cover) & (t > 0) & (keep_all == 0):  # t stays 0 for a query-aware head
        t_top = t
        n_tie = n_sel - count_above(p_x, b_key, t, KB, stride_x, SINGLE, BLOCK)
    else:
        t_top, n_tie = top_threshold(p_x, b_key, n_sel, KB, stride_x, SINGLE, BLOCK)
    store_top(p_x, OUT + i_row * KB, t_top, n_tie, KB, stride_x, BLOCK, True, True)
# fmt: on


def choose_lines(
    vertical: Tensor,
    slash: Tensor,
    pooled: Tensor,
    *,
    gamma: float | Tensor,
    tau: float,
    lo: int,
    hi: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(query_aware bool (B, H_q), chosen bool (B, H_q, 2, KB), contiguous, map_gamma float32
    (B, H_q)), Triton; see :func:`attnsieve.kernels.line_choice_reference.choose_lines`."""
    check_triton_device("vertical", vertical)
    b, h_q, kb = vertical.shape
    query_aware = torch.empty((b, h_q), dtype=torch.uint8, device=vertical.device)
    map_gamma = torch.empty((b, h_q), dtype=torch.float32, device=vertical.device)
    chosen = torch.empty((b, h_q, 2, kb), dtype=torch.uint8, device=vertical.device)
    if b * h_q * kb:
        gamma_row = isinstance(gamma, Tensor)
        g = gamma.to(torch.float32).contiguous() if gamma_row else vertical
        block = min(max(triton.next_power_of_2(kb), 128), _MAX_BLOCK)
        # one warp for lines of up to 512 blocks: the bisections' sums then need no cross-warp
        # step (H200: 11.3 against 14.4 us at 32K on Llama-3-8B's heads, 9.9 against 13.5 on
        # SmolLM2's at 8K; 1024 blocks took 23.5 against 16.8, plan48/lines_f.log)
        with torch.cuda.device(vertical.device) if vertical.is_cuda else contextlib.nullcontext():
            _line_choice_kernel[(b * h_q, 2)](
                pooled, vertical, slash, g, query_aware, map_gamma, chosen, *pooled.stride(),
                *vertical.stride(), *slash.stride(), h_q, kb, lo, hi,
                0.0 if gamma_row else float(gamma), int(not gamma_row and gamma >= 1), tau,
                SINGLE=kb <= block, BLOCK=block, GAMMA_ROW=gamma_row,
                num_warps=1 if block <= 512 else min(8, max(4, block // 512)),
            )  # fmt: skip
    return query_aware.view(torch.bool), chosen.view(torch.bool), map_gamma
