"""Configs of the KV-cache components (pydantic, validated with readable messages)."""

from __future__ import annotations

import pydantic

from infercore.config import Config

__all__ = ["BlockAllocatorConfig", "KVCacheConfig", "PrefixCacheConfig", "StreamingConfig"]

_CACHE_DTYPES = ("auto", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")


class BlockAllocatorConfig(Config):
    """A pool of ``num_blocks`` block ids.

    ``watermark`` is the fraction of the pool that admission of new sequences leaves free,
    so that running sequences can grow without being preempted at once.
    """

    num_blocks: int = pydantic.Field(1024, ge=1)
    watermark: float = pydantic.Field(0.01, ge=0.0, lt=1.0)


class PrefixCacheConfig(Config):
    """An index of full blocks of ``block_size`` tokens, found by token prefix."""

    block_size: int = pydantic.Field(16, ge=1)


class StreamingConfig(Config):
    """StreamingLLM: keep the first ``sink_tokens`` (attention sinks) and a recent window.

    Both are rounded up to whole blocks. A sequence keeps its sink blocks and at least the
    ``window_tokens`` tokens before the ones being written; older blocks are freed.
    """

    sink_tokens: int = pydantic.Field(4, ge=0)
    window_tokens: int = pydantic.Field(ge=1)


class KVCacheConfig(Config):
    """The paged KV cache: block size, pool size or memory budget, policies.

    The pool holds ``num_blocks`` blocks when given; otherwise ``max_memory_bytes``, or
    else ``gpu_memory_utilization`` of the device's free memory, divided by the bytes of
    one block (K and V of every layer).
    """

    block_size: int = pydantic.Field(16, ge=1, le=1024)
    num_blocks: int | None = pydantic.Field(None, ge=1)
    max_memory_bytes: int | None = pydantic.Field(None, ge=1)
    gpu_memory_utilization: float = pydantic.Field(0.9, gt=0.0, le=1.0)
    cache_dtype: str = "auto"
    watermark: float = pydantic.Field(0.01, ge=0.0, lt=1.0)
    enable_prefix_caching: bool = True
    allocator: str = "default"
    prefix_cache: str = "hash"
    streaming: StreamingConfig | None = None

    @pydantic.field_validator("cache_dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in _CACHE_DTYPES:
            raise ValueError(f"must be one of {', '.join(_CACHE_DTYPES)}")
        return value
