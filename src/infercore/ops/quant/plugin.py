"""Built-in plugin: quantization families (``quant.int8``, ``gemm.w8a8``, ``gemm.w8a16``,
``gemm.w4a16``) and their backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family("quant.int8", "op", "symmetric int8 quantizer: ops.quantize_int8"))
    registry.add_family(Family("gemm.w8a8", "op", "int8 x int8 GEMM with scales: ops.gemm_w8a8"))
    registry.add_family(Family(
        "gemm.w8a16", "op", "8-bit (int8, fp8) weight-only linear: ops.quantized_linear"
    ))
    registry.add_family(Family("gemm.w4a16", "op", "int4 weight-only linear: ops.quantized_linear"))
    from infercore.ops.quant import reference

    for backend in (reference.ReferenceQuantizeInt8, reference.ReferenceGemmW8A8,
                    reference.ReferenceW8A16, reference.ReferenceW4A16):
        registry.register(backend)
    from infercore.ops.quant.torch_int_mm import TorchIntMMW8A8

    registry.register(TorchIntMMW8A8)
    from infercore.ops.quant.triton_quant_int8 import TritonQuantizeInt8
    from infercore.ops.quant.triton_w8a8 import TritonW8A8
    from infercore.ops.quant.triton_weight_only import TritonW4A16, TritonW8A16

    for backend in (TritonQuantizeInt8, TritonW8A8, TritonW8A16, TritonW4A16):
        registry.register(backend)
