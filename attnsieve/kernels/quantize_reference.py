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
    check_q_to_quantize,
)


def round_fp8(x: Tensor) -> Tensor:
    """Round float32 ``x`` to float8 e4m3 (nearest even, saturating at ±448)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def divide(x: Tensor, c: float) -> Tensor:
    """``x / c`` correctly rounded on every device, as the kernels' ``div_rn``: torch multiplies
    by the reciprocal of a Python-number divisor on CUDA."""
    return x / torch.full_like(x, c)


def absmax_scaling(amax: Tensor, top: float) -> tuple[Tensor, Tensor, Tensor]:
    """Twin of `attnsieve.kernels.quantize.absmax_scaling`: (scale, pre, inv)."""
    pre = torch.where(amax < 2.0**-100, 2.0**100, 1.0)
    # a tensor numerator: Python-number / tensor is reciprocal-then-multiply in torch
    inv = torch.where(amax > 0, torch.full_like(amax, top) / (amax * pre), 1.0)
    return torch.where(amax > 0, divide(amax, top), 1.0), pre, inv


def _int8_blocks(x: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Symmetric INT8 of (B, H, L, D) float32 per ``block`` rows: (int8 values, scales)."""
    b, h, length, d = x.shape
    pad = -length % block
    tiles = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, -1, block, d)
    scale, pre, inv = absmax_scaling(tiles.abs().amax((-1, -2)), INT8_MAX)
    y = (tiles * pre[..., None, None]) * inv[..., None, None]
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
    check_q_to_quantize(q, block_m, kernel=False)
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
    # a NaN / inf is quantised as 0 after the mean is subtracted, as the kernel does
    k8, k_scale = _int8_blocks(torch.where(k.isfinite(), kf - k_mean[:, :, None], 0.0), block_n)
    v_scale, pre, inv = absmax_scaling(vf.abs().amax(2), FP8_MAX)
    v_t = round_fp8((vf * pre[:, :, None]) * inv[:, :, None]).mT
    kv_bad = k_bad | v_bad
    pad = -kv_bad.shape[2] % block_n
    k_block_bad = torch.nn.functional.pad(kv_bad, (0, pad)).unflatten(2, (-1, block_n)).amax(-1)
    return QuantizedKV(k8, k_scale, k_mean, v_t, v_scale, kv_bad, k_block_bad, block_n)
