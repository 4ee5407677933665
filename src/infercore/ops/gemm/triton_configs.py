"""Launch configurations of the Triton matmul kernels, chosen from a table (no autotuning).

A configuration is looked up by *shape class*: the device class (``"sm90"`` for Hopper,
``"cuda"`` for other GPUs, ``"interpreter"`` for CPU under ``TRITON_INTERPRET=1``), the
operand width in bits and the M class (decode-like ``"small"``, ``"medium"``, ``"large"``).
To tune, time candidates with ``gemm_triton(..., config=GemmConfig(...))`` or
``gemm_fp8_triton(..., config=...)`` and the ``gemm`` / ``gemm_fp8`` benchmark suites,
then edit :data:`CONFIGS` (or assign to it at run time).

Entries are initial choices unless their comment gives a measurement; ``infercore tune gemm``
finds better ones for a given GPU and shapes, and ``scripts/gemm_small_m_sweep.py`` sweeps
tiles and split-K for the Llama-3-8B layers at small M against cuBLAS.

Split-K: with few rows the output has few tiles (``M = 16``, ``N = 4096``: 64 tiles of
16x64), far fewer programs than the SMs can hold, and reading the weight is the work.
``split_k`` splits K over several programs per tile (float32 partials, reduced in a fixed
order by the last split to finish: :mod:`infercore.ops.splitk`); ``split_k=None`` plans
the count at launch from the tile count and the SM count (:func:`plan_split_k`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from infercore.ops import splitk
from infercore.registry import compute_capability

__all__ = [
    "CONFIGS",
    "FAST_ACCUM_CONFIGS",
    "FAST_ACCUM_FEW_TILES",
    "FEW_TILES",
    "MAX_SPLIT_K",
    "SM90_SHARED_MEMORY",
    "SPLIT_K_PARTIAL_RATIO",
    "SPLIT_K_WAVES",
    "GemmConfig",
    "device_class",
    "fit_shared_memory",
    "m_class",
    "num_sms",
    "pick_config",
    "plan_split_k",
    "shared_memory_bytes",
]

#: Shared memory one Hopper thread block may use (227 KB), less 1 KB for barriers.
SM90_SHARED_MEMORY = 227 * 1024 - 1024


@dataclass(frozen=True)
class GemmConfig:
    """Tile shape, program ordering and pipelining of one matmul launch.

    ``persistent``: launch at most ``programs_per_sm`` programs per SM that stride over
    the tiles (and their K splits). ``tma``: load through TMA descriptors when the
    operands allow it (Hopper; the pointer kernel is used otherwise). ``split_k``: split
    K over at most this many programs per output tile (1: no split, the kernels' plain
    path); ``None`` plans it at launch (:func:`plan_split_k`).
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    persistent: bool = False
    tma: bool = False
    programs_per_sm: int = 1
    split_k: int | None = 1

    def __post_init__(self) -> None:
        if self.split_k is not None and (not isinstance(self.split_k, int) or self.split_k < 1):
            raise ValueError(f"split_k must be None or an integer >= 1, got {self.split_k!r}")

    def with_block_k(self, block_k: int) -> GemmConfig:
        return dataclasses.replace(self, block_k=block_k)


#: (device class, operand bits, M class) -> configuration. Operand bits: 16 (fp16/bf16),
#: 32 (fp32, half the K depth so a stage uses the same shared memory) and 8 (fp8, twice it).
#: Off Hopper, 16-bit small and medium M split K as planned (initial choice, to be tuned).
CONFIGS: dict[tuple[str, int, str], GemmConfig] = {
    # Hopper: wgmma tiles fed by TMA; large problems persistent over 128x256 tiles
    # (3 stages of 48 KB plus the 64 KB output tile fit in 227 KB of shared memory).
    # bf16 small / medium: sweeps over the Llama-3-8B layers (qkv, o, gate_up, down) on an
    # H200 (CUDA graphs over 8 weight copies, cuBLAS in the same run). M=16: best geometric
    # mean, 1.02x cuBLAS (worst layer 0.95x; the planned split-K default it replaces:
    # 0.85x). M=64: unsplit 64x64 tiles for qkv (0.94x) and gate_up (1.02x), split in two
    # where they are few (FEW_TILES: o 0.89x, down 1.06x); the single entry it replaces,
    # 64x128x128 split 2, was 0.89x in geometric mean. Medium is measured at M=64 only.
    ("sm90", 16, "small"): GemmConfig(16, 32, 256, num_warps=4, num_stages=4, tma=True),
    ("sm90", 16, "medium"): GemmConfig(64, 64, 128, num_warps=4, num_stages=4, tma=True),
    # bf16 large: 0.97-1.01x cuBLAS on an H200 (8192^3 736 vs 750 TFLOP/s; 4096^3 and the
    # Llama-8B layers at M=2048), none of eight other candidates clearly better.
    ("sm90", 16, "large"): GemmConfig(
        128, 256, 64, num_warps=8, num_stages=3, persistent=True, tma=True
    ),
    # fp8 small: Llama-3-8B layers at M=16 on an H200, tensor-wise scales, against
    # torch._scaled_mm in the same run (docs/runs/h200-gemm-fp8-small-m-sweep.json):
    # 512-deep K steps (the bytes per row and step of the bf16 entry) ran qkv / o / gate_up
    # / down at 0.85x / 0.81x / 0.88x / 0.85x where the 16x64x256 entry it replaces ran
    # 0.89x / 0.70x / 0.83x / 0.68x.
    ("sm90", 8, "small"): GemmConfig(16, 32, 512, num_warps=4, num_stages=4, tma=True),
    ("sm90", 8, "medium"): GemmConfig(64, 128, 128, num_warps=4, num_stages=4, tma=True),
    # fp8: 128x128 tiles over 256-deep K steps measured best of ten candidates on an H200
    # (8192^3: 1086 TFLOP/s = 0.88x torch._scaled_mm, vs 960 for 128x256x128).
    ("sm90", 8, "large"): GemmConfig(
        128, 128, 256, num_warps=8, num_stages=3, persistent=True, tma=True
    ),
    ("sm90", 32, "small"): GemmConfig(16, 64, 64, num_warps=4, num_stages=4, tma=True),
    ("sm90", 32, "medium"): GemmConfig(64, 128, 32, num_warps=4, num_stages=4, tma=True),
    ("sm90", 32, "large"): GemmConfig(
        128, 128, 32, num_warps=8, num_stages=3, persistent=True, tma=True
    ),
    # Other GPUs (Ampere, Ada): mma.sync tiles through pointers.
    ("cuda", 16, "small"): GemmConfig(16, 64, 128, num_warps=4, num_stages=4, split_k=None),
    ("cuda", 16, "medium"): GemmConfig(64, 128, 32, num_warps=4, num_stages=4, split_k=None),
    ("cuda", 16, "large"): GemmConfig(128, 128, 32, num_warps=4, num_stages=4),
    ("cuda", 8, "small"): GemmConfig(16, 64, 128, num_warps=4, num_stages=4),
    ("cuda", 8, "medium"): GemmConfig(64, 128, 64, num_warps=4, num_stages=4),
    ("cuda", 8, "large"): GemmConfig(128, 128, 64, num_warps=8, num_stages=3),
    ("cuda", 32, "small"): GemmConfig(16, 64, 64, num_warps=4, num_stages=3),
    ("cuda", 32, "medium"): GemmConfig(64, 64, 32, num_warps=4, num_stages=3),
    ("cuda", 32, "large"): GemmConfig(128, 64, 32, num_warps=4, num_stages=3),
}

#: (device class, operand bits, M class) -> the configuration used instead of the class's
#: :data:`CONFIGS` entry when that entry's output tiles would fill at most half of the SMs
#: (:func:`pick_config`). bf16 on an H200 (CUDA graphs over 8 weight copies, cuBLAS in
#: the same run), Llama-3-8B layers:
#: - M=512: o [4096, 4096] 0.57x -> 0.89x cuBLAS and down [4096, 14336] 0.57x -> 0.93x
#:   with 128x128 tiles (64 -> 128 tiles for 132 SMs); qkv and gate_up (96 and 448 tiles
#:   of 128x256) were best with the large entry's tile.
#: - M=64: o and down (64 tiles of 64x64) 0.89x / 1.06x with K split in two; qkv (96
#:   tiles) 0.94x and gate_up 1.02x unsplit, the medium entry.
FEW_TILES: dict[tuple[str, int, str], GemmConfig] = {
    ("sm90", 16, "medium"): GemmConfig(64, 64, 128, num_warps=4, num_stages=4, tma=True,
                                       split_k=2),
    ("sm90", 16, "large"): GemmConfig(128, 128, 64, num_warps=8, num_stages=4, tma=True),
}

#: FP8 with ``fast_accum`` (no float32 promotion per K tile, so the kernel keeps a tile's
#: matrix instructions in flight while it issues the next): entries used instead of
#: :data:`CONFIGS` / :data:`FEW_TILES` for these keys. H200, tensor-wise scales, against
#: torch._scaled_mm with ``use_fast_accum=True`` in the same run
#: (docs/runs/h200-gemm-fp8-accum-sweep.json): 128x256x128 ran 8192^3 at 1286 TFLOP/s
#: (0.99x; 128x128x256, the promoting default's tile: 1211) and gate_up M=4096 at 1227
#: (0.94x); where 128x256 tiles are few (o, down at M=512) 128x128x128 with 4 stages ran
#: 0.89x / 0.94x, the 128x256 tile 0.59-0.60x.
FAST_ACCUM_CONFIGS: dict[tuple[str, int, str], GemmConfig] = {
    ("sm90", 8, "large"): GemmConfig(
        128, 256, 128, num_warps=8, num_stages=3, persistent=True, tma=True
    ),
}
FAST_ACCUM_FEW_TILES: dict[tuple[str, int, str], GemmConfig] = {
    ("sm90", 8, "large"): GemmConfig(
        128, 128, 128, num_warps=8, num_stages=4, persistent=True, tma=True
    ),
}

#: The interpreter runs tiles as NumPy arrays and pays per operation, not per element:
#: fewer, larger tiles keep tests fast. Two "SMs" make the persistent loop visit
#: several tiles.
_INTERPRETER = GemmConfig(64, 64, 64, group_m=2, persistent=True)
_INTERPRETER_SMS = 2

#: A planned split-K (``split_k=None``) aims for tiles x splits >= SPLIT_K_WAVES x SMs
#: programs (several resident programs per SM keep weight loads in flight), never splits
#: more than MAX_SPLIT_K ways, and keeps the float32 partials (written, then read back)
#: within SPLIT_K_PARTIAL_RATIO of the bytes of ``b``. Initial choices, to be tuned.
SPLIT_K_WAVES = 3
MAX_SPLIT_K = 16
SPLIT_K_PARTIAL_RATIO = 0.25


def m_class(m: int) -> str:
    """``"small"`` (M <= 32: decode, weight-bandwidth bound), ``"medium"`` (<= 256) or
    ``"large"``."""
    return "small" if m <= 32 else "medium" if m <= 256 else "large"


def device_class(device: torch.device) -> str:
    if device.type != "cuda":
        return "interpreter"
    cc = compute_capability(device)
    return "sm90" if cc is not None and cc[0] == 9 else "cuda"


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a small fixed count in the interpreter)."""
    if device.type != "cuda":
        return _INTERPRETER_SMS
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def shared_memory_bytes(config: GemmConfig, in_bytes: int, out_bytes: int) -> int:
    """Shared memory of the TMA kernel: the pipelined operand tiles plus the output tile."""
    operands = config.num_stages * (config.block_m + config.block_n) * config.block_k * in_bytes
    return operands + config.block_m * config.block_n * out_bytes


def fit_shared_memory(
    config: GemmConfig, in_bytes: int, out_bytes: int, limit: int = SM90_SHARED_MEMORY
) -> GemmConfig:
    """``config`` with fewer stages (down to 2), then narrower tiles, until the TMA kernel
    fits in ``limit`` bytes (a float32 output tile is twice a 16-bit one)."""
    while shared_memory_bytes(config, in_bytes, out_bytes) > limit and config.num_stages > 2:
        config = dataclasses.replace(config, num_stages=config.num_stages - 1)
    while shared_memory_bytes(config, in_bytes, out_bytes) > limit and config.block_n > 16:
        config = dataclasses.replace(config, block_n=config.block_n // 2)
    return config


def plan_split_k(config: GemmConfig, m: int, n: int, k: int, in_bytes: int,
                 device: torch.device) -> tuple[int, int]:
    """(K splits, K tiles per split) of a launch of ``config`` for an ``[m, k] @ [k, n]``
    product of ``in_bytes``-byte operands: ``config.split_k`` (at most that many non-empty
    splits), or for ``None`` enough splits that the grid covers the SMs
    :data:`SPLIT_K_WAVES` times, within :data:`MAX_SPLIT_K` and
    :data:`SPLIT_K_PARTIAL_RATIO`."""
    k_tiles = -(-k // config.block_k)
    if config.split_k is not None:
        return splitk.fixed_splits(config.split_k, k_tiles)
    tiles = -(-m // config.block_m) * -(-n // config.block_n)
    # partials: splits * m * n * 4 bytes, written and read; b: n * k * in_bytes
    by_traffic = int(SPLIT_K_PARTIAL_RATIO * k * in_bytes / (8 * m))
    limit = max(1, min(MAX_SPLIT_K, by_traffic))
    return splitk.plan_splits(tiles, k_tiles, SPLIT_K_WAVES * num_sms(device), limit)


def pick_config(m: int, bits: int, device: torch.device, n: int | None = None,
                fast_accum: bool = False) -> GemmConfig:
    """The table's configuration for an ``[m, K] @ [K, N]`` product of ``bits``-bit operands:
    the entry of ``m``'s class, or its few-tiles entry when ``n`` is given and the class
    entry's output tiles would fill at most half of the SMs. ``fast_accum`` (FP8) takes
    :data:`FAST_ACCUM_CONFIGS` / :data:`FAST_ACCUM_FEW_TILES` where they have the key."""
    cls = device_class(device)
    if cls == "interpreter":
        return _INTERPRETER
    key = (cls, bits, m_class(m))
    configs, few = CONFIGS, FEW_TILES
    if fast_accum and key in FAST_ACCUM_CONFIGS:
        configs, few = FAST_ACCUM_CONFIGS, FAST_ACCUM_FEW_TILES
    config = configs[key]
    if n is not None and key in few:
        tiles = -(-m // config.block_m) * -(-n // config.block_n)
        if 2 * tiles <= num_sms(device):
            return few[key]
    return config
