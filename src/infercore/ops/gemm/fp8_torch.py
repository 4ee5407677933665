"""FP8 GEMM through ``torch._scaled_mm`` (cuBLASLt on CUDA)."""

from __future__ import annotations

from typing import Any

import torch

from infercore.ops.gemm.fp8 import GemmFp8Inputs
from infercore.registry import Backend

#: cuBLASLt FP8 GEMMs need K and N to be multiples of 16 (torch._scaled_mm checks it).
_ALIGN = 16


def _rowwise(scale: torch.Tensor, shape: tuple[int, int], tensorwise: bool) -> torch.Tensor:
    """A contiguous row-wise scale of ``shape``, broadcasting a tensor-wise one if needed."""
    if tensorwise:
        return scale.reshape(1, 1).expand(shape).contiguous()
    return scale.reshape(shape).contiguous()


class TorchGemmFp8(Backend):
    family = "gemm.fp8"
    name = "torch"
    # Above triton (100): cuBLASLt FP8 is the stronger default where it applies, until the
    # gemm_fp8 benchmark suite shows otherwise. Initial choice, to be tuned.
    priority = 150
    min_compute_capability = (8, 9)
    description = (
        "torch._scaled_mm (cuBLASLt FP8); tensor-wise and row/column-wise scales; "
        "CUDA cc >= 8.9 (row-major a, column-major b, K and N multiples of 16), or CPU"
    )

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        specs = (inputs.a_spec, inputs.b_spec)
        if any(s.k_grouped for s in specs):
            reasons.append(
                "block-wise scales (1x128 / 128x128) are not passed to torch._scaled_mm by "
                "this backend"
            )
        if inputs.device.type != "cuda":
            if any(s.kind != "tensor" for s in specs):
                reasons.append("torch._scaled_mm on CPU takes tensor-wise scales only")
            return reasons
        a, b = inputs.a_q, inputs.b_q
        k, n = b.shape
        if k % _ALIGN or n % _ALIGN:
            reasons.append(f"torch._scaled_mm needs K and N divisible by 16, got K={k}, N={n}")
        if a.stride(1) != 1 or a.stride(0) != k:
            reasons.append("torch._scaled_mm needs a_q row-major and contiguous")
        if b.stride(0) != 1 or b.stride(1) != k:
            reasons.append(
                "torch._scaled_mm needs b_q column-major (w_q.t() of a contiguous [N, K] tensor)"
            )
        rowwise = any(s.kind != "tensor" for s in specs)
        if rowwise and inputs.out_dtype != torch.bfloat16:
            reasons.append("row-wise scales through torch._scaled_mm are used for bfloat16 output")
        return reasons

    def run(self, inputs: GemmFp8Inputs) -> None:
        a, b, out, bias = inputs.a_q, inputs.b_q, inputs.out, inputs.bias
        a_tensorwise = inputs.a_spec.kind == "tensor"
        b_tensorwise = inputs.b_spec.kind == "tensor"
        if a_tensorwise and b_tensorwise:
            sa, sb = inputs.a_scale.reshape(()), inputs.b_scale.reshape(())
        else:
            sa = _rowwise(inputs.a_scale, (a.shape[0], 1), a_tensorwise)
            sb = _rowwise(inputs.b_scale, (1, b.shape[1]), b_tensorwise)
        # torch._scaled_mm takes a bias of the output dtype and none with float32 output.
        fused_bias = bias is not None and out.dtype != torch.float32
        torch._scaled_mm(
            a, b, sa, sb,
            bias=bias.to(out.dtype) if fused_bias else None,
            out_dtype=out.dtype,
            out=out,
            use_fast_accum=inputs.fast_accum,
        )
        if bias is not None and not fused_bias:
            out.add_(bias)
