"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops import attention, kv
from infercore.ops.norm import rms_norm

__all__ = ["attention", "kv", "rms_norm"]
