"""One decode token per (batch row, KV head) into the paged cache, in one launch.

`attnsieve.cache.Cache.append` runs this for a single new token of a cache without label
channels, in place of about twenty small PyTorch ops (each a launch on the GPU, ~0.4 ms a layer
per decode step on the H200; more with an FP8 cache): each program finds its head's next slot
from ``lengths`` and ``page_table``, writes K, V (quantised, with their per-token scales, in an
FP8 cache), the position and, in a layer with log weights, the plain token's 0, folds the key into
its page's min / max (bfloat16, rounded outward) and bumps the head's length.
Pages are allocated before, on the host mirror of the lengths. Its twin is the PyTorch path of
`Cache.append`; the tests compare the two.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels.quantize import to_fp8


@triton.jit
def _append_one_kernel(
    K, V, POS, K_PAGES, V_PAGES, K_SCALE, V_SCALE, POSITIONS, KEY_MIN, KEY_MAX, PAGE_TABLE,
    LENGTHS, LOG_WEIGHT, stride_kb, stride_kh, stride_vb, stride_vh, stride_tb, stride_th, H_KV,
    PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, FP8: tl.constexpr, WEIGHTED: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    i_b, i_h = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    n = tl.load(LENGTHS + i_bh)  # tokens this head holds: the new one goes to slot n
    page = tl.load(PAGE_TABLE + i_b * stride_tb + i_h * stride_th + n // PAGE_SIZE).to(tl.int64)
    slot = page * PAGE_SIZE + n % PAGE_SIZE
    o_d = tl.arange(0, HEAD_DIM)
    b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_d)
    b_v = tl.load(V + i_b * stride_vb + i_h * stride_vh + o_d)
    if FP8:  # per-token power-of-two scales, as `decode_reference.quantize_fp8`
        b_k, b_ks = _quantize(b_k)
        b_v, b_vs = _quantize(b_v)
        tl.store(K_SCALE + slot, b_ks)
        tl.store(V_SCALE + slot, b_vs)
        b_kf = b_k.to(tl.float32) * b_ks  # the page summaries hold the dequantised key
    else:
        b_kf = b_k.to(tl.float32)
    tl.store(K_PAGES + slot * HEAD_DIM + o_d, b_k)
    tl.store(V_PAGES + slot * HEAD_DIM + o_d, b_v)
    tl.store(POSITIONS + slot, tl.load(POS + i_b))
    if WEIGHTED:  # the slot may hold the weight of a token that left it
        tl.store(LOG_WEIGHT + slot, 0.0)
    p_min, p_max = KEY_MIN + page * HEAD_DIM + o_d, KEY_MAX + page * HEAD_DIM + o_d
    # NaN propagates, as in the PyTorch path's scatter_reduce (the scores rank such a page last)
    b_min = tl.minimum(
        tl.load(p_min).to(tl.float32), _round_bf16(b_kf, False), propagate_nan=tl.PropagateNan.ALL
    )
    b_max = tl.maximum(
        tl.load(p_max).to(tl.float32), _round_bf16(b_kf, True), propagate_nan=tl.PropagateNan.ALL
    )
    tl.store(p_min, b_min.to(KEY_MIN.dtype.element_ty))  # exact: both sides are bfloat16 values
    tl.store(p_max, b_max.to(KEY_MAX.dtype.element_ty))
    tl.store(LENGTHS + i_bh, n + 1)


@triton.jit
def _round_bf16(x, UP: tl.constexpr):
    """float32 x rounded to bfloat16 toward +inf (UP) or -inf, returned as float32: the page
    summaries stay bounds (`attnsieve.cache_reference.round_bf16`, bit for bit)."""
    bits = x.to(tl.int32, bitcast=True)
    truncated = bits & -65536  # bfloat16 is float32's top 16 bits: this rounds toward 0
    t = truncated.to(tl.float32, bitcast=True)
    wrong = (t < x) if UP else (t > x)
    out = tl.where(wrong, (truncated + 65536).to(tl.float32, bitcast=True), t)
    return tl.where(x != x, x, out)


@triton.jit
def _quantize(x):
    """(x / scale as float8 e4m3, the float32 scale) of one token: the smallest power of two at
    or above absmax / 448, 0 for an all-zero x, as `attnsieve.kernels.decode_reference.fp8_scales`
    finds it from absmax's bits; elements below 2^-126 count as 0, and a token holding NaN or
    ±inf is stored as zeros with the infinite scale, as
    `attnsieve.kernels.decode_reference.quantize_fp8` does.

    Dividing by a power of two is exact; the value is rounded on the e4m3 grid in fp32
    (`to_fp8`'s emulation, on every device), so the cast itself is exact and rounds to nearest
    even like torch's: the first version of this kernel, with the plain cast, stored other values
    than the PyTorch path on the H200 (benchmarks/results/h200/decode_graphs/
    cuda_tests_fp8_first.log)."""
    b_x = x.to(tl.float32)
    b_x = tl.where(tl.abs(b_x) < 2.0**-126, 0.0, b_x)
    # tl.max drops NaN: a non-finite token is told apart first (not |x| < inf: NaN or ±inf)
    bad = tl.max((~(tl.abs(b_x) < float("inf"))).to(tl.int32), 0) > 0
    b_x = tl.where(bad, 0.0, b_x)
    b_amax = tl.max(tl.abs(b_x), 0)
    bits = b_amax.to(tl.int32, bitcast=True)
    b_e = (bits >> 23) - 8 + ((bits & 0x7FFFFF) > 0x600000).to(tl.int32)
    b_e = tl.where(bad, 255, tl.where(b_amax > 0, tl.maximum(b_e, 1), 0))
    b_scale = (b_e << 23).to(tl.float32, bitcast=True)  # 2^(e - 127); 0 for e = 0, inf for 255
    b_q = to_fp8(tl.math.div_rn(b_x, tl.where((b_e > 0) & (b_e < 255), b_scale, 1.0)), True)
    return b_q, b_scale


def append_one(
    k: Tensor,
    v: Tensor,
    positions: Tensor,
    k_pages: Tensor,
    v_pages: Tensor,
    k_scale: Tensor | None,
    v_scale: Tensor | None,
    page_positions: Tensor,
    key_min: Tensor,
    key_max: Tensor,
    page_table: Tensor,
    lengths: Tensor,
    log_weight: Tensor | None = None,
) -> None:
    """Write k, v (B, H_kv, 1, D) at position ``positions`` (B,) into each head's next slot;
    into FP8 pools (``k_scale``, ``v_scale`` float32 (num_pages, page_size)) quantised with a
    per-token power-of-two scale; into ``log_weight`` (float32 (num_pages,
    page_size)), when given, 0.

    ``page_table`` must already hold the page of that slot; ``lengths`` (contiguous int32 (B, H_kv))
    is bumped by one. Pools, scales and log weights are contiguous (num_pages, page_size[, D]); k
    and v have a unit last stride. `Cache.append` checks all of this before it calls.
    """
    b, h_kv, _, d = k.shape
    fp8 = k_scale is not None
    scales = (k_scale, v_scale) if fp8 else (lengths, lengths)  # never read without FP8
    weights = lengths if log_weight is None else log_weight  # never written without weights
    with torch.cuda.device(k.device) if k.is_cuda else contextlib.nullcontext():
        _append_one_kernel[(b * h_kv,)](
            k, v, positions, k_pages, v_pages, *scales, page_positions, key_min, key_max,
            page_table, lengths, weights, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            page_table.stride(0), page_table.stride(1), h_kv, PAGE_SIZE=k_pages.shape[1],
            HEAD_DIM=d, FP8=fp8, WEIGHTED=log_weight is not None,
        )  # fmt: skip
