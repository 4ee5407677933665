"""Entry point ``cutlass`` of the ``infercore`` group: registers the ``cutlass`` backend."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    from infercore_cutlass.backend import CutlassGemm

    registry.register(CutlassGemm)
