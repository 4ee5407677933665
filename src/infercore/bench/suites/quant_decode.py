"""Weight-only quantized linear at decode sizes against cuBLAS bf16 (``F.linear``).

W4A16 (int4, groups of 128) and W8A16 (int8, one scale per output channel; fp8 in the
full run) with bf16 activations, on the Llama-3-8B MLP weights: ``[14336, 4096]``
(gate/up projection) and ``[4096, 14336]`` (down projection). Memory-bound; a case's
bytes are what the quantized kernel must move (packed weight + scales + x + out), so its
GB/s and fraction of the copy ceiling are the kernel's; the cuBLAS row's GB/s is the same
bytes over cuBLAS's time (it moves ``2 / bytes-per-weight`` times more). ``vs_peer`` is
the speedup over cuBLAS, the figure the goals are stated in (W4A16 >= 3x, W8A16 >= 1.8x
at M <= 16).

Timing: at these sizes one eager call's host cost (dispatch, launch) exceeds the kernel,
and a weight read by every call stays in L2. So every row, ours and cuBLAS's, is a CUDA
graph of ``CALLS`` calls cycling over ``COPIES`` distinct weights (8 bf16 [14336, 4096]
copies: 940 MB; 8 int4 copies: ~240 MB, about 4x L2), activations and outputs; the time
per call is the median replay time over ``CALLS`` (``infercore.bench.graphs``). The check
runs before timing on the first copy.

``read.floor`` reads the case's bytes from as many rotating buffers, timed the
same way, with the fastest of a few streaming read kernels (:mod:`infercore.bench.floor`):
the least time anything that moves those bytes could take at this size, so its
``vs_peer`` is the largest speedup over cuBLAS the case allows here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.bench.floor import read_floor
from infercore.bench.graphs import COPIES, rotate
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
        ws = [torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
              for _ in range(COPIES)]
        qws = {label: [quantize_weight(w, *FORMATS[label]) for w in ws] for label in labels}
        for m in rows:
            xs = [torch.randn(m, k, device=device, dtype=torch.bfloat16) for _ in ws]
            io_bytes = (m * k + m * n) * 2
            for label, qw_copies in qws.items():
                nbytes = qw_copies[0].nbytes + io_bytes
                yield Case(
                    f"{label} M={m} [{n}, {k}]",
                    {
                        "infercore.triton": rotate(quantized_linear, xs, qw_copies,
                                                   backend="triton"),
                        "cublas.bf16": rotate(F.linear, xs, ws),
                        "read.floor": read_floor(nbytes, device)[0],
                    },
                    peer="cublas.bf16",
                    bytes=nbytes,
                    flops=2 * m * n * k,
                    check=lambda x=xs[0], qw=qw_copies[0], label=label: _check(x, qw, label),
                    moves_only=("read.floor",),
                )
