"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops.activation import gelu_and_mul, silu_and_mul
from infercore.ops.norm import fused_add_rms_norm, rms_norm
from infercore.ops.rope import rotary

__all__ = ["fused_add_rms_norm", "gelu_and_mul", "rms_norm", "rotary", "silu_and_mul"]
