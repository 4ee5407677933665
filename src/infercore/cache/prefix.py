"""Prefix cache: full KV blocks found again by the tokens that produced them.

Each cached block is a node of a tree: its key is ``(parent node, the block's tokens)``,
where the parent node stands for every token before the block. A lookup walks the
prompt block by block. The key is hashed (a chained block hash: the parent node id
carries the prefix) and the dictionary compares the stored tokens on every hash match,
so a hit is always exact; node ids are never reused, so a block whose parent was
evicted can no longer be reached.

The cache is one holder of each block it indexes (the owner takes a reference in the
block allocator for it). Sequences using a cached block are counted here; a block no
sequence uses is *evictable*, and :meth:`HashPrefixCache.evict` drops the least recently
released ones first. Sequences release their blocks last-to-first, so a chain's tail is
evicted before its head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["ROOT_NODE", "HashPrefixCache", "PrefixCacheStats", "PrefixMatch"]

#: The node standing for the empty prefix.
ROOT_NODE = 0


class PrefixMatch(NamedTuple):
    """The longest cached prefix found: its blocks, the node ending it, and how many
    blocks the lookup could have matched."""

    block_ids: list[int]
    node: int
    num_queried: int


@dataclass
class PrefixCacheStats:
    """Counters over the lookups whose result was used (``record``)."""

    queries: int = 0
    queried_blocks: int = 0
    hit_blocks: int = 0
    evicted_blocks: int = 0

    @property
    def miss_blocks(self) -> int:
        return self.queried_blocks - self.hit_blocks

    @property
    def hit_rate(self) -> float:
        """Fraction of looked-up blocks found in the cache (0 before any lookup)."""
        return self.hit_blocks / self.queried_blocks if self.queried_blocks else 0.0

    def record(self, queried_blocks: int, hit_blocks: int) -> None:
        self.queries += 1
        self.queried_blocks += queried_blocks
        self.hit_blocks += hit_blocks


class HashPrefixCache:
    """Index of full blocks keyed by chained block hashes, verified against their tokens.

    Parameters
    ----------
    block_size : int
        Tokens per block; only full blocks are cached.
    """

    def __init__(self, block_size: int) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.block_size = block_size
        self.stats = PrefixCacheStats()
        self._index: dict[tuple[int, tuple[int, ...]], tuple[int, int]] = {}
        self._key_of: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._users: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._next_node = ROOT_NODE + 1

    @property
    def num_cached_blocks(self) -> int:
        return len(self._key_of)

    @property
    def num_evictable_blocks(self) -> int:
        return len(self._evictable)

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._key_of

    def num_users(self, block_id: int) -> int:
        """Sequences using the cached block ``block_id`` (0 when evictable or not cached)."""
        return self._users.get(block_id, 0)

    def tokens_of(self, block_id: int) -> tuple[int, ...]:
        """The tokens a cached block holds."""
        return self._key_of[block_id][1]

    def match(self, token_ids: Sequence[int], max_blocks: int) -> PrefixMatch:
        """The longest cached prefix of ``token_ids`` in whole blocks, at most ``max_blocks``.

        A pure lookup: it neither takes the blocks nor counts statistics.
        """
        bs = self.block_size
        index = self._index
        node = ROOT_NODE
        blocks: list[int] = []
        max_blocks = min(max_blocks, len(token_ids) // bs)
        for start in range(0, max_blocks * bs, bs):
            hit = index.get((node, tuple(token_ids[start : start + bs])))
            if hit is None:
                break
            node, block = hit
            blocks.append(block)
        return PrefixMatch(blocks, node, max_blocks)

    def count_evictable(self, block_ids: Iterable[int]) -> int:
        """How many of ``block_ids`` are evictable now (using them takes them off the pool)."""
        evictable = self._evictable
        return sum(1 for b in block_ids if b in evictable)

    def insert(
        self, parent: int, tokens: tuple[int, ...], block_id: int, num_users: int = 1
    ) -> tuple[int, bool]:
        """Index ``block_id`` as holding ``tokens`` after the prefix of node ``parent``.

        ``num_users`` sequences hold the block now (the caller, and forks sharing it).
        Returns ``(node, True)`` for a new entry, or ``(node, False)`` when the same
        content is already cached (``block_id`` then stays private to its sequences, and
        the chain continues from the existing node).
        """
        if len(tokens) != self.block_size:
            raise ValueError(
                f"a cached block holds block_size={self.block_size} tokens, got {len(tokens)}"
            )
        key = (parent, tokens)
        index = self._index
        hit = index.get(key)
        if hit is not None:
            return hit[0], False
        old = self._key_of.get(block_id)
        if old is not None:
            # The block is cached under another node for the same tokens: one whose chain
            # went through a duplicate block since evicted, so it is unreachable. Move the
            # block (and, through its node id, its descendants) under the live chain.
            if old[1] != tokens:
                raise ValueError(f"block {block_id} is already cached with other tokens")
            entry = index.pop(old)
            index[key] = entry
            self._key_of[block_id] = key
            return entry[0], False
        node = self._next_node
        self._next_node = node + 1
        self._index[key] = (node, block_id)
        self._key_of[block_id] = key
        self._users[block_id] = num_users
        if not num_users:
            self._evictable[block_id] = None
        return node, True

    def acquire(self, block_ids: Iterable[int]) -> None:
        """A sequence starts using ``block_ids``; cached ones stop being evictable.
        Blocks that are not cached are ignored."""
        users = self._users
        evictable = self._evictable
        for b in block_ids:
            count = users.get(b)
            if count is None:
                continue
            if count == 0:
                del evictable[b]
            users[b] = count + 1

    def release(self, block_ids: Iterable[int]) -> None:
        """A sequence stops using ``block_ids`` (pass them last block first); cached ones
        that no sequence uses become evictable, most recently released last."""
        users = self._users
        evictable = self._evictable
        for b in block_ids:
            count = users.get(b)
            if count is None:
                continue
            if count <= 0:
                raise ValueError(f"release of cached block {b}, which no sequence uses")
            users[b] = count - 1
            if count == 1:
                evictable[b] = None

    def evict(self, num_blocks: int) -> list[int]:
        """Forget up to ``num_blocks`` evictable blocks, least recently released first.

        Returns the evicted ids; the owner drops the cache's reference to each.
        """
        evictable = self._evictable
        out: list[int] = []
        for _ in range(min(num_blocks, len(evictable))):
            b, _ = evictable.popitem(last=False)
            del self._index[self._key_of.pop(b)]
            del self._users[b]
            out.append(b)
        self.stats.evicted_blocks += len(out)
        return out

    def __repr__(self) -> str:
        return (
            f"HashPrefixCache(block_size={self.block_size}, cached={self.num_cached_blocks}, "
            f"evictable={self.num_evictable_blocks})"
        )
