"""Reference RMSNorm in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.registry import Backend


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * rstd * weight.float()).to(x.dtype).contiguous()


class ReferenceRMSNorm(Backend):
    family = "norm.rms"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device"

    def run(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return rms_norm_reference(x, weight, eps)
