"""Interface of the ``scheduler`` component family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from infercore.sched.output import SchedulerOutput
from infercore.sched.request import Request

__all__ = ["SchedulerProtocol"]


@runtime_checkable
class SchedulerProtocol(Protocol):
    """Continuous batching: requests in, one step of work out, sampled tokens back."""

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    @property
    def has_unfinished_requests(self) -> bool: ...

    def add(self, request: Request) -> None:
        """Queue a request; raise ``ValueError`` when it can never run."""
        ...

    def abort(self, request_id: str) -> bool:
        """Abort a live request; ``False`` for an unknown id."""
        ...

    def schedule(self) -> SchedulerOutput:
        """The work of the next step."""
        ...

    def update(self, output: SchedulerOutput, sampled_token_ids: Sequence[int]) -> list[Request]:
        """Record a step's sampled tokens; return the requests that finished."""
        ...
