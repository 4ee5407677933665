"""Triton KV-cache write: one program per token (and group of heads), both caches."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.attention.checks import FP8_DTYPE, fp8_reasons
from infercore.ops.common import FLOAT_DTYPES, TritonBackend

# Elements per program (heads x head_dim): initial choice, to be tuned.
_TILE_ELEMENTS = 4096


@triton.jit
def _quantize(x, scale_ptr, HAS_SCALE: tl.constexpr, FP8: tl.constexpr):
    x = x.to(tl.float32)
    if HAS_SCALE:
        x = tl.math.div_rn(x, tl.load(scale_ptr))
    if FP8:
        x = tl.minimum(tl.maximum(x, -448.0), 448.0)
    return x


@triton.jit
def _kv_write_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, k_scale_ptr, v_scale_ptr,
    num_kv_heads,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE_SIZE: tl.constexpr, HAS_SCALE: tl.constexpr, FP8: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token)
    if slot < 0:
        return
    block = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    mask = (heads < num_kv_heads)[:, None] & (dims < HEAD_DIM)[None, :]
    t = token.to(tl.int64)
    k = tl.load(k_ptr + t * stride_kt + heads[:, None] * stride_kh + dims[None, :], mask=mask)
    v = tl.load(v_ptr + t * stride_vt + heads[:, None] * stride_vh + dims[None, :], mask=mask)
    k = _quantize(k, k_scale_ptr, HAS_SCALE, FP8)
    v = _quantize(v, v_scale_ptr, HAS_SCALE, FP8)
    kc = k_cache_ptr + block * stride_kcb + offset * stride_kcs
    vc = v_cache_ptr + block * stride_vcb + offset * stride_vcs
    tl.store(kc + heads[:, None] * stride_kch + dims[None, :],
             k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(vc + heads[:, None] * stride_vch + dims[None, :],
             v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def kv_write_triton(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale) -> None:
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    has_scale = k_scale is not None or v_scale is not None
    if has_scale and (k_scale is None or v_scale is None):
        one = torch.ones(1, dtype=torch.float32, device=k.device)
        k_scale = one if k_scale is None else k_scale
        v_scale = one if v_scale is None else v_scale
    block_d = triton.next_power_of_2(head_dim)
    block_h = min(triton.next_power_of_2(num_kv_heads), max(1, _TILE_ELEMENTS // block_d))
    grid = (num_tokens, triton.cdiv(num_kv_heads, block_h))
    _kv_write_kernel[grid](
        k, v, k_cache, v_cache, slot_mapping,
        k_scale if has_scale else k, v_scale if has_scale else k,
        num_kv_heads, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HEAD_DIM=head_dim, BLOCK_H=block_h, BLOCK_D=block_d, PAGE_SIZE=k_cache.shape[1],
        HAS_SCALE=has_scale, FP8=k_cache.dtype == FP8_DTYPE, num_warps=4,
    )


class TritonKVWrite(TritonBackend):
    family = "kv.write"
    name = "triton"
    priority = 100
    dtypes = FLOAT_DTYPES
    description = "Triton scatter, one program per token; CUDA (CPU under TRITON_INTERPRET=1)"

    def not_supported_reasons(self, inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if inputs is not None:
            reasons += fp8_reasons(inputs.kv_dtype, inputs.device)
        return reasons

    def run(self, k, v, k_cache, v_cache, slot_mapping, *, k_scale, v_scale) -> None:
        kv_write_triton(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
