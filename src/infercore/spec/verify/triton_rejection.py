"""Triton rejection sampler: one program per row on CUDA.

A program tests all its row's drafts at once (gathers of ``p_j(x_j)`` and ``q_j(x_j)``;
the accepted count is the position of the first miss), then makes two passes over the
vocabulary at the sampling position: the first sums the residual ``max(0, p - q)`` (and
``p``, the fallback), the second finds the inverse-CDF index with a running
``tl.cumsum`` (sums in float64). Uniforms come from the counter-based hash of
:mod:`infercore.spec.rng`, computed here with native uint32 arithmetic, so the draws
equal the reference backend's.

The kernel is written over a tile of ``ROWS`` rows (every per-row value is a
``[ROWS]`` vector): 1 on CUDA; under the interpreter, where programs run one after
another in Python, many rows per program keep CPU tests fast.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.spec import rng

_MIX_A = tl.constexpr(rng.MIX_A)
_MIX_B = tl.constexpr(rng.MIX_B)
_SALT_LO = tl.constexpr(rng.SALT_LO)
_SALT_OUT = tl.constexpr(rng.SALT_OUT)

# Vocabulary elements per loop step: initial choice, to be tuned.
_MAX_BLOCK_V = 2048
# Rows per program under the interpreter (CPU), which runs programs one after another in
# Python: more rows amortize its per-program cost (tiles stay under 2**18 elements).
_INTERPRETER_ROWS = 1024


@triton.jit
def _uniforms(lo, hi, counter):
    """``rng.uniforms``: four mixer rounds over (seed halves, counter), broadcast."""
    h = (counter * 0).to(tl.uint32) + (lo ^ _SALT_LO)
    for r in tl.static_range(4):
        if r == 1:
            h = h ^ hi
        if r == 2:
            h = h ^ counter.to(tl.uint32)
        if r == 3:
            h = h ^ _SALT_OUT
        h = h ^ (h >> 16)
        h = h * _MIX_A
        h = h ^ (h >> 15)
        h = h * _MIX_B
        h = h ^ (h >> 15)
    return (h >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _rejection_kernel(
    p_ptr, q_ptr, x_ptr, n_ptr, seed_ptr, out_ptr, acc_ptr,
    B, K, V,
    p_stride_b, p_stride_k, q_stride_b, q_stride_k, x_stride_b, out_stride_b,
    HAS_Q: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < B
    rows = tl.where(live, rows, 0).to(tl.int64)
    # Dead rows (past B) get no drafts and an empty vocabulary: they read nothing.
    n = tl.load(n_ptr + rows).to(tl.int32)
    n = tl.where(live, tl.minimum(tl.maximum(n, 0), K), 0)
    v_end = tl.where(live, V, 0)
    seed = tl.load(seed_ptr + rows).to(tl.int64)
    lo = seed.to(tl.uint32)
    hi = (seed >> 32).to(tl.uint32)
    p_row = p_ptr + rows * p_stride_b
    q_row = q_ptr + rows * q_stride_b
    x_row = x_ptr + rows * x_stride_b

    # Acceptance: u_j < p_j(x_j) / q_j(x_j), as u * q < p; a row stops at its first miss.
    ks = tl.arange(0, BLOCK_K)
    drafted = ks[None, :] < n[:, None]
    x = tl.load(x_row[:, None] + ks[None, :], mask=drafted, other=-1).to(tl.int32)
    valid = (x >= 0) & (x < V)
    xc = tl.where(valid, x, 0)
    p_x = tl.load(p_row[:, None] + ks[None, :] * p_stride_k + xc, mask=valid, other=0.0)
    p_x = p_x.to(tl.float32)
    if HAS_Q:
        q_x = tl.load(q_row[:, None] + ks[None, :] * q_stride_k + xc, mask=valid, other=1.0)
        q_x = q_x.to(tl.float32)
    else:
        q_x = 1.0
    u = _uniforms(lo[:, None], hi[:, None], 2 * ks[None, :])
    missed = (u * q_x >= p_x) & drafted
    num_acc = tl.min(tl.where(missed, ks[None, :], n[:, None]), axis=1)

    # Sampling position: the first rejection (residual p - q) or the bonus position (p).
    rejected = num_acc < n
    coef = rejected.to(tl.float32)[:, None]
    x_rej = tl.load(x_row + num_acc, mask=rejected, other=-1).to(tl.int32)[:, None]
    q_end = tl.where(rejected, V, 0)[:, None]  # q is read only at a rejection
    p_at = (p_row + num_acc * p_stride_k)[:, None]
    q_at = (q_row + tl.minimum(num_acc, tl.maximum(K - 1, 0)) * q_stride_k)[:, None]
    offs = tl.arange(0, BLOCK_V)[None, :]

    # Sums in float64 (the summands are float32 values): the reference adds in another
    # order, and float64 keeps the two inverse-CDF picks equal.
    tot_r = tl.zeros([ROWS, BLOCK_V], dtype=tl.float64)
    tot_p = tl.zeros([ROWS, BLOCK_V], dtype=tl.float64)
    for start in range(0, V, BLOCK_V):
        v = start + offs
        p = tl.load(p_at + v, mask=v < v_end[:, None], other=0.0).to(tl.float32)
        if HAS_Q:
            q = tl.load(q_at + v, mask=v < q_end, other=0.0).to(tl.float32)
        else:
            q = tl.where(v == x_rej, 1.0, 0.0)
        tot_r += tl.maximum(p - coef * q, 0.0).to(tl.float64)
        tot_p += tl.maximum(p, 0.0).to(tl.float64)
    total_r = tl.sum(tot_r, axis=1)
    use_p = total_r <= 0.0
    coef = tl.where(use_p[:, None], 0.0, coef)
    total = tl.where(use_p, tl.sum(tot_p, axis=1), total_r)
    thresh = (_uniforms(lo, hi, 2 * num_acc + 1).to(tl.float64) * total)[:, None]

    running = total[:, None] * 0.0
    below = tl.zeros([ROWS, BLOCK_V], dtype=tl.int32)
    last = tl.full([ROWS, BLOCK_V], -1, dtype=tl.int32)
    for start in range(0, V, BLOCK_V):
        v = start + offs
        p = tl.load(p_at + v, mask=v < v_end[:, None], other=0.0).to(tl.float32)
        if HAS_Q:
            q = tl.load(q_at + v, mask=v < q_end, other=0.0).to(tl.float32)
        else:
            q = tl.where(v == x_rej, 1.0, 0.0)
        d = tl.maximum(p - coef * q, 0.0)
        cum = tl.cumsum(d.to(tl.float64), axis=1) + running
        below += (cum <= thresh).to(tl.int32)
        last = tl.maximum(last, tl.where(d > 0.0, v, -1))
        running = tl.max(cum, axis=1)[:, None]
    token = tl.maximum(tl.minimum(tl.sum(below, axis=1), tl.max(last, axis=1)), 0)

    out = tl.where(ks[None, :] < num_acc[:, None], x, -1)
    out = tl.where(ks[None, :] == num_acc[:, None], token[:, None], out).to(tl.int64)
    k_end = tl.where(live, K + 1, 0)
    tl.store(out_ptr + rows[:, None] * out_stride_b + ks[None, :], out,
             mask=ks[None, :] < k_end[:, None])
    tl.store(acc_ptr + rows, num_acc, mask=live)


def rejection_sample_triton(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    num_draft: torch.Tensor,
    seeds: torch.Tensor,
    *,
    rows_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel. ``rows_per_program`` (a power of two) defaults to 1 on CUDA; the
    interpreter runs programs one after another in Python, so on CPU rows are packed
    (``_INTERPRETER_ROWS``) to amortize its per-program cost."""
    batch, k = draft_tokens.shape
    vocab = target_probs.shape[-1]
    device = target_probs.device
    p = target_probs if target_probs.stride(-1) == 1 else target_probs.contiguous()
    has_q = draft_probs is not None
    if has_q:
        q = draft_probs if draft_probs.stride(-1) == 1 else draft_probs.contiguous()
        q_strides = (q.stride(0), q.stride(1))
    else:
        q, q_strides = p, (0, 0)
    x = draft_tokens if draft_tokens.stride(-1) == 1 else draft_tokens.contiguous()
    tokens = torch.empty((batch, k + 1), dtype=torch.int64, device=device)
    num_accepted = torch.empty((batch,), dtype=torch.int32, device=device)
    block_v = min(triton.next_power_of_2(vocab), _MAX_BLOCK_V)
    if rows_per_program is None:
        rows_per_program = (
            1 if device.type == "cuda" else max(1, min(_INTERPRETER_ROWS, (1 << 18) // block_v))
        )
    if batch:
        _rejection_kernel[(triton.cdiv(batch, rows_per_program),)](
            p, q, x, num_draft.contiguous(), seeds.contiguous(), tokens, num_accepted,
            batch, k, vocab,
            p.stride(0), p.stride(1), *q_strides, x.stride(0), tokens.stride(0),
            HAS_Q=has_q, ROWS=rows_per_program, BLOCK_V=block_v,
            BLOCK_K=triton.next_power_of_2(k + 1),
            num_warps=4 if block_v <= 1024 else 8,
        )
    return tokens, num_accepted


class TritonRejectionSampler(TritonBackend):
    family = "spec.rejection"
    name = "triton"
    priority = 100
    description = "Triton, one program per row; CUDA (CPU under TRITON_INTERPRET=1)"

    def run(self, target_probs, draft_probs, draft_tokens, num_draft, seeds):
        return rejection_sample_triton(target_probs, draft_probs, draft_tokens, num_draft, seeds)
