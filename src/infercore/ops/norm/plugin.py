"""Built-in plugin: the ``norm.rms`` and ``norm.add_rms`` families and their backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family("norm.rms", "op", "RMSNorm over the last dim: ops.rms_norm"))
    registry.add_family(Family(
        "norm.add_rms", "op", "residual += x; x = RMSNorm(residual), in place: "
        "ops.fused_add_rms_norm",
    ))
    from infercore.ops.norm.reference import ReferenceRMSNorm
    from infercore.ops.norm.reference_add import ReferenceFusedAddRMSNorm

    registry.register(ReferenceRMSNorm)
    registry.register(ReferenceFusedAddRMSNorm)
    from infercore.ops.norm.triton_add import TritonFusedAddRMSNorm
    from infercore.ops.norm.triton_rms import TritonRMSNorm

    registry.register(TritonRMSNorm)
    registry.register(TritonFusedAddRMSNorm)
