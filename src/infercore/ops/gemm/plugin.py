"""Built-in plugin: the ``gemm``, ``gemm.fp8`` and ``quant.fp8`` families and their backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family("gemm", "op", "Dense GEMM a @ b (+ bias): ops.gemm, ops.linear"))
    registry.add_family(
        Family("gemm.fp8", "op", "Scaled FP8 (e4m3) GEMM with float32 accumulation: ops.gemm_fp8")
    )
    registry.add_family(
        Family("quant.fp8", "op", "FP8 (e4m3) quantization with scales: ops.quantize_fp8")
    )
    from infercore.ops.gemm.reference import ReferenceGemm
    from infercore.ops.gemm.torch_gemm import TorchGemm
    from infercore.ops.gemm.triton_gemm import TritonGemm

    registry.register(ReferenceGemm)
    registry.register(TorchGemm)
    registry.register(TritonGemm)

    from infercore.ops.gemm.fp8_reference import ReferenceGemmFp8, ReferenceQuantFp8
    from infercore.ops.gemm.fp8_torch import TorchGemmFp8
    from infercore.ops.gemm.fp8_triton import TritonGemmFp8

    registry.register(ReferenceQuantFp8)
    registry.register(ReferenceGemmFp8)
    registry.register(TorchGemmFp8)
    registry.register(TritonGemmFp8)
