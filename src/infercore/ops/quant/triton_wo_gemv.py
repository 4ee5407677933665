"""GEMV path of the decode kernel for int4 and int8 weights read as 32-bit words.

A few activation rows against the weight, no ``tl.dot``: each weight value costs what the
CUDA cores spend on it, so unpacking is cut to one AND per value. The packed row ``n``
is read as little-endian 32-bit words: word ``i`` holds the ``VALS = 32 // BITS`` codes
of ``k = VALS * i + j`` (``j = 0 .. VALS - 1``), field ``j`` at bits ``BITS * j`` (the
int4 packing, low nibble first, and plain int8 bytes agree).

A field masked in place, at bit ``AT`` below the float32 exponent (``AT + BITS <= 23``),
is the bit pattern of the subnormal float ``u * 2**(AT - 149)``. Its activation is
multiplied by ``2**(PRODUCT + 149 - AT)`` (exact: a power of two), so one fused
multiply-add per value and row accumulates ``S = sum u x * 2**PRODUCT`` with every
product a normal float, rounded once. Two shifted copies of each int4 word (one of each
int8 word) bring every field to bits 8, 12 or 16 (int4; ``PRODUCT = -40``) or 0 and 8
(int8; ``PRODUCT = -48``). Per group and row, with ``X = sum x`` and the zero point ``z``,

    sum_k (u - z) x_k = S * 2**-PRODUCT - z * X,

then the group's scale. Symmetric int8 codes are signed bytes: XOR-ing each word with
``0x80808080`` (one instruction per four values) gives ``u = q + 128`` and ``z = 128``.
The scaled activations stay finite for ``|x| < 2**27`` (float16 activations always).

The tile of one step is ``[BLOCK_N, SUBGROUPS, GROUP_WORDS]`` words (rows, groups of
scales in the step, words of one group), one contiguous run per row; activation rows
broadcast over the weight rows. Splits of K end as in the other decode paths
(:func:`~infercore.ops.quant.triton_dequant.finish_splits`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import below, finish_splits
from infercore.ops.quant.weights import QuantizedWeight

_SIGN_FLIP = tl.constexpr(-0x7F7F7F80)  # int32 bit pattern 0x80808080


def word_bits(qw: QuantizedWeight) -> int | None:
    """Bits per code when ``qw`` can be read as 32-bit words (int4 or int8, whole words
    per row, 4-byte aligned rows), else None."""
    if qw.method not in ("int4", "int8"):
        return None
    bits = qw.bits
    vals = 32 // bits
    row_bytes = qw.qweight.stride(0) * qw.qweight.element_size()
    if qw.in_features % vals or row_bytes % 4 or qw.qweight.data_ptr() % 16:
        return None
    return bits


def as_words(qw: QuantizedWeight) -> torch.Tensor:
    """The packed weight viewed as ``int32 [N, K * bits // 32]``."""
    return qw.qweight.view(torch.int32)


@triton.jit
def _field(t, AT: tl.constexpr, BITS: tl.constexpr):
    """The ``BITS``-wide field at bit ``AT`` of the words ``t`` as the float32 with the
    same bits: the subnormal ``u * 2**(AT - 149)`` (one AND; ``AT + BITS <= 23``)."""
    MASK: tl.constexpr = ((1 << BITS) - 1) << AT
    return (t & MASK).to(tl.float32, bitcast=True)


@triton.jit
def _term(w, w_lo, w_hi, xj, J: tl.constexpr, BITS: tl.constexpr, PRODUCT: tl.constexpr):
    """Field ``J`` of the words as a subnormal ``u * 2**(AT - 149)`` and the activation
    ``xj`` times ``2**(PRODUCT + 149 - AT)`` (exact), whose product is
    ``u * x * 2**PRODUCT``. int4 fields 0-1 come from ``w_lo = w << 8``, 2-4 from ``w``,
    5-7 from ``w_hi = w >> 12`` (bits 8, 12, 16); int8 bytes 0-1 from ``w``, 2-3 from
    ``w_hi = w >> 16`` (bits 0, 8)."""
    if BITS == 4:
        if J < 2:
            f = _field(w_lo, 8 + 4 * J, 4)
            x = xj * (2.0 ** (PRODUCT + 141 - 4 * J))
        elif J < 5:
            f = _field(w, 4 * J, 4)
            x = xj * (2.0 ** (PRODUCT + 149 - 4 * J))
        else:
            f = _field(w_hi, 4 * J - 12, 4)
            x = xj * (2.0 ** (PRODUCT + 161 - 4 * J))
    else:
        if J < 2:
            f = _field(w, 8 * J, 8)
            x = xj * (2.0 ** (PRODUCT + 149 - 8 * J))
        else:
            f = _field(w_hi, 8 * J - 16, 8)
            x = xj * (2.0 ** (PRODUCT + 165 - 8 * J))
    return f, x


@triton.jit
def word_gemv_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
    M, N, K, k_words, stride_xm, stride_wn, stride_om, group_size, words_per_split,
    splits, BITS: tl.constexpr, FLIP: tl.constexpr, HAS_ZEROS: tl.constexpr,
    ZERO_POINT: tl.constexpr, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, SUBGROUPS: tl.constexpr, GROUP_WORDS: tl.constexpr,
    EVEN_K: tl.constexpr, PREFETCH: tl.constexpr,
):
    """``out [M, N] = x [M, K] @ dequant(W)^T (+ bias)``: the grid is (N tiles, K splits);
    each program covers ``words_per_split`` words of K (a multiple of the step)."""
    VALS: tl.constexpr = 32 // BITS
    # Products come out as u * x * 2**PRODUCT (see the module docstring).
    PRODUCT: tl.constexpr = -40 if BITS == 4 else -48
    GROUP: tl.constexpr = GROUP_WORDS * VALS  # K values under one scale in a step
    STEP: tl.constexpr = SUBGROUPS * GROUP
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, ROWS)
    mask_m = offs_m < M
    offs_g = tl.arange(0, SUBGROUPS)
    # word index within a step: [SUBGROUPS, GROUP_WORDS]
    word = offs_g[:, None] * GROUP_WORDS + tl.arange(0, GROUP_WORDS)[None, :]
    # [BLOCK_N, 1, SUBGROUPS, GROUP_WORDS] words, [1, ROWS, SUBGROUPS, GROUP_WORDS] values
    w_rows = (w_ptr + offs_n.to(tl.int64)[:, None, None, None] * stride_wn
              + word[None, None, :, :])
    x_rows = x_ptr + offs_m[None, :, None, None] * stride_xm + (word * VALS)[None, None, :, :]
    w_mask = mask_n[:, None, None, None]
    x_mask = mask_m[None, :, None, None]
    acc = tl.zeros((BLOCK_N, ROWS), dtype=tl.float32)
    kw_begin = pid_k * words_per_split
    kw_end = tl.minimum(kw_begin + words_per_split, k_words)
    STEP_WORDS: tl.constexpr = STEP // VALS
    if PREFETCH:
        w_next = tl.load(w_rows + kw_begin,
                         mask=w_mask & below(kw_begin + word, k_words, EVEN_K)[None, None, :, :],
                         other=0)
    for kw in range(kw_begin, kw_end, STEP_WORDS):
        valid = below(kw + word, k_words, EVEN_K)[None, None, :, :]
        if PREFETCH:  # the next step's words load while this step computes
            w = w_next
            ahead = kw + STEP_WORDS + word < kw_end
            more = below(kw + STEP_WORDS + word, k_words, EVEN_K)[None, None, :, :]
            w_next = tl.load(w_rows + (kw + STEP_WORDS),
                             mask=w_mask & more & ahead[None, None, :, :], other=0)
        else:
            w = tl.load(w_rows + kw, mask=w_mask & valid, other=0)
        if FLIP:
            w = w ^ _SIGN_FLIP
        # shifted copies that bring every field to bit 8, 12 or 16 (int4), 0 or 8 (int8)
        if BITS == 4:
            w_lo = w << 8
            w_hi = w >> 12
        else:
            w_lo = w
            w_hi = w >> 16
        sums = tl.zeros((BLOCK_N, ROWS, SUBGROUPS, GROUP_WORDS), dtype=tl.float32)
        x_sums = tl.zeros((1, ROWS, SUBGROUPS, GROUP_WORDS), dtype=tl.float32)
        for j in tl.static_range(VALS):
            xj = tl.load(x_rows + (kw * VALS + j), mask=x_mask & valid, other=0.0)
            xj = xj.to(tl.float32)
            x_sums += xj
            f, xj = _term(w, w_lo, w_hi, xj, j, BITS, PRODUCT)
            sums += f * xj
        s = tl.sum(sums, axis=3)  # [BLOCK_N, ROWS, SUBGROUPS]
        xs = tl.sum(x_sums, axis=3)  # [1, ROWS, SUBGROUPS]
        k_group = kw * VALS + offs_g * GROUP
        g_ptrs = (k_group // group_size)[None, :] * N + offs_n[:, None]
        g_mask = mask_n[:, None] & below(k_group, K, EVEN_K)[None, :]
        scale = tl.load(s_ptr + g_ptrs, mask=g_mask, other=0.0).to(tl.float32)
        if HAS_ZEROS:
            zero = tl.load(z_ptr + g_ptrs, mask=g_mask, other=0).to(tl.float32)
            dots = s * (2.0 ** -PRODUCT) - zero[:, None, :] * xs
        else:
            dots = s * (2.0 ** -PRODUCT) - ZERO_POINT * xs
        acc += tl.sum(dots * scale[:, None, :], axis=2)
    finish_splits(acc, bias_ptr, out_ptr, part_ptr, count_ptr, offs_n, offs_m, mask_n, mask_m,
                  M, N, stride_om, pid_n, pid_k, splits, HAS_BIAS)


def launch_word_gemv(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                     out: torch.Tensor, partials: torch.Tensor, counters: torch.Tensor,
                     k_per_split: int, splits: int, *, block_n: int, step: int, group: int,
                     num_warps: int, num_stages: int, prefetch: bool) -> None:
    """Launch :func:`word_gemv_kernel` over ``(N tiles, splits)`` programs.

    ``step`` (K values per loop step) and ``group`` (values under one scale within it)
    are powers of two with ``32 // bits <= group <= step``; ``k_per_split`` is a multiple
    of ``step``; ``partials`` (float32 ``[splits, M, N]``) and ``counters`` (zeroed int32,
    one per N tile) are used when ``splits > 1``.
    """
    m, k = x.shape
    n = qw.out_features
    vals = 32 // qw.bits
    flip = qw.method == "int8" and qw.zeros is None  # signed bytes -> u = q + 128
    zero_point = 128 if flip else qw.zero_point
    word_gemv_kernel[(triton.cdiv(n, block_n), splits)](
        x, as_words(qw), qw.scales, qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else out, out, partials, counters,
        m, n, k, k // vals, x.stride(0), qw.qweight.stride(0) * qw.qweight.element_size() // 4,
        out.stride(0), qw.group_size, k_per_split // vals, splits,
        BITS=qw.bits, FLIP=flip, HAS_ZEROS=qw.zeros is not None, ZERO_POINT=zero_point,
        HAS_BIAS=bias is not None, ROWS=triton.next_power_of_2(m), BLOCK_N=block_n,
        SUBGROUPS=step // group, GROUP_WORDS=group // vals, EVEN_K=k % step == 0, PREFETCH=prefetch,
        num_warps=num_warps, num_stages=num_stages,
    )
