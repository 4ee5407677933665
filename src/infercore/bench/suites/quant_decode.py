"""Weight-only quantized linear at decode sizes against cuBLAS bf16 (``F.linear``).

W4A16 (int4, groups of 128) and W8A16 (int8, one scale per output channel; fp8 in the
full run) with bf16 activations, on the Llama-3-8B MLP weights: ``[14336, 4096]``
(gate/up projection) and ``[4096, 14336]`` (down projection). Memory-bound; a case's
bytes are what the quantized kernel must move (packed weight + scales + x + out), so its
GB/s and fraction of the copy ceiling are the kernel's; the cuBLAS row's GB/s is the same
bytes over cuBLAS's time (it moves ``2 / bytes-per-weight`` times more). ``vs_peer`` is
the speedup over cuBLAS, the figure the goals are stated in (W4A16 >= 3x, W8A16 >= 1.8x
at M <= 16).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.ops.quant import quantize_weight, quantized_linear
from infercore.ops.quant.reference import quantized_linear_reference

SHAPES = [(14336, 4096), (4096, 14336)]  # [N, K] = [out_features, in_features]
FORMATS = {  # label -> (method, group_size)
    "w4a16": ("int4", 128),
    "w8a16": ("int8", None),
    "fp8w": ("fp8", None),
}


def _check(x: torch.Tensor, qw, label: str) -> None:
    out = quantized_linear(x, qw, backend="triton")
    ref = quantized_linear_reference(x.double(), qw, None)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    if not err < 1e-2:
        raise AssertionError(f"{label} {tuple(x.shape)} x {qw!r}: relative error {err:.2e}")


@suite("quant_decode", "weight-only W4A16 / W8A16 linear, bf16, M in {1,4,16,64}, vs cuBLAS bf16")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    rows = [1, 16] if quick else [1, 4, 16, 64]
    labels = ["w4a16", "w8a16"] if quick else list(FORMATS)
    for n, k in SHAPES:
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
        qws = {label: quantize_weight(w, *FORMATS[label]) for label in labels}
        for m in rows:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            io_bytes = (m * k + m * n) * 2
            for label, qw in qws.items():
                yield Case(
                    f"{label} M={m} [{n}, {k}]",
                    {
                        "infercore.triton": lambda x=x, qw=qw: quantized_linear(
                            x, qw, backend="triton"
                        ),
                        "cublas.bf16": lambda x=x, w=w: F.linear(x, w),
                    },
                    peer="cublas.bf16",
                    bytes=qw.nbytes + io_bytes,
                    flops=2 * m * n * k,
                    check=lambda x=x, qw=qw, label=label: _check(x, qw, label),
                )
