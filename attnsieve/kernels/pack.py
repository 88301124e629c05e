"""A boolean block mask packed into a Layout's sorted key-block lists, in one Triton pass.

The twin, `attnsieve.layout_spans.pack_sorted`, takes a prefix sum, a sum, an int64 slot tensor
and a scatter over the whole (B, H, QB, KB) mask, each a pass over it. Here one program packs one
row: its kept key blocks in ascending order, then PAD to the row's end, and the count. In the
patched SmolLM2 at 128K that saved 0.2 ms a planned layer end to end
(benchmarks/results/h200/pack/e2e/ against pairs/e2e/). A program is one warp, whose scan needs
no shared memory and no barrier: FlexPrefill's replayed plan on Llama-3-8B's heads (H200) took
0.254 / 0.403 / 0.735 ms at 32K / 64K / 128K against 0.260 / 0.418 / 0.772 at four warps and
0.254 / 0.408 / 0.750 at two (benchmarks/results/h200/plan46/pack_warps.log).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device
from attnsieve.layout_spans import PAD

_BLOCK = 1024  # mask entries a program reads at a time


@triton.jit(do_not_specialize=["stride_mb", "stride_mh", "stride_mq", "KB"])
def _pack_kernel(
    MASK, IDX, COUNT, stride_mb, stride_mh, stride_mq, H, QB, KB,
    PAD_VALUE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    i_row = tl.program_id(0).to(tl.int64)  # over B * H * QB rows
    i_b, i_h, i_q = i_row // (H * QB), (i_row // QB) % H, i_row % QB
    p_mask = MASK + i_b * stride_mb + i_h * stride_mh + i_q * stride_mq
    p_idx = IDX + i_row * KB
    kept = 0
    for start in range(0, KB, BLOCK):
        o = start + tl.arange(0, BLOCK)
        keep = (tl.load(p_mask + o, mask=o < KB, other=0) != 0).to(tl.int32)
        slot = kept + tl.cumsum(keep, 0) - 1
        tl.store(p_idx + slot, o.to(tl.int32), mask=keep != 0)
        kept += tl.sum(keep, 0)
    for start in range(0, KB, BLOCK):
        o = start + tl.arange(0, BLOCK)
        tl.store(p_idx + o, tl.full([BLOCK], PAD_VALUE, tl.int32), mask=(o >= kept) & (o < KB))
    tl.store(COUNT + i_row, kept)


def pack_block_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(idx int32 (B, H, QB, KB), count int32 (B, H, QB)) of a bool (B, H, QB, KB) mask, KB >= 1:
    each row's True positions ascending, padded with PAD, as `pack_sorted` gives them."""
    check_triton_device("mask", mask)
    b, h, qb, kb = mask.shape
    idx = torch.empty((b, h, qb, kb), dtype=torch.int32, device=mask.device)
    count = torch.empty((b, h, qb), dtype=torch.int32, device=mask.device)
    if count.numel() == 0:
        return idx, count
    if mask.stride(-1) != 1:
        mask = mask.contiguous()
    with torch.cuda.device(mask.device) if mask.is_cuda else contextlib.nullcontext():
        _pack_kernel[(b * h * qb,)](
            mask.view(torch.uint8), idx, count, *mask.stride()[:3], h, qb, kb,
            PAD_VALUE=PAD, BLOCK=min(_BLOCK, triton.next_power_of_2(kb)), num_warps=1,
        )  # fmt: skip
    return idx, count
