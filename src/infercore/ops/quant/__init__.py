"""Quantization: INT8 W8A8 (SmoothQuant style) and weight-only INT8 / INT4 / FP8 linears.

- :func:`quantize_int8`, :func:`gemm_w8a8`, :func:`smooth`: W8A8 (``quant.int8``,
  ``gemm.w8a8``).
- :func:`quantize_weight`, :func:`dequantize_weight`, :class:`QuantizedWeight`,
  :func:`quantized_linear`: weight-only (``gemm.w8a16``, ``gemm.w4a16``); the packing is
  documented in :mod:`infercore.ops.quant.weights`.
- :func:`from_awq`, :func:`from_gptq`: checkpoint importers.
"""

from infercore.ops.quant.importers import from_awq, from_gptq
from infercore.ops.quant.int8 import gemm_w8a8, quantize_int8, smooth
from infercore.ops.quant.linear import quantized_linear
from infercore.ops.quant.weights import QuantizedWeight, dequantize_weight, quantize_weight

__all__ = [
    "QuantizedWeight",
    "dequantize_weight",
    "from_awq",
    "from_gptq",
    "gemm_w8a8",
    "quantize_int8",
    "quantize_weight",
    "quantized_linear",
    "smooth",
]
