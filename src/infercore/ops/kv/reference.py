"""Reference KV-cache write in plain PyTorch: the correctness oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.ops.attention.checks import FP8_DTYPE
from infercore.registry import Backend

__all__ = ["ReferenceKVWrite", "quantize_for_cache"]

FP8_MAX = float(torch.finfo(FP8_DTYPE).max)


def quantize_for_cache(x: torch.Tensor, dtype: torch.dtype,
                       scale: torch.Tensor | float | None) -> torch.Tensor:
    """``x / scale`` in float32 rounded once to ``dtype`` (float8 saturates to +-448)."""
    y = x.float()
    if scale is not None:
        y = y / scale
    if dtype == FP8_DTYPE:
        y = y.clamp(-FP8_MAX, FP8_MAX)
    return y.to(dtype)


class ReferenceKVWrite(Backend):
    family = "kv.write"
    name = "reference"
    priority = 0
    description = "PyTorch index_put; any device"
    graph_safe = False  # boolean indexing: the number of written tokens sets shapes

    def run(self, k, v, k_cache, v_cache, slot_mapping, *, k_scale, v_scale) -> None:
        keep = slot_mapping >= 0
        slots = slot_mapping[keep]
        block_size = k_cache.shape[1]
        blocks, offsets = slots // block_size, slots % block_size
        k_cache[blocks, offsets] = quantize_for_cache(k[keep], k_cache.dtype, k_scale)
        v_cache[blocks, offsets] = quantize_for_cache(v[keep], v_cache.dtype, v_scale)
