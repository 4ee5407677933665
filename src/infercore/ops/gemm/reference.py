"""Reference GEMM in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.registry import Backend


def gemm_reference(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``a @ b + bias`` on inputs upcast to float32 (float64 stays float64), rounded once."""
    wide = torch.float64 if a.dtype == torch.float64 else torch.float32
    c = a.to(wide) @ b.to(wide)
    if bias is not None:
        c = c + bias.to(wide)
    return c.to(out_dtype or a.dtype)


class ReferenceGemm(Backend):
    family = "gemm"
    name = "reference"
    priority = 0
    description = "PyTorch matmul on inputs upcast to float32; any device"

    def run(
        self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
    ) -> None:
        out.copy_(gemm_reference(a, b, bias, out.dtype))
