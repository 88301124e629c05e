"""The plain-PyTorch twins of `attnsieve.kernels.quantize`: the same blocks, scales, rounding and
non-finite handling as the Triton code (its K / V pass, and `load_quantized_rows` on Q's tiles),
so the quantised values are bit-identical."""

from __future__ import annotations

import torch
from torch import Tensor

from attnsieve.checks import check_pow2
from attnsieve.kernels.quantize import (
    FP8_MAX,
    INT8_MAX,
    QuantizedKV,
    check_kv_to_quantize,
    reciprocal_factors,
)


def round_fp8(x: Tensor) -> Tensor:
    """Round float32 ``x`` to float8 e4m3 (nearest even, saturating at ±448)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def divide(x: Tensor, c: float) -> Tensor:
    """``x / c`` correctly rounded on every device, as the kernels' ``div_rn``: torch multiplies
    by the reciprocal of a Python-number divisor on CUDA."""
    return x / torch.full_like(x, c)


def times_reciprocal(x: Tensor, amax: Tensor, top: float) -> Tensor:
    """Twin of `attnsieve.kernels.quantize.times_reciprocal`."""
    pre, inv = reciprocal_factors(amax, top)
    return (x * pre) * inv


def _int8_blocks(x: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Symmetric INT8 of (B, H, L, D) float32 per ``block`` rows: (int8 values, scales)."""
    b, h, length, d = x.shape
    pad = -length % block
    tiles = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, -1, block, d)
    amax = tiles.abs().amax((-1, -2))
    scale = torch.where(amax > 0, divide(amax, INT8_MAX), 1.0)
    y = times_reciprocal(tiles, amax[..., None, None], INT8_MAX)
    y = torch.trunc(y + torch.where(y >= 0, 0.5, -0.5))  # half away from zero, as the kernel
    return y.to(torch.int8).view(b, h, -1, d)[:, :, :length], scale


def _finite_or_zero(x: Tensor) -> tuple[Tensor, Tensor]:
    """float32 ``x`` with NaN / inf as 0, and int8 flags of rows that held one."""
    ok = x.isfinite()
    return torch.where(ok, x.float(), 0.0), (~ok.all(-1)).to(torch.int8)


def quantize_q_reference(q: Tensor, block_m: int) -> tuple[Tensor, Tensor, Tensor]:
    """Q as the attention kernels quantise it, one ``block_m``-row tile at a time: int8 values
    (B, H_q, N, D), f32 scales (B, H_q, cdiv(N, block_m)) and int8 flags of rows that held a
    NaN / inf (B, H_q, N)."""
    qf, q_bad = _finite_or_zero(q)
    q8, q_scale = _int8_blocks(qf, block_m)
    return q8, q_scale, q_bad


def quantize_kv_reference(k: Tensor, v: Tensor, *, block_n: int = 128) -> QuantizedKV:
    """Twin of `attnsieve.kernels.quantize.quantize_kv`."""
    check_kv_to_quantize(k, v, kernel=False)
    check_pow2("block_n", block_n, 32, 128)
    kf, k_bad = _finite_or_zero(k)
    vf, v_bad = _finite_or_zero(v)
    k_mean = divide(kf.sum(2), k.shape[2])
    k8, k_scale = _int8_blocks(kf - k_mean[:, :, None], block_n)
    v_max = vf.abs().amax(2)
    v_scale = torch.where(v_max > 0, divide(v_max, FP8_MAX), 1.0)
    v_t = round_fp8(times_reciprocal(vf, v_max[:, :, None], FP8_MAX)).mT
    kv_bad = k_bad | v_bad
    pad = -kv_bad.shape[2] % block_n
    k_block_bad = torch.nn.functional.pad(kv_bad, (0, pad)).unflatten(2, (-1, block_n)).amax(-1)
    return QuantizedKV(k8, k_scale, k_mean, v_t, v_scale, kv_bad, k_block_bad, block_n)
