"""Triton attention kernels: one tiled flash-attention kernel for every layout, and the
reduction that merges split-KV partial results.

Tile: the query heads that share one KV head are processed together. A tile holds
``BLOCK_Q`` query tokens x ``GROUP_PAD`` heads = ``BLOCK_M`` rows (row ``r`` is token
``r // GROUP_PAD``, head ``r % GROUP_PAD`` of the group), so each K/V tile loaded from
memory serves every query head of its KV head (GQA/MQA read each KV byte once per tile).
The kernel walks keys in ``BLOCK_N`` steps with an online softmax in the exp2 domain
(scale folded with log2(e)), fp32 accumulation, and ``tl.dot`` on the input dtype.
Keys are split in up to three ranges: a masked one at the left edge of the sliding
window, an unmasked middle, and a masked right edge (causal diagonal, sequence end), so
only boundary tiles pay for masks; tiles wholly past the causal diagonal are never visited.

Where tiles come from (``TILING``):

- ``0``: one tile per sequence (program 0 = sequence): decodes and short query runs
  (``len_q <= BLOCK_Q``); with ``SPLIT_KV`` split along the keys into ``num_splits``
  programs (flash-decoding), merged by :func:`_split_reduce_kernel`.
- ``1``: tiles of ``BLOCK_Q`` tokens found by binary search: sequence ``s`` owns tile
  indices from ``cu_q[s] // BLOCK_Q + s``, so ``total_q // BLOCK_Q + num_seqs`` programs
  cover any batch without reading its lengths on the host.
- ``2``: tiles listed by a plan in ``tile_map`` (``[seq, first query]`` pairs, ``-1`` ends).

Tiled launches run their tiles in reverse order (longest causal tiles first).

With ``MAX_SMALL_Q > 0`` tiled programs skip sequences with ``len_q <= MAX_SMALL_Q``,
which a ``TILING=0`` launch serves: one call handles a batch mixing prefill chunks and
decodes with a tile shape fit for each.

Keys come from a packed ``[total_k, num_kv_heads, head_dim]`` tensor (``PAGED=False``,
offsets ``cu_k``) or from a paged cache ``[num_blocks, PAGE_SIZE, num_kv_heads,
head_dim]`` through ``block_tables`` (``PAGED=True``); all strides are arguments.
"""

from __future__ import annotations

import triton
import triton.language as tl

_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _find_seq(cu_q_ptr, tile, num_seqs, BLOCK_Q: tl.constexpr):
    """The sequence owning ``tile``: the last ``s`` with ``cu_q[s] // BLOCK_Q + s <= tile``."""
    lo: tl.int32 = 0
    hi = num_seqs - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tl.load(cu_q_ptr + mid) // BLOCK_Q + mid <= tile:
            lo = mid
        else:
            hi = mid - 1
    return lo


@triton.jit
def _attend_range(
    acc, l_i, m_i, q, start, end,
    k_ptr, v_ptr, bt_ptr, k_base, len_k, qpos,
    stride_kb, stride_ks, stride_vb, stride_vs,
    qk_scale, softcap_log2, window,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online-softmax update of (acc, l_i, m_i) with keys ``[start, end)`` in BLOCK_N steps.

    ``MASKED`` tiles apply the sequence end, causal and window masks; unmasked tiles are
    known to lie wholly inside every row's visible range.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_ok = offs_d < HEAD_DIM
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    for n0 in range(start, end, BLOCK_N):
        kpos = n0 + offs_n
        key_ok = kpos < len_k
        if PAGED:
            # Block ids are read at positions clamped to the sequence's last key, and lanes
            # past it read block 0 (``other``): every address formed from them is valid, even
            # for lanes a mask or a pipelined (prefetched) iteration drops. Entries past
            # ``len_k`` may hold anything. (Loading the next step's ids one step ahead by hand
            # measured slower on an H200: decode batch 64 x 4096 3225 vs 4153 GB/s.)
            blk = tl.load(bt_ptr + tl.minimum(kpos, len_k - 1) // PAGE_SIZE, mask=key_ok,
                          other=0).to(tl.int64)
            slot = kpos % PAGE_SIZE
            k_off = blk * stride_kb + slot * stride_ks
            v_off = blk * stride_vb + slot * stride_vs
        else:
            row = (k_base + kpos).to(tl.int64)
            k_off = row * stride_kb
            v_off = row * stride_vb
        # Only the masks that are needed: none on aligned interior tiles.
        k_ptrs = k_ptr + k_off[None, :] + offs_d[:, None]
        if MASKED and PAD_D:
            k = tl.load(k_ptrs, mask=key_ok[None, :] & d_ok[:, None], other=0.0)
        elif MASKED:
            k = tl.load(k_ptrs, mask=key_ok[None, :], other=0.0)
        elif PAD_D:
            k = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
        s = tl.dot(q, k.to(q.dtype), input_precision=DOT_PRECISION)
        if HAS_SOFTCAP:
            # softcap * tanh(x), tanh(x) = 1 - 2 / (exp(2x) + 1); qk_scale = scale / softcap.
            x = s * qk_scale
            s = softcap_log2 * (1.0 - 2.0 / (tl.exp2(x * (2.0 * _LOG2E)) + 1.0))
        else:
            s = s * qk_scale
        if MASKED:
            ok = key_ok[None, :]
            if CAUSAL:
                ok = ok & (kpos[None, :] <= qpos[:, None])
            if HAS_WINDOW:
                ok = ok & (kpos[None, :] > qpos[:, None] - window)
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # Rows that have seen no key yet keep m = -inf; exponentiate against 0 instead.
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = m_new
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = v_ptr + v_off[:, None] + offs_d[None, :]
        if MASKED and PAD_D:
            v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0)
        elif MASKED:
            v = tl.load(v_ptrs, mask=key_ok[:, None], other=0.0)
        elif PAD_D:
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype),
                                            input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


# Batch sizes and windows vary per call: not specializing them avoids a compile per value.
@triton.jit(do_not_specialize=["num_seqs", "window", "num_splits"])
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, part_o_ptr, part_lse_ptr,
    cu_q_ptr, cu_k_ptr, seq_lens_ptr, block_tables_ptr, tile_map_ptr,
    k_scale_ptr, v_scale_ptr,
    sm_scale, softcap, window, num_seqs, num_heads, num_splits,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr,
    PAGED: tl.constexpr, TILING: tl.constexpr, ONE_Q_PER_SEQ: tl.constexpr,
    MAX_SMALL_Q: tl.constexpr, SPLIT_KV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_KV_SCALE: tl.constexpr, RETURN_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    BLOCK_M: tl.constexpr = BLOCK_Q * GROUP_PAD
    if TILING == 0:
        pid = tl.program_id(0)
    else:
        # Tiles run last-first: under a causal mask a sequence's last tiles walk the most
        # keys, and starting them first shortens the tail of the launch.
        pid = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    # -- which sequence and which of its queries this program serves --------------------
    if TILING == 0:
        seq = pid
        q_start = 0
    elif TILING == 1:
        seq = _find_seq(cu_q_ptr, pid, num_seqs, BLOCK_Q)
        q_start = (pid - tl.load(cu_q_ptr + seq) // BLOCK_Q - seq) * BLOCK_Q
    else:
        seq = tl.load(tile_map_ptr + 2 * pid)
        q_start = tl.load(tile_map_ptr + 2 * pid + 1)
        if seq < 0:
            return
    if ONE_Q_PER_SEQ:
        q_base = seq
        len_q = 1
    else:
        q_base = tl.load(cu_q_ptr + seq)
        len_q = tl.load(cu_q_ptr + seq + 1) - q_base
    if TILING == 0:
        if (len_q == 0) | (len_q > BLOCK_Q):
            return
    else:
        if (q_start >= len_q) | (len_q <= MAX_SMALL_Q):
            return
    if PAGED:
        k_base = 0
        len_k = tl.load(seq_lens_ptr + seq)
    else:
        k_base = tl.load(cu_k_ptr + seq)
        len_k = tl.load(cu_k_ptr + seq + 1) - k_base

    # -- the tile's query rows ------------------------------------------------------------
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    tok = q_start + offs_m // GROUP_PAD
    head_in_group = offs_m % GROUP_PAD
    head = kv_head * GROUP + head_in_group
    row_ok = (tok < len_q) & (head_in_group < GROUP)
    qpos = len_k - len_q + tok  # each query's position among the keys (aligned to the end)
    q_rows = (q_base + tok).to(tl.int64)
    q_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=q_mask, other=0.0)

    # -- key ranges: [lo, hi) needed; [full_lo, full_hi) needs no mask -------------------
    pos_first = len_k - len_q + q_start
    pos_last = len_k - len_q + tl.minimum(q_start + BLOCK_Q, len_q) - 1
    hi = len_k
    full_hi = len_k
    if CAUSAL:
        hi = tl.minimum(hi, pos_last + 1)
        full_hi = tl.minimum(full_hi, tl.maximum(pos_first + 1, 0))
    full_hi = full_hi // BLOCK_N * BLOCK_N
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(pos_first - window + 1, 0) // BLOCK_N * BLOCK_N
        full_lo = tl.cdiv(tl.maximum(pos_last - window + 1, 0), BLOCK_N) * BLOCK_N
        no_interior = full_hi < full_lo
        full_lo = tl.where(no_interior, lo, full_lo)
        full_hi = tl.where(no_interior, lo, full_hi)
    else:
        full_lo = lo
    if SPLIT_KV:
        chunk = tl.cdiv(tl.cdiv(tl.maximum(hi - lo, 0), num_splits), BLOCK_N) * BLOCK_N
        s_lo = lo + split * chunk
        s_hi = tl.minimum(hi, s_lo + chunk)
    else:
        s_lo = lo
        s_hi = hi

    # -- online softmax over the three ranges -------------------------------------------
    sm_scale_k = sm_scale
    if HAS_KV_SCALE:
        sm_scale_k = sm_scale * tl.load(k_scale_ptr)
    if HAS_SOFTCAP:
        qk_scale = sm_scale_k / softcap
        softcap_log2 = softcap * _LOG2E
    else:
        qk_scale = sm_scale_k * _LOG2E
        softcap_log2 = 0.0
    k_head_ptr = k_ptr + kv_head.to(tl.int64) * stride_kh
    v_head_ptr = v_ptr + kv_head.to(tl.int64) * stride_vh
    bt_ptr = block_tables_ptr + seq.to(tl.int64) * stride_bt
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    if HAS_WINDOW:
        acc, l_i, m_i = _attend_range(
            acc, l_i, m_i, q, s_lo, tl.minimum(full_lo, s_hi),
            k_head_ptr, v_head_ptr, bt_ptr, k_base, len_k, qpos,
            stride_kb, stride_ks, stride_vb, stride_vs, qk_scale, softcap_log2, window,
            HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, PAGE_SIZE, PAGED, True,
            CAUSAL, HAS_WINDOW, HAS_SOFTCAP, DOT_PRECISION,
        )
    acc, l_i, m_i = _attend_range(
        acc, l_i, m_i, q, tl.maximum(s_lo, full_lo), tl.minimum(full_hi, s_hi),
        k_head_ptr, v_head_ptr, bt_ptr, k_base, len_k, qpos,
        stride_kb, stride_ks, stride_vb, stride_vs, qk_scale, softcap_log2, window,
        HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, PAGE_SIZE, PAGED, False,
        CAUSAL, HAS_WINDOW, HAS_SOFTCAP, DOT_PRECISION,
    )
    acc, l_i, m_i = _attend_range(
        acc, l_i, m_i, q, tl.maximum(s_lo, full_hi), s_hi,
        k_head_ptr, v_head_ptr, bt_ptr, k_base, len_k, qpos,
        stride_kb, stride_ks, stride_vb, stride_vs, qk_scale, softcap_log2, window,
        HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, PAGE_SIZE, PAGED, True,
        CAUSAL, HAS_WINDOW, HAS_SOFTCAP, DOT_PRECISION,
    )

    # -- epilogue -------------------------------------------------------------------------
    seen = l_i > 0.0
    o = acc / tl.where(seen, l_i, 1.0)[:, None]
    if HAS_KV_SCALE:
        o = o * tl.load(v_scale_ptr)
    lse2 = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
    if SPLIT_KV:
        # Partial results [seq * BLOCK_Q + tok, head, split, :] in float32, LSE in log2 units.
        prow = (seq * BLOCK_Q + tok).to(tl.int64) * num_heads + head
        tl.store(part_o_ptr + (prow[:, None] * num_splits + split) * HEAD_DIM + offs_d[None, :],
                 o, mask=q_mask)
        tl.store(part_lse_ptr + prow * num_splits + split, lse2, mask=row_ok)
    else:
        tl.store(out_ptr + q_rows[:, None] * stride_ot + head[:, None] * stride_oh
                 + offs_d[None, :], o.to(out_ptr.dtype.element_ty), mask=q_mask)
        if RETURN_LSE:
            tl.store(lse_ptr + q_rows * num_heads + head, lse2 * _LN2, mask=row_ok)


@triton.jit(do_not_specialize=["num_splits"])
def _split_reduce_kernel(
    part_o_ptr, part_lse_ptr, out_ptr, lse_ptr, cu_q_ptr,
    num_heads, num_splits, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr,
    BLOCK_Q: tl.constexpr, ONE_Q_PER_SEQ: tl.constexpr, RETURN_LSE: tl.constexpr,
):
    """Merge the ``num_splits`` partial results of one (query, head): weights
    ``2**(lse_s - max)``; splits that saw no key carry ``lse = -inf`` and weigh 0."""
    prow = tl.program_id(0)
    head = tl.program_id(1)
    seq = prow // BLOCK_Q
    tok = prow % BLOCK_Q
    if ONE_Q_PER_SEQ:
        q_base = seq
        len_q = 1
    else:
        q_base = tl.load(cu_q_ptr + seq)
        len_q = tl.load(cu_q_ptr + seq + 1) - q_base
    if (tok >= len_q) | (len_q > BLOCK_Q):
        return
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    s_ok = offs_s < num_splits
    base = (prow.to(tl.int64) * num_heads + head) * num_splits
    lse_s = tl.load(part_lse_ptr + base + offs_s, mask=s_ok, other=float("-inf"))
    m = tl.max(lse_s, 0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse_s - m)
    total = tl.sum(w, 0)
    o_s = tl.load(part_o_ptr + (base + offs_s[:, None]) * HEAD_DIM + offs_d[None, :],
                  mask=s_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    o = tl.sum(w[:, None] * o_s, 0) / tl.where(total > 0.0, total, 1.0)
    row = (q_base + tok).to(tl.int64)
    tl.store(out_ptr + row * stride_ot + head * stride_oh + offs_d,
             o.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_DIM)
    if RETURN_LSE:
        lse = tl.where(total > 0.0, (m + tl.log2(tl.where(total > 0.0, total, 1.0))) * _LN2,
                       float("-inf"))
        tl.store(lse_ptr + row * num_heads + head, lse)
