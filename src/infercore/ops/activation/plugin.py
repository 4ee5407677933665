"""Built-in plugin: the gated-activation families ``act.silu_mul`` and ``act.gelu_mul``."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family(
        "act.silu_mul", "op", "silu(x[..., :d]) * x[..., d:]: ops.silu_and_mul"
    ))
    registry.add_family(Family(
        "act.gelu_mul", "op", "gelu(x[..., :d]) * x[..., d:] (erf or tanh): ops.gelu_and_mul"
    ))
    from infercore.ops.activation.reference import ReferenceGeluAndMul, ReferenceSiluAndMul

    registry.register(ReferenceSiluAndMul)
    registry.register(ReferenceGeluAndMul)
    from infercore.ops.activation.triton_act import TritonGeluAndMul, TritonSiluAndMul

    registry.register(TritonSiluAndMul)
    registry.register(TritonGeluAndMul)
