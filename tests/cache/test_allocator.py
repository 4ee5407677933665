"""Block allocators, every registered backend: pool accounting, sharing, copy-on-write."""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import infercore
from infercore.cache import BlockAllocatorProtocol, NoFreeBlocksError
from tests.helpers import backend_params

BACKENDS = backend_params("cache.allocator", include_reference=True)


def make(backend: str, num_blocks: int, watermark: float = 0.0):
    return infercore.create(
        "cache.allocator", backend, {"num_blocks": num_blocks, "watermark": watermark}
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_satisfies_protocol(backend):
    assert isinstance(make(backend, 4), BlockAllocatorProtocol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_allocate_until_empty_then_free(backend):
    a = make(backend, 7)
    first = a.allocate(3)
    second = a.allocate(4)
    assert sorted(first + second) == list(range(7))
    assert a.num_free_blocks == 0 and a.num_used_blocks == 7
    assert not a.can_allocate(1)
    with pytest.raises(NoFreeBlocksError, match="asked for 1 blocks, 0 of 7"):
        a.allocate(1)
    a.free(first)
    assert a.num_free_blocks == 3 and a.can_allocate(3) and not a.can_allocate(4)
    assert sorted(a.allocate(3)) == sorted(first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_free_and_fork_of_free_block_raise(backend):
    a = make(backend, 3)
    (b,) = a.allocate(1)
    a.free([b])
    with pytest.raises(ValueError, match="already free"):
        a.free([b])
    with pytest.raises(ValueError, match="free"):
        a.fork([b])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fork_shares_until_every_holder_frees(backend):
    a = make(backend, 4)
    blocks = a.allocate(2)
    a.fork(blocks)
    assert [a.ref_count(b) for b in blocks] == [2, 2]
    a.free(blocks)
    assert a.num_free_blocks == 2
    a.free(blocks)
    assert a.num_free_blocks == 4 and all(a.ref_count(b) == 0 for b in blocks)


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_writable_copies_only_shared_blocks(backend):
    a = make(backend, 4)
    (b,) = a.allocate(1)
    assert a.make_writable(b) == (b, None)
    a.fork([b])
    new, copy = a.make_writable(b)
    assert new != b and copy == (b, new)
    assert a.ref_count(b) == 1 and a.ref_count(new) == 1
    assert a.make_writable(b) == (b, None)  # the other holder is now alone


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_writable_of_a_shared_block_needs_a_free_block(backend):
    a = make(backend, 2)
    blocks = a.allocate(2)
    a.fork(blocks[:1])
    with pytest.raises(NoFreeBlocksError):
        a.make_writable(blocks[0])
    assert a.ref_count(blocks[0]) == 2  # unchanged by the failed call


@pytest.mark.parametrize("backend", BACKENDS)
def test_watermark_keeps_blocks_for_growth(backend):
    a = make(backend, 20, watermark=0.1)
    assert a.watermark_blocks == 2
    assert a.can_allocate(18, watermark=True) and not a.can_allocate(19, watermark=True)
    assert a.can_allocate(20)


def test_config_is_validated():
    with pytest.raises(infercore.ConfigError, match="num_blocks"):
        make("default", 0)
    with pytest.raises(infercore.ConfigError, match="watermark"):
        make("default", 4, watermark=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40)
@given(ops=st.lists(st.tuples(st.sampled_from("afwx"), st.integers(0, 40)), max_size=60))
def test_random_operations_match_a_model_of_holders(backend, ops):
    """Every block's count equals its holders in a model; free + used == total."""
    a = make(backend, 9)
    holders: list[list[int]] = []  # each holder: a list of blocks it references
    for op, arg in ops:
        if op == "a":
            n = arg % 4
            if a.can_allocate(n):
                holders.append(a.allocate(n))
            else:
                with pytest.raises(NoFreeBlocksError):
                    a.allocate(n)
        elif op == "f" and holders:
            a.free(holders.pop(arg % len(holders)))
        elif op == "w" and holders:  # fork a holder
            blocks = holders[arg % len(holders)]
            a.fork(blocks)
            holders.append(list(blocks))
        elif op == "x" and holders and holders[arg % len(holders)]:  # write to a last block
            blocks = holders[arg % len(holders)]
            shared = a.ref_count(blocks[-1]) > 1
            if not shared or a.num_free_blocks:
                old = blocks[-1]
                blocks[-1], copy = a.make_writable(old)
                assert copy == ((old, blocks[-1]) if shared else None)
        counts = Counter(b for h in holders for b in h)
        assert all(a.ref_count(b) == counts[b] for b in range(9))
        assert a.num_free_blocks == sum(1 for b in range(9) if counts[b] == 0)
        assert a.num_free_blocks + a.num_used_blocks == 9
