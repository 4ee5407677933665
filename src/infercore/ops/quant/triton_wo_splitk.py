"""Weight-only GEMM for few rows (decode): memory-bound, split-K, one pass over the weight.

With ``M <= 64`` rows the work is reading the weight. The grid is ``(N tiles, K splits)``:
each program streams the rows ``BLOCK_N`` of its tile over one slice of K (long
contiguous runs of packed bytes, each read exactly once by the whole grid), with enough
splits that the grid covers every SM several times. Splits write float32 partials; the
last program of an N tile to finish (a per-tile counter) sums them in a fixed order
(deterministic), adds the bias, writes the output and resets the counter, so one launch
does it all and the counters are ready for the next call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from infercore.ops.quant.triton_dequant import (
    block_k,
    dequant_tile,
    dot_precision,
    format_meta,
    sm_count,
    store_transposed,
    weight_bits,
)
from infercore.ops.quant.weights import QuantizedWeight

#: Largest M this kernel serves; above it the tiled kernel fills the GPU without split-K.
#: Initial choice, to be tuned.
MAX_M = 64

# Tiles and pipelining: initial choices, to be tuned on the GPU. BLOCK_N = 64 rows and
# BLOCK_K = 128 values make 4-8 KB of weight per stage.
_BLOCK_N = 64
_BLOCK_K = 128
_NUM_WARPS = 4
_NUM_STAGES = 4
# Aim for this many programs per SM (several resident programs keep loads in flight) and
# never split K more than _MAX_SPLITS ways. Initial choices, to be tuned.
_PROGRAMS_PER_SM = 4
_MAX_SPLITS = 16

_COUNTERS: dict[torch.device, torch.Tensor] = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters, one per N tile; kernels leave them at zero when done."""
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[device] = buf
    return buf


@triton.jit
def _splitk_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, group_size, k_per_split,
    FORMAT: tl.constexpr, HAS_ZEROS: tl.constexpr, ZERO_POINT: tl.constexpr,
    HAS_BIAS: tl.constexpr, SPLITS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M
    x_rows = x_ptr + offs_m[None, :] * stride_xm
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        xt = tl.load(x_rows + offs_k[:, None], mask=mask_m[None, :] & (offs_k[:, None] < K),
                     other=0.0)
        w = dequant_tile(w_ptr, s_ptr, z_ptr, offs_n, mask_n, k0, K, N, stride_wn, group_size,
                         FORMAT, HAS_ZEROS, ZERO_POINT, BLOCK_K)
        acc = tl.dot(w.to(xt.dtype), xt, acc, input_precision=DOT_PRECISION)
    if SPLITS == 1:
        store_transposed(acc, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m, stride_om,
                         HAS_BIAS)
    else:
        tile = offs_m[None, :] * N + offs_n[:, None]
        mask = mask_n[:, None] & mask_m[None, :]
        tl.store(part_ptr + pid_k * M * N + tile, acc, mask=mask)
        # Every thread's partial is stored before the (release) increment publishes it.
        tl.debug_barrier()
        finished = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if finished == SPLITS - 1:
            total = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            for split in tl.static_range(SPLITS):
                total += tl.load(part_ptr + split * M * N + tile, mask=mask, other=0.0,
                                 cache_modifier=".cg")
            store_transposed(total, bias_ptr, out_ptr, offs_n, offs_m, mask_n, mask_m,
                             stride_om, HAS_BIAS)
            tl.atomic_xchg(count_ptr + pid_n, 0, sem="relaxed", scope="gpu")


def plan_splits(n_tiles: int, k_tiles: int, sms: int) -> tuple[int, int]:
    """(number of K splits, K tiles per split) so the grid covers the SMs several times."""
    wanted = max(1, -(-_PROGRAMS_PER_SM * sms // n_tiles))
    splits = min(wanted, k_tiles, _MAX_SPLITS)
    per_split = -(-k_tiles // splits)
    return -(-k_tiles // per_split), per_split


def splitk_linear(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
                  out: torch.Tensor) -> None:
    """``out [M, N] = x [M, K] @ dequant(qw)^T + bias`` for ``M <= MAX_M``; x has unit
    column stride."""
    m, k = x.shape
    n = qw.out_features
    assert 0 < m <= MAX_M
    bk = block_k(qw, _BLOCK_K)
    n_tiles = triton.cdiv(n, _BLOCK_N)
    splits, per_split = plan_splits(n_tiles, triton.cdiv(k, bk), sm_count(x.device))
    if splits > 1:
        partials = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
        counters = _counters(x.device, n_tiles)
    else:
        partials = counters = out
    zeros = qw.zeros if qw.zeros is not None else qw.scales
    _splitk_kernel[(n_tiles, splits)](
        x, weight_bits(qw), qw.scales, zeros, bias if bias is not None else out, out, partials,
        counters, m, n, k, x.stride(0), qw.qweight.stride(0), out.stride(0), qw.group_size,
        per_split * bk,
        **format_meta(qw), HAS_BIAS=bias is not None, SPLITS=splits,
        DOT_PRECISION=dot_precision(x.dtype), BLOCK_M=max(16, triton.next_power_of_2(m)),
        BLOCK_N=_BLOCK_N, BLOCK_K=bk, num_warps=_NUM_WARPS, num_stages=_NUM_STAGES,
    )
