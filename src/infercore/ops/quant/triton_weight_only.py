"""Triton ``gemm.w8a16`` / ``gemm.w4a16``: dequantize inside the GEMM.

Up to :data:`~infercore.ops.quant.triton_wo_splitk.MAX_M` rows run the split-K decode
kernel (memory-bound); more rows, and int4 groups whose size is an odd multiple of 16,
run the tiled prefill kernel.
"""

from __future__ import annotations

import torch

from infercore.ops.common import TritonBackend
from infercore.ops.quant.linear import QuantizedLinearInputs
from infercore.ops.quant.triton_wo_splitk import MAX_M, splitk_linear
from infercore.ops.quant.triton_wo_tiled import tiled_linear
from infercore.ops.quant.weights import QuantizedWeight
from infercore.registry import compute_capability, triton_interpret


def weight_only_linear_triton(x: torch.Tensor, qw: QuantizedWeight,
                              bias: torch.Tensor | None) -> torch.Tensor:
    """``x [M, K]`` (unit column stride) times the dequantized weight, plus ``bias``."""
    out = torch.empty((x.shape[0], qw.out_features), dtype=x.dtype, device=x.device)
    if x.shape[0] > MAX_M or not splitk_linear(x, qw, bias, out):
        tiled_linear(x, qw, bias, out)
    return out


class _TritonWeightOnly(TritonBackend):
    priority = 100
    description = "Triton dequant-GEMM: split-K for M <= 64 (decode), tiled above (prefill)"

    def not_supported_reasons(self, inputs: QuantizedLinearInputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        qw = inputs.qweight
        if qw.num_groups > 1 and qw.group_size % 16:
            reasons.append(
                f"group_size={qw.group_size} is not a multiple of 16 (K tiles of at least 16 "
                "must not straddle groups)"
            )
        if inputs.device.type == "cpu" and inputs.dtype == torch.bfloat16 and triton_interpret():
            reasons.append("bfloat16 tl.dot gives wrong results under TRITON_INTERPRET")
        if qw.method == "fp8" and inputs.device.type == "cuda":
            cc = compute_capability(inputs.device)
            if cc < (8, 9):
                reasons.append(
                    f"fp8 (e4m3) weights need compute capability >= 8.9, device has {cc[0]}.{cc[1]}"
                )
        return reasons

    def run(self, x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        return weight_only_linear_triton(x, qw, bias)


class TritonW8A16(_TritonWeightOnly):
    family = "gemm.w8a16"
    name = "triton"


class TritonW4A16(_TritonWeightOnly):
    family = "gemm.w4a16"
    name = "triton"
