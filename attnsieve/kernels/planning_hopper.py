"""FlexPrefill's one-pass last-query kernel for Hopper (sm_90), written in Gluon.

The same per-tile masses as `attnsieve.kernels.planning._last_block_parts_kernel` (each last
row's max score per 128-key block, and its probability mass there relative to that max, over the
whole block and over its leading keys), for FlexPrefill's 128-key blocks (Lai et al., arXiv
2502.20766) at head_dim 64 or 128. What differs is the schedule, which Triton does not let a
kernel choose:

- The Triton kernel issued tile j + 1's key loads only after tile j's softmax and waited for them
  at once (offline sm_90 SASS: `DEPBAR.LE SB0, 0x0` at the loop's top, the copies at its end);
  a third stage, which would hide them, leaves one program an SM. Here one producer warp streams
  the key tiles into a ring by TMA, ahead of the consumer.
- FlashAttention-3's overlap (Shah et al., arXiv 2407.08608): tile j + 1's Q·Kᵀ runs on the
  tensor cores, asynchronously, while tile j's exponentials run.
- Each program takes 64 of the last rows (one warpgroup's wgmma), so two programs cover 128, and
  writes its rows' masses straight from the MMA's register layout: the Triton kernel passed each
  of its three per-row stores through shared memory, with a barrier around each.

Both kernels are bound by latency, not by a unit: Nsight Compute at 64K on Llama-3-8B's heads
(benchmarks/results/h200/hopper45/) finds the exponentials' pipe busy 38 % of the time, the
integer / logic pipe 41-42 % and issue slots 46-47 % in either. At the Triton kernel's programs
this one was 2 % faster on Llama-3-8B's heads and 18-20 % slower on SmolLM2's at 8K and 32K;
what it gains (13 % at 64K and 128K on Llama-3-8B's heads, final45/) comes mostly from programs
several times as long, which its schedule affords (`program_tiles`).

Gluon has no interpreter: this path runs on the GPU only; its tests skip elsewhere.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from attnsieve.kernels import gluon_written_for, on_gluon_hopper, sm_count

try:  # written for (and run on) Triton 3.6's Gluon: `gluon_written_for`
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:
    gluon = None
if not gluon_written_for(triton.__version__):
    gluon = None

BLOCK_R, BLOCK_N, STAGES = 64, 128, 2  # last rows a program, keys a tile (= FlexPrefill's block)


def fits(q: Tensor, k: Tensor, block_k: int, block_l: int) -> bool:
    """Whether this kernel computes the parts of `planning.last_query_stats` for these inputs:
    128-key blocks, 64 or 128 row slots (33-128 last queries), head_dim 64 or 128, 16-bit q and k
    alike, k contiguous (a TMA view of its rows), on an sm_90 GPU."""
    return (
        gluon is not None
        and on_gluon_hopper(q)
        and block_k == BLOCK_N
        and block_l in (64, 128)
        and q.shape[-1] in (64, 128)
        and q.dtype in (torch.float16, torch.bfloat16)
        and k.dtype == q.dtype
        and k.is_contiguous()
        and k.data_ptr() % 16 == 0
    )


def block_parts(
    q: Tensor,
    k: Tensor,
    parts: tuple[Tensor, ...],
    rows: tuple[Tensor, Tensor],
    last_q: int,
    tiles: int,
    qk_scale: float,
) -> None:
    """Fill ``parts`` (part_m, lead, total and optionally raw, each (B·H_q, key tiles, BLOCK_L)
    float32) and ``rows`` (each program's (max, sum) a row over its tiles, each (B·H_q, chunks
    of ``tiles`` key tiles, BLOCK_L)) as `_last_block_parts_kernel` does; ``tiles`` a program
    (`program_tiles`), ``qk_scale`` in log2 units."""
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    part_m, lead, total = parts[:3]
    pooled = len(parts) == 4
    key_tiles, block_l = part_m.shape[1], part_m.shape[2]
    k2 = k.view(b * h_kv * m, d)
    tile = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    k_desc = TensorDescriptor(k2, list(k2.shape), list(k2.stride()), [BLOCK_N, d], tile)
    # fmt: off
    _kernel[(b * h_q, block_l // BLOCK_R, rows[0].shape[1])](  # a pair a row per run of tiles
        q, k_desc, part_m, lead, total, parts[-1], *rows, *q.stride()[:3], h_q, h_q // h_kv, h_kv,
        n, m, last_q, key_tiles, tiles, qk_scale,
        BLOCK_R=BLOCK_R, BLOCK_L=block_l, BLOCK_N=BLOCK_N, HEAD_DIM=d, STAGES=STAGES, POOLED=pooled,
        num_warps=4, maxnreg=128,  # the consumer warpgroup takes more, the producer warp 24
    )
    # fmt: on


def program_tiles(
    head_dim: int, programs: int, key_tiles: int, triton_tiles: int, device: torch.device
) -> int:
    """Key tiles a program of this kernel walks, ``programs`` programs per chunk of keys, where
    the Triton kernel walks ``triton_tiles``: more, since a program's start (Q's rows, its
    barriers, the first keys' latency) weighs more here. Four times as many at head_dim 64:
    SmolLM2's heads 23.8 / 46.2 / 142 us at 8K / 32K / 128K against 29.4 / 59.0 / 143 at the
    Triton kernel's count and 24.7 / 48.4 / 136 at twice it; fixed counts of 16, 32 or 64 were
    slower but for 16 at 128K (137). At head_dim 128, as many as leave at most one wave of
    programs (two an SM), at most 64: Llama-3-8B's heads took 124 / 238 / 459 us at 32K / 64K /
    128K at 64 tiles, 128 / 244 / 469 at 32, 145 / 245 / 473 at four times the Triton kernel's
    count, and 149 us at 32K at 56 tiles (five chunks of keys: ten programs a head, a second
    wave of 56 programs) (benchmarks/results/h200/hopper45/, final45/)."""
    if head_dim == 128:
        chunks = max(1, 2 * sm_count(device) // programs)
        return min(64, triton.cdiv(key_tiles, chunks))
    return 4 * triton_tiles  # the Triton kernel's at most 8: at most 32


if gluon is not None:
    # Kernel argument lists stay dense (one role per line) rather than one name per line.
    # fmt: off
    @gluon.jit
    def _producer(k_desc, k_smem, k_ready, k_empty, kv_row, t0, n_tiles, BLOCK_N: gl.constexpr,
                  STAGES: gl.constexpr):
        for j in range(n_tiles):
            s = j % STAGES
            mbarrier.wait(k_empty.index(s), ((j // STAGES) & 1) ^ 1)  # a fresh barrier passes 1
            mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [kv_row + (t0 + j) * BLOCK_N, 0],
                                            k_ready.index(s), k_smem.index(s))

    @gluon.jit
    def _tile_parts(s, t, o_row, o_pos, o_lead, o_c, PART_M, LEAD, TOTAL, RAW, p_row, M, L,
                    qk_scale, BLOCK_L: gl.constexpr, BLOCK_N: gl.constexpr,
                    MASKED: gl.constexpr, POOLED: gl.constexpr):
        """Store key tile t's (max, total, lead) of the rows, and with POOLED the sum of their
        raw scores (rows past L score 0: their queries are zero): MASKED hides keys past a row's
        position or past M (the next head's keys, in the tile's TMA view), and rows past L
        (unmasked, those score 0: their parts are junk, which the sums drop). Returns the rows'
        (max, total), base 2."""
        o_p = p_row + t * BLOCK_L
        if MASKED:
            o_n = t * BLOCK_N + o_c
            if POOLED:
                gl.store(RAW + o_p, gl.sum(gl.where(o_n[None, :] < M, s, 0.0), 1))
            m_s = (o_n[None, :] <= o_pos[:, None]) & (o_n[None, :] < M) & (o_row < L)[:, None]
            s = gl.where(m_s, s, float("-inf"))
        elif POOLED:
            gl.store(RAW + o_p, gl.sum(s, 1))
        b_m = gl.max(s, 1)  # raw scores' max (qk_scale > 0): one FMA an element below
        b_p = gl.exp2(s * qk_scale - gl.where(b_m == float("-inf"), 0.0, b_m * qk_scale)[:, None])
        b_m = b_m * qk_scale
        b_total = gl.sum(b_p, 1)
        gl.store(PART_M + o_p, b_m)
        gl.store(TOTAL + o_p, b_total)
        gl.store(LEAD + o_p, gl.sum(gl.where(o_c[None, :] <= o_lead[:, None], b_p, 0.0), 1))
        return b_m, b_total

    @gluon.jit
    def _fold(r_m, r_l, t_m, t_l):
        """The rows' running (max, sum) folded with a tile's (`planning.lse_fold`)."""
        new = gl.maximum(r_m, t_m)
        sub = gl.where(new == float("-inf"), 0.0, new)
        return new, r_l * gl.exp2(r_m - sub) + t_l * gl.exp2(t_m - sub)

    @gluon.jit
    def _consumer(Q, q_smem, k_smem, k_ready, k_empty, PART_M, LEAD, TOTAL, RAW, ROWS_M, ROWS_L,
                  stride_qb, stride_qh, stride_qn, i_b, i_h, i_bh, i_half, t0, n_tiles, n_full,
                  N, M, L, KEY_TILES, qk_scale,
                  BLOCK_R: gl.constexpr, BLOCK_L: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, POOLED: gl.constexpr,
                  num_warps: gl.constexpr):
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        o_qr = i_half * BLOCK_R + gl.arange(0, BLOCK_R, layout=gl.SliceLayout(1, blk))
        o_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, blk))
        p_q = (Q + i_b.to(gl.int64) * stride_qb + i_h.to(gl.int64) * stride_qh
               + (N - L + o_qr).to(gl.int64)[:, None] * stride_qn + o_d[None, :])
        q_smem.store(gl.load(p_q, mask=(o_qr < L)[:, None], other=0.0))  # padding rows: 0
        fence_async_shared()

        mma: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16])
        o_row = i_half * BLOCK_R + gl.arange(0, BLOCK_R, layout=gl.SliceLayout(1, mma))
        o_c = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma))
        o_pos = M - L + o_row
        o_lead = gl.maximum(o_pos, 0) % BLOCK_N  # a row's leading keys in every block
        p_row = i_bh.to(gl.int64) * KEY_TILES * BLOCK_L + o_row
        zero_s = gl.zeros([BLOCK_R, BLOCK_N], gl.float32, mma)
        mbarrier.wait(k_ready.index(0), 0)
        s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False,
                              is_async=True)
        s = warpgroup_mma_wait(0, deps=[s_tok])
        mbarrier.arrive(k_empty.index(0), count=1)
        r_m = gl.full([BLOCK_R], float("-inf"), gl.float32, gl.SliceLayout(1, mma))
        r_l = gl.zeros([BLOCK_R], gl.float32, gl.SliceLayout(1, mma))
        # tile j's exponentials while tile j + 1's scores run; the last tile after the loops
        n_plain = gl.minimum(n_full, n_tiles - 1)
        for j in range(0, n_plain):
            s, t_m, t_l = _next_scores(j, s, q_smem, k_smem, k_ready, k_empty, zero_s, o_row, o_pos,
                                       o_lead, o_c, PART_M, LEAD, TOTAL, RAW, p_row, t0, M, L,
                                       qk_scale, BLOCK_L, BLOCK_N, STAGES, False, POOLED)
            r_m, r_l = _fold(r_m, r_l, t_m, t_l)
        for j in range(n_plain, n_tiles - 1):
            s, t_m, t_l = _next_scores(j, s, q_smem, k_smem, k_ready, k_empty, zero_s, o_row, o_pos,
                                       o_lead, o_c, PART_M, LEAD, TOTAL, RAW, p_row, t0, M, L,
                                       qk_scale, BLOCK_L, BLOCK_N, STAGES, True, POOLED)
            r_m, r_l = _fold(r_m, r_l, t_m, t_l)
        t_m, t_l = _tile_parts(s, t0 + n_tiles - 1, o_row, o_pos, o_lead, o_c, PART_M, LEAD, TOTAL,
                               RAW, p_row, M, L, qk_scale, BLOCK_L, BLOCK_N, True, POOLED)
        r_m, r_l = _fold(r_m, r_l, t_m, t_l)
        # this program's pair a row: the sums fold the programs' pairs into the log-sum-exps
        o_rows = (i_bh.to(gl.int64) * gl.num_programs(2) + gl.program_id(2)) * BLOCK_L + o_row
        gl.store(ROWS_M + o_rows, r_m)
        gl.store(ROWS_L + o_rows, r_l)

    @gluon.jit
    def _next_scores(j, s, q_smem, k_smem, k_ready, k_empty, zero_s, o_row, o_pos, o_lead, o_c,
                     PART_M, LEAD, TOTAL, RAW, p_row, t0, M, L, qk_scale, BLOCK_L: gl.constexpr,
                     BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr,
                     POOLED: gl.constexpr):
        """Issue tile j + 1's Q·Kᵀ, store tile j's parts from ``s``; return tile j + 1's scores
        and tile j's (max, total) a row."""
        st1 = (j + 1) % STAGES
        mbarrier.wait(k_ready.index(st1), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_smem, k_smem.index(st1).permute((1, 0)), zero_s, use_acc=False,
                              is_async=True)
        t_m, t_l = _tile_parts(s, t0 + j, o_row, o_pos, o_lead, o_c, PART_M, LEAD, TOTAL, RAW,
                               p_row, M, L, qk_scale, BLOCK_L, BLOCK_N, MASKED, POOLED)
        s = warpgroup_mma_wait(0, deps=[s_tok])
        mbarrier.arrive(k_empty.index(st1), count=1)
        return s, t_m, t_l

    @gluon.jit
    def _kernel(Q, k_desc, PART_M, LEAD, TOTAL, RAW, ROWS_M, ROWS_L, stride_qb, stride_qh,
                stride_qn, H_Q, GROUP, H_KV, N, M, L, KEY_TILES, TILES, qk_scale,
                BLOCK_R: gl.constexpr, BLOCK_L: gl.constexpr, BLOCK_N: gl.constexpr,
                HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, POOLED: gl.constexpr,
                num_warps: gl.constexpr):
        i_bh = gl.program_id(0)
        i_half = gl.program_id(1)
        t0 = gl.program_id(2) * TILES
        i_b = i_bh // H_Q
        i_h = i_bh % H_Q
        n_tiles = gl.minimum(TILES, KEY_TILES - t0)
        # tiles before (M - L + 1) // BLOCK_N: every row sees all their keys
        n_full = gl.maximum(gl.minimum((M - L + 1) // BLOCK_N - t0, n_tiles), 0)

        dtype: gl.constexpr = Q.dtype.element_ty
        q_smem = gl.allocate_shared_memory(dtype, [BLOCK_R, HEAD_DIM], k_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=1)
        gl.warp_specialize([
            (_consumer, (Q, q_smem, k_smem, k_ready, k_empty, PART_M, LEAD, TOTAL, RAW, ROWS_M,
                         ROWS_L, stride_qb, stride_qh, stride_qn, i_b, i_h, i_bh, i_half, t0,
                         n_tiles, n_full, N, M, L, KEY_TILES, qk_scale, BLOCK_R, BLOCK_L, BLOCK_N,
                         HEAD_DIM, STAGES, POOLED, num_warps)),
            (_producer, (k_desc, k_smem, k_ready, k_empty, (i_b * H_KV + i_h // GROUP) * M, t0,
                         n_tiles, BLOCK_N, STAGES)),
        ], [1], [24])
    # fmt: on
