"""Compiled CUTLASS GEMM kernels: choice of tile, compilation, two-level cache, launch.

A kernel is identified by a :class:`KernelKey`: device (name and compute capability),
operand and output dtypes, the layout of ``b`` and the tile (threadblock, cluster and
schedules). The first use of a key compiles it with nvcc (tens of seconds) into the
device's directory of the on-disk cache, where ``cutlass_cppgen`` stores it keyed by the
generated source (which spells out the same dtypes, layouts and tile). Later processes
load it from there; within a process the compiled operation is kept in memory.

Launching (:func:`launch`): for CUTLASS 3 (SM90) kernels the first call of a problem shape
builds ``cutlass_cppgen``'s argument structure once (:class:`_Launcher`); each later call
writes the four operand addresses into it, has the kernel's host code turn it into the
kernel's parameters (TMA descriptors included) and calls ``cuLaunchKernelEx``, without
``cutlass_cppgen``'s per-call argument objects or device workspace allocation. CUTLASS 2
kernels (pre-Hopper GPUs) launch through ``cutlass_cppgen``'s arguments on every call.
"""

from __future__ import annotations

import ctypes
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
        return tuple(td.cluster_shape or (1, 1, 1)) == self.cluster and self.same_schedules(td)

    def same_schedules(self, td: Any) -> bool:
        """Same schedules and stages as ``td`` (the tile and the cluster may differ)."""
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


#: (kernel architecture, M class) -> kernels in order of preference. Hopper uses CUTLASS 3
#: warp-specialized TMA kernels (cooperative 128x256 CTAs in 2x1 clusters for large M,
#: 128x128 where those are few, ping-pong 64-row CTAs up to ``SMALL_MAX_M``); Ampere-class
#: GPUs CUTLASS 2 multistage kernels in two classes (initial choices, not measured).
TILES: dict[tuple[int, str], tuple[TilePreference, ...]] = {
    (90, "large"): (
        TilePreference((128, 256, 64), (2, 1, 1), "TmaWarpSpecializedCooperative",
                       "TmaWarpSpecializedCooperative"),
        TilePreference((128, 256, 64), (2, 1, 1), "TmaWarpSpecializedCooperative"),
        TilePreference((128, 128, 64), (2, 1, 1), "TmaWarpSpecializedCooperative",
                       "TmaWarpSpecializedCooperative"),
    ),
    # large M whose 128x256 tiles would fill at most half of the SMs (Llama-8B o and down
    # at M=512: 64 tiles for 132 SMs). H200, graph-timed against cuBLAS in the same run
    # (docs/runs/h200-cutlass-few-tiles.json): o / down M=512 0.52x / 0.53x -> 0.79x /
    # 0.80x, M=256 0.31x -> 0.50x / 0.51x (M <= SMALL_MAX_M takes the 64-row classes).
    (90, "few"): (
        TilePreference((128, 128, 64), (2, 1, 1), "TmaWarpSpecializedCooperative",
                       "TmaWarpSpecializedCooperative"),
        TilePreference((128, 128, 64), (2, 1, 1), "TmaWarpSpecializedCooperative"),
    ),
    (90, "small"): (
        TilePreference((64, 128, 64), (1, 2, 1), "TmaWarpSpecializedPingpong",
                       "TmaWarpSpecialized"),
        TilePreference((128, 128, 64), (1, 2, 1), "TmaWarpSpecializedPingpong"),
    ),
    # decode-like M where 64x128 CTAs would fill under half of the SMs: narrower, deeper
    # ping-pong tiles. H200, graph-timed against cuBLAS in the same run
    # (docs/runs/h200-cutlass-small-tiles.json), M=16 / 64: 64x64x128 took qkv (96 CTAs)
    # from 0.57x / 0.58x to 0.60x / 0.80x; 64x32x128 took o (128 CTAs) from 0.49x / 0.44x
    # to 0.65x / 0.70x and down from 0.38x / 0.42x to 0.52x / 0.72x.
    (90, "small-n64"): (
        TilePreference((64, 64, 128), (1, 1, 1), "TmaWarpSpecializedPingpong",
                       "TmaWarpSpecialized"),
    ),
    (90, "small-n32"): (
        TilePreference((64, 32, 128), (1, 1, 1), "TmaWarpSpecializedPingpong",
                       "TmaWarpSpecialized"),
    ),
    (80, "large"): (TilePreference((256, 128, 64), (1, 1, 1), stages=3),),
    (80, "small"): (TilePreference((64, 128, 64), (1, 1, 1), stages=3),),
}
#: Largest M of the 64-row classes. H200, every class forced per Llama-8B layer
#: (docs/runs/h200-cutlass-tile-classes.json, graph-timed against cuBLAS in the same run):
#: at M=128 the 64-row classes ran qkv / o / down at 0.61x / 0.70x / 0.65x where the
#: 128-row ones reached 0.54x / 0.47x / 0.41x (gate_up 0.66x against 0.67x); at M=256 the
#: 128-row classes were ahead for qkv and gate_up (0.72x / 0.89x against 0.44x / 0.54x).
SMALL_MAX_M = 128
#: The large class's CTA tile on Hopper, by which "few" is decided.
_LARGE_CTA = (128, 256)


def tile_class(m: int, n: int | None = None, sms: int | None = None) -> str:
    """The M class of an ``[m, n]`` output on ``sms`` SMs (``TILES`` keys).

    M <= ``SMALL_MAX_M``: ``"small"`` (64x128 CTAs), or ``"small-n64"`` / ``"small-n32"``
    (64-wide / 32-wide CTAs) where the wider tiles would fill under half of the SMs.
    Larger M: ``"few"`` (128x128) where the large class's 128x256 tiles would fill at
    most half of the SMs, else ``"large"``.
    """
    if m <= SMALL_MAX_M:
        if n is None or sms is None:
            return "small"
        for width, name in ((128, "small"), (64, "small-n64")):
            if -(-m // 64) * -(-n // width) >= sms // 2:
                return name
        return "small-n32"
    if n is not None and sms is not None:
        tiles = -(-m // _LARGE_CTA[0]) * -(-n // _LARGE_CTA[1])
        if tiles <= sms // 2:
            return "few"
    return "large"


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
        shape = [c * k for c, k in zip(pref.cta, pref.cluster, strict=True)]
        if kind:
            return kind[0].clone_and_update({"threadblock_shape": shape})
        similar = [td for td in descriptions if pref.same_schedules(td)]
        if similar:  # the schedules exist with another cluster: re-cluster one
            return similar[0].clone_and_update(
                {"threadblock_shape": shape, "cluster_shape": list(pref.cluster)})
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
def _device(index: int) -> tuple[str, tuple[int, int], int]:
    props = torch.cuda.get_device_properties(index)
    return props.name, (props.major, props.minor), props.multi_processor_count


def kernel_key(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> KernelKey:
    index = a.device.index if a.device.index is not None else torch.cuda.current_device()
    name, cc, sms = _device(index)
    m_class = tile_class(a.shape[0], b.shape[1], sms)
    if kernel_arch(cc) != 90:  # CUTLASS 2 has two classes: one kernel per tile, not per name
        m_class = "small" if m_class.startswith("small") else "large"
    return KernelKey(
        device=name,
        cc=cc,
        dtype=a.dtype,
        out_dtype=out_dtype,
        b_layout="row" if b.is_contiguous() else "col",
        m_class=m_class,
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


def _arguments(op: Any, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> Any:
    """``cutlass_cppgen``'s arguments of ``d = a @ b`` (they allocate and clear a device
    workspace when the kernel needs one)."""
    from cutlass_cppgen.backend.gemm_operation import GemmArguments
    from cutlass_cppgen.shape import GemmCoord
    from cutlass_library import GemmUniversalMode

    m, k = a.shape
    return GemmArguments(
        operation=op, problem_size=GemmCoord(m, b.shape[1], k),
        A=a, B=b, C=d, D=d,
        output_op=op.epilogue_type(1.0, 0.0),
        gemm_mode=GemmUniversalMode.Gemm,
        split_k_slices=1,
        stream=current_stream(a.device),
    )


_free = ctypes.CDLL(None).free
_free.argtypes = [ctypes.c_void_p]


class _Launcher:
    """The launch of one CUTLASS 3 kernel for one problem shape (operands contiguous, so
    the leading dimensions follow from the shape): the argument structure, whose operand
    addresses are rewritten per call, the grid, block, shared memory and cluster."""

    def __init__(self, op: Any, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> None:
        from cuda.bindings import driver

        args = _arguments(op, a, b, d)
        self.op = op
        self.rt = op.rt_module
        self.arguments = args.arguments  # the ctypes structure the host code reads
        self.workspace_bytes = int(self.rt.get_device_workspace_size(args))
        self.params_bytes = len(args.host_workspace)
        self.params = (ctypes.c_char * self.params_bytes)()
        self.packed = (ctypes.c_void_p * 1)(ctypes.addressof(self.params))
        config = driver.CUlaunchConfig()
        lc = args.launch_config
        config.gridDimX, config.gridDimY, config.gridDimZ = lc.grid
        config.blockDimX, config.blockDimY, config.blockDimZ = lc.block
        config.sharedMemBytes = lc.shared_memory_capacity
        cluster = tuple(getattr(op.tile_description, "cluster_shape", None) or (1, 1, 1))
        attrs = []
        if cluster != (1, 1, 1):
            attr = driver.CUlaunchAttribute()
            attr.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            (attr.value.clusterDim.x, attr.value.clusterDim.y,
             attr.value.clusterDim.z) = cluster
            attrs.append(attr)
            (err,) = driver.cuFuncSetAttribute(
                self.rt.kernel,
                driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                1)
            _check(driver, err, "cuFuncSetAttribute")
        config.attrs = attrs
        config.numAttrs = len(attrs)
        self.config = config
        self.driver = driver  # (imported here, not on every launch)
        self.lock = threading.Lock()
        # operand addresses the parameters were last built for (None: rebuild)
        self.addresses: tuple[int, int, int] | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> None:
        # a zeroed workspace per call, from PyTorch's stream-ordered allocator
        workspace = (torch.zeros(self.workspace_bytes, dtype=torch.uint8, device=a.device)
                     if self.workspace_bytes else None)
        addresses = (a.data_ptr(), b.data_ptr(), d.data_ptr())
        with self.lock:
            # the parameters (TMA descriptors hold the addresses) are rebuilt when an
            # operand moved, or always with a workspace (a new one per call)
            if addresses != self.addresses or workspace is not None:
                mainloop, epilogue = self.arguments.mainloop, self.arguments.epilogue
                mainloop.ptr_A, mainloop.ptr_B, epilogue.ptr_C = addresses
                epilogue.ptr_D = epilogue.ptr_C
                # the host code returns them in a buffer it allocates: copied out, freed
                raw = self.rt.get_args(
                    ctypes.byref(self.arguments),
                    ctypes.c_void_p(workspace.data_ptr() if workspace is not None else 0))
                address = ctypes.cast(raw, ctypes.c_void_p).value
                ctypes.memmove(self.params, address, self.params_bytes)
                _free(address)
                self.addresses = None if workspace is not None else addresses
            self.config.hStream = current_stream(a.device)
            (err,) = self.driver.cuLaunchKernelEx(self.config, f=self.rt.kernel,
                                                  kernelParams=self.packed, extra=0)
        _check(self.driver, err, "cuLaunchKernelEx")


def _check(driver: Any, err: Any, what: str) -> None:
    """Raise unless the driver call returned ``CUDA_SUCCESS``."""
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"CUTLASS launch: {what} failed with {err}")


_launchers: dict[tuple[KernelKey, int, int, int], _Launcher] = {}


def launch(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> None:
    """``d = a @ b`` with the cached kernel for these operands (``d`` row-major, contiguous)."""
    key = kernel_key(a, b, d.dtype)
    op = get_kernel(key)
    if kernel_arch(key.cc) != 90:  # CUTLASS 2: arguments built on every call
        op.run(_arguments(op, a, b, d))
        return
    shape = (key, a.shape[0], b.shape[1], a.shape[1])
    launcher = _launchers.get(shape)
    if launcher is None:
        launcher = _launchers[shape] = _Launcher(op, a, b, d)
    launcher(a, b, d)
