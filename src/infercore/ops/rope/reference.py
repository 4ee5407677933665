"""Reference rotary embedding in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.registry import Backend


def rotary_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Rotate the first ``cos_sin_cache.shape[1]`` features of every head of q and k in place.

    float32 math (float64 for float64 tensors), one rounding to the tensors' dtype; any
    strides.
    """
    rotary_dim = cos_sin_cache.shape[-1]
    half = rotary_dim // 2
    compute = torch.promote_types(q.dtype, torch.float32)
    cs = cos_sin_cache[positions].to(compute)
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    for t in (q, k):
        rot = t[..., :rotary_dim]
        if is_neox:
            x1, x2 = rot[..., :half], rot[..., half:]
        else:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
        f1, f2 = x1.to(compute), x2.to(compute)
        o1, o2 = f1 * cos - f2 * sin, f2 * cos + f1 * sin
        x1.copy_(o1)
        x2.copy_(o2)


class ReferenceRotary(Backend):
    family = "rope"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math; any device, any strides"

    def run(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
            cos_sin_cache: torch.Tensor, is_neox: bool) -> None:
        rotary_reference(q, k, positions, cos_sin_cache, is_neox)
