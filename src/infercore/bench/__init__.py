"""Benchmark harness shared by ``infercore bench`` and ``benchmarks/``.

A *suite* yields cases; each case names the bytes and FLOPs its work must at least move
or compute and gives callables for every implementation, one of them the *peer* (the
baseline measured in the same run). The harness times each with the median of many
runs (``triton.testing.do_bench`` on CUDA), then reports time, GB/s or TFLOP/s, the
fraction of the measured ceiling, and the ratio to the peer. An implementation given as a
:class:`~infercore.bench.graphs.Rotation` (distinct copies of its inputs) is timed as a
CUDA graph of many calls cycling through the copies (see :mod:`infercore.bench.graphs`).

Suites live in ``infercore.bench.suites.<name>`` and register with :func:`suite`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch

from infercore.bench.graphs import time_impl

__all__ = [
    "OPTIONAL_PEERS",
    "Case",
    "Ceilings",
    "Result",
    "Suite",
    "get_suite",
    "list_suites",
    "measure_ceilings",
    "peer_notes",
    "run_suite",
    "run_suites",
    "suite",
    "timeit",
]


@dataclass
class Case:
    """One configuration of a suite.

    ``impls`` maps an implementation name to a zero-argument callable that runs it once
    (a :class:`~infercore.bench.graphs.Rotation` to time it as a CUDA graph over rotating
    inputs); ``peer`` names the baseline among them. ``bytes``/``flops`` are the least the work
    must move/compute (each input read once, each output written once). Implementations
    named in ``moves_only`` (a read floor, say) only move the bytes: they get no TFLOP/s.
    """

    name: str
    impls: dict[str, Callable[[], object]]
    peer: str | None = None
    bytes: float | None = None
    flops: float | None = None
    check: Callable[[], None] | None = None
    moves_only: tuple[str, ...] = ()


@dataclass
class Result:
    """One timed implementation; ``timing`` says how: ``"eager"`` (calls from Python) or
    ``"graph"`` (CUDA-graph replays, time per call); ``None`` when it was not timed."""

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
    timing: str | None = None


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


def measure_ceilings(device: torch.device, *, quick: bool = False) -> Ceilings:
    """Measure copy bandwidth (2 GiB device-to-device) and bf16 8192^3 matmul rate once.

    On CPU: a 256 MiB copy and a float32 1024^3 matmul (``quick``: 16 MiB and 256^3).
    """
    key = str(device)
    if key in _CEILINGS:
        return _CEILINGS[key]
    if device.type != "cuda":
        n, side = (1 << 22, 256) if quick else (1 << 26, 1024)
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        ms = timeit(lambda: dst.copy_(src), device, rep_ms=20 if quick else 100)
        copy = 2 * src.numel() * src.element_size() / ms / 1e6
        a = torch.randn(side, side, device=device)
        ms = timeit(lambda: a @ a, device, rep_ms=20 if quick else 100)
        ceil = Ceilings(key, copy, 2 * side**3 / ms / 1e9, [f"CPU: fp32 {side}^3 matmul"])
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
    modes: dict[str, str] = {}
    errors: dict[str, str] = {}
    for impl, fn in case.impls.items():
        try:
            times[impl], modes[impl] = time_impl(
                fn, device, lambda f: timeit(f, device, rep_ms=rep_ms))
        except Exception as exc:  # a peer missing here must not stop the suite
            errors[impl] = f"{type(exc).__name__}: {exc}"
    peer_ms = times.get(case.peer) if case.peer else None
    for impl in case.impls:
        if impl in errors:
            yield Result(suite_.name, case.name, impl, float("nan"), error=errors[impl])
            continue
        ms = times[impl]
        gbps = case.bytes / ms / 1e6 if case.bytes else None
        tflops = case.flops / ms / 1e9 if case.flops and impl not in case.moves_only else None
        if suite_.bound == "compute" and tflops is not None:
            frac = tflops / ceilings.matmul_tflops
        elif gbps is not None:
            frac = gbps / ceilings.copy_gbps
        else:
            frac = None
        vs = peer_ms / ms if peer_ms else None
        yield Result(suite_.name, case.name, impl, ms, gbps, tflops, frac, vs, case.peer,
                     timing=modes[impl])


def run_suite(name: str, device: torch.device, *, quick: bool = False,
              rep_ms: float = 100, progress: Callable[[str], None] | None = None
              ) -> tuple[Ceilings, list[Result]]:
    """Run one suite on ``device``; ``quick`` uses its smaller case list."""
    s = get_suite(name)
    if device.type not in s.devices:
        raise ValueError(f"suite {name!r} runs on {s.devices}, not on {device.type!r}")
    ceilings = measure_ceilings(device, quick=quick)
    results: list[Result] = []
    for case in s.make_cases(device, quick):
        if progress is not None:
            progress(case.name)
        results.extend(run_case(s, case, device, ceilings, rep_ms=rep_ms))
    return ceilings, results


def run_suites(names: Iterable[str] | None, device: torch.device, *, quick: bool = False,
               rep_ms: float = 100, progress: Callable[[str], None] | None = None
               ) -> tuple[Ceilings, list[Result]]:
    """Measure the ceilings, then run several suites (``None``: every suite that runs on
    ``device``) into one list of results."""
    all_suites = list_suites()
    if names is None:
        names = [n for n, s in all_suites.items() if device.type in s.devices]
    names = list(names)
    for name in names:
        get_suite(name)
    ceilings = measure_ceilings(device, quick=quick)
    results: list[Result] = []
    broken: str | None = None
    for name in names:
        if broken is not None:
            results.append(Result(name, "-", "-", float("nan"), error=f"not run: {broken}"))
            continue
        try:
            _, found = run_suite(name, device, quick=quick, rep_ms=rep_ms,
                                 progress=None if progress is None
                                 else (lambda c, n=name: progress(f"{n}: {c}")))
        except Exception as exc:  # one broken suite must not lose the others' results
            found = [Result(name, "-", "-", float("nan"),
                            error=f"suite failed: {type(exc).__name__}: {exc}")]
        results += found
        broken = _device_failure(device, name)
    return ceilings, results


def _device_failure(device: torch.device, suite_name: str) -> str | None:
    """Why ``device`` cannot run more work after ``suite_name`` (a CUDA error such as an
    illegal address leaves the process's context unusable), or ``None``."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except Exception as exc:
        return (f"the CUDA context failed during suite {suite_name!r} "
                f"({type(exc).__name__}); run the remaining suites in a new process")
    return None


#: Peers some suites add when their package is installed: distribution -> module.
OPTIONAL_PEERS = {"liger-kernel": "liger_kernel", "flashinfer": "flashinfer"}


def peer_notes(device: torch.device) -> list[str]:
    """Which optional peers are missing here (their rows are skipped)."""
    notes = [f"{dist} not installed: its peer rows are skipped"
             for dist, module in OPTIONAL_PEERS.items()
             if importlib.util.find_spec(module) is None]
    if device.type != "cuda":
        notes.append("CPU: torch.compile, CUDA-graph and cuBLAS peers run on CUDA only")
    return notes


def as_dict(ceilings: Ceilings, results: list[Result], notes: list[str] | None = None) -> dict:
    return {"ceilings": asdict(ceilings), "results": [asdict(r) for r in results],
            "notes": list(notes or [])}
