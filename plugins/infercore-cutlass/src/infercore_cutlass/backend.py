"""The ``cutlass`` backend of the ``gemm`` family."""

from __future__ import annotations

import shutil
from typing import Any

import torch

from infercore.registry import Backend, compute_capability
from infercore_cutlass.kernels import ALIGNMENT


class CutlassGemm(Backend):
    family = "gemm"
    name = "cutlass"
    # Below triton (100) and torch (150): kernels compile on first use (~36-70 s each); an
    # eager call costs 25-28 us of host time on an H200 machine (13-14 us of it the launch),
    # more than a decode-sized cuBLAS GEMM takes there, and decode-sized CUTLASS kernels
    # are slower on the GPU too (Llama-8B at M=16: 0.53-0.82x cuBLAS, graph-timed).
    priority = 50
    devices = ("cuda",)
    dtypes = (torch.float16, torch.bfloat16)
    min_compute_capability = (8, 0)
    requires = ("cutlass_cppgen",)
    description = (
        "CUTLASS (nvidia-cutlass Python interface): SM90 TMA warp-specialized kernels on "
        "Hopper, SM80 multistage elsewhere; compiled once, cached on disk"
    )

    def _compute_environment_reasons(self) -> list[str]:
        reasons = super()._compute_environment_reasons()
        if reasons:
            return reasons
        if shutil.which("nvcc") is None:
            # cutlass_cppgen runs `nvcc --version` from PATH before every first compile.
            return ["needs nvcc (the CUDA toolkit) on PATH to compile kernels"]
        try:
            from infercore_cutlass.runtime import load_cutlass

            load_cutlass()
        except Exception as exc:
            return [f"cutlass_cppgen failed to import: {type(exc).__name__}: {exc}"]
        return []

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if reasons or inputs.device.type != "cuda":
            return reasons
        cc = compute_capability(inputs.device)
        if cc[0] not in (8, 9):
            reasons.append(
                f"kernels are generated for sm80-sm90 (Ampere to Hopper); device has "
                f"{cc[0]}.{cc[1]}"
            )
        if inputs.device.index not in (None, 0):
            reasons.append("runs on CUDA device 0 (cutlass_cppgen loads kernels into one context)")
        a, b, out = inputs.a, inputs.b, inputs.out
        if out.dtype not in (a.dtype, torch.float32):
            reasons.append(f"out_dtype must be {a.dtype} or float32, got {out.dtype}")
        if not a.is_contiguous():
            reasons.append("a must be row-major and contiguous")
        if not (b.is_contiguous() or b.t().is_contiguous()):
            reasons.append("b must be contiguous row-major [K, N] or column-major (weight.t())")
        k, n = b.shape
        if k % ALIGNMENT or n % ALIGNMENT:
            reasons.append(f"K and N must be multiples of {ALIGNMENT}, got K={k}, N={n}")
        if any(t.data_ptr() % 16 for t in (a, b)):
            reasons.append("a and b must start at 16-byte aligned addresses")
        return reasons

    def run(
        self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
    ) -> None:
        from infercore_cutlass.kernels import launch

        if out.numel() == 0:
            return
        if a.shape[1] == 0:
            out.zero_()
        else:
            direct = out.is_contiguous() and out.data_ptr() % 16 == 0
            d = out if direct else torch.empty(out.shape, dtype=out.dtype, device=out.device)
            launch(a, b, d)
            if not direct:
                out.copy_(d)
        if bias is not None:
            out.add_(bias)
