"""Triton backend of ``attention.decode``: split-KV flash-decoding over a paged cache.

One program per (sequence, KV head, key split); its tile holds the query heads of the
KV head, so each K/V byte is read once. With more than one split a second kernel merges
the partial results by their log-sum-exp.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch

from infercore.ops.attention.partition import KVSource, direct_plan, small_tile
from infercore.ops.attention.triton_launch import TritonAttentionBase, run_plan

__all__ = ["DecodeConfig", "TritonDecode"]


@dataclass(frozen=True)
class DecodeConfig:
    """A tuned launch of the decode kernel: key splits per sequence (``None``: chosen from
    the SM count, as untuned), keys per step, warps and pipeline stages."""

    num_splits: int | None = None
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2


#: Candidate values the tuner times (on CUDA; the interpreter gets two small ones).
SPLITS = (1, 2, 4, 8, 16, 32)
BLOCK_N = (32, 64, 128)
STAGES = (2, 3)


class TritonDecode(TritonAttentionBase):
    family = "attention.decode"
    name = "triton"
    priority = 100
    description = "Triton flash-decoding: GQA-packed tiles, split-KV with a merge kernel"
    tune_config_class = DecodeConfig

    def tune_space(self, inputs: Any) -> list[dict[str, Any]]:
        if inputs.device.type != "cuda":
            space = [DecodeConfig(1, 32, 4, 2), DecodeConfig(2, 16, 4, 2)]
        else:
            tables = inputs.block_tables
            capacity = tables.shape[1] * inputs.block_size if tables is not None else 0
            space = [
                DecodeConfig(splits, block_n, warps, stages)
                for splits, block_n, stages in itertools.product(SPLITS, BLOCK_N, STAGES)
                if splits == 1 or capacity >= splits * block_n
                for warps in ((4, 8) if block_n == 128 else (4,))
            ]
        return [dataclasses.asdict(c) for c in space]

    def run(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            block_tables: torch.Tensor, seq_lens: torch.Tensor, *, scale: float,
            sliding_window: int | None, softcap: float | None, k_scale: torch.Tensor | None,
            v_scale: torch.Tensor | None, num_splits: int | None, out: torch.Tensor,
            lse: torch.Tensor | None, config: DecodeConfig | None = None) -> None:
        capacity = block_tables.shape[1] * k_cache.shape[1]
        small = None
        if config is not None:
            num_splits = num_splits or config.num_splits
            group = q.shape[1] // k_cache.shape[2]
            small = dataclasses.replace(
                small_tile(group, q.shape[2], q.element_size()), block_n=config.block_n,
                num_warps=config.num_warps, num_stages=config.num_stages)
        plan = direct_plan(q, q.shape[0], k_cache.shape[2], 1, capacity, one_q_per_seq=True,
                           num_splits=num_splits, small_shape=small)
        kv = KVSource(k_cache, v_cache, block_tables=block_tables, seq_lens=seq_lens)
        run_plan(plan, q, kv, None, out, lse, causal=True, scale=scale,
                 sliding_window=sliding_window, softcap=softcap, k_scale=k_scale, v_scale=v_scale)
