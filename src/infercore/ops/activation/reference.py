"""Reference gated activations in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infercore.registry import Backend


def act_and_mul_reference(x: torch.Tensor, activation: str) -> torch.Tensor:
    """``act(x[..., :d]) * x[..., d:]`` in float32 (float64 for float64 ``x``), rounded once.

    ``activation`` is ``"silu"``, ``"gelu"`` (erf form) or ``"gelu_tanh"``.
    """
    d = x.shape[-1] // 2
    compute = torch.promote_types(x.dtype, torch.float32)
    a, b = x[..., :d].to(compute), x[..., d:].to(compute)
    if activation == "silu":
        g = F.silu(a)
    elif activation == "gelu":
        g = F.gelu(a)
    else:
        assert activation == "gelu_tanh", activation
        g = F.gelu(a, approximate="tanh")
    return (g * b).to(x.dtype)


class _ReferenceGatedAct(Backend):
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device, any strides"

    def run(self, x: torch.Tensor, out: torch.Tensor, activation: str) -> None:
        out.copy_(act_and_mul_reference(x, activation))


class ReferenceSiluAndMul(_ReferenceGatedAct):
    family = "act.silu_mul"


class ReferenceGeluAndMul(_ReferenceGatedAct):
    family = "act.gelu_mul"
