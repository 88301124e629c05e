"""Ada-KV: one top-k over all heads of a layer, so heads keep ragged counts (arXiv 2407.11550)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_index
from attnsieve.methods.kv.base import (
    FORCED,
    Kept,
    KVPolicy,
    KVView,
    ScoredPolicy,
    check_view,
    pack,
    rank_key,
    top_mask,
    valid_entries,
)
from attnsieve.methods.kv.snapkv import SnapKV


@dataclass
class AdaKV(KVPolicy):
    """Ada-KV (Feng et al., arXiv 2407.11550): head-wise adaptive budgets around a scoring policy.

    The ``inner`` policy (SnapKV by default: Ada-SnapKV) scores every entry of every head. Each head
    first keeps its always-kept entries and ``alpha_safeguard`` (0.2, the authors' LongBench
    script's and kvpress's; their ``config_compress`` defaults to 0.5) of the rest of its per-head
    target, the highest-scoring; then the layer's remaining budget (the sum of the heads' targets,
    e.g. budget x H_kv) goes to the highest scores of the whole layer, whatever their head. Heads
    with concentrated attention keep few tokens, heads with diffuse attention many: the counts are
    ragged and the cache frees the difference.

    ``inner`` is a `ScoredPolicy`, or as a config's JSON gives it, a policy name or an entry
    ``{"method": name, ...fields}`` (``{"method": "adakv", "inner": "pyramidkv"}``: Ada-Pyramid,
    the paper's other pairing). ``budget`` / ``ratio`` set here are passed to ``inner``, whose
    per-head targets (per layer, for PyramidKV) are pooled; left unset, the inner policy's own
    apply. An inner entry that sets a different budget or ratio of its own is refused.

    The floor is the authors' (FFY0/AdaKV, ``AdaptiveSnapKVCluster``): the always-kept entries
    plus ``alpha_safeguard`` of the rest of the head's target, ``int(alpha (B - window))`` scored
    tokens on top of SnapKV's window. kvpress takes ``alpha`` of the whole target, which the window
    fills first (at a 128-token budget a head was guaranteed no scored token).

    With no budget or ratio set, the inner policy's default applies (SnapKV's 2048 tokens; the
    authors' LongBench script runs 1024).

    Differences from the paper: the layer's remaining budget goes to the highest scores of the
    layer once the floors are kept (as kvpress allocates it; the authors' code gives each head
    ``(1 - alpha)`` of its share of a layer-wide top-k on top of its floor, a rounding apart), and
    the scores of different heads are compared as the inner policy gives them (SnapKV's are
    attention masses, comparable across heads).
    """

    inner: ScoredPolicy | str | dict[str, Any] = field(default_factory=SnapKV)
    alpha_safeguard: float = 0.2

    name: ClassVar[str] = "adakv"

    def __post_init__(self) -> None:
        if isinstance(self.inner, dict) and (self.budget is not None or self.ratio is not None):
            mine = {"budget": self.budget, "ratio": self.ratio}
            own = {k: self.inner[k] for k in mine if k in self.inner}
            if any(mine[k] != v for k, v in own.items()):  # silently replaced before
                raise ValueError(
                    f"budget, ratio: set on adakv (budget={self.budget!r}, ratio={self.ratio!r})"
                    f" and on its inner policy ({own}): set them on one of the two"
                )
        if isinstance(self.inner, (str, dict)):
            self.inner = _policy(self.inner)
        if not isinstance(self.inner, ScoredPolicy) or isinstance(self.inner, AdaKV):
            raise TypeError(
                "inner: expected a scoring policy (a ScoredPolicy such as SnapKV() or "
                f"PyramidKV(), or its name), got {type(self.inner).__name__}"
            )
        if self.budget is not None or self.ratio is not None:
            super().__post_init__()  # checks the pair before handing it to the inner policy
            self.inner = replace(self.inner, budget=self.budget, ratio=self.ratio)
        elif self.inner.budget is not None:
            self.budget = self.inner.budget
        else:
            self.ratio = self.inner.ratio
        check_float("alpha_safeguard", self.alpha_safeguard, 0.0, 1.0)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        # the inner policy's targets are the ones pooled: a budget set here goes to a copy of it
        if name in ("budget", "ratio") and isinstance(self.__dict__.get("inner"), ScoredPolicy):
            inner = replace(self.inner, budget=self.budget, ratio=self.ratio)
            super().__setattr__("inner", inner)

    def choose(self, view: KVView) -> Kept:
        return self.keep(view, self.inner.targets(view).sum(-1))

    def keep(self, view: KVView, total: Tensor) -> Kept:
        """The ``total`` (int64 (B,)) best entries of each batch row's layer, each head's floor
        first. `compress` passes the sum of the heads' targets; a periodic pass over heads that an
        earlier pass left ragged passes the layer budget instead (a short head's target, its own
        length, would shrink the layer's total: `attnsieve.integrations.paged`)."""
        check_view(view)
        check_index("total", total, (view.lengths.shape[0],), torch.int64, view.keys.device)
        target = self.inner.targets(view)  # (B, H)
        valid = valid_entries(view)
        forced = self.inner.always_kept(view, target) & valid
        key = rank_key(self.inner.score(view), forced, valid)
        b, h, n = key.shape
        always = forced.sum(-1).minimum(target)
        floor = always + torch.floor(self.alpha_safeguard * (target - always)).long()
        safe = top_mask(key, floor, n)  # the floor: each head's best (always-kept first)
        key = torch.where(safe, key + 2 * FORCED, key)  # ranked above every other entry
        layer = top_mask(key.view(b, h * n), total, h * n).view(b, h, n)
        return pack(layer & valid, n)


def _policy(entry: str | dict[str, Any]) -> Any:
    """The policy an ``inner`` entry (a name, or a dict with a ``method`` name and its fields)
    names, built; errors name ``inner``."""
    from attnsieve.methods.kv import POLICIES  # the registry imports this module

    spec = {"method": entry} if isinstance(entry, str) else entry
    name = spec.get("method")
    if not isinstance(name, str):
        raise TypeError(
            f"inner: expected a policy name or a dict with a 'method' name, got {entry!r}"
        )
    if name not in POLICIES:
        raise ValueError(f"inner: unknown KV policy {name!r}; available: {sorted(POLICIES)}")
    try:
        return POLICIES[name](**{k: v for k, v in spec.items() if k != "method"})
    except (TypeError, ValueError) as e:
        raise type(e)(f"inner: {e}") from e
