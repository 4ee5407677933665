"""A generation request and its state machine."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infercore.cache.manager import SequenceBlocks

__all__ = ["FinishReason", "IllegalTransitionError", "Request", "RequestStatus"]


class RequestStatus(enum.Enum):
    """Where a request is in its life.

    ``WAITING -> RUNNING -> FINISHED``, with ``RUNNING -> PREEMPTED -> RUNNING`` when
    its blocks are taken back, and ``ABORTED`` from any live state.
    """

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"
    ABORTED = "aborted"


class FinishReason(enum.Enum):
    """Why a request ended: ``LENGTH`` (max_tokens, the model's or the cache's length),
    ``STOP`` (a stop token or EOS), ``ABORT`` (aborted)."""

    LENGTH = "length"
    STOP = "stop"
    ABORT = "abort"


_S = RequestStatus
_ALLOWED: dict[RequestStatus, frozenset[RequestStatus]] = {
    _S.WAITING: frozenset({_S.RUNNING, _S.ABORTED}),
    _S.RUNNING: frozenset({_S.PREEMPTED, _S.FINISHED, _S.ABORTED}),
    _S.PREEMPTED: frozenset({_S.RUNNING, _S.ABORTED}),
    _S.FINISHED: frozenset(),
    _S.ABORTED: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """A request was moved to a state its current state does not lead to."""


class Request:
    """A prompt to continue, with its stop conditions and scheduling state.

    Parameters
    ----------
    request_id : str
        Unique among the live requests of a scheduler.
    prompt_token_ids : sequence of int
        At least one token.
    max_tokens : int
        Most tokens to generate (>= 1).
    stop_token_ids : iterable of int
        Generating one of these ends the request (reason ``STOP``); it is kept in the
        output.
    eos_token_id : int, optional
        End-of-sequence token: a stop token unless ``ignore_eos``.
    ignore_eos : bool
        Keep generating past EOS (benchmarks).
    priority : int
        With the ``priority`` policy, smaller values are served first and may preempt
        running requests with larger ones (vLLM's convention); ties go by arrival.

    Attributes
    ----------
    token_ids : list of int
        Prompt then generated tokens.
    num_computed_tokens : int
        Leading tokens whose KV is in the cache (or scheduled into it this step).
    status, finish_reason, num_preemptions
        State, the reason it ended, and how often it was preempted.
    blocks : SequenceBlocks or None
        Its blocks in the KV cache (set by the scheduler).
    arrival, sort_key
        Arrival order and policy rank in its scheduler (smaller keys go first).
    """

    __slots__ = (
        "_max_len",
        "_stop",
        "arrival",
        "blocks",
        "eos_token_id",
        "finish_reason",
        "ignore_eos",
        "max_tokens",
        "num_computed_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "priority",
        "request_id",
        "sort_key",
        "status",
        "stop_token_ids",
        "token_ids",
    )

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        *,
        max_tokens: int = 16,
        stop_token_ids: Iterable[int] = (),
        eos_token_id: int | None = None,
        ignore_eos: bool = False,
        priority: int = 0,
    ) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise TypeError(f"request_id must be a non-empty str, got {request_id!r}")
        tokens = list(prompt_token_ids)
        if not tokens:
            raise ValueError(f"request {request_id!r}: prompt_token_ids is empty")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"request {request_id!r}: max_tokens must be >= 1, got {max_tokens!r}")
        if not isinstance(priority, int):
            raise TypeError(f"request {request_id!r}: priority must be an int, got {priority!r}")
        self.request_id = request_id
        self.token_ids = tokens
        self.num_prompt_tokens = len(tokens)
        self.max_tokens = max_tokens
        self.stop_token_ids = frozenset(stop_token_ids)
        self.eos_token_id = eos_token_id
        self.ignore_eos = ignore_eos
        self.priority = priority
        self.status = RequestStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.num_computed_tokens = 0
        self.num_preemptions = 0
        self.blocks: SequenceBlocks | None = None
        self.arrival = -1
        self.sort_key: tuple[int, ...] = ()
        stop = set(self.stop_token_ids)
        if eos_token_id is not None and not ignore_eos:
            stop.add(eos_token_id)
        self._stop = frozenset(stop)
        self._max_len = self.num_prompt_tokens + max_tokens

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status in (RequestStatus.FINISHED, RequestStatus.ABORTED)

    def transition(self, status: RequestStatus, reason: FinishReason | None = None) -> None:
        """Move to ``status``; ``FINISHED`` and ``ABORTED`` record ``reason``.

        Raises
        ------
        IllegalTransitionError
            When the current state does not lead to ``status``.
        """
        if status not in _ALLOWED[self.status]:
            raise IllegalTransitionError(
                f"request {self.request_id!r}: {self.status.value} -> {status.value} is not a "
                f"transition (from {self.status.value}: "
                f"{', '.join(sorted(s.value for s in _ALLOWED[self.status])) or 'none'})"
            )
        if status is RequestStatus.ABORTED:
            reason = FinishReason.ABORT
        elif status is RequestStatus.FINISHED and reason is None:
            raise ValueError(f"request {self.request_id!r}: finishing needs a FinishReason")
        self.status = status
        if reason is not None:
            self.finish_reason = reason

    def is_stop_token(self, token_id: int) -> bool:
        return token_id in self._stop

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, {self.status.value}, tokens={len(self.token_ids)}, "
            f"computed={self.num_computed_tokens})"
        )
