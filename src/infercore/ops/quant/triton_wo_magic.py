"""The "magic" K step of the decode kernel: int4 codes become 16-bit operands by bit
operations alone, go to ``tl.dot`` as they are, and the offset and scale come after.

For a 4-bit code ``c`` (0..15), OR-ing it into the low mantissa bits of a 16-bit float
whose unit in the last place is 1 gives that float plus ``c`` exactly:

- bfloat16 ``0x4300`` is 128 (8 exponent bits, 7 mantissa bits: ulp 1 at 128), so
  ``c | 0x4300`` is ``128 + c``;
- float16 ``0x6400`` is 1024 (10 mantissa bits: ulp 1 at 1024), so ``c | 0x6400`` is
  ``1024 + c``.

No float instruction touches a weight value. One dot per group (a K step spanning
several groups is split per group) computes, per weight row ``n`` and activation row
``m``,

    sum_k (c - zp) x_k = dot(MAGIC16 + c, x) - (MAGIC16 + zp) * sum_k x_k

with ``zp`` the implicit zero point (8) or the group's explicit one; ``sum_k x_k`` is
taken once per group and row from the activation tile. The group's scale then multiplies
the ``[BLOCK_N, BLOCK_M]`` result.

Precision: every product ``(MAGIC16 + c) * x`` is exact in float32 (at most 11 integer
bits times an 8- or 11-bit significand), so the only rounding is that of the float32
sums. Their terms are about ``MAGIC16 / |c - zp|`` times larger than those of the
dequantized dot (rms ``|c - zp|`` is about 4.6 for uniform codes), so the cancellation
against ``(MAGIC16 + zp) * sum(x)`` costs about log2(128 / 4.6) ~ 5 bits (bfloat16) or
log2(1024 / 4.6) ~ 8 bits (float16) of float32's 24: at least 16 bits remain, more than
the 16-bit output keeps.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import below

#: Activation dtype -> (bit pattern OR-ed into a code, the float it stands for).
MAGIC16 = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0)}


@triton.jit
def magic_step(
    acc, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, mask_n, offs_m, mask_m, k0, N, K,
    stride_xm, stride_wn, group_size,
    HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr, MAGIC_OR: tl.constexpr,
    MAGIC_VALUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr, EVEN_K: tl.constexpr,
):
    """``acc [BLOCK_N, BLOCK_M] += W[offs_n, k0 : k0 + BLOCK_K] @ x[offs_m, same]^T`` for
    int4 weights and 16-bit activations, one ``tl.dot`` pair (even / odd nibbles) per
    ``GROUP`` values of K (``GROUP`` lies inside one group of scales)."""
    WIDTH: tl.constexpr = GROUP // 2  # bytes of one group in a weight row
    x_ty = x_ptr.dtype.element_ty
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_b = tl.arange(0, WIDTH)
    offs_x = tl.arange(0, GROUP)
    for sub in tl.static_range(BLOCK_K // GROUP):
        kg = k0 + sub * GROUP
        cols_b = kg // 2 + offs_b
        mask_w = mask_n[:, None] & below(cols_b, K // 2, EVEN_K)[None, :]
        raw = tl.load(rows + cols_b[None, :], mask=mask_w, other=0)
        # the OR stays on 16-bit integers (the final cast only guards against promotion)
        even = ((raw & 0xF).to(tl.int16) | MAGIC_OR).to(tl.int16).to(x_ty, bitcast=True)
        odd = ((raw >> 4).to(tl.int16) | MAGIC_OR).to(tl.int16).to(x_ty, bitcast=True)
        cols_x = kg + offs_x
        mask_x = mask_m[:, None] & below(cols_x, K, EVEN_K)[None, :]
        xr = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols_x[None, :], mask=mask_x,
                     other=0.0)
        xa, xb = tl.split(tl.reshape(xr, (BLOCK_M, WIDTH, 2)))
        dots = tl.dot(even, tl.trans(xa))
        dots = tl.dot(odd, tl.trans(xb), dots)
        x_sum = tl.sum(xr.to(tl.float32), axis=1)
        # a group of the tile past K (K not a multiple of the tile) reads the last one: its
        # activations are zero, so any finite scale and zero point will do
        g_ptrs = (tl.minimum(kg, K - 1) // group_size) * N + offs_n
        scale = tl.load(s_ptr + g_ptrs, mask=mask_n, other=0.0).to(tl.float32)
        if HAS_ZEROS:
            zero = tl.load(z_ptr + g_ptrs, mask=mask_n, other=0).to(tl.float32)
            dots -= (zero + MAGIC_VALUE)[:, None] * x_sum[None, :]
        else:
            dots -= (MAGIC_VALUE + ZERO_POINT) * x_sum[None, :]
        acc += scale[:, None] * dots
    return acc
