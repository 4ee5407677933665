"""Triton GEMM backend: tiled, grouped program order; persistent TMA kernel on Hopper."""

from __future__ import annotations

import torch

from infercore.ops.common import TritonBackend
from infercore.ops.gemm.triton_configs import GemmConfig
from infercore.ops.gemm.triton_launch import launch_matmul


def gemm_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: GemmConfig | None = None,
) -> torch.Tensor:
    """``out = a @ b + bias`` through the Triton kernels; ``config`` overrides the table."""
    launch_matmul(a, b, out, bias=bias, config=config)
    return out


class TritonGemm(TritonBackend):
    family = "gemm"
    name = "triton"
    priority = 100
    description = (
        "Triton tiles in grouped order; persistent + TMA descriptors on Hopper; "
        "CUDA (CPU under TRITON_INTERPRET=1)"
    )

    def run(
        self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
    ) -> None:
        gemm_triton(a, b, bias, out)
