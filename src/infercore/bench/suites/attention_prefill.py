"""Causal prefill (varlen) against SDPA's flash and cuDNN backends on the same tensors.

FLOPs = 4 * batch * heads * seq^2 * head_dim / 2 (causal: half the score matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.ops.attention import varlen
from infercore.ops.attention.reference import varlen_attention_reference

DTYPE = torch.bfloat16


def _sdpa(backend_name: str, q, k, v, gqa: bool) -> Callable[[], torch.Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run() -> torch.Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    return run


def _case(batch: int, heads: int, kv_heads: int, seq: int, head_dim: int,
          device: torch.device) -> Case:
    dt = DTYPE
    # [batch, seq, heads, dim] storage: packed rows for varlen, transposed views for SDPA.
    q = torch.randn(batch, seq, heads, head_dim, device=device, dtype=dt)
    k = torch.randn(batch, seq, kv_heads, head_dim, device=device, dtype=dt)
    v = torch.randn_like(k)
    qp, kp, vp = (t.view(batch * seq, t.shape[2], head_dim) for t in (q, k, v))
    cu = torch.arange(0, (batch + 1) * seq, seq, dtype=torch.int32, device=device)
    out = torch.empty_like(qp)

    def ours() -> None:
        varlen(qp, kp, vp, cu, cu, seq, seq, causal=True, out=out, skip_checks=True)

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    gqa = heads != kv_heads
    impls = {
        "infercore": ours,
        "sdpa.flash": _sdpa("FLASH_ATTENTION", qt, kt, vt, gqa),
        "sdpa.cudnn": _sdpa("CUDNN_ATTENTION", qt, kt, vt, gqa),
    }

    def check() -> None:
        out.fill_(float("nan"))
        ours()
        one = cu[:2]
        ref = varlen_attention_reference(qp[:seq], kp[:seq], vp[:seq], one, one)[0].double()
        err = ((out[:seq].double() - ref).norm() / ref.norm()).item()
        if not err < 1e-2:
            raise AssertionError(f"prefill {batch}x{heads}x{seq}: relative error {err:.2e}")
        if not torch.isfinite(out).all():
            raise AssertionError("prefill left unwritten (NaN) rows")

    flops = 4 * batch * heads * seq * seq * head_dim / 2
    nbytes = (q.numel() * 2 + k.numel() + v.numel()) * q.element_size()
    name = f"B{batch} H{heads}/{kv_heads} S{seq} D{head_dim} causal"
    return Case(name, impls, peer="sdpa.flash", bytes=nbytes, flops=flops, check=check)


@suite("attention_prefill",
       "causal varlen prefill, bf16: TFLOP/s = 4*B*H*S^2*D/2; peers SDPA flash and cuDNN",
       bound="compute")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    shapes = [(4, 32, 32, 4096, 128)]
    if not quick:
        shapes += [(1, 32, 32, 16384, 128), (16, 32, 32, 1024, 128), (4, 32, 8, 4096, 128),
                   (4, 32, 32, 4096, 64)]
    for shape in shapes:
        yield _case(*shape, device=device)
