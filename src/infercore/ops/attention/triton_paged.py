"""Triton backend of ``attention.paged``: chunked prefill and decodes in one call.

Sequences with more queries than a per-sequence tile holds go to the tiled launch;
the rest (decodes, short runs) to the per-sequence launch, whose tile packs the GQA
group into the rows. Both read K/V page by page through the block table.
"""

from __future__ import annotations

import torch

from infercore.ops.attention.partition import KVSource, LaunchPlan, direct_plan
from infercore.ops.attention.triton_launch import TritonAttentionBase, run_plan


class TritonPaged(TritonAttentionBase):
    family = "attention.paged"
    name = "triton"
    priority = 100
    description = "Triton paged flash attention (prefill tiles + split-KV decode tiles)"

    def run(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            block_tables: torch.Tensor, seq_lens: torch.Tensor, cu_seqlens_q: torch.Tensor,
            max_seqlen_q: int, *, causal: bool, scale: float, sliding_window: int | None,
            softcap: float | None, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None,
            out: torch.Tensor, lse: torch.Tensor | None) -> None:
        capacity = block_tables.shape[1] * k_cache.shape[1]
        plan = direct_plan(q, block_tables.shape[0], k_cache.shape[2], max_seqlen_q, capacity)
        kv = KVSource(k_cache, v_cache, block_tables=block_tables, seq_lens=seq_lens)
        run_plan(plan, q, kv, cu_seqlens_q, out, lse, causal=causal, scale=scale,
                 sliding_window=sliding_window, softcap=softcap, k_scale=k_scale, v_scale=v_scale)

    def run_plan(self, plan: LaunchPlan, q: torch.Tensor, kv: KVSource, cu_seqlens_q: torch.Tensor,
                 out: torch.Tensor, lse: torch.Tensor | None, **params) -> None:
        """Launch a plan made by :class:`PagedAttentionWrapper` (its buffers, its grids)."""
        run_plan(plan, q, kv, cu_seqlens_q, out, lse, **params)
