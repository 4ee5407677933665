"""Weight-only GEMM for many rows (prefill): tiled dot with dequantization in the K loop.

Each program owns a ``[BLOCK_M, BLOCK_N]`` output tile and walks all of K, dequantizing
one weight tile per step; programs sweep the output in groups of ``GROUP_M`` row tiles so
the weight tiles they share stay in L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.gemm.triton_kernels import tile_coords
from infercore.ops.quant.triton_dequant import (
    block_k,
    dequant_tile,
    dot_precision,
    format_meta,
    store_transposed,
    weight_bits,
)
from infercore.ops.quant.weights import QuantizedWeight

# Tiles: initial choices, to be tuned on the GPU.
_BLOCK_N = 128
_BLOCK_K = 64
_GROUP_M = 8
_NUM_STAGES = 3


@triton.jit
def _tiled_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, group_size,
    FORMAT: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m, pid_n = tile_coords(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[None, :] * stride_xm
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        xt = tl.load(x_rows + offs_k[:, None], mask=mask_m[None, :] & (offs_k[:, None] < K),
                     other=0.0)
        w = dequant_tile(w_ptr, s_ptr, z_ptr, offs_n, mask_n, k0, K, N, stride_wn, group_size,
                         FORMAT, HAS_ZEROS, ZERO_POINT, BLOCK_K)
        acc = tl.dot(w.to(xt.dtype), xt, acc, input_precision=DOT_PRECISION)
    store_transposed(acc, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m, stride_om, HAS_BIAS)


def tiled_linear(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                 out: torch.Tensor) -> None:
    """``out [M, N] = x [M, K] @ dequant(qw)^T + bias``; x has unit column stride."""
    m, k = x.shape
    n = qw.out_features
    block_m = 128 if m >= 256 else 64
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, _BLOCK_N),)
    zeros = qw.zeros if qw.zeros is not None else qw.scales
    _tiled_kernel[grid](
        x, weight_bits(qw), qw.scales, zeros, bias if bias is not None else out, out,
        m, n, k, x.stride(0), qw.qweight.stride(0), out.stride(0), qw.group_size,
        **format_meta(qw), HAS_BIAS=bias is not None, DOT_PRECISION=dot_precision(x.dtype),
        BLOCK_M=block_m, BLOCK_N=_BLOCK_N, BLOCK_K=block_k(qw, _BLOCK_K), GROUP_M=_GROUP_M,
        num_warps=8 if block_m == 128 else 4, num_stages=_NUM_STAGES,
    )
