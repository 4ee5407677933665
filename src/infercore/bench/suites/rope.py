"""rotary against torch eager, torch.compile and liger-kernel (when installed).

Llama-3-8B attention shapes: 32 query heads and 8 key heads of 128, neox style, bf16,
a float32 cos/sin cache. The peers follow Hugging Face: cos/sin for the batch's
positions are gathered once per forward (outside the timed call) and applied per layer,
out of place for torch (``q * cos + rotate_half(q) * sin``), in place for liger.
infercore gathers cos/sin from the cache inside the kernel; ``infercore.qkv`` runs on
q and k as strided views of one fused qkv projection output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.compare import check_close
from infercore.ops.rope import build_cos_sin_cache, rotary
from infercore.ops.rope.reference import rotary_reference

TOKENS = (1, 16, 256, 4096, 16384)
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
MAX_POSITION = 8192


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope_torch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _liger() -> Callable | None:
    try:
        from liger_kernel.ops.rope import LigerRopeFunction
    except ImportError:
        return None
    return LigerRopeFunction.apply


@suite("rope", "rotary, bf16, 32/8 heads x 128, neox: bytes = read + write q, k + cache rows")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    compiled = torch.compile(_rope_torch, dynamic=False)
    liger = _liger()
    cache = build_cos_sin_cache(HEAD_DIM, MAX_POSITION, 500000.0, device=device)
    half = HEAD_DIM // 2
    for tokens in (16384,) if quick else TOKENS:
        positions = torch.randint(0, MAX_POSITION, (tokens,), device=device)
        q = torch.randn(tokens, HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16)
        k = torch.randn(tokens, KV_HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16)
        qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM, device=device,
                          dtype=torch.bfloat16)
        q_view = qkv[:, : HEADS * HEAD_DIM].view(tokens, HEADS, HEAD_DIM)
        k_view = qkv[:, HEADS * HEAD_DIM : (HEADS + KV_HEADS) * HEAD_DIM].view(
            tokens, KV_HEADS, HEAD_DIM)
        rows = cache[positions]
        cos = torch.cat([rows[:, :half], rows[:, :half]], -1).to(torch.bfloat16)
        sin = torch.cat([rows[:, half:], rows[:, half:]], -1).to(torch.bfloat16)
        impls = {
            "infercore": lambda q=q, k=k, p=positions: rotary(q, k, p, cache),
            "infercore.qkv": lambda q=q_view, k=k_view, p=positions: rotary(q, k, p, cache),
            "torch.eager": lambda q=q, k=k, c=cos[:, None], s=sin[:, None]: _rope_torch(q, k, c, s),
            "torch.compile": lambda q=q, k=k, c=cos[:, None], s=sin[:, None]: compiled(q, k, c, s),
        }
        if liger is not None:
            # liger's layout is [batch, heads, tokens, head_dim] over [batch, tokens, heads, dim]
            q4, k4 = q[None].transpose(1, 2), k[None].transpose(1, 2)
            impls["liger"] = lambda q4=q4, k4=k4, c=cos[None], s=sin[None]: liger(q4, k4, c, s)

        def check(q=q_view, k=k_view, p=positions) -> None:
            q1, k1 = q.clone(), k.clone()
            q64, k64 = q.double(), k.double()
            rotary(q1, k1, p, cache)
            rotary_reference(q64, k64, p, cache.double(), True)
            check_close(f"q {tuple(q.shape)}", q1, q64, 1e-2)
            check_close(f"k {tuple(k.shape)}", k1, k64, 1e-2)

        nbytes = (2 * (q.numel() + k.numel()) * q.element_size()
                  + tokens * HEAD_DIM * cache.element_size() + positions.numel() * 8)
        peer = "liger" if "liger" in impls else "torch.compile"
        yield Case(f"{tokens} tokens bf16", impls, peer=peer, bytes=nbytes, check=check)
