"""N-gram proposer (prompt-lookup decoding): drafts copied from the request's own tokens.

For each request, the last ``n`` tokens (``n`` from ``max_n`` down to ``min_n``) are
searched for in the earlier tokens; at the latest earlier occurrence of the longest
matching suffix, the up to ``k`` tokens that followed it are proposed. No model runs.

The search is vectorized over the batch with NumPy: rows are right-aligned in one
``[B, L]`` array so every row's suffix ends in the last column, and ``match_n[b, e]``
(the window ending at column ``e`` equals the last ``n`` tokens) is built for all ``n``
at once as ``match_n = match_{n-1} & (t[:, e - n + 1] == t[:, L - n])``:
``O(max_n * B * L)`` comparisons per call. Token ids are kept per request in a NumPy
buffer that grows by the new tokens only, so a call does not convert whole contexts.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pydantic
import torch

from infercore.config import Config
from infercore.spec.interface import Proposal, SpecRequest, per_row_k

__all__ = ["NgramConfig", "NgramProposer"]


class NgramConfig(Config):
    """Settings of the ``ngram`` proposer.

    ``max_n`` down to ``min_n`` are the suffix lengths tried (longest first). Defaults are
    an initial choice, to be tuned.
    """

    min_n: int = pydantic.Field(2, ge=1, description="shortest suffix to look up")
    max_n: int = pydantic.Field(4, ge=1, description="longest suffix to look up")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> NgramConfig:
        if self.max_n < self.min_n:
            raise ValueError(f"max_n ({self.max_n}) must be >= min_n ({self.min_n})")
        return self


class _TokenBuffer:
    """A request's token ids as a growing NumPy array (appends only the new tail)."""

    __slots__ = ("data", "size")

    def __init__(self) -> None:
        self.data = np.empty(0, dtype=np.int64)
        self.size = 0

    def sync(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        last = self.size - 1
        if n < self.size or (self.size and int(token_ids[last]) != self.data[last]):
            self.size = 0
        if n > self.data.shape[0]:
            grown = np.empty(max(n, 2 * self.data.shape[0], 64), dtype=np.int64)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        if n > self.size:
            self.data[self.size : n] = np.asarray(token_ids[self.size : n], dtype=np.int64)
            self.size = n
        return self.data[:n]


class NgramProposer:
    """Prompt-lookup proposer (``spec.proposer`` backend ``ngram``).

    Examples
    --------
    >>> p = infercore.create("spec.proposer", "ngram", {"min_n": 1, "max_n": 3})
    >>> prop = p.propose([RequestView(0, [5, 6, 7, 8, 5, 6])], k=3)
    >>> prop.tokens      # tensor([[7, 8, 5]]): what followed the earlier "5 6"
    """

    def __init__(self, config: NgramConfig | None = None) -> None:
        self.config = config if config is not None else NgramConfig()
        self._buffers: dict[Hashable, _TokenBuffer] = {}

    def propose(self, requests: Sequence[SpecRequest], k: int | Sequence[int]) -> Proposal:
        """Drafts for each request; CPU tensors, ``probs`` is ``None`` (deterministic)."""
        ks = np.asarray(per_row_k(k, len(requests)), dtype=np.int64)
        batch = len(requests)
        width = int(ks.max()) if batch else 0
        rows = self._rows(requests)
        lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)
        end = self._match_ends(rows, lengths)
        cols = int(lengths.max()) if batch else 0
        # Right-aligned columns: the continuation starts at column end + 1 and runs to the
        # last column (it may overlap the suffix itself).
        count = np.where(end >= 0, np.minimum(ks, cols - 1 - end), 0)
        tokens = np.full((batch, width), -1, dtype=np.int64)
        for b in np.flatnonzero(count):
            start = int(end[b]) + 1 - (cols - int(lengths[b]))
            tokens[b, : count[b]] = rows[b][start : start + count[b]]
        return Proposal(torch.from_numpy(tokens), torch.from_numpy(count.astype(np.int32)))

    def _rows(self, requests: Sequence[SpecRequest]) -> list[np.ndarray]:
        live = {r.request_id for r in requests}
        for rid in [rid for rid in self._buffers if rid not in live]:
            del self._buffers[rid]
        return [
            self._buffers.setdefault(r.request_id, _TokenBuffer()).sync(r.token_ids)
            for r in requests
        ]

    def _match_ends(self, rows: list[np.ndarray], lengths: np.ndarray) -> np.ndarray:
        """Per row, the right-aligned column where the chosen earlier match ends, or -1."""
        batch = len(rows)
        end = np.full(batch, -1, dtype=np.int64)
        if batch == 0:
            return end
        cols = int(lengths.max())
        t = np.full((batch, cols), -1, dtype=np.int64)
        for b, r in enumerate(rows):
            t[b, cols - r.shape[0] :] = r
        col = np.arange(cols)
        match = np.ones((batch, cols), dtype=bool)
        match[:, cols - 1] = False  # the suffix itself is not an earlier occurrence
        for n in range(1, self.config.max_n + 1):
            j = n - 1
            match[:, :j] = False
            match[:, j:] &= t[:, : cols - j] == t[:, cols - 1 - j, None]
            if n < self.config.min_n:
                continue
            # A window must start inside the row, and the row needs n + 1 tokens.
            ok = match & (col - j >= (cols - lengths)[:, None]) & (lengths[:, None] > n)
            found = ok.any(axis=1)
            latest = cols - 1 - np.argmax(ok[:, ::-1], axis=1)
            end = np.where(found, latest, end)  # longer n overrides shorter
        return end
