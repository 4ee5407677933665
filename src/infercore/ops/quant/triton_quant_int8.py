"""Triton ``quant.int8`` for per-token scales: one pass per row (two for very long rows)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.quant.int8 import QuantizeInt8Inputs
from infercore.ops.triton_launch import as_rows, row_launch_config

_TINY = tl.constexpr(torch.finfo(torch.float32).tiny)


@triton.jit
def _quantize_rows_kernel(
    x_ptr, q_ptr, s_ptr, n_rows, n_cols, x_row_stride, q_row_stride,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr, SINGLE_PASS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    rows64 = rows.to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * x_row_stride
    q_rows = q_ptr + rows64[:, None] * q_row_stride
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        absmax = tl.max(tl.abs(x), axis=1)
    else:
        running = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            running = tl.maximum(running, tl.abs(x))
        absmax = tl.max(running, axis=1)
    scale = tl.maximum(absmax / 127.0, _TINY)
    tl.store(s_ptr + rows64, scale, mask=row_mask)
    if SINGLE_PASS:
        q = tl.minimum(tl.maximum(tl.floor(x / scale[:, None] + 0.5), -127.0), 127.0)
        tl.store(q_rows + cols[None, :], q.to(tl.int8), mask=mask)
    else:
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            q = tl.minimum(tl.maximum(tl.floor(x / scale[:, None] + 0.5), -127.0), 127.0)
            tl.store(q_rows + c[None, :], q.to(tl.int8), mask=mask)


def quantize_int8_token_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    q = torch.empty((n_rows, n_cols), dtype=torch.int8, device=x.device)
    scale = torch.empty((n_rows, 1), dtype=torch.float32, device=x.device)
    if n_rows and n_cols:
        block_n, rows, num_warps, single = row_launch_config(n_cols, x.element_size())
        _quantize_rows_kernel[(triton.cdiv(n_rows, rows),)](
            x2, q, scale, n_rows, n_cols, x2.stride(0), q.stride(0),
            BLOCK_N=block_n, ROWS=rows, SINGLE_PASS=single, num_warps=num_warps,
        )
    return q.view(x.shape), scale.view(*x.shape[:-1], 1)


class TritonQuantizeInt8(TritonBackend):
    family = "quant.int8"
    name = "triton"
    priority = 100
    description = "Triton, per-token scales (granularity='token'), one pass per row"

    def not_supported_reasons(self, inputs: QuantizeInt8Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if inputs.granularity != "token":
            reasons.append(
                f"granularity {inputs.granularity!r} not supported (supports 'token'; the "
                "others need a reduction across rows)"
            )
        return reasons

    def run(self, x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_int8_token_triton(x)
