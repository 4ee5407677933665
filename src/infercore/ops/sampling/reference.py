"""Reference sampling in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.ops.sampling.filtering import RowParam, allowed_tokens, prepare
from infercore.ops.sampling.philox import gumbel_noise
from infercore.registry import Backend


def _active(value: RowParam, off: float) -> RowParam | None:
    """``None`` for a number that disables its filter, else the value."""
    if isinstance(value, torch.Tensor):
        return value
    return None if value == off else value


def sample_reference(
    logits: torch.Tensor,
    temperature: RowParam,
    top_k: RowParam,
    top_p: RowParam,
    min_p: RowParam,
    seeds: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask the filtered-out tokens, then ``argmax(s + gumbel)``; greedy rows take argmax."""
    x, s, greedy = prepare(logits, temperature)
    top_k = None if isinstance(top_k, int) and not 0 < top_k < x.shape[1] else top_k
    allowed = allowed_tokens(x, s, top_k, _active(top_p, 1.0), _active(min_p, 0.0))
    score = torch.where(allowed, s + gumbel_noise(seeds, x.shape[1]), float("-inf"))
    ids = torch.where(greedy, x.argmax(dim=-1), score.argmax(dim=-1))
    return ids, torch.logsumexp(s, dim=-1)


class ReferenceSample(Backend):
    family = "sample"
    name = "reference"
    priority = 0
    description = "PyTorch: sort-based filters, Gumbel-max with the shared Philox noise"

    def run(self, logits, temperature, top_k, top_p, min_p, seeds):
        return sample_reference(logits, temperature, top_k, top_p, min_p, seeds)
