"""Triton sampling: one program per row, thresholds found without sorting the vocabulary.

Each row is read in chunks:

1. **stats**: max logit (and its first index, for greedy rows), min logit, and the
   log-sum-exp of the scaled logits ``s = x / T`` (online softmax).
2. **threshold search** (only for active filters): the kept set of top-k and of top-p is
   ``{x >= tau}`` for one element ``tau``. ``tau`` is found by a search over the
   order-preserving int32 keys of the logits: each pass evaluates ``NPIV`` pivots at once
   (the count, the mass ``sum exp(s - s_max)`` and the smallest key at or above each),
   keeps the sub-interval holding ``tau`` and snaps its lower end to an element. Half the
   pivots split the interval evenly in value, half in key space (logarithmic in value), so
   clustered values and masked logits (``-1e30``) converge in a few passes. Chunks with no
   element inside the interval skip the pivot work.
3. As soon as at most ``CAP`` elements remain at or above the lower bound, one **gather**
   pass copies them (key, index, ``exp(s - s_max)``) to a scratch row; the rest runs on
   that buffer: comparing the candidates pairwise gives each one's exact top-k rank and
   the mass above it (top-p), then the draw. Otherwise a **final** pass draws
   ``argmax(s + gumbel)`` over ``{x >= tau}`` (and min-p).

The noise of token ``i`` depends only on the row's seed and ``i`` (see ``philox.py``), so
the result equals the reference's mask-then-argmax for the same seed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.common import TritonBackend
from infercore.ops.sampling.triton_rng import (
    INT32_MAX,
    INT32_MIN,
    float_key,
    gumbel_block,
    gumbel_tokens,
    key_value,
    load_logits,
)

# Chunk of the stats, gather and final passes. Initial choice, to be tuned.
_BLOCK = 2048
# Chunk of the pivot passes ([SBLOCK, NPIV] accumulators). Initial choice, to be tuned.
_SBLOCK = 256
# Pivots per search pass: 1 at lo + 1, 3 spread in value, 4 in key space. Initial choice.
_NPIV = 8
# Size of the per-row buffer the candidates are gathered into, and candidates compared at
# once there ([CAP, JB] tiles). Register counts from ptxas for sm_90a at 8 warps (no GPU
# run): with these sizes and SBLOCK 256, 80-125 registers and no spills under Triton 3.6
# and 3.9, so two programs fit on an SM; a 1024 x 16 buffer took 246, SBLOCK 512 up to 182.
GATHER_CAP = 512
_JB = 8
# Bound on search passes per row; key-space pivots shrink the interval >= 5x per pass,
# so two searches over 2**32 keys need about 30.
_MAX_PASSES = 64

# Relative slack on the min-p threshold (see filtering.MIN_P_SLACK): the compiled kernel
# may fuse ``x * inv_t - s_max`` into one FMA, so the top token's ``exp(s - s_max)`` can
# land a rounding step below 1 and fail ``min_p == 1`` without it (seen on an H200).
MIN_P_SLACK = tl.constexpr(1.0 - 2.0**-16)


@triton.jit
def _pivots(lo, hi, NPIV: tl.constexpr):
    """NPIV int32 pivots in (lo, hi]: lo + 1, then NV spread in value, then the rest in key."""
    NV: tl.constexpr = NPIV // 2 - 1
    NK: tl.constexpr = NPIV - 1 - NV
    j = tl.arange(0, NPIV)
    lo_v = key_value(lo)
    hi_v = key_value(hi - 1)
    a = j.to(tl.float32) / (NV + 1)
    qv = float_key(lo_v * (1.0 - a) + hi_v * a)
    width = hi.to(tl.int64) - lo.to(tl.int64)
    qk = (lo.to(tl.int64) + width * (j - NV).to(tl.int64) // (NK + 1)).to(tl.int32)
    q = tl.where(j == 0, lo + 1, tl.where(j <= NV, qv, qk))
    return tl.minimum(tl.maximum(q, lo + 1), hi)


@triton.jit
def _pivot_pass(
    x_row, V, inv_t, s_max, min_p, lo, hi, q,
    SBLOCK: tl.constexpr, NPIV: tl.constexpr, WITH_MASS: tl.constexpr, USE_MP: tl.constexpr,
):
    """Over the elements with lo <= key < hi: for each pivot the count, the mass and the
    smallest key at or above it; and the count and mass of all of them."""
    offs = tl.arange(0, SBLOCK)
    acc_c = tl.zeros([SBLOCK, NPIV], dtype=tl.int32)
    acc_g = tl.full([SBLOCK, NPIV], INT32_MAX, dtype=tl.int32)
    acc_m = tl.zeros([SBLOCK, NPIV], dtype=tl.float32)
    all_c = tl.zeros([SBLOCK], dtype=tl.int32)
    all_m = tl.zeros([SBLOCK], dtype=tl.float32)
    for start in range(0, V, SBLOCK):
        cols = start + offs
        mask = cols < V
        x = load_logits(x_row, cols, mask)
        key = float_key(x)
        rel = mask & (key >= lo) & (key < hi)
        if tl.max(rel.to(tl.int32), axis=0) > 0:
            ge = rel[:, None] & (key[:, None] >= q[None, :])
            acc_c += ge.to(tl.int32)
            acc_g = tl.minimum(acc_g, tl.where(ge, key[:, None], INT32_MAX))
            all_c += rel.to(tl.int32)
            if WITH_MASS:
                w = tl.exp(x * inv_t - s_max)
                if USE_MP:
                    w = tl.where(w >= min_p, w, 0.0)
                acc_m += tl.where(ge, w[:, None], 0.0)
                all_m += tl.where(rel, w, 0.0)
    return (
        tl.sum(acc_c, axis=0),
        tl.sum(acc_m, axis=0),
        tl.min(acc_g, axis=0),
        tl.sum(all_c, axis=0),
        tl.sum(all_m, axis=0),
    )


@triton.jit
def _gather(x_row, V, inv_t, s_max, lo, buf_row, w_row, BLOCK: tl.constexpr, CAP: tl.constexpr):
    """Copy (key << 32 | index) and exp(s - s_max) of every element with key >= lo to the
    row's buffers; return how many."""
    offs = tl.arange(0, BLOCK)
    n = lo * 0
    for start in range(0, V, BLOCK):
        cols = start + offs
        mask = cols < V
        x = load_logits(x_row, cols, mask)
        key = float_key(x)
        sel = mask & (key >= lo)
        cnt = tl.sum(sel.to(tl.int32), axis=0)
        if cnt > 0:
            pos = n + tl.cumsum(sel.to(tl.int32), axis=0) - 1
            keep = sel & (pos < CAP)
            tl.store(buf_row + pos, (key.to(tl.int64) << 32) | cols.to(tl.int64), mask=keep)
            tl.store(w_row + pos, tl.exp(x * inv_t - s_max), mask=keep)
            n += cnt
    return n


@triton.jit
def _sample_buffer(
    buf_row, w_row, n, k0, k1, inv_t, s_max, k, rank_k, tau_k, min_p, top_p, p_on, z0_known, target,
    CAP: tl.constexpr, JB: tl.constexpr, USE_MP: tl.constexpr,
):
    """Exact filters and the draw over the n gathered candidates (all elements >= lo).

    For each candidate, the count and the (min-p) mass of the candidates with a larger
    key give its top-k rank and the mass before it in top-p order; every element above a
    candidate is itself gathered, so both are exact.
    """
    tl.debug_barrier()
    offs = tl.arange(0, CAP)
    valid = offs < n
    packed = tl.load(buf_row + offs, mask=valid, other=0)
    key = (packed >> 32).to(tl.int32)
    ids = (packed & 0x7FFFFFFF).to(tl.int32)
    s = key_value(key) * inv_t
    w = tl.load(w_row + offs, mask=valid, other=0.0)
    n_gt = tl.zeros([CAP], dtype=tl.int32)
    m_gt = tl.zeros([CAP], dtype=tl.float32)
    jo = tl.arange(0, JB)
    for jc in range(0, n, JB):
        in_j = jc + jo < n
        kj = (tl.load(buf_row + jc + jo, mask=in_j, other=0) >> 32).to(tl.int32)
        kj = tl.where(in_j, kj, INT32_MIN)
        wj = tl.load(w_row + jc + jo, mask=in_j, other=0.0)
        if USE_MP:
            wj = tl.where(wj >= min_p, wj, 0.0)
        gt = kj[None, :] > key[:, None]
        n_gt += tl.sum(gt.to(tl.int32), axis=1)
        m_gt += tl.sum(tl.where(gt, wj[None, :], 0.0), axis=1)
    allowed = valid & tl.where(rank_k, n_gt < k, key >= tau_k)
    if USE_MP:
        allowed = allowed & (w >= min_p)
    z0 = tl.sum(tl.where(allowed, w, 0.0), axis=0)
    tgt = tl.where(z0_known, target, top_p * z0)
    allowed = allowed & ((m_gt < tgt) | (p_on == 0) | (n_gt == 0))
    score = tl.where(allowed, s + gumbel_tokens(k0, k1, ids), float("-inf"))
    pos = tl.argmax(score, axis=0)
    return tl.max(tl.where(offs == pos, ids, -1), axis=0)


@triton.jit
def _sample_final(
    x_row, V, k0, k1, inv_t, s_max, tau, min_p, BLOCK: tl.constexpr, USE_MP: tl.constexpr
):
    """argmax of s + gumbel over {key >= tau} (and min-p), skipping chunks with no candidate."""
    offs = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    best_i = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, V, BLOCK):
        cols = start + offs
        mask = cols < V
        x = load_logits(x_row, cols, mask)
        s = x * inv_t
        ok = mask & (float_key(x) >= tau)
        if USE_MP:
            ok = ok & (tl.exp(s - s_max) >= min_p)
        if tl.max(ok.to(tl.int32), axis=0) > 0:
            score = tl.where(ok, s + gumbel_block(k0, k1, start, BLOCK), float("-inf"))
            upd = score > best
            best = tl.where(upd, score, best)
            best_i = tl.where(upd, cols, best_i)
    top = tl.max(best, axis=0)
    return tl.min(tl.where(best == top, best_i, V), axis=0)


@triton.jit
def _sample_row(
    x_row, V, buf_row, w_row, k0, k1, inv_t, s_max, kmin, kmax, k, top_p, min_p,
    USE_K: tl.constexpr, USE_P: tl.constexpr, USE_MP: tl.constexpr,
    BLOCK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr, CAP: tl.constexpr,
    JB: tl.constexpr, MAX_PASSES: tl.constexpr,
):
    zero = kmin * 0
    if USE_K:
        k_on = (k > 0) & (k < V)
    else:
        k_on = zero != 0
    if USE_P:
        p_on = (top_p < 1.0).to(tl.int32)
    else:
        p_on = zero
    # phase 0: top-k search (f = count, target k); 1: top-p search (f = mass); 2: done
    phase = tl.where(k_on, zero, tl.where(p_on != 0, zero + 1, zero + 2))
    lo = kmin
    hi = kmax + 1
    cnt_lo = zero + V
    cnt_hi = zero
    mass_hi = inv_t * 0.0
    target = mass_hi
    pending = zero + 1  # top-p target not yet known (set from the first mass pass)
    tau_k = kmin
    n_pass = zero
    kf = k.to(tl.float32)
    while (phase < 2) & (cnt_lo > CAP) & (n_pass < MAX_PASSES):
        q = _pivots(lo, hi, NPIV)
        is_k = phase == 0
        if is_k:
            c, m, g, c_all, m_all = _pivot_pass(
                x_row, V, inv_t, s_max, min_p, lo, hi, q, SBLOCK, NPIV, False, USE_MP
            )
        else:
            c, m, g, c_all, m_all = _pivot_pass(
                x_row, V, inv_t, s_max, min_p, lo, hi, q, SBLOCK, NPIV, True, USE_MP
            )
        c += cnt_hi
        m += mass_hi
        target = tl.where(is_k, kf, tl.where(pending != 0, top_p * (m_all + mass_hi), target))
        pending = tl.where(is_k, pending, zero)
        f = tl.where(is_k, c.to(tl.float32), m)
        qual = f >= target
        j = tl.arange(0, NPIV)
        # f at lo + 1 below the target: lo is the threshold
        fin = tl.max(tl.where(j == 0, f, float("-inf")), axis=0) < target
        new_lo = tl.max(tl.where(qual, g, lo), axis=0)
        new_cnt_lo = tl.min(tl.where(qual, c, cnt_lo), axis=0)
        new_hi = tl.min(tl.where(qual, hi, q), axis=0)
        new_cnt_hi = tl.max(tl.where(qual, cnt_hi, c), axis=0)
        new_mass_hi = tl.max(tl.where(qual, mass_hi, m), axis=0)
        lo = tl.where(fin, lo, new_lo)
        cnt_lo = tl.where(fin, c_all + cnt_hi, new_cnt_lo)
        hi = tl.where(fin, hi, new_hi)
        cnt_hi = tl.where(fin, cnt_hi, new_cnt_hi)
        mass_hi = tl.where(fin, mass_hi, new_mass_hi)
        fin = fin | (lo + 1 >= hi)
        # top-k found: start the top-p search above it over the whole remaining range
        k_done = fin & is_k
        tau_k = tl.where(k_done, lo, tau_k)
        hi = tl.where(k_done, kmax + 1, hi)
        cnt_hi = tl.where(k_done, zero, cnt_hi)
        mass_hi = tl.where(k_done, 0.0, mass_hi)
        pending = tl.where(k_done, zero + 1, pending)
        phase = tl.where(fin, tl.where(is_k & (p_on != 0), zero + 1, zero + 2), phase)
        n_pass += 1
    token = zero
    if (phase < 2) & (cnt_lo <= CAP):
        n = _gather(x_row, V, inv_t, s_max, lo, buf_row, w_row, BLOCK, CAP)
        token = _sample_buffer(
            buf_row, w_row, n, k0, k1, inv_t, s_max, k, phase == 0, tau_k, min_p, top_p, p_on,
            (phase == 1) & (pending == 0), target, CAP, JB, USE_MP,
        )
    else:
        token = _sample_final(x_row, V, k0, k1, inv_t, s_max, lo, min_p, BLOCK, USE_MP)
    return token


@triton.jit
def _sample_kernel(
    x_ptr, x_stride, V,
    t_ptr, t_val, k_ptr, k_val, p_ptr, p_val, mp_ptr, mp_val,
    seed_ptr, ids_ptr, lse_ptr, buf_ptr, w_ptr,
    T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MP_ROW: tl.constexpr,
    USE_K: tl.constexpr, USE_P: tl.constexpr, USE_MP: tl.constexpr,
    BLOCK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr, CAP: tl.constexpr,
    JB: tl.constexpr, MAX_PASSES: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    # per-row parameters: loaded from a [batch] tensor, or one number for all rows
    t = t_val
    if T_ROW:
        t = tl.load(t_ptr + row).to(tl.float32)
    inv_t = tl.math.div_rn(1.0, tl.where(t > 0.0, t, 1.0))
    offs = tl.arange(0, BLOCK)
    m_vec = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    z_vec = tl.zeros([BLOCK], dtype=tl.float32)
    kmax_vec = tl.full([BLOCK], INT32_MIN, dtype=tl.int32)
    imax_vec = tl.zeros([BLOCK], dtype=tl.int32)
    kmin_vec = tl.full([BLOCK], INT32_MAX, dtype=tl.int32)
    for start in range(0, V, BLOCK):
        cols = start + offs
        mask = cols < V
        x = load_logits(x_row, cols, mask)
        key = float_key(x)
        upd = mask & (key > kmax_vec)
        kmax_vec = tl.where(upd, key, kmax_vec)
        imax_vec = tl.where(upd, cols, imax_vec)
        kmin_vec = tl.where(mask, tl.minimum(kmin_vec, key), kmin_vec)
        s = x * inv_t
        m_new = tl.maximum(m_vec, s)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        z_vec = z_vec * tl.exp(m_vec - m_ref) + tl.exp(s - m_ref)
        m_vec = m_new
    kmax = tl.max(kmax_vec, axis=0)
    token = tl.min(tl.where(kmax_vec == kmax, imax_vec, V), axis=0)
    kmin = tl.min(kmin_vec, axis=0)
    s_max = tl.max(m_vec, axis=0)
    s_ref = tl.where(s_max == float("-inf"), 0.0, s_max)
    lse = s_max + tl.log(tl.sum(z_vec * tl.exp(m_vec - s_ref), axis=0))
    tl.store(lse_ptr + row, lse)
    x_max = key_value(kmax)
    if (t > 0.0) & (x_max > float("-inf")) & (x_max < float("inf")):
        k = k_val
        if K_ROW:
            k = tl.load(k_ptr + row).to(tl.float32)
        k = tl.minimum(tl.maximum(k, -1.0), V).to(tl.int32)
        top_p = p_val
        if P_ROW:
            top_p = tl.load(p_ptr + row).to(tl.float32)
        top_p = tl.maximum(top_p, 1e-30)  # unchecked top_p <= 0 keeps the top tokens
        min_p = mp_val
        if MP_ROW:
            min_p = tl.load(mp_ptr + row).to(tl.float32)
        min_p = tl.minimum(tl.maximum(min_p, 0.0), 1.0) * MIN_P_SLACK
        seed = tl.load(seed_ptr + row)
        k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
        k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        token = _sample_row(
            x_row, V, buf_ptr + row * CAP, w_ptr + row * CAP, k0, k1, inv_t, s_max,
            kmin, kmax, k, top_p, min_p,
            USE_K, USE_P, USE_MP, BLOCK, SBLOCK, NPIV, CAP, JB, MAX_PASSES,
        )
    tl.store(ids_ptr + row, token.to(tl.int64))


def _param(value: float | int | torch.Tensor, dummy: torch.Tensor):
    """(pointer, scalar, per_row) kernel arguments for a number or a per-row tensor."""
    if isinstance(value, torch.Tensor):
        return value.contiguous(), 0, True
    return dummy, value, False


def sample_triton(
    logits: torch.Tensor,
    temperature: float | torch.Tensor,
    top_k: int | torch.Tensor,
    top_p: float | torch.Tensor,
    min_p: float | torch.Tensor,
    seeds: torch.Tensor,
    *,
    gather_cap: int = GATHER_CAP,
    block: int = _BLOCK,
    search_block: int = _SBLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled ids ``[batch]`` int64 and the row log-sum-exp of ``logits / T`` ``[batch]``.

    Parameters are already validated; numbers that disable a filter (``top_k <= 0``,
    ``top_p >= 1``, ``min_p <= 0``) compile it out. The keywords (powers of two) are the
    candidate buffer size and the chunk sizes of the plain and the pivot passes; small
    values exercise the search and multi-chunk paths on small vocabularies.
    """
    batch, vocab = logits.shape
    device = logits.device
    x = logits if logits.stride(-1) == 1 else logits.contiguous()
    ids = torch.empty(batch, dtype=torch.int64, device=device)
    lse = torch.empty(batch, dtype=torch.float32, device=device)
    if batch == 0:
        return ids, lse
    if isinstance(top_k, int):
        top_k = min(max(top_k, -1), vocab)
    use_k = isinstance(top_k, torch.Tensor) or 0 < top_k < vocab
    use_p = isinstance(top_p, torch.Tensor) or top_p < 1.0
    use_mp = isinstance(min_p, torch.Tensor) or min_p > 0.0
    cap = min(gather_cap, triton.next_power_of_2(vocab))
    buf = torch.empty((batch, cap), dtype=torch.int64, device=device)
    wbuf = torch.empty((batch, cap), dtype=torch.float32, device=device)
    t_ptr, t_val, t_row = _param(temperature, lse)
    k_ptr, k_val, k_row = _param(top_k, lse)
    p_ptr, p_val, p_row = _param(top_p, lse)
    mp_ptr, mp_val, mp_row = _param(min_p, lse)
    _sample_kernel[(batch,)](
        x, x.stride(0), vocab,
        t_ptr, float(t_val), k_ptr, float(k_val), p_ptr, float(p_val), mp_ptr, float(mp_val),
        seeds, ids, lse, buf, wbuf,
        T_ROW=t_row, K_ROW=k_row, P_ROW=p_row, MP_ROW=mp_row,
        USE_K=use_k, USE_P=use_p, USE_MP=use_mp,
        BLOCK=max(4, min(block, triton.next_power_of_2(vocab))),
        SBLOCK=min(search_block, triton.next_power_of_2(vocab)),
        NPIV=_NPIV, CAP=cap, JB=min(_JB, cap), MAX_PASSES=_MAX_PASSES, num_warps=8,
    )
    return ids, lse


class TritonSample(TritonBackend):
    family = "sample"
    name = "triton"
    priority = 100
    description = "Triton, one program per row, pivot search + gathered candidates; no sort"

    def not_supported_reasons(self, inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        vocab = inputs.logits.shape[-1]
        if vocab >= 2**24:
            reasons.append(f"vocab {vocab} >= 2**24 (counts are compared in float32)")
        return reasons

    def run(self, logits, temperature, top_k, top_p, min_p, seeds):
        return sample_triton(logits, temperature, top_k, top_p, min_p, seeds)
