"""The communicator interface: the protocol, async handles and errors.

Tensor semantics, the same for every backend:

- ``all_reduce``, ``broadcast`` and ``recv`` work **in place** on their tensor and
  return it (a non-contiguous tensor goes through a contiguous copy, written back).
- ``all_gather``, ``reduce_scatter`` and ``all_to_all`` return a **new** tensor; the
  input is left unchanged.
- ``send`` returns ``None``.
- ``async_op=True`` returns a :class:`Handle` instead; ``handle.wait()`` returns what the
  synchronous call would have returned. On CUDA, ``wait()`` orders the current stream
  after the collective without blocking the host; on CPU it blocks until it is done.
  The tensors must not be touched before ``wait()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["REDUCE_OPS", "CollectiveTimeoutError", "CommError", "Communicator", "Handle"]

REDUCE_OPS = ("sum", "prod", "max", "min", "avg")


class CommError(RuntimeError):
    """A collective failed; the message names the op, this rank and the group's ranks."""


class CollectiveTimeoutError(CommError, TimeoutError):
    """A collective waited longer than the timeout for its peers.

    The communicator (and, for the ``torch`` backend on gloo, its process group) should
    be considered broken afterwards.
    """


class Handle:
    """A collective started with ``async_op=True``.

    ``wait()`` finishes it (once; later calls return the same result) and returns what
    the synchronous call returns. ``is_completed()`` polls without waiting.
    """

    __slots__ = ("_done", "_finalize", "_query", "_result", "_wait")

    def __init__(
        self,
        wait: Callable[[], None],
        finalize: Callable[[], Any],
        query: Callable[[], bool] | None = None,
    ) -> None:
        self._wait = wait
        self._finalize = finalize
        self._query = query
        self._done = False
        self._result: Any = None

    def wait(self) -> Any:
        if not self._done:
            self._wait()
            self._result = self._finalize()
            self._done = True
        return self._result

    def is_completed(self) -> bool:
        if self._done:
            return True
        return bool(self._query()) if self._query is not None else False


@runtime_checkable
class Communicator(Protocol):
    """Collectives over a group of ``world_size`` processes (interface of ``comm.backend``).

    See the module docstring for which calls work in place and what ``async_op`` does.
    Every rank of the group must call the same collectives in the same order with
    tensors of the same dtype and shape (``check_shapes=True`` verifies it).
    """

    rank: int
    world_size: int
    device: torch.device

    def all_reduce(self, t: torch.Tensor, op: str = "sum", *, async_op: bool = False) -> Any: ...

    def all_gather(self, t: torch.Tensor, dim: int = 0, *, async_op: bool = False) -> Any: ...

    def reduce_scatter(
        self, t: torch.Tensor, dim: int = 0, *, op: str = "sum", async_op: bool = False
    ) -> Any: ...

    def broadcast(self, t: torch.Tensor, src: int, *, async_op: bool = False) -> Any: ...

    def all_to_all(
        self,
        t: torch.Tensor,
        input_splits: Sequence[int] | None = None,
        output_splits: Sequence[int] | None = None,
        *,
        async_op: bool = False,
    ) -> Any: ...

    def send(self, t: torch.Tensor, dst: int, *, async_op: bool = False) -> Any: ...

    def recv(self, t: torch.Tensor, src: int, *, async_op: bool = False) -> Any: ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...
