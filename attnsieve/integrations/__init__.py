"""Adapters that put attnsieve inside existing model code; importing them changes nothing."""

from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.transformers import PatchHandle, PatchStats, patch

__all__ = ["AttentionConfig", "PatchHandle", "PatchStats", "patch"]
