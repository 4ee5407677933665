"""KVCacheManager: sizing, tensors, block tables, slot mappings, forks, streaming."""

from __future__ import annotations

import pytest
import torch

from infercore import ConfigError
from infercore.cache import (
    KVCacheConfig,
    KVCacheLayout,
    KVCacheManager,
    NoFreeBlocksError,
    StreamingConfig,
    tensors,
)

LAYOUT = KVCacheLayout(num_layers=3, num_kv_heads=2, head_dim=8, dtype=torch.float16)


def test_pool_is_sized_from_a_memory_budget():
    per_block = 2 * 3 * 4 * 2 * 8 * 2  # K and V, layers, tokens, heads, dim, fp16 bytes
    assert LAYOUT.bytes_per_block(4) == per_block
    m = KVCacheManager(KVCacheConfig(block_size=4, max_memory_bytes=7 * per_block + 5), LAYOUT)
    assert m.num_blocks == 7
    m32 = KVCacheManager(
        KVCacheConfig(block_size=4, max_memory_bytes=7 * per_block, cache_dtype="float32"), LAYOUT
    )
    assert m32.num_blocks == 3  # blocks are twice as large


def test_pool_from_free_memory_uses_the_utilization_fraction(monkeypatch):
    assert tensors.free_memory_bytes("cpu") > 0
    per_block = LAYOUT.bytes_per_block(16)
    monkeypatch.setattr(tensors, "free_memory_bytes", lambda device: 1000 * per_block)
    m = KVCacheManager(KVCacheConfig(gpu_memory_utilization=0.25), LAYOUT, device="cpu")
    assert m.num_blocks == 250


def test_sizing_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="KVCacheLayout"):
        KVCacheManager(KVCacheConfig())
    with pytest.raises(ValueError, match="holds no block"):
        KVCacheManager(KVCacheConfig(max_memory_bytes=10), LAYOUT)
    with pytest.raises(ConfigError, match="cache_dtype"):
        KVCacheConfig(cache_dtype="int3")
    with pytest.raises(ConfigError, match="block_size"):
        KVCacheConfig(block_size=0)


def test_tensors_have_the_nhd_layout_and_copy_blocks_copies():
    m = KVCacheManager(
        KVCacheConfig(block_size=4, max_memory_bytes=5 * LAYOUT.bytes_per_block(4)),
        LAYOUT,
        device="cpu",
    )
    caches = m.kv_caches
    assert len(caches) == 3 and m.kv_caches is caches
    for k, v in caches:
        assert k.shape == v.shape == (5, 4, 2, 8)
        assert k.dtype == v.dtype == torch.float16 and k.device.type == "cpu"
        k.copy_(torch.randn(k.shape))
        v.copy_(torch.randn(v.shape))
    before = [(k.clone(), v.clone()) for k, v in caches]
    m.copy_blocks([(1, 3), (4, 0)])
    for (k, v), (k0, v0) in zip(caches, before, strict=True):
        assert torch.equal(k[3], k0[1]) and torch.equal(v[0], v0[4])
        assert torch.equal(k[1], k0[1]) and torch.equal(k[2], k0[2])


def test_block_table_and_slot_mapping():
    m = KVCacheManager(KVCacheConfig(num_blocks=10, block_size=4, enable_prefix_caching=False))
    a, b = m.new_sequence(), m.new_sequence()
    m.allocate(a, 0, 6)
    m.allocate(b, 0, 3)
    m.allocate(a, 6, 9)
    assert len(a.block_ids) == 3 and len(b.block_ids) == 1
    assert not set(a.block_ids) & set(b.block_ids)
    slots = m.slot_mapping(a, 2, 9)
    expected = [a.block_ids[p // 4] * 4 + p % 4 for p in range(2, 9)]
    assert slots == expected
    with pytest.raises(ValueError, match="outside"):
        m.slot_mapping(a, 8, 13)
    table = a.block_ids
    m.free(a)
    assert table and a.block_ids == [] and m.num_free_blocks == 9


def test_allocation_beyond_the_pool_fails_cleanly():
    m = KVCacheManager(KVCacheConfig(num_blocks=2, block_size=4))
    seq = m.new_sequence()
    assert not m.can_allocate(seq, 0, 9) and m.max_new_tokens(seq, 0) == 8
    with pytest.raises(NoFreeBlocksError):
        m.allocate(seq, 0, 9)


def test_fork_copies_the_shared_last_block_on_write():
    m = KVCacheManager(KVCacheConfig(num_blocks=6, block_size=4))
    parent = m.new_sequence()
    m.allocate(parent, 0, 6)
    child = m.fork(parent)
    assert child.block_ids == parent.block_ids
    assert all(m.allocator.ref_count(b) == 2 for b in parent.block_ids)
    assert m.max_new_tokens(parent, 6) == (2 + 4 - 1) * 4 - 6  # one block goes to the copy
    copy = m.allocate(parent, 6, 7)
    assert copy == (child.block_ids[1], parent.block_ids[1])
    assert parent.block_ids[0] == child.block_ids[0]
    assert m.allocate(child, 6, 7) is None  # now its sole holder
    assert m.allocator.ref_count(child.block_ids[1]) == 1


def test_fork_on_a_full_block_shares_without_copying():
    m = KVCacheManager(KVCacheConfig(num_blocks=6, block_size=4))
    parent = m.new_sequence()
    m.allocate(parent, 0, 8)
    child = m.fork(parent)
    assert m.allocate(parent, 8, 9) is None and m.allocate(child, 8, 9) is None
    assert parent.block_ids[:2] == child.block_ids[:2]
    assert parent.block_ids[2] != child.block_ids[2]


def test_streaming_keeps_sinks_and_a_recent_window():
    m = KVCacheManager(
        KVCacheConfig(
            num_blocks=5,
            block_size=4,
            streaming=StreamingConfig(sink_tokens=3, window_tokens=6),
        )
    )
    seq = m.new_sequence()
    m.allocate(seq, 0, 12)
    sink = seq.block_ids[0]
    for p in range(12, 60):  # decode far past what the pool holds
        if p >= seq.writable_end:
            m.allocate(seq, p, p + 1)
            # Every block older than the window is gone: the oldest non-sink block
            # (positions from 4 + dropped) ends inside the window.
            assert 4 + seq.num_dropped_tokens + 4 > p - 6
        cache_pos = p - seq.num_dropped_tokens
        assert m.slot_mapping(seq, p, p + 1) == [
            seq.block_ids[cache_pos // 4] * 4 + cache_pos % 4
        ]
        assert seq.block_ids[0] == sink
        assert cache_pos - 4 >= 6  # at least the window precedes the new token
        assert len(seq.block_ids) <= 1 + 3
    assert seq.num_dropped_tokens > 0
    assert m.allocator.num_used_blocks == len(seq.block_ids)


def test_streaming_pool_must_hold_sinks_and_window():
    streaming = StreamingConfig(sink_tokens=5, window_tokens=9)  # 2 + 3 + 1 blocks of 4
    KVCacheManager(KVCacheConfig(num_blocks=6, block_size=4, streaming=streaming))
    with pytest.raises(ValueError, match="needs at least 6 blocks"):
        KVCacheManager(KVCacheConfig(num_blocks=5, block_size=4, streaming=streaming))


@pytest.mark.cuda
def test_cuda_pool_is_sized_from_free_memory_and_allocated():
    layout = KVCacheLayout(num_layers=2, num_kv_heads=8, head_dim=128, dtype=torch.bfloat16)
    torch.cuda.init()
    free = torch.cuda.mem_get_info()[0]
    config = KVCacheConfig(block_size=16, gpu_memory_utilization=0.02)
    m = KVCacheManager(config, layout, device="cuda")
    expected = int(0.02 * free) // layout.bytes_per_block(16)
    assert m.num_blocks == pytest.approx(expected, rel=0.02)
    before = torch.cuda.memory_allocated()
    caches = m.kv_caches
    grown = torch.cuda.memory_allocated() - before
    assert grown >= m.num_blocks * layout.bytes_per_block(16)
    for k, v in caches:
        assert k.is_cuda and k.shape == v.shape == (m.num_blocks, 16, 8, 128)
        assert k.dtype == torch.bfloat16
    k0, v0 = caches[0]
    k0[3].normal_()
    v0[3].normal_()
    m.copy_blocks([(3, 7)])
    assert torch.equal(k0[7], k0[3]) and torch.equal(v0[7], v0[3])
