"""Compiled CUTLASS GEMM kernels: choice of tile, compilation, two-level cache, launch.

A kernel is identified by a :class:`KernelKey`: device (name and compute capability),
operand and output dtypes, the layout of ``b`` and the tile (threadblock, cluster and
schedules). The first use of a key compiles it with nvcc (tens of seconds) into the
device's directory of the on-disk cache, where ``cutlass_cppgen`` stores it keyed by the
generated source (which spells out the same dtypes, layouts and tile). Later processes
load it from there; within a process the compiled operation is kept in memory, and a
launch only packs the kernel's arguments and calls the driver.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infercore_cutlass.runtime import (
    current_stream,
    device_cache_dir,
    in_directory,
    load_cutlass,
    point_cache_at,
)

__all__ = ["KernelKey", "TilePreference", "choose_tile", "kernel_key", "launch", "tile_class"]

log = logging.getLogger(__name__)

#: Elements per 128-bit access for 16-bit operands: the alignment every kernel is built for.
ALIGNMENT = 8


def cta_tile(td: Any) -> tuple[int, int, int]:
    """The tile one CTA computes in the emitted kernel.

    ``cutlass_cppgen`` (4.2) describes a CUTLASS 3 tile per cluster: it emits
    ``threadblock_shape / cluster_shape`` as the CTA tile (its Blackwell convention, applied
    to SM90 too), so a 128x256 description with a 2x1x1 cluster builds 64x256 CTAs.
    """
    return tuple(getattr(td, "blackwell_threadblock_shape", None) or td.threadblock_shape)


def _schedule_name(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1]


@dataclass(frozen=True)
class TilePreference:
    """A kernel to build: the CTA tile as emitted, the cluster and (optionally) schedules."""

    cta: tuple[int, int, int]
    cluster: tuple[int, int, int]
    kernel_schedule: str | None = None
    epilogue_schedule: str | None = None
    stages: int | None = None

    def same_kind(self, td: Any) -> bool:
        """Same cluster, schedules and stages as ``td`` (the tile may differ)."""
        if tuple(td.cluster_shape or (1, 1, 1)) != self.cluster:
            return False
        if self.stages is not None and td.stages != self.stages:
            return False
        if "StreamK" in str(getattr(td, "tile_scheduler", None)):
            return False
        for want, have in ((self.kernel_schedule, td.kernel_schedule),
                           (self.epilogue_schedule, td.epilogue_schedule)):
            if want is not None and _schedule_name(have) != want:
                return False
        return True

    def matches(self, td: Any) -> bool:
        return self.same_kind(td) and cta_tile(td) == self.cta

    def describe(self) -> str:
        parts = ["x".join(map(str, self.cta)), "x".join(map(str, self.cluster))]
        parts += [p for p in (self.kernel_schedule, self.epilogue_schedule) if p]
        if self.stages is not None:
            parts.append(f"{self.stages}stages")
        return "_".join(parts)


#: (kernel architecture, M class) -> kernels in order of preference. Initial choices, to be
#: tuned with the gemm benchmark suite: Hopper uses CUTLASS 3 warp-specialized TMA kernels
#: (cooperative 128x256 CTAs in 2x1 clusters for large M, ping-pong 64x128 for decode-like
#: M), Ampere-class GPUs CUTLASS 2 multistage kernels.
TILES: dict[tuple[int, str], tuple[TilePreference, ...]] = {
    (90, "large"): (
        TilePreference((128, 256, 64), (2, 1, 1), "TmaWarpSpecializedCooperative",
                       "TmaWarpSpecializedCooperative"),
        TilePreference((128, 256, 64), (2, 1, 1), "TmaWarpSpecializedCooperative"),
        TilePreference((128, 128, 64), (2, 1, 1), "TmaWarpSpecializedCooperative",
                       "TmaWarpSpecializedCooperative"),
    ),
    (90, "small"): (
        TilePreference((64, 128, 64), (1, 2, 1), "TmaWarpSpecializedPingpong",
                       "TmaWarpSpecialized"),
        TilePreference((128, 128, 64), (1, 2, 1), "TmaWarpSpecializedPingpong"),
    ),
    (80, "large"): (TilePreference((256, 128, 64), (1, 1, 1), stages=3),),
    (80, "small"): (TilePreference((64, 128, 64), (1, 1, 1), stages=3),),
}


def tile_class(m: int) -> str:
    """``"small"`` for decode-like M (<= 64), else ``"large"``."""
    return "small" if m <= 64 else "large"


def kernel_arch(cc: tuple[int, int]) -> int:
    """CUTLASS 3 SM90 kernels on Hopper, CUTLASS 2 SM80 kernels on Ampere and Ada."""
    return 90 if cc == (9, 0) else 80


def compiles(td: Any) -> bool:
    """Whether CUTLASS accepts the description: SM90 cooperative kernels (which an automatic
    schedule may resolve to) need CTA tiles of at least 128 rows (a static assertion), and
    stream-K schedules are not used here."""
    if "StreamK" in str(getattr(td, "tile_scheduler", None)):
        return False
    return cta_tile(td)[0] >= 128 or "Pingpong" in str(getattr(td, "kernel_schedule", ""))


def choose_tile(descriptions: Sequence[Any], arch: int, m_class: str) -> Any | None:
    """The first preferred kernel: a description that matches, else one of the same kind
    re-tiled to the preferred CTA tile; failing all, the first description CUTLASS
    compiles (``None``: use the interface's default)."""
    for pref in TILES[(arch, m_class)]:
        kind = [td for td in descriptions if pref.same_kind(td)]
        exact = next((td for td in kind if cta_tile(td) == pref.cta), None)
        if exact is not None:
            return exact
        if kind:
            shape = [c * k for c, k in zip(pref.cta, pref.cluster, strict=True)]
            return kind[0].clone_and_update({"threadblock_shape": shape})
    return next((td for td in descriptions if compiles(td)), None)


@dataclass(frozen=True)
class KernelKey:
    device: str
    cc: tuple[int, int]
    dtype: torch.dtype
    out_dtype: torch.dtype
    b_layout: str  # "row" ([K, N] row-major) or "col" (column-major, e.g. weight.t())
    m_class: str


@functools.cache
def _device(index: int) -> tuple[str, tuple[int, int]]:
    return torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)


def kernel_key(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> KernelKey:
    index = a.device.index if a.device.index is not None else torch.cuda.current_device()
    name, cc = _device(index)
    return KernelKey(
        device=name,
        cc=cc,
        dtype=a.dtype,
        out_dtype=out_dtype,
        b_layout="row" if b.is_contiguous() else "col",
        m_class=tile_class(a.shape[0]),
    )


_kernels: dict[KernelKey, Any] = {}
_compile_lock = threading.Lock()


def _compile(key: KernelKey) -> Any:
    cutlass = load_cutlass()
    types = {torch.float16: cutlass.DataType.f16, torch.bfloat16: cutlass.DataType.bf16,
             torch.float32: cutlass.DataType.f32}
    layouts = {"row": cutlass.LayoutType.RowMajor, "col": cutlass.LayoutType.ColumnMajor}
    arch = kernel_arch(key.cc)
    plan = cutlass.op.Gemm(
        element_A=types[key.dtype], element_B=types[key.dtype],
        element_C=types[key.out_dtype], element_D=types[key.out_dtype],
        element_accumulator=cutlass.DataType.f32,
        layout_A=layouts["row"], layout_B=layouts[key.b_layout],
        layout_C=cutlass.LayoutType.RowMajor,
        cc=key.cc[0] * 10 + key.cc[1], kernel_cc=arch,
    )
    td = choose_tile(plan.tile_descriptions(), arch, key.m_class)
    if td is None:
        log.debug("no preferred CUTLASS tile for %s; using the interface's default", key)
    directory = device_cache_dir(key.device, key.cc)
    log.info("CUTLASS: building %s in %s (nvcc; cached for later runs)", key, directory)
    with in_directory(directory):
        point_cache_at(directory)
        return plan.compile(
            tile_description=td,
            alignment_A=ALIGNMENT, alignment_B=ALIGNMENT,
            alignment_C=128 // torch.finfo(key.out_dtype).bits,
        )


def get_kernel(key: KernelKey) -> Any:
    """The compiled operation for ``key``: from memory, else from disk or nvcc."""
    op = _kernels.get(key)
    if op is None:
        with _compile_lock:
            op = _kernels.get(key)
            if op is None:
                op = _kernels[key] = _compile(key)
    return op


def launch(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> None:
    """``d = a @ b`` with the cached kernel for these operands (``d`` row-major, contiguous)."""
    from cutlass_cppgen.backend.gemm_operation import GemmArguments
    from cutlass_cppgen.shape import GemmCoord
    from cutlass_library import GemmUniversalMode

    op = get_kernel(kernel_key(a, b, d.dtype))
    m, k = a.shape
    args = GemmArguments(
        operation=op, problem_size=GemmCoord(m, b.shape[1], k),
        A=a, B=b, C=d, D=d,
        output_op=op.epilogue_type(1.0, 0.0),
        gemm_mode=GemmUniversalMode.Gemm,
        split_k_slices=1,
        stream=current_stream(a.device),
    )
    op.run(args)
