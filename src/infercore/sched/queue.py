"""The waiting queue: new and preempted requests in policy order."""

from __future__ import annotations

import heapq

from infercore.sched.request import Request, RequestStatus

__all__ = ["WaitingQueue"]

_WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


class WaitingQueue:
    """A heap of requests by ``Request.sort_key`` (smallest first).

    Removal is lazy: :meth:`discard` only counts the request out, and its entry is
    dropped when it reaches the top or when stale entries outnumber live ones.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, ...], Request]] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def num_entries(self) -> int:
        """Heap entries, stale ones included."""
        return len(self._heap)

    def push(self, request: Request) -> None:
        # Keys end with the arrival order, so they are unique and requests never compare.
        heapq.heappush(self._heap, (request.sort_key, request))
        self._len += 1

    def peek(self) -> Request | None:
        """The first waiting request, or ``None``."""
        heap = self._heap
        while heap:
            request = heap[0][1]
            if request.status in _WAITING:
                return request
            heapq.heappop(heap)
        return None

    def pop(self) -> Request:
        """Remove and return the first waiting request (call :meth:`peek` first)."""
        request = self.peek()
        if request is None:
            raise IndexError("pop from an empty WaitingQueue")
        heapq.heappop(self._heap)
        self._len -= 1
        return request

    def discard(self, request: Request) -> None:
        """Count out ``request``, which left the waiting states (it was aborted)."""
        self._len -= 1
        if len(self._heap) > 2 * self._len + 64:
            self._heap = [e for e in self._heap if e[1].status in _WAITING]
            heapq.heapify(self._heap)
