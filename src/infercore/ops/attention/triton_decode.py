"""Triton backend of ``attention.decode``: split-KV flash-decoding over a paged cache.

One program per (sequence, KV head, key split); its tile holds the query heads of the
KV head, so each K/V byte is read once. With more than one split a second kernel merges
the partial results by their log-sum-exp.
"""

from __future__ import annotations

import torch

from infercore.ops.attention.partition import KVSource, direct_plan
from infercore.ops.attention.triton_launch import TritonAttentionBase, run_plan


class TritonDecode(TritonAttentionBase):
    family = "attention.decode"
    name = "triton"
    priority = 100
    description = "Triton flash-decoding: GQA-packed tiles, split-KV with a merge kernel"

    def run(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            block_tables: torch.Tensor, seq_lens: torch.Tensor, *, scale: float,
            sliding_window: int | None, softcap: float | None, k_scale: torch.Tensor | None,
            v_scale: torch.Tensor | None, num_splits: int | None, out: torch.Tensor,
            lse: torch.Tensor | None) -> None:
        capacity = block_tables.shape[1] * k_cache.shape[1]
        plan = direct_plan(q, q.shape[0], k_cache.shape[2], 1, capacity, one_q_per_seq=True,
                           num_splits=num_splits)
        kv = KVSource(k_cache, v_cache, block_tables=block_tables, seq_lens=seq_lens)
        run_plan(plan, q, kv, None, out, lse, causal=True, scale=scale,
                 sliding_window=sliding_window, softcap=softcap, k_scale=k_scale, v_scale=v_scale)
