"""attnsieve.cache.Cache against its twin (cache_reference.ReferenceCache) and its own promises:
real memory freed, pool growth / shrink / free-list reuse, FP8, positions, summaries, bad input."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsieve.cache import Cache
from attnsieve.cache_reference import ReferenceCache, round_bf16
from attnsieve.kernels import INTERPRET
from attnsieve.kernels.decode_reference import decode_reference
from attnsieve.views import Kept

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Triton kernels on CPU tensors run in the interpreter only (a GPU run sets TRITON_INTERPRET=0)
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 on CPU")
TRITON_DEVICES = [pytest.param("cpu", marks=needs_interpreter)] + DEVICES[1:]
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _channels(kv_heads, head_dim, r, generator):
    """int64 (kv_heads, r): r distinct random label channels a head, as calibrate picks them."""
    return torch.stack([torch.randperm(head_dim, generator=generator)[:r] for _ in range(kv_heads)])


def pair(num_layers=2, batch=2, kv_heads=2, head_dim=16, device="cpu", **kw):
    args = (num_layers, batch, kv_heads, head_dim)
    kw = {"dtype": F32, "page_size": 8, "device": device, **kw}
    return Cache(*args, **kw), ReferenceCache(*args, **kw)


def kv(cache, t, scale=1.0, g=None):
    shape = (cache.batch, cache.kv_heads, t, cache.head_dim)
    make = lambda: (torch.randn(shape, generator=g) * scale).to(cache.dtype).to(cache.device)  # noqa: E731
    return make(), make()


def kept_from(lists, device="cpu"):
    """Kept from nested lists [b][h] of kept indices."""
    b, h = len(lists), len(lists[0])
    width = max(1, max(len(x) for row in lists for x in row))
    idx = torch.full((b, h, width), -1, dtype=torch.int32)
    count = torch.zeros(b, h, dtype=torch.int32)
    for i, row in enumerate(lists):
        for j, x in enumerate(row):
            idx[i, j, : len(x)] = torch.tensor(x, dtype=torch.int32)
            count[i, j] = len(x)
    return Kept(idx.to(device), count.to(device))


def random_kept(cache, layer, g, p):
    n = cache.head_tokens(layer)
    lists = [
        [torch.nonzero(torch.rand(int(m), generator=g) < p).flatten().tolist() for m in row]
        for row in n
    ]
    return kept_from(lists, cache.device)


def with_extras(cache, layer, kept, g, most=2):
    """``kept`` plus up to ``most`` compensation tokens per head (as many as it evicts at most), of
    random weight, at random positions the row has seen: an evicted entry's, a kept entry's (a
    tie: the extra goes after it), or one the head never held (before its first entry too)."""
    b, h, e, d = cache.batch, cache.kv_heads, most, cache.head_dim
    _, _, positions, _ = cache._gather(cache.layers[layer])
    seen = [int(p) for p in cache.layers[layer].seen]
    weight = torch.zeros(b, h, e)
    pos = torch.zeros(b, h, e, dtype=torch.int64)
    n = cache.head_tokens(layer)
    for i in range(b):
        for j in range(h):
            keep = set(kept.idx[i, j, : int(kept.count[i, j])].tolist())
            gone = [t for t in range(int(n[i, j])) if t not in keep]
            stored = int(torch.randint(0, min(e, len(gone)) + 1, (), generator=g))
            held = positions[i, j, : int(n[i, j])].cpu()
            pool = [int(held[gone[t]]) for t in torch.randperm(len(gone), generator=g)[:e]]
            fresh = torch.randint(0, seen[i], (e,), generator=g).tolist()
            pool = torch.tensor(pool + [int(held[t]) for t in keep] + fresh).unique()
            chosen = pool[torch.randperm(len(pool), generator=g)][:stored]
            stored = len(chosen)
            weight[i, j, :stored] = 1 + torch.rand(stored, generator=g) * 40
            pos[i, j, :stored] = chosen.sort().values
    k, v = (torch.randn(b, h, e, d, generator=g).to(cache.dtype) for _ in range(2))
    to = lambda t: t.to(cache.device)  # noqa: E731
    return Kept(kept.idx, kept.count, to(k), to(v), to(weight), to(pos))


def assert_same(cache, twin, layer, h_q):
    cache.validate()
    for x, y in zip(cache.gather(layer), twin.gather(layer), strict=True):
        assert torch.equal(x, y)
    w = 3
    q = torch.randn(cache.batch, h_q, w, cache.head_dim).to(cache.dtype).to(cache.device)
    qp = torch.arange(w, device=cache.device).expand(cache.batch, w).contiguous()
    a, b = cache.kv_view(layer, q, qp), twin.kv_view(layer, q, qp)
    for name in ("keys", "values", "positions", "lengths", "queries", "query_positions"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.layer, a.num_layers) == (b.layer, b.num_layers)
    assert (a.log_weights is None) == (b.log_weights is None)
    if a.log_weights is not None:
        assert torch.equal(a.log_weights, b.log_weights)
        assert torch.equal(cache.log_weights(layer), a.log_weights)
    a, b = cache.page_view(layer), twin.page_view(layer)
    for name in ("page_count", "lengths"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    p = b.num_pages  # the cache's view also shows the pages `reserve` gave ahead: empty ones
    for x, y in zip(a.bounds(), b.bounds(), strict=True):
        assert torch.equal(x[:, :, :p], y) and x[:, :, p:].isinf().all()
    assert (a.weighted_pages is None) == (b.weighted_pages is None)
    if a.weighted_pages is not None:
        assert torch.equal(a.weighted_pages, b.weighted_pages)
    assert a.key_min_pool.dtype == b.key_min_pool.dtype == torch.bfloat16
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert torch.equal(a.labels[:, :, :p], b.labels) and not a.labels[:, :, p:].any()
        assert torch.equal(a.label_channels, b.label_channels)
    valid = torch.arange(p * cache.page_size, device=cache.device)
    valid = (valid < b.lengths[..., None]).view(*b.page_table.shape, cache.page_size)
    assert torch.equal(a.keys()[:, :, :p][valid], b.keys()[valid])  # past the length: any value
    assert torch.equal(cache.head_tokens(layer), twin.head_tokens(layer))
    assert cache.memory_bytes(layer) == twin.memory_bytes(layer)
    assert cache.seq_length(layer) == twin.seq_length(layer)


CONFIGS = {
    "b1_h1_f32": dict(batch=1, kv_heads=1, head_dim=16, dtype=F32, page_size=8),
    "b2_h2_bf16_fp8": dict(batch=2, kv_heads=2, head_dim=64, dtype=BF16, kv_dtype="fp8"),
    "b3_h4_f16_ps16": dict(batch=3, kv_heads=4, head_dim=32, dtype=F16, page_size=16),
    "b2_h3_f32_fp8": dict(batch=2, kv_heads=3, head_dim=16, dtype=F32, kv_dtype="fp8"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_appends_and_compactions_match_twin(name, device):
    cfg = CONFIGS[name]
    cache, twin = pair(device=device, **cfg)
    g = torch.Generator().manual_seed(len(name))
    h_q = cfg["kv_heads"] * 4  # GQA: policies see 4 query heads per KV head
    for step in range(24):
        layer = step % 2
        op = torch.rand((), generator=g).item()
        if step == 9:  # label channels set after tokens exist: back-filled, then kept up to date
            ch = _channels(cfg["kv_heads"], cfg["head_dim"], 3, g).to(device)
            cache.set_label_channels(layer, ch)
            twin.set_label_channels(layer, ch)
        elif op < 0.55 or cache.seq_length(layer) == 0:
            t = int(torch.randint(1, 40, (), generator=g))
            k, v = kv(cache, t, scale=float(torch.rand((), generator=g)) * 4, g=g)
            positions = None
            if op < 0.1:  # explicit positions with gaps
                start = cache.seq_length(layer) + 5
                positions = (start + 2 * torch.arange(t)).expand(cfg["batch"], t).contiguous()
                positions = positions.to(device)
            cache.append(layer, k, v, positions)
            twin.append(layer, k, v, positions)
        else:
            kept = random_kept(cache, layer, g, p=float(torch.rand((), generator=g)))
            if op < 0.75:  # compensation tokens: inserted by position, weighted
                kept = with_extras(cache, layer, kept, g)
            cache.compact(layer, kept)
            twin.compact(layer, kept)
            if op > 0.9:
                cache.shrink()
                twin.shrink()
        assert_same(cache, twin, layer, h_q)
    assert cache.memory_bytes() == twin.memory_bytes()


OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 1), st.sampled_from([1, 8, 9, 17]), st.booleans()),
    st.tuples(st.just("compact"), st.integers(0, 1), st.integers(0, 2**31), st.booleans()),
    st.tuples(st.just("shrink"), st.sampled_from([None, 0, 1])),
    st.tuples(st.just("reserve"), st.integers(0, 9)),
    st.tuples(st.just("labels"), st.integers(0, 1), st.integers(0, 2**31)),
    st.tuples(st.just("reset")),
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(name=st.sampled_from(list(CONFIGS)), ops=st.lists(OPS, max_size=10))
def test_random_op_sequences_match_twin(name, ops):
    """Any sequence of appends (one token: the one-launch path under the interpreter; page
    boundaries; per-row explicit positions), compactions (everything to nothing, with extras),
    shrinks, reserves, label channels and resets leaves the cache equal to its twin."""
    cfg = CONFIGS[name]
    cache, twin = pair(**cfg)
    g = torch.Generator().manual_seed(0)
    for op, *args in ops:
        if op == "append":
            layer, t, explicit = args
            positions = None
            if explicit:  # each row its own gaps
                rows = torch.arange(cache.batch)[:, None]
                positions = cache.layers[layer].seen[:, None] + rows + (rows + 1) * torch.arange(t)
            k, v = kv(cache, t, g=g)
            for c in (cache, twin):
                c.append(layer, k, v, positions)
        elif op == "compact":
            layer, seed, extras = args
            h = torch.Generator().manual_seed(seed)
            kept = random_kept(cache, layer, h, p=float(torch.rand((), generator=h)))
            if extras and cache.seq_length(layer):
                kept = with_extras(cache, layer, kept, h)
            for c in (cache, twin):
                c.compact(layer, kept)
        elif op == "shrink":
            for c in (cache, twin):
                c.shrink(*args)
        elif op == "reserve":  # the twin has no pool: nothing to reserve
            cache.reserve(*args)
        elif op == "labels":
            layer, seed = args
            h = torch.Generator().manual_seed(seed)
            ch = _channels(cfg["kv_heads"], cfg["head_dim"], 2, h)
            for c in (cache, twin):
                c.set_label_channels(layer, ch)
        else:
            for c in (cache, twin):
                c.reset()
    for layer in range(len(cache)):
        assert_same(cache, twin, layer, 2 * cfg["kv_heads"])
    assert cache.reserved_bytes() >= cache.memory_bytes() + cache.ahead_bytes()


def test_the_twin_documents_the_methods_it_lacks():
    """ReferenceCache's docstring names exactly the public methods of Cache it does not have."""
    import re

    public = lambda cls: {n for n in dir(cls) if not n.startswith("_")}  # noqa: E731
    named = set(re.findall(r"``(\w+)``", ReferenceCache.__doc__)) - {"shrink"}
    assert named == public(Cache) - public(ReferenceCache)
    assert public(ReferenceCache) <= public(Cache)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_kernel_args_follow_the_documented_layout(device, kv_dtype):
    """Token t of a head is page_table[b, h, t // ps], slot t % ps: the decode kernel's reference,
    fed the kernel args, equals attention over the twin's tokens, head by head (ragged)."""
    cache, twin = pair(batch=2, kv_heads=2, head_dim=16, device=device, kv_dtype=kv_dtype)
    for c in (cache, twin):
        torch.manual_seed(1)
        c.append(0, *kv(c, 45))
        c.compact(0, kept_from([[[0, 3, 4, 40], list(range(2, 30))], [[], [44]]], device))
        c.append(0, *kv(c, 3))
    q = torch.randn(2, 4, 16, device=device)
    a = cache.kernel_args(0)
    assert a.page_table.dtype == a.lengths.dtype == torch.int32
    out = decode_reference(q, a.k_pages, a.v_pages, a.page_table, a.lengths, k_scale=a.k_scale,
                           v_scale=a.v_scale)  # fmt: skip
    keys, values, n = twin.gather(0)
    for b in range(2):
        for h in range(2):
            m = int(n[b, h])
            s = q[b, 2 * h : 2 * h + 2] @ keys[b, h, :m].float().T / 4.0
            ref = torch.softmax(s, -1) @ values[b, h, :m].float()
            torch.testing.assert_close(out[b, 2 * h : 2 * h + 2], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_compensation_token_weighs_as_its_copies(device, kv_dtype):
    """A stored extra of weight w sits at its position among the kept tokens (after a kept one
    of the same position) and attends, in the decode kernel and its twin, as w copies of
    itself."""
    from attnsieve.kernels.decode import decode_attention
    from attnsieve.kernels.decode_reference import quantize_fp8

    cache = Cache(1, 2, 2, 16, page_size=8, dtype=F32, device=device, kv_dtype=kv_dtype)
    torch.manual_seed(0)
    cache.append(0, *kv(cache, 30))
    keep = [0, 1, 2, 3, *range(24, 30)]
    weight = torch.tensor([[3.0, 0.0], [20.0, 1.0]])  # head (0, 1) stores none
    extra_k, extra_v = torch.randn(2, 2, 1, 16), torch.randn(2, 2, 1, 16)
    kept = dataclasses.replace(
        kept_from([[keep, keep], [keep, keep[:6]]], device),
        extra_keys=extra_k.to(device), extra_values=extra_v.to(device),
        extra_weight=weight[..., None].to(device),
        extra_positions=torch.tensor([[[23], [0]], [[4], [25]]], device=device),
    )  # fmt: skip
    cache.compact(0, kept)
    cache.append(0, *kv(cache, 2))
    keys, values, n = cache.gather(0)
    assert n.tolist() == [[13, 12], [13, 9]]
    pos = cache.kv_view(0, torch.zeros(2, 4, 1, 16, device=device), torch.zeros(2, 1).long().to(
        device)).positions  # fmt: skip
    assert pos[0, 0, :13].tolist() == [0, 1, 2, 3, 23, 24, 25, 26, 27, 28, 29, 30, 31]
    assert pos[1, 1, :9].tolist() == [0, 1, 2, 3, 24, 25, 25, 30, 31]
    lw = cache.log_weights(0).cpu()
    at = {(0, 0): 4, (1, 0): 4, (1, 1): 6}  # where each stored extra landed
    for (b, h), i in at.items():
        assert lw[b, h, i] == weight[b, h].log() and lw[b, h].count_nonzero() == (weight[b, h] > 1)
        want = extra_k[b, h, 0]
        if kv_dtype == "fp8":
            q8, scale = quantize_fp8(want)
            want = q8.float() * scale
        assert torch.equal(keys[b, h, i].cpu(), want)
    assert not lw[0, 1].any()
    q = torch.randn(2, 4, 16, device=device)
    a = cache.kernel_args(0)
    args = (q, a.k_pages, a.v_pages, a.page_table, a.lengths)
    scales = {"k_scale": a.k_scale, "v_scale": a.v_scale, "log_weight": a.log_weight}
    outs = [decode_reference(*args, **scales), decode_attention(*args, **scales)]
    for b in range(2):
        for h in range(2):
            m = int(n[b, h])
            copies = lw[b, h, :m].exp().round().long().to(device)
            k = keys[b, h, :m].float().repeat_interleave(copies, 0)
            v = values[b, h, :m].float().repeat_interleave(copies, 0)
            want = torch.softmax(q[b, 2 * h : 2 * h + 2] @ k.T / 4.0, -1) @ v
            for out in outs:
                torch.testing.assert_close(out[b, 2 * h : 2 * h + 2], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_compress_to_budget_frees_real_memory(device):
    ps, d = 16, 64
    cache = Cache(1, 2, 4, d, page_size=ps, dtype=F16, device=device)
    cache.append(0, *kv(cache, 200))
    page = 2 * ps * d * 2 + ps * 8 + 2 * d * 2  # K, V, positions, key min / max (bfloat16)
    assert cache.page_bytes(0) == page
    assert cache.memory_bytes() == 2 * 4 * math.ceil(200 / ps) * page
    budgets = [[5, 16, 17, 33], [0, 1, 64, 200]]
    lists = [[list(range(200 - t, 200)) for t in row] for row in budgets]
    cache.compact(0, kept_from(lists, device))
    held = cache.head_tokens(0)
    assert held.tolist() == budgets
    assert cache.memory_bytes() == sum(math.ceil(t / ps) for row in budgets for t in row) * page
    # within one page per head of the budget itself
    assert cache.memory_bytes() <= sum(t * page / ps + page for row in budgets for t in row)
    table = cache.kernel_args(0).page_table
    assert ((table >= 0).sum(-1).cpu() == (held + ps - 1) // ps).all()


@pytest.mark.parametrize("device", DEVICES)
def test_pool_grows_geometrically_reuses_free_pages_and_shrinks(device):
    ps = 8
    cache = Cache(1, 1, 2, 16, page_size=ps, dtype=F32, device=device)
    sizes = []
    for _ in range(400):  # decode-like growth: one token at a time
        cache.append(0, *kv(cache, 1))
        sizes.append(cache.layers[0].k_pages.shape[0])
    assert sizes[-1] >= 2 * 400 // ps
    assert len(set(sizes)) <= 14  # geometric growth: a handful of re-allocations, not 100
    cache.validate()
    before = cache.gather(0)
    table = cache.layers[0].page_table.clone()
    # keep the first 20 tokens of head 0 and the last 20 of head 1: 3 pages each stay
    cache.compact(0, kept_from([[list(range(20)), list(range(380, 400))]], device))
    reserved = cache.reserved_bytes()
    assert reserved == sizes[-1] * cache.page_bytes(0)  # compaction frees pages, not the pool
    assert cache.memory_bytes() == 2 * 3 * cache.page_bytes(0)
    # in place: the retained logical pages keep their physical pages
    assert torch.equal(cache.layers[0].page_table[..., :3], table[..., :3])
    freed = set(table[0, 0, 3:50].tolist()) | set(table[0, 1, 3:50].tolist())
    cache.append(0, *kv(cache, 100))  # 20 -> 120 tokens: 12 new pages per head, all free ones
    assert cache.layers[0].k_pages.shape[0] == sizes[-1]  # no growth
    new = cache.layers[0].page_table[..., 3:15].flatten().tolist()
    assert set(new) <= freed
    kept = cache.gather(0)
    cache.shrink()
    cache.validate()
    assert cache.reserved_bytes() == cache.memory_bytes() == 2 * 15 * cache.page_bytes(0)
    for x, y in zip(kept, cache.gather(0), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(before[0][0, 0, :20], kept[0][0, 0, :20])


def test_compact_moves_only_kept_tokens_not_in_place():
    cache = Cache(1, 1, 1, 16, page_size=8, dtype=F32, device="cpu")
    cache.append(0, *kv(cache, 40))
    pages = cache.layers[0].k_pages
    before = pages.clone()
    cache.compact(0, kept_from([[list(range(16)) + [30, 31]]]))  # two full pages stay put
    assert cache.layers[0].k_pages is pages  # no re-allocation
    first = cache.layers[0].page_table[0, 0, :2].long()
    assert torch.equal(pages[first], before[first])
    assert cache.head_tokens(0).tolist() == [[18]]


def test_a_weighted_layer_compacts_to_nothing():
    """After a compensation token, every head may still be emptied (an eviction of all)."""
    cache = Cache(1, 1, 1, 16, page_size=8, dtype=F32, device="cpu")
    cache.append(0, *kv(cache, 10))
    one = torch.ones(1, 1, 1, dtype=torch.int32)
    extra = torch.randn(1, 1, 1, 16)
    weight, position = torch.full((1, 1, 1), 9.0), torch.full((1, 1, 1), 5)
    cache.compact(0, Kept(one * 0, one[..., 0], extra, extra, weight, position))
    assert cache.layers[0].weighted_pages is not None
    cache.compact(0, Kept(torch.full((1, 1, 0), -1, dtype=torch.int32), one[..., 0] * 0))
    assert cache.head_tokens(0).tolist() == [[0]] and cache.layers[0].weighted_pages is None


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_round_trip_error_bound(device):
    cache = Cache(1, 2, 2, 64, dtype=BF16, device=device, kv_dtype="fp8")
    g = torch.Generator().manual_seed(3)
    k = (torch.randn(2, 2, 50, 64, generator=g) * torch.logspace(-3, 3, 50)[:, None]).to(BF16)
    v = (torch.randn(2, 2, 50, 64, generator=g) * 7).to(BF16)
    cache.append(0, k.to(device), v.to(device))
    a = cache.kernel_args(0)
    assert a.k_pages.dtype == a.v_pages.dtype == torch.float8_e4m3fn
    assert a.k_scale.dtype == torch.float32
    keys, values, _ = cache.gather(0)
    for got, want in ((keys, k), (values, v)):
        got, want = got.float().cpu(), want.float()
        amax = want.abs().amax(-1, keepdim=True)
        # e4m3: 3 mantissa bits (relative 2^-4), subnormals below 2^-6 * scale (step 2^-9 *
        # scale), the scale a power of two below 2 * amax / 448
        bound = want.abs() * 2**-4 + amax / 448 * 2**-8 + want.abs() * 2**-8  # + bf16 output
        assert ((got - want).abs() <= bound).all()
        assert (got - want).abs().max() > 0  # it really is quantised
    bf16 = Cache(1, 2, 2, 64, dtype=BF16, device=device)
    bf16.append(0, k.to(device), v.to(device))
    assert cache.memory_bytes() < 0.6 * bf16.memory_bytes()


def test_positions_survive_eviction():
    cache = Cache(1, 2, 2, 16, dtype=F32, device="cpu")
    cache.append(0, *kv(cache, 20))
    keep = [0, 1, *range(15, 20)]
    cache.compact(0, kept_from([[keep, keep[2:]], [keep[:2], []]]))
    cache.append(0, *kv(cache, 3))  # continues at 20, not at the compressed length
    assert cache.seq_length(0) == cache.seq_length() == 23
    q, qp = torch.randn(2, 2, 1, 16), torch.zeros(2, 1, dtype=torch.int64)
    view = cache.kv_view(0, q, qp)
    got = [
        [view.positions[b, h, : view.lengths[b, h]].tolist() for h in range(2)] for b in range(2)
    ]
    tail = [20, 21, 22]
    assert got == [[keep + tail, keep[2:] + tail], [keep[:2] + tail, tail]]
    assert (view.positions[1, 1, 3:] == -1).all()
    cache.append(0, *kv(cache, 2), positions=torch.tensor([[100, 105], [30, 31]]))
    cache.append(0, *kv(cache, 1))
    view = cache.kv_view(0, q, qp)
    last = [
        view.positions[b, 0, int(view.lengths[b, 0]) - 3 : int(view.lengths[b, 0])] for b in (0, 1)
    ]
    assert [x.tolist() for x in last] == [[100, 105, 106], [30, 31, 32]]


def test_summaries_forget_evicted_keys():
    cache = Cache(1, 1, 2, 16, page_size=8, dtype=F32, device="cpu")
    k, v = kv(cache, 12)
    k[0, :, 3] = 100.0  # an outlier in page 0 of both heads
    cache.append(0, k, v)
    assert (cache.page_view(0).bounds()[1][0, :, 0] == 100).all()
    cache.compact(0, kept_from([[[0, 1, 2, 4, 5, 6, 7, 8, 9], [3]]]))
    view = cache.page_view(0)
    key_min, key_max = view.bounds()
    want = k[0, 0, [0, 1, 2, 4, 5, 6, 7, 8]]
    assert torch.equal(key_max[0, 0, 0], round_bf16(want.amax(0), up=True).float())
    assert torch.equal(key_min[0, 0, 1], round_bf16(k[0, 0, 9], up=False).float())  # one token
    assert torch.equal(key_max[0, 1, 0], k[0, 0, 3].new_full((16,), 100.0))
    assert view.page_count.tolist() == [[2, 1]]
    assert torch.isinf(key_min[0, 1, 1]).all() and (key_min[0, 1, 1] > 0).all()


def test_bounds_never_read_table_entries_past_the_count():
    """`PageView.page_table` entries past a head's page count are "anything (never read)":
    `bounds` indexed the pools with them (an IndexError for a stale row past the pool)."""
    cache = Cache(1, 1, 2, 16, page_size=8, dtype=F32, device="cpu")
    cache.append(0, *kv(cache, 12))
    cache.compact(0, kept_from([[[0, 1, 2, 4, 5, 6, 7, 8, 9], [3]]]))  # pages [2, 1] of 2
    view = cache.page_view(0)
    want = view.bounds()
    past = torch.arange(view.page_table.shape[-1]) >= view.page_count[..., None]
    assert past.any()
    stale = dataclasses.replace(view, page_table=view.page_table.masked_fill(past, 10**6))
    for got, expected in zip(stale.bounds(), want, strict=True):
        assert torch.equal(got, expected)


def test_summaries_are_bfloat16_bounds():
    """The page summaries round outward to bfloat16: every stored key lies within its page's
    [min, max], which are within one bfloat16 step of the exact ones."""
    cache = Cache(1, 2, 2, 16, page_size=8, dtype=F32, device="cpu")
    k, v = kv(cache, 40, scale=50.0)
    cache.append(0, k, v)
    key_min, key_max = cache.page_view(0).bounds()
    pages = k.view(2, 2, 5, 8, 16)
    assert ((key_min[..., None, :] <= pages) & (pages <= key_max[..., None, :])).all()
    exact_min, exact_max = pages.amin(3), pages.amax(3)
    assert (key_min < exact_min).any() and (key_max > exact_max).any()  # really rounded
    step = 2.0**-7 * torch.maximum(exact_min.abs(), exact_max.abs())
    assert (exact_min - key_min <= step).all() and (key_max - exact_max <= step).all()


def test_reset_releases_everything_but_label_channels():
    cache = Cache(2, 1, 2, 16, dtype=F32, device="cpu")
    cache.set_label_channels(1, torch.tensor([[0, 1], [2, 3]]))
    for layer in (0, 1):
        cache.append(layer, *kv(cache, 30))
    cache.reset()
    assert cache.memory_bytes() == cache.reserved_bytes() == cache.seq_length() == 0
    cache.append(1, *kv(cache, 3))
    assert cache.page_view(1).labels.shape == (1, 2, 1, 16, 2)


# ---- malformed input: (call, exception, text the message names) -------------------------------

C = Cache(2, 2, 2, 16, dtype=F32, device="cpu")
C.append(0, torch.randn(2, 2, 10, 16), torch.randn(2, 2, 10, 16))
K4 = torch.randn(2, 2, 3, 16)
Q, QP = torch.randn(2, 4, 1, 16), torch.zeros(2, 1, dtype=torch.int64)
I32 = torch.int32


def _kept(idx, count):
    return Kept(torch.tensor(idx, dtype=I32), torch.tensor(count, dtype=I32))


GOOD_IDX = [[[0, 1], [0, -1]], [[2, 3], [4, 5]]]


def _two_extras(weights, positions):
    """A Kept of GOOD_IDX with two extras per head, of these weights and positions."""
    zeros = torch.zeros(2, 2, 2, 16)
    weight, pos = torch.tensor(weights).expand(2, 2, 2), torch.tensor(positions).expand(2, 2, 2)
    return _extras(weight, pos, zeros, extra_values=zeros)


def _extras(weight=None, positions=None, keys=None, count=((2, 1), (2, 2)), **drop):
    """A Kept of GOOD_IDX with one extra per head (weight 3 at position 7 unless given)."""
    weight = torch.full((2, 2, 1), 3.0) if weight is None else weight
    positions = torch.full((2, 2, 1), 7) if positions is None else positions
    keys = torch.zeros(2, 2, 1, 16) if keys is None else keys
    extras = {"extra_keys": keys, "extra_values": torch.zeros(2, 2, 1, 16),
              "extra_weight": weight, "extra_positions": positions}  # fmt: skip
    extras.update(drop)
    return Kept(torch.tensor(GOOD_IDX, dtype=I32), torch.tensor(count, dtype=I32), **extras)


BAD = {
    "num_layers": (lambda: Cache(0, 1, 1, 16, dtype=F32, device="cpu"), ValueError, "num_layers"),
    "batch": (lambda: Cache(1, 1.0, 1, 16, dtype=F32, device="cpu"), ValueError, "batch"),
    "page_size": (
        lambda: Cache(1, 1, 1, 16, page_size=12, dtype=F32, device="cpu"),
        ValueError,
        "page_size",
    ),  # fmt: skip
    "dtype": (lambda: Cache(1, 1, 1, 16, dtype=torch.int8, device="cpu"), TypeError, "dtype"),
    "kv_dtype": (
        lambda: Cache(1, 1, 1, 16, dtype=F32, device="cpu", kv_dtype="int4"),
        ValueError,
        "kv_dtype",
    ),  # fmt: skip
    "layer_range": (lambda: C.append(2, K4, K4), ValueError, "layer"),
    "layer_type": (lambda: C.gather(True), ValueError, "layer"),
    "shrink_layer": (lambda: C.shrink(2), ValueError, "layer"),
    "reserve_tokens": (lambda: C.reserve(-1), ValueError, "tokens"),
    "k_type": (lambda: C.append(0, K4.numpy(), K4), TypeError, "k:"),
    "k_dims": (lambda: C.append(0, K4[0], K4), ValueError, "k:"),
    "k_dtype": (lambda: C.append(0, K4.half(), K4), TypeError, "k:"),
    "v_heads": (lambda: C.append(0, K4, K4[:, :1]), ValueError, "v:"),
    "k_head_dim": (lambda: C.append(0, K4[..., :8], K4[..., :8]), ValueError, "k:"),
    "k_empty": (lambda: C.append(0, K4[:, :, :0], K4[:, :, :0]), ValueError, "k:"),
    "kv_shapes": (lambda: C.append(0, K4, K4[:, :, :2]), ValueError, "k, v"),
    "positions_dtype": (
        lambda: C.append(0, K4, K4, torch.zeros(2, 3, dtype=I32)),
        TypeError,
        "positions",
    ),  # fmt: skip
    "positions_shape": (lambda: C.append(0, K4, K4, torch.arange(3)), ValueError, "positions"),
    "positions_past": (
        lambda: C.append(0, K4, K4, torch.arange(3).expand(2, 3)),
        ValueError,
        "positions",
    ),  # fmt: skip
    "positions_order": (
        lambda: C.append(0, K4, K4, torch.tensor([[12, 11, 13]] * 2)),
        ValueError,
        "positions",
    ),  # fmt: skip
    "kept_type": (lambda: C.compact(0, (torch.zeros(2, 2, 1), None)), TypeError, "kept"),
    "kept_idx_dtype": (
        lambda: C.compact(
            0, Kept(torch.zeros(2, 2, 1, dtype=torch.int64), torch.zeros(2, 2, dtype=I32))
        ),
        TypeError,
        "kept.idx",
    ),  # fmt: skip
    "kept_idx_dims": (
        lambda: C.compact(0, Kept(torch.zeros(2, 2, dtype=I32), torch.zeros(2, 2, dtype=I32))),
        ValueError,
        "kept.idx",
    ),  # fmt: skip
    "kept_count_shape": (lambda: C.compact(0, _kept(GOOD_IDX, [2, 1])), ValueError, "kept.count"),
    "kept_count_big": (
        lambda: C.compact(0, _kept(GOOD_IDX, [[2, 3], [2, 2]])),
        ValueError,
        "kept.count",
    ),  # fmt: skip
    "kept_idx_range": (
        lambda: C.compact(0, _kept([[[0, 10], [0, -1]], [[2, 3], [4, 5]]], [[2, 1], [2, 2]])),
        ValueError,
        "kept.idx",
    ),  # fmt: skip
    "kept_idx_order": (
        lambda: C.compact(0, _kept([[[1, 0], [0, -1]], [[2, 3], [4, 5]]], [[2, 1], [2, 2]])),
        ValueError,
        "ascending",
    ),  # fmt: skip
    "kept_idx_pad": (
        lambda: C.compact(0, _kept(GOOD_IDX, [[2, 1], [2, 1]])),
        ValueError,
        "kept.idx",
    ),  # fmt: skip
    "extras_partial": (lambda: C.compact(0, _extras(extra_values=None)), ValueError, "all four"),
    "extras_weight_dtype": (
        lambda: C.compact(0, _extras(torch.full((2, 2, 1), 3, dtype=torch.float64))),
        TypeError,
        "kept.extra_weight",
    ),  # fmt: skip
    "extras_weight_negative": (
        lambda: C.compact(0, _extras(torch.full((2, 2, 1), -1.0))),
        ValueError,
        "kept.extra_weight",
    ),  # fmt: skip
    "extras_stored_first": (
        lambda: C.compact(0, _two_extras([0.0, 2.0], [5, 6])),
        ValueError,
        "come first",
    ),  # fmt: skip
    "extras_positions_order": (
        lambda: C.compact(0, _two_extras([2.0, 2.0], [6, 5])),
        ValueError,
        "kept.extra_positions",
    ),  # fmt: skip
    "extras_future": (
        lambda: C.compact(0, _extras(positions=torch.full((2, 2, 1), 10))),  # seen: 10
        ValueError,
        "kept.extra_positions",
    ),  # fmt: skip
    "extras_keys_dtype": (
        lambda: C.compact(0, _extras(keys=torch.zeros(2, 2, 1, 16, dtype=F16))),
        TypeError,
        "kept.extra_keys",
    ),  # fmt: skip
    "extras_outnumber": (
        lambda: C.compact(
            0,
            dataclasses.replace(
                _extras(),
                idx=torch.arange(10, dtype=I32).expand(2, 2, 10),
                count=torch.full((2, 2), 10, dtype=I32),
            ),
        ),
        ValueError,
        "outnumber",
    ),  # fmt: skip
    "host_state_list": (lambda: C.set_host_state([]), TypeError, "^state: "),
    "host_state_layer": (lambda: C.set_host_state([(1, 2, 3)] * 2), ValueError, r"^state\[0\]"),
    "host_state_device": (
        lambda: C.set_host_state([tuple(t.to("meta") for t in s) for s in C.host_state()]),
        ValueError,
        r"^state\[0\]: .* CPU tensors",
    ),  # fmt: skip
    "queries_none": (lambda: C.kv_view(0, Q[:, :, :0], QP[:, :0]), ValueError, "^queries"),
    "queries_heads": (lambda: C.kv_view(0, Q[:, :3], QP), ValueError, "queries"),
    "queries_no_heads": (lambda: C.kv_view(0, Q[:, :0], QP), ValueError, "^queries"),
    "queries_dim": (lambda: C.kv_view(0, Q[..., :8], QP), ValueError, "queries"),
    "query_positions": (lambda: C.kv_view(0, Q, QP[:, :0]), ValueError, "query_positions"),
    "channels_range": (
        lambda: C.set_label_channels(0, torch.full((2, 1), 16)),
        ValueError,
        "channels",
    ),  # fmt: skip
    "channels_heads": (
        lambda: C.set_label_channels(0, torch.zeros(3, 1, dtype=torch.int64)),
        ValueError,
        "channels",
    ),  # fmt: skip
    "channels_twice": (
        lambda: C.set_label_channels(0, torch.tensor([[1, 1], [2, 3]])),
        ValueError,
        "^channels: expected R distinct channel indices",
    ),  # fmt: skip
    "channels_dtype": (
        lambda: C.set_label_channels(0, torch.zeros(2, 1, dtype=I32)),
        TypeError,
        "channels",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_input_names_the_argument(case):
    call, exc, text = BAD[case]
    before, version = C.gather(0), C.version
    with pytest.raises(exc, match=text):
        call()
    C.validate()  # a rejected call leaves the cache as it was (a captured graph stays valid)
    assert C.version == version
    for x, y in zip(before, C.gather(0), strict=True):
        assert torch.equal(x, y)


def test_quantize_fp8_rows_too_small_for_a_scale():
    """Float32 subnormals (below 2^-126, which the GPU's division flushes to zero) count as 0:
    rows of them are stored as zeros with the scale 0, as an all-zero row is; the smallest normal
    absmax takes the smallest scale, 2^-126."""
    from attnsieve.cache_pages import dequant
    from attnsieve.kernels.decode_reference import quantize_fp8

    x = torch.zeros(4, 16)
    x[0], x[1, 3], x[3, 2] = 1e-43, -2e-44, 2.0**-126
    q8, scales = quantize_fp8(x)
    assert not q8.float().isnan().any() and scales.tolist() == [0, 0, 0, 2.0**-126]
    assert not dequant(q8, scales)[:3].any() and dequant(q8, scales)[3, 2] == 2.0**-126


def test_fp8_scales_are_the_least_powers_of_two_that_fit():
    """The scale of absmax a is the smallest power of two s with 448 s >= a, for every binade
    (normal and subnormal a) and at the edges of the mantissa's cut at 1.75 = 448 / 2^8, against
    float64 arithmetic; 0 for 0, +inf for a non-finite a."""
    from attnsieve.kernels.decode_reference import fp8_scales

    m = torch.tensor([1.0, 1.0 + 2**-23, 1.5, 1.75 - 2**-22, 1.75, 1.75 + 2**-22, 2 - 2**-23])
    amax = (m[:, None] * torch.exp2(torch.arange(-149, 128.0))[None, :]).flatten()
    amax = amax[torch.isfinite(amax) & (amax > 0)].float()
    scale = fp8_scales(amax).double()
    a = amax.double()
    at_least = torch.where(scale < 2.0**-125, True, 448 * scale / 2 < a)  # 2^-126: the least
    assert (448 * scale >= a).all() and at_least.all()
    assert (torch.frexp(scale).mantissa == 0.5).all()  # powers of two
    special = torch.tensor([0.0, 448.0, math.inf, math.nan])
    assert fp8_scales(special).tolist() == [0.0, 1.0, math.inf, math.inf]


def test_twin_stores_rows_too_small_for_a_scale_as_zeros():
    """The twin quantises such a row as the cache does (zeros), not into NaN by a 0 scale."""
    cache, twin = pair(1, 1, 1, 16, kv_dtype="fp8")
    k = torch.zeros(1, 1, 2, 16)
    k[..., 0, :], k[..., 1, 3] = 1e-43, -2e-44
    for c in (cache, twin):
        c.append(0, k, k)
    for x, y in zip(cache.gather(0), twin.gather(0), strict=True):
        assert torch.equal(x, y)


def test_a_host_state_restores_as_often_as_asked():
    """set_host_state took the given tensors as the live mirrors, which appends bump in place:
    the state then no longer restored what host_state had returned."""
    cache = Cache(1, 1, 2, 16, page_size=8, dtype=F32, device="cpu")
    cache.reserve(4)
    state = cache.host_state()
    cache.set_host_state(state)
    cache.append(0, *kv(cache, 2))
    cache.advance_host(1)
    cache.set_host_state(state)
    assert cache.head_tokens(0).tolist() == [[0, 0]] and cache.seq_length() == 0
    assert cache.reserved_tokens() == 8


def use_append_kernel(monkeypatch, fused: bool) -> None:
    """CPU caches made after this append by the interpreted kernel (fused) or by the PyTorch path,
    which "auto" takes on CPU (no $ATTNSIEVE_BACKEND)."""
    if fused:
        monkeypatch.setenv("ATTNSIEVE_BACKEND", "triton")
    else:
        monkeypatch.delenv("ATTNSIEVE_BACKEND", raising=False)


@needs_interpreter
@pytest.mark.parametrize("fused", [True, False])
def test_fp8_non_finite_rows_store_the_infinite_scale(fused, monkeypatch):
    """A K or V row holding NaN or ±inf is stored as zeros with the infinite scale, by the
    one-launch append kernel (whose max drops NaN) and by the PyTorch path (whose amax keeps it)
    alike: it reads back NaN throughout, its neighbours untouched."""

    use_append_kernel(monkeypatch, fused)
    cache = Cache(1, batch=1, kv_heads=2, head_dim=16, page_size=8, dtype=F32, device="cpu",
                  kv_dtype="fp8")  # fmt: skip
    k, v = kv(cache, 1)
    k[0, 0, 0, 3], v[0, 1, 0, 5], v[0, 1, 0, 6] = math.nan, math.inf, -math.inf
    cache.append(0, k, v)
    lc = cache.layers[0]
    slot = lc.page_table[0, :, 0].long() * 8  # each head's first slot
    k_s, v_s = lc.k_scale.view(-1)[slot].tolist(), lc.v_scale.view(-1)[slot].tolist()
    assert k_s[0] == math.inf and 0 < k_s[1] < math.inf
    assert v_s[1] == math.inf and 0 < v_s[0] < math.inf
    assert not lc.k_pages.view(torch.uint8).view(-1, 16)[slot[0]].any()
    keys, values, _ = cache.gather(0)
    assert keys[0, 0, 0].isnan().all() and values[0, 1, 0].isnan().all()
    assert keys[0, 1, 0].isfinite().all() and values[0, 0, 0].isfinite().all()


@needs_interpreter
@pytest.mark.parametrize("fused", [True, False])
def test_fp8_all_zero_rows_store_scale_zero(fused, monkeypatch):
    """An all-zero K or V row is stored as zeros with scale 0 (not 2^-126), by the
    one-launch append kernel and by the PyTorch path alike, so that it never sets the decode
    kernel's per-tile V scale (float16 P is taken relative to the tile's largest)."""

    use_append_kernel(monkeypatch, fused)
    cache = Cache(1, batch=1, kv_heads=2, head_dim=16, page_size=8, dtype=F16, device="cpu",
                  kv_dtype="fp8")  # fmt: skip
    k, v = kv(cache, 1)
    k[0, 0], v[0, 1] = 0, 0  # head 0's key, head 1's value
    cache.append(0, k, v)
    lc = cache.layers[0]
    slot = lc.page_table[0, :, 0].long() * 8  # each head's first slot
    assert lc.k_scale.view(-1)[slot].tolist()[0] == 0 and lc.k_scale.view(-1)[slot[1]] > 0
    assert lc.v_scale.view(-1)[slot].tolist()[1] == 0 and lc.v_scale.view(-1)[slot[0]] > 0
    keys, values, _ = cache.gather(0)
    assert not keys[0, 0, 0].any() and not values[0, 1, 0].any()
    assert keys[0, 1, 0].any() and values[0, 0, 0].any()


@needs_interpreter
@pytest.mark.parametrize("dtype, kv_dtype", [(F32, None), (F16, None), (BF16, None), (F16, "fp8")])
def test_one_token_appends_match_the_pytorch_path(dtype, kv_dtype, monkeypatch):
    """Decode appends (one token, default positions) take the one-launch kernel
    (kernels/cache_append.py) on a Triton device; pools (FP8 ones with their scales), page
    tables, summaries, positions and lengths come out as the PyTorch path writes them, across
    page boundaries and ragged heads."""
    import attnsieve.cache as cache_module
    import attnsieve.kernels.cache_append as kernel

    launches = []
    monkeypatch.setattr(
        cache_module, "append_one", lambda *a: launches.append(kernel.append_one(*a))
    )
    caches = []
    for fused in (True, False):
        use_append_kernel(monkeypatch, fused)
        g = torch.Generator().manual_seed(0)
        cache = Cache(1, batch=2, kv_heads=3, head_dim=16, page_size=8, dtype=dtype, device="cpu",
                      kv_dtype=kv_dtype)  # fmt: skip
        cache.append(0, *kv(cache, 10, g=g))
        cache.compact(0, kept_from([[[0, 9], [1, 2, 3, 8], []], [list(range(10)), [4], [2, 3]]]))
        for _ in range(13):
            cache.append(0, *kv(cache, 1, g=g))
        cache.validate()
        caches.append(cache)
    assert len(launches) == 13
    fused, plain = (c.layers[0] for c in caches)
    for name in ("lengths", "host_lengths", "seen", "next_pos", "page_table"):
        assert torch.equal(getattr(fused, name), getattr(plain, name)), name
    for x, y in zip(caches[0].gather(0), caches[1].gather(0), strict=True):
        assert torch.equal(x, y)
    if kv_dtype == "fp8":  # the scales of every stored token (other slots hold anything)
        ps = caches[0].page_size
        tok = torch.arange(fused.page_table.shape[-1] * ps)
        stored = tok < fused.lengths[..., None]
        slots = fused.page_table.long().gather(-1, (tok // ps).expand_as(stored)) * ps + tok % ps
        for name in ("k_scale", "v_scale"):
            a, b = (getattr(lc, name).flatten()[slots[stored]] for lc in (fused, plain))
            assert torch.equal(a, b), name
    a, b = (c._gather(c.layers[0])[2] for c in caches)  # positions of the stored tokens
    assert torch.equal(a, b)
    used = fused.page_table[fused.page_table >= 0].long()
    for name in ("key_min", "key_max"):
        assert torch.equal(getattr(fused, name)[used], getattr(plain, name)[used]), name


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_appends_reset_the_log_weight_of_reused_slots(fused, device, kv_dtype, monkeypatch):
    """A slot that held a compensation token, vacated by a later compaction, holds a plain token
    (log weight 0) once an append reuses it: on the one-launch path and the PyTorch one."""
    import attnsieve.cache as cache_module

    use_append_kernel(monkeypatch, fused)
    if not fused and device != "cpu":
        monkeypatch.setattr(Cache, "_fused", lambda *a: False)
    launches = []
    append_one = cache_module.append_one
    monkeypatch.setattr(cache_module, "append_one", lambda *a: launches.append(append_one(*a)))
    cache = Cache(1, 1, 2, 16, page_size=8, dtype=F32, device=device, kv_dtype=kv_dtype)
    cache.append(0, *kv(cache, 20))
    kept = kept_from([[[0, 1], [0, 1, 2]]], device)
    ones = torch.ones(1, 2, 1, 16, device=device)
    cache.compact(0, dataclasses.replace(
        kept, extra_keys=ones, extra_values=ones,
        extra_weight=torch.tensor([[[4.0], [9.0]]], device=device),
        extra_positions=torch.full((1, 2, 1), 5, device=device),
    ))  # fmt: skip
    want = torch.tensor([[4.0, 1.0], [1.0, 9.0]]).log()
    assert torch.equal(cache.log_weights(0)[0, :, 2:4].cpu(), want)
    cache.compact(0, kept)  # the compensation tokens leave; their slots stay in the head's page
    for _ in range(3):
        cache.append(0, *kv(cache, 1))
    assert len(launches) == (3 if fused else 0)
    assert cache.layers[0].weighted and cache.head_tokens(0).tolist() == [[5, 6]]
    assert not cache.log_weights(0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, kv_dtype", [(F16, None), (BF16, None), (BF16, "fp8")])
def test_cuda_one_token_appends_match_the_pytorch_path(dtype, kv_dtype, monkeypatch):
    """On the GPU, the compiled one-launch append writes what the PyTorch path writes."""
    caches = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(Cache, "_fused", lambda *a: False)
        g = torch.Generator().manual_seed(0)
        cache = Cache(1, batch=2, kv_heads=3, head_dim=64, page_size=16, dtype=dtype, device="cuda",
                      kv_dtype=kv_dtype)  # fmt: skip
        cache.append(0, *kv(cache, 40, g=g))
        for _ in range(37):
            cache.append(0, *kv(cache, 1, g=g))
        cache.validate()
        caches.append(cache)
    fused, plain = (c.layers[0] for c in caches)
    for name in ("lengths", "host_lengths", "next_pos", "page_table"):
        assert torch.equal(getattr(fused, name), getattr(plain, name)), name
    for x, y in zip(caches[0].gather(0), caches[1].gather(0), strict=True):
        assert torch.equal(x, y)
    used = fused.page_table[fused.page_table >= 0].long()
    for name in ("key_min", "key_max"):
        assert torch.equal(getattr(fused, name)[used], getattr(plain, name)[used]), name
