"""AttnsieveCache: transformers' Cache interface over the paged cache (tiny random Llama, CPU)."""

import inspect
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnsieve.cache import Cache  # noqa: E402
from attnsieve.integrations import AttentionConfig, patch  # noqa: E402
from attnsieve.integrations.hf_cache import AttnsieveCache  # noqa: E402
from attnsieve.views import Kept  # noqa: E402

# the tiny Llama of tests/test_integration_transformers.py, GQA (4 query heads, 2 KV heads)
COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    max_position_embeddings=256,
    initializer_range=0.1,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    head_dim=16,
    num_attention_heads=4,
    num_key_value_heads=2,
)
PROMPT, NEW = 30, 20


def read_by_attnsieve(cache, ragged=()):
    """Stand in for a patched model's live session, whose attention reads the pages at a decode
    step (a cache without one refuses decode steps) and in prompt chunks on the layers it reads
    as ragged."""
    cache.reader = SimpleNamespace(
        ended=False, restart=lambda: None, ragged=set(ragged).__contains__
    )
    return cache


def build(layers: int = 2, attn: str = "sdpa") -> torch.nn.Module:
    config = transformers.LlamaConfig(**COMMON, num_hidden_layers=layers)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn).eval()


def cache_arg(model, cache) -> dict:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (5.17 knows only the old)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


def prompt(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 128, (batch, PROMPT), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if batch > 1:  # left padding: mask sizes must still follow the positions
        ids[1, :7], mask[1, :7] = 0, 0
    return ids, mask


def kept_all_heads(keep: list[int], batch: int = 1, heads: int = 2) -> Kept:
    idx = torch.tensor(keep, dtype=torch.int32).expand(batch, heads, -1).contiguous()
    return Kept(idx, torch.full((batch, heads), len(keep), dtype=torch.int32))


@pytest.mark.parametrize("batch", [1, 2])
@torch.no_grad()
def test_generate_matches_stock_transformers(batch):
    model = build()
    ids, mask = prompt(batch)
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    want = model.generate(input_ids=ids, attention_mask=mask, **kw)
    cache = AttnsieveCache(2, page_size=8, materialize=True)
    got = model.generate(input_ids=ids, attention_mask=mask, **kw, **cache_arg(model, cache))
    assert torch.equal(got, want)
    # the last generated token is never fed back
    assert cache.get_seq_length() == PROMPT + NEW - 1
    assert (cache.cache.head_tokens(1) == PROMPT + NEW - 1).all()


def test_update_returns_what_the_attention_reads():
    cache = read_by_attnsieve(AttnsieveCache(2, page_size=8))
    assert not cache.is_initialized
    k, v = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    out = cache.update(k, v, 0)
    assert out[0] is k and out[1] is v  # prefill: the prompt's own K/V
    assert cache.is_initialized  # as DynamicCache after its first update
    assert isinstance(cache.cache, Cache) and cache.cache.head_dim == 16
    k1, v1 = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
    assert cache.update(k1, v1, 0)[0] is k1  # decode: the new token only
    cache.materialize = True
    k2, v2 = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
    keys, values = cache.update(k2, v2, 0)  # decode, materialised: everything cached
    assert torch.equal(keys, torch.cat([k, k1, k2], 2))
    assert torch.equal(values, torch.cat([v, v1, v2], 2))
    # chunked prefill: a second multi-token call reads the cached tokens, then its own
    keys, values = cache.update(k * 2, v * 2, 0)
    assert torch.equal(keys, torch.cat([k, k1, k2, 2 * k], 2))
    assert torch.equal(values, torch.cat([v, v1, v2, 2 * v], 2))
    assert cache.get_seq_length(0) == 12 and cache.get_seq_length(1) == 0
    assert cache.get_mask_sizes(1, 0) == (13, 0)
    assert len(cache) == 2
    cache.reset()
    assert cache.get_seq_length(0) == 0 and cache.cache.memory_bytes() == 0


def test_on_prefill_end_runs_once_per_layer_before_its_first_decode_token():
    cache = read_by_attnsieve(AttnsieveCache(2, page_size=8))
    calls = []
    cache.on_prefill_end = lambda layer: calls.append((layer, cache.cache.head_tokens(layer)))
    x = torch.randn(1, 2, 6, 16)
    for layer in (0, 1):
        cache.update(x, x, layer)  # chunked prefill: two multi-token calls
        cache.update(x, x, layer)
    assert calls == []
    for _ in range(3):
        for layer in (0, 1):
            cache.update(x[:, :, :1], x[:, :, :1], layer)
    assert [c[0] for c in calls] == [0, 1]
    assert all((c[1] == 12).all() for c in calls)  # the whole prompt, no decode token yet


@torch.no_grad()
def test_eviction_keeps_absolute_positions():
    """One layer: after evicting tokens 4..11 of the prompt, the next token's logits (attnsieve's
    attention over the kept pages) equal stock attention with those tokens masked out: RoPE
    positions and mask sizes stay absolute."""
    model = build(layers=1)
    ids = torch.randint(3, 128, (1, 24), generator=torch.Generator().manual_seed(2))
    nxt = torch.tensor([[5]])
    handle = patch(model, AttentionConfig(prefill="dense", paged_cache=True))
    with handle:
        cache = handle.new_cache()
        model(input_ids=ids, **cache_arg(model, cache))
        cache.cache.compact(0, kept_all_heads([0, 1, 2, 3, *range(12, 24)]))
        assert cache.get_seq_length() == 24 and cache.get_mask_sizes(1, 0) == (25, 0)
        got = model(input_ids=nxt, **cache_arg(model, cache)).logits[:, -1]
    assert (cache.cache.head_tokens(0) == 17).all()
    full, mask = torch.cat([ids, nxt], 1), torch.ones(1, 25, dtype=torch.long)
    mask[:, 4:12] = 0
    want = model(input_ids=full, attention_mask=mask).logits[:, -1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    dense = model(input_ids=full).logits[:, -1]
    assert (dense - want).abs().max() > 1e-2  # the eviction really changed the answer


@pytest.mark.parametrize("attn, batch", [("sdpa", 1), ("eager", 1), ("sdpa", 2)])
@torch.no_grad()
def test_plain_attention_refuses_an_evicted_layer(attn, batch):
    """transformers masks plain attention's keys by position, which the kept keys no longer
    match: a decode step on a materialised cache after an eviction failed inside transformers
    with a shape mismatch (eager attention, a padded batch) and, on SDPA without padding, read
    keys that only the absence of a mask made right. It is refused, changing nothing."""
    model = build(layers=1, attn=attn)
    ids, mask = prompt(batch)
    cache = AttnsieveCache(1, page_size=8, materialize=True)
    model(input_ids=ids, attention_mask=mask, **cache_arg(model, cache))
    cache.cache.compact(0, kept_all_heads([0, 1, 2, 3, *range(12, PROMPT)], batch))
    held = cache.cache.gather(0)
    step = {"input_ids": torch.full((batch, 1), 5), **cache_arg(model, cache)}
    step["attention_mask"] = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    with pytest.raises(ValueError, match=f"^layer 0: its heads hold 22 of the {PROMPT} positions"):
        model(**step)
    assert all(map(torch.equal, cache.cache.gather(0), held))
    assert cache.get_seq_length() == PROMPT


def test_a_prompt_chunk_after_eviction_is_refused_on_plain_attention():
    """Plain attention masks by position: after an eviction it cannot serve a prompt chunk."""
    model = build(layers=1)
    ids = torch.randint(3, 128, (1, 24), generator=torch.Generator().manual_seed(2))
    cache = AttnsieveCache(1, page_size=8, materialize=True)
    model(input_ids=ids, **cache_arg(model, cache))
    cache.cache.compact(0, kept_all_heads([0, 1, 2, 3, *range(12, 24)]))
    with pytest.raises(ValueError, match="its heads hold 16 of the 24 positions"):
        model(input_ids=torch.tensor([[5, 6, 7]]), **cache_arg(model, cache))


def test_ragged_heads_refuse_a_dense_read():
    cache = AttnsieveCache(1, page_size=8, materialize=True)
    x = torch.randn(1, 2, 10, 16)
    cache.update(x, x, 0)
    idx = torch.tensor([[[0, 1, 2], [5, -1, -1]]], dtype=torch.int32)
    cache.cache.compact(0, Kept(idx, torch.tensor([[3, 1]], dtype=torch.int32)))
    with pytest.raises(ValueError, match="its heads hold 1 to 3 of the 10 positions"):
        cache.update(x[:, :, :1], x[:, :, :1], 0)
    assert cache.cache.head_tokens(0).tolist() == [[3, 1]]  # the refused token is not appended
    cache.materialize = False  # attnsieve's decode attention reads ragged pages itself
    read_by_attnsieve(cache)
    assert cache.update(x[:, :, :1], x[:, :, :1], 0)[0].shape == (1, 2, 1, 16)
    assert cache.get_mask_sizes(1, 0) == (12, 0)  # positions, not the 4 / 2 tokens held
    assert cache.cache.head_tokens(0).tolist() == [[4, 2]]


def test_unsupported_cache_operations_raise():
    cache = AttnsieveCache(1)
    cache.crop(0)  # what generate calls between steps on some devices: a no-op
    for call in (
        lambda: cache.crop(-1),
        lambda: cache.reorder_cache(torch.tensor([0])),
        lambda: cache.batch_repeat_interleave(2),
        lambda: cache.batch_select_indices(torch.tensor([0])),
    ):
        with pytest.raises(NotImplementedError, match="AttnsieveCache"):
            call()


BAD = {
    "num_layers": (lambda: AttnsieveCache(0), ValueError, "num_layers"),
    "page_size": (lambda: AttnsieveCache(1, page_size=12), ValueError, "page_size"),
    "kv_dtype": (lambda: AttnsieveCache(1, kv_dtype="int8"), ValueError, "kv_dtype"),
    "materialize": (lambda: AttnsieveCache(1, materialize=1), TypeError, "materialize"),
    "cache_type": (lambda: AttnsieveCache(1, cache={}), TypeError, "cache"),
    "cache_layers": (
        lambda: AttnsieveCache(1, cache=Cache(2, 1, 1, 16, dtype=torch.float32, device="cpu")),
        ValueError,
        "cache",
    ),
    "cache_page_size": (
        lambda: AttnsieveCache(
            1, cache=Cache(1, 1, 1, 16, page_size=32, dtype=torch.float32, device="cpu")
        ),
        ValueError,
        r"^page_size, kv_dtype: the given cache has 32, None; got 16, None$",
    ),
    "cache_kv_dtype": (
        lambda: AttnsieveCache(
            1, kv_dtype="fp8", cache=Cache(1, 1, 1, 16, dtype=torch.float32, device="cpu")
        ),
        ValueError,
        r"^page_size, kv_dtype: the given cache has 16, None; got 16, 'fp8'$",
    ),
    "layer_idx": (
        lambda: AttnsieveCache(1).update(*[torch.randn(1, 1, 2, 16)] * 2, 1),
        ValueError,
        "layer",
    ),  # fmt: skip
    "key_states": (
        lambda: AttnsieveCache(1).update(*[torch.randn(1, 2, 16)] * 2, 0),
        ValueError,
        "key_states",
    ),  # fmt: skip
    "key_states_dtype": (
        lambda: AttnsieveCache(1).update(*[torch.randn(1, 1, 2, 16, dtype=torch.float64)] * 2, 0),
        TypeError,
        "^key_states",
    ),
    "value_states": (
        lambda: AttnsieveCache(1).update(torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 8), 0),
        ValueError,
        "v:",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_input_names_the_argument(case):
    call, exc, text = BAD[case]
    with pytest.raises(exc, match=text):
        call()


def test_dtype_is_fixed_by_the_first_update():
    cache = AttnsieveCache(1)
    cache.update(*[torch.randn(1, 1, 2, 16)] * 2, 0)
    with pytest.raises(TypeError, match="k: expected the cache's dtype"):
        cache.update(*[torch.randn(1, 1, 2, 16, dtype=torch.float64)] * 2, 0)


def test_refused_calls_change_nothing_and_a_prompt_chunk_after_eviction_needs_a_reader():
    """Without attnsieve's attention reading the pages, a prompt chunk after an eviction returned
    its own K/V only (plain attention saw the chunk alone); a refused decode step had appended
    its token, which a retry then appended twice."""
    cache = AttnsieveCache(1, page_size=8)
    x = torch.randn(1, 2, 10, 16)
    cache.update(x, x, 0)
    with pytest.raises(ValueError, match="a decode step on a paged cache that no attnsieve"):
        cache.update(x[:, :, :1], x[:, :, :1], 0)
    assert cache.cache.head_tokens(0).tolist() == [[10, 10]]
    idx = torch.tensor([[[0, 1, 2], [5, -1, -1]]], dtype=torch.int32)
    cache.cache.compact(0, Kept(idx, torch.tensor([[3, 1]], dtype=torch.int32)))
    with pytest.raises(ValueError, match="a prompt chunk after an eviction on a paged cache"):
        cache.update(x[:, :, :4], x[:, :, :4], 0)
    assert cache.cache.head_tokens(0).tolist() == [[3, 1]]
    read_by_attnsieve(cache)  # attnsieve's attention reads the ragged heads from the pages
    assert cache.update(x[:, :, :4], x[:, :, :4], 0)[0].shape == (1, 2, 4, 16)
    assert cache.cache.head_tokens(0).tolist() == [[7, 5]]


def test_update_keeps_no_returned_keys_alive():
    """The keys an update returned (a whole prompt's, per layer) are not held after the call."""
    import gc
    import weakref

    cache = AttnsieveCache(1, page_size=8)
    k = torch.randn(1, 2, 50, 16)
    cache.update(k, k.clone(), 0)
    gone = weakref.ref(k)
    del k
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("kv_dtype", [None, "fp8"])
def test_prompt_chunks_gather_the_cache_only_for_plain_attention(kv_dtype, monkeypatch):
    """A prompt chunk returns the cached K/V (gathered once, before its append: FP8 quantises the
    cache, never the chunk) then its own, where plain attention reads them; where attnsieve's
    attention reads the pages itself (a one-token chunk, a layer the session reads as ragged,
    even one that kept every token), or after an eviction, it gathers nothing: it gathered there,
    for keys that no attention read (the session's chunk attention gathers the pages again)."""
    gathers, gather = [], Cache.gather

    def counted(self, layer):
        gathers.append(layer)
        return gather(self, layer)

    monkeypatch.setattr(Cache, "gather", counted)
    cache = read_by_attnsieve(AttnsieveCache(1, page_size=8, kv_dtype=kv_dtype))
    x, y, z = (torch.randn(1, 2, n, 16) for n in (10, 5, 4))
    assert cache.update(x, -x, 0)[0] is x and gathers == []  # nothing cached: nothing read
    held = gather(cache.cache, 0)
    keys, values = cache.update(y, -y, 0)
    assert gathers == [0]
    assert torch.equal(keys, torch.cat([held[0], y], 2))
    assert torch.equal(values, torch.cat([held[1], -y], 2))
    if kv_dtype == "fp8":
        assert not torch.equal(held[0], x)  # the cached part is the quantised one
    cache.prompt = True  # one-token chunks: attnsieve's attention reads the pages
    one = z[:, :, :1]
    keys, values = cache.update(one, one_v := -one, 0)
    assert keys is one and values is one_v and gathers == [0]
    cache.materialize = True  # plain attention: every cached K/V, then the token's
    held = gather(cache.cache, 0)
    keys, values = cache.update(one, -one, 0)
    assert gathers == [0, 0] and torch.equal(values, torch.cat([held[1], -one], 2))
    cache.materialize, cache.prompt = False, False
    n = int(cache.cache.head_tokens(0).max())
    every = Kept(torch.arange(n, dtype=torch.int32).repeat(1, 2, 1), torch.full((1, 2), n).int())
    cache.cache.compact(0, every)
    read_by_attnsieve(cache, ragged=[0])  # compressed, if to every token: the session reads it
    assert cache.update(z, -z, 0)[0] is z and gathers == [0, 0]
    idx = torch.tensor([[[0, 1, 2], [5, 6, 7]]], dtype=torch.int32)
    cache.cache.compact(0, Kept(idx, torch.tensor([[3, 3]], dtype=torch.int32)))  # even heads
    read_by_attnsieve(cache)  # evicted, though not read as ragged: no position matches them
    keys, values = cache.update(z, z_v := -z, 0)
    assert keys is z and values is z_v and gathers == [0, 0]
    cache.reader = None  # no attnsieve attention reads the pages: refused, without a gather
    with pytest.raises(ValueError, match="a prompt chunk after an eviction"):
        cache.update(z, -z, 0)
    assert gathers == [0, 0] and cache.cache.head_tokens(0).tolist() == [[7, 7]]


def test_a_refused_first_update_builds_no_cache():
    """The paged cache was built from the first call's keys before its values were checked: a
    refused call left it built, of that call's batch, heads and dtype."""
    cache = AttnsieveCache(1)
    with pytest.raises(ValueError, match="^v: expected shape"):
        cache.update(torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 8), 0)
    assert cache.cache is None and not cache.is_initialized
