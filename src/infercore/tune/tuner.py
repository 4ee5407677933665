"""The tuner: for each workload, time every (backend, configuration) and keep the fastest
one whose output matches the reference backend.

Candidates of a key: the default (what dispatch runs untuned: the first backend in
priority order that accepts the inputs, with its built-in configuration) first, then
every other backend's default and every configuration its :meth:`tune_space` lists.
Each candidate runs once into a NaN-poisoned output that is compared with the reference
(relative norm within :data:`REL_TOL`); only then is it timed. Times come from a
*timer* ``timer(fn, candidate) -> median ms``: :class:`EventTimer` (CUDA events, warm-up,
median of repeats, L2 flushed before each call) on GPUs, :class:`WallTimer` on CPU, any
deterministic callable in tests.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from infercore.bench.compare import check_close
from infercore.registry import Backend, Registry, get_registry
from infercore.tune.cache import TunedEntry
from infercore.tune.keys import tune_key

__all__ = ["REL_TOL", "Candidate", "EventTimer", "KeyResult", "Tuner", "WallTimer"]

log = logging.getLogger(__name__)

#: Bound on ||out - ref|| / ||ref|| per output dtype for a candidate to be accepted.
REL_TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@dataclass(frozen=True)
class Candidate:
    """A backend with a configuration (a dict of its ``tune_config_class``; ``None``:
    the backend's built-in choice)."""

    backend: str
    config: dict[str, Any] | None = None

    def __hash__(self) -> int:
        return hash((self.backend, json.dumps(self.config, sort_keys=True)))

    def describe(self) -> str:
        if self.config is None:
            return f"{self.backend} (default)"
        return f"{self.backend} " + json.dumps(self.config, separators=(",", ":"))


class Timer(Protocol):
    def __call__(self, fn: Callable[[], object], candidate: Candidate) -> float: ...


class EventTimer:
    """Median milliseconds by CUDA events: ``warmup`` untimed calls, then ``repeats``
    timed calls, each after overwriting a ``flush_bytes`` buffer (evicts L2)."""

    def __init__(self, device: torch.device, warmup: int = 3, repeats: int = 20,
                 flush_bytes: int = 256 << 20) -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.flush = torch.empty(flush_bytes, dtype=torch.uint8, device=device) if flush_bytes \
            else None

    def __call__(self, fn: Callable[[], object], candidate: Candidate) -> float:
        for _ in range(self.warmup):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        for start, end in zip(starts, ends, strict=True):
            if self.flush is not None:
                self.flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))


class WallTimer:
    """Median wall-clock milliseconds (CPU: reference and interpreter paths)."""

    def __init__(self, warmup: int = 1, repeats: int = 5) -> None:
        self.warmup, self.repeats = warmup, repeats

    def __call__(self, fn: Callable[[], object], candidate: Candidate) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


@dataclass
class KeyResult:
    """Outcome of one key: every candidate's time or why it was rejected."""

    key: str
    label: str
    default: Candidate
    times: dict[Candidate, float] = field(default_factory=dict)
    rejected: dict[Candidate, str] = field(default_factory=dict)
    skipped: int = 0

    @property
    def best(self) -> Candidate | None:
        return min(self.times, key=self.times.__getitem__) if self.times else None

    @property
    def default_ms(self) -> float | None:
        return self.times.get(self.default)

    @property
    def best_ms(self) -> float | None:
        best = self.best
        return None if best is None else self.times[best]

    @property
    def speedup(self) -> float | None:
        """Default time over tuned time (>1: tuning helps)."""
        if self.default_ms is None or not self.best_ms:
            return None
        return self.default_ms / self.best_ms

    def entry(self) -> TunedEntry | None:
        best = self.best
        if best is None:
            return None
        return TunedEntry(best.backend, best.config, self.times[best], self.default.backend,
                          self.default_ms)


def candidates(registry: Registry, family: str, inputs: Any) -> list[Candidate]:
    """Default first, then every other backend (reference excluded: it is the oracle) and
    the configurations each lists for ``inputs``."""
    found: list[Candidate] = []
    for b in registry.backends(family):
        if b.name == "reference" or b.not_supported_reasons(inputs):
            continue
        found.append(Candidate(b.name))
        found += [Candidate(b.name, cfg) for cfg in b.tune_space(inputs)]
    default = registry_default(registry, family, inputs)
    return sorted(found, key=lambda c: c != Candidate(default))


def registry_default(registry: Registry, family: str, inputs: Any) -> str:
    """The backend priority order gives ``inputs`` (the cache ignored)."""
    for b in registry.backends(family):
        if not b.not_supported_reasons(inputs):
            return b.name
    raise ValueError(f"no backend of {family!r} accepts the tuning inputs")


class Tuner:
    """Times candidates within a budget of seconds (shared evenly by the keys).

    Parameters
    ----------
    timer : callable ``(fn, candidate) -> ms``
    budget_s : float
        Seconds for all keys; a key may use what earlier keys left. The default candidate
        of every key is timed regardless.
    clock : callable returning seconds
        ``time.monotonic`` unless a test drives it.
    """

    def __init__(self, timer: Timer, budget_s: float = 600.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 registry: Registry | None = None) -> None:
        self.timer, self.budget_s, self.clock = timer, budget_s, clock
        self.registry = registry or get_registry()

    def _accept(self, backend: Backend, config: Any, problem: Any, ref: torch.Tensor,
                what: str) -> None:
        problem.output.fill_(float("nan"))
        problem.call(backend, config)
        check_close(what, problem.output, ref, REL_TOL[ref.dtype])

    def tune_one(self, workload: Any, device: torch.device, dtype: torch.dtype,
                 deadline: float, progress: Callable[[str], None] | None = None) -> KeyResult:
        """Tune one workload until ``deadline`` (``clock()`` seconds)."""
        family = workload.family
        problem = workload.build(device, dtype)
        key = tune_key(family, problem.inputs)
        assert key is not None, family
        reference = self.registry.get(family, "reference")
        problem.output.fill_(float("nan"))
        problem.call(reference, None)
        ref = problem.output.clone()
        cands = candidates(self.registry, family, problem.inputs)
        result = KeyResult(key, workload.label, cands[0])
        for i, cand in enumerate(cands):
            if i > 0 and self.clock() >= deadline:
                result.skipped = len(cands) - i
                break
            if progress is not None:
                progress(cand.describe())
            backend = self.registry.get(family, cand.backend)
            config = None
            if cand.config is not None:
                assert backend.tune_config_class is not None, backend
                config = backend.tune_config_class(**cand.config)
            try:
                self._accept(backend, config, problem, ref, f"{key} {cand.describe()}")
                result.times[cand] = self.timer(
                    lambda b=backend, c=config: problem.call(b, c), cand)
            except Exception as exc:  # a config that fails to compile or is wrong is dropped
                result.rejected[cand] = f"{type(exc).__name__}: {exc}"
                log.debug("rejected %s: %s", cand.describe(), exc)
        return result

    def tune(self, workloads: Sequence[Any], device: torch.device, dtype: torch.dtype,
             progress: Callable[[int, str], None] | None = None) -> list[KeyResult]:
        """Tune every workload; ``progress(index, text)`` reports each step."""
        start = self.clock()
        results = []
        for i, w in enumerate(workloads):
            deadline = start + self.budget_s * (i + 1) / len(workloads)
            report = None
            if progress is not None:
                report = lambda t, i=i, w=w: progress(i, f"{w.label}: {t}")
            results.append(self.tune_one(w, device, dtype, deadline, report))
            if device.type == "cuda":  # the problem's tensors are gone; return their memory
                torch.cuda.empty_cache()
        return results
