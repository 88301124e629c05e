"""Masked keys never contribute: NaN or ±Inf in K/V where the layout or causality hides a key
changes no output row, on the reference and the Triton kernel (interpreter, fp16) alike; rows that
do see a non-finite value come out NaN, whole.

Each case plants poison in a (batch, KV head, key) set, computes which query rows can see it
(layout ∩ causality, through GQA), and checks every other row bit for bit against the clean run.
The dense SDPA dispatch (CUDA, dense causal N == M, no lse) propagates NaN by design and is not
reached here (CPU, or ``return_lse``/``dense_dispatch=False`` on CUDA).
"""

import math

import pytest
import torch

from attnsieve.api import attention
from attnsieve.kernels import INTERPRET
from attnsieve.layout import Layout

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["reference", "triton"]
POISONS = [math.nan, math.inf, -math.inf]
SPANS = hasattr(Layout, "with_diagonals")  # key spans (slash lines), when the Layout has them


def _run(backend, q, k, v, layout, causal, lse=True):
    """(out float32, lse or None); the reference is run both with and without the lse branch."""
    if backend == "triton" and q.is_cuda:  # keep off the SDPA dense dispatch
        from attnsieve.kernels.prefill import sparse_attention

        result = sparse_attention(
            q, k, v, layout, causal=causal, return_lse=lse, dense_dispatch=False
        )
    else:
        result = attention(q, k, v, layout, causal=causal, return_lse=lse, backend=backend)
    out, lse_ = result if lse else (result, None)
    return out.float(), lse_


def _same(a, b):
    """Equal up to rounding, never across a non-finite value: the repair launch reruns a tile
    that met a non-finite value in a masked tile on 16-key tiles. Under the interpreter those are
    its own tiles, yet numpy's products may still round the rerun differently (4.8e-7 in a
    log-sum-exp on one CPU, bitwise on another), so float32 rounding is allowed there; on the GPU
    the tiles differ, so bfloat16 rounding is."""
    if not a.is_cuda:
        return bool(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6))
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3))


def _visible(layout, causal, b, h_q, h_kv):
    """bool (B, H_q, N, M): the (query, key) pairs ``layout`` computes under ``causal``."""
    vis = layout.to_dense_mask(causal=causal)
    return vis.expand(b, -1, -1, -1)[:, layout.heads_for(h_q, h_kv)]


def _qkv(b, h_q, h_kv, n, m, d=32, dtype=torch.float16, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    make = lambda h, length: torch.randn(  # noqa: E731
        b, h, length, d, generator=g, device=DEVICE, dtype=torch.float32
    ).to(dtype)
    return make(h_q, n), make(h_kv, m), make(h_kv, m)


def _random_layout(b, h, n, m, bq, bk, p, columns, seed=0, diagonals=0):
    """Random blocks (one key block per (batch, head) left out of every row), columns and, where
    layouts have them, spans covering ``diagonals`` random diagonals. Drawn on the CPU: a GPU
    run tests the layouts the CPU run does (CUDA's generator drew one where a poisoned key met no
    block, failing a precondition: benchmarks/results/h100/tests57/shrunk.log)."""
    g = torch.Generator().manual_seed(seed)
    qb, kb = -(-n // bq), -(-m // bk)
    mask = torch.rand(b, h, qb, kb, generator=g) < p
    dropped = torch.randint(kb, (b, h, 1, 1), generator=g)
    mask &= torch.arange(kb) != dropped
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        layout = layout.with_columns(torch.randint(-1, m, (b, h, qb, columns), generator=g))
    if diagonals and SPANS:
        layout = layout.with_diagonals(torch.randint(-1, m, (b, h, diagonals), generator=g))
        assert layout.has_spans
    return layout.to(DEVICE)


def _check_poison(backend, q, k, v, layout, causal, poison, where, value, lse=True, clean=None):
    """Plant ``value`` in K and/or V at ``poison`` (B, H_kv, M) and compare with the clean run.

    ``where`` is "k", "v", "kv" (whole rows) or "v1" (one element of each value row). Rows that
    see no poisoned key: equal output and lse (`_same`). Rows that see a poisoned value: NaN across
    the whole row, lse unchanged (it does not depend on V). Returns the number of rows that saw
    poison, so callers can assert the case exercised what it meant to.
    """
    b, h_q, n, _ = q.shape
    h_kv = k.shape[1]
    clean, clean_lse = clean or _run(backend, q, k, v, layout, causal, lse)
    kp, vp = k.clone(), v.clone()
    if "k" in where:
        kp[poison] = value
    if where == "v1":
        vp[..., 5][poison] = value
    elif "v" in where:
        vp[poison] = value
    out, out_lse = _run(backend, q, kp, vp, layout, causal, lse)

    group = torch.arange(h_q, device=q.device) // (h_q // h_kv)
    vis = _visible(layout, causal, b, h_q, h_kv)
    sees = (vis & poison[:, group, None, :]).any(-1)  # (B, H_q, N)
    unaffected = ~sees
    assert _same(out[unaffected], clean[unaffected]), (
        f"{backend}: poison in {where}={value} reached "
        f"{int((out[unaffected] != clean[unaffected]).any(-1).sum())} rows that cannot see it"
    )
    if lse:
        assert _same(out_lse[unaffected], clean_lse[unaffected])
    if where in ("v", "v1"):
        assert out[sees].isnan().all(), f"{backend}: rows that weight a {value} value are not NaN"
        if lse:
            assert _same(out_lse, clean_lse)
    elif value != -math.inf and where == "k":
        # a NaN or +inf logit on a visible key leaves no finite softmax: the row is NaN
        assert out[sees].isnan().any(-1).all(), f"{backend}: a visible {value} logit vanished"
    return int(sees.sum())


def _hidden_keys(layout, causal, b, h_q, h_kv):
    """bool (B, H_kv, M): keys no query row of the KV group can see."""
    vis = _visible(layout, causal, b, h_q, h_kv).any(2)  # (B, H_q, M)
    return ~vis.unflatten(1, (h_kv, h_q // h_kv)).any(2)


# (b, h_q, h_kv, n, m, bq, bk, p, columns, diagonals)
# Kept small, as the interpreter's time grows with heads x row tiles x key tiles (all 16 wide
# here); every case still has partial last tiles and two or more row tiles per head.
SHAPES = [
    (1, 2, 1, 40, 40, 32, 32, 0.5, 0, 2),  # partial last blocks, N == M (spans: partial test)
    (2, 4, 2, 24, 56, 16, 32, 0.4, 6, 1),  # query_offset 32, columns (and spans), GQA 2, batch 2
    (1, 2, 1, 90, 50, 32, 16, 0.6, 4, 0),  # N > M: the first 40 rows see nothing
    (1, 8, 1, 24, 24, 16, 16, 0.7, 0, 0),  # GQA 8
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])))
@pytest.mark.parametrize("causal", [True, False])
def test_hidden_keys_never_contribute(backend, shape, causal):
    """NaN in K and V at every key that no row of its group sees (blocks not in the layout,
    above the diagonal, past the columns): the output is bitwise the clean one."""
    b, h_q, h_kv, n, m, bq, bk, p, columns, _ = shape  # a diagonal reaches nearly every key
    q, k, v = _qkv(b, h_q, h_kv, n, m)
    layout = _random_layout(b, h_kv, n, m, bq, bk, p, columns)
    hidden = _hidden_keys(layout, causal, b, h_q, h_kv)
    assert hidden.any() and not hidden.all()
    assert _check_poison(backend, q, k, v, layout, causal, hidden, "kv", math.nan) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", POISONS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["k", "v", "v1"])
def test_keys_inside_the_diagonal_block(backend, value, where):
    """A key in the diagonal block is seen by the rows at or after it and hidden from those
    before: poison reaches exactly the rows that see it."""
    n = m = 64
    q, k, v = _qkv(1, 1, 1, n, m)  # one head: GQA is the other tests' business
    layout = Layout.dense(n, m, block_q=32, block_k=32, device=DEVICE)
    poison = torch.zeros(1, 1, m, dtype=torch.bool, device=DEVICE)
    poison[..., 45] = True  # diagonal block of rows 32..63: rows 32..44 must not see it
    seen = _check_poison(backend, q, k, v, layout, True, poison, where, value)
    assert seen == n - 45


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])))
def test_partially_visible_keys(backend, shape):
    """Poison a random tenth of the keys of one KV head, visible to some rows and not others
    (layout blocks, columns, causality): only the rows that see one change, and they are NaN."""
    b, h_q, h_kv, n, m, bq, bk, p, columns, diagonals = shape
    q, k, v = _qkv(b, h_q, h_kv, n, m, seed=1)
    # one plan per query head
    layout = _random_layout(1, h_q, n, m, bq, bk, p, columns, seed=1, diagonals=diagonals)
    g = torch.Generator(device=DEVICE).manual_seed(2)
    poison = torch.rand(b, h_kv, m, generator=g, device=DEVICE) < 0.1
    poison[:, 1:] = False  # other KV heads stay clean: GQA groups must not mix
    clean = _run(backend, q, k, v, layout, True)
    # whole value rows of each kind, one element of a row, and NaN / +inf logits (a -inf logit
    # acts like a mask: the diagonal-block test covers it)
    cases = [("v", x) for x in POISONS] + [("v1", math.nan), ("v1", math.inf)]
    for where, value in cases + [("k", math.nan), ("k", math.inf)]:
        seen = _check_poison(backend, q, k, v, layout, True, poison, where, value, clean=clean)
        assert 0 < seen < b * h_q * n


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_prompt_repairs_every_marked_tile(backend):
    """Value rows poisoned far apart in a prompt longer than one repair program's rows (256 under
    the interpreter): every tile they reach through a masked tile is rerun, in each program."""
    n = 300  # two repair programs (rows 0..255 and 256..299), a poisoned key in each
    q, k, v = _qkv(1, 2, 1, n, n)
    # block_q 64: 32-row tiles in the fast pass, 64-row ones in the repair, half the programs of
    # block_q 32. block_k stays 32: both passes walk 16-key tiles, so a rerun row rounds as it did
    # in the fast pass (`_same`; 32-key tiles there moved rows that never see a poisoned key)
    layout = Layout.dense(n, n, block_q=64, block_k=32, device=DEVICE)
    poison = torch.zeros(1, 1, n, dtype=torch.bool, device=DEVICE)
    poison[..., [100, 290]] = True
    assert _check_poison(backend, q, k, v, layout, True, poison, "v", math.nan) == 2 * (n - 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_without_lse_matches(backend):
    """The fused softmax branch of the reference (no lse) masks like the lse branch."""
    q, k, v = _qkv(1, 2, 1, 50, 90)  # GQA 2 kept; more heads or batch: the same branch
    layout = _random_layout(1, 1, 50, 90, 16, 32, 0.4, 6)
    hidden = _hidden_keys(layout, True, 1, 2, 1)
    _check_poison(backend, q, k, v, layout, True, hidden, "kv", math.nan, lse=False)
    poison = torch.zeros_like(hidden)
    poison[:, :, 60] = True
    assert _check_poison(backend, q, k, v, layout, True, poison, "v", math.inf, lse=False) > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m", [(70, 70), (40, 100), (100, 40)])
def test_storage_past_the_last_key_is_never_read(backend, n, m):
    """K/V are views into buffers that hold NaN past key M (inside the last partial block's tile):
    nothing past the tensor's end is read."""
    q, k, v = _qkv(1, 1, 1, n, m)
    layout = Layout.dense(n, m, block_q=32, block_k=32, causal=False, device=DEVICE)
    big = torch.full((2, 1, 1, m + 64, 32), math.nan, dtype=q.dtype, device=DEVICE)
    big[0, :, :, :m], big[1, :, :, :m] = k, v
    kv, vv = big[0, :, :, :m], big[1, :, :, :m]
    for causal in (True, False):
        clean, clean_lse = _run(backend, q, k, v, layout, causal)
        out, lse = _run(backend, q, kv, vv, layout, causal)
        assert torch.equal(out, clean) and torch.equal(lse, clean_lse)
        assert not out.isnan().any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_that_see_no_key_stay_zero(backend):
    """N > M under causality: the first N - M rows see no key, so they give 0 and lse -inf even
    when every key and value is NaN (the others come out NaN)."""
    q, k, v = _qkv(1, 2, 1, 90, 50)
    k.fill_(math.nan)
    v.fill_(math.nan)
    layout = Layout.dense(90, 50, block_q=32, block_k=16, device=DEVICE)
    out, lse = _run(backend, q, k, v, layout, True)
    assert not out[:, :, :40].any() and bool((lse[:, :, :40] == -math.inf).all())
    assert out[:, :, 40:].isnan().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_bfloat16_inputs(backend):
    """Other input dtypes take other branches (the bf16 kernel on the GPU, float32 on the
    reference): the same guarantee. Triton's interpreter refuses bf16 (its bf16 dots are wrong)."""
    dtypes = [torch.float32] if backend == "reference" else []
    if backend == "reference" or not INTERPRET:
        dtypes.append(torch.bfloat16)
    for dtype in dtypes:
        q, k, v = _qkv(1, 4, 2, 50, 90, dtype=dtype)
        layout = _random_layout(1, 2, 50, 90, 16, 32, 0.4, 6)
        hidden = _hidden_keys(layout, True, 1, 4, 2)
        _check_poison(backend, q, k, v, layout, True, hidden, "kv", math.nan)
        _check_poison(backend, q, k, v, layout, True, hidden, "kv", math.nan, lse=False)


@pytest.mark.parametrize("layout_kind", ["none", "dense"])
def test_reference_float32_dense_causal_does_not_leak(layout_kind):
    q, k, v = _qkv(1, 2, 1, 40, 40, dtype=torch.float32)
    layout = (
        None
        if layout_kind == "none"
        else Layout.dense(40, 40, block_q=16, block_k=16, device=DEVICE)
    )
    poison = torch.zeros(1, 1, 40, dtype=torch.bool, device=DEVICE)
    poison[..., 39] = True  # seen by the last row only
    clean = attention(q, k, v, layout, backend="reference")
    vp = v.clone()
    vp[poison] = math.nan
    out = attention(q, k, vp, layout, backend="reference")
    assert torch.equal(out[:, :, :39], clean[:, :, :39])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lse", [True, False])
def test_minus_inf_logit_weighs_nothing(backend, lse):
    """An inf in one channel of a key gives a -inf logit to the rows whose query is negative in
    that channel: the key weighs 0 there and +inf (a NaN row) in the others. The reference
    without lse (SDPA's path) made every row that saw the key NaN."""
    q, k, v = _qkv(1, 2, 1, 40, 40)
    row = torch.arange(40, device=DEVICE)
    q[..., 0] = torch.where(row % 2 == 0, -1.0, 1.0).to(q.dtype)
    layout = Layout.dense(40, 40, block_q=16, block_k=16, device=DEVICE)
    poisoned, finite = k.clone(), k.clone()
    poisoned[0, 0, 7, 0] = math.inf
    finite[0, 0, 7, 0] = 6e4  # a logit of about -1e4 on the even rows: weight 0 there too
    out, _ = _run(backend, q, poisoned, v, layout, True, lse)
    want, _ = _run(backend, q, finite, v, layout, True, lse)
    plus = (row >= 7) & (row % 2 == 1)
    assert out[:, :, plus].isnan().all()
    # float16 rounding: without lse the finite run takes the reference's SDPA path
    torch.testing.assert_close(out[:, :, ~plus], want[:, :, ~plus], rtol=1e-3, atol=1e-3)
