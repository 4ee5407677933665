"""What attention backends are asked to support: one frozen dataclass per input layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import TensorInputs

__all__ = ["PagedInputs", "VarlenInputs"]


@dataclass(frozen=True, slots=True)
class VarlenInputs(TensorInputs):
    """Inputs of ``attention.varlen``: packed queries and packed contiguous keys/values."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    causal: bool
    sliding_window: int | None
    softcap: float | None

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.k.dtype


@dataclass(frozen=True, slots=True)
class PagedInputs(TensorInputs):
    """Inputs of ``attention.paged`` and ``attention.decode``: queries over a paged cache.

    ``q`` is ``[total_q, num_heads, head_dim]`` (paged) or ``[batch, num_heads, head_dim]``
    (decode); the caches are ``[num_blocks, block_size, num_kv_heads, head_dim]``;
    ``block_tables`` (when given) sets the context capacity that tuning keys bucket.
    """

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    causal: bool
    sliding_window: int | None
    softcap: float | None
    block_tables: torch.Tensor | None = None

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.k_cache.dtype

    @property
    def block_size(self) -> int:
        return self.k_cache.shape[1]
