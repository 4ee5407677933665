"""Built-in plugin: the ``sample`` and ``sample.penalties`` families and their backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family(
        "sample", "op", "top-k/top-p/min-p sampling without a sort: ops.sample"
    ))
    registry.add_family(Family(
        "sample.penalties", "op",
        "repetition/presence/frequency penalties, in place: ops.apply_penalties",
    ))
    from infercore.ops.sampling.reference import ReferenceSample
    from infercore.ops.sampling.reference_penalties import ReferencePenalties

    registry.register(ReferenceSample)
    registry.register(ReferencePenalties)
    from infercore.ops.sampling.triton_penalties import TritonPenalties
    from infercore.ops.sampling.triton_sample import TritonSample

    registry.register(TritonSample)
    registry.register(TritonPenalties)
