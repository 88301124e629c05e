"""CUDA-graph decode steps on the paged cache (`attnsieve.integrations.decode_graphs`): the page
reservation and host-mirror bookkeeping they rest on (CPU), `paged_cache` in the config, and on a
GPU the replayed tokens against eager decode."""

import contextlib
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from attnsieve.cache import Cache
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.kernels.decode_reference import decode_reference
from attnsieve.methods.decode.base import StepState
from attnsieve.methods.decode.quest import Quest
from tests.test_cache import kept_from, kv

transformers = pytest.importorskip("transformers")

from attnsieve.integrations import decode_graphs  # noqa: E402
from attnsieve.integrations.generate import decode  # noqa: E402
from attnsieve.integrations.transformers import cache_keyword, handle_of  # noqa: E402
from tests.test_integration_transformers import build, prompt  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _filled(reserve: int | None, kv_dtype=None, steps=21):
    """A 2-layer cache with ragged heads (a compaction), then ``steps`` one-token appends, with
    ``reserve`` tokens reserved before them (None: none). Returns (cache, versions seen)."""
    g = torch.Generator().manual_seed(0)
    cache = Cache(2, batch=2, kv_heads=2, head_dim=16, page_size=8, dtype=torch.float32,
                  device="cpu", kv_dtype=kv_dtype)  # fmt: skip
    for layer in range(2):
        cache.append(layer, *kv(cache, 13, g=g))
        cache.compact(layer, kept_from([[[0, 5, 12], list(range(13))], [[7], [1, 2, 3, 4, 9]]]))
    if reserve is not None:
        cache.reserve(reserve)
    versions, pointers = [], []
    for _ in range(steps):
        for layer in range(2):
            cache.append(layer, *kv(cache, 1, g=g))
        versions.append(cache.version)
        pointers.append([(lc.k_pages.data_ptr(), lc.page_table.data_ptr()) for lc in cache.layers])
    cache.validate()
    return cache, versions, pointers


@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_reserved_pages_make_appends_allocate_nothing(kv_dtype):
    """After reserve(n), n appends keep every pool, table and page assignment (the cache's
    version), and the cache holds exactly what an unreserved one holds: tokens, positions,
    page summaries, the decode result and the memory counted as held."""
    reserved, versions, pointers = _filled(21, kv_dtype)
    plain, plain_versions, _ = _filled(None, kv_dtype)
    assert len(set(versions)) == 1 and len({tuple(p) for p in pointers}) == 1
    assert len(set(plain_versions)) > 1  # without a reservation, appends allocate pages
    for layer in range(2):
        for x, y in zip(reserved.gather(layer), plain.gather(layer), strict=True):
            assert torch.equal(x, y)
        a, b = reserved._gather(reserved.layers[layer])[2], plain._gather(plain.layers[layer])[2]
        assert torch.equal(a, b)
        va, vb = reserved.page_view(layer), plain.page_view(layer)
        assert va.num_pages >= vb.num_pages  # reserved pages are in the view...
        width, key_min = vb.num_pages, va.bounds()[0]
        assert torch.equal(key_min[:, :, :width], vb.bounds()[0])
        assert torch.isinf(key_min[:, :, width:]).all()  # ...as empty pages
        q = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(layer))
        a = decode_reference(q, *reserved.kernel_args(layer)[:4], k_scale=reserved.layers[layer]
                             .k_scale, v_scale=reserved.layers[layer].v_scale)  # fmt: skip
        b = decode_reference(q, *plain.kernel_args(layer)[:4], k_scale=plain.layers[layer]
                             .k_scale, v_scale=plain.layers[layer].v_scale)  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert reserved.memory_bytes() == plain.memory_bytes()


def test_quest_picks_the_same_pages_with_pages_reserved():
    reserved, _, _ = _filled(40)
    plain, _, _ = _filled(None)
    q = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(3))
    quest = Quest(budget_tokens=16, dense_layers=0)
    for layer in range(2):
        a = quest.select(q, reserved.page_view(layer), StepState())
        b = quest.select(q, plain.page_view(layer), StepState())
        assert torch.equal(a.count, b.count)
        for i in range(2):
            for h in range(2):
                n = int(a.count[i, h])
                assert torch.equal(a.idx[i, h, :n], b.idx[i, h, :n])


def test_compaction_frees_reserved_pages_and_bumps_the_version():
    cache, _, _ = _filled(64)
    before = cache.version
    held = cache.layers[0].k_pages.shape[0] - cache.layers[0].free.numel()
    cache.compact(0, kept_from([[[0], [1]], [[2], [0, 1]]]))
    cache.validate()
    assert cache.version > before
    assert cache.layers[0].k_pages.shape[0] - cache.layers[0].free.numel() == 4 < held
    assert cache.memory_bytes(0) == 4 * cache.page_bytes(0)


def test_host_mirrors_restore_and_advance():
    cache, _, _ = _filled(8, steps=0)
    state = cache.host_state()
    for layer in range(2):
        cache.append(layer, *kv(cache, 1))
    cache.set_host_state(state)  # what a capture does: the device work did not happen
    pairs = list(zip(cache.layers, state, strict=True))
    assert all(torch.equal(lc.host_lengths, s[0]) for lc, s in pairs)
    cache.set_host_state([tuple(t.clone() for t in s) for s in state])
    cache.advance_host(3)
    assert all(torch.equal(lc.host_lengths, s[0] + 3) for lc, s in pairs)
    assert all(torch.equal(lc.seen, s[2] + 3) for lc, s in pairs)
    left = cache.reserved_tokens()
    assert left >= 8 - 3
    for layer in range(2):  # an eager append in between uses the reservation up too
        cache.append(layer, *kv(cache, 1))
    assert cache.reserved_tokens() == left - 1
    with pytest.raises(ValueError, match="tokens: .*reserved pages"):
        cache.advance_host(left)
    with pytest.raises(ValueError, match="tokens"):
        cache.reserve(-1)
    before = cache.host_state()
    for bad in (-1, True, 1.0):  # a negative count would rewind the host mirrors silently
        with pytest.raises(ValueError, match="tokens: expected an int >= 0"):
            cache.advance_host(bad)
    after = [t for state in cache.host_state() for t in state]
    same = zip(after, [t for state in before for t in state], strict=True)
    assert all(torch.equal(a, b) for a, b in same)


def test_paged_cache_config_field():
    config = AttentionConfig(prefill="dense", paged_cache=True)
    assert config.paged and not config.needs_paged_cache
    again = AttentionConfig.from_json(config.to_dict())
    assert again.paged_cache and again.paged
    assert AttentionConfig(kv="snapkv").needs_paged_cache
    with pytest.raises(TypeError, match="paged_cache"):
        AttentionConfig(paged_cache="yes")


@torch.no_grad()
def test_dense_decode_on_the_paged_cache_matches_stock():
    """paged_cache=True: the same greedy tokens as the stock model (fp32, CPU), through the paged
    cache and its decode attention; on the CPU no graph applies."""
    model = build("llama")
    ids = prompt(batch=2)
    stock = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                           pad_token_id=0)[:, ids.shape[1]:]  # fmt: skip
    with patch(model, AttentionConfig(prefill="dense", paged_cache=True)):
        handle = handle_of(model)
        cache = handle.new_cache()
        out = model(input_ids=ids, **{cache_keyword(model): cache}, use_cache=True)
        first = out.logits[:, -1].argmax(-1)
        assert decode_graphs.graph_handle(model, cache) is None
        tokens, _, _ = decode(model, first, cache, 5)
    assert torch.equal(torch.stack([first, *tokens], 1), stock)
    assert handle.session.paged is not None


def _generate(model, config, ids, chunks, graphs):
    """Prefill, compress, then greedy decode in calls of ``chunks`` steps each."""
    run = decode_graphs.DecodeGraph.run
    with (
        patch(model, config, graphs=graphs),
        mock.patch.object(decode_graphs.DecodeGraph, "run", autospec=True, side_effect=run) as runs,
    ):
        handle = handle_of(model)
        cache = handle.new_cache()
        out = model(input_ids=ids, **{cache_keyword(model): cache}, use_cache=True)
        handle.compress()
        tokens = [out.logits[:, -1].argmax(-1)]
        for steps in chunks:
            tokens += decode(model, tokens[-1], cache, steps)[0]
        replayed = runs.call_count > 0
        paged = handle.session.paged
        paged.validate()
        lengths = [paged.head_tokens(i) for i in range(len(paged))]
    return torch.stack(tokens, 1), replayed, lengths


@CUDA
@torch.no_grad()
@pytest.mark.parametrize(
    "roles",
    [
        {},
        {"decode": {"method": "quest", "budget_tokens": 32, "dense_layers": 0}},
        {"kv": {"method": "snapkv", "budget": 40, "window": 8}},
        {"kv": {"method": "adakv", "budget": 40}},
        {"precision": "fp8-kv"},
        {"decode": {"method": "tidaldecode", "budget_tokens": 32, "select_layer": 0}},
        {"kv": {"method": "snapkv", "budget": 40, "window": 8}, "kv_interval": 8},
        {"kv": {"method": "streaming", "budget": 40}, "kv_interval": 5},
        {"kv": {"method": "adakv", "budget": 40}, "kv_interval": 8},
    ],
)
def test_replayed_decode_steps_match_eager_ones(roles, monkeypatch):
    """Graphs replay the eager steps token for token, and the cache's host mirrors agree with
    its device state after; a small reservation forces several captures within one call."""
    monkeypatch.setattr(decode_graphs, "RESERVE_STEPS", 8)
    model = build("llama").to("cuda", torch.float16)
    ids = prompt(batch=2, length=100).cuda()
    config = AttentionConfig(prefill="dense", paged_cache=True, **roles)
    chunks = (5, 25, 3)  # the second call outruns the first capture's reservation: a new one
    eager, replayed_eager, lengths_eager = _generate(model, config, ids, chunks, graphs=False)
    graphed, replayed, lengths = _generate(model, config, ids, chunks, graphs=True)
    assert replayed and not replayed_eager
    assert torch.equal(graphed, eager)
    for a, b in zip(lengths, lengths_eager, strict=True):
        assert torch.equal(a, b)


@CUDA
@torch.no_grad()
def test_periodic_passes_replay_once_the_query_window_is_full(monkeypatch):
    """A prompt shorter than the query window: its steps run eagerly until the window is full,
    then replay between the periodic passes, token for token as eager decode."""
    monkeypatch.setattr(decode_graphs, "RESERVE_STEPS", 8)
    model = build("llama").to("cuda", torch.float16)
    ids = prompt(batch=2, length=40).cuda()
    config = AttentionConfig(prefill="dense", kv={"method": "h2o", "budget": 30}, kv_interval=6)
    eager, _, lengths_eager = _generate(model, config, ids, (30, 20), graphs=False)
    captures = []
    capture = decode_graphs.DecodeGraph.__init__

    def counted(self, *args):
        captures.append(1)
        capture(self, *args)

    monkeypatch.setattr(decode_graphs.DecodeGraph, "__init__", counted)
    graphed, replayed, lengths = _generate(model, config, ids, (30, 20), graphs=True)
    assert torch.equal(graphed, eager) and replayed
    assert len(captures) >= 4  # one after each pass once the window is full
    for a, b in zip(lengths, lengths_eager, strict=True):
        assert torch.equal(a, b)


def test_free_steps_count_down_to_each_periodic_pass():
    """free_steps: the steps before the one that passes (None without kv_interval); replayed
    steps count through advance_steps; windows_full once every policy layer holds its window."""
    model = build("llama")
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 40, "window": 8},
                             kv_interval=4)  # fmt: skip
    with torch.no_grad(), patch(model, config):
        handle = handle_of(model)
        cache = handle.new_cache()
        out = model(input_ids=prompt(length=100), **{cache_keyword(model): cache}, use_cache=True)
        session = handle.session
        assert session.windows_full() and session.free_steps() == 3
        token = out.logits[:, -1].argmax(-1)
        tokens, _, _ = decode(model, token, cache, 2)
        assert session.free_steps() == 1
        session.advance_steps(1)
        assert session.free_steps() == 0
        decode(model, tokens[-1], cache, 1)  # the step that passes
        assert session.free_steps() == 3
    with torch.no_grad(), patch(model, AttentionConfig(prefill="dense", paged_cache=True)):
        cache = handle_of(model).new_cache()
        model(input_ids=prompt(length=20), **{cache_keyword(model): cache}, use_cache=True)
        assert handle_of(model).session.free_steps() is None


class StepsAsReplays:
    """A `DecodeGraph` stand-in for the CPU: its "replays" are eager steps that check what a
    replay could not do (no host code runs in one): compact the cache or replace a query window."""

    def __init__(self, model, cache, keyword, token, stream):
        self.model, self.cache, self.keyword = model, cache, keyword
        self.version = cache.cache.version
        self.windows = {i: w[0] for i, w in cache.reader.queries.items()}
        self.graph = SimpleNamespace(reset=lambda: None)

    valid = decode_graphs.DecodeGraph.valid

    def run(self, token, steps, eos_ids):
        tokens = []
        for _ in range(steps):
            if decode_graphs.at_eos(token, eos_ids):
                break
            token = decode_graphs._step(self.model, token, self.cache, self.keyword)
            assert self.cache.cache.version == self.version, "a replayed step compacted"
            for i, w in self.cache.reader.queries.items():
                assert w[0] is self.windows[i], "a replayed step replaced a query window"
            tokens.append(token)
        return tokens


def _graph_loop_on_cpu(monkeypatch):
    """Run `decode_graphs.decode` on the CPU: streams and syncs faked, graphs `StepsAsReplays`."""
    stream = SimpleNamespace(wait_stream=lambda other: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *args, **kwargs: stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *args: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(decode_graphs, "DecodeGraph", StepsAsReplays)
    monkeypatch.setattr(decode_graphs, "RESERVE_STEPS", 16)


def _periodic_decode(model, config, ids, calls, graphs):
    """Prefill ``ids``, then greedy decode in ``calls`` (steps per call); ``graphs``: through
    `decode_graphs.decode` (on the CPU: `_graph_loop_on_cpu`). Tokens, head lengths, pass
    counters and the paged cache."""
    with patch(model, config):
        handle = handle_of(model)
        cache = handle.new_cache()
        key = cache_keyword(model)
        out = model(input_ids=ids, **{key: cache}, use_cache=True)
        tokens = [out.logits[:, -1].argmax(-1)]
        for steps in calls:
            if graphs:
                tokens += decode_graphs.decode(model, handle, tokens[-1], cache, steps, (), key)[0]
            else:
                tokens += decode(model, tokens[-1], cache, steps)[0]
        paged = handle.session.paged
        lengths = [paged.head_tokens(i) for i in range(len(paged))]
        return torch.stack(tokens, 1), lengths, dict(handle.session.steps), paged


@torch.no_grad()
@pytest.mark.parametrize(
    "roles",
    [
        {"kv": {"method": "snapkv", "budget": 40, "window": 8}, "kv_interval": 8},
        {"kv": {"method": "h2o", "budget": 30}, "kv_interval": 2},
        {"kv": {"method": "snapkv", "budget": 40}, "kv_interval": 3, "layers": {1: {"kv": None}}},
    ],
)
@pytest.mark.parametrize("length", [1, 70])
def test_the_decode_loop_replays_no_pass(roles, length, monkeypatch):
    """The graph loop with periodic passes, its replays run as checked eager steps: the tokens,
    head lengths and pass counters of eager decode, and no pass inside a replay."""
    config = AttentionConfig(prefill="dense", **roles)
    model, ids, calls = build("llama"), prompt(batch=2, length=length), (30, 1, 7, 40)
    eager, lengths_eager, steps_eager, _ = _periodic_decode(model, config, ids, calls, False)
    _graph_loop_on_cpu(monkeypatch)
    graphed, lengths, steps, _ = _periodic_decode(model, config, ids, calls, True)
    assert torch.equal(graphed, eager) and steps == steps_eager
    for a, b in zip(lengths, lengths_eager, strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_a_capture_between_passes_reserves_the_steps_before_the_next_pass(monkeypatch):
    """Pages reserved for a capture serve the steps before the next pass, whose compaction ends
    the graph: a long call's pool stays within a pass's pages of eager decode's (reserving every
    step left in the call grew it sevenfold)."""
    config = AttentionConfig(prefill="dense", kv={"method": "streaming", "budget": 32},
                             kv_interval=8)  # fmt: skip
    model, ids = build("llama"), prompt(batch=1, length=100)
    *_, eager = _periodic_decode(model, config, ids, (300,), False)
    _graph_loop_on_cpu(monkeypatch)
    *_, graphed = _periodic_decode(model, config, ids, (300,), True)
    per_pass = eager.kv_heads * (-(-config.kv_interval // eager.page_size) + 1)
    for layer in range(len(eager)):
        pages = graphed.layers[layer].k_pages.shape[0]
        assert pages <= eager.layers[layer].k_pages.shape[0] + per_pass


@CUDA
@torch.no_grad()
def test_prompt_chunks_under_no_grad_between_replayed_decode_calls(monkeypatch):
    """`decode` reserves pages and captures under inference mode; a prompt chunk under no_grad
    then writes into the same pools and query windows, and replayed steps go on as eager ones."""
    monkeypatch.setattr(decode_graphs, "RESERVE_STEPS", 8)
    model = build("llama").to("cuda", torch.float16)
    kv = {"method": "streaming", "budget": 40}
    config = AttentionConfig(prefill="dense", kv=kv, kv_interval=5)

    def two_turns(graphs):
        with patch(model, config, graphs=graphs):
            cache, tokens = handle_of(model).new_cache(), []
            for chunk in (prompt(batch=2, length=100), prompt(batch=2, length=7)):
                out = model(input_ids=chunk.cuda(), **{cache_keyword(model): cache}, use_cache=True)
                tokens += decode(model, out.logits[:, -1].argmax(-1), cache, 20)[0]
        return torch.stack(tokens, 1)

    assert torch.equal(two_turns(graphs=True), two_turns(graphs=False))


@torch.no_grad()
def test_a_prompt_chunk_after_decode_drops_the_decode_graph():
    """A prompt chunk replaces the query windows a captured step slides in place (the cache's
    version may not move: its tokens can fit the reserved pages), so the graph goes with them."""
    model = build("llama")
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 40}, kv_interval=16)
    with patch(model, config):
        handle = handle_of(model)
        cache = handle.new_cache()
        key = cache_keyword(model)
        out = model(input_ids=prompt(length=100), **{key: cache}, use_cache=True)
        decode(model, out.logits[:, -1].argmax(-1), cache, 3)
        dropped = []
        handle.session.decode_graph = SimpleNamespace(
            graph=SimpleNamespace(reset=lambda: dropped.append(1))
        )
        model(input_ids=prompt(length=10), **{key: cache}, use_cache=True)
        assert handle.session.decode_graph is None and dropped


@torch.no_grad()
def test_finish_prefill_runs_each_pending_hook_once():
    """The hook a decode step would run (compression after the prompt) runs at finish_prefill,
    once per prefilled layer, and not again at the next decode step."""
    from attnsieve.integrations.hf_cache import AttnsieveCache

    cache = AttnsieveCache(2)
    cache.reader = SimpleNamespace(ended=False)  # a live session reads its decode steps
    ran = []
    cache.on_prefill_end = ran.append
    k = torch.randn(1, 2, 5, 16)
    for layer in (1, 0):
        cache.update(k, k, layer)
    cache.finish_prefill()
    assert ran == [0, 1]
    for layer in (0, 1):
        cache.update(k[:, :, :1], k[:, :, :1], layer)
    cache.finish_prefill()
    assert ran == [0, 1]


@torch.no_grad()
def test_the_query_window_does_not_hold_the_prompts_queries():
    """A KV policy's observation window is a copy of the last queries, not a view that keeps a
    prefill's whole query tensor alive."""
    model = build("llama")
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 40, "window": 8})
    with patch(model, config):
        handle = handle_of(model)
        cache = handle.new_cache()
        model(input_ids=prompt(length=200), **{cache_keyword(model): cache}, use_cache=True)
        for queries, positions in handle.session.queries.values():
            for t in (queries, positions):
                assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@torch.no_grad()
def test_graphs_replay_only_where_a_step_needs_no_host(monkeypatch):
    """Graphs replay on a CUDA paged cache of the patched model's own session, with graphs on,
    periodic compression too; not once a layer was kept whole, not after a failed capture, not
    on another cache. (The device is faked: nothing runs on it here.)"""
    model = build("llama")
    ids = prompt(length=40)

    def prefilled(config, graphs=True):
        handle = patch(model, config, graphs=graphs)
        cache = handle.new_cache()
        model(input_ids=ids, **{cache_keyword(model): cache}, use_cache=True)
        monkeypatch.setattr(handle.session.paged, "device", torch.device("cuda", 0))
        return handle, cache

    base = AttentionConfig(prefill="dense", paged_cache=True)
    handle, cache = prefilled(base)
    with handle:
        assert decode_graphs.graph_handle(model, cache) is handle
        assert decode_graphs.graph_handle(model, object()) is None
        handle.session.keep_whole(1)
        assert decode_graphs.graph_handle(model, cache) is None
    handle, cache = prefilled(base)
    with handle:
        handle.graphs.eager.add(decode_graphs.EAGER_KEY)
        assert decode_graphs.graph_handle(model, cache) is None
    handle, cache = prefilled(AttentionConfig(prefill="dense", kv="snapkv", kv_interval=8))
    with handle:
        assert decode_graphs.graph_handle(model, cache) is handle
    handle, cache = prefilled(base, graphs=False)
    with handle:
        assert decode_graphs.graph_handle(model, cache) is None
    assert decode_graphs.graph_handle(model, cache) is None  # unpatched
