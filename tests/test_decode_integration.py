"""Decode through attnsieve's paged cache under patch(): KV policies, selectors, FP8 KV."""

import gc
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnsieve.integrations import AttentionConfig, patch  # noqa: E402
from attnsieve.methods.kv import SnapKV  # noqa: E402
from tests.test_integration_transformers import ARCHS, build, prompt  # noqa: E402

NEW = 8
# budgets far above the prompt: every policy keeps every token, every selector reads every page
FULL_KV = {"method": "snapkv", "budget": 10_000}
FULL_DECODE = {"method": "quest", "budget_tokens": 10_000, "dense_layers": 0}


@torch.no_grad()
def greedy(model, ids, new=NEW):
    out = model.generate(
        input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
    )
    return out[:, ids.shape[1] :]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_full_budget_policy_and_selector_match_stock_generate(arch):
    model = build(arch)
    ids = prompt(batch=2)
    stock = greedy(model, ids)
    config = AttentionConfig(prefill="dense", kv=FULL_KV, decode=FULL_DECODE)
    with patch(model, config) as stats:
        tokens = greedy(model, ids)
    assert torch.equal(tokens, stock)
    assert stats is not None
    assert "generate" not in model.__dict__  # the generate wrapper is gone with the patch


PADDED = [("llama", AttentionConfig(prefill="dense", paged_cache=True))] + [
    (arch, AttentionConfig(prefill="dense", kv=FULL_KV, decode=FULL_DECODE)) for arch in ARCHS
]


@pytest.mark.parametrize(
    "arch, config", PADDED, ids=[f"{a}-{'paged' if c.kv is None else 'full'}" for a, c in PADDED]
)
@torch.no_grad()
def test_padded_batches_decode_as_stock_generate(arch, config):
    """Left padding leaves the paged cache when the prompt ends: the decode kernel never sees it,
    and every row generates what stock transformers generates."""
    model = build(arch)
    ids = prompt(batch=3)
    mask = torch.ones_like(ids)
    mask[1, :12] = mask[2, :5] = 0
    ids = ids.masked_fill(mask == 0, 0)
    kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    stock = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    handle = patch(model, config)
    with handle:
        tokens = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(tokens, stock)
    if ARCHS[arch][3][0] is None:  # layer 0 not sliding (those keep every token, masked)
        held = handle.session.paged.head_tokens(0)  # each row's tokens, the last one not cached
        assert held[:, 0].tolist() == [int(n) + NEW - 1 for n in mask.sum(1)]


@torch.no_grad()
def test_padding_in_a_later_prompt_chunk_is_refused():
    model = build("llama")
    ids = prompt(batch=2)
    handle = patch(model, AttentionConfig(prefill="dense", paged_cache=True))
    with handle:
        cache = handle.new_cache()
        model(input_ids=ids, past_key_values=cache)
        cache.finish_prefill()
        mask = torch.ones(2, ids.shape[1] + 4, dtype=torch.long)
        mask[1, -2:] = 0  # padding inside the new chunk
        with pytest.raises(NotImplementedError, match="padding"):
            model(input_ids=ids[:, :4], attention_mask=mask, past_key_values=cache)


@torch.no_grad()
def test_compression_frees_memory_per_head_and_generation_runs():
    model = build("llama")
    ids = prompt(length=96)
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 40, "window": 8})
    handle = patch(model, config)
    with handle:
        tokens = greedy(model, ids, new=4)
    paged = handle.session.paged
    assert tokens.shape == (1, 4)
    for layer in range(2):
        held = paged.head_tokens(layer)
        # 40 kept at the prompt's end, then 3 decode tokens appended (the 4th is never cached)
        assert (held == 40 + 3).all()
        pages = -(-held // paged.page_size)
        assert paged.memory_bytes(layer) == int(pages.sum()) * paged.page_bytes(layer)
        assert paged.reserved_bytes(layer) == paged.memory_bytes(layer)  # given back, not pooled


@torch.no_grad()
def test_adakv_gives_heads_different_budgets():
    model = build("llama")
    for p in model.model.layers.parameters():  # peakier attention: heads differ in focus
        p.mul_(4.0)
    ids = prompt(length=120)
    config = AttentionConfig(prefill="dense", kv={"method": "adakv", "budget": 64})
    handle = patch(model, config)
    with handle:
        greedy(model, ids, new=2)
    held = torch.stack([handle.session.paged.head_tokens(i) for i in range(2)])
    assert held.float().mean() == pytest.approx(64 + 1, abs=1)  # layer budget, +1 decode token
    assert len(set(held.flatten().tolist())) > 1  # ragged: heads keep different counts


@torch.no_grad()
def test_periodic_adakv_keeps_the_layer_budget():
    """Ada-KV leaves heads ragged; a periodic pass must not clamp each head's target to its short
    length, which shrank the layer's total below budget x heads."""
    model = build("llama")
    for p in model.model.layers.parameters():  # peakier attention: heads differ in focus
        p.mul_(4.0)
    config = AttentionConfig(prefill="dense", kv={"method": "adakv", "budget": 64}, kv_interval=1)
    handle = patch(model, config)
    totals = []
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=prompt(length=120), past_key_values=cache, use_cache=True)
        for _ in range(8):  # every step ends with a pass
            out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=cache)
            held = [handle.session.paged.head_tokens(layer) for layer in range(2)]
            assert len(set(torch.cat(held).flatten().tolist())) > 1  # ragged heads
            totals.append([int(h.sum()) for h in held])
    assert totals == [[128, 128]] * 8


@torch.no_grad()
def test_explicit_compression_keeps_the_question_out_of_the_window():
    """kvpress protocol: compress after the context, then prefill the question uncompressed."""
    model = build("llama")
    context, question = prompt(length=80), prompt(length=12)[:, :12]
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 24, "window": 8})
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        model(input_ids=context, past_key_values=cache, use_cache=True)
        handle.compress()
        assert (handle.session.paged.head_tokens(0) == 24).all()
        handle.stats.clear()
        out = model(input_ids=question, past_key_values=cache, use_cache=True)
        assert (handle.session.paged.head_tokens(0) == 24 + 12).all()  # the question is whole
        # recorded (the stats kept the context's entry, or None after a clear)
        assert handle.stats.fallback_per_layer == ["paged", "paged"]
        # the question's attention over the compressed context equals masking the evicted keys
        step = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=cache)
    assert torch.isfinite(step.logits).all()


@torch.no_grad()
def test_a_second_turn_is_compressed_by_its_own_queries():
    """Without kv_interval a layer's window stopped at its first pass: compress() after a second
    chunk scored with the first chunk's queries, so every token from their positions on counted
    as the window's and the policy kept the newest 24. The chunk's own queries score it now;
    decode steps after the pass are not recorded, and a compress() after them says so."""
    model = build("llama")
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 24, "window": 8})
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        model(input_ids=prompt(length=80), past_key_values=cache, use_cache=True)
        handle.compress()
        model(input_ids=prompt(length=40)[:, :40], past_key_values=cache, use_cache=True)
        session = handle.session
        assert session.queries[0][1][:, -1].tolist() == [119]  # the newest query's position
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            handle.compress()
        view = session.paged.kv_view(0, *session.queries[0])
        kept = view.positions[0, 0, : int(view.lengths[0, 0])]
        assert len(kept) == 24 and int(kept.min()) < 119 - 24  # scored, not the newest 24
        model(input_ids=prompt(length=1)[:, :1], past_key_values=cache, use_cache=True)
        with pytest.warns(UserWarning, match="after 1 decode steps with kv_interval=0"):
            handle.compress()
        # the window still lacks that step, one more, and 5 replayed from a CUDA graph (which run
        # no host code: `decode_graphs` counts them here)
        model(input_ids=prompt(length=1)[:, :1], past_key_values=cache, use_cache=True)
        session.advance_steps(5)
        with pytest.warns(UserWarning, match="after 7 decode steps with kv_interval=0"):
            handle.compress()


@torch.no_grad()
def test_explicit_compression_of_a_padded_batch_drops_the_padding_first():
    """handle.compress() ends the prompt: the padding leaves before the policy runs (it compacted
    the padded cache, then the first decode step's padding removal indexed the compacted one)."""
    model = build("llama")
    ids = prompt(batch=2, length=60)
    mask = torch.ones_like(ids)
    mask[1, :20] = 0
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 24, "window": 8})
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        handle.compress()
        session = handle.session
        for layer in range(2):
            view = session.paged.kv_view(layer, *session.queries[layer])
            assert (view.lengths == 24).all()
            assert (view.positions[1] >= 20).all()  # no pad token kept
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        token = out.logits[:, -1:].argmax(-1)
        model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
    assert (session.paged.head_tokens(0) == 25).all()


@pytest.mark.parametrize("kv", [{"method": "snapkv"}, {"method": "adakv"}])
@torch.no_grad()
def test_observation_windows_longer_than_the_kept_queries_are_whole(kv):
    """A window of 96 queries: the session kept only its last 64 queries, so the policy saw (and
    always kept) a 64-token window instead, silently."""
    model = build("llama")
    kv = {**kv, "budget": 100, "window": 96}
    if kv["method"] == "adakv":  # Ada-KV's window is its inner policy's
        kv["inner"] = SnapKV(window=kv.pop("window"))
    handle = patch(model, AttentionConfig(prefill="dense", kv=kv))
    with handle:
        cache = handle.new_cache()
        model(input_ids=prompt(length=150), past_key_values=cache, use_cache=True)
        session = handle.session
        assert session.queries[0][0].shape[2] == 96
        handle.compress()
        for layer in range(2):
            view = session.paged.kv_view(layer, *session.queries[layer])
            for row in range(2):  # every head keeps the window's 96 tokens
                n = int(view.lengths[0, row])
                assert int((view.positions[0, row, :n] >= 150 - 96).sum()) == 96


@torch.no_grad()
def test_streaming_soak_keeps_memory_and_python_objects_flat():
    model = build("llama")
    config = AttentionConfig(
        prefill="dense", kv={"method": "streaming", "budget": 32}, kv_interval=16
    )
    handle = patch(model, config)
    token = prompt(length=48)
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        sizes, objects = [], {}
        for step in range(320):
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            if step == 0:
                handle.compress()
            sizes.append(int(handle.session.paged.head_tokens(0).max()))
            if step in (64, 319):  # both right after a periodic pass (every 16 steps)
                gc.collect()
                objects[step] = len(gc.get_objects())
    assert max(sizes[16:]) <= 32 + 16  # back to budget every 16 steps: bounded
    reserved = handle.session.paged.reserved_bytes()
    assert reserved <= 4 * handle.session.paged.memory_bytes()  # the pool does not grow
    # what makes a long run slow is state that piles up per step; 255 steps of one leaked object
    # each would show here (a timing check would be a flaky timed test)
    assert objects[319] - objects[64] < 64


@pytest.mark.parametrize(
    "kv, length, want",
    [
        # PyramidKV's layer budgets (39 and 9 of a mean 24) hold, not a pyramid of the shorter
        # lengths periodic passes see
        ({"method": "pyramidkv", "budget": 24, "window": 8}, 96, [39, 9]),
        ({"method": "snapkv", "budget": 24, "window": 8}, 96, [24, 24]),
        # a budget above the prompt: the cache grows towards it, not back to the prompt
        ({"method": "streaming", "budget": 2004}, 12, [12 + 40, 12 + 40]),
        # a prompt shorter than layer 0's budget: the layers grow towards the schedule of a long
        # sequence, not the one clamped to the short lengths a pass sees (which held layer 1 at
        # 20-24 tokens)
        ({"method": "pyramidkv", "budget": 24, "window": 8}, 20, [39, 9]),
        # a one-token prompt (a decode call itself): the first pass comes after kv_interval calls;
        # the 41st call appends after the 40th's pass
        ({"method": "snapkv", "budget": 40, "window": 8}, 1, [41, 41]),
    ],
    ids=["pyramidkv", "snapkv", "short-prompt", "pyramidkv-short-prompt", "one-token-prompt"],
)
@torch.no_grad()
def test_periodic_compression_returns_to_the_budget(kv, length, want):
    model = build("llama")
    handle = patch(model, AttentionConfig(prefill="dense", kv=kv, kv_interval=4))
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=prompt(length=length), past_key_values=cache, use_cache=True)
        for _ in range(40):  # the 40th decode step ends with a periodic pass
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
    held = [handle.session.paged.head_tokens(layer).flatten().tolist() for layer in range(2)]
    assert held == [[n, n] for n in want]


@pytest.mark.parametrize("method", ["razor", "snapkv"])
@torch.no_grad()
def test_periodic_ratio_passes_keep_each_rows_own_budget(method):
    """A ratio counts each row's own prompt: a left-padded batch of 120 and 40 tokens keeps 24 and
    8 tokens a head after every pass. RazorAttention's passes gave every row the longest row's
    budget, so the short row grew to 20 tokens by the 12th step; Razor also holds its
    compensation token."""
    model = build("llama")
    ids = prompt(batch=2, length=120)
    mask = torch.ones_like(ids)
    mask[1, :80] = 0
    ids = ids.masked_fill(mask == 0, 0)
    kv = {"method": method, "ratio": 0.2}
    kv.update({"retrieval_heads": {}} if method == "razor" else {"window": 4})
    handle = patch(model, AttentionConfig(prefill="dense", kv=kv, kv_interval=4))
    with handle:
        cache = handle.new_cache()
        out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        for _ in range(12):  # the 12th decode step ends with a periodic pass
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=cache)
    extra = 1 if method == "razor" else 0
    for layer in range(2):
        held = handle.session.paged.head_tokens(layer).tolist()
        assert held == [[24 + extra] * 2, [8 + extra] * 2]


@torch.no_grad()
def test_a_cache_no_session_reads_refuses_decode_steps():
    """A paged cache returns a decode step's own K/V only, for the live session's attention to
    read the pages: continued after a later generation, after the patch's removal, or built
    outside a patch, plain attention saw that token alone and generated other tokens."""
    from attnsieve.integrations.hf_cache import AttnsieveCache

    model = build("llama")
    ids = prompt(length=40)
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 10000})
    handle = patch(model, config)
    stale = handle.new_cache()
    model(input_ids=ids, past_key_values=stale, use_cache=True)
    handle.new_cache()  # a second generation
    step = {"input_ids": ids[:, -1:], "use_cache": True}
    with pytest.raises(ValueError, match="no attnsieve attention reads"):
        model(**step, past_key_values=stale)
    live = handle.new_cache()
    model(input_ids=ids, past_key_values=live, use_cache=True)
    model(**step, past_key_values=live)
    handle.remove()
    with pytest.raises(ValueError, match="no attnsieve attention reads"):
        model(**step, past_key_values=live)
    alone = AttnsieveCache(model.config.num_hidden_layers)
    model(input_ids=ids, past_key_values=alone, use_cache=True)
    with pytest.raises(ValueError, match="materialize=True for plain attention"):
        model(**step, past_key_values=alone)


@torch.no_grad()
def test_a_reset_cache_generates_as_a_fresh_one():
    """reset() emptied the pages but kept the session's state: the second prompt was never
    compressed (its layers counted as compressed) and held every token."""
    model = build("llama")
    ids = prompt(length=40)
    handle = patch(model, AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 8}))
    with handle:
        fresh = handle.new_cache()
        want = greedy_on(model, ids, fresh)
        held = handle.session.paged.head_tokens(0).tolist()
        fresh.reset()
        assert greedy_on(model, ids, fresh) == want
        assert handle.session.paged.head_tokens(0).tolist() == held


MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def two_turns(model, handle, prompt_mode, step_mode):
    """Two prompt chunks, each followed by 6 greedy steps: the chunks under one autograd mode,
    the steps under another."""
    cache, tokens = handle.new_cache(), []
    for chunk in (prompt(length=40), prompt(length=9)):
        with MODES[prompt_mode]():
            out = model(input_ids=chunk, past_key_values=cache, use_cache=True)
        with MODES[step_mode]():
            for _ in range(6):
                token = out.logits[:, -1:].argmax(-1)
                tokens.append(int(token))
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
    return tokens


@pytest.mark.parametrize(
    "roles",
    [
        {"paged_cache": True},
        {"kv": {"method": "streaming", "budget": 16}, "kv_interval": 4},
        {"kv": {"method": "snapkv", "budget": 24, "window": 8}, "decode": "quest"},
        {"kv": {"method": "razor", "budget": 24, "retrieval_heads": {}}, "precision": "fp8-kv"},
    ],
    ids=["paged", "periodic", "snapkv-quest", "razor-fp8"],
)
@pytest.mark.parametrize("modes", [("no_grad", "inference_mode"), ("inference_mode", "no_grad")])
def test_prompt_chunks_and_steps_under_different_autograd_modes(roles, modes):
    """A cache that steps filled under inference mode (attnsieve's decode) takes a prompt chunk
    under no_grad (model.generate), and the reverse: its tensors are normal tensors, which PyTorch
    lets either mode update in place (inference tensors it refused to update outside inference
    mode), and the tokens are those of one mode throughout."""
    model = build("llama")
    handle = patch(model, AttentionConfig(prefill="dense", **roles))
    with handle:
        want = two_turns(model, handle, "no_grad", "no_grad")
        assert two_turns(model, handle, *modes) == want


@pytest.mark.parametrize(
    "heads, dtype", [(2, torch.float64), (3, torch.float32)], ids=["dtype", "heads"]
)
@torch.no_grad()
def test_a_refused_first_decode_step_leaves_the_prompt_uncompressed(heads, dtype):
    """The first decode step compresses the prompt before appending its token: a step whose K/V
    the cache refused had compressed it first, so a retry decoded on a cache it had changed."""
    model = build("llama")
    ids = prompt(length=40)
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 16, "window": 8})
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        before = [cache.cache.gather(layer) for layer in range(2)]
        key = torch.randn(1, heads, 1, 16, dtype=dtype)  # the model's: 2 KV heads, float32
        with pytest.raises((TypeError, ValueError), match="^k: expected"):
            cache.update(key, key, 0)
        for layer, held in enumerate(before):
            assert all(map(torch.equal, cache.cache.gather(layer), held))
        got = model(input_ids=ids[:, -1:], past_key_values=cache).logits
        assert (cache.cache.head_tokens(0) == 16 + 1).all()  # the retry compressed the prompt
        fresh = handle.new_cache()
        model(input_ids=ids, past_key_values=fresh, use_cache=True)
        want = model(input_ids=ids[:, -1:], past_key_values=fresh).logits
    assert torch.equal(got, want)


def greedy_on(model, ids, cache, new=4):
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    tokens = []
    for _ in range(new):
        tokens.append(int(out.logits[0, -1].argmax()))
        out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache)
    return tokens


@torch.no_grad()
def test_fp8_kv_cache_decodes_close_to_full_precision():
    model = build("llama")
    ids = prompt(length=40)
    base = model(input_ids=ids).logits[:, -1]
    config = AttentionConfig(prefill="dense", precision="fp8-kv")
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
        logits = model(input_ids=ids[:, -1:], past_key_values=cache).logits[:, -1]
    assert handle.session.paged.kv_dtype == "fp8"
    rel = (logits - base).norm() / base.norm()
    assert 0 < rel < 0.05  # FP8 rounding shows, but small


@torch.no_grad()
def test_tidaldecode_whose_selection_layer_runs_whole(monkeypatch):
    """Gemma 3's layer 0 slides (it runs whole, without the selector): TidalDecode selecting at
    layer 0 raised at layer 1 ("no TidalDecode selection"), and the step's state, reset only at
    layer 0, would have carried a selection over to the next step. Layer 1 now selects afresh
    every step (attending densely), so generation is stock generation."""
    model = build("gemma3")
    ids = prompt(batch=2, length=64)
    stock = greedy(model, ids)
    tidal = {"method": "tidaldecode", "select_layer": 0, "reselect_layer": None,
             "budget_tokens": 8}  # fmt: skip
    from attnsieve.methods.decode import TidalDecode

    select, picked = TidalDecode.select, []
    monkeypatch.setattr(TidalDecode, "select", lambda self, q, view, step: picked.append(
        select(self, q, view, step)) or picked[-1])  # fmt: skip
    with patch(model, AttentionConfig(prefill="dense", decode=tidal)):
        assert torch.equal(greedy(model, ids), stock)
    assert len(picked) == NEW - 1 and all(p is None for p in picked)  # a selection every step


@torch.no_grad()
def test_calibrated_double_sparsity_runs_on_its_label_cache():
    from attnsieve.eval.calibrate import add_label_channels, capture_qk

    model = build("llama")
    ids = prompt(length=64)
    result = {"prefill": "dense", "layers": {}}
    add_label_channels(result, capture_qk(model, ids), 4)
    assert len(result["layers"]["0"]["decode"]["channels"]) == 2  # one list per KV head
    for layer in result["layers"].values():
        layer["decode"].update(ratio=0.5, dense_layers=0)
    handle = patch(model, AttentionConfig.from_json(result))
    with handle:
        tokens = greedy(model, ids, new=4)
    assert tokens.shape == (1, 4)
    labels = handle.session.paged.layers[0].labels
    assert labels is not None and labels.shape[-1] == 4


DS = {"method": "double_sparsity", "ratio": 0.5, "dense_layers": 0}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"decode": {**DS, "channels": [[0, 1]] * 3}}, r"decode \(layer 0\): channels: 3 lists"),
        (
            {"decode": DS, "layers": {0: {"decode": {**DS, "channels": [[0, 1]] * 2}}}},
            r"decode \(layer 1\): channels: none given",
        ),
        (
            {"layers": {1: {"decode": {**DS, "channels": [[0, 16]] * 2}}}},
            r"layers\[1\]\['decode'\]: channels: index 16, but the head dimension is 16",
        ),
    ],
)
def test_double_sparsity_channels_that_do_not_fit_are_refused_by_patch(config, message):
    """Label channels of another KV-head count or head dimension, or none for a sparse layer, are
    refused when the model is patched, naming the layer; they had failed only at the first sparse
    decode step (a missing layer), or there without naming it ("channels: expected shape...")."""
    model = build("llama")  # 2 layers, 2 KV heads of 16 channels
    with pytest.raises(ValueError, match=message):
        patch(model, AttentionConfig(prefill="dense", **config))
    assert model.config._attn_implementation == "sdpa"  # not patched


@pytest.mark.parametrize(
    "heads, message",
    [
        ({9: [0]}, r"^kv \(layer 0\): retrieval_heads: layers \[9\] past the model's 2 layers"),
        ({1: [2]}, r"^kv \(layer 1\): retrieval_heads\[1\]: expected KV head indices < 2"),
    ],
)
def test_razor_retrieval_heads_that_do_not_fit_are_refused_by_patch(heads, message):
    """They were refused only after the whole prompt had been prefilled, by the compression."""
    model = build("llama")  # 2 layers, 2 KV heads
    razor = {"method": "razor", "budget": 16, "retrieval_heads": heads}
    with pytest.raises(ValueError, match=message):
        patch(model, AttentionConfig(prefill="dense", kv=razor))
    assert model.config._attn_implementation == "sdpa"  # not patched


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_razor_compensation_tokens_weigh_the_same_in_prompt_chunks_and_decode(dtype):
    """RazorAttention stores one weighted compensation token per evicting head; a question
    prefilled as one chunk after compression (dense attention over the ragged heads) gives the
    logits that the same tokens decoded one by one (the paged decode kernel) give, in bfloat16
    too (a log weight rounded to bfloat16 in the chunk's mask moved them by ~0.03)."""
    model = build("llama").to(dtype)
    context, question = prompt(batch=2, length=80), prompt(batch=2, length=3)
    razor = {"method": "razor", "budget": 16, "retrieval_heads": {0: [1]}}
    handle = patch(model, AttentionConfig(prefill="dense", kv=razor))
    logits = []
    with handle:
        for chunks in ([question], list(question.split(1, 1))):
            cache = handle.new_cache()
            model(input_ids=context, past_key_values=cache, use_cache=True)
            handle.compress()
            for chunk in chunks:
                out = model(input_ids=chunk, past_key_values=cache, use_cache=True)
            logits.append(out.logits[:, -1].float())
            paged = handle.session.paged
            # layer 0: KV head 1 is a retrieval head (whole), head 0 keeps 16 + 1 compensation
            assert paged.head_tokens(0).tolist() == [[17 + 3, 80 + 3]] * 2
            weights = paged.log_weights(0).exp()
            kept = weights[:, 0, :20].round()  # sink 4, the compensation token, 12 + 3 recent
            assert (kept[:, 4] == 80 - 16).all() and (kept.sum(-1) == 64 + 19).all()
            assert (weights[:, 1] == 1).all()
            assert paged.layers[1].weighted  # layer 1 guesses its retrieval head from the view
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-4 if dtype == torch.float32
                               else 5e-3)  # fmt: skip
    full = model(input_ids=torch.cat([context, question], 1)).logits[:, -1].float()
    assert not torch.allclose(logits[0], full, rtol=1e-4, atol=1e-2)  # compression shows


@torch.no_grad()
@pytest.mark.parametrize("kv", ["razor", "adakv"])
def test_a_ragged_prompt_chunk_in_pieces_is_the_chunk_whole(monkeypatch, kv):
    """A prompt chunk over compressed heads builds its per-head mask a few rows at a time
    (`CHUNK_MASK_ELEMENTS`), so a second turn's long chunk over a long cache does not hold a
    (B, H_q, n, L) mask: one row a piece gives the logits of the chunk at once."""
    from attnsieve.integrations import paged

    model = build("llama")
    context, question = prompt(batch=2, length=80), prompt(batch=2, length=7)
    policies = {
        "razor": {"method": "razor", "budget": 16, "retrieval_heads": {0: [1]}},
        "adakv": {"method": "adakv", "budget": 24},
    }
    handle = patch(model, AttentionConfig(prefill="dense", kv=policies[kv]))
    logits = []
    with handle:
        for elements in (paged.CHUNK_MASK_ELEMENTS, 1):
            monkeypatch.setattr(paged, "CHUNK_MASK_ELEMENTS", elements)
            cache = handle.new_cache()
            model(input_ids=context, past_key_values=cache, use_cache=True)
            handle.compress()
            assert handle.session.ragged(0)
            logits.append(model(input_ids=question, past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_razor_and_quest_compose_on_one_cache():
    """RazorAttention compresses, Quest selects over the ragged heads, reading the compensation
    tokens' pages; generation runs."""
    model = build("llama")
    config = AttentionConfig(
        prefill="dense",
        kv={"method": "razor", "budget": 32, "retrieval_heads": {0: [1]}},
        decode={"method": "quest", "budget_tokens": 32, "dense_layers": 0},
    )
    handle = patch(model, config)
    with handle:
        tokens = greedy(model, prompt(length=96), new=4)
    assert tokens.shape == (1, 4)
    paged = handle.session.paged
    assert paged.layers[0].weighted_pages.tolist() == [[[0], [-1]]]  # head 1 keeps everything
    assert paged.page_view(1).weighted_pages is not None


@torch.no_grad()
def test_selectors_see_the_model_softmax_scale(monkeypatch):
    """TidalDecode ranks by probabilities summed over a GQA group: the temperature matters, so a
    selector's view carries the attention's own scale."""
    from attnsieve.methods.decode.tidaldecode import TidalDecode

    seen = []
    select = TidalDecode.select

    def spy(self, q, view, step):
        seen.append(view.scale)
        return select(self, q, view, step)

    monkeypatch.setattr(TidalDecode, "select", spy)
    model = build("llama")
    tidal = {"method": "tidaldecode", "ratio": 0.5, "select_layer": 0}  # the model has 2 layers
    config = AttentionConfig(prefill="dense", decode=tidal)
    with patch(model, config):
        greedy(model, prompt(), new=2)
    scaling = model.model.layers[0].self_attn.scaling
    assert seen and all(s == scaling for s in seen)


@pytest.mark.parametrize("chunk_size", [1, 8, 1000])
@pytest.mark.parametrize(
    "kv, interval",
    [({"method": "snapkv", "budget": 64}, 0), ({"method": "snapkv", "ratio": 0.72}, 4)],
    ids=["budget", "ratio-periodic"],
)
def test_prompt_chunks_of_one_token_are_prompt(monkeypatch, chunk_size, kv, interval):
    """A prompt chunk of one token read as a decode step: with chunks of 1 the policy never ran
    at the prompt's end (every head held all 89 tokens and the answer's), and with chunks of 8
    (89 = 11 x 8 + 1) it ran one token early, before the last prompt token arrived. With
    ``kv_interval`` each one-token chunk was also counted as a step: periodic passes ran inside
    the prompt, a ratio's budget fixed from its first 4 tokens (3 kept, not 64), and the decode
    selector chose pages for prompt tokens. Every chunk size now compresses the whole prompt
    once, at its end, and the selector runs at decode steps only."""
    from attnsieve.integrations.generate import generate
    from attnsieve.methods.decode import Quest

    calls = []
    select = Quest.select
    monkeypatch.setattr(Quest, "select", lambda *a, **k: calls.append(1) or select(*a, **k))
    model = build("llama")
    ids = prompt(length=89)
    quest = {"method": "quest", "budget_tokens": 64, "dense_layers": 0}
    config = AttentionConfig(prefill="dense", kv=kv, decode=quest, kv_interval=interval)
    handle = patch(model, config)
    with handle:
        cache = handle.new_cache()
        tokens, *_ = generate(model, ids, 3, chunk_size, set(), handle.stats, cache)
        kept = handle.session.paged.head_tokens(0)
    # 64 kept at the prompt's end (0.72 x 89 rounds to 64), then the first token's and two
    # decode steps' K/V
    assert kept.tolist() == [[64 + 2] * kept.shape[1]], chunk_size
    assert len(tokens) == 3
    assert len(calls) == 2 * 2  # two decode steps, two layers


@pytest.mark.parametrize(
    "change, match",
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"chunk_size": 0}, "chunk_size"),
     ({"chunk_size": -4}, "chunk_size"), ({"context_length": 0}, "context_length"),
     ({"context_length": 100}, "context_length: expected 1 to 40"), ({"batch": 2}, "input_ids")],
)  # fmt: skip
def test_generate_names_a_bad_argument(change, match):
    """max_new_tokens 0 returned a token, chunk_size 0 or -4 failed in range() or with an
    UnboundLocalError, a context past the prompt deep in a reshape, and context 0 never
    compressed."""
    from attnsieve.integrations.generate import generate
    from attnsieve.integrations.handle import PatchStats

    model = build("llama")
    args = {"max_new_tokens": 3, "chunk_size": 8, "context_length": None, "batch": 1}
    args.update(change)
    ids = prompt(batch=args.pop("batch"), length=40)
    with pytest.raises(ValueError, match=match):
        generate(model, ids, args["max_new_tokens"], args["chunk_size"], set(), PatchStats(2),
                 context_length=args["context_length"])  # fmt: skip


@torch.no_grad()
def test_a_window_or_softcap_layer_warns_that_it_keeps_every_token():
    """Sliding-window and soft-capped layers keep every token and skip the KV policy and the
    decode selector: that was silent (a budget of 8 held 40 tokens)."""
    config = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 8, "window": 4})
    ids = prompt(length=40)
    for arch, warns in (("mistral_swa", True), ("llama", False)):
        model = build(arch)
        handle = patch(model, config)
        with handle, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(input_ids=ids, past_key_values=handle.new_cache(), use_cache=True)
        said = [w for w in caught if "keeps every token, without its KV policy" in str(w.message)]
        assert len(said) == warns, arch  # once, not once per layer
