"""CUDA-graph timing of benchmark implementations over rotating inputs.

For small, memory-bound work the host cost of one eager call (Python dispatch, kernel
launch) can exceed the kernel's time, and a weight read by every call stays in L2. A
:class:`Rotation` holds one call per distinct copy of an implementation's inputs; the
harness captures ``calls`` calls cycling through the copies into one CUDA graph, times
its replays and divides by ``calls``. On CPU, and where a call cannot be captured (a
launch outside the capturing stream, say), it times a plain loop over the same calls.
:func:`graphed` captures one callable whose replay a suite times as it is.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial

import torch

__all__ = ["CALLS", "COPIES", "GRAPH_MAX_M", "GraphReplay", "Rotation", "capture", "graphed",
           "replay_us", "rotate", "time_impl"]

#: Calls captured per graph (initial choice, to be tuned): enough that one replay's launch
#: cost is spread over many kernels.
CALLS = 20
#: Distinct input copies suites rotate through (initial choice, to be tuned): 8 copies of
#: an int4 [14336, 4096] weight are ~240 MB, about 4x a 50-60 MB L2, so no copy is still
#: cached when it is read again.
COPIES = 8
#: Largest M for which the GEMM suites time graphs over rotating copies (initial choice, to
#: be tuned: larger products run long enough that one call's host cost matters little).
GRAPH_MAX_M = 512


class GraphReplay:
    """Replays a captured graph and holds the captured callables: a graph reads its
    buffers by address, so whatever the callables hold (inputs, a planned wrapper's
    metadata, outputs) must outlive the graph. Freed, that memory goes back to the
    allocator and replays read whatever is written there next.

    ``calls`` is the number of calls one replay runs (the harness divides by it)."""

    def __init__(self, graph: torch.cuda.CUDAGraph,
                 captured: Sequence[Callable[[], object]]) -> None:
        self.graph = graph
        self.captured = tuple(captured)

    @property
    def calls(self) -> int:
        return len(self.captured)

    def __call__(self) -> None:
        self.graph.replay()


def capture(calls: Sequence[Callable[[], object]]) -> GraphReplay:
    """``calls`` run in order once on a side stream (compiling and allocating outside the
    capture), then captured in order into one CUDA graph; returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        for call in calls:
            call()
        torch.cuda.synchronize()
        graph.capture_begin()
        try:
            for call in calls:
                call()
        finally:  # ends the capture (raising if it was invalidated) before leaving the stream
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(side)
    return GraphReplay(graph, calls)


def replay_us(calls: Sequence[Callable[[], object]], replays: int = 5) -> float:
    """Microseconds per call of ``calls`` captured in one graph (:func:`capture`): the
    median over ``replays`` replays, each timed with CUDA events, divided by the calls."""
    replay = capture(calls)
    times = []
    for _ in range(replays):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / replay.calls)
    return statistics.median(times)


def graphed(fn: Callable[[], object]) -> GraphReplay:
    """``fn`` captured in a CUDA graph (after a warm-up call); returns the replay, which
    keeps ``fn`` alive."""
    return capture([fn])


class Rotation:
    """One implementation over distinct copies of its inputs.

    ``copies[j]`` runs the work once on copy ``j``. :meth:`sequence` gives ``calls`` calls
    cycling through the copies; each keeps its copy's latest result in ``outputs[j]``, so
    outputs rotate over distinct buffers too (and a graph's outputs stay alive with it).
    Called directly (an eager caller), a rotation runs the next copy.
    """

    def __init__(self, copies: Sequence[Callable[[], object]], *, calls: int = CALLS) -> None:
        if not copies:
            raise ValueError("copies: expected at least one callable, got none")
        if calls < len(copies):
            raise ValueError(f"calls={calls}: must be at least the number of copies "
                             f"({len(copies)}) so that every copy runs")
        self.copies = tuple(copies)
        self.calls = calls
        self.outputs: list[object] = [None] * len(copies)
        self._next = 0

    def _run(self, j: int) -> None:
        self.outputs[j] = self.copies[j]()

    def sequence(self) -> list[Callable[[], None]]:
        """``calls`` callables running copies ``0, 1, ..., n-1, 0, 1, ...``."""
        return [partial(self._run, i % len(self.copies)) for i in range(self.calls)]

    def __call__(self) -> object:
        j = self._next
        self._next = (j + 1) % len(self.copies)
        self._run(j)
        return self.outputs[j]


def rotate(fn: Callable[..., object], *copies: Sequence[object],
           **kwargs: object) -> Callable[[], object]:
    """``fn`` over distinct copies of its positional arguments: argument ``i`` of copy
    ``j`` is ``copies[i][j]``; ``kwargs`` are shared. With several copies, a
    :class:`Rotation` (graph-timed on CUDA); with one, the plain call (timed eagerly)."""
    calls = [partial(fn, *args, **kwargs) for args in zip(*copies, strict=True)]
    return calls[0] if len(calls) == 1 else Rotation(calls)


class _Loop:
    """Runs calls in order: the eager counterpart of a captured graph."""

    def __init__(self, calls: Sequence[Callable[[], object]]) -> None:
        self.captured = tuple(calls)

    @property
    def calls(self) -> int:
        return len(self.captured)

    def __call__(self) -> None:
        for call in self.captured:
            call()


def time_impl(fn: Callable[[], object], device: torch.device,
              timer: Callable[[Callable[[], object]], float]) -> tuple[float, str]:
    """Milliseconds per call of one implementation and how it was timed.

    ``timer(f)`` gives the median milliseconds of one call of ``f``. A :class:`Rotation`
    on CUDA is captured and its replays timed (``"graph"``); on CPU a loop over the same
    calls is timed (``"eager"``). A capture that fails raises (the row reports the error):
    a failed capture can leave the CUDA generator mid-capture, so that no later case in
    the process could draw random numbers. A :class:`GraphReplay` is
    timed as it is (``"graph"``); anything else eagerly. Graph and loop times are
    divided by the calls they run.
    """
    if isinstance(fn, Rotation):
        if device.type == "cuda":
            replay = capture(fn.sequence())
            return timer(replay) / replay.calls, "graph"
        loop = _Loop(fn.sequence())
        return timer(loop) / loop.calls, "eager"
    if isinstance(fn, GraphReplay):
        return timer(fn) / fn.calls, "graph"
    return timer(fn), "eager"
