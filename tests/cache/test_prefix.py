"""Prefix caches, every registered backend: exact matches, LRU eviction, statistics; and
the KV-cache manager sharing prefixes between sequences."""

from __future__ import annotations

import random

import pytest

import infercore
from infercore.cache import KVCacheConfig, KVCacheManager, PrefixCacheProtocol
from tests.helpers import backend_params

BACKENDS = backend_params("cache.prefix", include_reference=True)
BS = 4


def make(backend: str):
    return infercore.create("cache.prefix", backend, {"block_size": BS})


def insert_chain(cache, tokens: list[int], blocks: list[int]) -> int:
    node = 0
    for i, b in enumerate(blocks):
        node, added = cache.insert(node, tuple(tokens[i * BS : (i + 1) * BS]), b)
        assert added
    return node


@pytest.mark.parametrize("backend", BACKENDS)
def test_satisfies_protocol(backend):
    assert isinstance(make(backend), PrefixCacheProtocol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_longest_prefix_in_whole_blocks(backend):
    cache = make(backend)
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    node = insert_chain(cache, tokens, [10, 11, 12])
    hit = cache.match([*tokens, 9, 7], max_blocks=10)
    assert hit.block_ids == [10, 11, 12] and hit.node == node and hit.num_queried == 3
    assert cache.match(tokens, max_blocks=2).block_ids == [10, 11]
    assert cache.match(tokens[:7], max_blocks=10).block_ids == [10]  # partial block: no
    differs = [*tokens[:5], 0, *tokens[6:]]
    assert cache.match(differs, max_blocks=10).block_ids == [10]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_block_after_a_different_prefix_is_not_a_hit(backend):
    cache = make(backend)
    insert_chain(cache, [1, 1, 1, 1, 2, 2, 2, 2], [0, 1])
    hit = cache.match([7, 7, 7, 7, 2, 2, 2, 2], max_blocks=2)
    assert hit.block_ids == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_content_keeps_the_first_block(backend):
    cache = make(backend)
    node, added = cache.insert(0, (1, 2, 3, 4), 5)
    again, added_again = cache.insert(0, (1, 2, 3, 4), 6)
    assert added and not added_again and again == node
    assert cache.is_cached(5) and not cache.is_cached(6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eviction_is_lru_and_spares_used_blocks(backend):
    cache = make(backend)
    a = [1] * 4 + [2] * 4
    b = [3] * 4 + [4] * 4
    insert_chain(cache, a, [0, 1])
    insert_chain(cache, b, [2, 3])
    assert cache.num_evictable_blocks == 0
    assert cache.evict(4) == []  # every block has a user
    cache.release([1, 0])  # sequence a finishes: tail first
    cache.release([3, 2])
    assert cache.num_evictable_blocks == 4
    cache.acquire([0])  # a new sequence reuses a's first block
    assert cache.num_users(0) == 1 and cache.num_evictable_blocks == 3
    assert cache.evict(2) == [1, 3]
    assert cache.match(a, 2).block_ids == [0] and cache.match(b, 2).block_ids == [2]
    assert cache.evict(5) == [2]
    assert cache.is_cached(0) and cache.num_cached_blocks == 1
    assert cache.stats.evicted_blocks == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_evicted_parent_makes_children_unreachable(backend):
    cache = make(backend)
    tokens = list(range(12))
    insert_chain(cache, tokens, [0, 1, 2])
    cache.release([0])  # only the head becomes evictable
    assert cache.evict(1) == [0]
    _, added = cache.insert(0, tuple(tokens[:4]), 7)  # same tokens, new block
    assert added
    assert cache.match(tokens, 3).block_ids == [7]  # old children hang off the old node


def manager(num_blocks: int, backend: str = "hash", **kw) -> KVCacheManager:
    return KVCacheManager(
        KVCacheConfig(num_blocks=num_blocks, block_size=BS, prefix_cache=backend, **kw)
    )


def run_sequence(m: KVCacheManager, tokens: list[int]):
    """Admit a sequence the way the scheduler does and compute all its tokens."""
    seq = m.new_sequence()
    hit = m.match_prefix(tokens)
    start = len(hit.block_ids) * BS
    assert m.can_allocate(seq, start, len(tokens), hit=hit)
    m.allocate(seq, start, len(tokens), hit=hit)
    m.register(seq, tokens, len(tokens))
    return seq, start


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_prefix_workload_hits(backend):
    m = manager(64, backend)
    rng = random.Random(0)
    system = [rng.randrange(100) for _ in range(4 * BS)]
    seqs = []
    for i in range(6):
        tokens = system + [rng.randrange(100) for _ in range(5 + i)]
        seq, cached = run_sequence(m, tokens)
        assert cached == (0 if i == 0 else len(system))
        assert seq.block_ids[:4] == seqs[0].block_ids[:4] if seqs else True
        seqs.append(seq)
    stats = m.prefix.stats
    assert stats.queries == 6 and stats.hit_blocks == 5 * 4
    assert stats.hit_rate == pytest.approx(20 / stats.queried_blocks)
    assert stats.miss_blocks == stats.queried_blocks - 20 > 0
    shared = seqs[0].block_ids[0]
    assert m.allocator.ref_count(shared) == 6 + 1  # six sequences and the cache


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_prompt_cached_still_computes_the_last_token(backend):
    m = manager(16, backend)
    tokens = list(range(3 * BS))
    run_sequence(m, tokens)
    _, cached = run_sequence(m, tokens)
    assert cached == 2 * BS  # the last block holds the last token: computed again


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_pressure_evicts_only_unreferenced_blocks(backend):
    m = manager(8, backend)
    kept, _ = run_sequence(m, list(range(100, 100 + 3 * BS)))  # 3 blocks, stays
    gone, _ = run_sequence(m, list(range(200, 200 + 3 * BS)))
    m.free(gone)  # its 3 blocks stay cached but evictable
    assert m.num_free_blocks == 5 and m.allocator.num_free_blocks == 2
    seq = m.new_sequence()
    m.allocate(seq, 0, 4 * BS)  # needs 4: 2 free + 2 evicted
    assert m.num_free_blocks == 1 and m.prefix.num_evictable_blocks == 1
    assert all(m.prefix.is_cached(b) for b in kept.block_ids)
    assert not any(m.prefix.is_cached(b) for b in seq.block_ids)
    assert m.match_prefix([*range(100, 100 + 3 * BS), 0]).block_ids == kept.block_ids
    assert not m.can_allocate(m.new_sequence(), 0, 2 * BS + 1)


def test_large_pools_evict_in_batches():
    m = manager(256 * 8, "hash")
    held = m.new_sequence()
    m.allocate(held, 0, (256 * 8 - 40) * BS)  # all but 40 blocks stay in use
    for i in range(10):  # 40 cached, unused blocks
        run = m.new_sequence()
        tokens = [i + 1] * (4 * BS)
        m.allocate(run, 0, len(tokens))
        m.register(run, tokens, len(tokens))
        m.free(run)
    assert m.allocator.num_free_blocks == 0 and m.prefix.num_evictable_blocks == 40
    m.allocate(m.new_sequence(), 0, 1)
    assert m.allocator.num_free_blocks == 8 - 1  # a batch of 8 (1/256 of the pool)
    assert m.num_free_blocks == 39
