"""The quantisation of INT8·FP8 attention (`attnsieve.kernels.quant`).

SageAttention2 (Zhang et al., arXiv 2411.10958):

1. K smoothing: K's mean over tokens, per (batch, KV head, channel), is subtracted before
   quantising. Softmax is invariant to it (it adds one constant to each score row) and it removes
   the channel outliers that would otherwise set K's INT8 scale.
2. Q and K to INT8, symmetric, one scale (absmax / 127) per block of ``block_m`` query /
   ``block_n`` key rows of a head, i.e. per attention tile. Values round half away from zero.
   This is coarser than SageAttention2's default, which scales Q and K per thread group inside
   16-query warps and 128-key blocks (``qk_quant_gran="per_thread"`` in its code; per-warp Q
   with per-block K is its coarser option).
3. V to FP8 e4m3, one scale (absmax / 448) per (batch, KV head, channel), stored transposed
   (B, H_kv, D, M) so that V's tile is the K-major operand Hopper's FP8 MMA wants.

K and V are quantised by three launches: a statistics pass over K and V (column sums of K, column
absmax of V, per chunk of tokens), one program per head that turns them into K's mean and V's
scales, and one pass that writes int8 K and fp8 Vᵀ. Q is quantised one tile at a time by
`load_quantized_rows`: in a pass of its own (`quantize_q`) before the Triton attention kernel, and
(spelt in Gluon) inside the Hopper kernel, `attnsieve.kernels.quant_hopper`, as it loads its tile.
Before the twenty-sixth session one pass quantised all three, with K's mean and V's factors
computed by torch between its launches: 0.92 ms of host time a call at 32K on the H200 against
0.46 ms now (benchmarks/results/h200/quant26/).

A value is scaled as ``x * (top / absmax)``, one correctly rounded division per block or channel
(`absmax_scaling`), not divided by its scale, which took twice the time; the
product is an explicitly rounded multiply (`mul_rn`) so that no compiler contracts it with the
rounding's add into an FMA that would round differently from the twin. NaN / inf cannot be
quantised: they are quantised as 0 (they never enter a mean, an absmax or a dot) and their rows
are flagged, and K's blocks that hold such a row, for the attention kernel.

Under the Triton interpreter (CPU tests) the fp32 -> fp8 cast mis-rounds values that round up into
the next binade, so `to_fp8` first rounds to the e4m3 grid in fp32 (EMULATE); the cast is then
exact. The twins are in `attnsieve.kernels.quantize_reference`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra import libdevice

from attnsieve.checks import check_dtype, check_pow2, check_qkv, check_tensor, check_v
from attnsieve.kernels import INTERPRET, check_fp8_device, check_triton_device

FP8_MAX = 448.0  # largest finite float8 e4m3fn
INT8_MAX = 127.0
# The statistics pass: tokens a program, tokens a step of its loop, warps. 32-row steps in 8 warps
# hold 79 registers a thread where 64 rows in 4 took 215 (offline sm_90); with the elementwise
# sums and Vᵀ's 16-byte stores the K / V pass took 0.137 / 0.263 / 0.478 ms at 32K / 64K / 128K
# on Llama-3-8B's heads against 0.188 / 0.366 / 0.716 (H200, benchmarks/results/h200/quant27/kv/)
_STATS_CHUNK, _STATS_BLOCK, _STATS_WARPS = (64, 16, 4) if INTERPRET else (1024, 32, 8)
_ON_GPU = tl.constexpr(not INTERPRET)  # the interpreter has no libdevice (and never contracts)


@dataclass(frozen=True)
class QuantizedKV:
    """K and V as the attention kernels read them.

    ``k`` int8 (B, H_kv, M, D) of K - ``k_mean`` (f32 (B, H_kv, D)) with ``k_scale`` f32
    (B, H_kv, cdiv(M, block_n)); ``v_t`` float8_e4m3fn (B, H_kv, D, M), V transposed (a view of a
    buffer padded along M to 16 bytes) with ``v_scale`` f32 (B, H_kv, D); ``kv_bad`` int8
    (B, H_kv, M) flags rows of K or V that held a NaN / inf (quantised as 0); ``k_block_bad`` int8
    (B, H_kv, cdiv(M, block_n)) flags K blocks that hold a flagged row.
    """

    k: Tensor
    k_scale: Tensor
    k_mean: Tensor
    v_t: Tensor
    v_scale: Tensor
    kv_bad: Tensor
    k_block_bad: Tensor
    block_n: int

    def dequantize(self) -> tuple[Tensor, Tensor]:
        """float32 (k - k_mean, v): what the kernel's integer / fp8 values stand for."""
        m = self.k.shape[2]
        k_scale = self.k_scale.repeat_interleave(self.block_n, -1)[..., :m, None]
        return self.k.float() * k_scale, self.v_t.float().mT * self.v_scale[..., None, :]


# Kernel argument lists stay dense (one role per line) rather than one name per line.
# fmt: off
@triton.jit
def to_fp8(x, EMULATE: tl.constexpr):
    """fp32 ``x`` (|x| <= 448 up to rounding) to float8 e4m3, round to nearest even."""
    if EMULATE:
        # round on the e4m3 grid in fp32: 3 mantissa bits, so one step is 2^(exponent - 3),
        # and 2^-9 throughout the subnormal range (exponents below -6)
        b_exp = (x.to(tl.int32, bitcast=True) >> 23) & 0xFF
        b_ulp = ((tl.maximum(b_exp, 127 - 6) - 3) << 23).to(tl.float32, bitcast=True)
        x = (x / b_ulp + 12582912.0 - 12582912.0) * b_ulp  # + 1.5 * 2^23: round half to even
    return x.to(tl.float8e4nv)


@triton.jit
def finite(x):
    """True where ``x`` is finite (False for NaN too)."""
    return tl.abs(x) < float("inf")


@triton.jit
def mul_rn(x, y):
    """``x * y`` rounded once, never contracted into an FMA with an add that uses it. (On the GPU
    it flushes subnormals to 0, which never changes a quantised value: a subnormal product is far
    below half of INT8's or FP8's smallest step.)"""
    if _ON_GPU:
        return libdevice.mul_rn(x, y)
    else:
        return x * y


@triton.jit
def absmax_scaling(amax, TOP: tl.constexpr):
    """A block's (or channel's) scale, ``amax / TOP`` (1 where amax is 0), and the factors
    (pre, inv) with ``(x * pre) * inv`` = ``x * (TOP / amax)``: one correctly rounded division a
    block instead of one an element. ``pre`` is 2^100 below 2^-100 (``x * pre`` is exact), so
    that ``inv`` cannot overflow; ``inv`` is 1 where amax is 0."""
    b_scale = tl.where(amax > 0, tl.math.div_rn(amax, TOP), 1.0)
    b_pre = tl.where(amax < 7.888609052210118e-31, 1.2676506002282294e30, 1.0)  # 2^-100, 2^100
    b_inv = tl.where(amax > 0, tl.math.div_rn(TOP, amax * b_pre), 1.0)
    return b_scale, b_pre, b_inv


@triton.jit
def quantize_int8(b_x):
    """A finite fp32 block to int8 with one absmax scale: (int8 values, scale), values rounded
    half away from zero. Q's tiles in the attention kernels, K's blocks here."""
    b_scale, b_pre, b_inv = absmax_scaling(tl.max(tl.abs(b_x)), 127.0)
    b_y = mul_rn(b_x * b_pre, b_inv)
    b_y = b_y + tl.where(b_y >= 0, 0.5, -0.5)  # then truncated by the cast
    return b_y.to(tl.int8), b_scale


@triton.jit
def load_quantized_rows(p_x, o_n, m_n, o_d, stride_xn, stride_xd):
    """Rows ``o_n`` of one head at ``p_x`` (0 where ``m_n`` is off), quantised as one block by
    `quantize_int8`: (int8 rows, scale, flags of the rows that held a NaN / inf, quantised as 0).
    Each attention program's Q tile."""
    b_x = tl.load(p_x + o_n.to(tl.int64)[:, None] * stride_xn + o_d[None, :] * stride_xd,
                  mask=m_n[:, None], other=0.0).to(tl.float32)
    m_x = finite(b_x)
    b_y, b_scale = quantize_int8(tl.where(m_x, b_x, 0.0))
    return b_y, b_scale, tl.min(m_x.to(tl.int32), 1) == 0


@triton.jit(do_not_specialize=["M"])
def _kv_stats_kernel(
    K, V, STATS, BAD,
    stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
    H_KV, M, CHUNK: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """One chunk of tokens: K's column sums and V's column absmax (finite values only) into
    STATS[0] and STATS[1], and a flag per token whose K or V row holds a NaN / inf."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    p_k = K + i_b * stride_kb + i_h * stride_kh
    p_v = V + i_b * stride_vb + i_h * stride_vh
    o_d = tl.arange(0, HEAD_DIM)
    # summed and maxed elementwise, reduced across rows once: a cross-warp reduction a block
    # goes through shared memory
    b_sum = tl.zeros([BLOCK, HEAD_DIM], dtype=tl.float32)
    b_max = tl.zeros([BLOCK, HEAD_DIM], dtype=tl.float32)
    for start in range(i_c * CHUNK, (i_c + 1) * CHUNK, BLOCK):
        o_n = start + tl.arange(0, BLOCK)
        m_n = o_n < M
        o_kn = o_n.to(tl.int64)[:, None]
        b_k = tl.load(p_k + o_kn * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                      other=0.0).to(tl.float32)  # [BLOCK, HEAD_DIM]
        b_v = tl.load(p_v + o_kn * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None],
                      other=0.0).to(tl.float32)
        m_k, m_v = finite(b_k), finite(b_v)
        b_sum += tl.where(m_k, b_k, 0.0)
        b_max = tl.maximum(b_max, tl.where(m_v, tl.abs(b_v), 0.0))
        b_bad = tl.min((m_k & m_v).to(tl.int32), 1) == 0
        tl.store(BAD + i_bh.to(tl.int64) * M + o_n, b_bad.to(tl.int8), mask=m_n)
    o_s = (i_bh.to(tl.int64) * tl.num_programs(0) + i_c) * HEAD_DIM + o_d
    tl.store(STATS + o_s, tl.sum(b_sum, 0))
    tl.store(STATS + tl.num_programs(0) * tl.num_programs(1) * HEAD_DIM + o_s, tl.max(b_max, 0))


@triton.jit(do_not_specialize=["M"])
def _kv_scales_kernel(STATS, SCALES, BH, M, CHUNKS, HEAD_DIM: tl.constexpr):
    """One (batch, KV head): K's mean over M tokens and V's channel scale, with the channel's
    `absmax_scaling` factors (pre, inv), into SCALES[0..3], from the statistics pass's chunks."""
    i_bh = tl.program_id(0).to(tl.int64)
    o_d = tl.arange(0, HEAD_DIM)
    p_sum = STATS + i_bh * CHUNKS * HEAD_DIM + o_d
    p_max = p_sum + BH * CHUNKS * HEAD_DIM
    b_sum = tl.zeros([HEAD_DIM], dtype=tl.float32)
    b_max = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for i_c in range(0, CHUNKS):
        b_sum += tl.load(p_sum + i_c * HEAD_DIM)
        b_max = tl.maximum(b_max, tl.load(p_max + i_c * HEAD_DIM))
    b_scale, b_pre, b_inv = absmax_scaling(b_max, 448.0)
    p_out = SCALES + i_bh * HEAD_DIM + o_d
    tl.store(p_out, tl.math.div_rn(b_sum, M.to(tl.float32)))
    tl.store(p_out + BH * HEAD_DIM, b_scale)
    tl.store(p_out + 2 * BH * HEAD_DIM, b_pre)
    tl.store(p_out + 3 * BH * HEAD_DIM, b_inv)


@triton.jit
def _load_rows(X, stride_xb, stride_xh, stride_xn, stride_xd, H, N, BLOCK: tl.constexpr,
               HEAD_DIM: tl.constexpr):
    """This program's BLOCK rows of one head of X in fp32 (0 past N), with their offsets."""
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_n = i_n * BLOCK + tl.arange(0, BLOCK)
    o_d = tl.arange(0, HEAD_DIM)
    m_n = o_n < N
    p_x = X + i_b * stride_xb + i_h * stride_xh
    b_x = tl.load(p_x + o_n.to(tl.int64)[:, None] * stride_xn + o_d[None, :] * stride_xd,
                  mask=m_n[:, None], other=0.0).to(tl.float32)  # [BLOCK, HEAD_DIM]
    return b_x, i_n, i_bh, o_n, o_d, m_n


@triton.jit
def _quant_k_block(K, K8, KS, SCALES, BAD, BLOCK_BAD, stride_kb, stride_kh, stride_kn, stride_kd,
                   H, M, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """BLOCK rows of one head of K - mean to int8 with one absmax scale, and the block's flag."""
    b_x, i_n, i_bh, o_n, o_d, m_n = _load_rows(K, stride_kb, stride_kh, stride_kn, stride_kd, H,
                                               M, BLOCK, HEAD_DIM)
    b_bad = tl.load(BAD + i_bh.to(tl.int64) * M + o_n, mask=m_n, other=0)
    tl.store(BLOCK_BAD + i_bh.to(tl.int64) * tl.num_programs(0) + i_n, tl.max(b_bad, 0))
    b_mean = tl.load(SCALES + i_bh * HEAD_DIM + o_d)
    # rows past M stay 0: they must not set the block's scale
    b_x = tl.where(m_n[:, None] & finite(b_x), b_x - b_mean[None, :], 0.0)
    b_y, b_scale = quantize_int8(b_x)
    o_y = (i_bh.to(tl.int64) * M + o_n)[:, None] * HEAD_DIM + o_d[None, :]
    tl.store(K8 + o_y, b_y, mask=m_n[:, None])
    tl.store(KS + i_bh.to(tl.int64) * tl.num_programs(0) + i_n, b_scale)


@triton.jit
def _quant_v_block(V, VT8, SCALES, stride_vb, stride_vh, stride_vn, stride_vd, stride_yd, H, M,
                   BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, EMULATE_FP8: tl.constexpr):
    """BLOCK rows of one head of V to fp8 e4m3 times its channels' factors, stored transposed."""
    b_x, i_n, i_bh, o_n, o_d, m_n = _load_rows(V, stride_vb, stride_vh, stride_vn, stride_vd, H,
                                               M, BLOCK, HEAD_DIM)
    b_x = tl.where(finite(b_x), b_x, 0.0)
    rows = tl.num_programs(1) * HEAD_DIM  # one (B·H_kv, D) row of SCALES
    b_pre = tl.load(SCALES + 2 * rows + i_bh * HEAD_DIM + o_d)
    b_inv = tl.load(SCALES + 3 * rows + i_bh * HEAD_DIM + o_d)
    b_y = to_fp8(mul_rn(b_x * b_pre[None, :], b_inv[None, :]), EMULATE_FP8)
    p_y = VT8 + i_bh.to(tl.int64) * HEAD_DIM * stride_yd
    # masked at the padded row length (a multiple of 16; rows past M hold 0), not at M: a mask
    # constant over 16 tokens lets each thread store 16 bytes at once instead of one at a time
    tl.store(p_y + o_d[None, :] * stride_yd + o_n[:, None], b_y, mask=(o_n < stride_yd)[:, None])


@triton.jit(do_not_specialize=["M"])
def _quant_kv_kernel(
    K, V, K8, KS, VT8, SCALES, BAD, BLOCK_BAD,
    stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
    stride_yd, H, M, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, EMULATE_FP8: tl.constexpr,
):
    """One launch for both: K's blocks on axis 2 = 0, V's on axis 2 = 1."""
    if tl.program_id(2) == 0:
        _quant_k_block(K, K8, KS, SCALES, BAD, BLOCK_BAD, stride_kb, stride_kh, stride_kn,
                       stride_kd, H, M, BLOCK, HEAD_DIM)
    else:
        _quant_v_block(V, VT8, SCALES, stride_vb, stride_vh, stride_vn, stride_vd, stride_yd, H,
                       M, BLOCK, HEAD_DIM, EMULATE_FP8)
@triton.jit(do_not_specialize=["N"])
def _quant_q_kernel(
    Q, Q8, QS, QBAD, stride_qb, stride_qh, stride_qn, stride_qd, H, N,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """One BLOCK-row tile of one head of Q by `load_quantized_rows`: its int8 rows (Q8
    contiguous), its scale and its rows' flags."""
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_m = i_m * BLOCK + tl.arange(0, BLOCK)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    b_q, b_scale, b_bad = load_quantized_rows(Q + i_b * stride_qb + i_h * stride_qh, o_m, m_m,
                                              o_d, stride_qn, stride_qd)
    o_q = i_bh.to(tl.int64) * N + o_m
    tl.store(Q8 + o_q[:, None] * HEAD_DIM + o_d[None, :], b_q, mask=m_m[:, None])
    tl.store(QS + i_bh.to(tl.int64) * tl.num_programs(0) + i_m, b_scale)
    tl.store(QBAD + o_q, b_bad.to(tl.int8), mask=m_m)
# fmt: on


def quantize_q(q: Tensor, *, block_m: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Quantise q (B, H_q, N, D) to INT8 per ``block_m`` rows of a head as the attention kernels
    do: (int8 values (B, H_q, N, D), f32 scales (B, H_q, cdiv(N, block_m)), int8 flags (B, H_q, N)
    of rows that held a NaN / inf, quantised as 0). float16 / bfloat16 on a GPU or under the
    Triton interpreter."""
    check_q_to_quantize(q, block_m)
    check_triton_device("q", q)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        return quantize_q_blocks(q, block_m)


def quantize_q_blocks(q: Tensor, block_m: int) -> tuple[Tensor, Tensor, Tensor]:
    """`quantize_q` on an input its caller checked, on its device."""
    b, h, n, d = q.shape
    q8 = torch.empty((b, h, n, d), dtype=torch.int8, device=q.device)
    q_scale = torch.empty((b, h, triton.cdiv(n, block_m)), dtype=torch.float32, device=q.device)
    q_bad = torch.empty((b, h, n), dtype=torch.int8, device=q.device)
    if q.numel():
        # 8 warps, as the Q pass measured in quant23/
        _quant_q_kernel[(q_scale.shape[-1], b * h)](
            q, q8, q_scale, q_bad, *q.stride(), h, n, BLOCK=block_m, HEAD_DIM=d, num_warps=8
        )
    return q8, q_scale, q_bad


def check_q_to_quantize(q: Tensor, block_m: int, *, kernel: bool = True) -> None:
    """q and ``block_m`` as `quantize_q` (``kernel``: float16 / bfloat16) or its twin (float32
    too) take them; the device is the caller's check."""
    check_tensor("q", q, 4, "(batch, heads, seq, head_dim)")
    _check_half_pow2("q", q, kernel)
    check_pow2("block_m", block_m, 16, 128)


def check_qkv_to_quantize(q: Tensor, k: Tensor, v: Tensor, *, kernel: bool = True) -> None:
    """Shapes and dtypes of q, k, v as the Triton kernels (``kernel``: float16 / bfloat16) or the
    CPU twins (float32 too) take them; the device is the caller's check."""
    check_qkv(q, k, v)
    _check_half_pow2("q", q, kernel)


def check_kv_to_quantize(k: Tensor, v: Tensor, *, kernel: bool = True) -> None:
    """`check_qkv_to_quantize` for K and V alone, which must hold at least one key."""
    check_tensor("k", k, 4, "(batch, kv_heads, seq, head_dim)")
    check_v(k, v)
    _check_half_pow2("k", k, kernel)
    if k.numel() == 0:  # K's mean (its smoothing) needs a key
        raise ValueError(f"k: expected at least one key to quantise, got shape {tuple(k.shape)}")


def _check_half_pow2(name: str, x: Tensor, kernel: bool) -> None:
    half = (torch.float16, torch.bfloat16)
    check_dtype(name, x, half if kernel else (*half, torch.float32))
    check_pow2("head_dim", x.shape[-1], 32, 256)


def quantize_kv(k: Tensor, v: Tensor, *, block_n: int = 128) -> QuantizedKV:
    """Quantise K - mean(K) to INT8 per ``block_n`` rows and V to FP8 e4m3 per channel (see the
    module docstring); k, v (B, H_kv, M, D) float16 / bfloat16 with B·H_kv·M > 0, on a GPU or
    under the Triton interpreter."""
    check_kv_to_quantize(k, v)
    check_triton_device("k", k)
    check_fp8_device("v", v)
    check_pow2("block_n", block_n, 32, 128)
    with torch.cuda.device(k.device) if k.is_cuda else contextlib.nullcontext():
        return quantize_kv_blocks(k, v, block_n)


def quantize_kv_blocks(k: Tensor, v: Tensor, block_n: int) -> QuantizedKV:
    """`quantize_kv` on inputs its caller checked, on their device."""
    b, h_kv, m, d = k.shape
    dev = k.device
    chunks = triton.cdiv(m, _STATS_CHUNK)
    stats = torch.empty((2, b, h_kv, chunks, d), dtype=torch.float32, device=dev)
    kv_bad = torch.empty((b, h_kv, m), dtype=torch.int8, device=dev)
    _kv_stats_kernel[(chunks, b * h_kv)](
        k, v, stats, kv_bad, *k.stride(), *v.stride(), h_kv, m,
        CHUNK=_STATS_CHUNK, BLOCK=_STATS_BLOCK, HEAD_DIM=d, num_warps=_STATS_WARPS,
    )  # fmt: skip
    scales = torch.empty((4, b, h_kv, d), dtype=torch.float32, device=dev)  # mean, scale, factors
    _kv_scales_kernel[(b * h_kv,)](stats, scales, b * h_kv, m, chunks, HEAD_DIM=d)
    blocks = triton.cdiv(m, block_n)
    k8 = torch.empty((b, h_kv, m, d), dtype=torch.int8, device=dev)
    k_scale = torch.empty((b, h_kv, blocks), dtype=torch.float32, device=dev)
    k_block_bad = torch.empty((b, h_kv, blocks), dtype=torch.int8, device=dev)
    # Vᵀ rows padded to 16 bytes: TMA descriptors need 16-byte aligned strides
    v_t = torch.empty((b, h_kv, d, triton.cdiv(m, 16) * 16), dtype=torch.float8_e4m3fn, device=dev)
    # 8 warps hold a 128 x 128 block in half the registers a thread that 4 do (0.88 -> 0.65 ms
    # for the passes over Q, K and V at 64K on the H200, quant23/)
    _quant_kv_kernel[(blocks, b * h_kv, 2)](
        k, v, k8, k_scale, v_t, scales, kv_bad, k_block_bad, *k.stride(), *v.stride(),
        v_t.stride(2), h_kv, m, BLOCK=block_n, HEAD_DIM=d, EMULATE_FP8=INTERPRET, num_warps=8,
    )  # fmt: skip
    return QuantizedKV(
        k8, k_scale, scales[0], v_t[..., :m], scales[1], kv_bad, k_block_bad, block_n
    )  # fmt: skip
