"""Split-K shared by the Triton kernels: planning, tile counters, deterministic reduction.

A kernel that splits K ``splits`` ways computes each output tile as ``splits`` partial
sums. Each split stores its float32 partial into a ``[splits, ...]`` buffer and
increments the tile's int32 counter (:func:`split_arrive`); the split that brings the
counter to ``splits`` is the last one, sums the partials in split order (so the result
does not depend on which program finished last) and resets the counter
(:func:`split_sum`), then applies the epilogue and writes the output. One launch does it
all and leaves the counters at zero for the next call. Two launches that use the
counters of one device must not run at the same time (one stream, or serialized).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["fixed_splits", "plan_splits", "split_arrive", "split_counters", "split_sum"]

_COUNTERS: dict[torch.device, torch.Tensor] = {}
# Buffers replaced by larger ones stay allocated: CUDA graphs captured with them keep
# using them (and leave them at zero).
_RETIRED: list[torch.Tensor] = []


def split_counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters, at least ``n`` of them (one per output tile), shared by
    every split-K kernel on ``device``; kernels leave them at zero when done."""
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < n:
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[device] = buf
    return buf


def fixed_splits(splits: int, k_tiles: int) -> tuple[int, int]:
    """(splits, K tiles per split) for at most ``splits`` non-empty splits of ``k_tiles``
    (one split when there is at most one K tile)."""
    if k_tiles <= 1:
        return 1, max(k_tiles, 1)
    per_split = -(-k_tiles // max(1, min(splits, k_tiles)))
    return -(-k_tiles // per_split), per_split


def plan_splits(tiles: int, k_tiles: int, target_programs: int,
                max_splits: int) -> tuple[int, int]:
    """(splits, K tiles per split) so that ``tiles * splits`` reaches ``target_programs``,
    with at most ``max_splits`` splits."""
    wanted = max(1, -(-target_programs // max(tiles, 1)))
    return fixed_splits(min(wanted, max_splits), k_tiles)


@triton.jit
def split_arrive(part_ptr, count_ptr, counter, acc, offs, mask, split, split_stride):
    """Store ``acc`` (float32) as partial ``split`` of a tile (``offs``/``mask`` address
    the tile inside one ``split_stride``-element slice of ``part_ptr``) and count it in.
    Returns how many splits of the tile had arrived before this one."""
    tl.store(part_ptr + split.to(tl.int64) * split_stride + offs, acc, mask=mask)
    # Every thread's partial is stored before the (release) increment publishes it.
    tl.debug_barrier()
    return tl.atomic_add(count_ptr + counter, 1, sem="acq_rel", scope="gpu")


@triton.jit
def split_sum(part_ptr, count_ptr, counter, offs, mask, splits, split_stride):
    """Sum of a tile's ``splits`` partials in split order (the caller is the tile's last
    split to arrive); resets the tile's counter for the next launch."""
    ptrs = part_ptr + offs
    total = tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
    for _ in range(1, splits):
        ptrs += split_stride  # 64-bit pointers: no overflow past 2**31 elements
        total += tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
    tl.atomic_xchg(count_ptr + counter, 0, sem="relaxed", scope="gpu")
    return total
