"""Hugging Face transformers (>= 5) adapter: sparse prefill through the `AttentionInterface`.

`patch(model, config)` registers an attention function named "attnsieve" and switches the model
to it until the handle is removed (or the ``with`` block ends); nothing happens at import. Prefill
calls (query length >= ``min_prefill_length``) are planned by the layer's planner and executed by
`attnsieve.attention`; decode steps and short prompts run dense PyTorch SDPA. Features a block
layout cannot express exactly fall back to dense attention for that call, with one warning per
reason: logit soft-capping, sliding windows shorter than the keys, padded or custom masks,
non-causal layers and attention dropout.

transformers passes q (B, H_q, N, D) and k, v (B, H_kv, M, D) straight from the cache, so chunked
prefill (M > N) uses the kernels' bottom-right causal alignment. It expects (B, N, H_q, D) back.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.api import attention
from attnsieve.integrations.config import AttentionConfig
from attnsieve.layout import causal_token_mask

if TYPE_CHECKING:
    from attnsieve.methods import Planner

ATTN_NAME = "attnsieve"
OBSERVE_NAME = "attnsieve_observe"
_MASK_CHECK_ELEMENTS = 1 << 24  # rows of the mask compared at once: bounded memory at any length

_default_config: AttentionConfig | None = None
_states: dict[int, _State] = {}  # id(config the attention modules hold) -> state


class PatchStats:
    """What the last prefill call of each layer did (index = layer).

    ``density_per_layer``: computed / dense-causal (query, key) pairs (1.0 for a dense fallback);
    ``fallback_per_layer``: None when the layer ran its planner's layout, else the fallback reason.
    Entries stay None until the layer has seen a prefill call (or since `clear`). Densities are
    kept as device tensors and read on access, so recording them never waits for the GPU.
    """

    def __init__(self, num_layers: int) -> None:
        self._density: list[Tensor | float | None] = [None] * num_layers
        self.fallback_per_layer: list[str | None] = [None] * num_layers
        self.prefill_calls = 0

    @property
    def density_per_layer(self) -> list[float | None]:
        return [None if d is None else float(d) for d in self._density]

    @property
    def mean_density(self) -> float | None:
        seen = [d for d in self.density_per_layer if d is not None]
        return sum(seen) / len(seen) if seen else None

    def record(self, layer: int, density: Tensor | float, fallback: str | None) -> None:
        if layer >= len(self._density):  # a model whose config under-reports its layers
            grow = layer + 1 - len(self._density)
            self._density.extend([None] * grow)
            self.fallback_per_layer.extend([None] * grow)
        self._density[layer] = density
        self.fallback_per_layer[layer] = fallback
        self.prefill_calls += 1

    def clear(self) -> None:
        """Forget the per-layer entries (before a forward whose layers may all run dense)."""
        self._density = [None] * len(self._density)
        self.fallback_per_layer = [None] * len(self.fallback_per_layer)


@dataclass
class _State:
    config: AttentionConfig
    stats: PatchStats
    planners: dict[int, Planner] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    checked_mask: tuple[Any, ...] = ()  # (weakref to mask, window, verdict): one check per forward
    from_handle: bool = True  # False: for a model loaded with attn_implementation="attnsieve"
    finalizer: weakref.finalize | None = None

    def planner(self, layer: int) -> Planner:
        if layer not in self.planners:
            self.planners[layer] = self.config.planner(layer)
        return self.planners[layer]


class PatchHandle:
    """Returned by `patch`; ``remove()`` (or leaving the ``with`` block) restores the model."""

    def __init__(self, model: Any, key: int, previous: str, state: _State) -> None:
        self.model, self._key, self.previous, self._state = model, key, previous, state
        self.removed = False

    @property
    def stats(self) -> PatchStats:
        return self._state.stats

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        try:
            self.model.set_attn_implementation(self.previous)
        finally:
            _forget(self._key, self._state)

    def __enter__(self) -> PatchStats:
        return self.stats

    def __exit__(self, *exc: object) -> None:
        self.remove()


def register() -> None:
    """Make ``attn_implementation="attnsieve"`` valid (idempotent).

    Models loaded that way use the config given to `set_default_config` (or `AttentionConfig()`).
    Masks are built as for "sdpa": None for plain causal prompts, a bool (B, 1, N, M) tensor
    otherwise (True = attend).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def set_default_config(config: AttentionConfig | None) -> None:
    """Config of models loaded with ``attn_implementation="attnsieve"`` (None: the default)."""
    global _default_config
    if config is not None and not isinstance(config, AttentionConfig):
        raise TypeError(f"config: expected an AttentionConfig or None, got {type(config).__name__}")
    _default_config = config


def patch(model: Any, config: AttentionConfig | None = None) -> PatchHandle:
    """Route ``model``'s attention through attnsieve until the returned handle is removed.

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
    key = id(text_config)
    if key in _states and _states[key].from_handle:
        raise ValueError(
            "model: already patched by attnsieve; remove the first handle before patching again"
        )
    register()
    previous = model.config._attn_implementation
    state = _install(config, text_config, from_handle=True)
    try:
        model.set_attn_implementation(ATTN_NAME)
        if text_config._attn_implementation != ATTN_NAME:
            raise ValueError(
                f"model: {type(model).__name__} cannot switch attention implementation dynamically "
                "(it does not use transformers' AttentionInterface)"
            )
    except BaseException:
        _forget(key, state)
        model.set_attn_implementation(previous)
        raise
    return PatchHandle(model, key, previous, state)


@contextlib.contextmanager
def observe_attention(
    model: Any, observer: Callable[[torch.nn.Module, Tensor, Tensor, Tensor, float | None], None]
) -> Iterator[None]:
    """Within the block, ``model``'s attention runs PyTorch SDPA ("sdpa" conventions) and every
    call first shows its inputs to ``observer(module, query, key, value, scaling)``: q
    (B, H_q, N, D) and k, v (B, H_kv, M, D) as the layer computed them (after RoPE). Capture for
    calibration and fidelity; the model's attention implementation is restored on exit.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
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
    previous = model.config._attn_implementation
    model.set_attn_implementation(OBSERVE_NAME)
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

    q (B, H_q, N, D) and k, v (B, H_kv, M, D) in, attention output (B, N, H_q, D) and None out.
    """
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attnsieve: attention sinks (s_aux) are not supported")
    state = _state_for(module)
    softcap = kwargs.get("softcap")
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    n = query.shape[2]
    if n == 1 or n < state.config.min_prefill_length:
        return _dense(query, key, value, attention_mask, scaling, dropout, softcap, is_causal), None

    layer = module.layer_idx
    reason = _fallback_reason(
        state, attention_mask, query, key, dropout, softcap, is_causal, kwargs
    )
    if reason is not None:
        kind, detail = reason
        if kind not in state.warned:
            state.warned.add(kind)
            warnings.warn(
                f"attnsieve: {detail}; layer {layer} (and any other layer with this reason) "
                "runs dense attention instead. This warning is shown once per reason.",
                stacklevel=2,
            )
        state.stats.record(layer, 1.0, kind)
        return _dense(query, key, value, attention_mask, scaling, dropout, softcap, is_causal), None

    if attention_mask is None and key.shape[2] > n:
        # transformers drops the mask only when the keys past the prompt are empty static-cache
        # slots (its "sdpa" convention is top-left causal); they must not be attended.
        key, value = key[:, :, :n], value[:, :, :n]
    layout = state.planner(layer).plan(query, key, causal=True)
    out = attention(
        query, key, value, layout, causal=True, scale=scaling, backend=state.config.backend
    )
    state.stats.record(layer, layout.density(causal=True, reduce=False).mean(), None)
    return out.transpose(1, 2).contiguous(), None


def _install(config: AttentionConfig, model_config: Any, from_handle: bool) -> _State:
    """A fresh state for the model whose attention modules hold ``model_config``."""
    layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    state = _State(config, PatchStats(layers), from_handle=from_handle)
    key = id(model_config)
    _states[key] = state
    # a model dropped without remove(): forget it, so a new object at the same id starts clean
    state.finalizer = weakref.finalize(model_config, _forget, key, state)
    return state


def _forget(key: int, state: _State) -> None:
    if state.finalizer is not None:
        state.finalizer.detach()
    if _states.get(key) is state:
        del _states[key]


def _state_for(module: torch.nn.Module) -> _State:
    model_config = getattr(module, "config", None)
    if model_config is None or getattr(module, "layer_idx", None) is None:
        raise TypeError(
            f"attnsieve: {type(module).__name__} has no `config`/`layer_idx`; only decoder "
            "attention modules of transformers models are supported"
        )
    key = id(model_config)
    if key not in _states:  # loaded with attn_implementation="attnsieve" (see `register`)
        _install(_default_config or AttentionConfig(), model_config, from_handle=False)
    return _states[key]


def _fallback_reason(
    state: _State,
    mask: Tensor | None,
    query: Tensor,
    key: Tensor,
    dropout: float,
    softcap: float | None,
    is_causal: bool,
    kwargs: dict[str, Any],
) -> tuple[str, str] | None:
    """(kind, message) of why this prefill call cannot run a sparse layout, or None."""
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
    verdict = _mask_verdict(state, mask, query.shape[2], key.shape[2], window)
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


def _mask_verdict(state: _State, mask: Tensor, n: int, m: int, window: int | None) -> str:
    """'causal', 'window' (causal + a restricting sliding window) or 'other' for a bool mask.

    Layers of one forward share the mask tensor, so the verdict is cached on its identity.
    """
    if state.checked_mask and state.checked_mask[0]() is mask and state.checked_mask[1] == window:
        return state.checked_mask[2]
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
    state.checked_mask = (weakref.ref(mask), window, verdict)
    return verdict


def _dense(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    softcap: float | None,
    is_causal: bool,
) -> Tensor:
    """Dense attention with transformers' "sdpa" mask conventions, returned as (B, N, H_q, D)."""
    n, m = query.shape[2], key.shape[2]
    causal = mask is None and n > 1 and is_causal
    if causal and m > n:  # mask dropped with empty static-cache slots past the prompt (top-left)
        key, value = key[:, :, :n], value[:, :, :n]
    if softcap is None:
        gqa = query.shape[1] != key.shape[1]
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            scale=scaling,
            enable_gqa=gqa,
        )
    else:
        out = _softcap_attention(query, key, value, mask, scaling, dropout, softcap, causal)
    return out.transpose(1, 2).contiguous()


def _softcap_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    dropout: float,
    softcap: float,
    causal: bool,
) -> Tensor:
    """Gemma-2 attention (tanh logit soft-capping) chunked over queries; GQA through views."""
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scaling is None else scaling
    kt = k[:, :, None].transpose(-1, -2)  # (B, H_kv, 1, D, M)
    out = torch.empty(b, h_q, n, d, dtype=q.dtype, device=q.device)
    rows = max(1, _MASK_CHECK_ELEMENTS // max(b * h_q * m, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        qc = q[:, :, start:stop].unflatten(1, (h_kv, h_q // h_kv))  # (B, H_kv, g, rows, D)
        scores = torch.tanh((qc @ kt).float() * (scale / softcap)) * softcap
        if mask is not None:
            visible = mask[:, :, None, start:stop]  # (B, 1, 1, rows, M)
        elif causal:
            visible = causal_token_mask(n, m, start, stop, q.device)
        else:
            visible = None
        if visible is not None and visible.dtype != torch.bool:  # an additive float mask
            scores = scores + visible
        elif visible is not None:  # finfo.min, not -inf: fully masked (padding) rows stay finite
            scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(-1).to(q.dtype), p=dropout, training=dropout > 0)
        out[:, :, start:stop] = (probs @ v[:, :, None]).flatten(1, 2)
    return out
