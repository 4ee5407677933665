"""Built-in plugin: the ``rope`` family and its backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family(
        "rope", "op", "rotary position embedding, in place on q and k: ops.rotary"
    ))
    from infercore.ops.rope.reference import ReferenceRotary

    registry.register(ReferenceRotary)
    from infercore.ops.rope.triton_rope import TritonRotary

    registry.register(TritonRotary)
