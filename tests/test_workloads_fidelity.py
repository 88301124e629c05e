"""Synthetic workloads (planted structure, determinism) and fidelity metrics against brute force."""

import math

import pytest
import torch

from attnsieve.eval.fidelity import attention_recall, dense_attention, output_error
from attnsieve.eval.workloads import KINDS, make_workload, model_workload
from attnsieve.layout import Layout, causal_token_mask


def random_layout(b, h, n, m, bq, bk, p=0.4, columns=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, -(-n // bq), -(-m // bk), generator=g) < p
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        layout = layout.with_columns(
            torch.randint(-1, m, (b, h, -(-n // bq), columns), generator=g)
        )
    return layout


def brute_probs(q, k, causal=True):
    """(B, H_q, N, M) dense softmax by the textbook formula (K repeated: fine in a test)."""
    n, m = q.shape[2], k.shape[2]
    k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_token_mask(n, m, 0, n), -math.inf)
    return scores.softmax(-1).nan_to_num(0.0)  # rows that see no key: all zero


def brute_layout_mask(layout, h_q, h_kv):
    mask = layout.to_dense_mask()
    return mask[:, layout.heads_for(h_q, h_kv)]


CASES = [  # (b, h_q, h_kv, n, m, layout heads, causal)
    (2, 4, 2, 70, 70, "q", True),
    (1, 4, 1, 50, 90, "kv", True),
    (2, 2, 2, 90, 40, "one", True),  # N > M: early rows see no key
    (1, 6, 2, 33, 61, "q", False),
]


@pytest.mark.parametrize("b,h_q,h_kv,n,m,heads,causal", CASES)
def test_recall_matches_brute_force(b, h_q, h_kv, n, m, heads, causal):
    q, k = torch.randn(b, h_q, n, 16), torch.randn(b, h_kv, m, 16)
    h_l = {"q": h_q, "kv": h_kv, "one": 1}[heads]
    layout = random_layout(1 if heads == "one" else b, h_l, n, m, 16, 8, columns=3, seed=n)
    probs = brute_probs(q, k, causal)
    kept = (probs * brute_layout_mask(layout, h_q, h_kv)).sum(-1)
    rows = probs.sum(-1) > 0  # rows that see at least one key
    expected = (kept * rows).sum(-1) / rows.sum(-1)
    recall = attention_recall(q, k, layout, causal=causal)
    assert recall.shape == (b, h_q) and recall.dtype == torch.float32
    torch.testing.assert_close(recall.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,m", [(100, 100), (90, 40), (40, 90)])
def test_recall_of_dense_is_one_and_of_empty_is_zero(n, m):
    q, k = torch.randn(2, 4, n, 32), torch.randn(2, 2, m, 32)
    dense = Layout.dense(n, m, block_q=16, block_k=16)
    torch.testing.assert_close(attention_recall(q, k, dense), torch.ones(2, 4))
    empty = Layout.from_block_mask(
        torch.zeros(1, 1, -(-n // 16), -(-m // 16), dtype=torch.bool),
        block_q=16,
        block_k=16,
        num_queries=n,
        num_keys=m,
    )
    assert torch.equal(attention_recall(q, k, empty), torch.zeros(2, 4))


def test_output_error_zero_for_dense_and_matches_brute_force():
    q, k, v = torch.randn(2, 4, 80, 16), torch.randn(2, 2, 80, 16), torch.randn(2, 2, 80, 16)
    dense = output_error(q, k, v, Layout.dense(80, 80, block_q=16, block_k=16))
    assert torch.equal(dense["rel_l2"], torch.zeros(2, 4)) and dense["rel_l2_mean"] == 0.0
    torch.testing.assert_close(dense["cosine"], torch.ones(2, 4))
    layout = random_layout(2, 4, 80, 80, 16, 16, p=0.5, columns=2, seed=3)
    err = output_error(q, k, v, layout)
    probs = brute_probs(q, k)
    vv = v.double().repeat_interleave(2, 1)
    mask = brute_layout_mask(layout, 4, 2) & causal_token_mask(80, 80, 0, 80)
    scores = (q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2)) / 4.0
    sparse = scores.masked_fill(~mask, -math.inf).softmax(-1).nan_to_num(0.0) @ vv
    ref = probs @ vv
    rel = (sparse - ref).flatten(2).norm(dim=-1) / ref.flatten(2).norm(dim=-1)
    cos = torch.nn.functional.cosine_similarity(sparse.flatten(2), ref.flatten(2), dim=-1)
    torch.testing.assert_close(err["rel_l2"].double(), rel, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(err["cosine"].double(), cos, atol=1e-5, rtol=1e-4)
    assert err["rel_l2_mean"] == pytest.approx(float(rel.mean()), rel=1e-4)
    assert err["cosine_mean"] == pytest.approx(float(cos.mean()), rel=1e-4)


def test_precomputed_dense_attention_gives_the_same_metrics():
    q, k, v = torch.randn(1, 4, 70, 16), torch.randn(1, 2, 90, 16), torch.randn(1, 2, 90, 16)
    layout = random_layout(1, 4, 70, 90, 16, 16, p=0.4, columns=2, seed=5)
    out, lse = dense_attention(q, k, v)
    assert torch.equal(
        attention_recall(q, k, layout, dense_lse=lse), attention_recall(q, k, layout)
    )
    got, want = output_error(q, k, v, layout, dense_out=out), output_error(q, k, v, layout)
    torch.testing.assert_close(got["rel_l2"], want["rel_l2"])
    with pytest.raises(ValueError, match="dense_lse"):
        attention_recall(q, k, layout, dense_lse=lse[:, :2])
    with pytest.raises(ValueError, match="dense_out"):
        output_error(q, k, v, layout, dense_out=out[..., :8])


def test_a_precomputed_layout_lse_gives_the_same_recall():
    """bench prefill takes the layout's output and lse from one reference pass and hands the lse
    to attention_recall, which would otherwise compute it again."""
    from attnsieve.api import attention

    q, k, v = torch.randn(1, 4, 70, 16), torch.randn(1, 2, 90, 16), torch.randn(1, 2, 90, 16)
    layout = random_layout(1, 4, 70, 90, 16, 16, p=0.4, columns=2, seed=5)
    _, layout_lse = attention(q, k, v, layout, return_lse=True)
    got = attention_recall(q, k, layout, layout_lse=layout_lse)
    assert torch.equal(got, attention_recall(q, k, layout))
    assert not torch.equal(got, attention_recall(q, k, layout, layout_lse=layout_lse - 1.0))
    with pytest.raises(ValueError, match="layout_lse: expected shape"):
        attention_recall(q, k, layout, layout_lse=layout_lse[:, :2])
    with pytest.raises(TypeError, match="layout_lse: expected a torch.Tensor, got tuple"):
        attention_recall(q, k, layout, layout_lse=(layout_lse, layout_lse))
    with pytest.raises(TypeError, match="dense_lse: expected torch.float32, got torch.bfloat16"):
        attention_recall(q, k, layout, dense_lse=layout_lse.bfloat16())


# ---- workloads ---------------------------------------------------------------------------------
def test_workload_shapes_and_determinism():
    kinds = ["sink_local", "vertical", "slash", "block", "diffuse", "slash"]
    w = make_workload(kinds, batch=2, num_kv_heads=3, seq_len=200, head_dim=64, seed=7)
    assert w.q.shape == (2, 6, 200, 64) and w.k.shape == w.v.shape == (2, 3, 200, 64)
    assert (
        w.head_kinds[3] == "retrieval"
        and w.heads_of("block") == [3]
        and w.heads_of("slash") == [2, 5]
    )
    assert (
        w.columns.shape == (2, 3, 8) and w.spans.shape == (2, 3, 2, 2) and w.offsets.shape == (6, 2)
    )
    again = make_workload(kinds, batch=2, num_kv_heads=3, seq_len=200, head_dim=64, seed=7)
    other = make_workload(kinds, batch=2, num_kv_heads=3, seq_len=200, head_dim=64, seed=8)
    for name in ("q", "k", "v", "columns", "offsets", "spans"):
        assert torch.equal(getattr(w, name), getattr(again, name))
    assert not torch.equal(w.k, other.k) and not torch.equal(w.columns, other.columns)
    half = make_workload(kinds, num_kv_heads=3, seq_len=200, head_dim=64, dtype=torch.float16)
    assert half.q.dtype == half.k.dtype == half.v.dtype == torch.float16


def planted_mask(w, b, h):
    """bool (N, N): the keys query head h of batch b was built to read."""
    n = w.q.shape[2]
    pos = torch.arange(n)
    kv = h // (w.q.shape[1] // w.k.shape[1])
    kind = w.head_kinds[h]
    sinks = (pos < w.num_sinks)[None, :].expand(n, n)
    if kind == "sink_local":
        return sinks | ((pos[:, None] - pos[None, :]) < w.local_window)
    if kind == "vertical":
        return sinks | torch.isin(pos, w.columns[b, kv])[None, :]
    if kind == "slash":
        return sinks | torch.isin(pos[:, None] - pos[None, :], w.offsets[h])
    mask = sinks.clone()
    for start, stop in w.spans[b, kv].tolist():
        mask[:, start:stop] = True
    return mask


def test_planted_structure_gets_the_attention():
    kinds = list(KINDS) + ["vertical", "slash", "sink_local"]
    w = make_workload(kinds, batch=2, num_kv_heads=4, seq_len=300, head_dim=128, seed=1)
    probs = brute_probs(w.q, w.k)
    for b in range(2):
        for h, kind in enumerate(w.head_kinds):
            if kind == "diffuse":  # near uniform: no key takes much of a long row
                assert probs[b, h, 50:].amax(-1).max() < 0.2
                continue
            mass = (probs[b, h] * planted_mask(w, b, h)).sum(-1)
            assert mass.mean() > 0.99 and mass.min() > 0.9, (kind, float(mass.min()))
            if kind in ("slash", "retrieval"):  # the sinks are a fallback, weaker than the target
                target = planted_mask(w, b, h) & (torch.arange(300)[None, :] >= w.num_sinks)
                seen = (target & causal_token_mask(300, 300, 0, 300)).any(-1)
                lands = torch.arange(300)[:, None] - w.offsets[h]  # slash keys of every row
                seen &= kind == "retrieval" or ~((lands >= 0) & (lands < w.num_sinks)).any(-1)
                on_target = (probs[b, h] * target).sum(-1)[seen]
                assert on_target.mean() > 0.97 and on_target.min() > 0.5


def test_planted_columns_are_shared_by_the_kv_group():
    w = make_workload(["vertical"] * 4, num_kv_heads=2, seq_len=256, head_dim=64, seed=3)
    probs = brute_probs(w.q, w.k)[0, :, -1]  # the last query of every head
    for h in range(4):
        top = probs[h].topk(w.num_sinks + w.columns.shape[-1]).indices.sort().values
        expected = torch.cat([torch.arange(w.num_sinks), w.columns[0, h // 2]])
        assert torch.equal(top, expected)


def test_workload_at_128k_is_linear_in_memory():
    """A quadratic step at N = 128K would need > 64 GB; this must finish quickly on a CPU."""
    w = make_workload(["slash"], seq_len=131072, num_columns=2, num_offsets=1, num_spans=1)
    assert w.k.shape == (1, 1, 131072, 128) and torch.isfinite(w.q).all()
    rows = torch.arange(131072 - 8, 131072)
    scores = w.q[0, 0, rows] @ w.k[0, 0].T
    best = scores.argmax(-1)
    assert torch.isin(rows - best, w.offsets[0]).all()  # the planted diagonals win at 128K too


BAD = [
    ({"head_kinds": []}, "head_kinds"),
    ({"head_kinds": ["sink"]}, "head_kinds"),
    ({"batch": 0}, "batch"),
    ({"num_kv_heads": 2}, "num_kv_heads"),
    ({"seq_len": 10}, "seq_len"),
    ({"head_dim": 8}, "head_dim"),
    ({"local_window": 0}, "local_window"),
    ({"num_offsets": 200}, "num_offsets"),
    ({"span_len": 1.5}, "span_len"),
    ({"temperature": 0.0}, "temperature"),
]


@pytest.mark.parametrize("kwargs,field", BAD)
def test_bad_workload_arguments_name_the_field(kwargs, field):
    args = {"head_kinds": ["vertical", "slash", "diffuse"], "seq_len": 256, "head_dim": 64}
    with pytest.raises(ValueError, match=field):
        make_workload(**{**args, **kwargs})


@pytest.mark.parametrize("shape,heads", [("llama", (32, 8, 128)), ("smollm2", (9, 3, 64))])
def test_model_workload_has_the_model_heads(shape, heads):
    w = model_workload(shape, 96)
    assert (w.q.shape[1], w.k.shape[1], w.q.shape[3]) == heads
    assert w.head_kinds[:5] == ("sink_local", "vertical", "slash", "retrieval", "sink_local")
    with pytest.raises(ValueError, match="shape: expected one of"):
        model_workload("gpt2", 96)
