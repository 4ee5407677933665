"""Triton helpers of the sampling kernels: order-preserving float keys and the noise.

The noise is the one defined in :mod:`infercore.ops.sampling.philox` (same words, same
transform), so a seeded row samples the same token in every backend.
"""

from __future__ import annotations

import triton
import triton.language as tl

INT32_MIN = tl.constexpr(-(2**31))
INT32_MAX = tl.constexpr(2**31 - 1)


@triton.jit
def float_key(x):
    """int32 key of float32 ``x`` with the same order (-0.0 must be normalized to +0.0)."""
    b = x.to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def key_value(k):
    """The float32 whose :func:`float_key` is ``k``."""
    b = k ^ ((k >> 31) & 0x7FFFFFFF)
    return b.to(tl.float32, bitcast=True)


@triton.jit
def load_logits(row_ptr, cols, mask):
    """float32 logits with NaN as -inf and -0.0 as +0.0; masked lanes are -inf."""
    x = tl.load(row_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32)
    x = tl.where(x == x, x, float("-inf"))
    return tl.where(x == 0.0, 0.0, x)


@triton.jit
def philox4x32(k0, k1, counter):
    """Philox4x32-10 at counters ``(counter, 0, 0, 0)`` (uint32) under key ``(k0, k1)``."""
    c0 = counter
    c1 = counter * 0
    c2 = c1
    c3 = c1
    for _ in tl.static_range(10):
        a0 = c0
        a2 = c2
        c0 = tl.umulhi(a2, 0xCD9E8D57) ^ c1 ^ k0
        c2 = tl.umulhi(a0, 0xD2511F53) ^ c3 ^ k1
        # wrapping uint32 arithmetic (no overflow check under the interpreter)
        c1 = tl.mul(a2, 0xCD9E8D57, sanitize_overflow=False)
        c3 = tl.mul(a0, 0xD2511F53, sanitize_overflow=False)
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def gumbel(bits):
    """Gumbel variates (float32) from uint32 words; see ``philox.gumbel_from_bits``."""
    v = bits.to(tl.float32) * 2.3283064365386963e-10
    series = -(tl.log(v) + v * (0.5 + v * (0.20833333333333334 + v * 0.125)))
    direct = -tl.log(-tl.log(1.0 - v))
    return tl.where(v < 0.0078125, series, direct)


@triton.jit
def gumbel_block(k0, k1, start, BLOCK: tl.constexpr):
    """Noise of the ``BLOCK`` tokens from ``start`` (a multiple of 4): one Philox call per 4."""
    quads = (start // 4 + tl.arange(0, BLOCK // 4)).to(tl.uint32)
    r0, r1, r2, r3 = philox4x32(k0, k1, quads)
    # token start + 4 a + c takes word c of counter start / 4 + a
    bits = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))
    return gumbel(bits)


@triton.jit
def gumbel_tokens(k0, k1, ids):
    """Noise of arbitrary token ids (int32 tensor)."""
    r0, r1, r2, r3 = philox4x32(k0, k1, (ids // 4).to(tl.uint32))
    c = ids % 4
    bits = tl.where(c == 0, r0, tl.where(c == 1, r1, tl.where(c == 2, r2, r3)))
    return gumbel(bits)
