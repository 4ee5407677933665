"""Triton backend of ``attention.varlen``: tiled flash attention over packed K/V."""

from __future__ import annotations

import torch

from infercore.ops.attention.partition import KVSource, direct_plan
from infercore.ops.attention.triton_launch import TritonAttentionBase, run_plan


class TritonVarlen(TritonAttentionBase):
    family = "attention.varlen"
    name = "triton"
    priority = 100
    description = "Triton flash attention, GQA-packed tiles; CUDA (CPU under TRITON_INTERPRET=1)"

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
            cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *, causal: bool,
            scale: float, sliding_window: int | None, softcap: float | None, out: torch.Tensor,
            lse: torch.Tensor | None) -> None:
        k = k if k.stride(-1) == 1 else k.contiguous()
        v = v if v.stride(-1) == 1 else v.contiguous()
        plan = direct_plan(q, cu_seqlens_q.shape[0] - 1, k.shape[1], max_seqlen_q, max_seqlen_k)
        run_plan(plan, q, KVSource(k, v, cu_k=cu_seqlens_k), cu_seqlens_q, out, lse,
                 causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap)
