"""Built-in plugin: speculative decoding families and their backends.

- ``spec.proposer`` (component): ``ngram`` and ``draft_model`` proposers.
- ``spec.rejection`` (op): :func:`infercore.spec.rejection_sample`.
- ``spec.greedy`` (op): :func:`infercore.spec.greedy_verify`.
"""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry, component_backend


@hookimpl
def infercore_register(registry: Registry) -> None:
    from infercore.spec.draft import DraftModelConfig, DraftModelProposer
    from infercore.spec.interface import Proposer
    from infercore.spec.ngram import NgramConfig, NgramProposer

    registry.add_family(Family(
        "spec.proposer", "component",
        "draft-token proposers for speculative decoding: propose(requests, k) -> Proposal",
        protocol=Proposer,
    ))
    registry.register(component_backend(
        "spec.proposer", "ngram", NgramProposer, config_class=NgramConfig,
        description="prompt lookup: continuation of the latest earlier n-gram match; no model",
    ))
    registry.register(component_backend(
        "spec.proposer", "draft_model", DraftModelProposer.from_config,
        config_class=DraftModelConfig,
        description="a smaller model with the target's vocabulary, run k steps",
    ))

    registry.add_family(Family(
        "spec.rejection", "op",
        "exact speculative rejection sampling: infercore.spec.rejection_sample",
    ))
    registry.add_family(Family(
        "spec.greedy", "op", "greedy verification of drafts: infercore.spec.greedy_verify",
    ))
    from infercore.spec.verify.reference import ReferenceGreedyVerifier, ReferenceRejectionSampler

    registry.register(ReferenceRejectionSampler)
    registry.register(ReferenceGreedyVerifier)
    from infercore.spec.verify.triton_rejection import TritonRejectionSampler

    registry.register(TritonRejectionSampler)
