"""Helpers of the attention suites: paged caches, CUDA-graph capture, reference checks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.bench.graphs import graphed
from infercore.ops.attention.reference import paged_attention_reference

__all__ = ["PagedSetup", "check_rows", "graphed", "paged_setup"]


@dataclass
class PagedSetup:
    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor

    @property
    def cache_args(self) -> tuple[torch.Tensor, ...]:
        return self.k_cache, self.v_cache, self.block_tables, self.seq_lens

    def kv_bytes(self) -> int:
        """K and V bytes the batch must read once: every cached token of every sequence."""
        per_token = 2 * self.k_cache.shape[2] * self.k_cache.shape[3] * self.k_cache.element_size()
        return int(self.seq_lens.sum()) * per_token


def paged_setup(seq_lens: list[int], query_lens: list[int], *, num_heads: int, num_kv_heads: int,
                head_dim: int, block_size: int, dtype: torch.dtype,
                device: torch.device) -> PagedSetup:
    """Random queries and caches; each sequence's blocks are scattered over the cache."""
    blocks = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, device=device, dtype=dtype)
    v_cache = torch.randn(shape, device=device, dtype=dtype)
    order = torch.randperm(num_blocks, device=device).to(torch.int32)
    block_tables = torch.zeros(len(seq_lens), max(blocks), dtype=torch.int32, device=device)
    start = 0
    for b, n in enumerate(blocks):
        block_tables[b, :n] = order[start : start + n]
        start += n
    q = torch.randn(sum(query_lens), num_heads, head_dim, device=device, dtype=dtype)
    cu = torch.tensor([0, *query_lens], device=device).cumsum(0).to(torch.int32)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    return PagedSetup(q, k_cache, v_cache, block_tables, lens, cu)


def check_rows(name: str, out: torch.Tensor, setup: PagedSetup, seqs: list[int],
               tol: float = 1e-2, **options) -> None:
    """Compare the rows of ``out`` of sequences ``seqs`` with the reference."""
    cu = setup.cu_seqlens_q.tolist()
    for b in seqs:
        q = setup.q[cu[b] : cu[b + 1]]
        one = torch.tensor([0, q.shape[0]], dtype=torch.int32, device=q.device)
        ref = paged_attention_reference(q, setup.k_cache, setup.v_cache,
                                        setup.block_tables[b : b + 1], setup.seq_lens[b : b + 1],
                                        one, **options)[0]
        got = out[cu[b] : cu[b + 1]].double()
        err = ((got - ref.double()).norm() / ref.double().norm()).item()
        if not err < tol:
            raise AssertionError(f"{name}: sequence {b}: relative error {err:.2e} > {tol:.0e}")
