"""INT8 Q·Kᵀ / FP8 P·V causal attention for Hopper (sm_90), in order or over key blocks, in Gluon.

SageAttention2's quantised attention (Zhang et al., arXiv 2411.10958) as the sm_90 path of
`attnsieve.kernels.quant` at head_dim 128, causal, with at least as many keys as queries: in
order (no layout, or `Layout.dense`), or over a layout of 128-key blocks alone (SpargeAttn's block
sparsity, arXiv 2502.18137; columns and spans stay on the Triton kernel). Same inputs (q, and
`quantize_kv_blocks`' 128-key K blocks), the same quantisation of each program's 64-row Q tile
(`quantize.quantize_int8`, spelt in Gluon), the same outputs and the same non-finite semantics as
the Triton kernel (a row that sees no key gives 0 and lse -inf); what differs is the schedule,
which Triton does not let a kernel choose:

- Warp-specialised (FlashAttention-3, Shah et al., arXiv 2407.08608): one producer warp streams K
  and Vᵀ tiles into a two-stage ring by TMA (while the consumer warpgroup quantises Q into shared
  memory); the consumer never waits on a load it could have issued earlier.
- FA3's intra-warpgroup overlap: tile j + 1's Q·Kᵀ and tile j - 1's P·V run on the tensor cores
  while tile j's softmax runs, through asynchronous wgmma.
- P·V accumulates inside the FP8 MMA (FA3's choice, not SageAttention2's two-level accumulation):
  a fresh product per tile added in fp32 needs 64 registers more a thread than this schedule has.
  The MMA keeps about 14 bits of the running sum from tile to tile: against the twin (which adds
  each tile in fp32) the tests' cases reach 2.3e-3 relative RMS where the Triton kernel stays
  under 1e-3, while against cuDNN's bf16 output the worst head's cosine is 0.99929 / 0.99928 at
  32K / 128K on Llama-3-8B's heads, the Triton kernel's to the fifth digit
  (benchmarks/results/h200/quant25/).
- Q is quantised here, by the consumer warpgroup into shared memory, not by a pass before the
  kernel: no int8 copy of Q is written, read back or held in memory, and the pass before the
  kernel covers K and V only. Side by side in one run on Llama-3-8B's heads, whole calls took
  11.94 / 186.4 ms at 32K / 128K against 12.11 / 189.8 for this kernel reading Q by TMA from the
  Q pass (benchmarks/results/h200/quant27/qpass/).
- Over a layout each program walks its query block's sorted block list, the blocks every row sees
  whole first and the masked ones after. A tile's block index is loaded two tiles ahead and its K
  scale and non-finite flag one tile ahead, so no softmax waits on a chain of dependent loads (the
  main loop: 589 SASS instructions a tile against 576 in order, offline sm_90:
  benchmarks/inspect_quant_hopper_sass.py). The twenty-fifth session's version, with the loads in
  the tile's own iteration and a Q pass in front, ran 2 % slower than the Triton kernel; this one
  took 5.92-5.96 ms against the Triton path's 6.22 on `bench kernels`' 10 % / 64K row on an H100
  (benchmarks/results/h100/quant58/).
- P reaches the MMA through shared memory: an fp8 operand in registers that lives across loop
  iterations is unpacked and repacked byte by byte (185 PRMT a tile, offline sm_90 SASS).
- The int32 scores' conversion offset (s + 1.5·2²³ as fp32 bits) folds into exp2's FMA, in whole and
  masked tiles alike, and Q's block scale is one scalar a program: 576 instructions a thread a tile
  in order against 675 in the Triton kernel's loop (offline sm_90 SASS). A masked tile, one or more
  a program, takes 981, where it took 1557 with its scores scaled before exp2 and each row's
  non-finite flag reduced over the whole tile (now: from the block's first flagged key, the keys'
  flags read only where the block's own flag is set). The fold rounds each row's exp2 offset at the
  magnitude of 1.5·2²³ times the tile's score scale: an error of up to about that scale in log2
  units, one per (row, tile), which a review simulated at 7.7e-4 / 6.7e-3 for Q·K absmax products of
  100 / 1000 (the Triton kernel: 1.8e-5 / 1.4e-4). It is far below INT8's own score error: the
  relative error to cuDNN's output at 32K / 128K is 0.0367 / 0.0370 against the Triton kernel's
  0.0367 / 0.0368.

Gluon has no interpreter: this path runs on the GPU only; its tests skip elsewhere.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from attnsieve.kernels import gluon_written_for, on_gluon_hopper
from attnsieve.kernels.prefill import index_strides, layout_tensors
from attnsieve.kernels.quantize import QuantizedKV
from attnsieve.layout import Layout

try:  # written for (and run on) Triton 3.6's Gluon: `gluon_written_for`
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.extra import libdevice
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_init,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:
    gluon = None
if not gluon_written_for(triton.__version__):
    gluon = None

BLOCK_M, BLOCK_N, HEAD_DIM, STAGES = 64, 128, 128, 2


def fits(q: Tensor, k: Tensor, layout: Layout | None, causal: bool, tiles: tuple[int, int]) -> bool:
    """Whether this kernel runs a call of `quant_attention` on these inputs, ``layout`` (None: in
    order) and quantisation ``tiles`` (BLOCK_M, BLOCK_N): causal, head_dim 128, M >= N, an sm_90
    GPU, and a layout of key blocks alone (no columns or spans)."""
    return (
        gluon is not None
        and tiles == (BLOCK_M, BLOCK_N)
        and on_gluon_hopper(q)
        and causal
        and q.shape[-1] == HEAD_DIM
        and k.shape[2] >= q.shape[2]
        and (layout is None or not (layout.has_columns or layout.has_spans))
    )


def attention(
    q: Tensor,
    z: QuantizedKV,
    out: Tensor,
    lse: Tensor | None,
    scale_log2: float,
    layout: Layout | None = None,
) -> None:
    """Write ``out`` (B, H_q, N, D, any strides) and, unless None, ``lse`` (B, H_q, N,
    contiguous) from ``q`` (any strides) and ``z``, over ``layout``'s key blocks (None: every
    block in order); ``scale_log2`` is the softmax scale times log2(e)."""
    b, h_q, n, d = q.shape
    h_kv, m = z.k.shape[1], z.k.shape[2]
    k2 = z.k.view(b * h_kv * m, d)
    # Vᵀ's rows are padded to 16 bytes: a (B·H_kv·D, M) view with the padded row stride
    v2 = torch.as_strided(z.v_t, (b * h_kv * d, m), (z.v_t.stride(2), 1))
    int8_tile = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)
    k_desc = TensorDescriptor(k2, list(k2.shape), list(k2.stride()), [BLOCK_N, d], int8_tile)
    v_desc = TensorDescriptor(v2, list(v2.shape), list(v2.stride()), [d, BLOCK_N], int8_tile)
    if layout is None:  # the block list is never read: placeholders
        bidx, bcnt, block_q, div, list_strides = z.k_scale, z.k_scale, BLOCK_M, 1, (0,) * 6
    else:
        bidx, bcnt = layout_tensors(layout)[:2]
        list_strides = (*index_strides(bidx, layout.batch), *index_strides(bcnt, layout.batch))
        block_q, div = layout.block_q, h_q // layout.heads
    # fmt: off
    _kernel[(triton.cdiv(n, BLOCK_M), b * h_q)](
        q, k_desc, v_desc, out, out if lse is None else lse, z.k_scale, z.k_mean, z.v_scale,
        z.kv_bad, z.k_block_bad, bidx, bcnt, *q.stride(), *out.stride(), *list_strides, n, m,
        h_q, h_kv, div, scale_log2,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_Q=block_q, HEAD_DIM=d, STAGES=STAGES,
        SPARSE=layout is not None, RETURN_LSE=lse is not None,
        # one consumer warpgroup and a producer warpgroup (one warp works) at 128 registers a
        # thread: the consumer takes 232, the producer 24, and two programs share an SM
        num_warps=4, maxnreg=128,
    )
    # fmt: on


if gluon is not None:
    LOG2_FP8_MAX = gl.constexpr(8.807354922057604)  # P in [0, 1] is scaled by 448 = 2^8.807...
    MAGIC = gl.constexpr(12582912.0)  # 1.5 * 2^23

    # Kernel argument lists stay dense (one role per line) rather than one name per line.
    # fmt: off
    @gluon.jit
    def _block(p_idx, j, n_tiles, SPARSE: gl.constexpr):
        """Key block of the program's tile j: its j-th listed block, or block j in order (0 past
        the list's end, so that a tile loaded ahead stays in bounds)."""
        if SPARSE:
            return gl.load(p_idx + j, mask=j < n_tiles, other=0)
        else:
            return j

    @gluon.jit
    def _producer(k_desc, v_desc, bufs, bars, p_idx, kv_row, vt_row, n_tiles,
                  BLOCK_N: gl.constexpr, STAGES: gl.constexpr, SPARSE: gl.constexpr):
        q_smem, k_smem, v_smem, p_smem = bufs
        k_ready, k_empty, v_ready, v_empty = bars
        for j in range(n_tiles):
            s = j % STAGES
            phase = (j // STAGES) & 1
            start = _block(p_idx, j, n_tiles, SPARSE) * BLOCK_N  # loaded while the stage frees
            mbarrier.wait(k_empty.index(s), phase ^ 1)  # a fresh barrier passes phase 1
            mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [kv_row + start, 0], k_ready.index(s),
                                            k_smem.index(s))
            mbarrier.wait(v_empty.index(s), phase ^ 1)
            mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [vt_row, start], v_ready.index(s),
                                            v_smem.index(s))

    @gluon.jit
    def _score_scale(qs, p_ks, blk):
        """A tile's score scale, Q's times its K block's, never below float32's least normal: a
        product that underflows to 0 would turn a masked score's -inf into NaN (-inf x 0); at
        that floor every score is far below 1, as the 0 it replaces."""
        return gl.maximum(qs * gl.load(p_ks + blk), 1.1754943508222875e-38)

    @gluon.jit
    def _softmax(s_int, sc, kbb, m_i, l_i, row_bad, o_qpos, o_n, KVBAD, M, MASKED: gl.constexpr,
                 SPARSE: gl.constexpr):
        """Fold one tile of int32 scores into the running softmax: (P x 448 in fp8, alpha, m, l,
        row_bad). ``sc`` is the tile's score scale (one Q block x one K block, log2 units);
        masked tiles hide keys past a row's position (or past M), their scores folded into exp2
        as whole tiles' are, and flag the rows that reach the block's first non-finite key,
        reading the keys' flags only where the block's flag ``kbb`` says it holds one (their
        load, in each program's last tile, was its longest wait)."""
        s = (s_int + 0x4B400000).to(gl.float32, bitcast=True)  # = s + 1.5 * 2^23, exactly
        if MASKED:
            m_s = (o_n[None, :] <= o_qpos[:, None]) & (o_n[None, :] < M)
            s = gl.where(m_s, s, float("-inf"))  # sc > 0 (`_score_scale`): -inf, exp2 gives 0
            m_new = gl.maximum(m_i, (gl.max(s, 1) - MAGIC) * sc)
            m_sub = m_new
            if SPARSE:  # a row may have seen no key yet: subtract 0, so exp2 gives 0, not NaN
                m_sub = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(s * sc - (MAGIC * sc + m_sub - LOG2_FP8_MAX)[:, None])
            k_bad = gl.load(KVBAD + o_n, mask=(o_n < M) & (kbb != 0), other=0)
            first_bad = gl.min(gl.where(k_bad != 0, o_n, 2147483647), 0)
            row_bad = row_bad | (o_qpos >= first_bad)
        else:
            m_new = gl.maximum(m_i, (gl.max(s, 1) - MAGIC) * sc)
            m_sub = m_new
            p = gl.exp2(s * sc - (MAGIC * sc + m_new - LOG2_FP8_MAX)[:, None])
        # 0 on a row's first keys; in order m is finite from the first tile on (key 0)
        alpha = gl.exp2(m_i - m_sub)
        l_i = l_i * alpha + gl.sum(p, 1)
        return p.to(gl.float8e4nv), alpha, m_new, l_i, row_bad

    @gluon.jit
    def _issue_pv(j, acc, alpha, p8, bufs, bars, STAGES: gl.constexpr, IN_FLIGHT: gl.constexpr):
        """Wait for P·V of tile j - 1 (``IN_FLIGHT`` later MMAs may still run), free its V stage,
        rescale O to tile j's row max, and issue P·V of tile j through shared memory."""
        q_smem, k_smem, v_smem, p_smem = bufs
        k_ready, k_empty, v_ready, v_empty = bars
        st = j % STAGES
        acc = warpgroup_mma_wait(IN_FLIGHT, deps=[acc])
        mbarrier.arrive(v_empty.index((j + STAGES - 1) % STAGES), count=1, pred=j > 0)
        acc = acc * alpha[:, None]
        p_smem.store(p8)
        fence_async_shared()
        mbarrier.wait(v_ready.index(st), (j // STAGES) & 1)
        return warpgroup_mma(p_smem, v_smem.index(st).permute((1, 0)), acc, is_async=True)

    @gluon.jit
    def _step(j, s_int, acc, m_i, l_i, row_bad, bufs, bars, sc, kbb, o_qpos, o_n, KVBAD, M,
              zero_s, STAGES: gl.constexpr, MASKED: gl.constexpr, SPARSE: gl.constexpr):
        """Softmax of tile j while Q·Kᵀ of tile j + 1 and P·V of tile j - 1 run; then P·V of tile
        j is issued and the scores of tile j + 1 are taken."""
        q_smem, k_smem, v_smem, p_smem = bufs
        k_ready, k_empty, v_ready, v_empty = bars
        st1 = (j + 1) % STAGES
        mbarrier.wait(k_ready.index(st1), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_smem, k_smem.index(st1).permute((1, 0)), zero_s, use_acc=False,
                              is_async=True)
        p8, alpha, m_i, l_i, row_bad = _softmax(s_int, sc, kbb, m_i, l_i, row_bad, o_qpos, o_n,
                                                KVBAD, M, MASKED, SPARSE)
        acc = _issue_pv(j, acc, alpha, p8, bufs, bars, STAGES, 1)  # Q·Kᵀ of j + 1 stays in flight
        s_int = warpgroup_mma_wait(1, deps=[s_tok])  # Q·Kᵀ of tile j + 1
        mbarrier.arrive(k_empty.index(st1), count=1)
        return s_int, acc, m_i, l_i, row_bad

    @gluon.jit
    def _quantize_q(Q, q_smem, stride_qb, stride_qh, stride_qn, stride_qd, i_b, i_h, i_m, N,
                    BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, num_warps: gl.constexpr):
        """`quantize.quantize_int8` of this program's Q tile (rows past N: 0), into q_smem;
        returns its scale and the flags of rows that held a NaN / inf (quantised as 0)."""
        # 8 contiguous elements (16 bytes) a thread: one vector load
        blk: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
        o_m = i_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, blk))
        o_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, blk))
        p_q = (Q + i_b.to(gl.int64) * stride_qb + i_h.to(gl.int64) * stride_qh
               + o_m.to(gl.int64)[:, None] * stride_qn + o_d[None, :] * stride_qd)
        b_x = gl.load(p_q, mask=(o_m < N)[:, None], other=0.0).to(gl.float32)
        m_x = gl.abs(b_x) < float("inf")  # False for NaN too
        q_bad = gl.min(m_x.to(gl.int32), 1) == 0
        b_x = gl.where(m_x, b_x, 0.0)
        amax = gl.max(gl.max(gl.abs(b_x), 1), 0)
        scale = gl.where(amax > 0, gl.div_rn(amax, 127.0), 1.0)
        pre = gl.where(amax < 7.888609052210118e-31, 1.2676506002282294e30, 1.0)  # 2^-100, 2^100
        inv = gl.where(amax > 0, gl.div_rn(127.0, amax * pre), 1.0)
        b_y = libdevice.mul_rn(b_x * pre, inv)  # never contracted with the add into an FMA
        b_y = b_y + gl.where(b_y >= 0, 0.5, -0.5)  # half away from zero, then truncated
        q_smem.store(b_y.to(gl.int8))
        fence_async_shared()
        return scale, q_bad.to(gl.int8)

    @gluon.jit
    def _consumer(Q, bufs, bars, Out, LSE, KS, KMEAN, VS, KVBAD, KBLOCKBAD, p_idx,
                  stride_qb, stride_qh, stride_qn, stride_qd,
                  stride_ob, stride_oh, stride_on, stride_od,
                  i_b, i_h, i_bh, i_bkv, i_m, n_tiles, n_full, N, M, qk_scale,
                  BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                  STAGES: gl.constexpr, SPARSE: gl.constexpr, RETURN_LSE: gl.constexpr,
                  num_warps: gl.constexpr):
        q_scale, q_bad = _quantize_q(Q, bufs[0], stride_qb, stride_qh, stride_qn, stride_qd, i_b,
                                     i_h, i_m, N, BLOCK_M, HEAD_DIM, num_warps)
        # one layout serves S (BLOCK_M x BLOCK_N) and O (BLOCK_M x HEAD_DIM): BLOCK_N == HEAD_DIM
        mma: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 32])
        rows: gl.constexpr = gl.SliceLayout(1, mma)
        cols: gl.constexpr = gl.SliceLayout(0, mma)
        o_m = i_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=rows)
        o_qpos = o_m + (M - N)  # bottom-right aligned query positions
        o_n0 = gl.arange(0, BLOCK_N, layout=cols)
        o_d = gl.arange(0, HEAD_DIM, layout=cols)
        i_bkv64 = i_bkv.to(gl.int64)
        p_kvbad = KVBAD + i_bkv64 * M
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, mma)
        m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, rows)
        l_i = gl.zeros([BLOCK_M], gl.float32, rows)
        row_bad = gl.zeros([BLOCK_M], gl.int1, rows)
        qs = q_scale * qk_scale
        p_ks = KS + i_bkv64 * gl.cdiv(M, BLOCK_N)
        p_kbb = KBLOCKBAD + i_bkv64 * gl.cdiv(M, BLOCK_N)
        if not SPARSE or n_tiles > 0:  # an empty block list: no tile, nothing to wait for
            acc, m_i, l_i, row_bad = _attend(
                bufs, bars, p_idx, p_ks, p_kbb, p_kvbad, qs, o_qpos, o_n0, n_tiles, n_full, M,
                acc, m_i, l_i, row_bad, BLOCK_M, BLOCK_N, STAGES, SPARSE, mma)

        # rows that saw no key: 0 and lse -inf (never in order: every row sees key 0); rows that
        # saw a non-finite query or key: NaN
        m_row = o_m < N
        i_bh64 = i_bh.to(gl.int64)
        empty = l_i == 0.0
        row_bad = row_bad | ((gl.convert_layout(q_bad, rows) != 0) & ~empty)
        b_vs = gl.load(VS + i_bkv64 * HEAD_DIM + o_d)  # V's channel scale (l carries P's 448)
        b_r = gl.where(row_bad, float("nan"), 1.0 / gl.where(empty, 1.0, l_i))
        b_o = acc * b_r[:, None] * b_vs[None, :]
        p_o = (Out + i_b.to(gl.int64) * stride_ob + i_h.to(gl.int64) * stride_oh
               + o_m.to(gl.int64)[:, None] * stride_on + o_d[None, :] * stride_od)
        gl.store(p_o, b_o.to(Out.dtype.element_ty), mask=m_row[:, None])
        if RETURN_LSE:
            # K smoothing shifted every score of a row by q . mean(K): softmax ignores it, the lse
            # does not. From Q as given, as the Triton kernel (`quant._quant_fwd_kernel`) does
            p_x = (Q + i_b.to(gl.int64) * stride_qb + i_h.to(gl.int64) * stride_qh
                   + o_m.to(gl.int64)[:, None] * stride_qn + o_d[None, :] * stride_qd)
            b_x = gl.load(p_x, mask=m_row[:, None], other=0.0).to(gl.float32)
            b_shift = gl.sum(b_x * gl.load(KMEAN + i_bkv64 * HEAD_DIM + o_d)[None, :], 1)
            b_lse = (m_i + gl.log2(gl.where(empty, 1.0, l_i)) - LOG2_FP8_MAX
                     + b_shift * qk_scale) * 0.6931471805599453
            b_lse = gl.where(empty, float("-inf"), b_lse)
            gl.store(LSE + i_bh64 * N + o_m, gl.where(row_bad, float("nan"), b_lse), mask=m_row)

    @gluon.jit
    def _attend(bufs, bars, p_idx, p_ks, p_kbb, p_kvbad, qs, o_qpos, o_n0, n_tiles, n_full, M,
                acc, m_i, l_i, row_bad, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                STAGES: gl.constexpr, SPARSE: gl.constexpr, mma: gl.constexpr):
        """The program's n_tiles key tiles (n_full of them seen whole by every row). Each tile's
        block is loaded two tiles ahead and its K scale and flag one tile ahead, so that no
        softmax waits on a load of its own tile's (a block list's loads depend on each other),
        but for a masked tile's per-key non-finite flags, read where its block holds one."""
        q_smem, k_smem, v_smem, p_smem = bufs
        k_ready, k_empty, v_ready, v_empty = bars
        zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.int32, mma)
        acc = warpgroup_mma_init(acc)
        tiles_bad = gl.to_tensor(0)  # tiles seen whole: one flag a K block for every row
        blk = _block(p_idx, gl.to_tensor(0), n_tiles, SPARSE)
        blk_next = _block(p_idx, gl.to_tensor(1), n_tiles, SPARSE)
        sc = _score_scale(qs, p_ks, blk)
        kbb = gl.load(p_kbb + blk).to(gl.int32)
        mbarrier.wait(k_ready.index(0), 0)
        s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False,
                              is_async=True)
        s_int = warpgroup_mma_wait(0, deps=[s_tok])
        mbarrier.arrive(k_empty.index(0), count=1)
        # the very last tile is taken after the loops (no next tile to overlap), masked
        n_plain = gl.minimum(n_full, n_tiles - 1)
        for j in range(0, n_plain):
            blk_after = _block(p_idx, j + 2, n_tiles, SPARSE)
            sc_next = _score_scale(qs, p_ks, blk_next)
            kbb_next = gl.load(p_kbb + blk_next).to(gl.int32)
            tiles_bad = tiles_bad | kbb
            s_int, acc, m_i, l_i, row_bad = _step(
                j, s_int, acc, m_i, l_i, row_bad, bufs, bars, sc, kbb, o_qpos,
                blk * BLOCK_N + o_n0, p_kvbad, M, zero_s, STAGES, False, SPARSE)
            blk, blk_next, sc, kbb = blk_next, blk_after, sc_next, kbb_next
        for j in range(n_plain, n_tiles - 1):
            blk_after = _block(p_idx, j + 2, n_tiles, SPARSE)
            sc_next = _score_scale(qs, p_ks, blk_next)
            kbb_next = gl.load(p_kbb + blk_next).to(gl.int32)
            s_int, acc, m_i, l_i, row_bad = _step(
                j, s_int, acc, m_i, l_i, row_bad, bufs, bars, sc, kbb, o_qpos,
                blk * BLOCK_N + o_n0, p_kvbad, M, zero_s, STAGES, True, SPARSE)
            blk, blk_next, sc, kbb = blk_next, blk_after, sc_next, kbb_next
        j = n_tiles - 1
        st = j % STAGES
        p8, alpha, m_i, l_i, row_bad = _softmax(
            s_int, sc, kbb, m_i, l_i, row_bad, o_qpos, blk * BLOCK_N + o_n0, p_kvbad, M, True,
            SPARSE)
        acc = _issue_pv(j, acc, alpha, p8, bufs, bars, STAGES, 0)
        acc = warpgroup_mma_wait(0, deps=[acc])
        mbarrier.arrive(v_empty.index(st), count=1)
        return acc, m_i, l_i, row_bad | (tiles_bad != 0)

    # a layout's list strides vary per call (its width is its densest row's): specialising on
    # their divisibility would only recompile, as for the Triton kernel
    @gluon.jit(do_not_specialize=["stride_ib", "stride_ih", "stride_iq", "stride_cb", "stride_ch",
                                  "stride_cq", "LAYOUT_DIV"])
    def _kernel(Q, k_desc, v_desc, Out, LSE, KS, KMEAN, VS, KVBAD, KBLOCKBAD, BIDX, BCNT,
                stride_qb, stride_qh, stride_qn, stride_qd, stride_ob, stride_oh, stride_on,
                stride_od, stride_ib, stride_ih, stride_iq, stride_cb, stride_ch, stride_cq,
                N, M, H_Q, H_KV, LAYOUT_DIV, qk_scale,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_Q: gl.constexpr,
                HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, SPARSE: gl.constexpr,
                RETURN_LSE: gl.constexpr, num_warps: gl.constexpr):
        # heaviest query tiles (last rows under causal masking) launch first
        i_m = gl.num_programs(0) - 1 - gl.program_id(0)
        i_bh = gl.program_id(1)
        i_b = i_bh // H_Q
        i_h = i_bh % H_Q
        i_bkv = i_b * H_KV + i_h // (H_Q // H_KV)  # native GQA: K/V indexed, never repeated
        q_lo = i_m * BLOCK_M
        q_hi = gl.minimum(q_lo + BLOCK_M, N) - 1
        kv_end = gl.minimum(M, q_hi + (M - N) + 1)  # keys from it on: hidden from every row
        full_end = gl.minimum(M, q_lo + (M - N) + 1)  # keys before it: seen by every row
        if SPARSE:
            # this query block's sorted list (batch / heads broadcast through zero strides and
            # LAYOUT_DIV): blocks past kv_end form a suffix, and the blocks that need the mask
            # the suffix before it; both scanned from the end
            i_hl = i_h // LAYOUT_DIV
            i_qb = i_m // (BLOCK_Q // BLOCK_M)
            p_idx = (BIDX + i_b.to(gl.int64) * stride_ib + i_hl.to(gl.int64) * stride_ih
                     + i_qb.to(gl.int64) * stride_iq)
            n_tiles = gl.load(BCNT + i_b * stride_cb + i_hl * stride_ch + i_qb * stride_cq)
            while (n_tiles > 0) & (gl.load(p_idx + n_tiles - 1, mask=n_tiles > 0, other=0)
                                   * BLOCK_N >= kv_end):
                n_tiles -= 1
            n_full = n_tiles
            while (n_full > 0) & ((gl.load(p_idx + n_full - 1, mask=n_full > 0, other=0) + 1)
                                  * BLOCK_N > full_end):
                n_full -= 1
        else:
            p_idx = BIDX  # never read
            n_tiles = gl.cdiv(kv_end, BLOCK_N)
            n_full = full_end // BLOCK_N

        q_smem = gl.allocate_shared_memory(gl.int8, [BLOCK_M, HEAD_DIM], k_desc.layout)
        k_smem = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
        v_smem = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, HEAD_DIM, BLOCK_N],
                                           v_desc.layout)
        p_smem = gl.allocate_shared_memory(gl.float8e4nv, [BLOCK_M, BLOCK_N], k_desc.layout)
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=1)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(v_empty.index(i), count=1)
        bufs = (q_smem, k_smem, v_smem, p_smem)
        bars = (k_ready, k_empty, v_ready, v_empty)
        gl.warp_specialize([
            (_consumer, (Q, bufs, bars, Out, LSE, KS, KMEAN, VS, KVBAD, KBLOCKBAD, p_idx,
                         stride_qb, stride_qh, stride_qn, stride_qd,
                         stride_ob, stride_oh, stride_on, stride_od, i_b, i_h, i_bh, i_bkv, i_m,
                         n_tiles, n_full, N, M, qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES,
                         SPARSE, RETURN_LSE, num_warps)),
            (_producer, (k_desc, v_desc, bufs, bars, p_idx, i_bkv * M, i_bkv * HEAD_DIM,
                         n_tiles, BLOCK_N, STAGES, SPARSE)),
        ], [1], [24])
    # fmt: on
