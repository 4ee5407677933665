"""FP8 (e4m3) GEMM: infercore's Triton backend against torch._scaled_mm (cuBLASLt).

Operands as a linear layer holds them: ``a_q [M, K]`` row-major, ``b_q = w_q.t()``
(column-major). Scale recipes: tensor-wise, row-wise (per token x per channel) and
block-wise (1x128 activations x 128x128 weights, DeepSeek-V3 style); torch._scaled_mm is
the peer with the same scales where this backend uses it, else (block-wise) with row-wise
scales, named so. Tensor-wise and row-wise cases run twice: summing each K step into
float32 (both sides' default), and with ``fast_accum=True`` against
``torch._scaled_mm(use_fast_accum=True)`` (cases named "fast-accum"). Output bf16;
FLOPs = 2*M*N*K.

Cases with M <= ``GRAPH_MAX_M`` are timed as CUDA graphs of calls rotating over
``COPIES`` distinct activations and weights (``infercore.bench.graphs``), where one eager
call's host cost is comparable to the kernel; larger M is timed eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.graphs import COPIES, GRAPH_MAX_M, rotate
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


def _scaled_mm(a_q, b_q, a_s, b_s, fast_accum=False):
    return torch._scaled_mm(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16,
                            use_fast_accum=fast_accum)


@suite("gemm_fp8", "e4m3 GEMM vs torch._scaled_mm (cuBLASLt): FLOPs = 2MNK", bound="compute")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    for name, m, n, k, recipes in _shapes(quick):
        copies = COPIES if m <= GRAPH_MAX_M else 1
        xs = [torch.randn(m, k, device=device, dtype=torch.bfloat16) for _ in range(copies)]
        ws = [torch.randn(n, k, device=device, dtype=torch.bfloat16) for _ in range(copies)]
        for recipe in recipes:
            ga, ba, gb, bb = RECIPES[recipe]
            a_qs, a_ss = zip(*(quantize_fp8(x, ga, block_size=ba) for x in xs), strict=True)
            b_qs, b_ss = zip(*(quantize_fp8(w.t(), gb, block_size=bb) for w in ws), strict=True)
            for fast in (False, True) if recipe != "block" else (False,):
                impls = {"infercore-triton": rotate(gemm_fp8, a_qs, b_qs, a_ss, b_ss,
                                                    out_dtype=torch.bfloat16, fast_accum=fast,
                                                    backend="triton")}
                if recipe == "block":
                    peer = "torch._scaled_mm(rowwise)"
                    pas = [quantize_fp8(x, "token")[1] for x in xs]
                    pbs = [quantize_fp8(w.t(), "channel")[1] for w in ws]
                else:
                    peer, pas, pbs = "torch._scaled_mm", a_ss, b_ss
                impls[peer] = rotate(_scaled_mm, a_qs, b_qs, pas, pbs, fast_accum=fast)

                def check(a_q=a_qs[0], b_q=b_qs[0], a_s=a_ss[0], b_s=b_ss[0],
                          fast=fast) -> None:
                    out = gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16,
                                   fast_accum=fast, backend="triton")
                    ref = gemm_fp8_reference(GemmFp8Inputs(a_q, b_q, a_s, b_s, None, out))
                    err = ((out.float() - ref).norm() / ref.norm()).item()
                    if not err < 1e-2:
                        shape = f"{tuple(a_q.shape)}x{tuple(b_q.shape)}"
                        raise AssertionError(
                            f"gemm_fp8 triton {shape} fast_accum={fast}: relative error "
                            f"{err:.2e}")

                label = f"{name} fp8 {recipe}" + (" fast-accum" if fast else "")
                yield Case(label, impls, peer=peer, flops=2.0 * m * n * k, check=check)
