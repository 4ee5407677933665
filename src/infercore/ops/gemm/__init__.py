"""GEMM ops: dense (``gemm``, ``linear``) and FP8 (``quantize_fp8``, ``gemm_fp8``)."""

from infercore.ops.gemm.dense import GemmInputs, gemm, linear
from infercore.ops.gemm.fp8 import GemmFp8Inputs, gemm_fp8
from infercore.ops.gemm.fp8_quant import QuantFp8Inputs, quantize_fp8

__all__ = [
    "GemmFp8Inputs",
    "GemmInputs",
    "QuantFp8Inputs",
    "gemm",
    "gemm_fp8",
    "linear",
    "quantize_fp8",
]
