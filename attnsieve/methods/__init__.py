"""Prefill planners from the literature, one file each, registered by name."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from attnsieve.methods.base import PerHeadPlanner, Planner

PLANNERS: dict[str, type[Planner]] = {}
_MODULES = (
    "dense",
    "streaming",
    "power",
    "vertical_slash",
    "block_topk",
    "flexprefill",
    "xattention",
    "hip",
)

P = TypeVar("P", bound=type[Planner])


def register(cls: P) -> P:
    """Class decorator: make a planner available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a registered planner needs a non-empty `name`")
    PLANNERS[cls.name] = cls
    return cls


def get_planner(name: str, **kwargs: Any) -> Planner:
    """Instantiate the planner registered as ``name`` with its config fields ``kwargs``."""
    if name not in PLANNERS:
        raise ValueError(f"name: unknown planner {name!r}; available: {sorted(PLANNERS)}")
    return PLANNERS[name](**kwargs)


for _module in _MODULES:
    importlib.import_module(f"attnsieve.methods.{_module}")

__all__ = ["PLANNERS", "PerHeadPlanner", "Planner", "get_planner", "register"]
