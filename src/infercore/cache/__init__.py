"""Paged KV-cache bookkeeping: block pool, prefix cache, sequence-to-block mapping.

>>> from infercore.cache import KVCacheConfig, KVCacheManager
>>> cache = KVCacheManager(KVCacheConfig(num_blocks=64, block_size=16))
>>> seq = cache.new_sequence()
>>> cache.allocate(seq, 0, 40)
>>> seq.block_ids, cache.slot_mapping(seq, 38, 40)
([0, 1, 2], [38, 39])

Everything here is pure Python except the KV tensors themselves
(:attr:`KVCacheManager.kv_caches`), which import torch when first used.
"""

from infercore.cache.allocator import BlockAllocator, NoFreeBlocksError
from infercore.cache.config import (
    BlockAllocatorConfig,
    KVCacheConfig,
    PrefixCacheConfig,
    StreamingConfig,
)
from infercore.cache.manager import KVCacheManager, SequenceBlocks
from infercore.cache.prefix import HashPrefixCache, PrefixCacheStats, PrefixMatch
from infercore.cache.protocols import BlockAllocatorProtocol, PrefixCacheProtocol
from infercore.cache.tensors import KVCacheLayout

#: The default prefix cache under the name the design uses.
PrefixCache = HashPrefixCache

__all__ = [
    "BlockAllocator",
    "BlockAllocatorConfig",
    "BlockAllocatorProtocol",
    "HashPrefixCache",
    "KVCacheConfig",
    "KVCacheLayout",
    "KVCacheManager",
    "NoFreeBlocksError",
    "PrefixCache",
    "PrefixCacheConfig",
    "PrefixCacheProtocol",
    "PrefixCacheStats",
    "PrefixMatch",
    "SequenceBlocks",
    "StreamingConfig",
]
