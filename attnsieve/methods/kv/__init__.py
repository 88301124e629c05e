"""KV-cache compression policies from the literature, one file each, registered by name."""

from __future__ import annotations

from typing import Any

from attnsieve.methods.kv.a2sf import A2SF
from attnsieve.methods.kv.adakv import AdaKV
from attnsieve.methods.kv.base import Kept, KVPolicy, KVView, ScoredPolicy
from attnsieve.methods.kv.h2o import H2O
from attnsieve.methods.kv.pyramidkv import PyramidKV
from attnsieve.methods.kv.razor import RazorAttention, echo_induction_scores
from attnsieve.methods.kv.snapkv import SnapKV
from attnsieve.methods.kv.streaming import StreamingLLM

POLICIES: dict[str, type[KVPolicy]] = {
    cls.name: cls for cls in (StreamingLLM, SnapKV, PyramidKV, H2O, A2SF, AdaKV, RazorAttention)
}


def get_policy(name: str, **fields: Any) -> KVPolicy:
    """Instantiate the KV policy registered as ``name`` with its config ``fields``."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if name not in POLICIES:
        raise ValueError(f"name: unknown KV policy {name!r}; available: {sorted(POLICIES)}")
    return POLICIES[name](**fields)


__all__ = [
    "A2SF",
    "POLICIES",
    "AdaKV",
    "H2O",
    "KVPolicy",
    "KVView",
    "Kept",
    "PyramidKV",
    "RazorAttention",
    "ScoredPolicy",
    "SnapKV",
    "StreamingLLM",
    "echo_induction_scores",
    "get_policy",
]
