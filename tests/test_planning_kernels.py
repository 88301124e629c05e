"""Fused planning kernels (Triton: interpreted on CPU, compiled on a GPU) against their twins."""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import (
    INTERPRET,
    antidiagonal,
    antidiagonal_reference,
    planning,
    planning_reference,
    pooling,
    pooling_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"

# (batch, H_q, H_kv, N, M, D, dtype): odd lengths, N != M (both ways), GQA 1/2/4, batch 2
SHAPES = [
    (2, 4, 2, 150, 173, 64, torch.float32),
    (1, 4, 1, 97, 97, 32, torch.float16),
    (1, 2, 2, 160, 40, 16, torch.float32),  # M < N: early query blocks see no key
    (1, 2, 1, 33, 250, 128, torch.float16),
]


def _inputs(b, h_q, h_kv, n, m, d, dtype, sharp=3.0):
    q = (torch.randn(b, h_q, n, d) * sharp).to(DEVICE, dtype)
    k = torch.randn(b, h_kv, m, d).to(DEVICE, dtype)
    return q, k


def _close(a, b, dtype):
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    rtol = tol
    if dtype == torch.float32 and DEVICE == "cuda":  # tf32 dots: 2.9e-5 / 2.5e-3 on the H200
        tol, rtol = 1e-4, 1e-2
    torch.testing.assert_close(a, b, rtol=rtol, atol=tol)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_block_mean_pool(shape):
    q, k = _inputs(*shape)
    for x, block in ((q, 32), (k, 16), (q, 48)):
        got = pooling.block_mean_pool(x, block)
        want = pooling_reference.block_mean_pool(x, block)
        assert got.shape == (x.shape[0], x.shape[1], -(-x.shape[2] // block), x.shape[3])
        _close(got, want, torch.float32)
    # the twin is the plain block mean, short last block included
    x = torch.arange(10.0).view(1, 1, 5, 2)
    assert pooling_reference.block_mean_pool(x, 2)[0, 0].tolist() == [[1, 2], [5, 6], [8, 9]]


@pytest.mark.usefixtures("nan_empty")  # an entry left unwritten fails
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_pooled_block_probs(shape, causal):
    q, k = _inputs(*shape)
    n, m = q.shape[2], k.shape[2]
    qp = pooling_reference.block_mean_pool(q, 32)
    kp = pooling_reference.block_mean_pool(k, 16)
    kwargs = dict(num_queries=n, num_keys=m, block_q=32, block_k=16, causal=causal)
    got = pooling.pooled_block_probs(qp, kp, **kwargs)
    want = pooling_reference.pooled_block_probs(qp, kp, **kwargs)
    _close(got, want, torch.float32)
    sums = got.sum(-1)
    seen = (torch.arange(sums.shape[-1], device=DEVICE) * 32 + 31).clamp(max=n - 1) + m - n >= 0
    if not causal:
        seen = torch.ones_like(seen)
    torch.testing.assert_close(sums, seen.float().expand_as(sums))  # 1 per row, 0 if blind


@pytest.mark.usefixtures("nan_empty")  # an entry left unwritten fails
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("split", [(16, 1), (16, 2)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("sms", [4, 1000])
def test_pooled_block_probs_over_key_splits(split, causal, wide, sms, monkeypatch):
    """Rows whose key blocks span several programs (3 and 2 splits of 44 key blocks, the last
    partial; causal rows that end inside a split, or before it) give the twin's softmax; with
    the int64 row offsets of maps past 2^31 entries a head too (forced here). With many SMs a
    program takes 16 query blocks, the first 16 of which see 38 key blocks: the rest of their
    rows are the zeros the norm launch writes past them."""
    monkeypatch.setattr(pooling, "pooled_split", lambda: split)
    monkeypatch.setattr(pooling, "sm_count", lambda device: sms)
    if wide:
        monkeypatch.setattr(pooling, "_WIDE_AT", 0)
    # batch 2 x 2 query heads: enough at 4 SMs for 64 query blocks a program (16 at 1000)
    q, k = _inputs(2, 2, 1, 150, 173, 64, torch.float32)
    qp, kp = pooling_reference.block_mean_pool(q, 8), pooling_reference.block_mean_pool(k, 4)
    kwargs = dict(num_queries=150, num_keys=173, block_q=8, block_k=4, causal=causal)
    got = pooling.pooled_block_probs(qp, kp, **kwargs)
    _close(got, pooling_reference.pooled_block_probs(qp, kp, **kwargs), torch.float32)


@pytest.mark.usefixtures("nan_empty")
@pytest.mark.parametrize("shape", SHAPES[:2])
def test_pooling_and_pooled_probs_leave_out_heads(shape):
    """The heads that ``heads`` leaves out are not read (NaN inputs there stay out): pooled to
    zero, and not scored: zero in the twin's map, not written in the kernel's (NaN from
    torch.empty here). The others are as without it. ``heads`` is a strided view (after a
    transpose)."""
    q, k = _inputs(*shape)
    b, h_q, n = q.shape[:3]
    heads = (torch.arange(b * h_q, device=DEVICE).view(h_q, b) % 3 != 1).t()
    q_out = q.masked_fill(~heads[..., None, None], math.nan)
    sizes = dict(num_queries=n, num_keys=k.shape[2], block_q=32, block_k=16)
    kp = pooling.block_mean_pool(k, 16)
    for ops in (pooling, pooling_reference):
        qp = ops.block_mean_pool(q_out, 32, heads=heads)
        assert (qp[~heads] == 0).all()
        _close(qp[heads], ops.block_mean_pool(q, 32)[heads], torch.float32)
        # scored, the heads left out would not be zero (a NaN row would: not stored)
        qp = torch.where(heads[..., None, None], qp, 1.0)
        probs = ops.pooled_block_probs(qp, kp, **sizes, heads=heads)
        assert (probs[~heads].isnan() if ops is pooling else probs[~heads] == 0).all()
        want = ops.pooled_block_probs(ops.block_mean_pool(q, 32), kp, **sizes)
        _close(probs[heads], want[heads], torch.float32)


@pytest.mark.usefixtures("nan_empty")
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_query_and_key_heads_pooled_in_one_launch(shape):
    """`block_mean_pool_qk`: Q's heads by the flags, K's by their query heads' flags (a KV head
    is pooled where any of its g query heads is flagged); the others are not read (NaN there
    stays out) and pool to zero."""
    q, k = _inputs(*shape)
    b, h_q, h_kv = q.shape[0], q.shape[1], k.shape[1]
    g = h_q // h_kv
    heads = torch.zeros(b, h_q, dtype=torch.bool, device=DEVICE)
    heads[0, h_q - 1] = True  # the last query head of the last group only
    heads[-1, 0] = True
    kv_on = torch.zeros(b, h_kv, dtype=torch.bool, device=DEVICE)
    kv_on[0, h_kv - 1] = kv_on[-1, 0] = True
    assert g > 1 or h_kv == h_q
    k_out = k.masked_fill(~kv_on[..., None, None], math.nan)
    q_out = q.masked_fill(~heads[..., None, None], math.nan)
    for ops in (pooling, pooling_reference):
        qp, kp = ops.block_mean_pool_qk(q_out, k_out, 32, 16, heads)
        assert (qp[~heads] == 0).all() and (kp[~kv_on] == 0).all()
        _close(qp[heads], ops.block_mean_pool(q, 32)[heads], torch.float32)
        _close(kp[kv_on], ops.block_mean_pool(k, 16)[kv_on], torch.float32)
    qp, kp = api.block_mean_pool_qk(q_out, k_out, block_q=32, block_k=16, heads=heads)
    _close(kp[kv_on], pooling_reference.block_mean_pool(k, 16)[kv_on], torch.float32)
    # no flags: every head, blocks of either size over lengths of either (N < M, N > M with
    # SHAPES[2], where the grid's blocks are K's in one case and Q's in the other)
    for block_q, block_k in ((32, 16), (16, 64)):
        qp, kp = pooling.block_mean_pool_qk(q, k, block_q, block_k)
        _close(qp, pooling_reference.block_mean_pool(q, block_q), torch.float32)
        _close(kp, pooling_reference.block_mean_pool(k, block_k), torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("stride", [4, 8])
def test_antidiagonal_block_scores(shape, causal, stride):
    q, k = _inputs(*shape)
    kwargs = dict(stride=stride, block_q=32, block_k=32, causal=causal)
    got = antidiagonal.antidiagonal_block_scores(q, k, **kwargs)
    want = antidiagonal_reference.antidiagonal_block_scores(q, k, **kwargs)
    _close(got, want, q.dtype)
    # every strided row that sees a key contributes a mass of exactly 1
    n, m = q.shape[2], k.shape[2]
    last = torch.clamp(torch.arange(-(-n // stride)) * stride + stride - 1, max=n - 1) + m - n
    rows = int((last >= 0).sum()) if causal else -(-n // stride)
    want = torch.full(got.shape[:2], float(rows), device=DEVICE)
    torch.testing.assert_close(got.sum((-1, -2)), want)


@pytest.mark.parametrize(("stride", "block_q", "block_k"), [(1, 32, 16), (2, 64, 16), (2, 16, 128)])
def test_antidiagonal_blocks_of_many_strided_rows(stride, block_q, block_k):
    """Blocks of more strided rows (or columns) than a small tile holds: the kernel's tile is
    chosen to hold whole blocks on every backend. Under the interpreter its one 16-row tile read
    scratch the causal end left unwritten (0.05-0.2 off, causal) or raised an unnamed error."""
    q, k = _inputs(1, 3, 1, 100, 300, 32, torch.float16)
    kwargs = dict(stride=stride, block_q=block_q, block_k=block_k, causal=True)
    got = antidiagonal.antidiagonal_block_scores(q, k, **kwargs)
    _close(got, antidiagonal_reference.antidiagonal_block_scores(q, k, **kwargs), q.dtype)
    with pytest.raises(ValueError, match=r"^stride: must divide .* of at most 128"):
        api.antidiagonal_block_scores(q, k, stride=1, block_q=256, block_k=16)


def test_antidiagonal_twin_matches_definition():
    """The twin sums one antidiagonal of each stride x stride tile, softmax per strided row."""
    torch.manual_seed(1)
    s, n, d = 2, 8, 4
    q, k = torch.randn(1, 1, n, d), torch.randn(1, 1, n, d)
    got = antidiagonal_reference.antidiagonal_block_scores(q, k, stride=s, block_q=4, block_k=4)
    logits = torch.full((n // s, n // s), -math.inf)
    for r in range(n // s):
        for c in range(r + 1):  # causal, N == M: group c visible iff c <= r
            logits[r, c] = sum(q[0, 0, r * s + s - 1 - t] @ k[0, 0, c * s + t] for t in range(s))
    probs = (logits / math.sqrt(d) / s).softmax(-1)
    want = probs.view(2, 2, 2, 2).sum((1, 3))  # 2 strided rows / columns per block of 4
    torch.testing.assert_close(got[0, 0], want)


def test_antidiagonal_twin_takes_transposed_views():
    """Q and K as transformers hands them over, (B, N, H, D) transposed, with N and M multiples of
    the stride (no padding copy): the twin reads them as their contiguous copies (a `view` of
    them raised, which `attnsieve calibrate --model` hit on the CPU)."""
    torch.manual_seed(2)
    q = torch.randn(1, 64, 4, 16).transpose(1, 2)
    k = torch.randn(1, 64, 2, 16).transpose(1, 2)
    kwargs = {"stride": 4, "block_q": 16, "block_k": 16}
    got = antidiagonal_reference.antidiagonal_block_scores(q, k, **kwargs)
    want = antidiagonal_reference.antidiagonal_block_scores(
        q.contiguous(), k.contiguous(), **kwargs
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# bytes of the scratch: 2 query heads x 3 key blocks x 4 bytes = 24 a strided row (9 rows,
# 4 a query block): one launch per KV head (216), per 2 query blocks (192: the last launch
# holds one row), per query block (1)
@pytest.mark.parametrize("scratch", [216, 192, 1])
@pytest.mark.parametrize("causal", [True, False])
def test_antidiagonal_scratch_split(monkeypatch, scratch, causal):
    """Launching per KV-head group and per run of query blocks (bounded scratch) gives the same
    scores, with more keys than queries (causal rows offset)."""
    q, k = _inputs(1, 4, 2, 36, 48, 32, torch.float32)
    kwargs = dict(stride=4, block_q=16, block_k=16, causal=causal)
    whole = antidiagonal.antidiagonal_block_scores(q, k, **kwargs)
    monkeypatch.setattr(antidiagonal, "_SCRATCH_BYTES", scratch)
    launches = []
    lse_kernel = antidiagonal._antidiag_lse_kernel

    class Counted:
        def __getitem__(self, grid):
            launches.append(grid)
            return lse_kernel[grid]

    monkeypatch.setattr(antidiagonal, "_antidiag_lse_kernel", Counted())
    split = antidiagonal.antidiagonal_block_scores(q, k, **kwargs)
    torch.testing.assert_close(whole, split)
    assert len(launches) == {216: 2, 192: 4, 1: 6}[scratch]


# SHAPES, the first as batch 2 x GQA 2/1 (batch 2 and g = 2 at half the programs of 2 x 4/2;
# two KV heads: SHAPES[2]), and M = 300 keys far past N = 70 queries: five 64-key tiles, the
# last one partial, one a program at sum_tiles_per_program's count for two heads (several a
# program: test_last_query_stats_any_tiles_per_program)
@pytest.mark.parametrize(
    "shape",
    [(2, 2, 1, 150, 173, 64, torch.float32), *SHAPES[1:], (1, 2, 1, 70, 300, 32, torch.float16)],
)
# 1: vertical_slash's per-key and per-diagonal sums; 24: blocks the two-pass kernels sum; 16 and
# 32: several blocks per one-pass key tile; 64 and 128: one
@pytest.mark.parametrize("block_k", [1, 16, 24, 32, 64, 128])
def test_last_query_stats(shape, block_k):
    q, k = _inputs(*shape)
    n, m = q.shape[2], k.shape[2]
    last_q = min(40, n)
    kw = dict(last_q=last_q, block_k=block_k)
    vertical, slash, pooled = planning.last_query_stats(q, k, **kw, pooled=True)
    want_v, want_s, want_p = planning_reference.last_query_stats(q, k, **kw, pooled=True)
    assert vertical.shape == slash.shape == pooled.shape == (*q.shape[:2], -(-m // block_k))
    _close(vertical, want_v, q.dtype)
    _close(slash, want_s, q.dtype)
    _close(pooled, want_p, q.dtype)
    without = planning.last_query_stats(q, k, **kw)  # the same two without pooled
    assert len(without) == 2 and torch.equal(without[0], vertical)
    # both are averaged probability distributions over the rows that see a key
    seen = float((torch.arange(m - last_q, m) >= 0).sum()) / last_q
    torch.testing.assert_close(
        vertical.sum(-1), torch.full(vertical.shape[:2], seen, device=DEVICE)
    )
    torch.testing.assert_close(slash.sum(-1), torch.full(slash.shape[:2], seen, device=DEVICE))


def _matches_twin(q, k, last_q, block_ks, pooled=True):
    for block_k in block_ks:
        kw = dict(last_q=last_q, block_k=block_k, pooled=pooled)
        got = planning.last_query_stats(q, k, **kw)
        want = planning_reference.last_query_stats(q, k, **kw)
        for g, w in zip(got, want, strict=True):
            _close(g, w, q.dtype)


@pytest.mark.parametrize("block_k", [1, 16, 48])
def test_pooled_is_the_mean_query_against_the_mean_key(block_k):
    """The twin's pooled scores (the mean of the scores over the rows and each block's keys,
    the last block partial) are FlexPrefill's ā logits: mean last query · mean key × scale."""
    q, k = _inputs(2, 4, 2, 60, 100, 32, torch.float32)
    q, k = q.cpu().double(), k.cpu().double()
    *_, pooled = planning_reference.last_query_stats(
        q.float(), k.float(), last_q=24, block_k=block_k, scale=0.3, pooled=True
    )
    q_mean = q[:, :, -24:].mean(2).view(2, 2, 2, 32)
    k_mean = pooling_reference.block_mean_pool(k, block_k).double()
    want = (q_mean @ k_mean.transpose(-1, -2) * 0.3).view(2, 4, -1)
    torch.testing.assert_close(pooled.double(), want, rtol=1e-5, atol=1e-5)


def test_last_query_stats_more_rows_than_a_key_tile():
    """last_q = 100 > 64 keys per tile: each tile meets 163 diagonals, three gathers' worth."""
    _matches_twin(*_inputs(1, 2, 1, 130, 200, 64, torch.float16), 100, (1, 128))


@pytest.mark.parametrize("last_q", [128, 77])
def test_last_query_stats_rows_crossing_offset_blocks(last_q):
    """Block-wide slash sums split each key's column where its rows cross into the next offset
    block: once (block_k 128, 256) or twice (64) within 128 rows, from keys that start in either
    of two blocks; M - last_q unaligned to every block. float32: a row off at a crossing moves
    ~1e-3 of a block's mass, the tolerance is 1e-5."""
    _matches_twin(*_inputs(1, 3, 1, 200, 601, 32, torch.float32), last_q, (64, 128, 256))


# M - last_q + 1 = 128 - 1, 128, 128 + 1: the first row's position + 1 just before, at and past
# the end of a 64-key tile. Tiles that every row sees run without the causal mask; one tile too
# many reads a key the first row must not see, and the sums move by its probability (flat
# attention: about 1 / (128 * last_q) of a key's vertical sum)
@pytest.mark.parametrize("last_q", [42, 41, 40])
def test_last_query_stats_tiles_without_a_mask_end_where_the_first_row_does(last_q):
    _matches_twin(*_inputs(1, 2, 1, 64, 168, 32, torch.float32, sharp=0.1), last_q, (1, 64))


def test_last_query_stats_more_rows_than_keys():
    """M = 20 keys under 40 last rows: the first 20 rows see no key (negative positions)."""
    _matches_twin(*_inputs(1, 2, 1, 50, 20, 32, torch.float32), 40, (1, 16, 64))


@pytest.mark.parametrize("tiles", [1, 2, 3, 8])
def test_last_query_stats_any_tiles_per_program(tiles, monkeypatch):
    """Programs walking 1, 2, 3 or 8 key tiles (the last one partial: 11, 6, 4 or 2 programs a
    head, whose (max, sum) pairs a row give the log-sum-exps) give the same sums."""
    monkeypatch.setattr(planning, "sum_tiles_per_program", lambda rows, key_tiles, device: tiles)
    q, k = _inputs(1, 2, 1, 100, 700, 64, torch.float16)
    _matches_twin(q, k, 64, (16, 64))
    # pooled at block_k 1 is the mean last query against block_mean_pool's keys, which no tile
    # count reaches: compared once (its 700 one-key programs were most of each case's time)
    _matches_twin(q, k, 64, (1,), pooled=tiles == 1)


def test_last_query_stats_programs_of_rows_that_see_no_key(monkeypatch):
    """Two key tiles a program, 100 last rows over 100 keys in 128 row slots: 28 padding rows,
    and rows whose first tiles are all masked, so that a program folds finite pairs into -inf
    ones and -inf into -inf."""
    monkeypatch.setattr(planning, "sum_tiles_per_program", lambda rows, key_tiles, device: 2)
    _matches_twin(*_inputs(1, 2, 1, 150, 100, 32, torch.float32), 100, (16,))


@pytest.mark.parametrize("parts", [1, 3, 64, 65, 130])
@pytest.mark.parametrize("block_l", [16, 128])
def test_combine_lse_folds_any_number_of_parts(parts, block_l):
    """The rows' log-sum-exps from (max, sum) pairs, over one chunk of parts or several (a
    partial last one), from a strided view, against torch: -inf for a row of no pair or whose
    sum is NaN (a NaN or +inf pair)."""
    g = torch.Generator().manual_seed(parts)
    whole = torch.randn(2, 3, parts + 2, block_l, generator=g)
    part_max, part_sum = (whole[:, :, 1 : parts + 1] * 20).unbind()  # strided views
    part_sum = part_sum.abs() + 0.5
    part_max[0, :, 1], part_sum[0, :, 1] = -math.inf, 0.0  # a row that saw no key
    part_max[1, parts // 2, 2] = math.nan
    part_max[2, 0, 3], part_sum[2, 0, 3] = math.inf, math.nan
    part_max[..., 4] = -math.inf  # every pair of the row but one saw no key
    part_max[1, -1, 4] = 7.0
    part_max, part_sum = part_max.to(DEVICE), part_sum.to(DEVICE)
    got = planning._combine_lse(part_max, part_sum)
    top = part_max.amax(1).where(part_max.amax(1) > -math.inf, 0.0)
    total = (part_sum * torch.exp2(part_max - top[:, None])).sum(1)
    want = torch.where(total > 0, top + torch.log2(total), -math.inf)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got[:, 1:4] == -math.inf).tolist() == [[True, False, False], [False, True, False],
                                                    [False, False, True]]  # fmt: skip


def test_sum_tiles_per_program_fills_eight_waves(monkeypatch):
    monkeypatch.setattr(planning, "sm_count", lambda device: 132)
    cpu = torch.device("cpu")
    assert planning.sum_tiles_per_program(9, 128, cpu) == 1  # SmolLM2 at 8K: 1152 programs
    assert planning.sum_tiles_per_program(9, 512, cpu) == 4  # at 32K
    assert planning.sum_tiles_per_program(32, 2048, cpu) == 8  # Llama-3-8B at 128K: capped
    assert planning.sum_tiles_per_program(1, 1, cpu) == 1


def test_last_query_stats_slash_of_a_diagonal():
    """Keys that match their query exactly put all the slash mass on offset block 0."""
    d, n = 32, 96
    k = torch.nn.functional.normalize(torch.randn(1, 1, n, d, device=DEVICE), dim=-1)
    q = k * 60.0  # each query scores its own key far above the others
    for backend in ("triton", "reference"):
        _, slash = api.last_query_stats(q, k, last_q=32, block_k=16, backend=backend)
        assert slash[0, 0, 0] > 0.99


def test_bad_inputs_name_the_argument():
    q, k = _inputs(1, 2, 1, 64, 64, 32, torch.float32)
    with pytest.raises(ValueError, match="stride"):
        api.antidiagonal_block_scores(q, k, stride=3, block_q=32, block_k=32)
    with pytest.raises(ValueError, match="stride"):
        api.antidiagonal_block_scores(q, k, stride=4, block_q=48, block_k=32)
    with pytest.raises(ValueError, match="last_q"):
        api.last_query_stats(q, k, last_q=65, block_k=16)
    with pytest.raises(TypeError, match="^pooled:"):
        api.last_query_stats(q, k, last_q=8, block_k=16, pooled=1)
    with pytest.raises(ValueError, match="block"):
        api.block_mean_pool(q, 0)
    with pytest.raises(ValueError, match="H_q"):
        api.last_query_stats(q[:, :1], k.expand(1, 2, 64, 32), last_q=8, block_k=16)
    qp = pooling_reference.block_mean_pool(q, 32)
    with pytest.raises(ValueError, match="k_pooled"):
        api.pooled_block_probs(qp, qp, num_queries=64, num_keys=64, block_q=32, block_k=16)
    with pytest.raises(TypeError, match="q_pooled: expected a float32"):
        api.pooled_block_probs(qp.half(), qp, num_queries=64, num_keys=64, block_q=32, block_k=32)
    with pytest.raises(TypeError, match=r"^heads: expected torch.bool"):
        api.block_mean_pool(q, 32, heads=torch.ones(1, 2, dtype=torch.uint8, device=DEVICE))
    with pytest.raises(ValueError, match=r"^heads: expected shape \(1, 2\)"):
        api.block_mean_pool(q, 32, heads=torch.ones(1, 3, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match=r"^heads: expected shape \(1, 2\)"):
        api.block_mean_pool_qk(
            q, k, block_q=32, block_k=32, heads=torch.ones(1, 1, dtype=torch.bool, device=DEVICE)
        )
    with pytest.raises(ValueError, match="^block_k"):
        api.block_mean_pool_qk(q, k, block_q=32, block_k=0)
    with pytest.raises(ValueError, match="^q, k"):
        api.block_mean_pool_qk(q, k[..., :16], block_q=32, block_k=32)
    with pytest.raises(ValueError, match=r"^heads: expected shape \(1, 2\)"):
        api.pooled_block_probs(
            qp, qp, num_queries=64, num_keys=64, block_q=32, block_k=32,
            heads=torch.ones(1, 3, dtype=torch.bool, device=DEVICE),
        )  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pooled_block_probs_auto_runs_the_kernel_on_cuda(monkeypatch):
    """Its inputs are float32 block means, so "auto" must pick the kernel for float32 CUDA
    tensors (it ran the twin, as for a float32 q, and FlexPrefill's map never used the kernel),
    and the kernel must agree with the twin there (tf32x3 dots)."""
    q, k = (t.cuda() for t in _inputs(2, 4, 2, 1000, 1000, 64, torch.bfloat16))
    qp, kp = pooling.block_mean_pool(q, 128), pooling.block_mean_pool(k, 64)
    kwargs = dict(num_queries=1000, num_keys=1000, block_q=128, block_k=64)
    calls = []
    kernel = pooling.pooled_block_probs
    monkeypatch.setattr(
        pooling, "pooled_block_probs", lambda *a, **kw: calls.append(1) or kernel(*a, **kw)
    )
    got = api.pooled_block_probs(qp, kp, **kwargs)
    assert calls == [1]
    _close(got, pooling_reference.pooled_block_probs(qp, kp, **kwargs), torch.float32)


def test_kernels_refuse_cpu_tensors_without_the_interpreter(monkeypatch):
    """Forced onto Triton on the CPU without TRITON_INTERPRET=1, each planning op names its
    tensor (before: Triton's own "Pointer argument (at 0) cannot be accessed" at the launch)."""
    import attnsieve.kernels

    monkeypatch.setattr(attnsieve.kernels, "INTERPRET", False)
    q, k = (t.cpu() for t in _inputs(1, 2, 1, 64, 64, 32, torch.float16))
    qp, kp = pooling_reference.block_mean_pool(q, 32), pooling_reference.block_mean_pool(k, 32)
    calls = [
        ("x", lambda: api.block_mean_pool(q, 32, backend="triton")),
        (
            "q_pooled",
            lambda: api.pooled_block_probs(
                qp, kp, num_queries=64, num_keys=64, block_q=32, block_k=32, backend="triton"
            ),
        ),
        (
            "q",
            lambda: api.antidiagonal_block_scores(
                q, k, stride=8, block_q=32, block_k=32, backend="triton"
            ),
        ),
        ("q", lambda: api.last_query_stats(q, k, last_q=16, block_k=16, backend="triton")),
    ]
    for name, call in calls:
        with pytest.raises(ValueError, match=rf"^{name}: the Triton kernel needs CUDA"):
            call()


def test_pooled_block_probs_refuses_mismatched_batch_and_kv_heads():
    """A k_pooled of another batch size is refused, not broadcast over q_pooled's batch (the twin
    repeated a batch-1 K; the kernel read past its end); so are no KV heads (a ZeroDivisionError
    before) and another device."""
    qp, kp = torch.randn(2, 2, 2, 16), torch.randn(1, 1, 2, 16)
    kwargs = dict(num_queries=64, num_keys=64, block_q=32, block_k=32, backend="reference")
    with pytest.raises(ValueError, match="q_pooled, k_pooled: batch"):
        api.pooled_block_probs(qp, kp, **kwargs)
    with pytest.raises(ValueError, match="H_q must be a multiple of H_kv"):
        api.pooled_block_probs(qp, kp[:, :0].expand(2, 0, 2, 16), **kwargs)
    with pytest.raises(ValueError, match="q_pooled, k_pooled: expected one device"):
        api.pooled_block_probs(qp, kp.expand(2, 1, 2, 16).to("meta"), **kwargs)


@pytest.mark.parametrize("causal", [True, False])
def test_nonfinite_inputs_match_the_twin(causal):
    """A row whose scores hold a NaN or +inf (a NaN query, an fp16-overflowed key) has no
    softmax: the twins zero it (``nan_to_num``) and so do the kernels. Before, the kernels
    normalised such rows by an lse of -inf: NaN pooled probabilities, antidiagonal rows summing
    past 1 and infinite last-query statistics."""
    q, k = _inputs(2, 2, 1, 70, 90, 16, torch.float16)
    q[0, 1, 5, 3] = math.nan
    k[0, 0, 37, 2], k[1, 0, 3, 0] = math.inf, -math.inf
    qp, kp = pooling_reference.block_mean_pool(q, 16), pooling_reference.block_mean_pool(k, 16)
    kw = dict(num_queries=70, num_keys=90, block_q=16, block_k=16, causal=causal)
    got = pooling.pooled_block_probs(qp, kp, **kw)
    _close(got, pooling_reference.pooled_block_probs(qp, kp, **kw), torch.float32)
    kw = dict(stride=4, block_q=16, block_k=16, causal=causal)
    got = antidiagonal.antidiagonal_block_scores(q, k, **kw)
    _close(got, antidiagonal_reference.antidiagonal_block_scores(q, k, **kw), torch.float16)
    if causal:  # last_query_stats is causal only
        for block_k in (1, 16, 64):
            kw = dict(last_q=20, block_k=block_k, pooled=True)
            *got, got_pooled = planning.last_query_stats(q, k, **kw)
            *want, want_pooled = planning_reference.last_query_stats(q, k, **kw)
            for a, b in zip(got, want, strict=True):
                _close(a, b, torch.float16)
            # a NaN or infinite score makes its block's mean score NaN or infinite in both (which
            # one may differ: the per-key path scores the mean query, not each row)
            finite = want_pooled.isfinite()
            assert torch.equal(got_pooled.isfinite(), finite)
            _close(got_pooled[finite], want_pooled[finite], torch.float16)


def test_empty_shapes_match_the_twin():
    """No queries, keys, query heads or batch: the launchers return the twin's empty (or zero)
    result instead of dividing by zero or launching an empty arange."""
    q, k = _inputs(1, 2, 1, 5, 7, 16, torch.float16)
    cases = [
        ("antidiagonal_block_scores", (q[:, :, :0], k), dict(stride=4, block_q=16, block_k=16)),
        ("antidiagonal_block_scores", (q, k[:, :, :0]), dict(stride=4, block_q=16, block_k=16)),
        (
            "antidiagonal_block_scores",
            (q, k[:, :, :0]),
            dict(stride=4, block_q=16, block_k=16, causal=False),
        ),
        ("last_query_stats", (q, k[:, :, :0]), dict(last_q=2, block_k=16)),
        ("last_query_stats", (q[:0], k[:0]), dict(last_q=2, block_k=1)),
        ("last_query_stats", (q[:0], k[:0]), dict(last_q=2, block_k=64)),
        ("last_query_stats", (q[:, :0], k), dict(last_q=2, block_k=16)),
        ("last_query_stats", (q[:0], k[:0]), dict(last_q=2, block_k=1, pooled=True)),
        ("last_query_stats", (q, k[:, :, :0]), dict(last_q=2, block_k=16, pooled=True)),
        ("antidiagonal_block_scores", (q[:, :0], k), dict(stride=4, block_q=16, block_k=16)),
    ]
    twins = {
        "antidiagonal_block_scores": (antidiagonal, antidiagonal_reference),
        "last_query_stats": (planning, planning_reference),
    }
    for name, args, kwargs in cases:
        kernel, twin = twins[name]
        got = getattr(kernel, name)(*args, **kwargs)
        want = getattr(twin, name)(*args, **kwargs)
        for a, b in zip(
            got if isinstance(got, tuple) else (got,),
            want if isinstance(want, tuple) else (want,),
            strict=True,
        ):
            assert a.shape == b.shape and a.dtype == b.dtype, (name, kwargs)
            assert torch.equal(a, b), (name, kwargs)


def test_last_query_stats_refuses_a_bool_last_q():
    """``last_q=True`` is not taken for one row (bool is an int subclass)."""
    q, k = _inputs(1, 2, 1, 8, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="last_q: expected an int"):
        api.last_query_stats(q, k, last_q=True, block_k=4, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_zero_head_dim(backend):
    """head_dim 0: the scored ops refuse it by name (1/sqrt(0) was a ZeroDivisionError) and the
    Triton mean pool returns the twin's empty result (an empty arange before)."""
    device = DEVICE if backend == "triton" else "cpu"
    q, k = (
        torch.randn(1, 2, 8, 0, device=device).half(),
        torch.randn(1, 1, 8, 0, device=device).half(),
    )
    assert api.block_mean_pool(q, 4, backend=backend).shape == (1, 2, 2, 0)
    qp, kp = torch.zeros(1, 2, 2, 0, device=device), torch.zeros(1, 1, 2, 0, device=device)
    kw = dict(num_queries=8, num_keys=8, block_q=4, block_k=4, backend=backend)
    with pytest.raises(ValueError, match="q_pooled, k_pooled: expected head_dim >= 1"):
        api.pooled_block_probs(qp, kp, **kw)
    with pytest.raises(ValueError, match="q, k: expected head_dim >= 1"):
        api.antidiagonal_block_scores(q, k, stride=2, block_q=4, block_k=4, backend=backend)
    with pytest.raises(ValueError, match="q, k: expected head_dim >= 1"):
        api.last_query_stats(q, k, last_q=2, block_k=4, backend=backend)
