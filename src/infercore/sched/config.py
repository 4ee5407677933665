"""SchedulerConfig: the per-step limits and the policy."""

from __future__ import annotations

from typing import Literal, Self

import pydantic

from infercore.cache.config import KVCacheConfig
from infercore.config import Config

__all__ = ["SchedulerConfig"]


class SchedulerConfig(Config):
    """Limits of continuous batching.

    Attributes
    ----------
    max_num_seqs : int
        Most requests running (holding blocks) at once; a step schedules at most these.
    max_num_batched_tokens : int
        Token budget of one step: decodes take one token each, prefill chunks the rest.
        At least ``max_num_seqs`` (every running request decodes in every step) and at
        least the cache's block size.
    max_model_len : int
        Longest sequence the model takes: longer prompts are rejected, generation stops
        at this length.
    policy : "fcfs" or "priority"
        Order of admission and preemption.
    cache : KVCacheConfig, optional
        Used by ``infercore.create("scheduler", ...)``, which builds the
        ``KVCacheManager``; a ``Scheduler`` built directly takes the manager instead.
    """

    max_num_seqs: int = pydantic.Field(256, ge=1)
    max_num_batched_tokens: int = pydantic.Field(2048, ge=1)
    max_model_len: int = pydantic.Field(8192, ge=1)
    policy: Literal["fcfs", "priority"] = "fcfs"
    cache: KVCacheConfig | None = None

    @pydantic.model_validator(mode="after")
    def _budget_fits(self) -> Self:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= "
                f"max_num_seqs={self.max_num_seqs}, so that every running request decodes "
                "in every step"
            )
        if self.cache is not None and self.max_num_batched_tokens < self.cache.block_size:
            raise ValueError(
                f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= "
                f"cache.block_size={self.cache.block_size}"
            )
        return self
