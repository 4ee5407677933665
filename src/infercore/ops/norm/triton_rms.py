"""Triton RMSNorm: one pass over each row, float32 accumulation."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend

# Rows up to this many elements are held in registers in one pass; longer rows loop.
_MAX_FUSED = 16384


@triton.jit
def _rms_norm_kernel(
    x_ptr, w_ptr, y_ptr,
    n_rows, n_cols,
    x_row_stride, y_row_stride,
    eps,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * x_row_stride
    y_rows = y_ptr + rows64[:, None] * y_row_stride
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        y = x * rstd[:, None] * w[None, :]
        tl.store(y_rows + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            acc += x * x
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c, mask=c < n_cols, other=0.0).to(tl.float32)
            y = x * rstd[:, None] * w[None, :]
            tl.store(y_rows + c[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


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


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """View ``x [..., n]`` as ``[rows, n]`` with unit column stride (copies only if needed)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if n_rows:
        block_n, rows, num_warps, single = row_launch_config(n_cols, x.element_size())
        _rms_norm_kernel[(triton.cdiv(n_rows, rows),)](
            x2, weight.contiguous(), y, n_rows, n_cols, x2.stride(0), y.stride(0), eps,
            BLOCK_N=block_n, ROWS=rows, SINGLE_PASS=single, num_warps=num_warps,
        )
    return y.view(x.shape)


class TritonRMSNorm(TritonBackend):
    family = "norm.rms"
    name = "triton"
    priority = 100
    description = "Triton, one pass per row; CUDA (CPU under TRITON_INTERPRET=1)"

    def run(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return rms_norm_triton(x, weight, eps)
