"""fused_add_rms_norm against torch eager, torch.compile and liger-kernel (when installed).

The peers compute ``h = x + residual; y = rms_norm(h)`` out of place (the Hugging Face
decoder step); infercore updates ``x`` and ``residual`` in place. Both move the same
bytes: read x and residual, write the normalized output and the new residual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.compare import check_close
from infercore.ops.norm import fused_add_rms_norm
from infercore.ops.norm.reference import rms_norm_reference

TOKENS = (1, 16, 256, 4096, 16384)
HIDDEN = 4096
EPS = 1e-6


def _add_rms_torch(x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual
    return rms_norm_reference(h, w, eps), h


def _peers() -> dict[str, Callable]:
    peers: dict[str, Callable] = {
        "torch.eager": _add_rms_torch,
        "torch.compile": torch.compile(_add_rms_torch, dynamic=False),
    }
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    except ImportError:
        return peers
    peers["liger"] = lambda x, r, w, eps: LigerFusedAddRMSNormFunction.apply(x, r, w, eps)
    return peers


@suite("add_rms_norm", "fused_add_rms_norm, bf16, hidden 4096: bytes = read x, residual + "
       "write x, residual")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    peers = _peers()
    for tokens in (16384,) if quick else TOKENS:
        x = torch.randn(tokens, HIDDEN, device=device, dtype=torch.bfloat16)
        residual = torch.randn_like(x)
        w = torch.randn(HIDDEN, device=device, dtype=torch.bfloat16)
        impls = {"infercore": lambda x=x, r=residual, w=w: fused_add_rms_norm(x, r, w, EPS)}
        for name, fn in peers.items():
            impls[name] = lambda fn=fn, x=x, r=residual, w=w: fn(x, r, w, EPS)
        nbytes = 4 * x.numel() * x.element_size() + w.numel() * w.element_size()

        def check(x=x, r=residual, w=w) -> None:
            x1, r1 = x.clone(), r.clone()
            fused_add_rms_norm(x1, r1, w, EPS)
            summed = (x.double() + r.double()).to(r.dtype)
            check_close(f"residual {tuple(x.shape)}", r1, summed, 1e-2)
            check_close(f"x {tuple(x.shape)}", x1,
                        rms_norm_reference(summed.double(), w.double(), EPS), 1e-2)

        peer = "liger" if "liger" in impls else "torch.compile"
        yield Case(f"{tokens}x{HIDDEN} bf16", impls, peer=peer, bytes=nbytes, check=check)
