"""attnsieve: cheaper long-context attention for existing transformers, without retraining."""

from attnsieve.api import attention
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.layout import Layout

__all__ = ["AttentionConfig", "Layout", "attention", "patch"]
__version__ = "0.1.0"
