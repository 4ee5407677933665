"""Launch helpers shared by the row-wise and elementwise Triton kernels."""

from __future__ import annotations

import torch
import triton

__all__ = ["as_rows", "row_launch_config", "rows_view", "tile_launch_config"]

# Rows up to this many elements are held in registers in one pass; longer rows loop.
_MAX_FUSED = 16384

# Elements per program for elementwise kernels (initial choice, to be tuned): 4096 elements
# is 8 KB of bf16 per operand, enough in flight per program to keep HBM busy.
_TILE_ELEMENTS = 4096
# Widest column block of an elementwise tile (initial choice, to be tuned): 1024 16-bit
# elements are one 16-byte vector for each of the 128 lanes of 4 warps.
_MAX_TILE_COLS = 1024
# Warps per elementwise program (initial choice, to be tuned).
_TILE_WARPS = 4


def row_launch_config(n_cols: int, element_size: int) -> tuple[int, int, int, bool]:
    """(BLOCK_N, ROWS, num_warps, SINGLE_PASS) for a row-wise kernel over ``n_cols``.

    Short rows are packed several to a program so each program moves >= 8 KB.
    """
    single = n_cols <= _MAX_FUSED
    block_n = triton.next_power_of_2(n_cols) if single else 4096
    rows = max(1, min(32, 8192 // (block_n * element_size))) if single else 1
    tile_bytes = block_n * rows * element_size
    num_warps = 4 if tile_bytes <= 4096 else 8 if tile_bytes <= 16384 else 16
    return block_n, rows, num_warps, single


def tile_launch_config(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, ROWS, num_warps) for an elementwise kernel over ``[rows, n_cols]`` tiles.

    Columns are split into blocks of at most 1024 so that a handful of long rows (decode)
    still spreads over many programs; short rows are packed several to a program.
    """
    block_n = min(triton.next_power_of_2(max(n_cols, 1)), _MAX_TILE_COLS)
    rows = max(1, _TILE_ELEMENTS // block_n)
    return block_n, rows, _TILE_WARPS


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """View ``x [..., n]`` as ``[rows, n]`` with unit column stride (copies only if needed)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def rows_view(x: torch.Tensor) -> torch.Tensor | None:
    """``x [..., n]`` as a ``[rows, n]`` view of the same storage with unit column stride.

    ``None`` when no such view exists (then an in-place kernel cannot write through it).
    """
    if x.dim() == 2 and x.stride(-1) == 1:
        return x
    try:
        x2 = x.view(-1, x.shape[-1])
    except RuntimeError:
        return None
    return x2 if x2.stride(-1) == 1 or x2.shape[-1] == 1 else None
