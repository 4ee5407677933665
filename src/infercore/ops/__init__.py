"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops.norm import rms_norm

__all__ = ["rms_norm"]
