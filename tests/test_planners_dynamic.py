"""flexprefill, xattention and hip planners: validity, full budget, planted structure, configs."""

import math

import pytest
import torch

from attnsieve.eval.fidelity import attention_recall
from attnsieve.eval.workloads import make_workload
from attnsieve.kernels import INTERPRET, pooling_reference
from attnsieve.kernels.line_choice_reference import sqrt_js_divergence
from attnsieve.layout import Layout
from attnsieve.methods import PLANNERS, get_planner
from attnsieve.methods.prefill import masks

BIG = 10**6
FULL = [
    ("flexprefill", {"gamma": 1.0, "block_q": 32, "block_k": 32, "min_budget": 0}),
    ("flexprefill", {"min_budget": BIG, "block_q": 32, "block_k": 32}),
    ("xattention", {"threshold": 1.0, "block_q": 32, "block_k": 32, "stride": 4}),
    ("hip", {"budget_tokens": BIG, "block_q": 32, "block_k": 16}),
]
SPARSE = [
    ("flexprefill", {}),
    ("flexprefill", {"block_q": 32, "block_k": 32, "min_budget": 32}),
    ("flexprefill", {"block_q": 16, "block_k": 16, "min_budget": 0, "tau": 1.0, "max_budget": 64}),
    ("xattention", {}),
    ("xattention", {"block_q": 32, "block_k": 32, "stride": 4}),
    ("xattention", {"block_q": 16, "block_k": 16, "stride": 8, "threshold": 0.5}),
    ("hip", {}),
    ("hip", {"budget_tokens": 64, "block_q": 32, "block_k": 16}),
]
SHAPES = [(333, 333), (100, 257), (257, 100), (1000, 1000)]


def qk(b, h_q, h_kv, n, m, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h_q, n, d, generator=g) * 2, torch.randn(b, h_kv, m, d, generator=g)


def dense_mask_like(layout, causal=True):
    dense = Layout.dense(
        layout.num_queries, layout.num_keys, block_q=layout.block_q, block_k=layout.block_k,
        causal=causal,
    )  # fmt: skip
    return dense.block_mask().expand(layout.batch, layout.heads, -1, -1)


def workload(kinds, n=2048, **kwargs):
    opts = dict(seq_len=n, head_dim=128, num_columns=4, local_window=16, span_len=16)
    return make_workload(kinds, **{**opts, **kwargs})


def test_registered():
    for name in ("flexprefill", "xattention", "hip"):
        assert PLANNERS[name].name == name and type(get_planner(name)) is PLANNERS[name]


@pytest.mark.parametrize("name,kwargs", FULL)
@pytest.mark.parametrize("n,m", SHAPES[:3])
@pytest.mark.parametrize("h_q,h_kv", [(4, 1), (2, 2)])
def test_full_budget_is_dense(name, kwargs, n, m, h_q, h_kv):
    q, k = qk(2, h_q, h_kv, n, m)
    causal_modes = (True,) if name == "flexprefill" else (True, False)
    for causal in causal_modes:
        layout = get_planner(name, **kwargs).plan(q, k, causal=causal).validate()
        assert torch.equal(layout.block_mask(), dense_mask_like(layout, causal))


@pytest.mark.parametrize("name,kwargs", SPARSE)
@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("h_q,h_kv,b", [(4, 1, 2), (2, 2, 1)])
def test_layouts_are_valid(name, kwargs, n, m, h_q, h_kv, b):
    q, k = qk(b, h_q, h_kv, n, m)
    layout = get_planner(name, **kwargs).plan(q, k).validate()
    layout.check_inputs(q, k)
    assert layout.batch in (1, b) and layout.heads in (1, h_q)
    blocks = layout.block_mask()
    visible = Layout.causal_block_mask(n, m, layout.block_q, layout.block_k)
    assert not (blocks & ~visible).any()  # nothing above the causal diagonal
    diagonal = masks.window_block_mask(n, m, layout.block_q, layout.block_k, 1)
    assert (blocks | ~diagonal).all()  # every query block keeps its own diagonal block(s)
    assert 0 < layout.density() <= 1


# vertical_slash and block_topk also plan on the kernels (last-query stats, block pooling). The
# vertical-slash sizes exceed the forced sink columns and local diagonals: with fewer, top-k would
# pick among tied +inf scores, an arbitrary choice that no backend comparison can pin down.
KERNEL_STATIC = [
    ("vertical_slash", {"vertical_size": 40, "slash_size": 40, "sink_tokens": 8,
                        "local_slashes": 16, "block_q": 32, "block_k": 32}),
    ("block_topk", {"block_q": 32, "block_k": 16}),
]  # fmt: skip
PLAN_MASS_ATOL = 1e-4  # attention mass per head; tied choices measured to differ by < 1e-6


def _tied_rows(planner, q, k, want, eps=1e-4, pairs=3):
    """bool (B, H, N): query rows whose plan changes when q, k move by a relative ``eps``.

    Antithetic pairs (+d, -d) flip every decision whose margin is smaller than the perturbation
    moves it (rounding-level ties), so a row outside this set is decided with a clear margin.
    """
    tied = torch.zeros(want.shape[:-1], dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    for _ in range(pairs):
        dq = torch.randn(q.shape, generator=g) * (eps * q.abs().mean())
        dk = torch.randn(k.shape, generator=g) * (eps * k.abs().mean())
        for sign in (1, -1):
            moved = planner.plan(q + sign * dq, k + sign * dk).to_dense_mask()
            tied |= (moved != want).any(-1)
    return tied


def _plan_mismatches(q, k, got, want, tied):
    """Why layout ``got`` does not match ``want``: rows decided by a clear margin must be equal,
    and on every head both must capture the same attention mass (ties swap near-equal keys)."""
    problems = []
    got_mask, want_mask = got.to_dense_mask(), want.to_dense_mask()
    wrong = (got_mask != want_mask).any(-1) & ~tied
    if wrong.any():
        problems.append(
            f"{int(wrong.sum())} untied rows differ, e.g. {wrong.nonzero()[0].tolist()}"
        )
    mass_got = attention_recall(q, k, got, backend="reference")
    mass_want = attention_recall(q, k, want, backend="reference")
    if not torch.allclose(mass_got, mass_want, rtol=0, atol=PLAN_MASS_ATOL):
        problems.append(f"captured mass differs: {mass_got.tolist()} vs {mass_want.tolist()}")
    return problems


def _drop_one_block(layout, tied):
    """``layout`` without the first block of a query block none of whose rows is tied."""
    mask = layout.block_mask().clone()
    rows_tied = torch.nn.functional.pad(
        tied, (0, layout.num_q_blocks * layout.block_q - tied.shape[-1])
    )
    block_tied = rows_tied.unflatten(-1, (layout.num_q_blocks, layout.block_q)).any(-1)
    b, h, qb = ((layout.block_count > 0) & ~block_tied).nonzero()[-1].tolist()
    mask[b, h, qb, layout.block_idx[b, h, qb, 0]] = False
    bad = Layout.from_block_mask(
        mask, block_q=layout.block_q, block_k=layout.block_k, num_queries=layout.num_queries,
        num_keys=layout.num_keys,
    )  # fmt: skip
    if layout.has_spans:  # spans never overlap blocks: the dropped block stays uncovered
        bad = bad.with_spans(layout.span_start, layout.span_end, layout.span_count)
    return bad.with_columns(layout.column_idx, layout.column_count) if layout.has_columns else bad


@pytest.mark.parametrize("name,kwargs", SPARSE[1:3] + SPARSE[4:6] + SPARSE[7:] + KERNEL_STATIC)
def test_triton_and_reference_plans_agree(name, kwargs, monkeypatch):
    # GQA 2/1: KV heads past the first are the kernels' own tests' (and the 4/2 test below),
    # and the planners' code around the kernels is the same on both backends. The slash and
    # retrieval heads give lines and blocks to choose (with a vertical head instead, most of
    # vertical_slash's rows are tied here)
    if name == "hip":  # planted keys score exactly 0 off the structure: ties break on rounding
        q, k = qk(1, 2, 1, 200, 200)
    else:
        w = workload(["slash", "retrieval"], n=200, num_kv_heads=1, head_dim=64)
        q, k = w.q, w.k
    planner = get_planner(name, **kwargs)
    want = planner.plan(q, k)  # blocks and columns
    tied = _tied_rows(planner, q, k, want.to_dense_mask())
    assert not tied.all(), "no row is decided by a clear margin: the comparison would be empty"
    monkeypatch.setenv("ATTNSIEVE_BACKEND", "triton")  # the interpreted kernels on CPU
    device = "cpu" if INTERPRET else "cuda"  # or compiled on a GPU
    got = planner.plan(q.to(device), k.to(device)).to("cpu")
    monkeypatch.delenv("ATTNSIEVE_BACKEND")
    assert _plan_mismatches(q, k, got, want, tied) == []
    # the comparison rejects a plan that differs where no tie excuses it
    assert _plan_mismatches(q, k, _drop_one_block(want, tied), want, tied)


def _check_planted(layout, w, heads, min_recall, max_density):
    recall = attention_recall(w.q, w.k, layout)[0]
    density = layout.density(reduce=False)[0]
    for h in heads:
        assert recall[h] >= min_recall, (w.head_kinds[h], recall.tolist())
        assert density[h] <= max_density, (w.head_kinds[h], density.tolist())


def test_flexprefill_finds_planted_heads():
    w = workload(["sink_local", "vertical", "slash", "retrieval"], num_kv_heads=2)
    layout = get_planner("flexprefill", block_q=32, block_k=32, min_budget=32).plan(w.q, w.k)
    _check_planted(layout, w, range(4), 0.9, 0.25)


def test_flexprefill_query_aware_heads_cover_gamma_of_the_pooled_map():
    q, k = qk(1, 2, 1, 300, 300, seed=3)
    layout = get_planner("flexprefill", block_q=16, block_k=16, min_budget=0, tau=1.0).plan(q, k)
    probs = pooling_reference.pooled_block_probs(
        pooling_reference.block_mean_pool(q, 16), pooling_reference.block_mean_pool(k, 16),
        num_queries=300, num_keys=300, block_q=16, block_k=16,
    )  # fmt: skip
    kept = (probs * layout.block_mask()).sum((-1, -2)) / probs.sum((-1, -2))
    assert (kept >= 0.9).all()  # tau = 1 > sqrt(ln 2) makes every head query-aware


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_flexprefill_query_aware_map_pools_its_own_kv_head(backend, monkeypatch):
    """GQA 4/2: a head that is the only query-aware one (only its KV head's keys pooled) gets
    the block map it gets when every head is query-aware; the other heads' maps are empty."""
    q, k = qk(1, 4, 2, 100, 100, seed=4)
    if backend == "triton":  # the interpreted kernels on CPU (float16 dots), or a GPU's
        monkeypatch.setenv("ATTNSIEVE_BACKEND", "triton")
        q, k = (x.to("cpu" if INTERPRET else "cuda", torch.float16) for x in (q, k))
    planner = get_planner("flexprefill", block_q=16, block_k=16, min_budget=0)
    every = torch.ones(1, 4, dtype=torch.bool, device=q.device)
    every = planner._query_aware(q, k, every, torch.full((1, 4), 0.9, device=q.device))
    assert every.any(-1).any(-1).all()
    for h in range(4):
        heads = torch.arange(4, device=q.device)[None] == h
        alone = planner._query_aware(q, k, heads, torch.where(heads, 0.9, 0.0))
        assert torch.equal(alone[0, h], every[0, h]), h
        assert not alone[0, ~heads[0]].any()


def testsqrt_js_divergence():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    disjoint = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(
        sqrt_js_divergence(p, disjoint), torch.tensor([math.log(2) ** 0.5, 0])
    )


def test_xattention_finds_planted_heads():
    # Not vertical/slash heads: single-token lines are where antidiagonal scoring is weak (a
    # diagonal at an even offset never meets an antidiagonal of an even stride; a stride group
    # holding several planted keys outweighs one holding one, as its logits add up).
    w = workload(["sink_local", "retrieval"], num_kv_heads=1)
    layout = get_planner("xattention", block_q=32, block_k=32, stride=4).plan(w.q, w.k)
    _check_planted(layout, w, range(2), 0.9, 0.2)


def test_xattention_always_keeps_first_and_diagonal_blocks():
    q, k = qk(1, 2, 1, 257, 300)
    layout = get_planner("xattention", block_q=16, block_k=16, stride=4, threshold=0.01).plan(q, k)
    blocks = layout.block_mask()
    assert blocks[..., 0].all()
    assert (blocks | ~masks.window_block_mask(257, 300, 16, 16, 1)).all()
    assert layout.block_count.max() <= 4  # first + diagonal(s) + at most the single best block


def test_hip_finds_a_local_region_within_budget():
    """HiP assumes attention locality: keys near a hidden centre score high, decaying smoothly."""
    n, d, bs, centre = 2048, 32, 32, 700
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    bump = torch.exp(-(((torch.arange(n) - centre) / 48.0) ** 2))
    k = torch.randn(1, 1, n, d, generator=g) * 0.3 + bump[:, None] * u * 6
    q = (u * 10).expand(1, 1, n, d).clone()
    q[:, :, :centre] = torch.randn(1, 1, centre, d, generator=g)  # rows before the centre: noise
    layout = get_planner("hip", budget_tokens=4 * bs, block_q=bs, block_k=bs).plan(q, k)
    assert layout.block_count.max() <= 4 + 2  # k / block_k branches plus the diagonal block(s)
    recall = attention_recall(q[:, :, 1024:], k, _last_rows(layout, 1024))  # rows past the centre
    assert recall.item() >= 0.9


def _last_rows(layout, start):
    """The layout of query rows [start, N) (block-aligned), same keys (bottom-right aligned)."""
    qb0 = start // layout.block_q
    mask = layout.block_mask()[:, :, qb0:]
    n = layout.num_queries - qb0 * layout.block_q
    return Layout.from_block_mask(
        mask, block_q=layout.block_q, block_k=layout.block_k, num_queries=n,
        num_keys=layout.num_keys,
    )  # fmt: skip


@pytest.mark.parametrize("budget", [8 * 32, 2**50])  # 8 blocks = KB; far past the keys
def test_hip_keeps_every_visible_block_when_the_budget_allows(budget):
    """A budget past the keys plans as one of all the key blocks (it allocated one branch per
    block of budget: 2**50 tokens asked for 2**46 branches a query block)."""
    q, k = qk(1, 2, 2, 256, 256)
    hip = get_planner("hip", budget_tokens=budget, block_q=32, block_k=32)
    layout = hip.plan(q, k)
    assert torch.equal(layout.block_mask(), dense_mask_like(layout))


@pytest.mark.parametrize(
    "name,kwargs,field",
    [
        ("flexprefill", {"gamma": 0.0}, "gamma"),
        ("flexprefill", {"gamma": 1.5}, "gamma"),
        ("flexprefill", {"tau": -0.1}, "tau"),
        ("flexprefill", {"min_budget": -1}, "min_budget"),
        ("flexprefill", {"max_budget": 100}, "max_budget"),
        ("flexprefill", {"block_q": 48}, "block_q"),
        ("xattention", {"threshold": 2.0}, "threshold"),
        ("xattention", {"stride": 0}, "stride"),
        ("xattention", {"stride": 3}, "stride"),
        ("xattention", {"block_k": 12.5}, "block_k"),
        ("hip", {"budget_tokens": 0}, "budget_tokens"),
        ("hip", {"block_q": 0}, "block_q"),
        ("hip", {"block_k": True}, "block_k"),
    ],
)
def test_bad_config_names_the_field(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        get_planner(name, **kwargs)


def test_flexprefill_is_causal_only():
    q, k = qk(1, 2, 1, 300, 300)
    with pytest.raises(ValueError, match="causal"):
        get_planner("flexprefill", block_q=16, block_k=16, min_budget=0).plan(q, k, causal=False)


def test_flexprefill_plans_fewer_keys_than_its_min_budget_dense():
    """N > M: 300 queries (past the prompt-length test) over 100 keys, which a min_budget of 8
    key blocks covers whole: the plan is dense, where the line choice refused its budget."""
    q, k = qk(2, 4, 2, 300, 100)
    layout = get_planner("flexprefill", block_q=32, block_k=32, min_budget=256).plan(q, k)
    assert torch.equal(layout.validate().block_mask(), dense_mask_like(layout))


@pytest.mark.parametrize("name", ["flexprefill", "xattention"])  # hip ranks: scale-free
def test_plan_at_a_softmax_scale_is_the_plan_of_rescaled_queries(name):
    """Granite's and Gemma's scales are not 1/sqrt(D): a planner estimates attention at the
    model's scale, not at the default one."""
    q, k = qk(1, 4, 2, 300, 300, seed=5)
    planner = get_planner(name, **dict(SPARSE)[name])
    scale = 0.2 / math.sqrt(q.shape[-1])
    at_scale = planner.plan(q, k, scale=scale).to_dense_mask()
    assert torch.equal(at_scale, planner.plan(q * 0.2, k).to_dense_mask())
    assert not torch.equal(at_scale, planner.plan(q, k).to_dense_mask())
    assert torch.equal(planner.plan(q, k, scale=q.shape[-1] ** -0.5).to_dense_mask(),
                       planner.plan(q, k).to_dense_mask())  # fmt: skip


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), "0.1"])
def test_plan_refuses_a_bad_scale(scale):
    q, k = qk(1, 2, 1, 64, 64)
    with pytest.raises((ValueError, TypeError), match="^scale: "):
        get_planner("flexprefill").plan(q, k, scale=scale)


@pytest.mark.parametrize(("n", "m"), [(300, 300), (200, 300), (300, 250)])
def test_a_flexprefill_head_of_gamma_one_keeps_the_causal_blocks_only(n, m):
    """Per-head γ: a head of γ 1 kept every block, those above the diagonal too (its block lists
    and non-causal density twice the dense plan's), where γ 1 alone plans the causal blocks
    (bottom-right aligned where N != M)."""
    q, k = torch.randn(1, 2, n, 16), torch.randn(1, 1, m, 16)
    fields = {"block_q": 16, "block_k": 16, "min_budget": 0}
    layout = get_planner("flexprefill", gamma=[1.0, 0.5], **fields).plan(q, k)
    alone = get_planner("flexprefill", gamma=1.0, **fields).plan(q, k)
    visible = Layout.causal_block_mask(n, m, 16, 16)
    assert torch.equal(layout.block_mask()[0, 0], visible)
    assert int(layout.block_count[0, 0].sum()) == int(alone.block_count.sum())


def test_block_topk_keeps_topk_candidates_where_probabilities_underflow():
    """One key block draws all of the attention: the other visible blocks' probabilities are 0,
    tied with the excluded ones, and topk picked excluded zeros (row 10 kept 3 of 11 blocks)."""
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(16), dim=0)
    q = (u * 30).expand(1, 1, 256, 16) + 0.01 * torch.randn(1, 1, 256, 16)
    k = 0.1 * torch.randn(1, 1, 256, 16)
    k[0, 0, 32:48] = u * 30
    fields = {"topk": 4, "cdf_threshold": None, "simthreshd1": -1.0, "block_q": 16, "block_k": 16}
    layout = get_planner("block_topk", **fields).plan(q, k)
    visible = Layout.causal_block_mask(256, 256, 16, 16).sum(-1)
    assert bool((layout.block_count[0, 0].long() >= visible.clamp(max=4)).all())


def test_flexprefill_gamma_set_after_construction_is_checked():
    """A list set on the planner failed in struct.pack, and 0 or 1.5 planned silently: both are
    checked where they are set."""
    q, k = torch.randn(1, 2, 300, 16), torch.randn(1, 1, 300, 16)
    planner = get_planner("flexprefill", block_q=16, block_k=16, min_budget=0)
    planner.gamma = [0.5, 0.8]
    planner.plan(q, k).validate()
    assert planner.gamma == (0.5, 0.8)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            planner.gamma = bad
