"""Functional ops. Each dispatches through the registry and takes ``backend="auto"``."""

from infercore.ops.gemm import gemm, gemm_fp8, linear, quantize_fp8
from infercore.ops.norm import rms_norm

__all__ = ["gemm", "gemm_fp8", "linear", "quantize_fp8", "rms_norm"]
