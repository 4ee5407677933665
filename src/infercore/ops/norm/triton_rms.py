"""Triton RMSNorm: one pass over each row, float32 accumulation.

The kernel optionally adds a residual first (``norm.add_rms``, see ``triton_add.py``):
``residual += x`` is stored, rounded to the residual's dtype, and that rounded sum is
what gets normalized, as in ``residual = x + residual; x = rms_norm(residual)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.triton_launch import as_rows, row_launch_config


@triton.jit
def _rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, y_ptr,
    n_rows, n_cols,
    x_row_stride, r_row_stride, y_row_stride,
    eps,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    if ROWS == 1 and SINGLE_PASS:
        # One row per program as a 1-D tile: on an H200 this ran at 3841 GB/s for
        # 16384x4096 bf16 against 3784 GB/s for the same work as a [1, BLOCK_N] tile.
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            r_row = r_ptr + row * r_row_stride
            r = tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
            s = (x + r).to(r_ptr.dtype.element_ty)
            tl.store(r_row + cols, s, mask=mask)
            x = s.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = (x * rstd * w).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + row * y_row_stride + cols, y, mask=mask)
        return
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * x_row_stride
    r_rows = r_ptr + rows64[:, None] * r_row_stride
    y_rows = y_ptr + rows64[:, None] * y_row_stride
    # With a residual, the second pass re-reads the stored sum instead of x.
    src_rows = r_rows if HAS_RESIDUAL else x_rows
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            r = tl.load(r_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            s = (x + r).to(r_ptr.dtype.element_ty)
            tl.store(r_rows + cols[None, :], s, mask=mask)
            x = s.to(tl.float32)
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
            if HAS_RESIDUAL:
                r = tl.load(r_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
                s = (x + r).to(r_ptr.dtype.element_ty)
                tl.store(r_rows + c[None, :], s, mask=mask)
                x = s.to(tl.float32)
            acc += x * x
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)
        if HAS_RESIDUAL:
            tl.debug_barrier()  # the stored sums are re-read below, possibly by other threads
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = tl.load(src_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c, mask=c < n_cols, other=0.0).to(tl.float32)
            y = x * rstd[:, None] * w[None, :]
            tl.store(y_rows + c[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def launch_rms_norm(
    x2: torch.Tensor,
    weight: torch.Tensor,
    y2: torch.Tensor,
    eps: float,
    residual2: torch.Tensor | None = None,
) -> None:
    """Run the kernel on ``[rows, n]`` views with unit column stride.

    ``y2`` may be ``x2`` itself (in place); with ``residual2``, the residual is updated
    in place and the sum is normalized.
    """
    n_rows, n_cols = x2.shape
    if n_rows == 0:
        return
    r2 = residual2 if residual2 is not None else x2
    block_n, rows, num_warps, single = row_launch_config(n_cols, x2.element_size())
    _rms_norm_kernel[(triton.cdiv(n_rows, rows),)](
        x2, r2, weight.contiguous(), y2, n_rows, n_cols,
        x2.stride(0), r2.stride(0), y2.stride(0), eps,
        BLOCK_N=block_n, ROWS=rows, SINGLE_PASS=single, HAS_RESIDUAL=residual2 is not None,
        num_warps=num_warps,
    )


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x2 = as_rows(x)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    launch_rms_norm(x2, weight, y, eps)
    return y.view(x.shape)


class TritonRMSNorm(TritonBackend):
    family = "norm.rms"
    name = "triton"
    priority = 100
    description = "Triton, one pass per row; CUDA (CPU under TRITON_INTERPRET=1)"

    def run(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return rms_norm_triton(x, weight, eps)
