"""Triton FP8 GEMM: e4m3 ``tl.dot`` with float32 accumulation, scales in the epilogue
(tensor / row / column) or per K step (1x128 and 128x128 blocks)."""

from __future__ import annotations

import torch

from infercore.ops.common import TritonBackend
from infercore.ops.gemm.fp8 import GemmFp8Inputs, ScaleSpec
from infercore.ops.gemm.fp8_quant import FP8_DTYPE
from infercore.ops.gemm.triton_configs import GemmConfig
from infercore.ops.gemm.triton_launch import OperandScale, launch_matmul


def _operand_scale(scale: torch.Tensor, spec: ScaleSpec, operand: str) -> OperandScale:
    """The kernel's ``[outer groups, K groups]`` view of an operand's scale."""
    if spec.kind == "tensor":
        view = scale.reshape(1, 1)
    else:
        view = scale if operand == "a" else scale.t()
    return OperandScale(view, spec.outer, spec.k_grouped)


def gemm_fp8_triton(inputs: GemmFp8Inputs, config: GemmConfig | None = None) -> torch.Tensor:
    """Run ``inputs`` through the Triton kernels; ``config`` overrides the table."""
    launch_matmul(
        inputs.a_q,
        inputs.b_q,
        inputs.out,
        bias=inputs.bias,
        a_scale=_operand_scale(inputs.a_scale, inputs.a_spec, "a"),
        b_scale=_operand_scale(inputs.b_scale, inputs.b_spec, "b"),
        config=config,
        fast_accum=inputs.fast_accum,
    )
    return inputs.out


class TritonGemmFp8(TritonBackend):
    family = "gemm.fp8"
    name = "triton"
    priority = 100
    dtypes = (FP8_DTYPE,)
    # FP8 tensor-core instructions exist from Ada (8.9) on.
    min_compute_capability = (8, 9)
    description = (
        "Triton e4m3 tl.dot; tensor/row/column scales and 1x128 / 128x128 blocks; "
        "CUDA cc >= 8.9 (CPU under TRITON_INTERPRET=1)"
    )

    def run(self, inputs: GemmFp8Inputs) -> None:
        gemm_fp8_triton(inputs)
