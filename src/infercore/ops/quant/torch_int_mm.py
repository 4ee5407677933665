"""``gemm.w8a8`` through ``torch._int_mm`` (cuBLASLt int8 GEMM on CUDA), scales after."""

from __future__ import annotations

import torch

from infercore.ops.quant.int8 import GemmW8A8Inputs
from infercore.registry import Backend


class TorchIntMMW8A8(Backend):
    """int32 product from ``torch._int_mm``, then the float32 epilogue in PyTorch ops.

    On CUDA, ``torch._int_mm`` rejects ``M <= 16`` and K or N not multiples of 8 (cuBLASLt
    int8 alignment); on CPU it takes any shape.
    """

    family = "gemm.w8a8"
    name = "torch"
    priority = 50
    description = "torch._int_mm (cuBLASLt on CUDA) + PyTorch epilogue"

    def _compute_environment_reasons(self) -> list[str]:
        reasons = super()._compute_environment_reasons()
        if not hasattr(torch, "_int_mm"):
            reasons.append(f"torch {torch.__version__} has no torch._int_mm")
        return reasons

    def not_supported_reasons(self, inputs: GemmW8A8Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if inputs.device.type == "cuda":
            m, k = inputs.a_q.shape
            n = inputs.b_q.shape[1]
            if m <= 16:
                reasons.append(f"torch._int_mm on CUDA needs M > 16 rows of a_q, got M={m}")
            if k % 8 or n % 8:
                reasons.append(
                    f"torch._int_mm on CUDA needs K and N multiples of 8, got K={k}, N={n}"
                )
        return reasons

    def run(self, a_q, b_q, a_scale, b_scale, bias, out_dtype) -> torch.Tensor:
        acc = torch._int_mm(a_q, b_q)
        out = acc.float().mul_(a_scale.reshape(-1, 1)).mul_(b_scale.reshape(1, -1))
        if bias is not None:
            out.add_(bias.float())
        return out.to(out_dtype)
