"""Reference penalties in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.ops.sampling.filtering import RowParam
from infercore.registry import Backend


def _rows(value: RowParam) -> torch.Tensor | float:
    return value.float()[:, None] if isinstance(value, torch.Tensor) else float(value)


def apply_penalties_reference(
    logits: torch.Tensor,
    token_counts: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    repetition: RowParam,
    presence: RowParam,
    frequency: RowParam,
) -> None:
    """Penalize ``logits`` in place (float32 math, one rounding)."""
    x = logits.float()
    in_output = token_counts > 0
    seen = in_output if prompt_mask is None else in_output | prompt_mask
    rep = _rows(repetition)
    x = torch.where(seen, torch.where(x > 0, x / rep, x * rep), x)
    x = x - _rows(frequency) * token_counts.float() - _rows(presence) * in_output.float()
    logits.copy_(x)


class ReferencePenalties(Backend):
    family = "sample.penalties"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device"

    def run(self, logits, token_counts, prompt_mask, repetition, presence, frequency):
        apply_penalties_reference(
            logits, token_counts, prompt_mask, repetition, presence, frequency
        )
