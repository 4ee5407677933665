"""GEMM through ``torch.mm`` / ``torch.addmm``: cuBLAS(Lt) on CUDA, the CPU BLAS elsewhere."""

from __future__ import annotations

from typing import Any

import torch

from infercore.registry import Backend


def _widening_mm(device: torch.device) -> bool:
    """Whether ``torch.mm(a, b, out_dtype=torch.float32)`` exists for 16-bit inputs here."""
    return device.type == "cuda" and hasattr(torch.ops.aten.mm, "dtype")


class TorchGemm(Backend):
    family = "gemm"
    name = "torch"
    # Above triton (100): cuBLAS is the stronger default for dense 16-bit GEMM until the
    # gemm benchmark suite shows otherwise. Initial choice, to be tuned.
    priority = 150
    description = "torch.mm / torch.addmm (cuBLAS on CUDA); any device"

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        dtype, out_dtype = inputs.dtype, inputs.out_dtype
        if out_dtype == dtype or dtype == torch.float32:
            return reasons
        if out_dtype == torch.float32:
            if not _widening_mm(inputs.device):
                reasons.append(
                    "float32 output from 16-bit inputs needs torch.mm(..., out_dtype=) (CUDA "
                    "only); torch.mm would round the result to the input dtype first"
                )
        else:
            reasons.append(
                f"{out_dtype} output from {dtype} inputs: torch.mm would round twice"
            )
        return reasons

    def run(
        self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
    ) -> None:
        if out.dtype == a.dtype:
            if bias is None:
                torch.mm(a, b, out=out)
            else:
                torch.addmm(bias.to(a.dtype), a, b, out=out)
        elif a.dtype == torch.float32:
            # Narrowing: the float32 product (and bias) rounded once to the output dtype.
            out.copy_(torch.mm(a, b) if bias is None else torch.addmm(bias.float(), a, b))
        else:
            torch.mm(a, b, out_dtype=torch.float32, out=out)
            if bias is not None:
                out.add_(bias)
