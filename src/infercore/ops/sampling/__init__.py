"""Sampling ops: ``sample`` (family ``sample``) and ``apply_penalties``
(family ``sample.penalties``), and ``sampling_probs``, the distribution ``sample`` draws
from (see :mod:`infercore.ops.sampling.filtering` for its definition)."""

from infercore.ops.sampling.filtering import sampling_probs
from infercore.ops.sampling.penalties_op import PenaltyInputs, apply_penalties
from infercore.ops.sampling.sample_op import SampleInputs, SampleOutput, sample

__all__ = [
    "PenaltyInputs",
    "SampleInputs",
    "SampleOutput",
    "apply_penalties",
    "sample",
    "sampling_probs",
]
