"""Triton penalties: one elementwise pass over logits, counts and the prompt mask."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.sampling.filtering import RowParam

# Elements per program. Initial choice, to be tuned.
_BLOCK = 2048


@triton.jit
def _row_param(ptr, value, row, PER_ROW: tl.constexpr):
    if PER_ROW:
        out = tl.load(ptr + row).to(tl.float32)
    else:
        out = value
    return out


@triton.jit
def _penalties_kernel(
    x_ptr, x_stride, c_ptr, c_stride, m_ptr, m_stride, V,
    rep_ptr, rep_val, pres_ptr, pres_val, freq_ptr, freq_val,
    HAS_MASK: tl.constexpr, REP_ROW: tl.constexpr, PRES_ROW: tl.constexpr,
    FREQ_ROW: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < V
    x_ptrs = x_ptr + row * x_stride + cols
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    count = tl.load(c_ptr + row * c_stride + cols, mask=mask, other=0)
    in_output = count > 0
    seen = in_output
    if HAS_MASK:
        seen = seen | (tl.load(m_ptr + row * m_stride + cols, mask=mask, other=0) != 0)
    rep = _row_param(rep_ptr, rep_val, row, REP_ROW)
    pres = _row_param(pres_ptr, pres_val, row, PRES_ROW)
    freq = _row_param(freq_ptr, freq_val, row, FREQ_ROW)
    x = tl.where(seen, tl.where(x > 0, tl.math.div_rn(x, rep), x * rep), x)
    x = x - freq * count.to(tl.float32) - pres * in_output.to(tl.float32)
    tl.store(x_ptrs, x.to(x_ptr.dtype.element_ty), mask=mask)


def _param(value: RowParam, dummy: torch.Tensor):
    if isinstance(value, torch.Tensor):
        return value.contiguous(), 0.0, True
    return dummy, float(value), False


def apply_penalties_triton(
    logits: torch.Tensor,
    token_counts: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    repetition: RowParam,
    presence: RowParam,
    frequency: RowParam,
) -> None:
    batch, vocab = logits.shape
    counts = token_counts if token_counts.stride(-1) == 1 else token_counts.contiguous()
    if prompt_mask is not None:
        mask = prompt_mask if prompt_mask.stride(-1) == 1 else prompt_mask.contiguous()
        mask = mask.view(torch.uint8)
    else:
        mask = counts
    rep_ptr, rep_val, rep_row = _param(repetition, logits)
    pres_ptr, pres_val, pres_row = _param(presence, logits)
    freq_ptr, freq_val, freq_row = _param(frequency, logits)
    block = min(_BLOCK, triton.next_power_of_2(vocab))
    _penalties_kernel[(batch, triton.cdiv(vocab, block))](
        logits, logits.stride(0), counts, counts.stride(0), mask, mask.stride(0), vocab,
        rep_ptr, rep_val, pres_ptr, pres_val, freq_ptr, freq_val,
        HAS_MASK=prompt_mask is not None, REP_ROW=rep_row, PRES_ROW=pres_row,
        FREQ_ROW=freq_row, BLOCK=block, num_warps=4,
    )


class TritonPenalties(TritonBackend):
    family = "sample.penalties"
    name = "triton"
    priority = 100
    description = "Triton, one elementwise pass; CUDA (CPU under TRITON_INTERPRET=1)"

    def run(self, logits, token_counts, prompt_mask, repetition, presence, frequency):
        apply_penalties_triton(logits, token_counts, prompt_mask, repetition, presence, frequency)
