"""FP8 (e4m3) GEMM: infercore's Triton backend against torch._scaled_mm (cuBLASLt).

Operands as a linear layer holds them: ``a_q [M, K]`` row-major, ``b_q = w_q.t()``
(column-major). Scale recipes: tensor-wise, row-wise (per token x per channel) and
block-wise (1x128 activations x 128x128 weights, DeepSeek-V3 style); torch._scaled_mm is
the peer with the same scales where this backend uses it, else (block-wise) with row-wise
scales, named so. Output bf16; FLOPs = 2*M*N*K.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.suites.gemm import LLAMA_8B
from infercore.ops.gemm import GemmFp8Inputs, gemm_fp8, quantize_fp8
from infercore.ops.gemm.fp8_reference import gemm_fp8_reference

#: recipe -> (activation granularity, block, weight granularity, block)
RECIPES = {
    "tensor": ("tensor", (128, 128), "tensor", (128, 128)),
    "rowwise": ("token", (128, 128), "channel", (128, 128)),
    "block": ("block", (1, 128), "block", (128, 128)),
}


def _shapes(quick: bool) -> list[tuple[str, int, int, int, tuple[str, ...]]]:
    """(name, M, N, K, recipes)."""
    if quick:
        return [("8192^3", 8192, 8192, 8192, tuple(RECIPES)),
                ("llama8b down M=16", 16, 4096, 14336, ("rowwise",))]
    shapes = [("8192^3", 8192, 8192, 8192, tuple(RECIPES))]
    shapes += [(f"llama8b {name} M={m}", m, n, k, tuple(RECIPES))
               for m in (16, 512, 4096) for name, n, k in LLAMA_8B]
    return shapes


def _scaled_mm(a_q, b_q, a_s, b_s):
    return torch._scaled_mm(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16)


@suite("gemm_fp8", "e4m3 GEMM vs torch._scaled_mm (cuBLASLt): FLOPs = 2MNK", bound="compute")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    for name, m, n, k, recipes in _shapes(quick):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        for recipe in recipes:
            ga, ba, gb, bb = RECIPES[recipe]
            a_q, a_s = quantize_fp8(x, ga, block_size=ba)
            b_q, b_s = quantize_fp8(w.t(), gb, block_size=bb)
            impls = {"infercore-triton": lambda a_q=a_q, b_q=b_q, a_s=a_s, b_s=b_s: gemm_fp8(
                a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16, backend="triton")}
            if recipe == "block":
                peer = "torch._scaled_mm(rowwise)"
                pa, pb = quantize_fp8(x, "token")[1], quantize_fp8(w.t(), "channel")[1]
            else:
                peer, pa, pb = "torch._scaled_mm", a_s, b_s
            impls[peer] = lambda a_q=a_q, b_q=b_q, pa=pa, pb=pb: _scaled_mm(a_q, b_q, pa, pb)

            def check(a_q=a_q, b_q=b_q, a_s=a_s, b_s=b_s) -> None:
                out = gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16, backend="triton")
                ref = gemm_fp8_reference(GemmFp8Inputs(a_q, b_q, a_s, b_s, None, out))
                err = ((out.float() - ref).norm() / ref.norm()).item()
                if not err < 1e-2:
                    shape = f"{tuple(a_q.shape)}x{tuple(b_q.shape)}"
                    raise AssertionError(f"gemm_fp8 triton {shape}: relative error {err:.2e}")

            yield Case(f"{name} fp8 {recipe}", impls, peer=peer, flops=2.0 * m * n * k,
                       check=check)
