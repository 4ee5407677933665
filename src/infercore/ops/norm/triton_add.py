"""Triton fused residual add + RMSNorm: one read and one write of x and of the residual."""

from __future__ import annotations

from typing import Any

import torch

from infercore.ops.common import TritonBackend
from infercore.ops.norm.triton_rms import launch_rms_norm
from infercore.ops.triton_launch import rows_view


def fused_add_rms_norm_triton(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> None:
    x2, r2 = rows_view(x), rows_view(residual)
    assert x2 is not None and r2 is not None, "checked by not_supported_reasons"
    launch_rms_norm(x2, weight, x2, eps, residual2=r2)


class TritonFusedAddRMSNorm(TritonBackend):
    family = "norm.add_rms"
    name = "triton"
    priority = 100
    description = "Triton, one pass per row, in place; CUDA (CPU under TRITON_INTERPRET=1)"

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        for name in ("x", "residual"):
            if rows_view(getattr(inputs, name)) is None:
                reasons.append(
                    f"{name} cannot be viewed as [rows, hidden] with unit column stride, "
                    "which the in-place kernel writes through"
                )
        return reasons

    def run(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            eps: float) -> None:
        fused_add_rms_norm_triton(x, residual, weight, eps)
