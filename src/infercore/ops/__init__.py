"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops import attention, kv
from infercore.ops.activation import gelu_and_mul, silu_and_mul
from infercore.ops.gemm import gemm, gemm_fp8, linear, quantize_fp8
from infercore.ops.norm import fused_add_rms_norm, rms_norm
from infercore.ops.rope import rotary

__all__ = [
    "attention",
    "fused_add_rms_norm",
    "gelu_and_mul",
    "gemm",
    "gemm_fp8",
    "kv",
    "linear",
    "quantize_fp8",
    "rms_norm",
    "rotary",
    "silu_and_mul",
]
