"""Triton rotary embedding, in place on strided q and k.

The grid is ``(tokens, query head blocks + key head blocks)``: a program loads its
token's cos/sin row once and rotates a ``[BLOCK_H, rotary_dim / 2]`` tile of pairs of
one head block of q or of k. Neox pairs feature ``i`` with ``i + rotary_dim / 2``
(two contiguous loads), GPT-J pairs ``2i`` with ``2i + 1``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend

# Rotation pairs per program (initial choice, to be tuned): 2048 pairs are 8 KB of bf16
# read and written per program, all 32 query heads of a 128-wide head in one program.
_PAIRS_PER_PROGRAM = 2048
# Warps per program (initial choice, to be tuned): 16 pairs per thread at 2048 pairs.
_NUM_WARPS = 4


@triton.jit
def _rotate_heads(
    ptr, tok_offset, head_stride, h0, n_heads,
    off1, off2, pair_mask, cos, sin,
    BLOCK_H: tl.constexpr,
):
    heads = h0 + tl.arange(0, BLOCK_H)
    mask = (heads < n_heads)[:, None] & pair_mask[None, :]
    p = ptr + tok_offset + heads.to(tl.int64)[:, None] * head_stride
    x1 = tl.load(p + off1[None, :], mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(p + off2[None, :], mask=mask, other=0.0).to(tl.float32)
    o1 = x1 * cos[None, :] - x2 * sin[None, :]
    o2 = x2 * cos[None, :] + x1 * sin[None, :]
    tl.store(p + off1[None, :], o1.to(ptr.dtype.element_ty), mask=mask)
    tl.store(p + off2[None, :], o2.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, pos_ptr, cache_ptr,
    q_tok_stride, q_head_stride, k_tok_stride, k_head_stride, cache_stride,
    n_q_heads, n_k_heads, half,
    IS_NEOX: tl.constexpr,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    HALF_PAD: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    i = tl.arange(0, HALF_PAD)
    pair_mask = i < half
    cs = cache_ptr + pos * cache_stride
    cos = tl.load(cs + i, mask=pair_mask, other=0.0).to(tl.float32)
    sin = tl.load(cs + half + i, mask=pair_mask, other=0.0).to(tl.float32)
    if IS_NEOX:
        off1 = i
        off2 = i + half
    else:
        off1 = 2 * i
        off2 = 2 * i + 1
    n_q_blocks = tl.cdiv(n_q_heads, BLOCK_HQ)
    if block < n_q_blocks:
        _rotate_heads(q_ptr, t * q_tok_stride, q_head_stride, block * BLOCK_HQ, n_q_heads,
                      off1, off2, pair_mask, cos, sin, BLOCK_H=BLOCK_HQ)
    else:
        _rotate_heads(k_ptr, t * k_tok_stride, k_head_stride, (block - n_q_blocks) * BLOCK_HK,
                      n_k_heads, off1, off2, pair_mask, cos, sin, BLOCK_H=BLOCK_HK)


def _head_block(n_heads: int, half_pad: int) -> int:
    return min(triton.next_power_of_2(n_heads), max(1, _PAIRS_PER_PROGRAM // half_pad))


def rotary_triton(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
                  cos_sin_cache: torch.Tensor, is_neox: bool) -> None:
    n_tokens, n_q_heads, _ = q.shape
    n_k_heads = k.shape[1]
    if n_tokens == 0:
        return
    cache = cos_sin_cache if cos_sin_cache.stride(-1) == 1 else cos_sin_cache.contiguous()
    half = cache.shape[1] // 2
    half_pad = triton.next_power_of_2(half)
    block_hq, block_hk = _head_block(n_q_heads, half_pad), _head_block(n_k_heads, half_pad)
    grid = (n_tokens, triton.cdiv(n_q_heads, block_hq) + triton.cdiv(n_k_heads, block_hk))
    _rotary_kernel[grid](
        q, k, positions, cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cache.stride(0),
        n_q_heads, n_k_heads, half,
        IS_NEOX=is_neox, BLOCK_HQ=block_hq, BLOCK_HK=block_hk, HALF_PAD=half_pad,
        num_warps=_NUM_WARPS,
    )


class TritonRotary(TritonBackend):
    family = "rope"
    name = "triton"
    priority = 100
    description = "Triton, in place on strided q/k; CUDA (CPU under TRITON_INTERPRET=1)"

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        for name in ("q", "k"):
            t = getattr(inputs, name)
            if t.shape[-1] > 1 and t.stride(-1) != 1:
                reasons.append(f"{name} needs unit stride in head_dim, has {t.stride(-1)}")
        return reasons

    def run(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
            cos_sin_cache: torch.Tensor, is_neox: bool) -> None:
        rotary_triton(q, k, positions, cos_sin_cache, is_neox)
