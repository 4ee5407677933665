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

The tile of one step is ``[BLOCK_N, ROWS, STEP_WORDS]`` words: one contiguous run per row,
so each thread loads ``VEC`` consecutive words, and its ``VEC``-word runs are summed in
registers (no exchange between threads inside the loop). Scales multiply those run sums;
one scale per channel multiplies the row once, after the loop. 16-bit activations load
as 32-bit pairs (one load per two values) where rows are 4-byte aligned. The next step's
words and activations load while a step computes, either in registers (``PREFETCH``) or
through shared memory (``STAGES > 1``: the loop is software-pipelined). Splits of K end
as in the other decode paths (:func:`~infercore.ops.quant.triton_dequant.finish_splits`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import below, finish_splits
from infercore.ops.quant.weights import QuantizedWeight

_SIGN_FLIP = tl.constexpr(-0x7F7F7F80)  # int32 bit pattern 0x80808080
#: Largest tile of per-word sums, BLOCK_N * ROWS * STEP_WORDS (registers of the step).
_TILE_ELEMENTS = 16384
#: Shared memory the pipelined loads may take (Hopper allows 227 KiB per program).
_SHARED_BYTES = 192 * 1024


def word_rows(qw: QuantizedWeight) -> bool:
    """Whether the packed rows of ``qw`` (any method) can be read as 32-bit words: whole
    words per row, 4-byte aligned rows, a 16-byte aligned start."""
    row_bytes = qw.qweight.stride(0) * qw.qweight.element_size()
    return (qw.in_features % (32 // qw.bits) == 0 and row_bytes % 4 == 0
            and qw.qweight.data_ptr() % 16 == 0)


def word_bits(qw: QuantizedWeight) -> int | None:
    """Bits per code when the GEMV over words serves ``qw`` (int4 or int8 rows of whole
    32-bit words, :func:`word_rows`), else None."""
    if qw.method not in ("int4", "int8") or not word_rows(qw):
        return None
    return qw.bits


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
def _step_values(x_rows, mask, VALS: tl.constexpr, PAIRS: tl.constexpr):
    """The activations of a step's words, as loaded: field ``j`` of every word in slot
    ``j`` (``j < VALS``), or with ``PAIRS`` the 32-bit word holding fields ``2p, 2p + 1``
    in slot ``p`` (``p < VALS // 2``). Unused slots repeat slot 0."""
    x0 = tl.load(x_rows, mask=mask, other=0)
    x1 = tl.load(x_rows + 1, mask=mask, other=0)
    x2 = x0
    x3 = x0
    x4 = x0
    x5 = x0
    x6 = x0
    x7 = x0
    if VALS // (2 if PAIRS else 1) > 2:
        x2 = tl.load(x_rows + 2, mask=mask, other=0)
        x3 = tl.load(x_rows + 3, mask=mask, other=0)
    if VALS // (2 if PAIRS else 1) > 4:
        x4 = tl.load(x_rows + 4, mask=mask, other=0)
        x5 = tl.load(x_rows + 5, mask=mask, other=0)
        x6 = tl.load(x_rows + 6, mask=mask, other=0)
        x7 = tl.load(x_rows + 7, mask=mask, other=0)
    return x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _pick(J: tl.constexpr, x0, x1, x2, x3, x4, x5, x6, x7):
    """Slot ``J`` of :func:`_step_values`."""
    if J == 0:
        x = x0
    elif J == 1:
        x = x1
    elif J == 2:
        x = x2
    elif J == 3:
        x = x3
    elif J == 4:
        x = x4
    elif J == 5:
        x = x5
    elif J == 6:
        x = x6
    else:
        x = x7
    return x


@triton.jit
def _value(J: tl.constexpr, x0, x1, x2, x3, x4, x5, x6, x7, PAIRS: tl.constexpr,
           BF16: tl.constexpr):
    """Field ``J`` activations of the step as float32."""
    if PAIRS:
        v = _pick(J // 2, x0, x1, x2, x3, x4, x5, x6, x7)
        if BF16:  # a bfloat16 is the top half of the float32 with the same value
            if J % 2 == 0:
                x = (v << 16).to(tl.float32, bitcast=True)
            else:
                x = (v & -65536).to(tl.float32, bitcast=True)
        else:
            if J % 2 == 0:
                h = v.to(tl.int16)
            else:
                h = (v >> 16).to(tl.int16)
            x = h.to(tl.float16, bitcast=True).to(tl.float32)
    else:
        x = _pick(J, x0, x1, x2, x3, x4, x5, x6, x7).to(tl.float32)
    return x


@triton.jit(do_not_specialize=["stride_sn"])
def word_gemv_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
    M, N, K, k_words, stride_xm, stride_wn, stride_sn, stride_om, group_size,
    words_per_split, splits, BITS: tl.constexpr, FLIP: tl.constexpr,
    HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, SUBGROUPS: tl.constexpr,
    GROUP_WORDS: tl.constexpr, VEC: tl.constexpr, EVEN_K: tl.constexpr,
    PREFETCH: tl.constexpr, PAIRS: tl.constexpr, BF16: tl.constexpr,
    PER_CHANNEL: tl.constexpr, STAGES: tl.constexpr,
):
    """``out [M, N] = x [M, K] @ dequant(W)^T (+ bias)``: the grid is (N tiles, K splits);
    each program covers ``words_per_split`` words of K (a multiple of the step)."""
    VALS: tl.constexpr = 32 // BITS
    # Products come out as u * x * 2**PRODUCT (see the module docstring).
    PRODUCT: tl.constexpr = -40 if BITS == 4 else -48
    GROUP: tl.constexpr = GROUP_WORDS * VALS  # K values under one scale in a step
    STEP: tl.constexpr = SUBGROUPS * GROUP
    STEP_WORDS: tl.constexpr = STEP // VALS
    RUNS: tl.constexpr = GROUP_WORDS // VEC  # runs of VEC words (one thread's) in a group
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, ROWS)
    mask_m = offs_m < M
    offs_g = tl.arange(0, SUBGROUPS)
    offs_r = tl.arange(0, RUNS)
    # Words of a step, [BLOCK_N, 1, STEP_WORDS], and activations, [1, ROWS, STEP_WORDS]:
    # one contiguous run per row, so each thread loads VEC consecutive words.
    word = tl.arange(0, STEP_WORDS)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None, None] * stride_wn + word[None, None, :]
    # activations per word: VALS values, or VALS // 2 pairs of 16-bit values (x as int32)
    X_WORD: tl.constexpr = VALS // 2 if PAIRS else VALS
    x_rows = x_ptr + offs_m[None, :, None] * stride_xm + (word * X_WORD)[None, None, :]
    w_mask = mask_n[:, None, None]
    x_mask = mask_m[None, :, None]
    # Scales and zeros of the step's groups, [BLOCK_N, 1, SUBGROUPS, RUNS] (one per run).
    # Their row stride is not specialized: with its contiguity unknown, triton 3.9 loads
    # them in the accumulator's layout (triton 3.6 still exchanges them per step).
    g_rows = offs_n[:, None, None, None] * stride_sn + (offs_r * 0)[None, None, None, :]
    g_mask_n = mask_n[:, None, None, None]
    acc = tl.zeros((BLOCK_N, ROWS, SUBGROUPS, RUNS), dtype=tl.float32)
    if PER_CHANNEL and HAS_ZEROS:  # one zero point per row, times 2**PRODUCT
        zero_c = tl.load(z_ptr + g_rows, mask=g_mask_n, other=0).to(tl.float32) * 2.0 ** PRODUCT
    kw_begin = pid_k * words_per_split
    kw_end = tl.minimum(kw_begin + words_per_split, k_words)
    if PREFETCH:
        valid = below(kw_begin + word, k_words, EVEN_K)[None, None, :]
        w_next = tl.load(w_rows + kw_begin, mask=w_mask & valid, other=0)
        n0, n1, n2, n3, n4, n5, n6, n7 = _step_values(x_rows + kw_begin * X_WORD,
                                                      x_mask & valid, VALS, PAIRS)
    # STAGES > 1: the loads of later steps run ahead through shared memory
    for kw in tl.range(kw_begin, kw_end, STEP_WORDS, num_stages=STAGES):
        valid = below(kw + word, k_words, EVEN_K)[None, None, :]
        if PREFETCH:  # the next step's words and activations load while this one computes
            w = w_next
            x0, x1, x2, x3, x4, x5, x6, x7 = n0, n1, n2, n3, n4, n5, n6, n7
            ahead = kw + STEP_WORDS + word
            more = (below(ahead, k_words, EVEN_K) & (ahead < kw_end))[None, None, :]
            w_next = tl.load(w_rows + (kw + STEP_WORDS), mask=w_mask & more, other=0)
            n0, n1, n2, n3, n4, n5, n6, n7 = _step_values(
                x_rows + (kw + STEP_WORDS) * X_WORD, x_mask & more, VALS, PAIRS)
        else:
            w = tl.load(w_rows + kw, mask=w_mask & valid, other=0)
            x0, x1, x2, x3, x4, x5, x6, x7 = _step_values(x_rows + kw * X_WORD,
                                                          x_mask & valid, VALS, PAIRS)
        if FLIP:
            w = w ^ _SIGN_FLIP
        # shifted copies that bring every field to bit 8, 12 or 16 (int4), 0 or 8 (int8)
        if BITS == 4:
            w_lo = w << 8
            w_hi = w >> 12
        else:
            w_lo = w
            w_hi = w >> 16
        for j in tl.static_range(VALS):
            xj = _value(j, x0, x1, x2, x3, x4, x5, x6, x7, PAIRS, BF16)
            f, xp = _term(w, w_lo, w_hi, xj, j, BITS, PRODUCT)
            if j == 0:
                x_run = xj
                sums = f * xp
            else:
                x_run += xj
                sums += f * xp
        if not PER_CHANNEL:  # scales (and zeros) of the step's groups
            k_group = kw * VALS + offs_g * GROUP
            g_ptrs = (k_group // group_size)[None, None, :, None] * N + g_rows
            g_mask = g_mask_n & below(k_group, K, EVEN_K)[None, None, :, None]
        # sums over each run of VEC words, in registers: (u - z) x 2**PRODUCT
        if PER_CHANNEL and not HAS_ZEROS:  # the zero point folds in before the sums
            sums -= (ZERO_POINT * 2.0 ** PRODUCT) * x_run
            dots = tl.sum(tl.reshape(sums, (BLOCK_N, ROWS, SUBGROUPS, RUNS, VEC)), axis=4)
        else:
            s = tl.sum(tl.reshape(sums, (BLOCK_N, ROWS, SUBGROUPS, RUNS, VEC)), axis=4)
            xs = tl.sum(tl.reshape(x_run, (1, ROWS, SUBGROUPS, RUNS, VEC)), axis=4)
            if not HAS_ZEROS:
                dots = s - (ZERO_POINT * 2.0 ** PRODUCT) * xs
            elif PER_CHANNEL:
                dots = s - zero_c * xs
            else:
                zero = tl.load(z_ptr + g_ptrs, mask=g_mask, other=0).to(tl.float32)
                dots = s - (zero * 2.0 ** PRODUCT) * xs
        if PER_CHANNEL:  # one scale per row: applied once, after the loop
            acc += dots
        else:
            scale = tl.load(s_ptr + g_ptrs, mask=g_mask, other=0.0).to(tl.float32)
            acc += dots * (scale * 2.0 ** -PRODUCT)
    acc = tl.sum(tl.sum(acc, axis=3), axis=2)
    if PER_CHANNEL:
        scale = tl.load(s_ptr + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
        acc *= scale[:, None] * 2.0 ** -PRODUCT
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
    # 16-bit activations load as int32 pairs where rows are 4-byte aligned
    pairs = x.element_size() == 2 and x.stride(0) % 2 == 0 and x.data_ptr() % 4 == 0
    rows = triton.next_power_of_2(m)
    # many activation rows: shorter steps keep the [BLOCK_N, ROWS, STEP_WORDS] sums small
    while block_n * rows * (step // vals) > _TILE_ELEMENTS and max(group // 2, vals) < step:
        group = group // 2 if group == step else group
        step //= 2
    # loads run ahead through shared memory: cap the stages so their buffers fit (one
    # step's words and activations; twice that per stage covers the pipeliner's copies)
    step_words = step // vals
    x_bytes = rows * step_words * vals * x.element_size()
    stage_bytes = 2 * (block_n * step_words * 4 + x_bytes)
    stages = max(1, min(num_stages, _SHARED_BYTES // stage_bytes))
    xa = x.view(torch.int32) if pairs else x
    word_gemv_kernel[(triton.cdiv(n, block_n), splits)](
        xa, as_words(qw), qw.scales, qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else out, out, partials, counters,
        m, n, k, k // vals, xa.stride(0), qw.qweight.stride(0) * qw.qweight.element_size() // 4,
        qw.scales.stride(1), out.stride(0), qw.group_size, k_per_split // vals, splits,
        BITS=qw.bits, FLIP=flip, HAS_ZEROS=qw.zeros is not None, ZERO_POINT=zero_point,
        HAS_BIAS=bias is not None, ROWS=rows, BLOCK_N=block_n,
        SUBGROUPS=step // group, GROUP_WORDS=group // vals, VEC=min(4, group // vals),
        EVEN_K=k % step == 0, PREFETCH=prefetch, PAIRS=pairs, BF16=x.dtype == torch.bfloat16,
        PER_CHANNEL=qw.num_groups == 1, STAGES=stages,
        num_warps=num_warps, num_stages=stages,
    )
