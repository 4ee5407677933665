"""Reference FP8 backends in plain PyTorch: quantization and scaled GEMM (the oracles)."""

from __future__ import annotations

import torch

from infercore.ops.gemm.fp8 import GROUP, GemmFp8Inputs, ScaleSpec
from infercore.ops.gemm.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    expand_scale,
    scale_groups,
    scale_shape,
)
from infercore.registry import Backend

#: Floor of amax(|x|) so that an all-zero group gets a finite scale (and quantizes to 0).
_AMAX_FLOOR = 1e-12


def _amax(xf: torch.Tensor, granularity: str, block_size: tuple[int, int]) -> torch.Tensor:
    a = xf.abs()
    if granularity == "tensor":
        return a.amax().reshape((1,) * xf.dim())
    if granularity == "token":
        return a.amax(dim=-1, keepdim=True)
    if granularity == "channel":
        return a.amax(dim=0, keepdim=True)
    (rows, cols), (br, bc) = xf.shape, block_size
    sr, sc = scale_shape(xf.shape, "block", block_size)
    padded = torch.nn.functional.pad(a, (0, sc * bc - cols, 0, sr * br - rows))
    return padded.view(sr, br, sc, bc).amax(dim=(1, 3))


def quantize_fp8_reference(
    x: torch.Tensor,
    granularity: str,
    block_size: tuple[int, int],
    scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize in float32 math; ``q`` keeps ``x``'s memory layout (a transposed view
    gives a column-major ``q``)."""
    xf = x.float()
    if scale is None:
        amax = _amax(xf, granularity, block_size)
        scale = (amax.clamp(min=_AMAX_FLOOR) / FP8_MAX).to(torch.float32)
    full = expand_scale(scale, x.shape, scale_groups(x.dim(), granularity, block_size))
    q = torch.empty_like(x, dtype=FP8_DTYPE)
    q.copy_((xf / full).clamp(-FP8_MAX, FP8_MAX))
    return q, scale


class ReferenceQuantFp8(Backend):
    family = "quant.fp8"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device"

    def run(
        self,
        x: torch.Tensor,
        granularity: str,
        block_size: tuple[int, int],
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_fp8_reference(x, granularity, block_size, scale)


def dequantize_operand(
    q: torch.Tensor, scale: torch.Tensor, spec: ScaleSpec, operand: str, dtype: torch.dtype
) -> torch.Tensor:
    """``q * scale`` in ``dtype`` for a GEMM operand ``"a"`` (``[M, K]``) or ``"b"``
    (``[K, N]``) whose scale has the layout ``spec`` describes."""
    scale2d = scale.reshape(1, 1) if spec.kind == "tensor" else scale
    k_group = GROUP if spec.k_grouped else 0
    groups = (spec.outer, k_group) if operand == "a" else (k_group, spec.outer)
    return q.to(dtype) * expand_scale(scale2d.to(dtype), q.shape, groups)


def gemm_fp8_reference(inputs: GemmFp8Inputs, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantize both operands to ``dtype``, multiply, add the bias; not rounded."""
    a = dequantize_operand(inputs.a_q, inputs.a_scale, inputs.a_spec, "a", dtype)
    b = dequantize_operand(inputs.b_q, inputs.b_scale, inputs.b_spec, "b", dtype)
    c = a @ b
    return c if inputs.bias is None else c + inputs.bias.to(dtype)


class ReferenceGemmFp8(Backend):
    family = "gemm.fp8"
    name = "reference"
    priority = 0
    description = "dequantize to float32, PyTorch matmul; any device"

    def run(self, inputs: GemmFp8Inputs) -> None:
        inputs.out.copy_(gemm_fp8_reference(inputs))
