"""The planner interface: a method decides *which* blocks to compute; kernels compute them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

from torch import Tensor

from attnsieve.api.backend import FLOAT
from attnsieve.checks import check_dtype, check_qk, check_scale, checked_fields
from attnsieve.layout import Layout


class Planner:
    """Base of every prefill method: ``plan(q, k)`` returns the `Layout` attention will execute.

    q is (B, H_q, N, D), k is (B, H_kv, M, D); the layout's heads are 1, H_kv or H_q. ``plan``
    checks its arguments once and calls ``_plan``, the method's algorithm. Subclasses are
    dataclasses whose fields are the paper's hyper-parameters, listed by name in
    `attnsieve.methods.prefill.PLANNERS`.
    """

    name: ClassVar[str] = ""
    # fields that may hold one value per planned head (a tuple), so that one plan serves heads
    # calibrated apart (`one_plan_for_heads`)
    per_head_fields: ClassVar[tuple[str, ...]] = ()

    def plan(
        self, q: Tensor, k: Tensor, *, causal: bool = True, scale: float | None = None
    ) -> Layout:
        """The layout for attention of softmax scale ``scale`` (None: 1/sqrt(D))."""
        check_qk(q, k)
        # what attention takes: the estimates' helpers would name their own argument (x), and
        # a static plan would be made for inputs that attention then refuses
        check_dtype("q", q, FLOAT)
        check_scale(scale)
        if not isinstance(causal, bool):
            raise TypeError(f"causal: expected a bool, got {causal!r}")
        if 0 in (q.shape[0], q.shape[2], k.shape[2]):  # no Layout has an empty side
            raise ValueError(
                f"q, k: a plan needs a batch, queries and keys, got q {tuple(q.shape)} and k "
                f"{tuple(k.shape)}"
            )
        return self._plan(at_default_scale(q, scale), k, causal)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> None:
        # a field set on a built planner is checked as the constructor checks it
        for attr, checked in checked_fields(self, name, value).items():
            super().__setattr__(attr, checked)

    def check_heads(self, num_heads: int, kv_heads: int | None) -> None:
        """Raise ValueError unless the planner fits a model of ``num_heads`` query heads and
        ``kv_heads`` KV heads (None: unknown), before any forward (`AttentionConfig.check_model`).
        Every planner does, unless it holds per-head settings."""


def at_default_scale(q: Tensor, scale: float | None) -> Tensor:
    """q rescaled so that attention at 1/sqrt(D), which every planner's estimate assumes, is
    attention at ``scale`` (Granite's attention multiplier, Gemma's query_pre_attn_scalar): q
    itself where the two agree, else a copy."""
    factor = 1.0 if scale is None else scale * math.sqrt(q.shape[-1])
    return q if math.isclose(factor, 1.0, rel_tol=1e-6) else q * factor


@dataclass
class PerHeadPlanner(Planner):
    """A different planner for every query head (e.g. from `attnsieve calibrate`), stacked.

    Each inner planner sees only its own query head (and that head's KV head), so a head's plan
    depends on nothing but its own data. ``planners`` is kept as a tuple, so that a frozen
    config's per-head planner cannot be changed in place.
    """

    planners: Sequence[Planner]

    name: ClassVar[str] = "per_head"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.planners, (list, tuple))
            or not self.planners
            or not all(isinstance(p, Planner) for p in self.planners)
        ):
            raise TypeError("planners: expected a non-empty list of Planner instances")
        self.planners = tuple(self.planners)

    def check_heads(self, num_heads: int, kv_heads: int | None) -> None:
        if len(self.planners) != num_heads:
            raise ValueError(
                f"{len(self.planners)} per-head entries, but the model has {num_heads} query heads"
            )
        for planner in self.planners:  # each plans its own query head and that head's KV head
            planner.check_heads(1, 1)

    def _plan(self, q: Tensor, k: Tensor, causal: bool) -> Layout:
        h_q, h_kv = q.shape[1], k.shape[1]
        if len(self.planners) != h_q:
            raise ValueError(f"planners: got {len(self.planners)} planners for {h_q} query heads")
        g = h_q // h_kv
        layouts = []
        for h, planner in enumerate(self.planners):
            layout = planner._plan(q[:, h : h + 1], k[:, h // g : h // g + 1], causal)
            layouts.append(layout)
        # planners of other block sizes (vertical_slash's 64 beside 128): stacked at the smallest
        block_q, block_k = min(lay.block_q for lay in layouts), min(lay.block_k for lay in layouts)
        return Layout.cat([lay.refined(block_q, block_k) for lay in layouts], dim=1)


def one_plan_for_heads(planners: Sequence[Planner]) -> Planner | None:
    """One planner standing for ``planners`` (one per query head, as `PerHeadPlanner` takes
    them) when they are of one class, differ only in its ``per_head_fields``, hold one value in
    each, and plan query heads (a planner that shares one plan across a KV group would read the
    per-head values as per KV head); else None. It plans once, not once a head."""
    if not planners or not type(planners[0]).per_head_fields:
        return None
    first, cls = planners[0], type(planners[0])
    if any(type(p) is not cls for p in planners) or getattr(first, "share_kv_group", False):
        return None
    others = [f.name for f in fields(cls) if f.name not in cls.per_head_fields]
    for p in planners:
        if any(isinstance(getattr(p, name), tuple) for name in cls.per_head_fields):
            return None
        if any(getattr(p, name) != getattr(first, name) for name in others):
            return None
    per_head = {name: tuple(getattr(p, name) for p in planners) for name in cls.per_head_fields}
    return cls(**per_head, **{name: getattr(first, name) for name in others})
