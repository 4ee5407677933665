"""Triton gated activations: one kernel for SiLU, erf-GELU and tanh-GELU times the gate.

Each program handles a ``[ROWS, BLOCK_N]`` tile of the output and reads the matching
tiles of both halves of ``x``; the activation is a compile-time switch.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.triton_launch import as_rows, rows_view, tile_launch_config

_SILU: tl.constexpr = tl.constexpr(0)
_GELU: tl.constexpr = tl.constexpr(1)
_GELU_TANH: tl.constexpr = tl.constexpr(2)
_ACT_IDS = {"silu": _SILU.value, "gelu": _GELU.value, "gelu_tanh": _GELU_TANH.value}


@triton.jit
def _act_and_mul_kernel(
    x_ptr, out_ptr,
    n_rows, d,
    x_row_stride, out_row_stride,
    ACT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < d)[None, :]
    rows64 = rows.to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * x_row_stride + cols[None, :]
    a = tl.load(x_rows, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x_rows + d, mask=mask, other=0.0).to(tl.float32)
    if ACT == _SILU:
        g = a * tl.sigmoid(a)
    elif ACT == _GELU:
        g = 0.5 * a * (1.0 + tl.math.erf(a * 0.7071067811865476))
    else:
        # 0.5 * a * (1 + tanh(z)) == a * sigmoid(2 z), z = sqrt(2 / pi) * (a + 0.044715 a^3)
        g = a * tl.sigmoid(1.5957691216057308 * (a + 0.044715 * a * a * a))
    out = out_ptr + rows64[:, None] * out_row_stride + cols[None, :]
    tl.store(out, (g * b).to(out_ptr.dtype.element_ty), mask=mask)


def act_and_mul_triton(x: torch.Tensor, out: torch.Tensor, activation: str) -> None:
    x2 = as_rows(x)
    out2 = rows_view(out)
    assert out2 is not None, "checked by not_supported_reasons"
    n_rows, d = out2.shape
    if n_rows == 0 or d == 0:
        return
    block_n, rows, num_warps = tile_launch_config(d)
    grid = (triton.cdiv(n_rows, rows), triton.cdiv(d, block_n))
    _act_and_mul_kernel[grid](
        x2, out2, n_rows, d, x2.stride(0), out2.stride(0),
        ACT=_ACT_IDS[activation], BLOCK_N=block_n, ROWS=rows, num_warps=num_warps,
    )


class _TritonGatedAct(TritonBackend):
    name = "triton"
    priority = 100
    description = "Triton, one tiled pass; CUDA (CPU under TRITON_INTERPRET=1)"

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if rows_view(inputs.out) is None:
            reasons.append("out cannot be viewed as [rows, d] with unit column stride")
        return reasons

    def run(self, x: torch.Tensor, out: torch.Tensor, activation: str) -> None:
        act_and_mul_triton(x, out, activation)


class TritonSiluAndMul(_TritonGatedAct):
    family = "act.silu_mul"


class TritonGeluAndMul(_TritonGatedAct):
    family = "act.gelu_mul"
