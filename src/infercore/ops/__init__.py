"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops.norm import rms_norm
from infercore.ops.sampling import apply_penalties, sample

__all__ = ["apply_penalties", "rms_norm", "sample"]
