"""Sizing and allocating the paged KV tensors. The only part of ``infercore.cache`` that
uses torch, imported when a tensor or a device's free memory is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infercore.cache.config import KVCacheConfig

if TYPE_CHECKING:
    import torch

__all__ = ["KVCacheLayout", "allocate_kv_tensors", "free_memory_bytes", "resolve_num_blocks"]


@dataclass(frozen=True)
class KVCacheLayout:
    """What the model stores per token: ``num_layers`` x (K and V of ``num_kv_heads`` x
    ``head_dim``) in ``dtype`` (a ``torch.dtype`` or its name, ``"bfloat16"``)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: Any = "bfloat16"

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCacheLayout.{name} must be a positive int, got {value!r}")

    def torch_dtype(self, cache_dtype: str = "auto") -> torch.dtype:
        """The dtype of the cache tensors: ``cache_dtype`` unless it is ``"auto"``."""
        import torch

        chosen = self.dtype if cache_dtype == "auto" else cache_dtype
        if isinstance(chosen, torch.dtype):
            return chosen
        dtype = getattr(torch, str(chosen).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"KVCacheLayout.dtype={chosen!r} is not a torch dtype")
        return dtype

    def bytes_per_block(self, block_size: int, cache_dtype: str = "auto") -> int:
        """Bytes of one block: K and V of every layer for ``block_size`` tokens."""
        itemsize = self.torch_dtype(cache_dtype).itemsize
        return 2 * self.num_layers * block_size * self.num_kv_heads * self.head_dim * itemsize


def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory of ``device``: ``torch.cuda.mem_get_info`` on CUDA, available RAM on CPU."""
    import os

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    raise ValueError(f"cannot measure free memory of device {str(device)!r} (cpu, cuda)")


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_num_blocks(
    config: KVCacheConfig, layout: KVCacheLayout | None, device: torch.device | str | None
) -> int:
    """Blocks in the pool: ``config.num_blocks``, or the memory budget over the block size.

    The budget is ``config.max_memory_bytes`` when set, else ``gpu_memory_utilization``
    of the free memory of ``device``.
    """
    if config.num_blocks is not None:
        return config.num_blocks
    if layout is None:
        raise ValueError(
            "KVCacheConfig.num_blocks is not set, so the pool is sized from memory: pass the "
            "model's KVCacheLayout (layers, kv heads, head dim, dtype)"
        )
    per_block = layout.bytes_per_block(config.block_size, config.cache_dtype)
    if config.max_memory_bytes is not None:
        budget = config.max_memory_bytes
        what = f"max_memory_bytes={budget}"
    else:
        free = free_memory_bytes(device if device is not None else default_device())
        budget = int(config.gpu_memory_utilization * free)
        what = f"gpu_memory_utilization={config.gpu_memory_utilization} of {free} free bytes"
    num_blocks = budget // per_block
    if num_blocks < 1:
        raise ValueError(f"the KV-cache budget ({what}) holds no block of {per_block} bytes")
    return num_blocks


def allocate_kv_tensors(
    layout: KVCacheLayout,
    num_blocks: int,
    block_size: int,
    device: torch.device | str,
    cache_dtype: str = "auto",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, ``(k_cache, v_cache)``, each ``[num_blocks, block_size, num_kv_heads,
    head_dim]`` (NHD) of the cache dtype, uninitialized."""
    import torch

    dtype = layout.torch_dtype(cache_dtype)
    shape = (num_blocks, block_size, layout.num_kv_heads, layout.head_dim)
    empty = lambda: torch.empty(shape, dtype=dtype, device=device)
    return [(empty(), empty()) for _ in range(layout.num_layers)]
