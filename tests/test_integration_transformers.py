"""attnsieve.patch on tiny random models of every supported transformers architecture (CPU)."""

import copy
import inspect
import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnsieve.integrations import AttentionConfig, patch  # noqa: E402
from attnsieve.integrations import transformers as hf  # noqa: E402
from attnsieve.kernels import INTERPRET  # noqa: E402
from attnsieve.methods import PerHeadPlanner  # noqa: E402

PROMPT, NEW = 40, 8  # a 40-token prompt is 3 blocks of 16: the sparse path really runs
BLOCKS = {"block_q": 16, "block_k": 16}
DENSE = AttentionConfig(prefill={"method": "dense", **BLOCKS}, min_prefill_length=16)
# a window covering the whole prompt: a streaming layout that is in fact dense
FULL = AttentionConfig(
    prefill={"method": "streaming", "sink_tokens": 0, "window_tokens": 512, **BLOCKS},
    min_prefill_length=16,
)
# one sink block + the diagonal block: truly sparse
SPARSE = AttentionConfig(
    prefill={"method": "streaming", "sink_tokens": 1, "window_tokens": 1, **BLOCKS},
    min_prefill_length=16,
)
PAGED = AttentionConfig(prefill="dense", kv={"method": "snapkv", "budget": 10000})
COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=256,
    initializer_range=0.1,  # peakier attention than 0.02, so sparse plans visibly change outputs
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
WINDOW = {"sliding_window": 24}  # shorter than the prompt: those layers must fall back
GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 16, **WINDOW}
# name: (config class, model class, extra config, fallback reason per layer, baseline attention)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"head_dim": 16}, [None, None], "sdpa"),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {"sliding_window": None},
        [None, None],
        "sdpa",
    ),
    "mistral_swa": ("MistralConfig", "MistralForCausalLM", WINDOW, ["sliding_window"] * 2, "sdpa"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, [None, None], "sdpa"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32}, [None, None], "sdpa"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", GEMMA, ["softcap"] * 2, "eager"),
    "gemma2_nocap": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**GEMMA, "attn_logit_softcapping": None},
        ["sliding_window", None],
        "eager",  # Gemma 2 has no sdpa path in transformers
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**GEMMA, "layer_types": ["sliding_attention", "full_attention"]},
        ["sliding_window", None],
        "sdpa",
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}, [None, None], "sdpa"),
}


def build(arch: str) -> torch.nn.Module:
    config_cls, model_cls, extra, _, attn = ARCHS[arch]
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1} if arch == "qwen3" else {}
    heads = heads or {"num_attention_heads": 4, "num_key_value_heads": 2}
    config = getattr(transformers, config_cls)(**COMMON, **heads, **extra)
    torch.manual_seed(0)
    return getattr(transformers, model_cls)._from_config(config, attn_implementation=attn).eval()


def prompt(batch: int = 1, length: int = PROMPT) -> torch.Tensor:
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def run(model, ids, mask=None):
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        pad_token_id=0,
    )
    return logits, out[:, ids.shape[1] :]


def attnsieve_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "attnsieve" in str(w.message)]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_matches_unpatched_and_restores(arch):
    model = build(arch)
    fallback = ARCHS[arch][3]
    ids = prompt()
    base_logits, base_tokens = run(model, ids)
    previous = model.config._attn_implementation

    reasons = {r for r in fallback if r is not None}
    for config in (DENSE, FULL, SPARSE):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            with patch(model, config) as stats:
                assert model.config._attn_implementation == "attnsieve"
                logits, tokens = run(model, ids)
        # one warning per reason, not one per layer or call
        assert len(attnsieve_warnings(record)) == len(reasons)
        assert stats.fallback_per_layer == fallback
        if config is not SPARSE:
            torch.testing.assert_close(logits, base_logits, rtol=1e-4, atol=1e-5)
            assert torch.equal(tokens, base_tokens)
            assert stats.density_per_layer == [1.0, 1.0]
    sparse_logits = logits
    assert model.config._attn_implementation == previous
    for density, reason in zip(stats.density_per_layer, fallback, strict=True):
        assert (density == 1.0) if reason else (density < 0.9)
    if any(r is None for r in fallback):  # some layer ran the sparse plan: outputs must move
        assert (sparse_logits - base_logits).abs().max() > 1e-3
    else:
        torch.testing.assert_close(sparse_logits, base_logits, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base_logits)  # unpatched path again


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3"])
def test_left_padded_batch_falls_back(arch):
    model = build(arch)
    ids = prompt(batch=2)
    mask = torch.ones_like(ids)
    mask[1, :12] = 0
    ids = ids.masked_fill(mask == 0, 0)
    base_logits, base_tokens = run(model, ids, mask)
    with pytest.warns(UserWarning, match="attnsieve"), patch(model, SPARSE) as stats:
        logits, tokens = run(model, ids, mask)
    assert torch.equal(tokens, base_tokens)
    keep = mask.bool()  # logits at padded positions are meaningless either way
    torch.testing.assert_close(logits[keep], base_logits[keep], rtol=1e-4, atol=1e-5)
    assert all(r is not None for r in stats.fallback_per_layer)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_mask_changed_in_place_is_checked_again(mode):
    """The verdict on a 4D mask was cached on the tensor's identity: a caller that keeps one mask
    buffer and changes it in place (two packed documents now) got the plain causal layout, the
    mask unread. An inference tensor has no version counter: its verdict holds one forward."""
    model, n = build("llama"), PROMPT
    ids = prompt(length=n)
    with mode():
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None].clone()
        with patch(model, FULL) as stats:
            model(input_ids=ids, attention_mask=mask)
            assert stats.fallback_per_layer == [None, None]
            mask[..., n // 2 :, : n // 2] = False
            with pytest.warns(UserWarning, match="attention_mask has padding"):
                patched = model(input_ids=ids, attention_mask=mask).logits
            assert stats.fallback_per_layer == ["mask", "mask"]
        torch.testing.assert_close(patched, model(input_ids=ids, attention_mask=mask).logits)


@torch.no_grad()
def test_chunked_prefill_uses_bottom_right_alignment():
    model = build("llama")
    ids = prompt()
    base = model(input_ids=ids).logits
    with patch(model, FULL) as stats:
        first = model(input_ids=ids[:, :24], use_cache=True)
        second = model(input_ids=ids[:, 24:], past_key_values=first.past_key_values)
    assert stats.fallback_per_layer == [None, None]  # the 16-token chunk ran the planner (M > N)
    torch.testing.assert_close(second.logits, base[:, 24:], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_a_float64_model_falls_back_to_dense():
    """The kernels take float16, bfloat16 and float32: a float64 model raised a TypeError from
    attention (before that, its attention ran in float32, silently)."""
    model = build("llama").double()
    base = model(input_ids=prompt()).logits
    with pytest.warns(UserWarning, match="float64 attention"), patch(model, SPARSE) as stats:
        logits = model(input_ids=prompt()).logits
    assert stats.fallback_per_layer == ["dtype", "dtype"]
    torch.testing.assert_close(logits, base)


@pytest.mark.skipif(not INTERPRET, reason="Triton on CPU tensors: TRITON_INTERPRET=1 only")
def test_a_forward_autograd_records_falls_back_from_the_kernels():
    """The Triton kernels compute no gradient: a training forward got none through attention,
    silently. It runs dense, and its gradients are the stock model's."""
    model = build("llama").half()  # the kernels' dtypes
    ids = prompt()
    model(input_ids=ids).logits.sum().backward()
    stock = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    config = AttentionConfig(prefill="streaming", min_prefill_length=16, backend="triton")
    with pytest.warns(UserWarning, match="autograd records"), patch(model, config, cost=None) as s:
        model(input_ids=ids).logits.sum().backward()
    assert s.fallback_per_layer == ["grad", "grad"]
    for got, want in zip((p.grad for p in model.parameters()), stock, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad(), patch(model, config, cost=None) as s:
        model(input_ids=ids)
    assert s.fallback_per_layer == [None, None]  # without autograd: the kernels


def test_keys_that_require_a_gradient_fall_back_with_a_frozen_query():
    """A trainable k_proj (e.g. a LoRA) under a frozen query: only the keys of the first layer
    require a gradient, and its attention raised in the kernels instead of running dense."""
    model = build("llama").half()
    model.requires_grad_(False)
    k_proj = model.model.layers[0].self_attn.k_proj.weight.requires_grad_()
    ids = prompt()
    model(input_ids=ids).logits.sum().backward()
    stock = k_proj.grad.clone()
    k_proj.grad = None
    config = AttentionConfig(prefill="streaming", min_prefill_length=16, backend="triton")
    with pytest.warns(UserWarning, match="autograd records"), patch(model, config, cost=None) as s:
        model(input_ids=ids).logits.sum().backward()
    assert s.fallback_per_layer == ["grad", "grad"]
    torch.testing.assert_close(k_proj.grad, stock)


def test_dropout_and_bidirectional_layers_fall_back():
    model = build("llama")
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    with pytest.warns(UserWarning, match="dropout"), patch(model.train(), SPARSE) as stats:
        model(input_ids=prompt())
    assert stats.fallback_per_layer == ["dropout", "dropout"]

    config = transformers.Gemma3TextConfig(**COMMON, **GEMMA, use_bidirectional_attention=True)
    model = transformers.Gemma3ForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():
        base = model(input_ids=prompt()).logits
        with pytest.warns(UserWarning, match="non-causal"), patch(model, SPARSE) as stats:
            logits = model(input_ids=prompt()).logits
    assert stats.fallback_per_layer == ["non_causal", "non_causal"]
    torch.testing.assert_close(logits, base, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_output_attentions_warns_once_that_none_come_back():
    model = build("llama")
    with patch(model, SPARSE), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(input_ids=prompt(), output_attentions=True)
        model(input_ids=prompt(), output_attentions=True)
    said = [w for w in caught if "output_attentions" in str(w.message)]
    assert len(said) == 1 and not any(a is not None for a in out.attentions or ())


@torch.no_grad()
def test_short_prompts_and_decode_stay_dense():
    """A prompt below min_prefill_length runs dense, and the stats say so: they showed the last
    planned prompt's densities, with no fallback, after it."""
    model = build("llama")
    ids = prompt(length=12)
    base = model(input_ids=ids).logits
    with patch(model, SPARSE) as stats:
        model(input_ids=prompt(length=SPARSE.min_prefill_length + 40))
        assert stats.fallback_per_layer == [None, None] and stats.density_per_layer[0] < 1
        assert torch.allclose(model(input_ids=ids).logits, base, rtol=1e-4, atol=1e-5)
        model(input_ids=ids[:, :1])  # one token: a decode step, not a prefill
    assert stats.density_per_layer == [1.0, 1.0] and stats.fallback_per_layer == ["short"] * 2


@torch.no_grad()
def test_dense_layers_run_transformers_own_sdpa(monkeypatch):
    """A layer that runs a prompt dense (a short prompt, a cost fallback) makes the stock "sdpa"
    function's SDPA call (logits bit-identical), itself where the call is plain and through the
    function where it is not (a padding mask); decode steps and soft-capping (which that function
    lacks) reach neither."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from attnsieve.integrations.cost import CostModel

    calls, plain = [], []

    def spy(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa_attention_forward(module, *args, **kwargs)

    def plain_spy(*args):
        plain.append(1)
        return prompt_sdpa(*args)

    prompt_sdpa = hf._prompt_sdpa
    monkeypatch.setattr(hf, "sdpa_attention_forward", spy)
    monkeypatch.setattr(hf, "_prompt_sdpa", plain_spy)
    model = build("llama")
    ids = prompt(length=48)
    base = model(input_ids=ids).logits
    with patch(model, AttentionConfig(prefill="streaming", min_prefill_length=64)):
        torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=0, atol=0)
        assert plain == [1, 1] and calls == []  # one per layer
        # a decode step runs attnsieve's dense attention (native GQA), not the stock function
        past = model(input_ids=ids, use_cache=True).past_key_values
        step = model(input_ids=ids[:, :1], past_key_values=past).logits
        assert plain == [1] * 4 and calls == []
        padded = torch.ones(2, 48, dtype=torch.long)
        padded[0, :5] = 0
        batch = ids.expand(2, -1)
        masked = model(input_ids=batch, attention_mask=padded).logits
        assert calls == [0, 1]
    past = model(input_ids=ids, use_cache=True).past_key_values
    torch.testing.assert_close(step, model(input_ids=ids[:, :1], past_key_values=past).logits)
    torch.testing.assert_close(masked, model(input_ids=batch, attention_mask=padded).logits)
    plain.clear()
    costed = AttentionConfig(prefill="streaming", min_prefill_length=16, backend="triton")
    with patch(model, costed, cost=CostModel(dense_tflops={16: 1e6})) as stats:  # dense always wins
        torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=0, atol=0)
    assert plain == [1, 1] and stats.fallback_per_layer == ["cost", "cost"]
    plain.clear()
    calls.clear()
    gemma = build("gemma2")
    gemma_config = AttentionConfig(prefill="streaming", min_prefill_length=16)
    with patch(gemma, gemma_config), pytest.warns(UserWarning, match="soft-capping"):
        gemma(input_ids=ids)
    assert calls == [] and plain == []  # logit soft-capping: attnsieve's own dense attention


@pytest.mark.parametrize(
    "heads, groups, keys, causal, head_dim",
    [(9, 3, 40, True, 64), (4, 1, 40, True, 32), (6, 2, 57, True, 16), (6, 2, 40, False, 16)],
)
def test_plain_prompt_sdpa_is_transformers_sdpa_bit_for_bit(
    heads, groups, keys, causal, head_dim, monkeypatch
):
    """A dense prompt layer equals transformers' "sdpa" function exactly, and is its one SDPA call
    where the call is plain: GQA or not, empty static-cache slots past the prompt (keys > 40
    queries), bidirectional layers; a mask or a position bias goes through the function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = causal, groups
    q = torch.randn(2, heads, 40, head_dim)
    k, v = torch.randn(2, 2, heads // groups, keys, head_dim).unbind(0)
    stock = sdpa_attention_forward(module, q, k, v, None, scaling=0.3, is_causal=causal)[0]
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return sdpa_attention_forward(*args, **kwargs)

    monkeypatch.setattr(hf, "sdpa_attention_forward", spy)
    ours = hf._dense(module, q, k, v, None, 0.3, 0.0, None, causal, {})
    assert ours.is_contiguous() and calls == []
    torch.testing.assert_close(ours, stock, rtol=0, atol=0)
    mask = torch.ones(2, 1, 40, keys, dtype=torch.bool)
    hf._dense(module, q, k, v, mask, 0.3, 0.0, None, causal, {})
    bias = {"position_bias": torch.zeros(1, heads, 40, keys)}
    hf._dense(module, q, k, v, None, 0.3, 0.0, None, causal, bias)
    assert calls == [1, 1]


@torch.no_grad()
def test_static_cache_prompts_are_priced_on_the_prompt_keys():
    """Empty static-cache slots past the prompt are neither attended nor priced: the cost model
    sees the prompt's keys, so a prompt that runs dense with a growing cache runs dense there."""
    from attnsieve.integrations.cost import CostModel

    model = build("llama").to(torch.bfloat16)
    ids = prompt(length=64)
    config = AttentionConfig(
        prefill={"method": "streaming", "block_q": 16, "block_k": 16},
        min_prefill_length=16,
        backend="triton",
    )
    # planning (600 ms) pays only for far more dense work than a 64-token prompt's
    cost = CostModel(
        dense_tflops={16: 1e-6}, sparse_tflops={16: 1e-6}, plan_ms={"streaming": (600.0,) * 3},
        graph_plan_ms={}, call_ms=0.0,
    )  # fmt: skip
    for cache in (
        transformers.DynamicCache(config=model.config),
        transformers.StaticCache(config=model.config, max_cache_len=2048),
    ):
        with patch(model, config, cost=cost) as stats:
            model(input_ids=ids, past_key_values=cache, use_cache=True)
        assert stats.fallback_per_layer == ["cost", "cost"], type(cache).__name__


def test_cost_verdicts_are_kept_until_the_layer_density_changes():
    from attnsieve.integrations.cost import CostModel

    handle = hf.PatchHandle(AttentionConfig(prefill="streaming", backend="triton"), 2, CostModel())
    planner = handle.config.planner(0)
    asked = []
    last_density = handle.last_density  # read once a decision
    handle.last_density = lambda layer: asked.append(layer) or last_density(layer)

    def verdict(n: int, layer: int = 0) -> bool:
        q, k = torch.zeros(1, 4, n, 64), torch.zeros(1, 2, n, 64)
        return handle.cost_says_dense(planner, layer, q, k)

    assert verdict(4096) and verdict(4096) and asked == [0]  # dense at 4K, asked once
    assert verdict(4096, layer=1) and asked == [0, 1]  # per layer
    handle.keep_density(0, torch.tensor(0.01))  # layer 0 was planned: its verdicts are stale
    assert verdict(4096) and asked == [0, 1, 0]
    assert not verdict(131072) and not verdict(131072) and asked == [0, 1, 0, 0, 0]  # plans: asked

    class LandsOnSecondLook:  # a density copy in flight that lands while a verdict is reached
        looks = 0

        def query(self) -> bool:
            self.looks += 1
            return self.looks > 1

    handle._densities[1] = (torch.tensor(0.5), LandsOnSecondLook())
    handle._dense_verdicts.clear()
    asked.clear()
    assert verdict(4096, layer=1) and verdict(4096, layer=1) and verdict(4096, layer=1)
    assert asked == [1, 1]  # not kept while in flight; kept once the copy had landed before
    assert not hf.PatchHandle(AttentionConfig(), 2, None).cost_says_dense(planner, 0, *(
        torch.zeros(1, 4, 4096, 64), torch.zeros(1, 2, 4096, 64)))  # fmt: skip


def test_cost_decisions_price_eager_planning_under_autograd_and_stay_bounded():
    """A forward that autograd records plans eagerly (no graph replay), and the cost model
    prices it so; prompts of many lengths keep a bounded number of decisions."""
    from attnsieve.integrations import handle as handle_module
    from attnsieve.integrations.cost import CostModel

    cost = CostModel(
        plan_ms={"streaming": (100.0,)}, plan_lengths=(1 << 20,), call_ms=0.0,
        graph_plan_ms={"streaming": (0.0,)}, graph_plan_lengths=(1 << 20,),
    )  # fmt: skip
    config = AttentionConfig(prefill="streaming", backend="triton")
    handle = hf.PatchHandle(config, 1, cost, graphs=True)
    planner = config.planner(0)
    q, k = torch.zeros(1, 4, 4096, 64), torch.zeros(1, 2, 4096, 64)
    assert not handle.cost_says_dense(planner, 0, q, k)  # a replayed plan costs nothing: plans
    assert handle.cost_says_dense(planner, 0, q.requires_grad_(), k)  # 100 ms eagerly: dense
    kept = handle_module._SHAPES_KEPT
    for n in range(16, 16 + 2 * kept):
        handle.cost_says_dense(planner, 0, torch.zeros(1, 4, n, 64, requires_grad=True), k)
    assert 0 < len(handle._dense_verdicts[0]) <= kept and 0 < len(handle._break_even) <= kept


@torch.no_grad()
def test_register_attn_implementation_uses_default_config():
    base_model = build("llama")
    ids = prompt()
    base = base_model(input_ids=ids).logits
    hf.register()
    hf.set_default_config(SPARSE)
    try:
        model = transformers.LlamaForCausalLM._from_config(
            base_model.config, attn_implementation="attnsieve"
        )
        model.load_state_dict(base_model.state_dict())
        assert (model.eval()(input_ids=ids).logits - base).abs().max() > 1e-3
        stats = hf.default_stats()  # the unpatched model's layers record into the default's
        layers = model.config.num_hidden_layers
        assert stats.fallback_per_layer[:layers] == [None] * layers
        assert all(0 < d < 1 for d in stats.density_per_layer[:layers])
        with patch(model, DENSE):  # an explicit patch takes over from the default config
            torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=1e-4, atol=1e-5)
        assert model.config._attn_implementation == "attnsieve"
        assert (model(input_ids=ids).logits - base).abs().max() > 1e-3
    finally:
        hf.set_default_config(None)
    with pytest.raises(TypeError, match="config"):
        hf.set_default_config({"prefill": "dense"})
    with pytest.raises(ValueError, match="^config: .* which only patch"):  # was silently ignored
        hf.set_default_config(PAGED)


def test_planners_plan_at_the_model_s_softmax_scale(monkeypatch):
    """Gemma's query_pre_attn_scalar (here 64, head_dim 16) sets the scale the planner estimates
    attention at, as the kernel computes it."""
    from attnsieve.methods.prefill.base import Planner

    model = build("gemma3")
    model.config.query_pre_attn_scalar = 64
    for layer in model.model.layers:
        layer.self_attn.scaling = 64**-0.5
    scales = []
    plan = Planner.plan

    def spy(self, q, k, *, causal=True, scale=None):
        scales.append(scale)
        return plan(self, q, k, causal=causal, scale=scale)

    monkeypatch.setattr(Planner, "plan", spy)
    with patch(model, SPARSE), torch.no_grad():
        model(input_ids=prompt())
    assert scales == [64**-0.5]  # the full-attention layer (the sliding one falls back)


def test_per_layer_and_per_head_configs(tmp_path):
    model = build("llama")
    heads = [{"method": "dense", **BLOCKS}] * 2 + [
        {"method": "streaming", "sink_tokens": 0, "window_tokens": 1, **BLOCKS}
    ] * 2
    path = tmp_path / "calibrated.json"
    calibrated = {
        "metadata": {"model": "tiny"},
        "prefill": {"method": "dense", **BLOCKS},
        "layers": {"1": {"prefill": heads}},
        "min_prefill_length": 16,
    }
    path.write_text(json.dumps(calibrated))
    config = AttentionConfig.from_json(path)
    assert set(config.layers) == {1} and isinstance(config.planner(1), PerHeadPlanner)
    assert config.planner(1) is config.planner(1)  # built once
    assert AttentionConfig.from_json(config.to_dict()).to_dict() == config.to_dict()
    with torch.no_grad(), patch(model, config) as stats:
        model(input_ids=prompt())
    assert stats.density_per_layer[0] == 1.0
    assert 0.5 < stats.density_per_layer[1] < 1.0  # half the heads dense, half one block per row
    # a layer without a planner (as `calibrate --per-layer` writes a dense layer) runs SDPA
    unplanned = AttentionConfig.from_json({**calibrated, "layers": {"0": {"prefill": None}}})
    ids = prompt()
    base = model(input_ids=ids).logits
    with torch.no_grad(), patch(model, unplanned) as stats:
        torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=1e-4, atol=1e-5)
    assert stats.fallback_per_layer == ["unplanned", None] and stats.density_per_layer[0] == 1.0


def test_patch_checks_the_config_against_the_model():
    model = build("llama")  # 2 layers, 4 query heads
    beyond = AttentionConfig(prefill="dense", layers={5: {"prefill": "streaming"}})
    with pytest.raises(ValueError, match=r"layers\[5\]: the model has 2 layers"):
        patch(model, beyond)
    short = AttentionConfig(prefill="dense", layers={1: {"prefill": ["dense"] * 3}})
    with pytest.raises(ValueError, match=r"layers\[1\]\['prefill'\]: 3 per-head entries"):
        patch(model, short)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prefill": "nope"}, ValueError, "prefill: unknown prefill method"),
        ({"prefill": 3}, TypeError, "prefill"),
        ({"prefill": {"method": "dense", "gamma": 0.9}}, TypeError, "prefill: .*gamma"),
        ({"prefill": {"method": "streaming", "window_tokens": 0}}, ValueError, "window_tokens"),
        ({"prefill": {"method": "flexprefill", "block_q": 48}}, ValueError, "block_q"),
        ({"prefill": {"gamma": 0.9}}, TypeError, "'method'"),
        ({"prefill": "dense", "min_prefill_length": 0}, ValueError, "min_prefill_length"),
        ({"prefill": "dense", "backend": "cuda"}, ValueError, "backend"),
        ({"prefill": "dense", "precision": "fp4"}, ValueError, "precision"),
        ({"prefill": "dense", "layers": {"0": []}}, TypeError, r"layers\[0\]"),
        ({"prefill": "dense", "layers": {0: {"prefil": "dense"}}}, ValueError, "unknown roles"),
        ({"prefill": "dense", "layers": {0: {"prefill": []}}}, ValueError, "non-empty"),
        ({"prefill": "dense", "layers": {-1: {}}}, ValueError, "layer indices"),
        (
            {"prefill": "dense", "layers": {3: {"prefill": [{"method": "nope"}]}}},
            ValueError,
            r"layers\[3\]\['prefill'\]\[0\]: unknown prefill method 'nope'",
        ),
        ({"prefill": "dense", "layers": {0: {"kv": ["snapkv"]}}}, ValueError, "per-head"),
    ],
)
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        AttentionConfig(**kwargs)


def test_from_json_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        AttentionConfig.from_json({"prefil": "dense"})
    with pytest.raises(ValueError, match="layer indices"):
        AttentionConfig.from_json({"prefill": "dense", "layers": {"first": {"prefill": "dense"}}})
    with pytest.raises(TypeError, match="source"):
        AttentionConfig.from_json(3)
    broken = tmp_path / "broken.json"
    broken.write_text('{"prefill": ')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        AttentionConfig.from_json(broken)
    with pytest.raises(ValueError, match="missing.json: cannot read"):
        AttentionConfig.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"^source: not valid JSON \(Expecting"):
        AttentionConfig.from_json(' {"prefill": ')


def test_from_json_reads_json_text():
    """JSON text (``json.dumps(config.to_dict())``) reads back as the dict does; a string that
    does not start with "{" stays a path."""
    config = AttentionConfig(prefill={"method": "streaming", "window_tokens": 256}, kv="snapkv")
    text = json.dumps(config.to_dict())
    assert AttentionConfig.from_json("\n " + text).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="^prefill.json: cannot read"):
        AttentionConfig.from_json("prefill.json")


def test_patch_rejects_bad_arguments_and_double_patch():
    model = build("llama")
    with pytest.raises(TypeError, match="model"):
        patch(torch.nn.Linear(2, 2), DENSE)
    with pytest.raises(TypeError, match="config"):
        patch(model, {"prefill": "dense"})
    handle = patch(model, DENSE)
    with pytest.raises(ValueError, match="already patched"):
        patch(model, DENSE)
    handle.remove()
    handle.remove()  # idempotent
    assert model.config._attn_implementation == "sdpa"


def test_models_sharing_a_config_are_not_patched_together():
    """The attention implementation lives on the config: patching the second of two models that
    share one (from_config) made the first one's removal switch both back, and the second's
    restore "attnsieve" for good."""
    a = build("llama")
    b = type(a)(a.config)
    handle = patch(a, DENSE)
    with pytest.raises(ValueError, match="shares its config object with a patched model"):
        patch(b, DENSE)
    handle.remove()
    patch(b, DENSE).remove()
    assert a.config._attn_implementation == b.config._attn_implementation == "sdpa"


@torch.no_grad()
def test_a_paged_config_refuses_generation_without_its_cache():
    """generate(use_cache=False) on the paged wrapper was handed a cache all the same, and
    transformers re-fed the whole sequence into it at every step (duplicated keys: wrong tokens
    at batch 2); cache_implementation="static" failed with transformers' "both a cache and
    cache_implementation" though the user passed no cache, and so did a model whose own generation
    config names one."""
    model = build("llama")
    ids = prompt(batch=2, length=30)
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    with patch(model, PAGED):
        with pytest.raises(ValueError, match="^use_cache: False, but the patched config"):
            model.generate(input_ids=ids, use_cache=False, **kw)
        with pytest.raises(ValueError, match="^cache_implementation: leave it unset"):
            model.generate(input_ids=ids, cache_implementation="static", **kw)
        model.generation_config.use_cache = False
        try:
            with pytest.raises(ValueError, match="^use_cache: False"):
                model.generate(input_ids=ids, **kw)
        finally:
            model.generation_config.use_cache = True
        paged = model.generate(input_ids=ids, **kw)  # the paged cache, as before
        asked = transformers.GenerationConfig(cache_implementation="static", **kw)
        with pytest.raises(ValueError, match="^cache_implementation: leave it unset"):
            model.generate(input_ids=ids, generation_config=asked)
        no_cache = transformers.GenerationConfig(use_cache=False, **kw)
        with pytest.raises(ValueError, match="^use_cache: False"):  # passed positionally
            model.generate(ids, no_cache)
        # the model's own default (Gemma's "hybrid" from the Hub) is set aside, not refused
        model.generation_config.cache_implementation = "static"
        try:
            assert torch.equal(model.generate(input_ids=ids, **kw), paged)
            assert model.generation_config.cache_implementation == "static"
        finally:
            model.generation_config.cache_implementation = None


@torch.no_grad()
def test_a_paged_config_refuses_a_cache_it_does_not_serve():
    """A DynamicCache of the caller's own ran generation with no KV policy or decode selector and
    no word of it; so would a paged cache the handle has since replaced. Its newest one goes on."""
    model = build("llama")
    ids = prompt(batch=2, length=30)
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    name = hf.cache_keyword(model)
    handle = patch(model, PAGED)
    with handle:
        for foreign in (transformers.DynamicCache(), handle.new_cache()):
            newest = handle.new_cache()
            with pytest.raises(
                ValueError, match=f"^{name}: the patched config .* it does not serve"
            ):
                model.generate(input_ids=ids, **{name: foreign}, **kw)
        out = model.generate(input_ids=ids, **{name: newest}, **kw)
        assert torch.equal(out, model.generate(input_ids=ids, **kw))


@torch.no_grad()
def test_the_handle_s_own_cache_goes_by_the_same_rules():
    """The handle's own new_cache() skipped the wrapper's rules: a model whose generation config
    names a cache implementation (Gemma's "hybrid" from the Hub) failed in transformers ("both
    cache_implementation and cache"), and use_cache=False re-fed the sequence into it."""
    model = build("llama")
    ids = prompt(batch=2, length=30)
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    name = hf.cache_keyword(model)
    model.generation_config.cache_implementation = "static"
    handle = patch(model, PAGED)
    with handle:
        fresh = model.generate(input_ids=ids, **kw)
        assert torch.equal(model.generate(input_ids=ids, **{name: handle.new_cache()}, **kw), fresh)
        assert model.generation_config.cache_implementation == "static"
        with pytest.raises(ValueError, match="^use_cache: False"):
            model.generate(input_ids=ids, use_cache=False, **{name: handle.new_cache()}, **kw)


@pytest.mark.parametrize("config", [PAGED, SPARSE], ids=["paged", "not-paged"])
def test_remove_restores_a_generate_of_the_users(config):
    model = build("llama")

    def mine(*args, **kwargs):
        return "mine"

    model.generate = mine
    with patch(model, config):
        pass
    assert model.__dict__["generate"] is mine
    with patch(model, config):
        pass
    assert model.generate() == "mine"
    del model.generate
    with patch(model, config):
        pass
    assert "generate" not in model.__dict__
    if not config.paged:  # one set while patched: removal took it away, though none was put there
        with patch(model, config):
            model.generate = mine
        assert model.__dict__["generate"] is mine


@pytest.mark.parametrize("config", [PAGED, SPARSE], ids=["paged", "not-paged"])
@torch.no_grad()
def test_a_deep_copy_of_a_patched_model_generates_with_its_own_weights(config):
    """The paged generate wrapper, a closure, came along into the copy still bound to the
    original: the copy generated the original's tokens."""
    model = build("llama")
    ids = prompt(batch=2, length=30)
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    handle = patch(model, config)
    twin = copy.deepcopy(model)
    for weight in twin.parameters():
        weight.mul_(-1.5)
    twin_handle = hf.handle_of(twin)
    assert twin_handle is not handle and twin_handle.model is twin
    tokens = twin.generate(input_ids=ids, **kw)
    handle.remove()  # the copy stays patched, on its own handle
    assert twin.config._attn_implementation == "attnsieve"
    twin_handle.remove()
    assert hf.handle_of(twin) is None and "generate" not in twin.__dict__
    with patch(twin, config):
        assert torch.equal(twin.generate(input_ids=ids, **kw), tokens)
    assert not torch.equal(model.generate(input_ids=ids, **kw), tokens)


def test_a_removed_handle_cannot_be_entered_again():
    """A second ``with handle:`` after the first block ran the model unpatched, silently."""
    model = build("llama")
    handle = patch(model, SPARSE)
    with handle:
        pass
    with (
        pytest.raises(ValueError, match="^handle: already removed; patch the model again"),
        handle,
    ):
        pass


@torch.no_grad()
def test_a_removed_handle_gives_no_paged_cache():
    """new_cache() after removal handed out a cache its (ended) patch still seemed to read: the
    unpatched model's SDPA saw only each decode step's own token, and generated other tokens."""
    model = build("llama")
    handle = patch(model, PAGED)
    handle.remove()
    with pytest.raises(ValueError, match="^handle: already removed; patch the model again"):
        handle.new_cache()


@torch.no_grad()
@torch.no_grad()
def test_values_of_another_head_dim_run_dense():
    """DeepSeek-V3's latent attention has keys of 24 channels and values of 16 here: a planned
    prompt raised "k, v: expected equal shapes" from attnsieve's attention."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(
        **COMMON, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=4,
        num_experts_per_tok=2, first_k_dense_replace=2, moe_intermediate_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    ids = prompt()
    stock = model(input_ids=ids).logits
    with pytest.warns(UserWarning, match="latent attention"), patch(model, SPARSE) as stats:
        patched = model(input_ids=ids).logits
    assert stats.fallback_per_layer == ["head_dims", "head_dims"]
    torch.testing.assert_close(patched, stock)


def test_a_vision_language_model_patches_its_decoder_only():
    """LLaVA: patch switched every sub-config, so the CLIP vision tower (no layer_idx) failed in
    attnsieve's attention, and removal left the tower on the decoder's implementation."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    text = LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=5)
    torch.manual_seed(0)
    impl = {"text_config": "sdpa", "vision_config": "eager", "": "sdpa"}
    model = Llava._from_config(config, attn_implementation=impl).eval()
    ids = torch.cat([torch.tensor([[1]]), torch.full((1, 16), 5), prompt(length=30)], 1)
    pixels = torch.randn(1, 3, 32, 32)
    stock = model(input_ids=ids, pixel_values=pixels).logits
    with patch(model, FULL) as stats:
        assert model.config.vision_config._attn_implementation == "eager"
        patched = model(input_ids=ids, pixel_values=pixels).logits
    assert stats.fallback_per_layer == [None, None]  # the decoder ran attnsieve's layouts
    torch.testing.assert_close(patched, stock, atol=1e-4, rtol=1e-4)
    configs = (model.config, model.config.text_config, model.config.vision_config)
    assert [c._attn_implementation for c in configs] == ["sdpa", "sdpa", "eager"]
    # observe_attention switched every tower to its observer and restored only the top-level
    # implementation: the vision tower came back as "sdpa", a patched decoder as unpatched
    from attnsieve.integrations.transformers import observe_attention

    seen = []
    with observe_attention(model, lambda module, *_: seen.append(module.layer_idx)):
        model(input_ids=ids, pixel_values=pixels)
    assert seen == [0, 1]  # the decoder's layers only
    assert [c._attn_implementation for c in configs] == ["sdpa", "sdpa", "eager"]
    with patch(model, FULL) as stats:
        with observe_attention(model, lambda *_: None):
            pass
        stats.clear()
        model(input_ids=ids, pixel_values=pixels)
        assert stats.fallback_per_layer == [None, None]  # still patched
    assert [c._attn_implementation for c in configs] == ["sdpa", "sdpa", "eager"]


def _t5_calls_the_attention_interface() -> bool:
    from transformers.models.t5 import modeling_t5

    return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(modeling_t5.T5Attention.forward)


@pytest.mark.skipif(
    not _t5_calls_the_attention_interface(),
    reason="this transformers' T5 computes attention itself (5.17 did), so nothing is patched; "
    "the pinned 5.24 passes position_bias to the attention interface",
)
@torch.no_grad()
def test_a_position_bias_runs_dense_with_the_bias():
    """T5's decoder adds relative-position logits (``position_bias``): a planned prompt ran the
    layout without them, and a decode step's dense attention dropped them, silently."""
    config = transformers.T5Config(
        vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, initializer_factor=1.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    model.eval()
    ids, dec = prompt(length=PROMPT), prompt(length=33)

    def logits():
        prompt_logits = model(input_ids=ids, decoder_input_ids=dec).logits
        past = model(input_ids=ids, decoder_input_ids=dec[:, :-1], use_cache=True)
        step = model(
            encoder_outputs=(past.encoder_last_hidden_state,),
            decoder_input_ids=dec[:, -1:],
            **{hf.cache_keyword(model): hf.output_cache(past)},
        ).logits
        return prompt_logits, step

    stock = logits()
    with pytest.warns(UserWarning, match="position bias"), patch(model, DENSE) as stats:
        patched = logits()
    assert "position_bias" in stats.fallback_per_layer
    torch.testing.assert_close(patched, stock)
