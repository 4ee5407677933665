"""Triton ``gemm.w8a8``: int8 x int8 ``tl.dot`` with int32 accumulation, scales in the epilogue."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.gemm.triton_kernels import tile_coords

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) by the number of rows: initial
# choices, to be tuned on the GPU. BLOCK_K = 128 int8 values is one 128-byte line per row.
_CONFIGS = ((16, 64, 128, 4, 4), (64, 128, 128, 4, 4), (128, 128, 128, 8, 3))
_GROUP_M = 8


@triton.jit
def _w8a8_kernel(
    a_ptr, b_ptr, as_ptr, bs_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_as, stride_bs,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m, pid_n = tile_coords(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_rows = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am
    b_cols = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(a_rows + offs_k[None, :] * stride_ak, mask=mask_m[:, None] & mask_k[None, :],
                    other=0)
        b = tl.load(b_cols + offs_k[:, None] * stride_bk, mask=mask_k[:, None] & mask_n[None, :],
                    other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
    a_s = tl.load(as_ptr + offs_m * stride_as, mask=mask_m, other=0.0)
    b_s = tl.load(bs_ptr + offs_n * stride_bs, mask=mask_n, other=0.0)
    out = acc.to(tl.float32) * a_s[:, None] * b_s[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def gemm_w8a8_triton(a_q, b_q, a_scale, b_scale, bias, out_dtype) -> torch.Tensor:
    m, k = a_q.shape
    n = b_q.shape[1]
    out = torch.empty((m, n), dtype=out_dtype, device=a_q.device)
    if m == 0 or n == 0:
        return out
    block_m, block_n, block_k, warps, stages = next(
        c for c in _CONFIGS if m <= c[0] or c is _CONFIGS[-1]
    )
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    _w8a8_kernel[grid](
        a_q, b_q, a_scale, b_scale, bias if bias is not None else out, out, m, n, k,
        a_q.stride(0), a_q.stride(1), b_q.stride(0), b_q.stride(1), out.stride(0),
        0 if a_scale.numel() == 1 else 1, 0 if b_scale.numel() == 1 else 1,
        HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        GROUP_M=_GROUP_M, num_warps=warps, num_stages=stages,
    )
    return out


class TritonW8A8(TritonBackend):
    family = "gemm.w8a8"
    name = "triton"
    priority = 100
    description = "Triton int8 tl.dot, int32 accumulation, fused scales and bias"

    def run(self, a_q, b_q, a_scale, b_scale, bias, out_dtype) -> torch.Tensor:
        return gemm_w8a8_triton(a_q, b_q, a_scale, b_scale, bias, out_dtype)
