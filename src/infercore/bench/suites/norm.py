"""RMSNorm against torch eager, torch.compile and liger-kernel (when installed)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.ops.norm import rms_norm
from infercore.ops.norm.reference import rms_norm_reference


def _peers(device: torch.device) -> dict[str, object]:
    peers: dict[str, object] = {"torch.eager": rms_norm_reference}
    if device.type != "cuda":  # CPU quick runs test the harness; no compiler needed
        return peers
    peers["torch.compile"] = torch.compile(rms_norm_reference, dynamic=False)
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except ImportError:
        return peers
    peers["liger"] = lambda x, w, e: LigerRMSNormFunction.apply(x, w, e)
    return peers


@suite("norm", "rms_norm, bf16, hidden 4096: bytes = read x + write y",
       devices=("cuda", "cpu"))
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    eps = 1e-6
    peers = _peers(device)
    shapes = [(16384, 4096)] if device.type == "cuda" else [(37, 96)]
    if not quick and device.type == "cuda":
        shapes = [(1, 4096), (256, 4096), (4096, 4096), (16384, 4096), (16384, 8192)]
    for rows, hidden in shapes:
        x = torch.randn(rows, hidden, device=device, dtype=torch.bfloat16)
        w = torch.randn(hidden, device=device, dtype=torch.bfloat16)
        impls = {"infercore": lambda x=x, w=w: rms_norm(x, w, eps)}
        for name, fn in peers.items():
            impls[name] = lambda fn=fn, x=x, w=w: fn(x, w, eps)
        peer = next(p for p in ("liger", "torch.compile", "torch.eager") if p in impls)
        nbytes = 2 * x.numel() * x.element_size() + w.numel() * w.element_size()

        def check(x=x, w=w) -> None:
            out = rms_norm(x, w, eps)
            ref = rms_norm_reference(x.double(), w.double(), eps)
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                raise AssertionError(f"rms_norm {tuple(x.shape)}: relative error {err:.2e}")

        yield Case(f"{rows}x{hidden} bf16", impls, peer=peer, bytes=nbytes, check=check)
