"""A fixed pool of KV-cache block ids with reference counts and copy-on-write sharing."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BlockAllocator", "NoFreeBlocksError"]


class NoFreeBlocksError(RuntimeError):
    """An allocation asked for more blocks than are free (check ``can_allocate`` first)."""


class BlockAllocator:
    """Block ids ``0 .. num_blocks - 1``: a free list and one reference count per block.

    A block is free when its count is 0. Every holder of a block (a sequence's block
    table, a prefix cache) owns one reference: :meth:`allocate` hands out blocks with
    count 1, :meth:`fork` adds a holder to blocks already in use (copy-on-write sharing
    for parallel sampling and beam search), :meth:`free` drops one and returns blocks
    whose count reaches 0 to the free list. A holder about to write into a shared block
    calls :meth:`make_writable`, which gives it a private copy and says what to copy.

    Parameters
    ----------
    num_blocks : int
        Size of the pool.
    watermark : float
        Fraction of the pool that ``can_allocate(n, watermark=True)`` keeps free, so
        that admitting new sequences leaves room for running ones to grow.

    Examples
    --------
    >>> a = BlockAllocator(8)
    >>> a.allocate(3)
    [0, 1, 2]
    >>> a.fork([2])          # a second sequence shares block 2
    >>> a.make_writable(2)   # one of them appends to it: its copy is block 3
    (3, (2, 3))
    """

    def __init__(self, num_blocks: int, *, watermark: float = 0.0) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {watermark!r}")
        self.num_blocks = num_blocks
        self.watermark_blocks = int(watermark * num_blocks)
        self._ref = [0] * num_blocks
        # A stack: the most recently freed block is reused first (warm in caches).
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def ref_count(self, block_id: int) -> int:
        """Number of holders of ``block_id`` (0 when free)."""
        return self._ref[block_id]

    def can_allocate(self, num_blocks: int, *, watermark: bool = False) -> bool:
        """Whether :meth:`allocate` of ``num_blocks`` succeeds (keeping the watermark free
        when ``watermark`` is set)."""
        reserve = self.watermark_blocks if watermark else 0
        return num_blocks + reserve <= len(self._free)

    def allocate(self, num_blocks: int = 1) -> list[int]:
        """Take ``num_blocks`` free blocks, each with reference count 1.

        Raises
        ------
        NoFreeBlocksError
            When fewer than ``num_blocks`` are free.
        """
        free = self._free
        if num_blocks > len(free):
            raise NoFreeBlocksError(
                f"asked for {num_blocks} blocks, {len(free)} of {self.num_blocks} are free"
            )
        ref = self._ref
        if num_blocks == 1:  # the common case: a decode entering a new block
            b = free.pop()
            ref[b] = 1
            return [b]
        if num_blocks <= 0:
            return []
        blocks = free[-num_blocks:]
        del free[-num_blocks:]
        blocks.reverse()
        for b in blocks:
            ref[b] = 1
        return blocks

    def fork(self, block_ids: Iterable[int]) -> None:
        """Add a holder to each block in ``block_ids`` (which must be in use)."""
        ref = self._ref
        for b in block_ids:
            if ref[b] <= 0:
                raise ValueError(f"fork of block {b}, which is free")
            ref[b] += 1

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one holder of each block; blocks left with none return to the free list.

        Raises
        ------
        ValueError
            When a block is already free (a double free).
        """
        ref = self._ref
        free = self._free
        for b in block_ids:
            count = ref[b] - 1
            if count < 0:
                raise ValueError(f"free of block {b}, which is already free")
            ref[b] = count
            if count == 0:
                free.append(b)

    def make_writable(self, block_id: int) -> tuple[int, tuple[int, int] | None]:
        """Prepare ``block_id`` for a write by one of its holders.

        Returns ``(block_id, None)`` when the caller is its only holder. Otherwise the
        caller's reference moves to a newly allocated block and the result is
        ``(new_block, (block_id, new_block))``: the KV of ``block_id`` must be copied to
        ``new_block`` before the write.

        Raises
        ------
        NoFreeBlocksError
            When the block is shared and no block is free.
        """
        ref = self._ref
        count = ref[block_id]
        if count <= 0:
            raise ValueError(f"make_writable of block {block_id}, which is free")
        if count == 1:
            return block_id, None
        (new,) = self.allocate(1)
        ref[block_id] = count - 1
        return new, (block_id, new)

    def __repr__(self) -> str:
        return f"BlockAllocator(num_blocks={self.num_blocks}, free={len(self._free)})"
