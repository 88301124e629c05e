"""Sparse-decode selectors from the literature, one file each, registered by name."""

from __future__ import annotations

from typing import Any

from attnsieve.methods.decode.base import DecodeSelector, Pages, PageView, StepState
from attnsieve.methods.decode.double_sparsity import DoubleSparsity, calibrate_label_channels
from attnsieve.methods.decode.quest import Quest
from attnsieve.methods.decode.tidaldecode import TidalDecode

SELECTORS: dict[str, type[DecodeSelector]] = {
    cls.name: cls for cls in (Quest, DoubleSparsity, TidalDecode)
}


def get_selector(name: str, **fields: Any) -> DecodeSelector:
    """Instantiate the decode selector registered as ``name`` with its config ``fields``."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if name not in SELECTORS:
        raise ValueError(f"name: unknown decode selector {name!r}; available: {sorted(SELECTORS)}")
    return SELECTORS[name](**fields)


__all__ = [
    "SELECTORS",
    "DecodeSelector",
    "DoubleSparsity",
    "PageView",
    "Pages",
    "Quest",
    "StepState",
    "TidalDecode",
    "calibrate_label_channels",
    "get_selector",
]
