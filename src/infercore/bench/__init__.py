"""Benchmark harness shared by ``infercore bench`` and ``benchmarks/``.

A *suite* yields cases; each case names the bytes and FLOPs its work must at least move
or compute and gives callables for every implementation, one of them the *peer* (the
baseline measured in the same run). The harness times each with the median of many
runs (``triton.testing.do_bench`` on CUDA), then reports time, GB/s or TFLOP/s, the
fraction of the measured ceiling, and the ratio to the peer.

Suites live in ``infercore.bench.suites.<name>`` and register with :func:`suite`.
"""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch

__all__ = [
    "Case",
    "Ceilings",
    "Result",
    "Suite",
    "get_suite",
    "list_suites",
    "measure_ceilings",
    "run_suite",
    "suite",
    "timeit",
]


@dataclass
class Case:
    """One configuration of a suite.

    ``impls`` maps an implementation name to a zero-argument callable that runs it once;
    ``peer`` names the baseline among them. ``bytes``/``flops`` are the least the work
    must move/compute (each input read once, each output written once).
    """

    name: str
    impls: dict[str, Callable[[], object]]
    peer: str | None = None
    bytes: float | None = None
    flops: float | None = None
    check: Callable[[], None] | None = None


@dataclass
class Result:
    suite: str
    case: str
    impl: str
    ms: float
    gbps: float | None = None
    tflops: float | None = None
    fraction_of_ceiling: float | None = None
    vs_peer: float | None = None
    peer: str | None = None
    error: str | None = None


@dataclass
class Suite:
    name: str
    description: str
    make_cases: Callable[[torch.device, bool], Iterable[Case]]
    bound: str = "memory"  # or "compute": which ceiling the fraction refers to
    devices: tuple[str, ...] = ("cuda",)


@dataclass
class Ceilings:
    """Measured limits of a device: copy bandwidth (read + write) and bf16 matmul rate."""

    device: str
    copy_gbps: float
    matmul_tflops: float
    notes: list[str] = field(default_factory=list)


_SUITES: dict[str, Suite] = {}


def suite(
    name: str, description: str, *, bound: str = "memory", devices: tuple[str, ...] = ("cuda",)
) -> Callable[[Callable[[torch.device, bool], Iterable[Case]]], Callable]:
    """Register a suite: decorate ``make_cases(device, quick) -> Iterable[Case]``."""

    def deco(fn: Callable[[torch.device, bool], Iterable[Case]]) -> Callable:
        _SUITES[name] = Suite(name, description, fn, bound, devices)
        return fn

    return deco


def list_suites() -> dict[str, Suite]:
    """Every registered suite (imports ``infercore.bench.suites.*``)."""
    pkg = importlib.import_module("infercore.bench.suites")
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return dict(sorted(_SUITES.items()))


def get_suite(name: str) -> Suite:
    all_suites = list_suites()
    if name not in all_suites:
        raise ValueError(f"unknown suite {name!r}; available: {', '.join(all_suites)}")
    return all_suites[name]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, *, warmup_ms: float = 25,
           rep_ms: float = 100) -> float:
    """Median milliseconds per call of ``fn`` (device events on CUDA, wall clock on CPU)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


_CEILINGS: dict[str, Ceilings] = {}


def measure_ceilings(device: torch.device) -> Ceilings:
    """Measure copy bandwidth (2 GiB device-to-device) and bf16 8192^3 matmul rate once."""
    key = str(device)
    if key in _CEILINGS:
        return _CEILINGS[key]
    if device.type != "cuda":
        n = 1 << 26
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        ms = timeit(lambda: dst.copy_(src), device)
        copy = 2 * src.numel() * src.element_size() / ms / 1e6
        a = torch.randn(1024, 1024, device=device)
        ms = timeit(lambda: a @ a, device)
        ceil = Ceilings(key, copy, 2 * 1024**3 / ms / 1e9, ["CPU: fp32 1024^3 matmul"])
    else:
        src = torch.randn(1 << 28, device=device)  # 1 GiB of fp32
        dst = torch.empty_like(src)
        ms = timeit(lambda: dst.copy_(src), device)
        copy = 2 * src.numel() * src.element_size() / ms / 1e6
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        ms = timeit(lambda: a @ b, device)
        ceil = Ceilings(key, copy, 2 * 8192**3 / ms / 1e9)
        del src, dst, a, b
        torch.cuda.empty_cache()
    _CEILINGS[key] = ceil
    return ceil


def run_case(suite_: Suite, case: Case, device: torch.device, ceilings: Ceilings,
             *, rep_ms: float = 100) -> Iterator[Result]:
    """Time every implementation of one case."""
    if case.check is not None:
        try:
            case.check()
        except Exception as exc:  # a wrong or broken case is reported, never timed
            error = f"check failed: {type(exc).__name__}: {exc}"
            for impl in case.impls:
                yield Result(suite_.name, case.name, impl, float("nan"), error=error)
            return
    times: dict[str, float] = {}
    errors: dict[str, str] = {}
    for impl, fn in case.impls.items():
        try:
            times[impl] = timeit(fn, device, rep_ms=rep_ms)
        except Exception as exc:  # a peer missing here must not stop the suite
            errors[impl] = f"{type(exc).__name__}: {exc}"
    peer_ms = times.get(case.peer) if case.peer else None
    for impl in case.impls:
        if impl in errors:
            yield Result(suite_.name, case.name, impl, float("nan"), error=errors[impl])
            continue
        ms = times[impl]
        gbps = case.bytes / ms / 1e6 if case.bytes else None
        tflops = case.flops / ms / 1e9 if case.flops else None
        if suite_.bound == "compute" and tflops is not None:
            frac = tflops / ceilings.matmul_tflops
        elif gbps is not None:
            frac = gbps / ceilings.copy_gbps
        else:
            frac = None
        vs = peer_ms / ms if peer_ms else None
        yield Result(suite_.name, case.name, impl, ms, gbps, tflops, frac, vs, case.peer)


def run_suite(name: str, device: torch.device, *, quick: bool = False,
              rep_ms: float = 100, progress: Callable[[str], None] | None = None
              ) -> tuple[Ceilings, list[Result]]:
    """Run one suite on ``device``; ``quick`` uses its smaller case list."""
    s = get_suite(name)
    if device.type not in s.devices:
        raise ValueError(f"suite {name!r} runs on {s.devices}, not on {device.type!r}")
    ceilings = measure_ceilings(device)
    results: list[Result] = []
    for case in s.make_cases(device, quick):
        if progress is not None:
            progress(case.name)
        results.extend(run_case(s, case, device, ceilings, rep_ms=rep_ms))
    return ceilings, results


def as_dict(ceilings: Ceilings, results: list[Result]) -> dict:
    return {"ceilings": asdict(ceilings), "results": [asdict(r) for r in results]}
