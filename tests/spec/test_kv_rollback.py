"""KV rollback of rejected drafts on the paged cache: KVCacheManager.truncate and
SpecKVCache keep the allocator and block tables consistent."""

from __future__ import annotations

import random

import pytest

from infercore.cache import KVCacheConfig, KVCacheManager, NoFreeBlocksError
from infercore.spec.kv import SpecKVCache

BS = 4


def _check_invariants(kv: SpecKVCache, tokens: dict) -> None:
    manager = kv.manager
    allocator, prefix = manager.allocator, manager.prefix
    holders = [0] * manager.num_blocks
    for rid in tokens:
        table = kv.block_table(rid)
        # A table covers exactly the positions the request holds.
        assert len(table) == -(-kv.num_tokens(rid) // BS)
        for b in table:
            holders[b] += 1
    for b in range(manager.num_blocks):
        cached = prefix is not None and prefix.is_cached(b)
        assert allocator.ref_count(b) == holders[b] + cached
    free = sum(allocator.ref_count(b) == 0 for b in range(manager.num_blocks))
    assert free == allocator.num_free_blocks
    assert allocator.num_free_blocks + allocator.num_used_blocks == manager.num_blocks


def _apply(store: dict, copies) -> None:
    for src, dst in copies:
        for off in range(BS):
            if src * BS + off in store:
                store[dst * BS + off] = store[src * BS + off]


@pytest.mark.parametrize("prefix_caching", [False, True], ids=["plain", "prefix"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_speculative_steps_keep_the_cache_consistent(prefix_caching, seed):
    rng = random.Random(seed)
    manager = KVCacheManager(KVCacheConfig(num_blocks=23, block_size=BS,
                                           enable_prefix_caching=prefix_caching))
    kv = SpecKVCache(manager)
    store: dict[int, int] = {}  # slot -> the token whose KV it holds
    tokens: dict[int, list[int]] = {}  # request -> tokens (KV valid for all but the last)
    next_id = 0
    for _ in range(300):
        if len(tokens) < 3 and rng.random() < 0.5:  # admit: prefill all but the last token
            prompt = [rng.randrange(3) for _ in range(rng.randrange(2, 14))]
            rid, next_id = next_id, next_id + 1
            cached = kv.add(rid, prompt)
            assert [store[s] for s in kv.slot_mapping(rid, 0, cached)] == prompt[:cached]
            try:
                write = kv.write(rid, len(prompt) - 1 - cached)
            except NoFreeBlocksError:
                kv.free(rid)
                continue
            _apply(store, write.copies)
            store.update(zip(write.slots, prompt[cached:-1], strict=True))
            tokens[rid] = prompt
        elif tokens and rng.random() < 0.1:  # finish
            rid = rng.choice(sorted(tokens))
            kv.free(rid)
            del tokens[rid]
        elif tokens:  # one speculative step of one request
            rid = rng.choice(sorted(tokens))
            seq = tokens[rid]
            held = kv.num_tokens(rid)
            assert held == len(seq) - 1
            k = rng.randrange(0, 6)
            drafts = [rng.randrange(3) for _ in range(k)]
            try:
                write = kv.write(rid, k + 1)
            except NoFreeBlocksError:
                continue
            # Later writes start right after the accepted tokens.
            table = kv.block_table(rid)
            expect = [table[p // BS] * BS + p % BS for p in range(held, held + k + 1)]
            assert write.slots == expect
            _apply(store, write.copies)
            store.update(zip(write.slots, [seq[-1], *drafts], strict=True))
            if prefix_caching and rng.random() < 0.3:  # registered past the accepted ones
                kv.register(rid, seq + drafts)
            a = rng.randrange(0, k + 1)
            seq.extend([*drafts[:a], rng.randrange(3)])
            kv.rollback(rid, len(seq) - 1)
            if prefix_caching:
                kv.register(rid, seq)
        # Every request reads back exactly its accepted tokens.
        for rid, seq in tokens.items():
            n = kv.num_tokens(rid)
            slots = kv.slot_mapping(rid, 0, n)
            assert [store[s] for s in slots] == seq[:n]
        _check_invariants(kv, tokens)
    for rid in list(tokens):
        kv.free(rid)
    cached = manager.prefix.num_cached_blocks if manager.prefix is not None else 0
    assert manager.allocator.num_free_blocks == manager.num_blocks - cached


def test_truncate_frees_whole_blocks_and_later_writes_reuse_the_slots():
    manager = KVCacheManager(KVCacheConfig(num_blocks=8, block_size=BS))
    seq = manager.new_sequence()
    manager.allocate(seq, 0, 11)
    assert len(seq.block_ids) == 3 and manager.allocator.num_free_blocks == 5
    before = manager.slot_mapping(seq, 5, 11)
    manager.truncate(seq, 6)
    assert len(seq.block_ids) == 2 and manager.allocator.num_free_blocks == 6
    manager.allocate(seq, 6, 9)
    assert manager.slot_mapping(seq, 5, 6) == before[:1]
    assert manager.slot_mapping(seq, 6, 8) == before[1:3]  # the rejected slots, overwritten
    manager.truncate(seq, 0)
    assert seq.block_ids == [] and manager.allocator.num_free_blocks == 8
    with pytest.raises(ValueError, match="beyond the sequence's 0 blocks"):
        manager.truncate(seq, 1)
    with pytest.raises(ValueError, match="num_tokens must be an int >= 0"):
        manager.truncate(seq, -1)


def test_truncate_inside_a_forked_block_copies_on_the_next_write():
    manager = KVCacheManager(KVCacheConfig(num_blocks=8, block_size=BS))
    seq = manager.new_sequence()
    manager.allocate(seq, 0, 8)
    child = manager.fork(seq)
    manager.allocate(seq, 8, 10)
    manager.truncate(seq, 6)  # back inside block 1, which the child shares
    assert seq.block_ids == child.block_ids
    src = seq.block_ids[1]
    copy = manager.allocate(seq, 6, 7)
    assert copy is not None and copy[0] == src and seq.block_ids[1] == copy[1]
    assert manager.allocator.ref_count(src) == 1  # the child's alone


def test_rollback_errors_name_the_limits():
    kv = SpecKVCache(KVCacheManager(KVCacheConfig(num_blocks=4, block_size=BS)))
    kv.add("r")
    kv.write("r", 5)
    with pytest.raises(ValueError, match=r"num_tokens must be in \[0, 5\]"):
        kv.rollback("r", 6)
    with pytest.raises(KeyError, match="add\\(\\) it first"):
        kv.write("s", 1)
    with pytest.raises(ValueError, match="already added"):
        kv.add("r")
