"""Models as seen by speculative decoding: token rows in, logits of their last tokens out.

:class:`LogitsModel` is what the draft-model proposer and :func:`speculative_generate`
drive. :class:`CallableModel` adapts a stateless callable ``(input_ids [B, T],
positions [B, T]) -> logits [B, T, V]`` (recomputes every row in full on each call: meant
for small or toy models); :class:`infercore.spec.hf.HFModel` adapts a transformers model
with its own ``past_key_values`` cache.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["CallableModel", "LogitsModel", "common_prefix", "logits_arguments",
           "per_row_num_last"]


@runtime_checkable
class LogitsModel(Protocol):
    """A causal LM evaluated on whole token rows.

    ``logits(rows, num_last, keys)`` returns float32 ``[B, n, V]`` with ``n =
    max(num_last)``: entry ``[b, i]`` holds the logits that follow token
    ``len(rows[b]) - num_last[b] + i`` of row ``b`` (the next-token distribution after it);
    entries with ``i >= num_last[b]`` are unspecified. ``keys`` identify the rows (request
    ids) so a stateful model can keep per-row caches: rows with the same key between calls
    share a prefix, and whatever a model computed past that prefix (rejected drafts) is
    discarded.
    """

    @property
    def vocab_size(self) -> int: ...

    def logits(
        self,
        rows: Sequence[Sequence[int]],
        num_last: int | Sequence[int] = 1,
        keys: Sequence[Hashable] | None = None,
    ) -> torch.Tensor: ...


def per_row_num_last(num_last: int | Sequence[int], rows: Sequence[Sequence[int]]) -> list[int]:
    """Validate ``num_last`` (1 <= n <= row length) and return one value per row."""
    ns = [num_last] * len(rows) if isinstance(num_last, int) else list(num_last)
    if len(ns) != len(rows):
        raise ValueError(f"num_last has {len(ns)} entries but there are {len(rows)} rows")
    for b, (n, row) in enumerate(zip(ns, rows, strict=True)):
        if not 1 <= n <= len(row):
            raise ValueError(
                f"num_last[{b}] must be in [1, len(rows[{b}])] = [1, {len(row)}], got {n}"
            )
    return ns


def logits_arguments(
    rows: Sequence[Sequence[int]],
    num_last: int | Sequence[int],
    keys: Sequence[Hashable] | None,
) -> tuple[list[list[int]], list[int], list[Hashable]]:
    """The arguments of :meth:`LogitsModel.logits` checked and normalized: rows as
    lists, one ``num_last`` per row, and ``keys`` (default: the row indices) as distinct
    ids, one per row."""
    rows = [list(r) for r in rows]
    ns = per_row_num_last(num_last, rows)
    keys = list(keys) if keys is not None else list(range(len(rows)))
    if len(keys) != len(rows) or len(set(keys)) != len(keys):
        raise ValueError(f"keys must be {len(rows)} distinct ids, one per row, got {keys}")
    return rows, ns, keys


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0])


class CallableModel:
    """A :class:`LogitsModel` over a stateless callable.

    Parameters
    ----------
    fn : callable ``(input_ids [B, T] int64, positions [B, T] int64) -> logits [B, T, V]``
        A causal model: outputs at a position depend only on the tokens up to it. Rows are
        right-padded with token ``pad_token_id`` (positions keep counting), so padding does
        not change the outputs read back.
    vocab_size : int
        ``V`` of the logits.
    device : torch.device or str
        Where ``input_ids`` and ``positions`` are created.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        vocab_size: int,
        *,
        device: torch.device | str = "cpu",
        pad_token_id: int = 0,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
        self.fn = fn
        self._vocab_size = vocab_size
        self.device = torch.device(device)
        self.pad_token_id = pad_token_id

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def logits(
        self,
        rows: Sequence[Sequence[int]],
        num_last: int | Sequence[int] = 1,
        keys: Sequence[Hashable] | None = None,
    ) -> torch.Tensor:
        ns = per_row_num_last(num_last, rows)
        width = max(len(r) for r in rows)
        ids = torch.tensor(
            [list(r) + [self.pad_token_id] * (width - len(r)) for r in rows],
            dtype=torch.int64, device=self.device,
        )
        positions = torch.arange(width, device=self.device).expand(len(rows), width)
        out = self.fn(ids, positions)
        expected = (len(rows), width, self._vocab_size)
        if tuple(out.shape) != expected:
            raise ValueError(
                f"the model returned logits of shape {tuple(out.shape)}, expected "
                f"[batch, tokens, vocab_size] = {list(expected)}"
            )
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        first = lengths - torch.tensor(ns, device=self.device)
        idx = torch.minimum(first[:, None] + torch.arange(max(ns), device=self.device),
                            lengths[:, None] - 1)
        return out.gather(1, idx[..., None].expand(-1, -1, out.shape[-1])).float()
