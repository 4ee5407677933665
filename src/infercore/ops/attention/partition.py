"""Work partition of the attention kernels: tile shapes, key splits, launch plans.

Pure Python (no Triton import), shared by the Triton backends and
:class:`~infercore.ops.attention.PagedAttentionWrapper`. A :class:`LaunchPlan` says which
kernels run over which grids; :func:`direct_plan` derives one from shapes alone (no host
synchronization, so direct calls can be captured in CUDA graphs), and
:func:`tile_partition` lists the tiles of a batch whose lengths the host knows (the
wrapper's ``plan``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = [
    "KVSource",
    "LaunchPlan",
    "TileShape",
    "choose_num_splits",
    "direct_plan",
    "small_tile",
    "split_workspace",
    "tile_partition",
    "tiled_tile",
]

# Tuning constants. Initial choices for Hopper (H100/H200), to be tuned by measurement.
#: Prefill tiles: rows (query tokens x heads of one KV group), keys per step, warps, stages.
PREFILL_BLOCK_M = 128
PREFILL_BLOCK_N = 64
PREFILL_NUM_WARPS = 8
PREFILL_NUM_STAGES = 3
#: Prefill tiles for rows above 256 bytes (head_dim > 128 in 16-bit, > 64 in float32):
#: shared memory holds the Q tile plus the staged K/V tiles.
PREFILL_LARGE_D = (64, 32, 4, 2)
LARGE_ROW_BYTES = 256
#: Per-sequence tiles (decode, short query runs): tl.dot needs at least 16 rows.
SMALL_BLOCK_M = 16
SMALL_BLOCK_N = 64
SMALL_NUM_WARPS = 4
#: Two stages beat three and four at every decode shape swept on an H200 (GQA 32/8, d128,
#: bf16, block 16; batch x context 1..256 x 512..32768): e.g. batch 64 x 4096 unsplit 4221
#: vs 3124 GB/s, batch 1 x 32768 in 64 splits 2588 vs 2428 GB/s.
SMALL_NUM_STAGES = 2
SMALL_LARGE_D = (16, 32, 4, 2)
#: Split the keys of per-sequence tiles until there are this many programs per SM (decode
#: is memory-bound: several resident programs per SM keep enough loads in flight). Three
#: 2-stage d128 programs fit an H200 SM; with this target the chosen splits were within 2%
#: of the best swept at batch 1/16/64 x 4096/32768 (batch 16 x 4096: 4 splits 3172 GB/s,
#: unsplit 2053; batch 64 x 4096: unsplit 4221, 2 splits 4098).
SPLIT_PROGRAMS_PER_SM = 3
#: A split walks at least this many keys (shorter splits cost more to merge than they
#: save; batch 1 x 4096 peaked at 32 splits of 128 keys, 942 GB/s).
MIN_KEYS_PER_SPLIT = 128
MAX_SPLITS = 64
#: Stand-in SM count for the interpreter (CPU tensors), so splits are exercised there too.
_INTERPRETER_SMS = 4


def next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class TileShape:
    """``block_q`` tokens x ``group_pad`` heads = ``block_m`` rows, ``block_n`` keys per step."""

    block_q: int
    group_pad: int
    block_n: int
    num_warps: int
    num_stages: int

    @property
    def block_m(self) -> int:
        return self.block_q * self.group_pad


def _tile(group: int, head_dim: int, elem_size: int, block_m: int, block_n: int, warps: int,
          stages: int, large_d: tuple[int, int, int, int]) -> TileShape:
    if next_power_of_2(head_dim) * elem_size > LARGE_ROW_BYTES:
        block_m, block_n, warps, stages = large_d
    group_pad = next_power_of_2(group)
    block_q = max(1, block_m // group_pad)
    return TileShape(block_q, group_pad, block_n, warps, stages)


def tiled_tile(group: int, head_dim: int, elem_size: int) -> TileShape:
    """Tile of the prefill (tiled) launch for ``elem_size``-byte queries."""
    return _tile(group, head_dim, elem_size, PREFILL_BLOCK_M, PREFILL_BLOCK_N, PREFILL_NUM_WARPS,
                 PREFILL_NUM_STAGES, PREFILL_LARGE_D)


def small_tile(group: int, head_dim: int, elem_size: int) -> TileShape:
    """Tile of the per-sequence launch: sequences with ``len_q <= block_q`` use it."""
    return _tile(group, head_dim, elem_size, SMALL_BLOCK_M, SMALL_BLOCK_N, SMALL_NUM_WARPS,
                 SMALL_NUM_STAGES, SMALL_LARGE_D)


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; a small stand-in for the interpreter."""
    if device.type != "cuda":
        return _INTERPRETER_SMS
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def choose_num_splits(num_programs: int, max_keys: int, device: torch.device,
                      other_programs: int = 0) -> int:
    """Key splits per sequence for ``num_programs`` per-sequence programs over at most
    ``max_keys`` keys, beside ``other_programs`` of other work: enough for every SM to get
    ``SPLIT_PROGRAMS_PER_SM`` programs, each split at least ``MIN_KEYS_PER_SPLIT`` keys, at
    most ``MAX_SPLITS``."""
    wanted_total = SPLIT_PROGRAMS_PER_SM * sm_count(device) - other_programs
    if num_programs <= 0 or wanted_total <= num_programs:
        return 1
    wanted = -(-wanted_total // num_programs)
    by_length = max(1, max_keys // MIN_KEYS_PER_SPLIT)
    return max(1, min(wanted, by_length, MAX_SPLITS))


@dataclass(frozen=True)
class KVSource:
    """Keys and values: packed ``[total_k, kv_heads, d]`` with ``cu_k``, or a paged cache
    ``[num_blocks, block_size, kv_heads, d]`` with ``block_tables`` and ``seq_lens``."""

    k: torch.Tensor
    v: torch.Tensor
    cu_k: torch.Tensor | None = None
    block_tables: torch.Tensor | None = None
    seq_lens: torch.Tensor | None = None

    @property
    def paged(self) -> bool:
        return self.block_tables is not None

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[-2]

    def strides(self) -> tuple[int, ...]:
        """(kb, ks, kh, vb, vs, vh): block/token, slot-in-block and head strides."""
        if self.paged:
            k, v = self.k, self.v
            return k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2)
        return self.k.stride(0), 0, self.k.stride(1), self.v.stride(0), 0, self.v.stride(1)

    @property
    def page_size(self) -> int:
        return self.k.shape[1] if self.paged else 1


@dataclass
class LaunchPlan:
    """Which launches run over which grids; buffers belong to whoever built the plan.

    ``small``: per-sequence launch over ``num_seqs`` programs x kv heads x ``num_splits``.
    ``tiled``: tiled launch over ``num_tiles`` programs, tiles found by binary search on
    ``cu_q`` or listed in ``tile_map``; it skips sequences the small launch serves.
    """

    num_seqs: int
    small_shape: TileShape
    tiled_shape: TileShape
    small: bool
    tiled: bool
    num_tiles: int = 0
    num_splits: int = 1
    tile_map: torch.Tensor | None = None
    part_o: torch.Tensor | None = None
    part_lse: torch.Tensor | None = None
    one_q_per_seq: bool = False


def split_workspace(num_seqs: int, block_q: int, num_heads: int, num_splits: int,
                    head_dim: int, device: torch.device,
                    storage: tuple[torch.Tensor, torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial outputs ``[num_seqs * block_q, heads, splits, d]`` and their LSEs
    ``[num_seqs * block_q, heads, splits]`` (float32): views of ``storage`` (two flat
    float32 buffers, large enough) when given, else new tensors."""
    rows = num_seqs * block_q
    shape_o, shape_l = (rows, num_heads, num_splits, head_dim), (rows, num_heads, num_splits)
    if storage is None:
        return (torch.empty(shape_o, dtype=torch.float32, device=device),
                torch.empty(shape_l, dtype=torch.float32, device=device))
    flat_o, flat_l = storage
    return (flat_o[: rows * num_heads * num_splits * head_dim].view(shape_o),
            flat_l[: rows * num_heads * num_splits].view(shape_l))


def direct_plan(q: torch.Tensor, num_seqs: int, num_kv_heads: int, max_seqlen_q: int,
                max_keys: int, *, one_q_per_seq: bool = False,
                num_splits: int | None = None,
                small_shape: TileShape | None = None) -> LaunchPlan:
    """A plan from shapes and host-known bounds only (no synchronization).

    All queries fit per-sequence tiles (``max_seqlen_q <= small block_q``): only the small
    launch, split along the keys. Otherwise the tiled launch covers every tile position
    and the small launch serves the short sequences, unsplit unless ``num_splits`` says.
    ``small_shape`` replaces :func:`small_tile`'s choice (a tuned configuration).
    """
    total_q, num_heads, head_dim = q.shape
    group = num_heads // num_kv_heads
    size = q.element_size()
    small_shape = small_shape or small_tile(group, head_dim, size)
    tiled_shape = tiled_tile(group, head_dim, size)
    only_small = one_q_per_seq or max_seqlen_q <= small_shape.block_q
    if num_splits is None:
        num_splits = 1
        if only_small:
            num_splits = choose_num_splits(num_seqs * num_kv_heads, max_keys, q.device)
    plan = LaunchPlan(
        num_seqs, small_shape, tiled_shape, small=True, tiled=not only_small,
        num_tiles=0 if only_small else total_q // tiled_shape.block_q + num_seqs,
        num_splits=num_splits, one_q_per_seq=one_q_per_seq,
    )
    if num_splits > 1:
        plan.part_o, plan.part_lse = split_workspace(
            num_seqs, small_shape.block_q, num_heads, num_splits, head_dim, q.device)
    return plan


def tile_partition(query_lens: torch.Tensor, small: TileShape, tiled: TileShape
                   ) -> tuple[torch.Tensor, int]:
    """Tiles of a batch with known query lengths (host tensor ``[batch]``).

    Returns ``tile_map`` (int32 ``[num_tiles, 2]``: sequence, first query of the tile) for
    the sequences longer than ``small.block_q``, and how many sequences are short enough
    for the per-sequence launch (``0 < len_q <= small.block_q``).
    """
    lens = query_lens.to(torch.int64)
    long_seqs = torch.nonzero(lens > small.block_q).flatten()
    counts = (lens[long_seqs] + tiled.block_q - 1) // tiled.block_q
    seqs = long_seqs.repeat_interleave(counts)
    first_tile = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    starts = torch.arange(seqs.numel()) - first_tile
    tile_map = torch.stack([seqs, starts * tiled.block_q], dim=1).to(torch.int32)
    num_small = int(((lens > 0) & (lens <= small.block_q)).sum())
    return tile_map, num_small
