"""Host side of the Triton matmul: picks the kernel and configuration, then launches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from infercore.ops.gemm.fp8 import GROUP
from infercore.ops.gemm.triton_configs import (
    GemmConfig,
    fit_shared_memory,
    num_sms,
    pick_config,
    plan_split_k,
)
from infercore.ops.gemm.triton_kernels import _matmul_ptr_kernel, _matmul_tma_kernel
from infercore.ops.splitk import split_counters
from infercore.registry import compute_capability

__all__ = ["OperandScale", "kernel_constexprs", "launch_matmul", "tma_compatible"]


@dataclass(frozen=True)
class OperandScale:
    """Dequantization scales of one FP8 operand, as the kernels read them.

    ``scale`` is a 2-D float32 view: ``[groups along M or N, groups along K]``.
    ``group`` is how many rows of ``a`` (columns of ``b``) share a scale: 0 for all of
    them, 1 for one each, 128 for blocks; ``k_grouped`` says the scale also changes every
    128 elements of K.
    """

    scale: torch.Tensor
    group: int
    k_grouped: bool


def _aligned(t: torch.Tensor) -> bool:
    """Base address and outer stride 16-byte aligned, inner stride 1 (a TMA requirement)."""
    es = t.element_size()
    return t.stride(1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * es) % 16 == 0


def tma_compatible(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether TMA descriptors can address ``a`` (row-major), ``b`` (row-major or K-major)
    and ``out`` (row-major). FP8 ``b`` must be K-major (the layout FP8 wgmma reads)."""
    if min(a.shape[0], a.shape[1], b.shape[1]) == 0:
        return False
    b_ok = _aligned(b.t()) or (b.element_size() > 1 and _aligned(b))
    return _aligned(a) and b_ok and _aligned(out)


def _tma_device(device: torch.device) -> bool:
    """TMA exists from Hopper on; the interpreter emulates it on CPU."""
    cc = compute_capability(device)
    return cc is None or cc >= (9, 0)


def _input_precision(dtype: torch.dtype, device: torch.device) -> str:
    """TF32 tensor cores for float32 only where PyTorch allows them (``"tf32"`` is also
    Triton's value for other dtypes, which it ignores)."""
    if dtype != torch.float32:
        return "tf32" if device.type == "cuda" else "ieee"
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def kernel_constexprs(
    config: GemmConfig,
    dtype: torch.dtype,
    device: torch.device,
    has_bias: bool,
    scales: tuple[int, bool, int, bool],
    split_k: bool = False,
    fast_accum: bool = False,
) -> dict:
    """The compile-time arguments both kernels take (``scales``: SA_G, SA_K, SB_G, SB_K;
    ``split_k``: whether K is split over several programs per tile; ``fast_accum``: FP8
    sums stay in the tensor-core accumulator over all of K)."""
    if dtype.itemsize != 1:
        imprecise = 0  # not applicable to other dtypes
    else:
        imprecise = None if fast_accum else config.block_k
    sa_g, sa_k, sb_g, sb_k = scales
    return dict(
        HAS_BIAS=has_bias,
        SA_G=sa_g, SA_K=sa_k, SB_G=sb_g, SB_K=sb_k,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m,
        INPUT_PRECISION=_input_precision(dtype, device),
        # FP8 on Hopper: promote the tensor-core partial sums to float32 once per K tile,
        # or (None) never: the kernel then need not wait for a tile's matrix instructions
        # before issuing the next tile's. On an H200 at 8192^3 (tensor-wise scales, 128x256
        # tiles) that took the kernel from 962 to 1286 TFLOP/s.
        IMPRECISE_ACC=imprecise,
        SPLIT_K=split_k,
    )


def _scale_args(s: OperandScale | None, dummy: torch.Tensor) -> tuple:
    """(pointer, stride along M/N, stride along K, group, k_grouped) for the kernel."""
    if s is None:
        return dummy, 0, 0, -1, False
    t = s.scale
    return t, t.stride(0), t.stride(1), s.group, s.k_grouped


def launch_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    bias: torch.Tensor | None = None,
    a_scale: OperandScale | None = None,
    b_scale: OperandScale | None = None,
    config: GemmConfig | None = None,
    fast_accum: bool = False,
) -> str:
    """``out = (a @ b) * scales + bias`` with float32 accumulation, written in full.

    ``a [M, K]`` and ``b [K, N]`` may have any strides; ``config`` defaults to the
    table's entry for the shape class (FP8 with ``fast_accum`` has entries of its own).
    ``fast_accum``: FP8 products summed over all of K in the tensor-core accumulator
    (:func:`kernel_constexprs`). With K split (``config.split_k``), a float32
    ``[splits, M, N]`` buffer of partials is allocated per call. Returns the kernel used:
    ``"tma"``, ``"pointer"`` or ``"none"`` (empty output).
    """
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return "none"
    bits = a.element_size() * 8
    config = config or pick_config(m, bits, a.device, n, fast_accum=fast_accum)
    k_grouped = any(s is not None and s.k_grouped for s in (a_scale, b_scale))
    if k_grouped and GROUP % config.block_k:
        config = config.with_block_k(GROUP)
    use_tma = config.tma and _tma_device(a.device) and tma_compatible(a, b, out)
    if use_tma:
        config = fit_shared_memory(config, a.element_size(), out.element_size())
    num_tiles = triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n)
    splits, per_split = plan_split_k(config, m, n, k, a.element_size(), a.device)
    programs = num_tiles * splits
    if config.persistent:
        programs = min(programs, num_sms(a.device) * config.programs_per_sm)
    if splits > 1:
        partials = torch.empty((splits, m, n), dtype=torch.float32, device=a.device)
        counters = split_counters(a.device, num_tiles)
    else:
        partials = counters = out
    sa, s_sam, s_sak, sa_g, sa_k = _scale_args(a_scale, out)
    sb, s_sbn, s_sbk, sb_g, sb_k = _scale_args(b_scale, out)
    common = dict(
        kernel_constexprs(config, a.dtype, a.device, bias is not None, (sa_g, sa_k, sb_g, sb_k),
                          split_k=splits > 1, fast_accum=fast_accum),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    bias_arg = bias if bias is not None else out
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        b_kmajor = _aligned(b.t())
        a_desc = TensorDescriptor.from_tensor(a, [config.block_m, config.block_k])
        if b_kmajor:
            b_desc = TensorDescriptor.from_tensor(b.t(), [config.block_n, config.block_k])
        else:
            b_desc = TensorDescriptor.from_tensor(b, [config.block_k, config.block_n])
        c_desc = TensorDescriptor.from_tensor(out, [config.block_m, config.block_n])
        _matmul_tma_kernel[(programs,)](
            a_desc, b_desc, c_desc, bias_arg, sa, sb, partials, counters,
            m, n, k,
            s_sam, s_sak, s_sbk, s_sbn,
            programs, splits, per_split,
            B_KMAJOR=b_kmajor,
            **common,
        )
        return "tma"
    _matmul_ptr_kernel[(programs,)](
        a, b, out, bias_arg, sa, sb, partials, counters,
        m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        s_sam, s_sak, s_sbk, s_sbn,
        programs, splits, per_split,
        **common,
    )
    return "pointer"
