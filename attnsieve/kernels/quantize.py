"""The quantisation passes of INT8·FP8 attention (`attnsieve.kernels.quant`).

SageAttention2 (Zhang et al., arXiv 2411.10958):

1. K smoothing: K's mean over tokens, per (batch, KV head, channel), is subtracted before
   quantising. Softmax is invariant to it (it adds one constant to each score row) and it removes
   the channel outliers that would otherwise set K's INT8 scale.
2. Q and K to INT8, symmetric, one scale (absmax / 127) per block of ``block_m`` query /
   ``block_n`` key rows of a head, i.e. per attention tile. Values round half away from zero.
3. V to FP8 e4m3, one scale (absmax / 448) per (batch, KV head, channel), stored transposed
   (B, H_kv, D, M) so that V's tile is the K-major operand Hopper's FP8 MMA wants.

Each tensor is quantised in one fused pass (read once, write int8 / fp8 + scales); K's mean and
V's channel absmax come from one statistics pass over K and V before it. A value is scaled as
``x * (top / absmax)``, one correctly rounded division per block (`times_reciprocal`, in the INT8
passes) or channel (`reciprocal_factors`, for V), not divided by its scale, which took twice
the time. NaN / inf cannot be
quantised: the passes quantise them as 0 (they never enter a mean, an absmax or a dot) and flag
their rows, and K's blocks that hold such a row, for the attention kernel.

Under the Triton interpreter (CPU tests) the fp32 -> fp8 cast mis-rounds values that round up into
the next binade, so `to_fp8` first rounds to the e4m3 grid in fp32 (EMULATE); the cast is then
exact. The twin is `attnsieve.kernels.quantize_reference.quantize_qkv_reference`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.checks import check_dtype, check_pow2, check_qkv
from attnsieve.kernels import INTERPRET, check_triton_device

FP8_MAX = 448.0  # largest finite float8 e4m3fn
INT8_MAX = 127.0
_STATS_CHUNK = 64 if INTERPRET else 1024  # tokens per program of the statistics pass
# the INT8 passes: 8 warps hold a 128 x 128 block in half the registers a thread that 4 do
# (0.88 -> 0.65 ms for Q, K and V at 64K on the H200, quant23/); no FMA contraction, since the
# rounding's add after the multiply must round as the twin's does
_PER_BLOCK = {"num_warps": 8, "enable_fp_fusion": False}


@dataclass(frozen=True)
class QuantizedQKV:
    """Q, K, V as the attention kernel reads them.

    ``q`` int8 (B, H_q, N, D) with ``q_scale`` f32 (B, H_q, cdiv(N, block_m)); ``k`` int8
    (B, H_kv, M, D) of K - ``k_mean`` (f32 (B, H_kv, D)) with ``k_scale`` f32
    (B, H_kv, cdiv(M, block_n)); ``v_t`` float8_e4m3fn (B, H_kv, D, M), V transposed (a view of a
    buffer padded along M to 16 bytes) with ``v_scale`` f32 (B, H_kv, D); ``q_bad`` int8
    (B, H_q, N) and ``kv_bad`` int8 (B, H_kv, M) flag rows that held a NaN / inf (quantised as 0);
    ``k_block_bad`` int8 (B, H_kv, cdiv(M, block_n)) flags K blocks that hold a flagged row.
    """

    q: Tensor
    q_scale: Tensor
    k: Tensor
    k_scale: Tensor
    k_mean: Tensor
    v_t: Tensor
    v_scale: Tensor
    q_bad: Tensor
    kv_bad: Tensor
    k_block_bad: Tensor
    block_m: int
    block_n: int

    def dequantize(self) -> tuple[Tensor, Tensor, Tensor]:
        """float32 (q, k - k_mean, v): what the kernel's integer / fp8 values stand for."""
        n, m = self.q.shape[2], self.k.shape[2]
        q_scale = self.q_scale.repeat_interleave(self.block_m, -1)[..., :n, None]
        k_scale = self.k_scale.repeat_interleave(self.block_n, -1)[..., :m, None]
        v = self.v_t.float().mT * self.v_scale[..., None, :]
        return self.q.float() * q_scale, self.k.float() * k_scale, v


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
def _finite(x):
    return tl.abs(x) < float("inf")  # False for NaN too


@triton.jit
def times_reciprocal(x, amax, TOP: tl.constexpr):
    """``(x * pre) * inv`` with `reciprocal_factors`' (pre, inv) of a block's ``amax``: one
    correctly rounded division a block instead of one an element (the pass's cost before)."""
    b_pre = tl.where(amax < 7.888609052210118e-31, 1.2676506002282294e30, 1.0)  # 2^-100, 2^100
    b_inv = tl.where(amax > 0, tl.math.div_rn(TOP, amax * b_pre), 1.0)
    return (x * b_pre) * b_inv


@triton.jit(do_not_specialize=["M"])
def _kv_stats_kernel(
    K, V, KSUM, VMAX, BAD,
    stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
    H_KV, M, CHUNK: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """One chunk of tokens: K's column sums and V's column absmax (finite values only), and a
    flag per token whose K or V row holds a NaN / inf."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    p_k = K + i_b * stride_kb + i_h * stride_kh
    p_v = V + i_b * stride_vb + i_h * stride_vh
    o_d = tl.arange(0, HEAD_DIM)
    b_sum = tl.zeros([HEAD_DIM], dtype=tl.float32)
    b_max = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for start in range(i_c * CHUNK, (i_c + 1) * CHUNK, BLOCK):
        o_n = start + tl.arange(0, BLOCK)
        m_n = o_n < M
        o_kn = o_n.to(tl.int64)[:, None]
        b_k = tl.load(p_k + o_kn * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                      other=0.0).to(tl.float32)  # [BLOCK, HEAD_DIM]
        b_v = tl.load(p_v + o_kn * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None],
                      other=0.0).to(tl.float32)
        m_k, m_v = _finite(b_k), _finite(b_v)
        b_sum += tl.sum(tl.where(m_k, b_k, 0.0), 0)
        b_max = tl.maximum(b_max, tl.max(tl.where(m_v, tl.abs(b_v), 0.0), 0))
        b_bad = tl.min((m_k & m_v).to(tl.int32), 1) == 0
        tl.store(BAD + i_bh.to(tl.int64) * M + o_n, b_bad.to(tl.int8), mask=m_n)
    o_s = (i_bh.to(tl.int64) * tl.num_programs(0) + i_c) * HEAD_DIM + o_d
    tl.store(KSUM + o_s, b_sum)
    tl.store(VMAX + o_s, b_max)


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


@triton.jit(do_not_specialize=["N"])
def _quant_int8_kernel(
    X, Y, S, MEAN, BAD, BLOCK_BAD, stride_xb, stride_xh, stride_xn, stride_xd, H, N,
    HAS_MEAN: tl.constexpr, WRITE_BAD: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """BLOCK rows of one head of X (minus MEAN) to int8 with one absmax scale: Q (writing its
    rows' flags to BAD) or K (reading them from BAD, writing the block's to BLOCK_BAD)."""
    b_x, i_n, i_bh, o_n, o_d, m_n = _load_rows(X, stride_xb, stride_xh, stride_xn, stride_xd, H,
                                               N, BLOCK, HEAD_DIM)
    m_x = _finite(b_x)
    if WRITE_BAD:
        b_bad = tl.min(m_x.to(tl.int32), 1) == 0
        tl.store(BAD + i_bh.to(tl.int64) * N + o_n, b_bad.to(tl.int8), mask=m_n)
    else:
        b_bad = tl.load(BAD + i_bh.to(tl.int64) * N + o_n, mask=m_n, other=0)
        tl.store(BLOCK_BAD + i_bh.to(tl.int64) * tl.num_programs(0) + i_n, tl.max(b_bad, 0))
    b_x = tl.where(m_x, b_x, 0.0)
    if HAS_MEAN:  # rows past N stay 0: they must not set the block's scale
        b_x = tl.where(m_n[:, None], b_x - tl.load(MEAN + i_bh * HEAD_DIM + o_d)[None, :], 0.0)
    b_amax = tl.max(tl.abs(b_x))
    b_scale = tl.where(b_amax > 0, tl.math.div_rn(b_amax, 127.0), 1.0)
    b_y = times_reciprocal(b_x, b_amax, 127.0)
    # round half away from zero, then truncate (launched without FMA contraction, as the twin)
    b_y = b_y + tl.where(b_y >= 0, 0.5, -0.5)
    o_y = (i_bh.to(tl.int64) * N + o_n)[:, None] * HEAD_DIM + o_d[None, :]
    tl.store(Y + o_y, b_y.to(tl.int8), mask=m_n[:, None])
    tl.store(S + i_bh.to(tl.int64) * tl.num_programs(0) + i_n, b_scale)


@triton.jit(do_not_specialize=["M", "stride_yd"])
def _quant_fp8_kernel(
    X, Y, PRE, INV, stride_xb, stride_xh, stride_xn, stride_xd, stride_yd, H, M,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, EMULATE_FP8: tl.constexpr,
):
    """BLOCK rows of one head of V to fp8 e4m3, times its channels' `reciprocal_factors`, stored
    transposed. torch computes the factors once: per program the whole pass took 0.65 ms at 64K
    on the H200, 0.59 with them loaded (quant23/warps/)."""
    b_x, i_n, i_bh, o_n, o_d, m_n = _load_rows(X, stride_xb, stride_xh, stride_xn, stride_xd, H,
                                               M, BLOCK, HEAD_DIM)
    b_x = tl.where(_finite(b_x), b_x, 0.0)
    b_pre = tl.load(PRE + i_bh * HEAD_DIM + o_d)
    b_inv = tl.load(INV + i_bh * HEAD_DIM + o_d)
    b_y = to_fp8((b_x * b_pre[None, :]) * b_inv[None, :], EMULATE_FP8)
    p_y = Y + i_bh.to(tl.int64) * HEAD_DIM * stride_yd
    tl.store(p_y + o_d[None, :] * stride_yd + o_n[:, None], b_y, mask=m_n[:, None])
# fmt: on


def reciprocal_factors(amax: Tensor, top: float) -> tuple[Tensor, Tensor]:
    """(pre, inv) with ``(x * pre) * inv`` = ``x * (top / amax)`` for ``|x| <= amax``, up to the
    roundings of inv and of the product (``x * pre`` is exact): the quantisation passes' scaling,
    one correctly rounded division per amax instead of one per element. ``pre`` is 2^100 below
    2^-100 (else 1), so that ``inv`` cannot overflow; ``inv`` is 1 where amax is 0."""
    pre = torch.where(amax < 2.0**-100, 2.0**100, 1.0)
    # a tensor numerator: Python-number / tensor is reciprocal-then-multiply in torch
    return pre, torch.where(amax > 0, torch.full_like(amax, top) / (amax * pre), 1.0)


def check_qkv_to_quantize(q: Tensor, k: Tensor, v: Tensor, *, kernel: bool = True) -> None:
    """Shapes and dtypes of q, k, v as the Triton passes (``kernel``: float16 / bfloat16) or the
    CPU twin (float32 too) take them; the device is the caller's check."""
    check_qkv(q, k, v)
    half = (torch.float16, torch.bfloat16)
    check_dtype("q", q, half if kernel else (*half, torch.float32))
    check_pow2("head_dim", q.shape[-1], 32, 256)


def quantize_qkv(
    q: Tensor, k: Tensor, v: Tensor, *, block_m: int = 128, block_n: int = 128
) -> QuantizedQKV:
    """Quantise q to INT8 per ``block_m`` rows, K - mean(K) to INT8 per ``block_n`` rows and V to
    FP8 e4m3 per channel (see the module docstring); q (B, H_q, N, D), k, v (B, H_kv, M, D)."""
    check_qkv_to_quantize(q, k, v)
    check_triton_device("q", q)
    check_pow2("block_m", block_m, 16, 128)
    check_pow2("block_n", block_n, 32, 128)
    check_keys(k)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        return quantize_blocks(q, k, v, block_m, block_n)


def check_keys(k: Tensor) -> None:
    """K's mean (its smoothing) needs at least one key: quantize_qkv takes no empty K."""
    if k.shape[2] == 0:
        raise ValueError(
            f"k: expected at least one key to quantise (M >= 1), got shape {tuple(k.shape)}"
        )


def quantize_blocks(q: Tensor, k: Tensor, v: Tensor, block_m: int, block_n: int) -> QuantizedQKV:
    """`quantize_qkv` on inputs its caller checked, on their device."""
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    dev = q.device
    chunks = triton.cdiv(m, _STATS_CHUNK)
    k_sum = torch.empty((b, h_kv, chunks, d), dtype=torch.float32, device=dev)
    v_max = torch.empty((b, h_kv, chunks, d), dtype=torch.float32, device=dev)
    kv_bad = torch.empty((b, h_kv, m), dtype=torch.int8, device=dev)
    _kv_stats_kernel[(chunks, b * h_kv)](
        k, v, k_sum, v_max, kv_bad, *k.stride(), *v.stride(), h_kv, m,
        CHUNK=_STATS_CHUNK, BLOCK=min(64, _STATS_CHUNK), HEAD_DIM=d,
    )  # fmt: skip
    k_mean = k_sum.sum(2) / m
    v_max = v_max.amax(2)
    v_scale = torch.where(v_max > 0, v_max / FP8_MAX, 1.0)

    q8 = torch.empty((b, h_q, n, d), dtype=torch.int8, device=dev)
    q_scale = torch.empty((b, h_q, triton.cdiv(n, block_m)), dtype=torch.float32, device=dev)
    q_bad = torch.empty((b, h_q, n), dtype=torch.int8, device=dev)
    _quant_int8_kernel[(q_scale.shape[-1], b * h_q)](
        q, q8, q_scale, q_scale, q_bad, q_bad, *q.stride(), h_q, n,
        HAS_MEAN=False, WRITE_BAD=True, BLOCK=block_m, HEAD_DIM=d, **_PER_BLOCK,
    )  # fmt: skip
    k8 = torch.empty((b, h_kv, m, d), dtype=torch.int8, device=dev)
    k_scale = torch.empty((b, h_kv, triton.cdiv(m, block_n)), dtype=torch.float32, device=dev)
    k_block_bad = torch.empty((b, h_kv, k_scale.shape[-1]), dtype=torch.int8, device=dev)
    _quant_int8_kernel[(k_scale.shape[-1], b * h_kv)](
        k, k8, k_scale, k_mean, kv_bad, k_block_bad, *k.stride(), h_kv, m,
        HAS_MEAN=True, WRITE_BAD=False, BLOCK=block_n, HEAD_DIM=d, **_PER_BLOCK,
    )  # fmt: skip
    # Vᵀ rows padded to 16 bytes: TMA descriptors need 16-byte aligned strides
    v_t = torch.empty((b, h_kv, d, triton.cdiv(m, 16) * 16), dtype=torch.float8_e4m3fn, device=dev)
    _quant_fp8_kernel[(triton.cdiv(m, block_n), b * h_kv)](
        v, v_t, *reciprocal_factors(v_max, FP8_MAX), *v.stride(), v_t.stride(2), h_kv, m,
        BLOCK=block_n, HEAD_DIM=d, EMULATE_FP8=INTERPRET, num_warps=8,
    )  # fmt: skip
    return QuantizedQKV(
        q8, q_scale, k8, k_scale, k_mean, v_t[..., :m], v_scale, q_bad, kv_bad, k_block_bad,
        block_m, block_n
    )  # fmt: skip
