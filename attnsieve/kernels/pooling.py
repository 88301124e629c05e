"""Block pooling in Triton: the cheap estimate FlexPrefill, HiP and SpargeAttn score key blocks
with.

- `block_mean_pool`: mean of every block of tokens (Q per query head, K per KV head);
  `block_mean_pool_qk` pools Q and K in one launch, K's heads picked by their query heads'.
- `pooled_block_probs`: pooled-Q · pooled-K scores, causal block mask, softmax over key blocks,
  in two launches over splits of key blocks (scores and partial sums, then the softmax).

Both take the heads to compute (FlexPrefill's query-aware heads); the others' programs return at
once, so that no host sync picks the heads: the mean pool leaves zeros there, the pooled map
leaves those heads unwritten (FlexPrefill's threshold search never reads them; zeroing the whole
map first, 33.5 MB on Llama-3-8B's heads at 64K, was most of a 0.4 ms plan's 10.4 us of fills,
benchmarks/results/h200/plan46/profile_65536.log). Each launcher has a plain-PyTorch twin
of the same name and signature in `attnsieve.kernels.pooling_reference`; `attnsieve.api` picks
between them and checks the arguments. Scores are kept in base 2 (log2(e) folded into the scale).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import INTERPRET, check_triton_device, sm_count
from attnsieve.kernels.planning import lse_step
from attnsieve.kernels.prefill import LOG2E, unit_last

# fp32 pooled vectors: tf32x3 keeps ~fp32 accuracy on tensor cores (the pooled work is tiny)
_POOLED_PRECISION = tl.constexpr("ieee" if INTERPRET else "tf32x3")

_WIDE_AT = 2**31  # offsets from here on need int64

# fmt: off


# ---- block mean pooling --------------------------------------------------------------------------
@triton.jit
def _mean_pool_kernel(
    X, HEADS, OUT, stride_xb, stride_xh, stride_xn, stride_ob, stride_oh, stride_on, H, L, group,
    X2, OUT2, stride_x2b, stride_x2h, stride_x2n, stride_o2b, stride_o2h, stride_o2n, H2, L2,
    group2, B, D, stride_hb, stride_hh,
    BLOCK: tl.constexpr, BLOCK2: tl.constexpr, CHUNK: tl.constexpr, CHUNK2: tl.constexpr,
    BLOCK_D: tl.constexpr, HAS_HEADS: tl.constexpr, G_PAD: tl.constexpr, G_PAD2: tl.constexpr,
    PAIR: tl.constexpr,
):
    """Block means of X's heads (grid y < B·H) and, with PAIR, of X2's after them (Q and K in
    one launch: each of the two was a few microseconds of latency for little work)."""
    # pooled blocks on the grid's x axis (16-token blocks of 1M tokens), heads on y, which stops
    # at 65535: B · (H_q + H_kv) for a pair
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    if PAIR and i_bh >= B * H:
        i_bh -= B * H
        _pool_block(X2, HEADS, OUT2, i_n, i_bh // H2, i_bh % H2, stride_x2b, stride_x2h,
                    stride_x2n, stride_hb, stride_hh, stride_o2b, stride_o2h, stride_o2n, L2, D,
                    group2, BLOCK2, CHUNK2, BLOCK_D, HAS_HEADS, G_PAD2)
    else:
        _pool_block(X, HEADS, OUT, i_n, i_bh // H, i_bh % H, stride_xb, stride_xh, stride_xn,
                    stride_hb, stride_hh, stride_ob, stride_oh, stride_on, L, D, group, BLOCK,
                    CHUNK, BLOCK_D, HAS_HEADS, G_PAD)


@triton.jit
def _pool_block(X, HEADS, OUT, i_n, i_b, i_h, stride_xb, stride_xh, stride_xn, stride_hb,
                stride_hh, stride_ob, stride_oh, stride_on, L, D, group, BLOCK: tl.constexpr,
                CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_HEADS: tl.constexpr,
                G_PAD: tl.constexpr):
    """The mean of pooled block i_n of head (i_b, i_h) (none past L: a pair's shorter tensor)."""
    if i_n * BLOCK >= L:
        return
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    p_o = OUT + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh + i_n * stride_on
    if _head_off(HEADS, i_b, i_h, stride_hb, stride_hh, group, HAS_HEADS, G_PAD):  # not read
        tl.store(p_o + o_d, tl.zeros([BLOCK_D], dtype=tl.float32), mask=m_d)
        return
    p_x = X + i_b.to(tl.int64) * stride_xb + i_h.to(tl.int64) * stride_xh
    # rows summed elementwise, reduced across threads once at the end, not once per chunk
    b_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)
    for t0 in tl.static_range(0, BLOCK, CHUNK):
        o_t = i_n * BLOCK + t0 + tl.arange(0, CHUNK)
        m_t = (t0 + tl.arange(0, CHUNK) < BLOCK) & (o_t < L)
        b_x = tl.load(p_x + o_t.to(tl.int64)[:, None] * stride_xn + o_d[None, :],
                      mask=m_t[:, None] & m_d[None, :], other=0.0)
        b_acc += b_x.to(tl.float32)
    b_sum = tl.sum(b_acc, 0)  # [BLOCK_D]
    count = tl.minimum(L - i_n * BLOCK, BLOCK).to(tl.float32)
    tl.store(p_o + o_d, b_sum / count, mask=m_d)


@triton.jit
def _head_off(HEADS, i_b, i_h, stride_hb, stride_hh, group, HAS_HEADS: tl.constexpr,
              G_PAD: tl.constexpr):
    """Whether the uint8 HEADS leaves head (i_b, i_h) out (without HEADS: none is): its programs
    return at once. With ``group`` > 1 the head is a KV head, left out where all of its query
    heads group * i_h ... are."""
    if HAS_HEADS:
        o_g = tl.arange(0, G_PAD)
        p_h = HEADS + i_b.to(tl.int64) * stride_hb + (i_h * group + o_g).to(tl.int64) * stride_hh
        return tl.max(tl.load(p_h, mask=o_g < group, other=0), 0) == 0
    return False


# ---- pooled block scores + causal mask + softmax -------------------------------------------------
@triton.jit
def _pooled_scores(b_q, p_k, o_j, o_d, m_d, stride_kj, KB, o_last, qk_scale, BLOCK_K,
                   CAUSAL: tl.constexpr):
    """[BLOCK_I, BLOCK_J] base-2 scores of pooled queries vs pooled keys ``o_j``, masked -inf."""
    m_j = o_j < KB
    b_k = tl.load(p_k + o_j[:, None] * stride_kj + o_d[None, :], mask=m_j[:, None] & m_d[None, :],
                  other=0.0)
    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=_POOLED_PRECISION) * qk_scale
    m_s = m_j[None, :]
    if CAUSAL:
        m_s = m_s & (o_j[None, :] * BLOCK_K <= o_last[:, None])
    return tl.where(m_s, b_s, float("-inf"))


@triton.jit
def _pooled_rows(QP, i_b, i_h, i_i, stride_qb, stride_qh, stride_qi, QB, D, N, M, BLOCK_Q, KB,
                 BLOCK_K, CAUSAL: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr):
    """A program's pooled query rows: (o_i, m_i, o_d, m_d, b_q, o_last, j_end), o_last the
    absolute position of each query block's last query (key block j is visible iff
    j * BLOCK_K <= it), j_end the end of the key blocks some row sees."""
    o_i = i_i * BLOCK_I + tl.arange(0, BLOCK_I)
    m_i = o_i < QB
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    p_q = QP + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    b_q = tl.load(p_q + o_i[:, None] * stride_qi + o_d[None, :], mask=m_i[:, None] & m_d[None, :],
                  other=0.0)
    o_last = M - N + tl.minimum((o_i + 1) * BLOCK_Q, N) - 1
    j_end = _pooled_key_end(i_i, QB, KB, N, M, BLOCK_Q, BLOCK_K, CAUSAL, BLOCK_I)
    return o_i, m_i, o_d, m_d, b_q, o_last, j_end


@triton.jit
def _pooled_key_end(i_i, QB, KB, N, M, BLOCK_Q, BLOCK_K, CAUSAL: tl.constexpr,
                    BLOCK_I: tl.constexpr):
    """The end of the key blocks that some query block of program row i_i sees."""
    if CAUSAL:
        last = M - N + tl.minimum(tl.minimum(i_i * BLOCK_I + BLOCK_I, QB) * BLOCK_Q, N) - 1
        return tl.where(last >= 0, tl.minimum(KB, last // BLOCK_K + 1), 0)
    return KB


@triton.jit
def _row_offsets(o_i, stride_oi, WIDE: tl.constexpr):
    """[BLOCK_I, 1] offsets of map rows o_i: int64 where a head's map passes int32 offsets (WIDE:
    16-key blocks at 1M tokens), int32 otherwise (no int64 product an entry)."""
    return o_i.to(tl.int64 if WIDE else tl.int32)[:, None] * stride_oi


@triton.jit
def _pooled_scores_kernel(
    QP, KP, HEADS, OUT, PART_M, PART_L, stride_qb, stride_qh, stride_qi, stride_kb, stride_kh,
    stride_kj, stride_hb, stride_hh, stride_ob, stride_oh, stride_oi, H_Q, GROUP, QB, KB, D, N, M,
    BLOCK_Q, BLOCK_K, SPLIT, NUM_SPLITS, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_HEADS: tl.constexpr, WIDE: tl.constexpr,
):
    """Base-2 scores of SPLIT key blocks into OUT (-inf where masked) and the rows' partial
    (max, sum) over them. Splitting the key blocks keeps each program's walk short: one
    query-aware head's map is a handful of programs, whose longest walk was the launch's time."""
    i_bh, i_i, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    if _head_off(HEADS, i_b, i_h, stride_hb, stride_hh, 1, HAS_HEADS, 1):  # not scored, not written
        return
    o_i, m_i, o_d, m_d, b_q, o_last, j_end = _pooled_rows(
        QP, i_b, i_h, i_i, stride_qb, stride_qh, stride_qi, QB, D, N, M, BLOCK_Q, KB, BLOCK_K,
        CAUSAL, BLOCK_I, BLOCK_D)
    p_k = KP + i_b.to(tl.int64) * stride_kb + (i_h // GROUP).to(tl.int64) * stride_kh
    p_o = OUT + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    o_row = _row_offsets(o_i, stride_oi, WIDE)
    b_m = tl.full([BLOCK_I], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_I], dtype=tl.float32)
    for j0 in range(i_s * SPLIT, tl.minimum(j_end, i_s * SPLIT + SPLIT), BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        b_s = _pooled_scores(b_q, p_k, o_j, o_d, m_d, stride_kj, KB, o_last, qk_scale, BLOCK_K,
                             CAUSAL)
        b_m, b_l = lse_step(b_s, b_m, b_l)
        tl.store(p_o + o_row + o_j[None, :], b_s, mask=m_i[:, None] & (o_j < KB)[None, :])
    o_part = (i_bh.to(tl.int64) * NUM_SPLITS + i_s) * QB + o_i
    tl.store(PART_M + o_part, b_m, mask=m_i)
    tl.store(PART_L + o_part, b_l, mask=m_i)


@triton.jit
def _pooled_norm_kernel(
    OUT, PART_M, PART_L, HEADS, stride_hb, stride_hh, stride_ob, stride_oh, stride_oi, H_Q, QB,
    KB, N, M, BLOCK_Q, BLOCK_K, SPLIT, NUM_SPLITS,
    CAUSAL: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_S: tl.constexpr,
    HAS_HEADS: tl.constexpr, WIDE: tl.constexpr,
):
    """The softmax of the scores _pooled_scores_kernel wrote, over the same programs, and zeros
    past the key blocks its rows see (the map is not zeroed first). A row without a key, or whose
    sum is NaN (a NaN or +inf score), is zero, as in the twin's nan_to_num."""
    i_bh, i_i, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H_Q, i_bh % H_Q
    if _head_off(HEADS, i_b, i_h, stride_hb, stride_hh, 1, HAS_HEADS, 1):
        return
    o_i = i_i * BLOCK_I + tl.arange(0, BLOCK_I)
    m_i = o_i < QB
    j_end = _pooled_key_end(i_i, QB, KB, N, M, BLOCK_Q, BLOCK_K, CAUSAL, BLOCK_I)
    o_s = tl.arange(0, BLOCK_S)
    o_part = (i_bh.to(tl.int64) * NUM_SPLITS + o_s[:, None]) * QB + o_i[None, :]
    m_part = (o_s < NUM_SPLITS)[:, None] & m_i[None, :]
    part_m = tl.load(PART_M + o_part, mask=m_part, other=float("-inf"))  # [BLOCK_S, BLOCK_I]
    b_m = tl.max(part_m, 0)
    b_m_sub = tl.where(b_m == float("-inf"), 0.0, b_m)  # rows without a key: no NaN
    b_l = tl.sum(tl.load(PART_L + o_part, mask=m_part, other=0.0) * tl.exp2(part_m - b_m_sub), 0)
    b_inv = 1.0 / tl.maximum(b_l, 1.0)  # b_l >= 1 once a key is seen
    m_row = b_l > 0
    p_o = OUT + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    o_row = _row_offsets(o_i, stride_oi, WIDE)
    for j0 in range(i_s * SPLIT, tl.minimum(j_end, i_s * SPLIT + SPLIT), BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        p_s = p_o + o_row + o_j[None, :]
        m_s = m_i[:, None] & (o_j < KB)[None, :]
        b_p = tl.exp2(tl.load(p_s, mask=m_s, other=float("-inf")) - b_m_sub[:, None])
        tl.store(p_s, tl.where(m_row[:, None], b_p * b_inv[:, None], 0.0), mask=m_s)
    zeros = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float32)
    for j0 in range(tl.maximum(j_end, i_s * SPLIT), tl.minimum(KB, i_s * SPLIT + SPLIT), BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        tl.store(p_o + o_row + o_j[None, :], zeros, mask=m_i[:, None] & (o_j < KB)[None, :])
# fmt: on


def block_mean_pool(x: Tensor, block: int, heads: Tensor | None = None) -> Tensor:
    """float32 (B, H, ceil(L / block), D): mean of every ``block`` tokens of x (B, H, L, D); zero
    in the heads that ``heads`` (bool (B, H)) leaves out, which are not read."""
    check_triton_device("x", x)
    return _mean_pools(((x, block),), heads)[0]


def block_mean_pool_qk(
    q: Tensor, k: Tensor, block_q: int, block_k: int, heads: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`block_mean_pool` of q by ``heads`` (bool (B, H_q)) and of k by the same flags (a KV head
    where any of its query heads is), in one launch."""
    check_triton_device("q", q)
    return _mean_pools(((q, block_q), (k, block_k)), heads)


def _mean_pools(tensors: tuple[tuple[Tensor, int], ...], heads: Tensor | None) -> list[Tensor]:
    """The block means of one or two (x, block) in one launch."""
    xs = [unit_last(x) for x, _ in tensors]
    blocks = [block for _, block in tensors]
    outs = [
        torch.empty(*x.shape[:2], triton.cdiv(x.shape[2], block), x.shape[3], device=x.device,
                    dtype=torch.float32)
        for x, block in zip(xs, blocks, strict=True)
    ]  # fmt: skip
    b, d = xs[0].shape[0], xs[0].shape[3]
    rows = [b * x.shape[1] for x in xs]
    if sum(out.numel() for out in outs) == 0:  # nothing to launch (no arange of zero width)
        return outs
    on = _uint8(heads, xs[0])
    groups = [1 if heads is None else heads.shape[1] // x.shape[1] for x in xs]
    pair = len(xs) == 2
    second = 1 if pair else 0  # without a pair, the first tensor's arguments again (unused)
    x2, out2, block2, group2 = xs[second], outs[second], blocks[second], groups[second]
    grid = (max(out.shape[2] for out in outs), sum(rows) if pair else rows[0])
    _mean_pool_kernel[grid](
        xs[0], on, outs[0], *xs[0].stride()[:3], *outs[0].stride()[:3], xs[0].shape[1],
        xs[0].shape[2], groups[0], x2, out2, *x2.stride()[:3], *out2.stride()[:3], x2.shape[1],
        x2.shape[2], group2, b, d, *on.stride()[:2],
        BLOCK=blocks[0], BLOCK2=block2, CHUNK=min(32, triton.next_power_of_2(blocks[0])),
        CHUNK2=min(32, triton.next_power_of_2(block2)), BLOCK_D=triton.next_power_of_2(d),
        HAS_HEADS=heads is not None, G_PAD=triton.next_power_of_2(groups[0]),
        G_PAD2=triton.next_power_of_2(group2), PAIR=pair,
    )  # fmt: skip
    return outs


def _uint8(heads: Tensor | None, x: Tensor) -> Tensor:
    """``heads`` as uint8 for the kernels; x (never read as heads) where there is none."""
    return x if heads is None else heads.view(torch.uint8)


def pooled_block_probs(
    q_pooled: Tensor,
    k_pooled: Tensor,
    *,
    num_queries: int,
    num_keys: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
    heads: Tensor | None = None,
) -> Tensor:
    """float32 (B, H_q, QB, KB): softmax over key blocks of pooled-Q · pooled-K; the heads that
    ``heads`` (bool (B, H_q)) leaves out are neither scored nor written."""
    check_triton_device("q_pooled", q_pooled)
    qb, kb = triton.cdiv(num_queries, block_q), triton.cdiv(num_keys, block_k)
    b, h_q, _, d = q_pooled.shape
    h_kv = k_pooled.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q_pooled, k_pooled = unit_last(q_pooled), unit_last(k_pooled)
    out = torch.empty(b, h_q, qb, kb, device=q_pooled.device, dtype=torch.float32)
    # 64 query blocks a program read each pooled key a quarter as often as 16 (0.27 against 0.33 ms
    # at 128K on Llama-3-8B's heads, planning43/), where they still fill the SMs
    block_i = 64 if b * h_q * triton.cdiv(qb, 64) >= sm_count(q_pooled.device) else 16
    block_j, tiles = pooled_split()
    split = block_j * tiles  # a whole number of tiles: a tile past its split would count twice
    splits = triton.cdiv(kb, split)
    part_m, part_l = torch.empty(2, b * h_q, splits, qb, device=out.device).unbind()
    on = _uint8(heads, q_pooled)
    grid = (b * h_q, triton.cdiv(qb, block_i), splits)
    sizes = (num_queries, num_keys, block_q, block_k, split, splits)
    # a head's map past int32 offsets (16-key blocks at 1M tokens): int64 row offsets
    wide = qb * out.stride(2) >= _WIDE_AT
    meta = dict(
        CAUSAL=causal, BLOCK_I=block_i, BLOCK_J=block_j, HAS_HEADS=heads is not None, WIDE=wide
    )
    _pooled_scores_kernel[grid](
        q_pooled, k_pooled, on, out, part_m, part_l, *q_pooled.stride()[:3],
        *k_pooled.stride()[:3], *on.stride()[:2], *out.stride()[:3], h_q, h_q // h_kv, qb, kb, d,
        *sizes, scale * LOG2E, **meta, BLOCK_D=max(16, triton.next_power_of_2(d)),
    )  # fmt: skip
    _pooled_norm_kernel[grid](
        out, part_m, part_l, on, *on.stride()[:2], *out.stride()[:3], h_q, qb, kb, *sizes, **meta,
        BLOCK_S=triton.next_power_of_2(splits),
    )  # fmt: skip
    return out


def pooled_split() -> tuple[int, int]:
    """(key blocks a tile, tiles a program) of `pooled_block_probs`: two tiles a program,
    the rows' softmax combined from the programs' partial sums in a second launch. On the H200
    (Llama-3-8B's heads, planning48/) one query-aware head's map took 26.7 against 61.4 us at 64K
    in one launch over every key block, 60.4 against 127.6 at 128K; all 32 heads' 69.7 against
    89.0 and 242 against 271 (256 blocks: 32.0, 58.7, 65.2, 213; 64: 27.1, 70.2, 86.2, 307)."""
    return 64, 2
