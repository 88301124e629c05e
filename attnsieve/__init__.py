"""attnsieve: cheaper long-context attention for existing transformers, without retraining."""

from attnsieve.api import attention
from attnsieve.layout import Layout

__all__ = ["Layout", "attention"]
__version__ = "0.1.0"
