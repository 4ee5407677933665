"""Weight-only GEMM for few rows (decode): memory-bound, split-K, one pass over the weight.

With ``M <= 64`` rows the work is reading the weight. The grid is ``(N tiles, K splits)``:
each program streams ``BLOCK_N`` weight rows over one slice of K, ``BLOCK_K`` values per
step. A K tile may span several groups of scales: the tile is viewed as
``[BLOCK_N, SUBGROUPS, GROUP]`` and its ``[BLOCK_N, SUBGROUPS]`` scales are broadcast, so
each row read per step is one long contiguous run of packed bytes.

Three ways to multiply, chosen per call (:class:`DecodeConfig` ``path``):

- GEMV (few rows): no ``tl.dot``. Each activation row multiplies the integer-valued tile
  in float32 and the products are summed per group; each group's sum is scaled once
  (zero points are taken off per group too: ``sum((u - z) x) = sum(u x) - z sum(x)``).
  int4 and int8 weights whose rows split into 32-bit words run the GEMV over words
  (:mod:`~infercore.ops.quant.triton_wo_gemv`, one AND per value); other layouts and fp8
  the byte GEMV below.
- Dot: the tile is scaled per group and fed to ``tl.dot`` against ``x^T`` ("swap AB":
  the weight is the left operand, the short activation side the right one).
- Magic (int4, int8 and fp8 weights, 16-bit activations only): the codes become 16-bit
  operands by integer bit operations, one dot per group, the zero point and the scale
  applied to the dot's result. Rows of whole 32-bit words unpack two values per
  instruction straight into the tensor cores' register order
  (:mod:`~infercore.ops.quant.triton_wo_magic_words`); other int4 rows go byte by byte
  (:mod:`~infercore.ops.quant.triton_wo_magic`).

int4 values are never interleaved: the low nibbles (even k) and high nibbles (odd k) are
two half-width tiles multiplied with the even and odd activation columns. Integer codes
become floats with the magic-number trick of :mod:`~infercore.ops.quant.triton_dequant`.

Splits write float32 partials; the last program of an N tile to finish (a per-tile
counter) sums them in a fixed order (deterministic), adds the bias, writes the output and
resets the counter, so one launch does it all and the counters are ready for the next call
(:mod:`infercore.ops.splitk`, shared with the dense GEMM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import (
    below,
    dot_precision,
    finish_splits,
    format_meta,
    sm_count,
    weight_bits,
)
from infercore.ops.quant.triton_wo_gemv import launch_word_gemv, word_bits, word_rows
from infercore.ops.quant.triton_wo_magic import MAGIC16, magic_step
from infercore.ops.quant.triton_wo_magic_words import (
    MAX_STEP_WORDS,
    launch_magic_words,
    step_words,
)
from infercore.ops.quant.weights import QuantizedWeight
from infercore.ops.splitk import fixed_splits, split_counters
from infercore.ops.splitk import plan_splits as plan_tile_splits

#: Largest M this kernel serves; above it the tiled kernel fills the GPU without split-K.
#: Initial choice, to be tuned.
MAX_M = 64
#: Largest M multiplied without ``tl.dot`` by default. On an H200 (Llama-8B MLP weights,
#: int4 groups of 128) the GEMV over words was fastest at M = 1 (1.66-1.75x cuBLAS bf16)
#: but at M = 2 it ran 27.1-28.0 us against 26.4-26.6 for the magic path, and at M = 4
#: 63-64 us against 26.5.
GEMV_MAX_M = 1
#: Deepest K step of the dot path. On an H200 (Triton 3.x) 32x1024 dot tiles failed the
#: reference check at M = 16 for every format while 512-deep steps passed.
MAX_DOT_BLOCK_K = 512
#: Values of :attr:`DecodeConfig.path`.
PATHS = ("gemv", "dot", "magic")

_MAGIC_BITS = tl.constexpr(0x4B400000)  # float32 1.5 * 2**23 (see triton_dequant)
_MAGIC = tl.constexpr(12582912.0)


@dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of the decode kernel.

    Attributes
    ----------
    block_n : int
        Weight rows (output channels) per program; a power of two.
    block_k : int
        K values per step; a power of two (capped so a tile never holds part of a group
        whose size is not a power of two).
    num_warps, num_stages : int
        Triton launch options. On the GEMV over 32-bit words, ``num_stages > 1``
        software-pipelines the loop (later steps' loads run ahead through shared memory;
        the launch lowers it where the buffers would not fit).
    splits : int or None
        K splits; ``None`` plans them from the SM count (:func:`plan_splits`).
    path : str or None
        How to multiply (one of :data:`PATHS`): ``"gemv"`` without ``tl.dot``, ``"dot"``
        dequantizing to the activation dtype, ``"magic"`` (bfloat16 or float16
        activations only) building 16-bit operands from the codes by bit operations.
        ``None`` means ``"gemv"`` for ``M <= GEMV_MAX_M``, else ``"dot"``.
    prefetch : bool
        GEMV over 32-bit words (:mod:`~infercore.ops.quant.triton_wo_gemv`) only: load the
        next step's words while this step computes.
    """

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    splits: int | None = None
    path: str | None = None
    prefetch: bool = True

    def __post_init__(self) -> None:
        if self.path is not None and self.path not in PATHS:
            raise ValueError(f"path must be None or one of {PATHS}, got {self.path!r}")


# Default configurations by (bits per weight, GEMV path), the best or within 2% of the best
# of sweeps on an H200 (weights 14336x4096 and 4096x14336, int4 groups of 128, int8 one
# scale per channel, bf16 activations, CUDA graphs over 8 weight copies). M=1 runs the
# GEMV over 32-bit words (:mod:`~infercore.ops.quant.triton_wo_gemv`): int4 128x256 with
# 2 warps 15.6 / 16.2 us (2.00x cuBLAS bf16 on both), int8 32x256 (3 pipelined stages)
# 18.6 / 19.2 us (1.68x / 1.69x).
# Dot tiles at M=4-16 64x256 (int4) and 64x128 (int8), 0.96-1.10x.
DEFAULT_CONFIGS = {
    (4, True): DecodeConfig(block_n=128, block_k=256, num_warps=2, num_stages=1),
    (8, True): DecodeConfig(block_n=32, block_k=256, num_warps=4, num_stages=3),
    (4, False): DecodeConfig(block_n=64, block_k=256, num_warps=4, num_stages=3),
    (8, False): DecodeConfig(block_n=64, block_k=128, num_warps=4, num_stages=3),
}
#: int4 weights with 16-bit activations and 2..MAGIC_MAX_M rows take the magic path (over
#: 32-bit words where rows allow, :mod:`~infercore.ops.quant.triton_wo_magic_words`): on an
#: H200 (same weights, symmetric groups of 128) 128x128 tiles with 4 warps, 3 stages and
#: one wave of splits ran M=4 in 16.1-16.2 us and M=16 in 16.8-17.2 us against cuBLAS
#: bf16's 30.7-33.0 us (1.86-1.99x); the byte version ran 25.7-27.4 us. At M=1 the GEMV
#: over words is as fast (15.7 / 16.2 against 15.9 / 15.8 us) and faster with zero points.
MAGIC_CONFIG = DecodeConfig(block_n=128, block_k=128, num_warps=4, num_stages=3,
                            path="magic")
MAGIC_MAX_M = 16
#: Rows up to which int4 weights whose rows are whole 32-bit words take the magic path by
#: default: on an H200 (same weights) M=64 ran in 28.9 / 30.2 us with one wave of splits
#: (2 / 8) against cuBLAS bf16's 33.3 / 36.3 us (1.16x / 1.20x), where the dot path ran
#: 50.7 / 46.4 us (0.66x / 0.78x).
MAGIC_WORDS_MAX_M = 64
#: int8 and fp8 weights with 16-bit activations whose rows are whole 32-bit words take the
#: magic path over words for 2..MAGIC_WORDS_MAX_M rows, the first entry whose row bound
#: holds. On an H200 (Llama-8B MLP weights, one scale per channel, CUDA graphs over 8
#: copies) int8 with 64x128 tiles, 4 stages and one wave of splits ran M=4/16 in
#: 20.3-21.2 us against cuBLAS bf16's 31-33 us (1.48-1.63x; the dot path it replaces:
#: 30.4-31.8 us), and M=64 with 128x128 tiles in 31.2 / 34.1 us against 33.1 / 35.8 us
#: (the dot path: 46.7 / 52.7 us). More stages (5, 6), 256-value steps and explicit split
#: counts were within noise of it or slower. fp8 with the same tiles: M=4/16 20.3-21.8 us
#: (1.49-1.62x; the dot path: 26.7-27.9 us), M=64 32.1 / 33.7 us (1.03x / 1.12x; the dot
#: path: 43.3 / 50.4 us).
MAGIC8_CONFIGS = (
    (16, DecodeConfig(block_n=64, block_k=128, num_warps=4, num_stages=4, path="magic")),
    (64, DecodeConfig(block_n=128, block_k=128, num_warps=4, num_stages=4, path="magic")),
)
# Aim for this many programs per SM (several resident programs keep loads in flight) and
# never split K more than _MAX_SPLITS ways. Initial choices, to be tuned.
_PROGRAMS_PER_SM = 4
_MAX_SPLITS = 16


@triton.jit
def _tile_codes(w_ptr, offs_n, mask_n, k0, K, stride_wn, FORMAT: tl.constexpr,
                HALF_K: tl.constexpr, EVEN_K: tl.constexpr):
    """The weight tile as floats of its codes: int4 gives (even k, odd k) half tiles
    ``[BLOCK_N, BLOCK_K // 2]``; 8-bit formats give the tile ``[BLOCK_N, BLOCK_K]`` twice.

    Integer codes come out offset by the magic constant only; fp8 as its values. Columns
    at or past K are finite (their activations load as zero).
    """
    rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs = tl.arange(0, HALF_K)
    if FORMAT == 1:
        offs_b = k0 // 2 + offs
        mask = mask_n[:, None] & below(offs_b, K // 2, EVEN_K)[None, :]
        raw = tl.load(rows + offs_b[None, :], mask=mask, other=0).to(tl.int32)
        even = ((raw & 0xF) + _MAGIC_BITS).to(tl.float32, bitcast=True)
        odd = ((raw >> 4) + _MAGIC_BITS).to(tl.float32, bitcast=True)
    else:
        offs_k = k0 + offs
        mask = mask_n[:, None] & below(offs_k, K, EVEN_K)[None, :]
        raw = tl.load(rows + offs_k[None, :], mask=mask, other=0)
        if FORMAT == 2:
            even = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        else:
            even = (raw.to(tl.int32) + _MAGIC_BITS).to(tl.float32, bitcast=True)
        odd = even
    return even, odd


@triton.jit
def _dequant_groups(v, zero, scale, HAS_ZEROS: tl.constexpr, BLOCK_N: tl.constexpr,
                    SUBGROUPS: tl.constexpr, WIDTH: tl.constexpr):
    """``(v - zero) * scale`` with ``v [BLOCK_N, SUBGROUPS * WIDTH]`` and per-group
    ``zero``, ``scale [BLOCK_N, SUBGROUPS]`` (``zero`` unused without zero points)."""
    if SUBGROUPS == 1:
        if HAS_ZEROS:
            v = v - zero
        w = v * scale
    else:
        v3 = tl.reshape(v, (BLOCK_N, SUBGROUPS, WIDTH))
        if HAS_ZEROS:
            v3 = v3 - zero[:, :, None]
        w = tl.reshape(v3 * scale[:, :, None], (BLOCK_N, SUBGROUPS * WIDTH))
    return w


@triton.jit
def _group_sums(v, BLOCK_N: tl.constexpr, SUBGROUPS: tl.constexpr, WIDTH: tl.constexpr):
    """Sums of ``v [BLOCK_N, SUBGROUPS * WIDTH]`` per group: ``[BLOCK_N, SUBGROUPS]``."""
    return tl.sum(tl.reshape(v, (BLOCK_N, SUBGROUPS, WIDTH)), axis=2)


@triton.jit
def _dequant_step(
    acc, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, mask_n, offs_m, mask_m, k0, N, K,
    stride_xm, stride_wn, group_size,
    FORMAT: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr,
    DOT_PRECISION: tl.constexpr, GEMV_ROWS: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr, EVEN_K: tl.constexpr,
):
    """One K step of the GEMV path (``GEMV_ROWS`` = M > 0) or the dot path (0)."""
    PARTS: tl.constexpr = 2 if FORMAT == 1 else 1  # int4: even-k and odd-k half tiles
    HALF_K: tl.constexpr = BLOCK_K // PARTS
    SUBGROUPS: tl.constexpr = BLOCK_K // GROUP
    WIDTH: tl.constexpr = GROUP // PARTS  # values of one group in a half tile
    even, odd = _tile_codes(w_ptr, offs_n, mask_n, k0, K, stride_wn, FORMAT, HALF_K, EVEN_K)
    k_group = k0 + tl.arange(0, SUBGROUPS) * GROUP
    sg_ptrs = (k_group // group_size)[None, :] * N + offs_n[:, None]
    sg_mask = mask_n[:, None] & below(k_group, K, EVEN_K)[None, :]
    scale = tl.load(s_ptr + sg_ptrs, mask=sg_mask, other=0.0).to(tl.float32)
    zero = scale
    if HAS_ZEROS:
        zero = tl.load(z_ptr + sg_ptrs, mask=sg_mask, other=0).to(tl.float32)
    if FORMAT != 2:
        # exact small integers: u minus the implicit zero point (0 with explicit zeros,
        # which come off per group below)
        even = even - (_MAGIC + ZERO_POINT)
        if PARTS == 2:
            odd = odd - (_MAGIC + ZERO_POINT)
    # Activations load contiguously; int4 splits them into even and odd columns.
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask_k = below(offs_k, K, EVEN_K)
    if GEMV_ROWS > 0:
        for m in tl.static_range(GEMV_ROWS):
            xr = tl.load(x_ptr + m * stride_xm + offs_k, mask=mask_k, other=0.0)
            xr = xr.to(tl.float32)
            if PARTS == 2:
                xa, xb = tl.split(tl.reshape(xr, (HALF_K, 2)))
            else:
                xa = xr
            sums = _group_sums(even * xa[None, :], BLOCK_N, SUBGROUPS, WIDTH)
            if HAS_ZEROS:
                x_sums = tl.sum(tl.reshape(xa, (SUBGROUPS, WIDTH)), axis=1)
            if PARTS == 2:
                sums += _group_sums(odd * xb[None, :], BLOCK_N, SUBGROUPS, WIDTH)
                if HAS_ZEROS:
                    x_sums += tl.sum(tl.reshape(xb, (SUBGROUPS, WIDTH)), axis=1)
            if HAS_ZEROS:
                sums -= zero * x_sums[None, :]
            row = tl.sum(sums * scale, axis=1)
            acc += tl.where(offs_m[None, :] == m, row[:, None], 0.0)
    else:
        x_rows = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
        xr = tl.load(x_rows, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if PARTS == 2:
            xa, xb = tl.split(tl.reshape(xr, (BLOCK_M, HALF_K, 2)))
        else:
            xa = xr
        w = _dequant_groups(even, zero, scale, HAS_ZEROS, BLOCK_N, SUBGROUPS, WIDTH)
        acc = tl.dot(w.to(xa.dtype), tl.trans(xa), acc, input_precision=DOT_PRECISION)
        if PARTS == 2:
            w = _dequant_groups(odd, zero, scale, HAS_ZEROS, BLOCK_N, SUBGROUPS, WIDTH)
            acc = tl.dot(w.to(xb.dtype), tl.trans(xb), acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _decode_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, group_size, k_per_split, splits,
    FORMAT: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr, GEMV_ROWS: tl.constexpr,
    MAGIC_OR: tl.constexpr, MAGIC_VALUE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    # MAGIC_OR != 0: the magic path (int4, 16-bit x); else GEMV_ROWS > 0: the GEMV path
    # over that many rows (== M); else the dot path.
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if MAGIC_OR != 0:
            acc = magic_step(acc, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, mask_n, offs_m, mask_m,
                             k0, N, K, stride_xm, stride_wn, group_size, HAS_ZEROS,
                             ZERO_POINT, MAGIC_OR, MAGIC_VALUE, BLOCK_M, BLOCK_K, GROUP, EVEN_K)
        else:
            acc = _dequant_step(acc, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, mask_n, offs_m,
                                mask_m, k0, N, K, stride_xm, stride_wn, group_size, FORMAT,
                                HAS_ZEROS, ZERO_POINT, DOT_PRECISION, GEMV_ROWS, BLOCK_M,
                                BLOCK_N, BLOCK_K, GROUP, EVEN_K)
    finish_splits(acc, bias_ptr, out_ptr, part_ptr, count_ptr, offs_n, offs_m, mask_n, mask_m,
                  M, N, stride_om, pid_n, pid_k, splits, HAS_BIAS)


def plan_splits(n_tiles: int, k_tiles: int, sms: int) -> tuple[int, int]:
    """(number of K splits, K tiles per split) so the grid covers the SMs several times."""
    return plan_tile_splits(n_tiles, k_tiles, _PROGRAMS_PER_SM * sms, _MAX_SPLITS)


def tile_shape(qw: QuantizedWeight, block_k: int, path: str) -> tuple[int, int] | None:
    """(BLOCK_K, GROUP): the K tile and the span of one scale inside it (a power of two
    dividing BLOCK_K), or None when ``group_size`` leaves no usable power-of-two tile for
    ``path`` (one of :data:`PATHS`).

    Groups of a power-of-two size up to ``block_k`` sit whole in a tile; larger groups
    and one group per channel hold whole tiles; other group sizes cap the tile at the
    largest power of two dividing them. The magic path multiplies one ``GROUP`` per dot,
    so it needs ``GROUP >= 32`` (int4: 16 values per half tile).
    """
    # tl.dot needs K >= 16 per operand: 32 values of int4 (two half tiles)
    smallest = 32 if qw.bits == 4 and path != "gemv" else 16
    if path != "gemv":
        block_k = min(block_k, MAX_DOT_BLOCK_K)
    if qw.num_groups == 1:
        bk = max(smallest, min(block_k, triton.next_power_of_2(qw.in_features)))
        return bk, bk
    gs = qw.group_size
    if gs & (gs - 1) == 0:
        bk = max(block_k, smallest)
        shape = bk, min(gs, bk)
    else:
        bk = min(block_k, gs & -gs)
        shape = (bk, bk) if bk >= smallest else None
    if path == "magic" and shape is not None and shape[1] < 32:
        return None
    return shape


def default_config(m: int, qw: QuantizedWeight,
                   dtype: torch.dtype | None = None) -> DecodeConfig:
    """The configuration :func:`splitk_linear` uses for ``m`` rows of ``qw`` and
    activations of ``dtype``: with 16-bit activations and ``GEMV_MAX_M < m``, the magic
    path for int4 up to ``MAGIC_WORDS_MAX_M`` rows where the rows are whole words and up
    to ``MAGIC_MAX_M`` where the byte version's tiles fit the groups, and for int8 and
    fp8 up to ``MAGIC_WORDS_MAX_M`` rows of whole words (``MAGIC8_CONFIGS``); else GEMV or
    dot by ``m`` (``None`` leaves the magic path out)."""
    if dtype in MAGIC16 and m > GEMV_MAX_M:
        words = word_rows(qw) and step_words(qw) is not None
        if qw.method == "int4":
            bytewise = tile_shape(qw, MAGIC_CONFIG.block_k, "magic") is not None
            if (words and m <= MAGIC_WORDS_MAX_M) or (bytewise and m <= MAGIC_MAX_M):
                return MAGIC_CONFIG
        elif words and m <= MAGIC_WORDS_MAX_M:
            return next(cfg for rows, cfg in MAGIC8_CONFIGS if m <= rows)
    return DEFAULT_CONFIGS[(qw.bits, m <= GEMV_MAX_M)]


def plan_wave_splits(n_tiles: int, k_steps: int, sms: int,
                     programs_per_sm: int = _PROGRAMS_PER_SM) -> tuple[int, int]:
    """(splits, K steps per split) for the magic path over words: as many splits as fill
    one wave of ``programs_per_sm`` programs per SM without starting a second one (a few
    programs of a second wave would run alone at the end)."""
    wanted = max(1, (programs_per_sm * sms) // max(n_tiles, 1))
    return fixed_splits(min(wanted, _MAX_SPLITS), k_steps)


def _split_workspace(out: torch.Tensor, splits: int,
                     n_tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 partials ``[splits, M, N]`` and the zeroed counters (one per N tile) of a
    split launch; with one split the kernels take neither (``out`` stands in)."""
    if splits == 1:
        return out, out
    partials = torch.empty((splits, *out.shape), dtype=torch.float32, device=out.device)
    return partials, split_counters(out.device, n_tiles)


def _launch_magic_words(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                        out: torch.Tensor, cfg: DecodeConfig, step: int) -> None:
    m, k = x.shape
    n_tiles = triton.cdiv(qw.out_features, cfg.block_n)
    k_steps = triton.cdiv(k * qw.bits // 32, step)
    if cfg.splits is None:
        # 128x128 tiles with 4 warps: 4 programs fit an SM at up to 16 rows (127 registers
        # a thread on an H200), 2 at 64 rows
        per_sm = _PROGRAMS_PER_SM if m <= 16 else _PROGRAMS_PER_SM // 2
        splits, per_split = plan_wave_splits(n_tiles, k_steps, sm_count(x.device), per_sm)
    else:
        splits, per_split = fixed_splits(cfg.splits, k_steps)
    partials, counters = _split_workspace(out, splits, n_tiles)
    launch_magic_words(x, qw, bias, out, partials, counters, per_split * step, splits,
                       block_n=cfg.block_n, step=step, num_warps=cfg.num_warps,
                       num_stages=cfg.num_stages)


def splitk_linear(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                  out: torch.Tensor, *, config: DecodeConfig | None = None) -> bool:
    """``out [M, N] = x [M, K] @ dequant(qw)^T + bias`` for ``M <= MAX_M``; x has unit
    column stride. ``config`` overrides :func:`default_config`.

    Returns False, writing nothing, when the group size admits no K tile on the chosen
    path (int4 groups whose size is an odd multiple of 16 on the dot and magic paths, or
    smaller than 32 on the magic path; int8 and fp8 on the magic path with rows that are
    not whole 32-bit words or groups that are not multiples of 16); the caller then uses
    another kernel.

    Raises
    ------
    ValueError
        The configuration asks for the magic path with activations other than bfloat16 /
        float16 (never a silent fallback: an explicit path is a request to measure that
        path).
    """
    m, k = x.shape
    n = qw.out_features
    assert 0 < m <= MAX_M
    cfg = config if config is not None else default_config(m, qw, x.dtype)
    path = cfg.path if cfg.path is not None else ("gemv" if m <= GEMV_MAX_M else "dot")
    magic_or, magic_value = 0, 0.0
    if path == "magic":
        if x.dtype not in MAGIC16:
            raise ValueError(
                "config.path='magic' needs bfloat16 or float16 activations, got "
                f"{str(x.dtype).removeprefix('torch.')} activations; use path 'gemv' or 'dot'"
            )
        magic_or, magic_value = MAGIC16[x.dtype]
        vals = 32 // qw.bits
        step = step_words(qw, max(4, min(cfg.block_k // vals, MAX_STEP_WORDS)))
        if word_rows(qw) and step is not None:
            _launch_magic_words(x, qw, bias, out, cfg, step)
            return True
        if qw.method != "int4":  # only int4 has a byte version of the magic path
            return False
    shape = tile_shape(qw, cfg.block_k, path)
    if shape is None:
        return False
    bk, group = shape
    n_tiles = triton.cdiv(n, cfg.block_n)
    k_tiles = triton.cdiv(k, bk)
    if cfg.splits is None:
        splits, per_split = plan_splits(n_tiles, k_tiles, sm_count(x.device))
    else:
        splits, per_split = fixed_splits(cfg.splits, k_tiles)
    partials, counters = _split_workspace(out, splits, n_tiles)
    meta = format_meta(qw)
    if qw.zeros is not None:
        meta["ZERO_POINT"] = 0  # explicit zero points replace the implicit one
    zeros = qw.zeros if qw.zeros is not None else qw.scales
    gemv = path == "gemv"
    if gemv and word_bits(qw) is not None and group >= 32 // qw.bits:
        launch_word_gemv(x, qw, bias, out, partials, counters, per_split * bk, splits,
                         block_n=cfg.block_n, step=bk, group=group, num_warps=cfg.num_warps,
                         num_stages=cfg.num_stages, prefetch=cfg.prefetch)
        return True
    block_m = triton.next_power_of_2(m) if gemv else max(16, triton.next_power_of_2(m))
    _decode_kernel[(n_tiles, splits)](
        x, weight_bits(qw), qw.scales, zeros, bias if bias is not None else out, out, partials,
        counters, m, n, k, x.stride(0), qw.qweight.stride(0), out.stride(0), qw.group_size,
        per_split * bk, splits,
        **meta, HAS_BIAS=bias is not None, DOT_PRECISION=dot_precision(x.dtype),
        GEMV_ROWS=m if gemv else 0, MAGIC_OR=magic_or, MAGIC_VALUE=magic_value,
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BLOCK_K=bk, GROUP=group, EVEN_K=k % bk == 0,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return True
