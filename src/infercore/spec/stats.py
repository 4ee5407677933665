"""Acceptance statistics of speculative decoding, per request and aggregated."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

import torch

__all__ = ["AcceptanceCounts", "AcceptanceStats", "as_int_list"]


def as_int_list(values: torch.Tensor | Sequence[int]) -> list[int]:
    """A tensor (synchronizes with its device) or sequence as a list of ints."""
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.tolist()]
    return [int(v) for v in values]


@dataclass
class AcceptanceCounts:
    """Counters of one request (or of all).

    Attributes
    ----------
    num_spec_steps : verification steps that had at least one draft token.
    num_plain_steps : steps without drafts (nothing proposed, or speculation off).
    num_draft_tokens, num_accepted_tokens : drafts proposed and accepted.
    num_rejections : speculative steps that ended at a rejected draft.
    """

    num_spec_steps: int = 0
    num_plain_steps: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_rejections: int = 0

    def add(self, num_draft: int, num_accepted: int) -> None:
        if num_draft == 0:
            self.num_plain_steps += 1
            return
        self.num_spec_steps += 1
        self.num_draft_tokens += num_draft
        self.num_accepted_tokens += num_accepted
        self.num_rejections += int(num_accepted < num_draft)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per speculative step: ``1 + accepted / steps`` (NaN before any)."""
        if not self.num_spec_steps:
            return math.nan
        return 1.0 + self.num_accepted_tokens / self.num_spec_steps

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts over proposed drafts (NaN before any)."""
        if not self.num_draft_tokens:
            return math.nan
        return self.num_accepted_tokens / self.num_draft_tokens

    @property
    def tokens_per_step(self) -> float:
        """Tokens emitted per target step, speculative or not (NaN before any)."""
        steps = self.num_spec_steps + self.num_plain_steps
        if not steps:
            return math.nan
        return (self.num_accepted_tokens + steps) / steps

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = dict(asdict(self))
        out["mean_accepted_length"] = self.mean_accepted_length
        out["acceptance_rate"] = self.acceptance_rate
        out["tokens_per_step"] = self.tokens_per_step
        return out


class AcceptanceStats:
    """Acceptance counters per request id, and over all requests (removed ones included).

    Examples
    --------
    >>> stats = AcceptanceStats()
    >>> stats.update(["a", "b"], num_draft=[4, 4], num_accepted=[4, 1])
    >>> stats["a"].mean_accepted_length, stats.total.acceptance_rate
    (5.0, 0.625)
    """

    def __init__(self) -> None:
        self._per_request: dict[Hashable, AcceptanceCounts] = {}
        self.total = AcceptanceCounts()

    def update(
        self,
        request_ids: Sequence[Hashable],
        num_draft: torch.Tensor | Sequence[int],
        num_accepted: torch.Tensor | Sequence[int],
    ) -> None:
        """Record one verification step of a batch."""
        drafted, accepted = as_int_list(num_draft), as_int_list(num_accepted)
        if not len(request_ids) == len(drafted) == len(accepted):
            raise ValueError(
                f"request_ids, num_draft and num_accepted must have one entry per row, got "
                f"{len(request_ids)}, {len(drafted)} and {len(accepted)}"
            )
        for rid, d, a in zip(request_ids, drafted, accepted, strict=True):
            if not 0 <= a <= d:
                raise ValueError(f"request {rid!r}: num_accepted={a} not in [0, num_draft={d}]")
            self._per_request.setdefault(rid, AcceptanceCounts()).add(d, a)
            self.total.add(d, a)

    def __getitem__(self, request_id: Hashable) -> AcceptanceCounts:
        return self._per_request[request_id]

    def __contains__(self, request_id: Hashable) -> bool:
        return request_id in self._per_request

    def remove(self, request_id: Hashable) -> AcceptanceCounts | None:
        """Forget a finished request (its counts stay in ``total``); returns them."""
        return self._per_request.pop(request_id, None)

    def summary(self) -> dict[str, float]:
        """Aggregated counters and rates, plus the number of tracked requests."""
        out = self.total.summary()
        out["num_requests"] = len(self._per_request)
        return out
