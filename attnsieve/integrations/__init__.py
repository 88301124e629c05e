"""Adapters that put attnsieve inside existing model code; importing them changes nothing."""

from attnsieve.integrations.config import AttentionConfig
from attnsieve.integrations.handle import PatchHandle, PatchStats
from attnsieve.integrations.transformers import patch

__all__ = ["AttentionConfig", "PatchHandle", "PatchStats", "patch"]
