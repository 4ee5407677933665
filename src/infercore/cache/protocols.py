"""Interfaces of the ``cache.allocator`` and ``cache.prefix`` component families.

A plugin may register another backend of either family; :class:`KVCacheManager` uses
only what these protocols name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from infercore.cache.prefix import PrefixCacheStats, PrefixMatch

__all__ = ["BlockAllocatorProtocol", "PrefixCacheProtocol"]


@runtime_checkable
class BlockAllocatorProtocol(Protocol):
    """A fixed pool of block ids with one reference count per block (0 = free)."""

    num_blocks: int
    watermark_blocks: int

    @property
    def num_free_blocks(self) -> int: ...

    @property
    def num_used_blocks(self) -> int: ...

    def ref_count(self, block_id: int) -> int: ...

    def can_allocate(self, num_blocks: int, *, watermark: bool = False) -> bool: ...

    def allocate(self, num_blocks: int = 1) -> list[int]:
        """``num_blocks`` free blocks with count 1; raises ``NoFreeBlocksError``."""
        ...

    def fork(self, block_ids: Iterable[int]) -> None:
        """Add a holder to each (in-use) block."""
        ...

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop a holder of each block; blocks with none become free."""
        ...

    def make_writable(self, block_id: int) -> tuple[int, tuple[int, int] | None]:
        """``(block_id, None)`` for a sole holder, else ``(new, (block_id, new))``."""
        ...


@runtime_checkable
class PrefixCacheProtocol(Protocol):
    """An index of full blocks by token prefix, with LRU eviction of unused blocks.

    The cache is a holder of every block it indexes: its owner takes a reference in the
    allocator when :meth:`insert` returns ``added=True`` and drops it for every block
    :meth:`evict` returns.
    """

    block_size: int
    stats: PrefixCacheStats

    @property
    def num_cached_blocks(self) -> int: ...

    @property
    def num_evictable_blocks(self) -> int: ...

    def is_cached(self, block_id: int) -> bool: ...

    def num_users(self, block_id: int) -> int: ...

    def match(self, token_ids: Sequence[int], max_blocks: int) -> PrefixMatch:
        """Longest cached prefix in whole blocks (pure lookup)."""
        ...

    def count_evictable(self, block_ids: Iterable[int]) -> int: ...

    def insert(
        self, parent: int, tokens: tuple[int, ...], block_id: int, num_users: int = 1
    ) -> tuple[int, bool]:
        """Index a full block held by ``num_users`` sequences after the prefix of node
        ``parent``; ``(node, added)``."""
        ...

    def acquire(self, block_ids: Iterable[int]) -> None:
        """A sequence starts using these blocks (uncached ones are ignored)."""
        ...

    def release(self, block_ids: Iterable[int]) -> None:
        """A sequence stops using these blocks, last block first."""
        ...

    def evict(self, num_blocks: int) -> list[int]:
        """Forget up to ``num_blocks`` unused blocks, least recently released first."""
        ...
