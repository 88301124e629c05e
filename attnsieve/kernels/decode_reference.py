"""Paged decode attention in plain PyTorch float32: the semantics the Triton kernel is tested on.

Each (batch, KV head) gathers its tokens through the page table (all of its pages, or the listed
ones), dequantises FP8 pages with their per-token scales, adds each token's log weight (if given) to
its logits, and runs an exact softmax for its ``g = H_q // H_kv`` query heads.
:func:`check_decode_inputs` is the argument check shared with
:func:`attnsieve.kernels.decode.decode_attention`.

FP8 pages' per-token scales are powers of two (`fp8_scales`), stored as float32. A power-of-two
scale costs e4m3 no precision (its relative rounding is the same in every binade; it only leaves
up to one binade of the range unused at the top) and makes the division exact, so the cast is the
one rounding on every device. The fiftieth session stored each as its one-byte biased exponent
(E8M0, 2.3 % fewer K and V bytes at head_dim 128); the decode kernel, which then loaded four
exponents as one 4-byte word, ran 6-8 % slower on dense FP8 pages on the H200 (1.56x against
1.66x bf16 at batch 1 / 128K; benchmarks/results/h200/fp8s50/), so the scales went back to float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnsieve.checks import cdiv, check_bool, check_index, check_out, check_scale, check_tensor

FP8 = torch.float8_e4m3fn
PAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, FP8)
I32 = torch.int32


def check_decode_inputs(
    q: Tensor,
    k_pages: Tensor,
    v_pages: Tensor,
    page_table: Tensor,
    lengths: Tensor,
    pages: Tensor | None,
    page_count: Tensor | None,
    scale: float | None,
    k_scale: Tensor | None,
    v_scale: Tensor | None,
    out: Tensor | None,
    log_weight: Tensor | None = None,
    return_lse: bool = False,
) -> None:
    """Shapes, dtypes and devices of a paged decode call; named TypeError / ValueError otherwise.

    Values (page ids, lengths within the table's capacity, the page list) are not read here: that
    would synchronise with the GPU. :func:`decode_reference` checks them.
    """
    check_tensor("q", q, 3, "(batch, heads, head_dim)")
    check_bool("return_lse", return_lse)
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"q: expected float16, bfloat16 or float32, got {q.dtype}")
    b, h_q, d = q.shape
    if d < 16 or d > 256 or d & (d - 1):
        raise ValueError(f"q: head_dim must be a power of two in [16, 256], got {d}")
    for name, t in (("k_pages", k_pages), ("v_pages", v_pages)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(
                f"{name}: expected 3 dims (num_pages, page_size, head_dim), got {tuple(t.shape)}"
            )
        if t.dtype not in PAGE_DTYPES:
            raise TypeError(f"{name}: expected dtype in {PAGE_DTYPES}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (q's), got {t.device}")
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{name}: the head_dim axis must have stride 1, got {t.stride()}")
    if k_pages.dtype != v_pages.dtype:
        raise TypeError(
            f"k_pages, v_pages: expected one dtype, got {k_pages.dtype}, {v_pages.dtype}"
        )
    if k_pages.shape != v_pages.shape:
        raise ValueError(
            f"k_pages, v_pages: expected one shape, got {tuple(k_pages.shape)}, "
            f"{tuple(v_pages.shape)}"
        )
    num_pages, page_size, d_kv = k_pages.shape
    if d_kv != d:
        raise ValueError(f"k_pages: head_dim {d_kv} differs from q's {d}")
    if page_size < 8 or page_size > 256 or page_size & (page_size - 1):
        raise ValueError(f"k_pages: page_size must be a power of two in [8, 256], got {page_size}")
    if q.stride(-1) != 1:
        raise ValueError(f"q: the head_dim axis must have stride 1, got strides {q.stride()}")
    if not isinstance(page_table, Tensor):
        raise TypeError(f"page_table: expected a torch.Tensor, got {type(page_table).__name__}")
    if page_table.dim() != 3:
        raise ValueError(
            "page_table: expected 3 dims (batch, kv_heads, max_pages), got shape "
            f"{tuple(page_table.shape)}"
        )
    h_kv = page_table.shape[1]
    if page_table.shape[0] != b or h_kv == 0 or h_q == 0 or h_q % h_kv:  # q against the tables
        raise ValueError(
            f"q: expected batch {page_table.shape[0]} and a positive multiple of the {h_kv} KV "
            f"heads of page_table, got batch {b} and {h_q} heads"
        )
    check_index("page_table", page_table, (b, h_kv, page_table.shape[2]), I32, q.device)
    check_index("lengths", lengths, (b, h_kv), I32, q.device)
    if (pages is None) != (page_count is None):
        raise ValueError("pages, page_count: give both (a sparse read list) or neither")
    if pages is not None:
        if not isinstance(pages, Tensor):
            raise TypeError(f"pages: expected a torch.Tensor or None, got {type(pages).__name__}")
        if pages.dim() != 3:
            raise ValueError(
                f"pages: expected 3 dims (batch, kv_heads, selected), got {tuple(pages.shape)}"
            )
        check_index("pages", pages, (b, h_kv, pages.shape[2]), I32, q.device)
        check_index("page_count", page_count, (b, h_kv), I32, q.device)
    check_scale(scale)
    fp8 = k_pages.dtype == FP8
    if not fp8 and k_pages.dtype != q.dtype:
        raise TypeError(
            f"k_pages: expected q's dtype {q.dtype} or float8_e4m3fn, got {k_pages.dtype}"
        )
    for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
        if not fp8:
            if s is not None:
                raise ValueError(f"{name}: only FP8 pages take scales; expected None")
            continue
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: FP8 pages need a float32 tensor of scales, got {s!r}")
        _check_per_slot(name, s, (num_pages, page_size), q.device, torch.float32)
    if fp8 and k_scale.stride() != v_scale.stride():  # the kernel reads both with one offset
        raise ValueError(
            f"v_scale: expected k_scale's strides {k_scale.stride()}, got {v_scale.stride()}"
        )
    if log_weight is not None:
        if not isinstance(log_weight, Tensor):
            raise TypeError(f"log_weight: expected a float32 tensor or None, got {log_weight!r}")
        _check_per_slot("log_weight", log_weight, (num_pages, page_size), q.device, torch.float32)
    if out is not None:
        check_out(out, q, q=q, k_pages=k_pages, v_pages=v_pages)


def _check_per_slot(
    name: str, t: Tensor, shape: tuple[int, int], device, dtype: torch.dtype
) -> None:
    """A value of ``dtype`` per pool slot: (num_pages, page_size) on q's device."""
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected {str(dtype).removeprefix('torch.')}, got {t.dtype}")
    if tuple(t.shape) != shape or t.device != device:
        raise ValueError(
            f"{name}: expected shape {shape} on {device}, got {tuple(t.shape)} on {t.device}"
        )


def _check_values(page_table, lengths, pages, page_count, num_pages, page_size) -> None:
    """What the launcher cannot check without a host sync; invalid values would read garbage."""
    max_pages = page_table.shape[-1]
    if bool((lengths < 0).any()) or bool((lengths > max_pages * page_size).any()):
        raise ValueError(f"lengths: expected values in [0, {max_pages * page_size}]")
    n_pages = (lengths[..., None] + page_size - 1) // page_size
    used = torch.arange(max_pages, device=lengths.device) < n_pages
    if bool(((page_table < 0) | (page_table >= num_pages))[used].any()):
        raise ValueError(f"page_table: used entries must be page ids in [0, {num_pages})")
    if pages is not None:
        if bool((page_count < 0).any()) or bool((page_count > pages.shape[-1]).any()):
            raise ValueError(f"page_count: expected values in [0, {pages.shape[-1]}]")
        listed = torch.arange(pages.shape[-1], device=pages.device) < page_count[..., None]
        if bool(((pages < 0) | (pages >= max_pages))[listed].any()):
            raise ValueError(f"pages: listed entries must be logical pages in [0, {max_pages})")
        if bool(((pages[..., 1:] <= pages[..., :-1]) & listed[..., 1:]).any()):
            raise ValueError("pages: each head's listed pages must be distinct and ascending")


def decode_reference(
    q: Tensor,
    k_pages: Tensor,
    v_pages: Tensor,
    page_table: Tensor,
    lengths: Tensor,
    *,
    pages: Tensor | None = None,
    page_count: Tensor | None = None,
    scale: float | None = None,
    k_scale: Tensor | None = None,
    v_scale: Tensor | None = None,
    log_weight: Tensor | None = None,
    out: Tensor | None = None,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Float32 twin of :func:`attnsieve.kernels.decode.decode_attention` (same arguments, same
    results up to rounding); it also checks the values the launcher trusts."""
    check_decode_inputs(
        q, k_pages, v_pages, page_table, lengths, pages, page_count, scale, k_scale, v_scale, out,
        log_weight, return_lse,
    )  # fmt: skip
    b, h_q, d = q.shape
    h_kv, page_size = page_table.shape[1], k_pages.shape[1]
    g = h_q // h_kv
    _check_values(page_table, lengths, pages, page_count, k_pages.shape[0], page_size)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    res = torch.zeros(b, h_q, d, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h_q), -math.inf, dtype=torch.float32, device=q.device)
    slots = torch.arange(page_size, device=q.device)
    for i_b in range(b):
        for i_h in range(h_kv):
            n = int(lengths[i_b, i_h])
            if pages is None:
                logical = torch.arange(cdiv(n, page_size), device=q.device)
            else:
                logical = pages[i_b, i_h, : int(page_count[i_b, i_h])].long()
            tok = (logical[:, None] * page_size + slots).flatten()
            keep = tok < n  # a listed page's slots past the length are masked
            phys = page_table[i_b, i_h].long()[logical][:, None].expand(-1, page_size).flatten()
            phys, slot = phys[keep], (tok % page_size)[keep]
            k = k_pages[phys, slot].float()  # [T, D]
            v = v_pages[phys, slot].float()
            if k_scale is not None:
                k = k * k_scale[phys, slot][:, None]
                v = v * v_scale[phys, slot][:, None]
            if k.shape[0] == 0:
                continue  # empty head (or empty selection): out 0, lse -inf
            rows = slice(i_h * g, (i_h + 1) * g)
            s = q[i_b, rows].float() @ k.T * scale  # [g, T]
            if log_weight is not None:
                s = s + log_weight[phys, slot]
            lse[i_b, rows] = torch.logsumexp(s, -1)
            res[i_b, rows] = torch.softmax(s, -1) @ v
    if out is None:
        out = res.to(q.dtype)
    else:
        out.copy_(res)
    return (out, lse) if return_lse else out


def fp8_scales(amax: Tensor) -> Tensor:
    """float32 scales: the smallest powers of two s with 448 · s >= ``amax`` (float32, >= 0), so
    amax / s fits e4m3. Exact: with amax = m · 2^E, m in [1, 2), s is 2^(E - 8), or 2^(E - 7)
    where m > 1.75 = 448 / 2^8. 0 for amax 0; at least 2^-126 for a subnormal amax; +inf for an
    infinite or NaN amax."""
    bits = amax.view(torch.int32)
    e = (bits >> 23) - 8 + ((bits & 0x7FFFFF) > 0x600000).to(torch.int32)
    e = torch.where(amax > 0, e.clamp(min=1), 0)
    e = torch.where(amax.isfinite(), e, 255)  # biased exponent 255: +inf
    return (e << 23).view(torch.float32)


def quantize_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token FP8: (x / scale as float8_e4m3fn, the float32 scale), the scale the smallest
    power of two at or above absmax over D / 448 (`fp8_scales`), so the division is exact and the
    cast the one rounding, on every device and in the fused append kernel
    (`attnsieve.kernels.cache_append`). Elements below 2^-126 in magnitude (float32 subnormals,
    which the GPU's division flushes) count as 0. An all-zero row stays 0 with scale 0, so that
    it never sets the decode kernel's per-tile scale (`attnsieve.kernels.decode`: float16 P
    relative to the tile's largest V scale); a row holding NaN or ±inf is stored as zeros with
    the infinite scale, so it dequantises to NaN throughout."""
    x = x.float()
    x = x.masked_fill(x.abs() < 2.0**-126, 0.0)
    scale = fp8_scales(x.abs().amax(-1))[..., None]
    x = torch.where(scale.isinf(), 0.0, x / torch.where(scale > 0, scale, 1.0))
    return x.to(FP8), scale[..., 0]
