"""The proposer interface: what a proposer reads from requests and what it returns."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from infercore.spec.sampling import SamplingParams

__all__ = ["Proposal", "Proposer", "RequestView", "SpecRequest", "per_row_k"]


@runtime_checkable
class SpecRequest(Protocol):
    """The view of a request a proposer needs.

    ``token_ids`` are the request's tokens so far (prompt then generated), append-only
    between calls for one ``request_id``: rejected drafts are never part of it. A request
    may also carry ``sampling`` (:class:`~infercore.spec.sampling.SamplingParams`, or
    ``None``): proposers that sample apply it to their own logits, as the verifier applies
    it to the target's.
    """

    @property
    def request_id(self) -> Hashable: ...

    @property
    def token_ids(self) -> Sequence[int]: ...


@dataclass(frozen=True, slots=True)
class RequestView:
    """A minimal :class:`SpecRequest`: an id, the tokens so far, the sampling settings."""

    request_id: Hashable
    token_ids: Sequence[int]
    sampling: SamplingParams | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    """Draft tokens for a batch of requests.

    Attributes
    ----------
    tokens : Tensor ``[B, K]``, int64
        Row ``b`` holds ``num_tokens[b]`` drafts then ``-1``; ``K`` is the largest ``k``
        asked for.
    num_tokens : Tensor ``[B]``, int32, on ``tokens``' device
        Drafts per row; may be below the row's ``k`` (an n-gram with a short
        continuation) or 0 (nothing to propose: the row decodes plainly).
    probs : Tensor ``[B, K, V]``, float32, or None
        The distributions the drafts were sampled from, when the proposer has them
        (a draft model sampling with temperature > 0: the requests' filtered
        distributions, see :mod:`infercore.spec.sampling`). ``None`` means each draft is
        deterministic given its context: the verifier treats ``q`` as one-hot.
    """

    tokens: torch.Tensor
    num_tokens: torch.Tensor
    probs: torch.Tensor | None = None

    def lengths(self) -> list[int]:
        """``num_tokens`` as a host list (synchronizes with the device)."""
        return [int(n) for n in self.num_tokens.tolist()]

    def rows(self) -> list[list[int]]:
        """Each row's draft tokens as a host list (synchronizes with the device)."""
        tokens = self.tokens.tolist()
        return [row[:n] for row, n in zip(tokens, self.lengths(), strict=True)]


@runtime_checkable
class Proposer(Protocol):
    """A proposer of draft tokens (component family ``spec.proposer``)."""

    def propose(self, requests: Sequence[SpecRequest], k: int | Sequence[int]) -> Proposal:
        """Propose up to ``k`` draft tokens continuing each request's ``token_ids``.

        ``k`` is one int (>= 1) for every row, or one int (>= 0) per row.
        """
        ...


def per_row_k(k: int | Sequence[int], batch: int) -> list[int]:
    """Validate ``k`` and return one value per row (raises ``ValueError``/``TypeError``)."""
    if isinstance(k, bool):
        raise TypeError(f"k must be an int or a sequence of ints, got {k!r}")
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"k must be >= 1 (draft tokens per row), got {k}")
        return [k] * batch
    if not isinstance(k, Sequence):
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__}")
    ks = list(k)
    if len(ks) != batch:
        raise ValueError(f"k has {len(ks)} entries but there are {batch} requests")
    for i, v in enumerate(ks):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"k[{i}] must be an int >= 0, got {v!r}")
    return ks
