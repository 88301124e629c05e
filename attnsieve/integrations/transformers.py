"""Hugging Face transformers (>= 5) adapter: sparse prefill through the `AttentionInterface`.

`patch(model, config)` registers an attention function named "attnsieve" and switches the model
to it until the handle is removed (or the ``with`` block ends); nothing happens at import. Prefill
calls (query length >= ``min_prefill_length``) are planned by the layer's planner and executed by
`attnsieve.attention`; decode steps run the paged decode kernel on a paged cache
(`integrations.paged`: a KV policy, a decode selector, ``fp8-kv`` or ``paged_cache``), else dense
PyTorch SDPA, as short prompts do. Features a block
layout cannot express exactly fall back to dense attention for that call, with one warning per
reason: logit soft-capping, sliding windows shorter than the keys, padded or custom masks,
non-causal layers and attention dropout.

transformers passes q (B, H_q, N, D) and k, v (B, H_kv, M, D) straight from the cache, so chunked
prefill (M > N) uses the kernels' bottom-right causal alignment. It expects (B, N, H_q, D) back.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from attnsieve.api import attention, dense_attention, layout_density, resolve_backend
from attnsieve.api.backend import FLOAT, forward_only_error
from attnsieve.checks import check_bool
from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.cost import CostModel
from attnsieve.integrations.handle import (
    _HANDLE_ATTR,
    LIVE,
    PatchHandle,
    PatchStats,
    _detach,
    planner_name,
)
from attnsieve.kernels import check_fp8_device
from attnsieve.layout import causal_token_mask

ATTN_NAME = "attnsieve"
OBSERVE_NAME = "attnsieve_observe"
_MASK_CHECK_ELEMENTS = 1 << 24  # rows of the mask compared at once: bounded memory at any length
DEFAULT_COST = CostModel()  # H200 measurements; frozen, so one instance serves every patch


# models loaded with attn_implementation="attnsieve"
_default = PatchHandle(AttentionConfig(), 0, DEFAULT_COST, graphs=True)


def register() -> None:
    """Make ``attn_implementation="attnsieve"`` valid (idempotent).

    Models loaded that way and not patched use the config given to `set_default_config` (or
    `AttentionConfig()`) and share one set of stats (`default_stats`). Masks are built as for
    "sdpa": None for plain causal prompts, a bool (B, 1, N, M) tensor otherwise (True = attend).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def set_default_config(config: AttentionConfig | None) -> None:
    """Config of models loaded with ``attn_implementation="attnsieve"`` (None: the default):
    prefill and its precision only. A config that runs on the paged cache is refused: only
    `patch` gives ``model.generate`` that cache."""
    global _default
    if config is not None and not isinstance(config, AttentionConfig):
        raise TypeError(f"config: expected an AttentionConfig or None, got {type(config).__name__}")
    if config is not None and config.paged:
        raise ValueError(
            "config: a KV policy, a decode selector, an FP8 KV cache or paged_cache run on "
            "attnsieve's paged cache, which only patch(model, config) installs"
        )
    _default = PatchHandle(config or AttentionConfig(), 0, DEFAULT_COST, graphs=True)


def default_stats() -> PatchStats:
    """Stats of the models that run with the default config (see `register`)."""
    return _default.stats


def check_fits(config: AttentionConfig, text_config: Any) -> None:
    """`AttentionConfig.check_model` against a transformers text config: what `patch` checks of
    a model, which a command checks from the model's config before its weights load."""
    num_layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text_config, "num_attention_heads", 0) or 0)
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads or None
    config.check_model(num_layers, heads, kv_heads, head_dim_of(text_config))


def head_dim_of(config: Any) -> int | None:
    """A (text) model config's attention head size: its ``head_dim``, else hidden_size / heads
    (None where neither is known)."""
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    return getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)


def patch(
    model: Any,
    config: AttentionConfig | None = None,
    *,
    cost: CostModel | None = DEFAULT_COST,
    graphs: bool = True,
) -> PatchHandle:
    """Route ``model``'s attention through attnsieve until the returned handle is removed.

    The config is checked against the model first (layer overrides beyond its layers, per-head
    lists of another length than its query heads, Double Sparsity's label channels missing for a
    sparse layer or of another shape than its KV heads and head dimension). On the Triton
    backend, ``cost`` decides per layer whether planning can pay for itself
    (`attnsieve.integrations.cost`); a layer where it cannot runs dense and records the
    fallback reason "cost". ``cost=None`` always plans. With ``graphs`` (CUDA only), a layer's
    plan + attention is captured in a CUDA graph the second time its planner sees the same
    shapes, and replayed after (`attnsieve.integrations.graphs`).
    Example::

        with attnsieve.patch(model, AttentionConfig(prefill="flexprefill")) as stats:
            out = model.generate(**inputs, max_new_tokens=32)
        print(stats.density_per_layer)
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model: expected a transformers PreTrainedModel, got {type(model).__name__}"
        )
    config = AttentionConfig() if config is None else config
    if not isinstance(config, AttentionConfig):
        raise TypeError(f"config: expected an AttentionConfig, got {type(config).__name__}")
    text_config = model.config.get_text_config()
    check_fits(config, text_config)
    num_layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    if config.precision != "bf16" and (weight := next(model.parameters(), None)) is not None:
        check_fp8_device(f"config.precision ({config.precision!r})", weight.device)
    modules = [m for m in model.modules() if getattr(m, "layer_idx", None) is not None]
    if handle_of(model) is not None:
        raise ValueError(
            "model: already patched by attnsieve; remove the first handle before patching again"
        )
    if any(h.model.config is model.config and not h.removed for h in LIVE):
        # the attention implementation is the config's: each patch and removal would switch the
        # other model too, and restore it to the wrong implementation
        raise ValueError(
            "model: shares its config object with a patched model (from_config or a copy): give "
            "it its own (model.config = copy.deepcopy(model.config)) before patching it"
        )
    register()
    if cost is not None and not isinstance(cost, CostModel):
        raise TypeError(f"cost: expected a CostModel or None, got {type(cost).__name__}")
    check_bool("graphs", graphs)
    handle = PatchHandle(config, num_layers, cost, graphs)
    handle.model, handle.previous = model, text_config._attn_implementation
    handle.restore = _implementations(model.config)
    LIVE.add(handle)
    handle.own_generate = model.__dict__.get("generate")
    for module in modules:
        setattr(module, _HANDLE_ATTR, handle)
    if config.paged:
        model.generate = _PagedGenerate(model.generate, handle, cache_keyword(model))
    try:
        model.set_attn_implementation(_text_only(model.config, text_config))
        if text_config._attn_implementation != ATTN_NAME:
            raise ValueError(
                f"model: {type(model).__name__} cannot switch attention implementation dynamically "
                "(it does not use transformers' AttentionInterface)"
            )
    except BaseException:
        handle.removed = True
        _detach(model, handle)
        handle.restore_generate()
        model.set_attn_implementation(handle.restore)
        raise
    return handle


def _implementations(config: Any) -> str | dict[str, Any]:
    """The attention implementation of ``config`` and of each of its sub-configs (a vision
    tower's among them), as `set_attn_implementation` takes them back."""
    subs = {
        key: getattr(config, key)._attn_implementation
        for key in getattr(config, "sub_configs", {})
        if getattr(config, key, None) is not None
    }
    return {"": config._attn_implementation, **subs} if subs else config._attn_implementation


def _text_only(config: Any, text_config: Any, name: str = ATTN_NAME) -> str | dict[str, str]:
    """What switches the decoder's attention to ``name`` and nothing else: a multimodal model's
    other towers (CLIP's attention, which has no ``layer_idx``) keep theirs."""
    for key in getattr(config, "sub_configs", {}):
        if getattr(config, key, None) is text_config:
            return {key: name}
    return name


class _PagedGenerate:
    """``model.generate`` that starts each call on a fresh paged cache of ``handle``, or goes on
    with the one ``handle.new_cache()`` gave last. A call that asks for no cache or another one
    is refused: transformers would run it on the cache handed in anyway (``use_cache=False``
    re-feeding the whole sequence into it at every step), and on a cache the handle does not
    serve no KV policy, decode selector or FP8 KV cache would run. A ``cache_implementation`` in
    the model's own generation config (Gemma's "hybrid" from the Hub) is a default the patched
    config overrides, not a request: it is set aside for the call.

    An object, not a closure: a deep copy of the model deep-copies its bound ``generate`` and its
    handle with it, so that the copy generates with its own weights."""

    def __init__(self, generate: Callable[..., Any], handle: PatchHandle, keyword: str) -> None:
        functools.update_wrapper(self, generate)
        self.generate, self.handle, self.keyword = generate, handle, keyword

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        why = "the patched config (a KV policy, a decode selector, an FP8 KV cache or "
        why += "paged_cache) runs generation on attnsieve's paged cache"
        for name in ("cache", "past_key_values"):
            given = kwargs.get(name)
            if given is None:
                continue
            session = self.handle.session
            if session is None or given is not session.cache:
                raise ValueError(
                    f"{name}: {why}; pass the handle's newest new_cache() or leave it unset, got "
                    f"a {type(given).__name__} it does not serve"
                )
            break
        # the checks and the model's own default set aside below hold for the handle's cache too
        own = self.handle.model.generation_config
        # generate(inputs, generation_config, ...): the second positional argument
        settings = kwargs.get("generation_config", args[1] if len(args) > 1 else None) or own
        if kwargs.get("use_cache", getattr(settings, "use_cache", True)) is False:
            raise ValueError(f"use_cache: False, but {why}; patch without them for no cache")
        if kwargs.get("cache_implementation") or (
            settings is not own and getattr(settings, "cache_implementation", None)
        ):
            raise ValueError(f"cache_implementation: leave it unset: {why}")
        if given is None:
            kwargs[self.keyword] = self.handle.new_cache()
        default, own.cache_implementation = own.cache_implementation, None
        try:
            return self.generate(*args, **kwargs)
        finally:
            own.cache_implementation = default


def handle_of(model: Any) -> PatchHandle | None:
    """The live patch handle of ``model``, or None when it is not patched."""
    for module in model.modules():
        handle = getattr(module, _HANDLE_ATTR, None)
        if handle is not None:
            return handle
    return None


def cache_keyword(model: Any) -> str:
    """The name under which ``model`` takes its cache: "cache" from transformers 5.2x,
    "past_key_values" before (still accepted after, with a deprecation warning)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The cache a forward returned: ``out.cache`` from transformers 5.2x, ``out.past_key_values``
    before (still readable after, with a deprecation warning)."""
    return out["cache" if "cache" in out else "past_key_values"]


@contextlib.contextmanager
def observe_attention(
    model: Any, observer: Callable[[torch.nn.Module, Tensor, Tensor, Tensor, float | None], None]
) -> Iterator[None]:
    """Within the block, ``model``'s decoder attention runs PyTorch SDPA ("sdpa" conventions) and
    every call first shows its inputs to ``observer(module, query, key, value, scaling)``: q
    (B, H_q, N, D) and k, v (B, H_kv, M, D) as the layer computed them (after RoPE). Capture for
    calibration and fidelity; the model's attention implementation is restored on exit.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    def forward(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[Tensor, Any]:
        observer(module, query, key, value, scaling)
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )

    AttentionInterface.register(OBSERVE_NAME, forward)
    AttentionMaskInterface.register(OBSERVE_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    # the decoder only, and every tower restored as it was (a patched decoder stays patched)
    previous = _implementations(model.config)
    model.set_attn_implementation(
        _text_only(model.config, model.config.get_text_config(), OBSERVE_NAME)
    )
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """The function registered as "attnsieve".

    q (B, H_q, N, D) and k, v (B, H_kv, M, D) in, attention output (B, N, H_q, D) and None out
    (a transposed view: the kernel writes that layout through strides, no extra copy).
    """
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attnsieve: attention sinks (s_aux) are not supported")
    if getattr(module, "layer_idx", None) is None:
        raise TypeError(
            f"attnsieve: {type(module).__name__} has no `layer_idx`; only decoder attention "
            "modules of transformers models are supported"
        )
    handle = getattr(module, _HANDLE_ATTR, None) or _default
    if kwargs.get("output_attentions") and "output_attentions" not in handle.warned:
        handle.warned.add("output_attentions")
        warnings.warn(
            "attnsieve: output_attentions=True, but attnsieve's attention (like SDPA) returns no "
            "attention weights: the output's attentions hold none. Unpatch and load the model "
            "with attn_implementation='eager' for them. This warning is shown once.",
            stacklevel=2,
        )
    config = handle.config
    softcap = kwargs.get("softcap")
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    n = query.shape[2]
    session = handle.session
    if session is not None and session.serves(module.layer_idx, key):
        layer = module.layer_idx
        session.observe(layer, query, scaling)
        if softcap is not None or kwargs.get("sliding_window") is not None:
            if (
                layer not in session.whole
                and "whole" not in handle.warned
                and (config.policy(layer) is not None or config.selector(layer) is not None)
            ):
                handle.warned.add("whole")
                warnings.warn(
                    f"attnsieve: layer {layer} uses sliding-window attention or logit "
                    "soft-capping: it keeps every token, without its KV policy or decode "
                    "selector (and any other such layer). This warning is shown once.",
                    stacklevel=2,
                )
            session.keep_whole(layer)  # token-exact features: no eviction, no sparse reads
            if n == 1:
                key, value, _ = session.paged.gather(layer)
        else:
            if n > 1 and attention_mask is not None:
                session.note_mask(layer, attention_mask)  # a prompt's padding leaves the cache
            if n == 1 or session.ragged(layer):
                if n > 1:  # a prompt chunk over the compressed heads: dense, per head
                    handle.stats.record(layer, 1.0, "paged")
                return session.attend(layer, query, scaling), None
    planner = config.planner(module.layer_idx)
    if n == 1 or n < config.min_prefill_length or planner is None:
        if n > 1:  # a prefill call: the stats say why it ran dense
            short = n < config.min_prefill_length
            handle.stats.record(module.layer_idx, 1.0, "short" if short else "unplanned")
        return _dense(
            module, query, key, value, attention_mask, scaling, dropout, softcap, is_causal, kwargs
        ), None

    layer = module.layer_idx
    # transformers drops the mask only when the keys past the prompt are empty static-cache slots
    # (its "sdpa" convention is top-left causal): they are neither attended nor priced
    static_slots = attention_mask is None and key.shape[2] > n
    # first the cheap decision: where planning cannot pay for itself, nothing else is examined
    if handle.cost_says_dense(planner, layer, query, key[:, :, :n] if static_slots else key):
        handle.stats.record(layer, 1.0, "cost")
        return _dense(
            module, query, key, value, attention_mask, scaling, dropout, softcap, is_causal, kwargs
        ), None
    reason = _fallback_reason(
        handle, layer, attention_mask, query, key, value, dropout, softcap, is_causal, kwargs
    )
    if reason is not None:
        kind, detail = reason
        if kind not in handle.warned:
            handle.warned.add(kind)
            warnings.warn(
                f"attnsieve: {detail}; layer {layer} (and any other layer with this reason) "
                "runs dense attention instead. This warning is shown once per reason.",
                stacklevel=2,
            )
        handle.stats.record(layer, 1.0, kind)
        return _dense(
            module, query, key, value, attention_mask, scaling, dropout, softcap, is_causal, kwargs
        ), None

    if static_slots:
        key, value = key[:, :, :n], value[:, :, :n]
    b, h_q, _, d = query.shape

    def planned(q: Tensor, k: Tensor, v: Tensor, out: Tensor) -> Tensor:
        layout = planner.plan(q, k, causal=True, scale=scaling)
        attention(
            q, k, v, layout, causal=True, scale=scaling, out=out.transpose(1, 2),
            precision=config.prefill_precision, backend=config.backend,
        )  # fmt: skip
        return layout_density(layout, backend=config.backend).mean()

    out = torch.empty(b, n, h_q, d, dtype=query.dtype, device=query.device)
    if handle.graphs is not None and resolve_backend(config.backend, query) == "triton":
        graph = (id(planner), scaling)
        density = handle.graphs.run(graph, planner_name(planner), planned, query, key, value, out)
    else:
        density = planned(query, key, value, out)
    handle.stats.record(layer, density, None)
    handle.keep_density(layer, density)
    return out, None


def _fallback_reason(
    handle: PatchHandle,
    layer: int,
    mask: Tensor | None,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    dropout: float,
    softcap: float | None,
    is_causal: bool,
    kwargs: dict[str, Any],
) -> tuple[str, str] | None:
    """(kind, message) of why this prefill call cannot run a sparse layout, or None."""
    if query.dtype not in FLOAT:
        return "dtype", f"{query.dtype} attention is not supported by the kernels"
    if value.shape[-1] != key.shape[-1]:
        return "head_dims", (
            f"values of head_dim {value.shape[-1]} beside keys of {key.shape[-1]} (multi-head "
            "latent attention) are not supported by the kernels"
        )
    if kwargs.get("position_bias") is not None:
        return "position_bias", (
            "a position bias added to the attention logits (T5's relative buckets) is not "
            "supported by the kernels"
        )
    config = handle.config
    use = resolve_backend(config.backend, query)
    if forward_only_error(use, config.prefill_precision, q=query, k=key, v=value) is not None:
        return "grad", (
            "autograd records this forward (training, or a call outside torch.no_grad()) and the "
            "kernels compute no gradients"
        )
    if softcap is not None:
        return (
            "softcap",
            f"attention logit soft-capping (softcap={softcap}) is not supported by the kernels",
        )
    if dropout > 0:
        return "dropout", f"attention dropout ({dropout}) is not supported (training mode)"
    if not is_causal:
        return "non_causal", "non-causal (bidirectional) attention is not supported"
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return "float_mask", f"an additive {mask.dtype} attention_mask is not supported"
    window = kwargs.get("sliding_window")
    verdict = _mask_verdict(handle, layer, mask, query.shape[2], key.shape[2], window)
    if verdict == "window":
        return "sliding_window", (
            f"a sliding window ({window} tokens) shorter than the keys is not expressible as a "
            "block layout (it is token-exact, blocks are not)"
        )
    if verdict == "other":
        return (
            "mask",
            "the attention_mask has padding (e.g. a left-padded batch) or a non-causal pattern",
        )
    return None


def _mask_verdict(
    handle: PatchHandle, layer: int, mask: Tensor, n: int, m: int, window: int | None
) -> str:
    """'causal', 'window' (causal + a restricting sliding window) or 'other' for a bool mask.

    Layers of one forward share the mask tensor, so the verdict is cached on its identity, for
    the later layers of the forward, and across forwards while its version counter stands still:
    a caller may change a mask it keeps in place (a static serving buffer). An inference tensor
    has no version counter: its verdict holds for one forward."""
    version = None if mask.is_inference() else mask._version
    checked = handle.checked_mask
    if (
        checked
        and checked[0]() is mask
        and checked[1] == window
        and (layer > checked[3] or (version is not None and version == checked[2]))
    ):
        handle.checked_mask = (*checked[:3], layer, checked[4])
        return checked[4]
    restricts = window is not None and window < m
    verdict = "window" if restricts else "causal"
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (n, m):
        verdict = "other"
    rows = max(1, _MASK_CHECK_ELEMENTS // max(m * mask.shape[0], 1))
    for start in range(0, n, rows) if verdict != "other" else ():
        stop = min(n, start + rows)
        expected = causal_token_mask(n, m, start, stop, mask.device)
        if restricts:
            pos = torch.arange(start, stop, device=mask.device) + (m - n)
            expected &= torch.arange(m, device=mask.device)[None, :] > pos[:, None] - window
        if not torch.equal(mask[:, 0, start:stop], expected.expand(mask.shape[0], -1, -1)):
            verdict = "other"
            break
    handle.checked_mask = (weakref.ref(mask), window, version, layer, verdict)
    return verdict


def _dense(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    softcap: float | None,
    is_causal: bool,
    kwargs: dict[str, Any],
) -> Tensor:
    """Dense attention as a (B, N, H_q, D) tensor.

    A prompt runs transformers' own "sdpa" function (given the call's ``kwargs``), or, where that
    function reduces to one SDPA call (no mask, no position bias, CUDA or CPU, head dims up to
    256), that call itself (`_prompt_sdpa`): the same kernel on the same arguments, bit for bit,
    without the function's Python around it. On SmolLM2's host-bound short prompts every
    microsecond a layer shows in time to first token (benchmarks/results/h200/adapter/parts.log);
    forcing cuDNN instead cost 33-62 us of host time a call and was 4x slower at 1K on the H200
    (adapter/dense_path.log there). A decode step (but one with a position bias, which only that
    function adds), and Gemma-2's logit soft-capping (which transformers' SDPA lacks), go through
    `attnsieve.api.dense_attention`: one SDPA call with native GQA, which decoded SmolLM2 at 32K
    in 19.9 / 31.2 ms a step at batch 1 / 8 on the H200 where the stock model took 68.1 / 55.3 ms
    (its SDPA function of transformers 5.17; decode_graphs/hfcache/ there).
    """
    bias = kwargs.get("position_bias") is not None  # dense_attention would drop it
    if softcap is None and (query.shape[2] > 1 or bias):
        plain = (
            mask is None
            and (query.is_cuda or query.is_cpu)  # XPU, MPS and NPU have GQA rules of their own
            and not bias
            and not kwargs.get("output_attentions", False)
            and key.shape[-1] == value.shape[-1] <= 256
        )
        if plain:
            return _prompt_sdpa(query, key, value, scaling, dropout, is_causal)
        return sdpa_attention_forward(
            module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs
        )[0]
    out = dense_attention(
        query, key, value, mask, causal=is_causal, scale=scaling, dropout=dropout, softcap=softcap
    )
    return out.transpose(1, 2)


def _prompt_sdpa(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    scaling: float | None,
    dropout: float,
    is_causal: bool,
) -> Tensor:
    """The one SDPA call transformers' "sdpa" function makes for a maskless prompt (where K and V
    head dims are equal and at most 256, with SDPA's own GQA), as (B, N, H_q, D)."""
    n = query.shape[2]
    if is_causal and key.shape[2] > n:  # empty static-cache slots past the prompt
        key, value = key[:, :, :n], value[:, :, :n]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # fmt: skip
    return out.transpose(1, 2).contiguous()
