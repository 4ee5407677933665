"""A model over the paged KV cache as a :class:`~infercore.spec.models.LogitsModel`.

:class:`PagedModel` keeps each row's KV in blocks of a
:class:`~infercore.cache.KVCacheManager` (through :class:`~infercore.spec.kv.SpecKVCache`)
and runs a *paged forward*: a callable ``(input_ids [N], positions [N], batch:
PagedBatch) -> logits [N, V]`` over the packed new tokens of all rows, which writes their
K/V at ``batch.slot_mapping`` (:func:`infercore.ops.kv.write`) and attends through the
block tables (:func:`infercore.ops.attention.paged`). Between calls a row's cached
prefix is kept; tokens past it (drafts the target rejected) are rolled back, releasing
whole blocks, and their slots are overwritten by the next write. This is the draft-model
proposer's paged-cache path; :class:`~infercore.spec.hf.HFModel` is the
``past_key_values`` alternative for transformers models.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from infercore.cache import KVCacheManager
from infercore.spec.kv import SpecKVCache
from infercore.spec.models import common_prefix, logits_arguments

__all__ = ["PagedBatch", "PagedForward", "PagedModel"]


@dataclass(frozen=True, slots=True)
class PagedBatch:
    """What a paged forward needs besides the tokens (all on the cache's device).

    Attributes
    ----------
    slot_mapping : Tensor ``[N]``, int64
        Where each new token's K/V goes.
    block_tables : Tensor ``[B, max_blocks]``, int32
        Each row's blocks (padded with 0 past its own).
    seq_lens : Tensor ``[B]``, int32
        Tokens in the cache per row, the new ones included.
    cu_seqlens_q : Tensor ``[B + 1]``, int32
        Offsets of each row's new tokens in the packed ``[N]`` inputs.
    max_seqlen_q : int
        The most new tokens of one row.
    kv_caches : list of (Tensor, Tensor)
        Per layer ``(k_cache, v_cache)`` ``[num_blocks, block_size, num_kv_heads,
        head_dim]`` (:attr:`KVCacheManager.kv_caches`).
    """

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor
    max_seqlen_q: int
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]]


PagedForward = Callable[[torch.Tensor, torch.Tensor, PagedBatch], torch.Tensor]


class PagedModel:
    """A :class:`LogitsModel` running ``forward`` over a paged KV cache.

    Parameters
    ----------
    forward : PagedForward
        ``(input_ids [N] int64, positions [N] int64, batch) -> logits [N, V]``.
    vocab_size : int
        ``V`` of the logits.
    manager : KVCacheManager
        The pool, created with the model's :class:`~infercore.cache.KVCacheLayout`.

    Notes
    -----
    A key absent from a call is treated as finished: its blocks are freed. A call that
    does not fit in the pool raises :class:`~infercore.cache.NoFreeBlocksError`; the
    rows stay usable (their cached prefixes are kept).
    """

    def __init__(self, forward: PagedForward, vocab_size: int, manager: KVCacheManager) -> None:
        if not callable(forward):
            raise TypeError(f"forward must be callable, got {type(forward).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
        self.forward = forward
        self._vocab_size = vocab_size
        self.cache = SpecKVCache(manager)
        self._tokens: dict[Hashable, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def manager(self) -> KVCacheManager:
        return self.cache.manager

    def reset(self) -> None:
        """Free every row's blocks."""
        for key in list(self._tokens):
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        self.cache.free(key)
        del self._tokens[key]

    def logits(
        self,
        rows: Sequence[Sequence[int]],
        num_last: int | Sequence[int] = 1,
        keys: Sequence[Hashable] | None = None,
    ) -> torch.Tensor:
        """See :class:`~infercore.spec.models.LogitsModel`; returns float32 ``[B, n, V]``."""
        rows, ns, keys = logits_arguments(rows, num_last, keys)
        for key in [k for k in self._tokens if k not in set(keys)]:
            self._drop(key)
        cache = self.cache
        new_tokens: list[list[int]] = []
        slots: list[int] = []
        copies: list[tuple[int, int]] = []
        for key, row, n in zip(keys, rows, ns, strict=True):
            if key not in self._tokens:
                cache.add(key)
                self._tokens[key] = []
            keep = min(common_prefix(self._tokens[key], row), len(row) - n)
            cache.rollback(key, keep)
            self._tokens[key] = row[:keep]
            write = cache.write(key, len(row) - keep)
            new_tokens.append(row[keep:])
            slots.extend(write.slots)
            copies.extend(write.copies)
        manager = self.manager
        manager.copy_blocks(copies)
        kv_caches = manager.kv_caches
        device = kv_caches[0][0].device
        lengths = [len(x) for x in new_tokens]
        cu = [0]
        for n_new in lengths:
            cu.append(cu[-1] + n_new)
        tables = [cache.block_table(key) for key in keys]
        width = max(len(t) for t in tables)
        batch = PagedBatch(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
            block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables],
                                      dtype=torch.int32, device=device),
            seq_lens=torch.tensor([len(r) for r in rows], dtype=torch.int32, device=device),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=device),
            max_seqlen_q=max(lengths),
            kv_caches=kv_caches,
        )
        input_ids = torch.tensor([t for x in new_tokens for t in x], dtype=torch.int64,
                                 device=device)
        positions = torch.tensor(
            [p for r, x in zip(rows, new_tokens, strict=True)
             for p in range(len(r) - len(x), len(r))],
            dtype=torch.int64, device=device,
        )
        out = self.forward(input_ids, positions, batch)
        if tuple(out.shape) != (cu[-1], self._vocab_size):
            raise ValueError(
                f"the paged forward returned logits of shape {tuple(out.shape)}, expected "
                f"[num_new_tokens, vocab_size] = [{cu[-1]}, {self._vocab_size}]"
            )
        for key, row in zip(keys, rows, strict=True):
            self._tokens[key] = row
        n_max = max(ns)
        index = torch.tensor(
            [[cu[b + 1] - n + min(i, n - 1) for i in range(n_max)] for b, n in enumerate(ns)],
            dtype=torch.int64, device=out.device,
        )
        return out[index].float()
