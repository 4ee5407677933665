"""Scheduling policies: the order requests are admitted in and preempted in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from infercore.sched.request import Request

__all__ = ["FCFSPolicy", "PriorityPolicy", "SchedulingPolicy", "policy_for"]


class SchedulingPolicy(Protocol):
    """Orders requests by ``key`` (smaller first): waiting ones are admitted in this order,
    running ones get the step's budget in this order and are preempted from the largest
    key. With ``preempts_on_arrival`` a waiting request may preempt running requests
    with a larger key to get in."""

    name: str
    preempts_on_arrival: bool

    def key(self, request: Request) -> tuple[int, ...]: ...


class FCFSPolicy:
    """First come, first served; the newest running request is preempted first."""

    name = "fcfs"
    preempts_on_arrival = False

    def key(self, request: Request) -> tuple[int, ...]:
        return (request.arrival,)


class PriorityPolicy:
    """Smaller ``Request.priority`` first, then arrival; a waiting request preempts
    running requests of a larger priority value to get in."""

    name = "priority"
    preempts_on_arrival = True

    def key(self, request: Request) -> tuple[int, ...]:
        return (request.priority, request.arrival)


_POLICIES: dict[str, type] = {"fcfs": FCFSPolicy, "priority": PriorityPolicy}


def policy_for(name: str) -> SchedulingPolicy:
    """The built-in policy called ``name`` (``fcfs``, ``priority``)."""
    try:
        return _POLICIES[name]()
    except KeyError:
        known = ", ".join(_POLICIES)
        raise ValueError(f"policy={name!r} is unknown; choose from {known}") from None
