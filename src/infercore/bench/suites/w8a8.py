"""INT8 W8A8 GEMM at Llama-3-8B layer shapes against ``torch._int_mm`` and cuBLAS bf16.

Peer: raw ``torch._int_mm`` (cuBLASLt int8, int32 output, no scaling). Also timed: the
Triton kernel with its fused epilogue (per-token x per-channel scales, bf16 out), the
``torch`` backend (``torch._int_mm`` + PyTorch epilogue), the whole dynamic linear
(``quantize_int8`` of bf16 activations + Triton GEMM) and cuBLAS bf16 ``F.linear``.
Compute-bound: the fraction is of the measured bf16 matmul ceiling; int8 tensor cores
peak at twice that rate, so int8 rows may exceed 1.

Cases with M <= ``GRAPH_MAX_M`` are timed as CUDA graphs of calls rotating over
``COPIES`` distinct activations and weights (``infercore.bench.graphs``), where one eager
call's host cost is comparable to the kernel; larger M is timed eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.bench.graphs import COPIES, GRAPH_MAX_M, rotate
from infercore.ops.quant import gemm_w8a8, quantize_int8
from infercore.ops.quant.reference import gemm_w8a8_reference

LLAMA_8B = {  # name -> [N, K]
    "qkv": (6144, 4096),
    "o": (4096, 4096),
    "gate_up": (28672, 4096),
    "down": (4096, 14336),
}


def _check(a, b, a_s, b_s) -> None:
    out = gemm_w8a8(a, b, a_s, b_s, out_dtype=torch.bfloat16, backend="triton")
    ref = gemm_w8a8_reference(a, b, a_s.double(), b_s.double(), None, torch.float64)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    if not err < 1e-2:
        raise AssertionError(f"gemm_w8a8 {tuple(a.shape)} x {tuple(b.shape)}: error {err:.2e}")


def _w8a8_linear(x: torch.Tensor, b: torch.Tensor, b_s: torch.Tensor) -> torch.Tensor:
    xq, xs = quantize_int8(x, "token")
    return gemm_w8a8(xq, b, xs, b_s, out_dtype=x.dtype)


@suite("w8a8", "int8 W8A8 GEMM at Llama-3-8B shapes vs torch._int_mm and cuBLAS bf16",
       bound="compute")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    if quick:
        plan = [(2048, "qkv"), (2048, "down")]
    else:
        plan = [(m, name) for m in (32, 512, 4096) for name in LLAMA_8B]
    for m, name in plan:
        n, k = LLAMA_8B[name]
        copies = COPIES if m <= GRAPH_MAX_M else 1
        xs = [torch.randn(m, k, device=device, dtype=torch.bfloat16) for _ in range(copies)]
        ws = [torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
              for _ in range(copies)]
        a, a_s = zip(*(quantize_int8(x, "token") for x in xs), strict=True)
        # [K, N] column-major weights, [1, N] scales
        wq, w_s = zip(*(quantize_int8(w.t(), "channel") for w in ws), strict=True)
        impls = {
            "infercore.triton": rotate(gemm_w8a8, a, wq, a_s, w_s, out_dtype=torch.bfloat16,
                                       backend="triton"),
            "infercore.torch": rotate(gemm_w8a8, a, wq, a_s, w_s, out_dtype=torch.bfloat16,
                                      backend="torch"),
            "torch._int_mm": rotate(torch._int_mm, a, wq),
            "infercore.quant+triton": rotate(_w8a8_linear, xs, wq, w_s),
            "cublas.bf16": rotate(F.linear, xs, ws),
        }
        yield Case(
            f"{name} M={m} [{n}, {k}]",
            impls,
            peer="torch._int_mm",
            flops=2 * m * n * k,
            bytes=m * k + n * k + 2 * m * n,
            check=lambda a=a[0], wq=wq[0], a_s=a_s[0], w_s=w_s[0]: _check(a, wq, a_s, w_s),
        )
