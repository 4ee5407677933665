"""Built-in plugin: the ``cache.allocator`` and ``cache.prefix`` component families."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry, component_backend


@hookimpl
def infercore_register(registry: Registry) -> None:
    from infercore.cache.allocator import BlockAllocator
    from infercore.cache.config import BlockAllocatorConfig, PrefixCacheConfig
    from infercore.cache.prefix import HashPrefixCache
    from infercore.cache.protocols import BlockAllocatorProtocol, PrefixCacheProtocol

    registry.add_family(
        Family(
            "cache.allocator",
            "component",
            "KV-cache block pool with reference counts and copy-on-write",
            BlockAllocatorProtocol,
        )
    )
    registry.add_family(
        Family(
            "cache.prefix",
            "component",
            "prefix cache: longest cached token prefix in whole blocks, LRU eviction",
            PrefixCacheProtocol,
        )
    )
    registry.register(
        component_backend(
            "cache.allocator",
            "default",
            lambda c: BlockAllocator(c.num_blocks, watermark=c.watermark),
            config_class=BlockAllocatorConfig,
            description="free-list stack and per-block reference counts",
        )
    )
    registry.register(
        component_backend(
            "cache.prefix",
            "hash",
            lambda c: HashPrefixCache(c.block_size),
            config_class=PrefixCacheConfig,
            description="chained block hashes verified against the stored tokens",
        )
    )
