"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops import attention, kv
from infercore.ops.activation import gelu_and_mul, silu_and_mul
from infercore.ops.gemm import gemm, gemm_fp8, linear, quantize_fp8
from infercore.ops.norm import fused_add_rms_norm, rms_norm
from infercore.ops.quant import (
    QuantizedWeight,
    dequantize_weight,
    gemm_w8a8,
    quantize_int8,
    quantize_weight,
    quantized_linear,
    smooth,
)
from infercore.ops.rope import rotary
from infercore.ops.sampling import apply_penalties, sample

__all__ = [
    "QuantizedWeight",
    "apply_penalties",
    "attention",
    "dequantize_weight",
    "fused_add_rms_norm",
    "gelu_and_mul",
    "gemm",
    "gemm_fp8",
    "gemm_w8a8",
    "kv",
    "linear",
    "quantize_fp8",
    "quantize_int8",
    "quantize_weight",
    "quantized_linear",
    "rms_norm",
    "rotary",
    "sample",
    "silu_and_mul",
    "smooth",
]
