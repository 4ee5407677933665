"""Built-in plugin: the ``norm.rms`` family and its backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family("norm.rms", "op", "RMSNorm over the last dim: ops.rms_norm"))
    from infercore.ops.norm.reference import ReferenceRMSNorm

    registry.register(ReferenceRMSNorm)
    from infercore.ops.norm.triton_rms import TritonRMSNorm

    registry.register(TritonRMSNorm)
