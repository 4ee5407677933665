"""Reference fused residual add + RMSNorm in plain PyTorch: the oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.ops.norm.reference import rms_norm_reference
from infercore.registry import Backend


def fused_add_rms_norm_reference(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> None:
    """``residual += x`` (rounded to its dtype), then ``x = rms_norm(residual)``, in place."""
    residual.add_(x)
    x.copy_(rms_norm_reference(residual, weight, eps))


class ReferenceFusedAddRMSNorm(Backend):
    family = "norm.add_rms"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device, any strides"

    def run(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            eps: float) -> None:
        fused_add_rms_norm_reference(x, residual, weight, eps)
