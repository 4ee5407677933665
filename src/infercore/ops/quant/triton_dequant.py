"""Triton building blocks of the weight-only GEMMs: tile dequantization and the epilogue.

Both kernels compute ``out^T = W @ x^T`` ("swap AB"): the dequantized weight tile
``[BLOCK_N, BLOCK_K]`` is the left operand of ``tl.dot``, so it stays in registers in the
layout it was unpacked in, and the short activation side ``x^T [BLOCK_K, BLOCK_M]`` is
the right operand. A K tile never straddles two groups of scales (``BLOCK_K`` divides
``group_size``, or there is a single group), so each tile loads one row of scales.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from infercore.ops.quant.weights import QuantizedWeight
from infercore.ops.splitk import split_arrive, split_sum

# Weight formats, as the FORMAT constexpr of the kernels.
FORMAT_BYTE = 0  # int8 / uint8, one value per byte
FORMAT_INT4 = 1  # two values per byte, low nibble first
FORMAT_FP8 = 2  # float8_e4m3fn, passed as its uint8 bit pattern

# Float32 1.5 * 2**23: adding a small integer to its bit pattern gives that integer in
# the mantissa, exactly (|v| < 2**22), so int -> float costs an integer add instead of a
# conversion instruction (a fraction of the ALU rate on NVIDIA GPUs).
_MAGIC_BITS = tl.constexpr(0x4B400000)
_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def below(offs, bound, EVEN_K: tl.constexpr):
    """``offs < bound``; all true (a constant: loads stay vectorized) when K is a multiple
    of the tile."""
    mask = offs < bound
    if EVEN_K:
        mask = tl.full(offs.shape, 1, tl.int1)
    return mask


@triton.jit
def dequant_tile(
    w_ptr, s_ptr, z_ptr, offs_n, mask_n, k0, K, N, stride_wn, group_size,
    FORMAT: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Weight rows ``offs_n``, columns ``k0 .. k0 + BLOCK_K`` as float32, scaled.

    Columns at or past K come out finite (their activations are loaded as zero).
    """
    g = k0 // group_size
    scale = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    if FORMAT == 1:
        offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        mask = mask_n[:, None] & (offs_b[None, :] < K // 2)
        packed = tl.load(rows + offs_b[None, :], mask=mask, other=0)
        raw = tl.interleave(packed & 0xF, packed >> 4)
    else:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_n[:, None] & (offs_k[None, :] < K)
        raw = tl.load(rows + offs_k[None, :], mask=mask, other=0)
    if FORMAT == 2:
        w = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        if HAS_ZEROS:
            zero = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0).to(tl.float32)
            base = zero[:, None] + _MAGIC
        else:
            base = _MAGIC + ZERO_POINT
        w = (raw.to(tl.int32) + _MAGIC_BITS).to(tl.float32, bitcast=True) - base
    return w * scale[:, None]


@triton.jit
def store_transposed(
    acc, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m, stride_om, HAS_BIAS: tl.constexpr
):
    """Add the bias to ``acc [BLOCK_N, BLOCK_M]`` and store it into ``out [M, N]``."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    ptrs = out_ptr + offs_m.to(tl.int64)[None, :] * stride_om + offs_n[:, None]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_m[None, :])


@triton.jit
def finish_splits(
    acc, bias_ptr, out_ptr, part_ptr, count_ptr, offs_n, offs_m, mask_n, mask_m, M, N,
    stride_om, pid_n, pid_k, splits, HAS_BIAS: tl.constexpr,
):
    """End of a split-K decode program: store ``acc [BLOCK_N, BLOCK_M]`` (one split), or
    add it to the float32 partials ``[splits, M, N]`` (:mod:`infercore.ops.splitk`); the
    last split of an N tile to arrive sums them in a fixed order, adds the bias and writes
    the output."""
    if splits == 1:
        store_transposed(acc, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m, stride_om,
                         HAS_BIAS)
    else:
        tile = offs_m[None, :] * N + offs_n[:, None]
        mask = mask_n[:, None] & mask_m[None, :]
        if split_arrive(part_ptr, count_ptr, pid_n, acc, tile, mask, pid_k, M * N) == splits - 1:
            total = split_sum(part_ptr, count_ptr, pid_n, tile, mask, splits, M * N)
            store_transposed(total, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m,
                             stride_om, HAS_BIAS)


def weight_bits(qw: QuantizedWeight) -> torch.Tensor:
    """The packed weight as the kernels read it (fp8 as raw bytes: masked loads fill 0)."""
    return qw.qweight.view(torch.uint8) if qw.method == "fp8" else qw.qweight


def format_meta(qw: QuantizedWeight) -> dict:
    """Constexprs describing the weight format, shared by both kernels."""
    fmt = {"int8": FORMAT_BYTE, "int4": FORMAT_INT4, "fp8": FORMAT_FP8}[qw.method]
    return {"FORMAT": fmt, "HAS_ZEROS": qw.zeros is not None, "ZERO_POINT": qw.zero_point}


def block_k(qw: QuantizedWeight, cap: int) -> int:
    """Largest power-of-two K tile <= ``cap`` that keeps every tile inside one group."""
    if qw.num_groups == 1:
        return max(16, min(cap, triton.next_power_of_2(qw.in_features)))
    largest_pow2_divisor = qw.group_size & -qw.group_size
    return min(cap, largest_pow2_divisor)


def dot_precision(dtype: torch.dtype) -> str:
    """Float32 activations get full-precision dots (tf32 would miss the reference bounds)."""
    return "ieee" if dtype == torch.float32 else "tf32"


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 4 under the interpreter, so that split-K
    paths run in CPU tests."""
    if device.type != "cuda":
        return 4
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
