"""A tuning run from a :class:`TuneConfig`: workloads, tuner, cache update."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from infercore.tune import dispatch
from infercore.tune.cache import TuningCache
from infercore.tune.config import TuneConfig
from infercore.tune.tuner import EventTimer, KeyResult, Timer, Tuner, WallTimer
from infercore.tune.workloads import Workload, model_dims, model_workloads, parse_shape

__all__ = ["CPU_MAX_WORK", "TuneReport", "plan_workloads", "run_tuning"]

#: On CPU (interpreter and reference paths) tuning takes only shapes this small
#: (M*N*K for gemm, batch*context*heads*head_dim for decode).
CPU_MAX_WORK = 1 << 20
#: Bytes overwritten before each timed call on CUDA (four times an H100/H200's 50-60 MB L2).
FLUSH_BYTES = 256 << 20


@dataclass
class TuneReport:
    results: list[KeyResult]
    path: Path


def plan_workloads(config: TuneConfig) -> list[Workload]:
    """Workloads of ``config``: its shape specs, then its model's layers, per family.

    Raises ``ValueError`` for an unknown family or model, a spec that fits no requested
    family, or (on CPU) a model or a shape above :data:`CPU_MAX_WORK`.
    """
    cpu = torch.device(config.device).type == "cpu"
    found: list[Workload] = []
    for spec in config.shapes:
        prefix, _, rest = spec.rpartition(":")
        fams = [prefix] if prefix else config.families
        if prefix and prefix not in config.families:
            raise ValueError(f"shape {spec!r} names family {prefix!r}, which is not tuned here")
        fitting = [w for fam in fams if (w := parse_shape(fam, rest)) is not None]
        if not fitting:
            raise ValueError(f"shape {spec!r} fits none of {', '.join(fams)} (gemm: M,N,K; "
                             "attention.decode: BATCH,CONTEXT[,HEADS,KV_HEADS,HEAD_DIM])")
        found += fitting
    if config.model is not None:
        if cpu:
            raise ValueError(f"--model-config {config.model}: model shapes are too large for "
                             "the CPU; tune them on a CUDA device, or pass tiny --shapes")
        dims = model_dims(config.model)
        for fam in config.families:
            found += model_workloads(fam, dims)
    if not found:
        raise ValueError("nothing to tune: give --shapes or --model-config")
    if cpu:
        big = [w.label for w in found if w.work > CPU_MAX_WORK]
        if big:
            raise ValueError(f"on CPU only tiny shapes are tuned (work <= {CPU_MAX_WORK}); "
                             f"too large: {'; '.join(big)}")
    return found


def check_device(device: torch.device) -> None:
    """Raise ``ValueError`` unless tuning can run on ``device``."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "infercore tune needs a CUDA device (none is visible). To exercise the tuner on "
            "CPU, run the interpreter and reference paths on tiny shapes: "
            "TRITON_INTERPRET=1 infercore tune gemm --device cpu --shapes 5,33,17")


def run_tuning(config: TuneConfig, *, timer: Timer | None = None,
               progress: Callable[[int, str], None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> TuneReport:
    """Tune ``config``'s workloads and merge the winners into the cache (or ``output``).

    ``timer`` defaults to :class:`EventTimer` on CUDA, :class:`WallTimer` on CPU.
    """
    device = torch.device(config.device)
    check_device(device)
    workloads = plan_workloads(config)
    if timer is None:
        if device.type == "cuda":
            timer = EventTimer(device, config.warmup, config.repeats,
                               FLUSH_BYTES if config.flush_l2 else 0)
        else:
            timer = WallTimer(max(1, config.warmup), config.repeats)
    tuner = Tuner(timer, config.budget_s, clock=clock)
    results = tuner.tune(workloads, device, config.torch_dtype, progress)
    cache = TuningCache(config.output)
    cache.update({r.key: e for r in results if (e := r.entry()) is not None})
    dispatch.reset()
    return TuneReport(results, cache.path)
