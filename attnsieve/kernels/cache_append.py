"""One decode token per (batch row, KV head) into the paged cache, in one launch.

`attnsieve.cache.Cache.append` runs this for a single new token of a cache that stores the model
dtype and has no label channels, in place of about twenty small PyTorch ops (each a launch on the
GPU, ~0.4 ms a layer per decode step on the H200): each program finds its head's next slot from
``lengths`` and ``page_table``, writes K, V and the position, folds the key into its page's
min / max and bumps the head's length. Pages are allocated before, on the host mirror of the
lengths. Its twin is the PyTorch path of `Cache.append`; the tests compare the two.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _append_one_kernel(
    K, V, POS, K_PAGES, V_PAGES, POSITIONS, KEY_MIN, KEY_MAX, PAGE_TABLE, LENGTHS,
    stride_kb, stride_kh, stride_vb, stride_vh, stride_tb, stride_th, H_KV,
    PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    i_b, i_h = (i_bh // H_KV).to(tl.int64), (i_bh % H_KV).to(tl.int64)
    n = tl.load(LENGTHS + i_bh)  # tokens this head holds: the new one goes to slot n
    page = tl.load(PAGE_TABLE + i_b * stride_tb + i_h * stride_th + n // PAGE_SIZE).to(tl.int64)
    slot = page * PAGE_SIZE + n % PAGE_SIZE
    o_d = tl.arange(0, HEAD_DIM)
    b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_d)
    tl.store(K_PAGES + slot * HEAD_DIM + o_d, b_k)
    tl.store(V_PAGES + slot * HEAD_DIM + o_d, tl.load(V + i_b * stride_vb + i_h * stride_vh + o_d))
    tl.store(POSITIONS + slot, tl.load(POS + i_b))
    b_kf = b_k.to(tl.float32)
    p_min, p_max = KEY_MIN + page * HEAD_DIM + o_d, KEY_MAX + page * HEAD_DIM + o_d
    tl.store(p_min, tl.minimum(tl.load(p_min), b_kf))
    tl.store(p_max, tl.maximum(tl.load(p_max), b_kf))
    tl.store(LENGTHS + i_bh, n + 1)


def append_one(
    k: Tensor,
    v: Tensor,
    positions: Tensor,
    k_pages: Tensor,
    v_pages: Tensor,
    page_positions: Tensor,
    key_min: Tensor,
    key_max: Tensor,
    page_table: Tensor,
    lengths: Tensor,
) -> None:
    """Write k, v (B, H_kv, 1, D) at position ``positions`` (B,) into each head's next slot.

    ``page_table`` must already hold the page of that slot; ``lengths`` (contiguous int32
    (B, H_kv)) is bumped by one. Pools are contiguous (num_pages, page_size[, D]); k and v have a
    unit last stride. `Cache.append` checks all of this before it calls.
    """
    b, h_kv, _, d = k.shape
    with torch.cuda.device(k.device) if k.is_cuda else contextlib.nullcontext():
        _append_one_kernel[(b * h_kv,)](
            k, v, positions, k_pages, v_pages, page_positions, key_min, key_max, page_table,
            lengths, k.stride(0), k.stride(1), v.stride(0), v.stride(1), page_table.stride(0),
            page_table.stride(1), h_kv, PAGE_SIZE=k_pages.shape[1], HEAD_DIM=d,
        )  # fmt: skip
