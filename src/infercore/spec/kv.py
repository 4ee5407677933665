"""Paged-KV bookkeeping of speculative decoding: write drafts, roll back rejected ones.

A verification pass writes KV for each row's new tokens (the last emitted token and the
drafts) before knowing which drafts survive. :class:`SpecKVCache` keeps, per request, a
:class:`~infercore.cache.SequenceBlocks` of a :class:`~infercore.cache.KVCacheManager`
and the number of positions whose slots it holds: :meth:`SpecKVCache.write` extends that
number and returns the slots to write, :meth:`SpecKVCache.rollback` shrinks it to the
accepted length, releasing whole blocks past it (:meth:`KVCacheManager.truncate`) so the
next write overwrites the rejected slots.

The step rule: a row whose tokens are ``t[0:L]`` with KV for ``t[0:L-1]`` writes
positions ``[L - 1, L + k)`` for its last token and ``k`` drafts; after ``a`` drafts are
accepted and one token sampled, it has ``L + a + 1`` tokens and valid KV for ``L + a``
of them: ``rollback(request_id, L + a)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from infercore.cache import KVCacheManager, SequenceBlocks

__all__ = ["KVWrite", "SpecKVCache"]


@dataclass(frozen=True, slots=True)
class KVWrite:
    """Where one row writes its new tokens' KV.

    Attributes
    ----------
    slots : list of int
        Slot (``block * block_size + offset``) of each new position, in order.
    copies : list of (int, int)
        Blocks to copy ``src -> dst`` in every layer before writing
        (:meth:`KVCacheManager.copy_blocks`; copy-on-write of shared blocks).
    """

    slots: list[int]
    copies: list[tuple[int, int]]


class SpecKVCache:
    """Per-request blocks and lengths over a :class:`KVCacheManager`.

    Parameters
    ----------
    manager : KVCacheManager
        The pool; shared with anything else that allocates from it.
    """

    def __init__(self, manager: KVCacheManager) -> None:
        self.manager = manager
        self._seqs: dict[Hashable, SequenceBlocks] = {}
        self._lengths: dict[Hashable, int] = {}

    def __contains__(self, request_id: Hashable) -> bool:
        return request_id in self._seqs

    def _seq(self, request_id: Hashable) -> SequenceBlocks:
        seq = self._seqs.get(request_id)
        if seq is None:
            raise KeyError(f"request {request_id!r} has no KV here; add() it first")
        return seq

    def add(self, request_id: Hashable, token_ids: Sequence[int] = ()) -> int:
        """Start a request; with prefix caching, reuse cached blocks of ``token_ids``.

        Returns the number of leading positions whose KV is already there (a prefix hit).
        """
        if request_id in self._seqs:
            raise ValueError(f"request {request_id!r} was already added")
        manager = self.manager
        seq = manager.new_sequence()
        hit = manager.match_prefix(token_ids) if token_ids else None
        cached = len(hit.block_ids) * manager.block_size if hit is not None else 0
        if cached:
            manager.allocate(seq, cached, cached, hit=hit)
        self._seqs[request_id] = seq
        self._lengths[request_id] = cached
        return cached

    def num_tokens(self, request_id: Hashable) -> int:
        """Positions whose slots the request holds (its valid KV after a rollback)."""
        self._seq(request_id)
        return self._lengths[request_id]

    def block_table(self, request_id: Hashable) -> list[int]:
        return self._seq(request_id).block_ids

    def slot_mapping(self, request_id: Hashable, start: int, end: int) -> list[int]:
        """Slots of positions ``[start, end)`` of the request (to read its KV back)."""
        return self.manager.slot_mapping(self._seq(request_id), start, end)

    def write(self, request_id: Hashable, num_new: int) -> KVWrite:
        """Slots for the next ``num_new`` positions; the request now holds them.

        Raises
        ------
        NoFreeBlocksError
            When the pool cannot hold them (nothing changed then).
        """
        if isinstance(num_new, bool) or not isinstance(num_new, int) or num_new < 0:
            raise ValueError(f"num_new must be an int >= 0, got {num_new!r}")
        seq = self._seq(request_id)
        start = self._lengths[request_id]
        copy = self.manager.allocate(seq, start, start + num_new)
        self._lengths[request_id] = start + num_new
        slots = self.manager.slot_mapping(seq, start, start + num_new)
        return KVWrite(slots, [copy] if copy is not None else [])

    def rollback(self, request_id: Hashable, num_tokens: int) -> None:
        """Keep the KV of the first ``num_tokens`` positions (the accepted ones); the next
        :meth:`write` starts there."""
        seq = self._seq(request_id)
        held = self._lengths[request_id]
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
            raise ValueError(f"num_tokens must be an int, got {num_tokens!r}")
        if not 0 <= num_tokens <= held:
            raise ValueError(
                f"num_tokens must be in [0, {held}] (the positions request {request_id!r} "
                f"holds), got {num_tokens}"
            )
        self.manager.truncate(seq, num_tokens)
        self._lengths[request_id] = num_tokens

    def register(self, request_id: Hashable, token_ids: Sequence[int]) -> None:
        """Offer the request's full blocks of accepted tokens to the prefix cache."""
        seq = self._seq(request_id)
        self.manager.register(seq, token_ids, min(self._lengths[request_id], len(token_ids)))

    def free(self, request_id: Hashable) -> None:
        """Release every block of the request."""
        self.manager.free(self._seq(request_id))
        del self._seqs[request_id], self._lengths[request_id]
