"""The state of one patched model: its config, per-layer stats, cost decisions and caches.

`attnsieve.integrations.transformers.patch` returns a `PatchHandle`; the attention function
finds it through the attention module it is called with (``_HANDLE_ATTR``).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import Tensor

from attnsieve.api import resolve_backend
from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.cost import CostModel
from attnsieve.integrations.graphs import PlanGraphs
from attnsieve.integrations.hf_cache import AttnsieveCache
from attnsieve.integrations.paged import PagedSession

_HANDLE_ATTR = "_attnsieve_patch"  # set on each attention module of a patched model
# shapes whose cost decisions a handle keeps (per layer for dense verdicts): prompts of many
# lengths (an eval sweep, a server) would otherwise grow them for as long as the model is patched
_SHAPES_KEPT = 256


class PatchStats:
    """What the last prefill call of each layer did (index = layer).

    ``density_per_layer``: computed / dense-causal (query, key) pairs (1.0 for a dense fallback);
    ``fallback_per_layer``: None when the layer ran its planner's layout, else the fallback reason
    ("cost" when the cost model predicted that planning would not pay for itself, "unplanned" for
    a layer configured without a planner, "short" for a call of fewer query tokens than
    ``min_prefill_length``, "paged" for a prompt chunk after the KV policy compressed the layer:
    dense attention over each head's kept tokens; for a call the kernels cannot run, "dtype",
    "head_dims" (values of another head dim than the keys), "position_bias" (T5's relative
    buckets), "grad", "softcap", "dropout", "non_causal", "float_mask", "sliding_window", or
    "mask" for a padded or non-causal mask).
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


class PatchHandle:
    """The state of one patched model: its config, stats and per-call caches.

    Returned by `patch`; ``remove()`` (or leaving the ``with`` block) restores the model. Each
    attention module of the model points to its handle while patched, so the attention function
    finds its state through the module it is called with.
    """

    def __init__(
        self,
        config: AttentionConfig,
        num_layers: int,
        cost: CostModel | None = None,
        graphs: bool = False,
    ) -> None:
        self.config = config
        self.cost = cost
        self.graphs = PlanGraphs() if graphs else None
        self.stats = PatchStats(num_layers)
        # per layer: the last plan's density copied to the host without waiting (copy, event)
        self._densities: dict[int, tuple[Tensor, Any]] = {}
        # (planner, shapes, graphed) -> density below which planning pays (`CostModel`)
        self._break_even: dict[tuple, float] = {}
        # per layer: the shapes the cost model sent dense, while the layer's density stays put
        self._dense_verdicts: dict[int, set[tuple]] = {}
        self.warned: set[str] = set()
        # (weakref to the mask, window, verdict): layers of one forward share the mask tensor
        self.checked_mask: tuple[Any, ...] = ()
        self.model: Any = None
        self.previous: str | None = None  # the decoder's implementation before the patch
        self.restore: str | dict[str, Any] | None = None  # every (sub-)config's, put back
        self.own_generate: Any = None  # a ``generate`` the model held as its own attribute
        self.removed = False
        self.session: PagedSession | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> PatchHandle:
        """A deep copy of a patched model comes patched the same way, afresh: a handle with this
        one's config and cost model but none of its per-call state (session, graphs, stats)."""
        layers = len(self.stats.density_per_layer)
        graphs = self.graphs is not None
        twin = PatchHandle(copy.deepcopy(self.config, memo), layers, self.cost, graphs)
        memo[id(self)] = twin  # the model's modules point back to the handle
        twin.model = copy.deepcopy(self.model, memo)
        twin.previous, twin.restore = self.previous, copy.deepcopy(self.restore, memo)
        twin.own_generate = copy.deepcopy(self.own_generate, memo)
        twin.removed = self.removed
        if not twin.removed:
            LIVE.add(twin)
        return twin

    def new_cache(self) -> AttnsieveCache:
        """A fresh paged cache for one generation, served by this handle's KV policy, decode
        selector and KV precision: pass it as ``cache`` (``past_key_values`` before transformers
        5.2x); ``model.generate`` does so by itself while the model is patched with a config
        that needs one."""
        if self.removed:  # the model runs unpatched: plain attention would see each new token only
            raise ValueError("handle: already removed; patch the model again for a paged cache")
        num_layers = len(self.stats.density_per_layer)
        if self.session is not None:  # only the newest cache is served
            self.session.end()
        self.session = PagedSession(self.config, num_layers)
        return self.session.cache

    def compress(self) -> None:
        """Compress the current generation's cache now (e.g. after the context, before the
        question: the protocol that keeps the question out of the policy's view)."""
        if self.session is None:
            raise ValueError("compress: no paged cache yet; call new_cache() and prefill first")
        self.session.compress()

    def cost_says_dense(self, planner: Any, layer: int, query: Tensor, key: Tensor) -> bool:
        """Whether the cost model sends this prompt call to dense attention (never off the Triton
        backend). A dense verdict is kept per layer and shapes until the layer's density changes
        (a backend or cost model changed in between does not revisit it): on a host-bound short
        prompt the decision's microseconds, the environment lookup of the backend among them,
        show in time to first token (benchmarks/results/h200/adapter/parts.log)."""
        shapes = (query.shape, key.shape[2], query.dtype, query.is_cuda, query.requires_grad)
        if shapes in self._dense_verdicts.get(layer, ()):
            return True
        if self.cost is None or resolve_backend(self.config.backend, query) != "triton":
            return False
        density = self.last_density(layer)  # one look: a copy in flight may land at any time
        if self._pays(planner_name(planner), density, query, key):
            return False
        if density is not None or layer not in self._densities:  # a density that will not change
            verdicts = self._dense_verdicts.setdefault(layer, set())
            if len(verdicts) >= _SHAPES_KEPT:
                verdicts.clear()
            verdicts.add(shapes)
        return True

    def plan_pays(self, planner: str, layer: int, query: Tensor, key: Tensor) -> bool:
        """The cost model's decision for this call, before planning: the layer's last density
        (or the prior) against the break-even density of these shapes, computed once per shape."""
        return self._pays(planner, self.last_density(layer), query, key)

    def _pays(self, planner: str, density: float | None, query: Tensor, key: Tensor) -> bool:
        # plans replay from CUDA graphs unless the planner failed capture or autograd records the
        # call (a forward outside torch.no_grad: PlanGraphs then plans eagerly)
        graphed = (
            self.graphs is not None and planner not in self.graphs.eager and not query.requires_grad
        )
        memo = (planner, query.shape, key.shape[2], graphed)  # host time counts: one tuple
        limit = self._break_even.get(memo)
        if limit is None:
            if len(self._break_even) >= _SHAPES_KEPT:
                self._break_even.clear()
            b, h, n, d = query.shape
            limit = self._break_even[memo] = self.cost.break_even_density(
                planner, b, h, n, key.shape[2], d, graphed=graphed
            )
        return (self.cost.prior_density if density is None else density) < limit

    def keep_density(self, layer: int, density: Tensor) -> None:
        """Start a non-blocking copy of a layer's density for the cost model's next decision."""
        self._dense_verdicts.pop(layer, None)
        if not density.is_cuda:
            self._densities[layer] = (density, None)
            return
        host = torch.empty((), dtype=density.dtype, pin_memory=True)
        host.copy_(density, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._densities[layer] = (host, event)

    def last_density(self, layer: int) -> float | None:
        """The layer's last density if its copy has landed (never waits for the GPU), else None."""
        host, event = self._densities.get(layer, (None, None))
        if host is None or (event is not None and not event.query()):
            return None
        return float(host)

    def remove(self) -> None:
        if self.removed or self.model is None:
            return
        self.removed = True
        if self.graphs is not None:
            self.graphs.clear()
        if self.session is not None:
            self.session.end()
        try:
            self.model.set_attn_implementation(self.restore)
        finally:
            _detach(self.model, self)
            self.restore_generate()

    def restore_generate(self) -> None:
        """Undo the paged-cache wrapper of ``model.generate``: the model's own attribute back (a
        user's wrapper), or none. A ``generate`` that is not this handle's wrapper (none was
        installed, or the user set one since) is the user's, and stays."""
        if getattr(self.model.__dict__.get("generate"), "handle", None) is not self:
            return
        if self.own_generate is None:
            self.model.__dict__.pop("generate", None)
        else:
            self.model.generate = self.own_generate

    def __enter__(self) -> PatchStats:
        if self.removed:  # the model runs unpatched: a block under this handle would not say so
            raise ValueError("handle: already removed; patch the model again")
        return self.stats

    def __exit__(self, *exc: object) -> None:
        self.remove()


LIVE: weakref.WeakSet[PatchHandle] = weakref.WeakSet()  # handles patched models hold


def _detach(model: Any, handle: PatchHandle) -> None:
    for module in model.modules():
        if getattr(module, _HANDLE_ATTR, None) is handle:
            delattr(module, _HANDLE_ATTR)


def planner_name(planner: Any) -> str:
    """The name the cost model and the CUDA graphs know ``planner`` by."""
    return getattr(planner, "name", "") or type(planner).__name__
