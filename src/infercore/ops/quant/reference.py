"""Reference backends in plain PyTorch (float32 math): the correctness oracles and CPU path."""

from __future__ import annotations

import torch

from infercore.ops.quant.int8 import scale_shape
from infercore.ops.quant.weights import QuantizedWeight, dequantize_weight
from infercore.registry import Backend

_TINY = torch.finfo(torch.float32).tiny


def quantize_int8_reference(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float()
    if granularity == "token":
        absmax = xf.abs().amax(dim=-1, keepdim=True)
    elif granularity == "channel":
        absmax = xf.abs().amax(dim=0, keepdim=True)
    else:
        absmax = xf.abs().amax().reshape(scale_shape(tuple(x.shape), granularity))
    scale = (absmax / 127.0).clamp(min=_TINY)
    q = torch.round(xf / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


def gemm_w8a8_reference(a_q, b_q, a_scale, b_scale, bias, out_dtype) -> torch.Tensor:
    acc = a_q.float() @ b_q.float()
    out = acc * a_scale.float().reshape(-1, 1) * b_scale.float().reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def quantized_linear_reference(x: torch.Tensor, qw: QuantizedWeight,
                               bias: torch.Tensor | None) -> torch.Tensor:
    out = x.float() @ dequantize_weight(qw, torch.float32).t()
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


class ReferenceQuantizeInt8(Backend):
    family = "quant.int8"
    name = "reference"
    description = "PyTorch, float32 math; every granularity; any device"

    def run(self, x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_int8_reference(x, granularity)


class ReferenceGemmW8A8(Backend):
    family = "gemm.w8a8"
    name = "reference"
    description = "PyTorch: int8 operands multiplied in float32, scales applied after"

    def run(self, a_q, b_q, a_scale, b_scale, bias, out_dtype) -> torch.Tensor:
        return gemm_w8a8_reference(a_q, b_q, a_scale, b_scale, bias, out_dtype)


class _ReferenceWeightOnly(Backend):
    description = "PyTorch: dequantize the weight, then multiply in float32"

    def run(self, x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        return quantized_linear_reference(x, qw, bias)


class ReferenceW8A16(_ReferenceWeightOnly):
    family = "gemm.w8a16"
    name = "reference"


class ReferenceW4A16(_ReferenceWeightOnly):
    family = "gemm.w4a16"
    name = "reference"
