"""The plain-PyTorch twin of `attnsieve.kernels.quantize`: the same blocks, scales, rounding and
non-finite handling as the Triton passes, so the quantised values are bit-identical."""

from __future__ import annotations

import torch
from torch import Tensor

from attnsieve.checks import check_pow2
from attnsieve.kernels.quantize import (
    FP8_MAX,
    INT8_MAX,
    QuantizedQKV,
    check_keys,
    check_qkv_to_quantize,
    reciprocal_factors,
)


def round_fp8(x: Tensor) -> Tensor:
    """Round float32 ``x`` to float8 e4m3 (nearest even, saturating at ±448)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


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
    scale = torch.where(amax > 0, amax / INT8_MAX, 1.0)
    y = times_reciprocal(tiles, amax[..., None, None], INT8_MAX)
    y = torch.trunc(y + torch.where(y >= 0, 0.5, -0.5))  # half away from zero, as the kernel
    return y.to(torch.int8).view(b, h, -1, d)[:, :, :length], scale


def _finite_or_zero(x: Tensor) -> tuple[Tensor, Tensor]:
    """float32 ``x`` with NaN / inf as 0, and int8 flags of rows that held one."""
    ok = x.isfinite()
    return torch.where(ok, x.float(), 0.0), (~ok.all(-1)).to(torch.int8)


def quantize_qkv_reference(
    q: Tensor, k: Tensor, v: Tensor, *, block_m: int = 128, block_n: int = 128
) -> QuantizedQKV:
    """Twin of `attnsieve.kernels.quantize.quantize_qkv`."""
    check_qkv_to_quantize(q, k, v, kernel=False)
    check_pow2("block_m", block_m, 16, 128)
    check_pow2("block_n", block_n, 32, 128)
    check_keys(k)
    qf, q_bad = _finite_or_zero(q)
    kf, k_bad = _finite_or_zero(k)
    vf, v_bad = _finite_or_zero(v)
    k_mean = kf.sum(2) / k.shape[2]
    q8, q_scale = _int8_blocks(qf, block_m)
    k8, k_scale = _int8_blocks(kf - k_mean[:, :, None], block_n)
    v_max = vf.abs().amax(2)
    v_scale = torch.where(v_max > 0, v_max / FP8_MAX, 1.0)
    v_t = round_fp8(times_reciprocal(vf, v_max[:, :, None], FP8_MAX)).mT
    kv_bad = k_bad | v_bad
    pad = -kv_bad.shape[2] % block_n
    k_block_bad = torch.nn.functional.pad(kv_bad, (0, pad)).unflatten(2, (-1, block_n)).amax(-1)
    return QuantizedQKV(
        q8, q_scale, k8, k_scale, k_mean, v_t, v_scale, q_bad, kv_bad, k_block_bad, block_m,
        block_n
    )  # fmt: skip
