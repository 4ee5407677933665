"""Dense bf16 GEMM: infercore's Triton and CUTLASS backends against torch.matmul (cuBLAS).

Square 4096^3 / 8192^3 products with a row-major ``b``, and the linear layers of a
Llama-3-8B decoder layer (``b = weight.t()`` of an ``[N, K]`` weight) at decode (M=16,
64: the Triton table splits K there), chunked-prefill (512) and prefill (4096) token
counts. FLOPs = 2*M*N*K.

Cases with M <= ``GRAPH_MAX_M`` are timed as CUDA graphs of calls rotating over
``COPIES`` distinct ``a`` and ``b`` (``infercore.bench.graphs``): there one eager call's
host cost is comparable to the kernel and a reused weight would sit in L2. Larger M is
timed eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.graphs import COPIES, GRAPH_MAX_M, rotate
from infercore.ops.gemm import GemmInputs, gemm
from infercore.ops.gemm.reference import gemm_reference
from infercore.registry import get_registry

#: (name, N, K) of Llama-3-8B's projections (hidden 4096, 32/8 heads of 128, MLP 14336).
LLAMA_8B = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096),
            ("down", 4096, 14336)]
#: CUTLASS kernels compile on first use (~36 s each); quick runs time it on this many cases.
QUICK_CUTLASS_CASES = 2


def _shapes(quick: bool) -> list[tuple[str, int, int, int, bool]]:
    """(name, M, N, K, b is weight.t())."""
    if quick:
        return [("8192^3", 8192, 8192, 8192, False),
                ("llama8b gate_up M=4096", 4096, 28672, 4096, True),
                ("llama8b down M=16", 16, 4096, 14336, True)]
    shapes = [(f"{n}^3", n, n, n, False) for n in (4096, 8192)]
    shapes += [(f"llama8b {name} M={m}", m, n, k, True)
               for m in (16, 64, 512, 4096) for name, n, k in LLAMA_8B]
    return shapes


def _usable(backend: str, inputs: GemmInputs) -> bool:
    names = [b.name for b in get_registry().backends("gemm")]
    return backend in names and get_registry().get("gemm", backend).supports(inputs)


@suite("gemm", "bf16 GEMM vs torch.matmul (cuBLAS): FLOPs = 2MNK", bound="compute",
       devices=("cuda", "cpu"))
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    # CPU: one tiny float32 case (the interpreter's bf16 dots are wrong) to test the harness.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = _shapes(quick) if device.type == "cuda" else [("tiny", 33, 65, 48, True)]
    for i, (name, m, n, k, transposed) in enumerate(shapes):
        copies = COPIES if m <= GRAPH_MAX_M else 1
        a_copies = [torch.randn(m, k, device=device, dtype=dtype) for _ in range(copies)]
        if transposed:
            b_copies = [torch.randn(n, k, device=device, dtype=dtype).t() for _ in range(copies)]
        else:
            b_copies = [torch.randn(k, n, device=device, dtype=dtype) for _ in range(copies)]
        a, b = a_copies[0], b_copies[0]
        inputs = GemmInputs(a, b, None, torch.empty(m, n, device=device, dtype=dtype))
        impls = {"torch.matmul": rotate(torch.matmul, a_copies, b_copies)}
        ours = [x for x in ("triton", "cutlass") if _usable(x, inputs)]
        if "cutlass" in ours and quick and i >= QUICK_CUTLASS_CASES:
            ours.remove("cutlass")
        for backend in ours:
            impls[f"infercore-{backend}"] = rotate(gemm, a_copies, b_copies, backend=backend)

        def check(a=a, b=b, ours=tuple(ours)) -> None:
            ref = gemm_reference(a, b, out_dtype=torch.float32)
            for backend in ours:
                out = gemm(a, b, backend=backend).float()
                err = ((out - ref).norm() / ref.norm()).item()
                if not err < 1e-2:
                    raise AssertionError(f"gemm {backend} {tuple(a.shape)}x{tuple(b.shape)}: "
                                         f"relative error {err:.2e}")

        dname = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
        yield Case(f"{name} {dname}{' (b=w.t())' if transposed else ''}", impls,
                   peer="torch.matmul", flops=2.0 * m * n * k, check=check)
