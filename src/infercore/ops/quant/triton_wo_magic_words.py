"""The magic path over 32-bit words: int4, int8 and fp8 codes become 16-bit ``tl.dot``
operands by integer bit operations, in the register order the tensor cores read.

A packed int4 row read as little-endian 32-bit words holds ``k = 8 i + j`` in nibble
``j`` (bits ``4 j``) of word ``i``. One AND-OR (a single ``lop3``) of the word shifted
right by ``4 s`` (``s = 0 .. 3``),

    p_s = ((w >> 4 s) & 0x000F000F) | MAGIC2,

puts nibble ``s`` in the low half and nibble ``s + 4`` in the high half, each OR-ed into
the magic 16-bit float (``MAGIC2`` is the pattern twice: bfloat16 ``0x4300`` = 128,
float16 ``0x6400`` = 1024, whose unit in the last place is 1), so each half is exactly
``MAGIC + c`` (:mod:`~infercore.ops.quant.triton_wo_magic`). The 32-bit ``p_s`` is the
pair of operands the MMA wants in one register: the dot's K order is chosen so that the
pair a thread holds is such a ``(s, s + 4)`` pair, and the activations are permuted to
the same order when they are loaded (a permutation inside each block of 32 values, see
:func:`_dot_order`). A word then costs four ``lop3`` and three shifts for eight values,
and no float instruction multiplies a weight value.

Symmetric codes (implicit zero point ``zp``) lose ``MAGIC + zp`` in the same PTX, one
packed 16-bit subtraction per pair (exact: small integers), so the operands are
``c - zp`` and the dot is the group's sum as it stands. With explicit zero points the
operands stay ``MAGIC + c`` and, per group and activation row,

    sum_k (c - z) x_k = dot(MAGIC + c, x) - (MAGIC + z) * sum_k x_k

(every product exact in float32; the cancellation costs about 5 bits of float32 for
bfloat16 and 8 for float16, see :mod:`~infercore.ops.quant.triton_wo_magic`). Each step
(one group, or part of one) is scaled after its dot; one scale per channel is applied
once, after the loop, and its dots accumulate in the tensor cores' registers.

int8 words (``k = 4 i + j`` in byte ``j`` of word ``i``) go the same way, two operands a
word-pair: with ``l`` the low 7 bits of a byte and ``h`` its top bit, one ``lop3`` gives
``MAGIC + l`` for bytes 0 and 2 (``(w & 0x007F007F) | MAGIC2``), another ``MAGIC + 128 h``
(``(w & 0x00800080) | MAGIC2``: bit 7 of a byte is the 128 of both magic floats), and one
packed subtraction leaves ``l - 128 h``, the signed byte itself (symmetric codes); with
the top bit inverted (``~w`` in the second ``lop3``) it leaves ``u - 128`` for unsigned
codes, and ``(z - 128) * sum_k x_k`` comes off per group as above. Bytes 1 and 3 do the
same after one shift: seven instructions for four values, each result exact (integers
of at most 9 bits). A word is then the thread's two registers of a 16-value block
(bytes 0 and 2, bytes 1 and 3), and the activations are permuted to match inside each
block of 16 (:func:`_dot_order8`).

fp8 (e4m3) words take the same order with no subtraction: moving a byte's sign to bit 15
and its 7 exponent and mantissa bits to the top of the 16-bit float's exponent and
mantissa (``(w << 8) & 0x80008000 | (w << 4) & 0x07F007F0`` for bytes 0 and 2 of a
bfloat16 pair) gives the e4m3 value times ``2**-120`` exactly (bfloat16; ``2**-8`` for
float16, 7-bit shift), subnormals included: the exponent fields differ by a constant
bias. bfloat16 activations are multiplied by ``2**64`` (exact) so the products stay far
from float32's subnormals, and ``2**56`` comes back with the scale (activations of
magnitude ``2**64`` and above overflow; float16 activations need no factor).

The words travel global -> shared memory -> registers (``STAGES`` deep, ``cp.async``)
and are unpacked in the layout of the dot's left operand: no value is exchanged between
threads. The next step's scales load while a step computes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import below, finish_splits
from infercore.ops.quant.weights import QuantizedWeight
from infercore.registry import triton_interpret

#: Activation dtype -> (16-bit magic pattern twice, the float it stands for).
MAGIC_PAIRS = {torch.bfloat16: (0x43004300, 128.0), torch.float16: (0x64006400, 1024.0)}
#: Largest K step, in words (512 int4 or 256 int8 values).
MAX_STEP_WORDS = 64
#: The bits of a byte below its top one, twice (bytes 0 and 2 of a word), and its top bit.
_LOW7 = tl.constexpr(0x007F007F)
_TOP = tl.constexpr(0x00800080)


def _pairs_asm(magic2: int, offset2: int | None, bf16: bool) -> str:
    """PTX of the four ``p_s`` of a word: one ``lop3`` each (``(a & b) | c``, LUT 0xEA;
    ptxas fuses an AND and an OR of two constants into one ``lop3`` only when written as
    one) and three shifts. With ``offset2`` (the 16-bit ``MAGIC + zp`` twice) each pair
    then loses it in one packed subtraction, exact: the halves become ``c - zp``."""
    lop = f"0x000F000F, {magic2:#010x}, 0xea"
    sub = "sub.rn.bf16x2" if bf16 else "sub.rn.f16x2"
    body = []
    for s in range(4):
        src = "$4" if s == 0 else "t"
        if s:
            body.append(f"shr.u32 t, $4, {4 * s};")
        if offset2 is None:
            body.append(f"lop3.b32 ${s}, {src}, {lop};")
        else:
            body.append(f"lop3.b32 u, {src}, {lop}; {sub} ${s}, u, z;")
    head = "{ .reg .b32 t, u, z; "
    if offset2 is not None:
        head += f"mov.b32 z, {offset2:#010x}; "
    return head + " ".join(body) + " }"


#: Activation dtype -> (left shift of bytes 0 and 2, right shift of bytes 1 and 3, mask of
#: the moved exponent and mantissa bits, activation factor, output factor) of fp8 pairs.
FP8_PAIRS = {
    torch.bfloat16: (4, 4, 0x07F007F0, 2.0**64, 2.0**56),
    torch.float16: (7, 1, 0x3F803F80, 1.0, 2.0**8),
}
_SIGNS = tl.constexpr(-0x7FFF8000)  # int32 bit pattern 0x80008000


def _fp8_pairs_asm(dtype: torch.dtype) -> str:
    """PTX of the two operand pairs of an fp8 word (``$0``: bytes 0 and 2, ``$1``: bytes
    1 and 3), each byte's value times ``2**-120`` (bfloat16) or ``2**-8`` (float16):
    its sign to bit 15 of the half, its other 7 bits shifted to the half's top exponent
    and mantissa bits. LUT 0xEA is ``(a & b) | c``."""
    left, right, low, _, _ = FP8_PAIRS[dtype]
    return ("{ .reg .b32 s, t; "
            f"shl.b32 s, $2, 8; shl.b32 t, $2, {left}; and.b32 t, t, {low:#010x}; "
            "lop3.b32 $0, s, 0x80008000, t, 0xea; "
            f"shr.u32 t, $2, {right}; and.b32 t, t, {low:#010x}; "
            "lop3.b32 $1, $2, 0x80008000, t, 0xea; }")


def _byte_pairs_asm(magic2: int, signed: bool, bf16: bool) -> str:
    """PTX of the two operand pairs of an int8 word, exact: bytes 0 and 2 (``$0``) and
    bytes 1 and 3 (``$1``) as ``MAGIC + l`` minus ``MAGIC + 128 h`` (``signed``: the byte
    itself), or minus ``MAGIC + 128 (1 - h)`` (unsigned: ``u - 128``). LUT 0xEA is
    ``(a & b) | c``, 0xAE ``(~a & b) | c``."""
    top = "0xea" if signed else "0xae"
    sub = "sub.rn.bf16x2" if bf16 else "sub.rn.f16x2"
    body = []
    for r in range(2):
        src = "$2" if r == 0 else "t"
        if r:
            body.append("shr.u32 t, $2, 8;")
        body.append(f"lop3.b32 u, {src}, {_LOW7.value:#010x}, {magic2:#010x}, 0xea; "
                    f"lop3.b32 v, {src}, {_TOP.value:#010x}, {magic2:#010x}, {top}; "
                    f"{sub} ${r}, u, v;")
    return "{ .reg .b32 t, u, v; " + " ".join(body) + " }"


@triton.jit
def _magic_pairs(w, MAGIC2: tl.constexpr, PAIRS_ASM: tl.constexpr):
    """``p_s = ((w >> 4 s) & 0x000F000F) | MAGIC2`` for ``s = 0 .. 3``."""
    if PAIRS_ASM != "":
        p0, p1, p2, p3 = tl.inline_asm_elementwise(
            PAIRS_ASM, "=r,=r,=r,=r,r", [w],
            dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        p0 = (w & 0x000F000F) | MAGIC2
        p1 = ((w >> 4) & 0x000F000F) | MAGIC2
        p2 = ((w >> 8) & 0x000F000F) | MAGIC2
        p3 = ((w >> 12) & 0x000F000F) | MAGIC2
    return p0, p1, p2, p3


@triton.jit
def _halves(p, x_ty: tl.constexpr):
    """The low and high 16-bit halves of int32 ``p`` as ``x_ty``."""
    lo = p.to(tl.int16).to(x_ty, bitcast=True)
    hi = (p >> 16).to(tl.int16).to(x_ty, bitcast=True)
    return lo, hi


@triton.jit
def _byte_operand(w, x_ty: tl.constexpr, MAGIC2: tl.constexpr, SIGNED: tl.constexpr,
                  PAIRS_ASM: tl.constexpr, BLOCK_N: tl.constexpr, STEP_WORDS: tl.constexpr):
    """The left operand of int8 words ``w [BLOCK_N, STEP_WORDS]``: the signed bytes
    (``SIGNED``) or ``u - 128``, in the dot's K order (:func:`_dot_order8`)."""
    if PAIRS_ASM != "":
        p0, p1 = tl.inline_asm_elementwise(
            PAIRS_ASM, "=r,=r,r", [w], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
        a = _dot_order8(p0, p1, x_ty, BLOCK_N, STEP_WORDS)
    else:  # the same arithmetic in Triton: MAGIC + l minus MAGIC + 128 h (or 128 (1 - h))
        top = w if SIGNED else ~w
        low = _dot_order8((w & _LOW7) | MAGIC2, ((w >> 8) & _LOW7) | MAGIC2, x_ty, BLOCK_N,
                          STEP_WORDS)
        high = _dot_order8((top & _TOP) | MAGIC2, ((top >> 8) & _TOP) | MAGIC2, x_ty,
                           BLOCK_N, STEP_WORDS)
        a = (low.to(tl.float32) - high.to(tl.float32)).to(x_ty)
    return a


@triton.jit
def _fp8_operand(w, x_ty: tl.constexpr, LEFT: tl.constexpr, RIGHT: tl.constexpr,
                 LOW: tl.constexpr, PAIRS_ASM: tl.constexpr, BLOCK_N: tl.constexpr,
                 STEP_WORDS: tl.constexpr):
    """The left operand of fp8 words ``w [BLOCK_N, STEP_WORDS]``: each value times a
    power of two (:data:`FP8_PAIRS`), in the dot's K order (:func:`_dot_order8`)."""
    if PAIRS_ASM != "":
        p0, p1 = tl.inline_asm_elementwise(
            PAIRS_ASM, "=r,=r,r", [w], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
    else:  # the same bit moves in Triton (the right shift's sign bits are masked off)
        p0 = ((w << 8) & _SIGNS) | ((w << LEFT) & LOW)
        p1 = (w & _SIGNS) | ((w >> RIGHT) & LOW)
    return _dot_order8(p0, p1, x_ty, BLOCK_N, STEP_WORDS)


@triton.jit
def _dot_order8(p0, p1, x_ty: tl.constexpr, BLOCK_N: tl.constexpr, STEP_WORDS: tl.constexpr):
    """The ``[BLOCK_N, 4 * STEP_WORDS]`` left operand from int8 words' pairs ``p0``
    (bytes 0, 2) and ``p1`` (bytes 1, 3), ``[BLOCK_N, STEP_WORDS]`` each, in the dot's K
    order.

    Inside a block of 4 words (16 values, index ``t``), byte ``r + 2 h`` of word
    ``4 t + c`` sits at ``16 t + 8 r + 2 c + h``: the 16-bit MMA operand fragment gives a
    thread the pairs ``c`` and ``c + 4`` of a block, which are then ``p0`` and ``p1`` of
    word ``4 t + c``.
    """
    T: tl.constexpr = STEP_WORDS // 4
    q0 = tl.reshape(p0, (BLOCK_N, T, 4))
    q1 = tl.reshape(p1, (BLOCK_N, T, 4))
    words = tl.permute(tl.join(q0, q1), (0, 1, 3, 2))  # [BN, T, r, c]
    lo, hi = _halves(words, x_ty)
    return tl.reshape(tl.join(lo, hi), (BLOCK_N, 4 * STEP_WORDS))


@triton.jit
def _activations_in_dot_order8(x, BLOCK_M: tl.constexpr, STEP_WORDS: tl.constexpr):
    """``x [BLOCK_M, 4 * STEP_WORDS]`` (natural K order) in the order of
    :func:`_dot_order8`: value ``16 t + 4 c + 2 h + r`` moves to ``16 t + 8 r + 2 c + h``."""
    T: tl.constexpr = STEP_WORDS // 4
    x5 = tl.reshape(x, (BLOCK_M, T, 4, 2, 2))  # [M, t, c, h, r]
    return tl.reshape(tl.permute(x5, (0, 1, 4, 2, 3)), (BLOCK_M, 4 * STEP_WORDS))


@triton.jit
def _dot_order(p0, p1, p2, p3, x_ty: tl.constexpr, BLOCK_N: tl.constexpr,
               STEP_WORDS: tl.constexpr):
    """The ``[BLOCK_N, 8 * STEP_WORDS]`` left operand from the ``p_s [BLOCK_N,
    STEP_WORDS]``, in the dot's K order.

    Blocks of 4 words (32 values, index ``t``) stay in place; inside one, the value of
    word ``4 t + c``, shift ``s = 2 b + r`` and half ``h`` (nibble ``s + 4 h``) sits at
    ``32 t + 16 b + 8 r + 2 c + h``. The 16-bit MMA operand fragment gives a thread the
    pairs ``c`` and ``c + 4`` of each 16-value block, which is then the whole word
    ``4 t + c``: its four ``p_s`` are the thread's four registers of that block pair.
    """
    T: tl.constexpr = STEP_WORDS // 4
    q0 = tl.reshape(p0, (BLOCK_N, T, 4))
    q1 = tl.reshape(p1, (BLOCK_N, T, 4))
    q2 = tl.reshape(p2, (BLOCK_N, T, 4))
    q3 = tl.reshape(p3, (BLOCK_N, T, 4))
    low = tl.permute(tl.join(q0, q1), (0, 1, 3, 2))  # [BN, T, r, c], b = 0
    high = tl.permute(tl.join(q2, q3), (0, 1, 3, 2))  # b = 1
    words = tl.permute(tl.join(low, high), (0, 1, 4, 2, 3))  # [BN, T, b, r, c]
    lo, hi = _halves(words, x_ty)
    return tl.reshape(tl.join(lo, hi), (BLOCK_N, 8 * STEP_WORDS))


@triton.jit
def _activations_in_dot_order(x, BLOCK_M: tl.constexpr, STEP_WORDS: tl.constexpr):
    """``x [BLOCK_M, 8 * STEP_WORDS]`` (natural K order) in the order of
    :func:`_dot_order`: value ``32 t + 8 c + 4 h + 2 b + r`` moves to
    ``32 t + 16 b + 8 r + 2 c + h``."""
    T: tl.constexpr = STEP_WORDS // 4
    x6 = tl.reshape(x, (BLOCK_M, T, 4, 2, 2, 2))  # [M, t, c, h, b, r]
    return tl.reshape(tl.permute(x6, (0, 1, 4, 5, 2, 3)), (BLOCK_M, 8 * STEP_WORDS))


@triton.jit
def _group_params(s_ptr, z_ptr, kw, offs_n, mask_n, N, stride_sn, GROUP_SIZE: tl.constexpr,
                  HAS_ZEROS: tl.constexpr, VALS: tl.constexpr):
    """Scales and zero points (float32 ``[BLOCK_N]``) of the group holding word ``kw``
    (``VALS`` values a word); without zero points the second is the scale again
    (unused)."""
    g_ptrs = ((kw * VALS) // GROUP_SIZE) * N + offs_n * stride_sn
    scale = tl.load(s_ptr + g_ptrs, mask=mask_n, other=0.0).to(tl.float32)
    zero = scale
    if HAS_ZEROS:
        zero = tl.load(z_ptr + g_ptrs, mask=mask_n, other=0).to(tl.float32)
    return scale, zero


@triton.jit(do_not_specialize=["stride_sn"])
def magic_words_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
    M, N, K, k_words, stride_xm, stride_wn, stride_sn, stride_om, words_per_split, splits,
    BITS: tl.constexpr, FP8: tl.constexpr, GROUP_SIZE: tl.constexpr,
    HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr, HAS_BIAS: tl.constexpr,
    MAGIC2: tl.constexpr, MAGIC_VALUE: tl.constexpr, OPERAND_OFFSET: tl.constexpr,
    FP8_LEFT: tl.constexpr, FP8_RIGHT: tl.constexpr, FP8_LOW: tl.constexpr,
    X_FACTOR: tl.constexpr, OUT_FACTOR: tl.constexpr, PAIRS_ASM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STEP_WORDS: tl.constexpr,
    PER_CHANNEL: tl.constexpr, EVEN_K: tl.constexpr, STAGES: tl.constexpr,
):
    """``out [M, N] = x [M, K] @ dequant(W)^T (+ bias)`` for int4, int8 or fp8 (``FP8``)
    ``W`` of ``BITS`` bits read as words; the grid is (N tiles, K splits), each program
    covering ``words_per_split`` words of K (a multiple of ``STEP_WORDS``; a step lies
    inside one group of scales). With zero points the operands are
    ``code + OPERAND_OFFSET``; fp8 operands are the values times ``1 / (X_FACTOR *
    OUT_FACTOR)``, the activations are multiplied by ``X_FACTOR`` and the sums by
    ``OUT_FACTOR``."""
    VALS: tl.constexpr = 32 // BITS
    STEP: tl.constexpr = STEP_WORDS * VALS
    # symmetric codes: the operands are c - zp exactly; zero points per group and row are
    # taken off the dot's result instead, with the activations' sums
    EXACT: tl.constexpr = not HAS_ZEROS
    x_ty: tl.constexpr = x_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    word = tl.arange(0, STEP_WORDS)
    offs_k = tl.arange(0, STEP)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn + word[None, :]
    x_rows = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    x_total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    kw_begin = pid_k * words_per_split
    kw_end = tl.minimum(kw_begin + words_per_split, k_words)
    if not PER_CHANNEL:  # the first step's scales (and zeros); later ones load a step ahead
        scale_next, zero_next = _group_params(s_ptr, z_ptr, kw_begin, offs_n, mask_n, N,
                                              stride_sn, GROUP_SIZE, HAS_ZEROS, VALS)
    for kw in tl.range(kw_begin, kw_end, STEP_WORDS, num_stages=STAGES):
        valid = below(kw + word, k_words, EVEN_K)
        w = tl.load(w_rows + kw, mask=mask_n[:, None] & valid[None, :], other=0)
        if BITS == 4:
            p0, p1, p2, p3 = _magic_pairs(w, MAGIC2, PAIRS_ASM)
            a = _dot_order(p0, p1, p2, p3, x_ty, BLOCK_N, STEP_WORDS)
            if EXACT and PAIRS_ASM == "":  # (the PTX takes MAGIC + zp off by itself)
                a = (a.to(tl.float32) - (MAGIC_VALUE + ZERO_POINT)).to(x_ty)
        elif FP8:
            a = _fp8_operand(w, x_ty, FP8_LEFT, FP8_RIGHT, FP8_LOW, PAIRS_ASM, BLOCK_N,
                             STEP_WORDS)
        else:
            a = _byte_operand(w, x_ty, MAGIC2, EXACT, PAIRS_ASM, BLOCK_N, STEP_WORDS)
        # words past K unpack to finite values, times activations loaded as zero
        x_mask = mask_m[:, None] & below(kw * VALS + offs_k, K, EVEN_K)[None, :]
        x = tl.load(x_rows + kw * VALS, mask=x_mask, other=0.0)
        if X_FACTOR != 1.0:  # exact: a power of two
            x = (x.to(tl.float32) * X_FACTOR).to(x_ty)
        if BITS == 4:
            xt = tl.trans(_activations_in_dot_order(x, BLOCK_M, STEP_WORDS))
        else:
            xt = tl.trans(_activations_in_dot_order8(x, BLOCK_M, STEP_WORDS))
        if PER_CHANNEL:  # (the zero point and) the scale come after the loop
            acc = tl.dot(a, xt, acc)
            if not EXACT:
                x_total += tl.sum(x.to(tl.float32), axis=1)
        else:
            # the step's scales were loaded during the previous one: a load issued here
            # would stall the step for a whole trip to memory
            scale = scale_next
            zero = zero_next
            ahead = tl.minimum(kw + STEP_WORDS, kw_end - 1)  # the last step reloads its own
            scale_next, zero_next = _group_params(s_ptr, z_ptr, ahead, offs_n, mask_n, N,
                                                  stride_sn, GROUP_SIZE, HAS_ZEROS, VALS)
            dots = tl.dot(a, xt)
            if not EXACT:
                x_sum = tl.sum(x.to(tl.float32), axis=1)
                dots -= (zero + OPERAND_OFFSET)[:, None] * x_sum[None, :]
            acc += scale[:, None] * dots
    if PER_CHANNEL:
        scale, zero = _group_params(s_ptr, z_ptr, 0, offs_n, mask_n, N, stride_sn, GROUP_SIZE,
                                    HAS_ZEROS, VALS)
        if not EXACT:
            acc -= (zero + OPERAND_OFFSET)[:, None] * x_total[None, :]
        acc *= scale[:, None]
    if OUT_FACTOR != 1.0:
        acc *= OUT_FACTOR
    finish_splits(acc, bias_ptr, out_ptr, part_ptr, count_ptr, offs_n, offs_m, mask_n, mask_m,
                  M, N, stride_om, pid_n, pid_k, splits, HAS_BIAS)


def step_words(qw: QuantizedWeight, cap: int = MAX_STEP_WORDS) -> int | None:
    """Words per K step: a power of two from 4 to ``cap`` that divides the group's words
    (one group per channel: ``cap``), or None when a group is not a whole number of
    4-word blocks (32 int4 or 16 8-bit values)."""
    if qw.num_groups == 1:
        return cap
    vals = 32 // qw.bits
    if qw.group_size % (4 * vals):
        return None
    words = qw.group_size // vals
    return min(cap, words & -words)


def launch_magic_words(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                       out: torch.Tensor, partials: torch.Tensor, counters: torch.Tensor,
                       words_per_split: int, splits: int, *, block_n: int, step: int,
                       num_warps: int, num_stages: int) -> None:
    """Launch :func:`magic_words_kernel` over ``(N tiles, splits)`` programs.

    ``x`` is bfloat16 or float16 ``[M, K]``, M <= 64; ``qw`` int4, int8 or fp8 with rows
    of whole 32-bit words (:func:`~infercore.ops.quant.triton_wo_gemv.word_rows`); ``step``
    words per K step from :func:`step_words`; ``words_per_split`` a multiple of it.
    ``partials`` (float32 ``[splits, M, N]``) and ``counters`` (zeroed int32, one per N
    tile) are used when ``splits > 1``.
    """
    m, k = x.shape
    n = qw.out_features
    bits = qw.bits
    magic2, magic_value = MAGIC_PAIRS[x.dtype]
    bf16 = x.dtype == torch.bfloat16
    symmetric = qw.zeros is None
    fp8 = qw.method == "fp8"
    left, right, low, x_factor, out_factor = FP8_PAIRS[x.dtype] if fp8 else (0, 0, 0, 1.0, 1.0)
    if triton_interpret():
        pairs_asm = ""
    elif fp8:
        pairs_asm = _fp8_pairs_asm(x.dtype)
    elif bits == 4:
        # MAGIC + zp as 16-bit pairs: (MAGIC | zp) twice, zp < 16 (symmetric codes only)
        offset2 = magic2 | qw.zero_point * 0x10001 if symmetric else None
        pairs_asm = _pairs_asm(magic2, offset2, bf16)
    else:
        pairs_asm = _byte_pairs_asm(magic2, symmetric, bf16)
    row_words = qw.qweight.stride(0) * qw.qweight.element_size() // 4
    vals = 32 // bits
    magic_words_kernel[(triton.cdiv(n, block_n), splits)](
        x, qw.qweight.view(torch.int32), qw.scales,
        qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else out, out, partials, counters,
        m, n, k, k // vals, x.stride(0), row_words, qw.scales.stride(1), out.stride(0),
        words_per_split, splits,
        BITS=bits, FP8=fp8, GROUP_SIZE=qw.group_size, HAS_ZEROS=not symmetric,
        ZERO_POINT=qw.zero_point if symmetric else 0, HAS_BIAS=bias is not None,
        MAGIC2=magic2, MAGIC_VALUE=magic_value,
        OPERAND_OFFSET=magic_value if bits == 4 else -128.0, FP8_LEFT=left, FP8_RIGHT=right,
        FP8_LOW=low, X_FACTOR=x_factor, OUT_FACTOR=out_factor, PAIRS_ASM=pairs_asm,
        BLOCK_M=max(16, triton.next_power_of_2(m)), BLOCK_N=block_n, STEP_WORDS=step,
        PER_CHANNEL=qw.num_groups == 1, EVEN_K=k % (vals * step) == 0, STAGES=num_stages,
        num_warps=num_warps, num_stages=num_stages,
    )
