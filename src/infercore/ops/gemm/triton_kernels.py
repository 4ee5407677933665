"""Triton matmul kernels shared by the dense and FP8 GEMM backends.

Two kernels compute ``c = (a @ b) * scales + bias`` with float32 accumulation:

- ``_matmul_ptr_kernel`` loads tiles through pointers with arbitrary strides. It runs on
  every CUDA GPU and in the interpreter.
- ``_matmul_tma_kernel`` loads and stores tiles through host-built TMA tensor
  descriptors (Hopper, compute capability >= 9.0); operands must be 16-byte aligned with
  a unit inner stride. ``b`` is read either as ``[K, N]`` or, K-major, as ``[N, K]``.

Both walk the output tiles in grouped order (``GROUP_M`` row-tiles share each column
sweep, so the ``b`` tiles a group needs stay in L2) and may run persistently: a grid of
``num_programs`` programs strides over all tiles.

Split-K (``SPLIT_K``, for grids of few output tiles, as with few rows): the work items
are ``(tile, split)`` pairs, split-minor, each covering ``k_tiles_per_split`` K tiles;
each split stores a float32 partial into ``part_ptr [splits, M, N]`` and the last split
of a tile to finish sums them in split order, applies the epilogue and writes the tile
(:mod:`infercore.ops.splitk`). Without ``SPLIT_K`` a work item is a whole tile and the
kernels compile as if split-K did not exist.

Scales (FP8) are described per operand by two constexprs. For ``a`` (``[M, K]``):
``SA_G`` is the number of rows sharing a scale (``-1``: no scale, ``0``: one scale for all
rows, ``1``: per row, ``128``: 128-row blocks) and ``SA_K`` says whether scales also
change every 128 columns of K (then each K step is scaled before it is accumulated,
so ``BLOCK_K`` must divide 128). ``SB_G``/``SB_K`` say the same for the columns of ``b``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from infercore.ops.gemm.fp8 import GROUP
from infercore.ops.splitk import split_arrive, split_sum

#: K extent of one scale group for K-grouped (block-wise) FP8 scales (a constexpr global:
#: the only kind of global a compiled kernel may read).
SCALE_GROUP_K = tl.constexpr(GROUP)


@triton.jit
def tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(row tile, column tile) of output tile ``tile`` in grouped order: ``GROUP_M`` row
    tiles share each column tile, so their B tiles stay in L2."""
    width = GROUP_M * num_pid_n
    first_m = (tile // width) * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % width) % size_m
    pid_n = (tile % width) // size_m
    return pid_m, pid_n


@triton.jit
def _load_scale(s_ptr, idx, kb, stride_idx, stride_k, G: tl.constexpr):
    """Scale of each ``idx`` (row of a / column of b) in K group ``kb``, as float32."""
    if G == 0:
        group = idx * 0
    else:
        group = idx // G
    return tl.load(s_ptr + group * stride_idx + kb * stride_k).to(tl.float32)


@triton.jit
def _mma(acc, a, b, kt, rows, cols, sa_ptr, sb_ptr,
         stride_sam, stride_sak, stride_sbk, stride_sbn,
         SA_G: tl.constexpr, SA_K: tl.constexpr, SB_G: tl.constexpr, SB_K: tl.constexpr,
         BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr, IMPRECISE_ACC: tl.constexpr):
    if SA_K or SB_K:
        part = tl.dot(a, b, input_precision=INPUT_PRECISION, max_num_imprecise_acc=IMPRECISE_ACC)
        kb = (kt * BLOCK_K) // SCALE_GROUP_K
        if SA_K:
            part = part * _load_scale(sa_ptr, rows, kb, stride_sam, stride_sak, SA_G)[:, None]
        if SB_K:
            part = part * _load_scale(sb_ptr, cols, kb, stride_sbn, stride_sbk, SB_G)[None, :]
        acc += part
    else:
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION,
                     max_num_imprecise_acc=IMPRECISE_ACC)
    return acc


@triton.jit
def _epilogue(acc, rows, cols, bias_ptr, sa_ptr, sb_ptr,
              stride_sam, stride_sbn,
              HAS_BIAS: tl.constexpr,
              SA_G: tl.constexpr, SA_K: tl.constexpr, SB_G: tl.constexpr, SB_K: tl.constexpr):
    if SA_G >= 0 and not SA_K:
        acc = acc * _load_scale(sa_ptr, rows, 0, stride_sam, 0, SA_G)[:, None]
    if SB_G >= 0 and not SB_K:
        acc = acc * _load_scale(sb_ptr, cols, 0, stride_sbn, 0, SB_G)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + cols).to(tl.float32)[None, :]
    return acc


@triton.jit
def _work_item(work, splits, k_tiles, k_tiles_per_split, num_pid_m, num_pid_n,
               GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr):
    """(row tile, column tile, output tile, split, first K tile, end K tile) of work item
    ``work``: with ``SPLIT_K`` each output tile is ``splits`` items of
    ``k_tiles_per_split`` K tiles, else one item over all of K (split 0)."""
    if SPLIT_K:
        tile = work // splits
        split = work % splits
        kt_begin = split * k_tiles_per_split
        kt_end = tl.minimum(kt_begin + k_tiles_per_split, k_tiles)
    else:
        tile, split, kt_begin, kt_end = work, 0, 0, k_tiles
    pid_m, pid_n = tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
    return pid_m, pid_n, tile, split, kt_begin, kt_end


@triton.jit
def _split_done(acc, part_ptr, count_ptr, tile, split, splits, offs_m, offs_n, M, N):
    """Publish ``acc`` as partial ``split`` of ``tile``; returns the tile's sum over all
    splits and True for the last split to arrive (``acc`` unchanged and False otherwise)."""
    offs = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    last = split_arrive(part_ptr, count_ptr, tile, acc, offs, mask, split, M * N) == splits - 1
    if last:
        acc = split_sum(part_ptr, count_ptr, tile, offs, mask, splits, M * N)
    return acc, last


@triton.jit
def _matmul_ptr_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, sa_ptr, sb_ptr, part_ptr, count_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_sam, stride_sak, stride_sbk, stride_sbn,
    num_programs, splits, k_tiles_per_split,
    HAS_BIAS: tl.constexpr,
    SA_G: tl.constexpr, SA_K: tl.constexpr, SB_G: tl.constexpr, SB_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, IMPRECISE_ACC: tl.constexpr, SPLIT_K: tl.constexpr,
):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    offs_k = tl.arange(0, BLOCK_K)
    num_work = num_pid_m * num_pid_n
    if SPLIT_K:
        num_work *= splits
    for work in tl.range(tl.program_id(0), num_work, num_programs):
        pid_m, pid_n, tile, split, kt_begin, kt_end = _work_item(
            work, splits, k_tiles, k_tiles_per_split, num_pid_m, num_pid_n, GROUP_M, SPLIT_K)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        # Rows/columns past the edge re-read row/column 0 (in bounds) and are never stored,
        # so the loads in the K loop need only the K mask.
        rows = tl.where(offs_m < M, offs_m, 0)
        cols = tl.where(offs_n < N, offs_n, 0)
        offs_kk = kt_begin * BLOCK_K + offs_k
        a_ptrs = a_ptr + rows.to(tl.int64)[:, None] * stride_am + offs_kk[None, :] * stride_ak
        b_ptrs = b_ptr + offs_kk[:, None] * stride_bk + cols.to(tl.int64)[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kt in range(kt_begin, kt_end):
            k_left = K - kt * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
            acc = _mma(acc, a, b, kt, rows, cols, sa_ptr, sb_ptr,
                       stride_sam, stride_sak, stride_sbk, stride_sbn,
                       SA_G, SA_K, SB_G, SB_K, BLOCK_K, INPUT_PRECISION, IMPRECISE_ACC)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
        store = True
        if SPLIT_K:
            acc, store = _split_done(acc, part_ptr, count_ptr, tile, split, splits,
                                     offs_m, offs_n, M, N)
        if store:
            acc = _epilogue(acc, rows, cols, bias_ptr, sa_ptr, sb_ptr, stride_sam, stride_sbn,
                            HAS_BIAS, SA_G, SA_K, SB_G, SB_K)
            c_ptrs = (c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm
                      + offs_n.to(tl.int64)[None, :] * stride_cn)
            mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
            tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _matmul_tma_kernel(
    a_desc, b_desc, c_desc, bias_ptr, sa_ptr, sb_ptr, part_ptr, count_ptr,
    M, N, K,
    stride_sam, stride_sak, stride_sbk, stride_sbn,
    num_programs, splits, k_tiles_per_split,
    HAS_BIAS: tl.constexpr, B_KMAJOR: tl.constexpr,
    SA_G: tl.constexpr, SA_K: tl.constexpr, SB_G: tl.constexpr, SB_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, IMPRECISE_ACC: tl.constexpr, SPLIT_K: tl.constexpr,
):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_work = num_pid_m * num_pid_n
    if SPLIT_K:
        num_work *= splits
    for work in tl.range(tl.program_id(0), num_work, num_programs):
        pid_m, pid_n, tile, split, kt_begin, kt_end = _work_item(
            work, splits, k_tiles, k_tiles_per_split, num_pid_m, num_pid_n, GROUP_M, SPLIT_K)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = n0 + tl.arange(0, BLOCK_N)
        rows = tl.where(offs_m < M, offs_m, 0)
        cols = tl.where(offs_n < N, offs_n, 0)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kt in range(kt_begin, kt_end):
            # Out-of-bounds parts of a descriptor's box read as zero.
            a = a_desc.load([m0, kt * BLOCK_K])
            if B_KMAJOR:
                b = b_desc.load([n0, kt * BLOCK_K]).T
            else:
                b = b_desc.load([kt * BLOCK_K, n0])
            acc = _mma(acc, a, b, kt, rows, cols, sa_ptr, sb_ptr,
                       stride_sam, stride_sak, stride_sbk, stride_sbn,
                       SA_G, SA_K, SB_G, SB_K, BLOCK_K, INPUT_PRECISION, IMPRECISE_ACC)
        store = True
        if SPLIT_K:
            acc, store = _split_done(acc, part_ptr, count_ptr, tile, split, splits,
                                     offs_m, offs_n, M, N)
        if store:
            acc = _epilogue(acc, rows, cols, bias_ptr, sa_ptr, sb_ptr, stride_sam, stride_sbn,
                            HAS_BIAS, SA_G, SA_K, SB_G, SB_K)
            # The store is clipped to the tensor's bounds.
            c_desc.store([m0, n0], acc.to(c_desc.dtype))
