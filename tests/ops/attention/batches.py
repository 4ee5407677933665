"""Builders of random attention batches (packed and paged) shared by the attention tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import infercore
from infercore.ops.attention.checks import FP8_DTYPE
from tests.helpers import poison


def cu_seqlens(lengths: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)


@dataclass
class PagedBatch:
    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor
    max_seqlen_q: int
    k_scale: torch.Tensor | None
    v_scale: torch.Tensor | None

    def cache_args(self) -> tuple:
        return self.k_cache, self.v_cache, self.block_tables, self.seq_lens


def paged_batch(
    seq_lens: list[int],
    query_lens: list[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
    kv_dtype: torch.dtype | None = None,
    shared_kv: bool = False,
    seed: int = 0,
) -> PagedBatch:
    """Random queries and a paged cache filled through ``ops.kv.write`` (reference).

    Slots not holding a token stay NaN, so a kernel reading past ``seq_lens`` or through
    a wrong block id fails. Blocks are shuffled; the block table has a spare column of
    out-of-range ids that must never be read. ``shared_kv`` makes K and V strided views of
    one ``[num_blocks, 2, block_size, heads, dim]`` tensor.
    """
    g = torch.Generator().manual_seed(seed)
    kv_dtype = dtype if kv_dtype is None else kv_dtype
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    if shared_kv:
        kv = torch.empty(num_blocks, 2, *shape[1:], dtype=kv_dtype, device=device)
        k_cache, v_cache = kv[:, 0], kv[:, 1]
    else:
        k_cache = torch.empty(shape, dtype=kv_dtype, device=device)
        v_cache = torch.empty(shape, dtype=kv_dtype, device=device)
    poison(k_cache)
    poison(v_cache)
    width = max(blocks_per_seq) + 1
    order = torch.randperm(num_blocks, generator=g)
    block_tables = torch.full((len(seq_lens), width), num_blocks + 7, dtype=torch.int32)
    start = 0
    for b, nb in enumerate(blocks_per_seq):
        block_tables[b, :nb] = order[start : start + nb].to(torch.int32)
        start += nb
    slots = []
    for b, n in enumerate(seq_lens):
        pos = torch.arange(n)
        slots.append(block_tables[b, pos // block_size].long() * block_size + pos % block_size)
    slot_mapping = torch.cat(slots).to(device)
    total = sum(seq_lens)
    k = torch.randn(total, num_kv_heads, head_dim, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(total, num_kv_heads, head_dim, generator=g).to(device=device, dtype=dtype)
    k_scale = v_scale = None
    if kv_dtype == FP8_DTYPE:
        k_scale = torch.tensor([0.02], device=device)
        v_scale = torch.tensor([0.015], device=device)
    infercore.ops.kv.write(k, v, k_cache, v_cache, slot_mapping, k_scale=k_scale,
                           v_scale=v_scale, backend="reference")
    q = torch.randn(sum(query_lens), num_heads, head_dim, generator=g)
    q = q.to(device=device, dtype=dtype)
    return PagedBatch(
        q, k_cache, v_cache, block_tables.to(device),
        torch.tensor(seq_lens, dtype=torch.int32, device=device), cu_seqlens(query_lens, device),
        max(query_lens), k_scale, v_scale,
    )


def odd_lengths(n: int, low: int, high: int, seed: int) -> list[int]:
    """``n`` random odd lengths in ``[low, high]``."""
    g = torch.Generator().manual_seed(seed)
    return [int(x) | 1 for x in torch.randint(low, high, (n,), generator=g)]
