"""Prefill planners from the literature, one file each, listed by name."""

from __future__ import annotations

from typing import Any

from attnsieve.methods.prefill.base import PerHeadPlanner, Planner
from attnsieve.methods.prefill.block_topk import BlockTopKPlanner
from attnsieve.methods.prefill.dense import DensePlanner
from attnsieve.methods.prefill.flexprefill import FlexPrefillPlanner
from attnsieve.methods.prefill.hip import HiPPlanner
from attnsieve.methods.prefill.power import PowerPlanner
from attnsieve.methods.prefill.streaming import StreamingPlanner
from attnsieve.methods.prefill.vertical_slash import VerticalSlashPlanner
from attnsieve.methods.prefill.xattention import XAttentionPlanner

PLANNERS: dict[str, type[Planner]] = {
    cls.name: cls
    for cls in (
        DensePlanner,
        StreamingPlanner,
        PowerPlanner,
        VerticalSlashPlanner,
        BlockTopKPlanner,
        FlexPrefillPlanner,
        XAttentionPlanner,
        HiPPlanner,
    )
}


def get_planner(name: str, **fields: Any) -> Planner:
    """The planner registered as ``name``, built with its dataclass ``fields``."""
    if not isinstance(name, str) or name not in PLANNERS:
        raise ValueError(f"name: unknown planner {name!r}; available: {sorted(PLANNERS)}")
    return PLANNERS[name](**fields)


__all__ = ["PLANNERS", "PerHeadPlanner", "Planner", "get_planner"]
