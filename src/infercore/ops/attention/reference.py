"""Reference attention in plain PyTorch: the correctness oracle and the CPU path.

Materializes each sequence's score matrix (in chunks of heads) in float32, or float64
when the queries are float64, so it is exact but slow and memory-hungry.
"""

from __future__ import annotations

import math

import torch

from infercore.registry import Backend

__all__ = [
    "ReferenceDecode",
    "ReferencePaged",
    "ReferenceVarlen",
    "attend",
    "gather_kv",
    "paged_attention_reference",
    "varlen_attention_reference",
]

# Score elements materialized at once per sequence (float32: 256 MiB).
_CHUNK_ELEMENTS = 1 << 26


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scale_value(scale: torch.Tensor | float | None) -> float:
    return 1.0 if scale is None else float(scale)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one sequence.

    Query ``i`` of ``len_q`` sits at key position ``p = len_k - len_q + i`` and sees key
    ``j`` when ``j <= p`` (if ``causal``) and ``j > p - sliding_window`` (if set). Rows
    that see no key give zeros and an LSE of ``-inf``.

    Parameters
    ----------
    q : ``[len_q, num_heads, head_dim]``; k, v : ``[len_k, num_kv_heads, head_dim]``
        Computed in ``q.dtype`` (float32 or float64).

    Returns
    -------
    out ``[len_q, num_heads, head_dim]`` and lse ``[len_q, num_heads]`` (natural log).
    """
    len_q, num_heads, _ = q.shape
    len_k, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    qpos = torch.arange(len_q, device=q.device) + (len_k - len_q)
    kpos = torch.arange(len_k, device=q.device)
    allowed = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device)
    if causal:
        allowed &= kpos[None, :] <= qpos[:, None]
    if sliding_window is not None:
        allowed &= kpos[None, :] > qpos[:, None] - sliding_window
    out = torch.empty_like(q)
    lse = torch.empty(len_q, num_heads, dtype=q.dtype, device=q.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, len_q * len_k))
    for h0 in range(0, num_heads, step):
        h1 = min(num_heads, h0 + step)
        s = torch.einsum("qhd,khd->hqk", q[:, h0:h1], k[:, h0:h1]) * scale
        if softcap is not None:
            s = softcap * torch.tanh(s / softcap)
        s = s.masked_fill(~allowed, float("-inf"))
        lse_h = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse_h[..., None])
        p = torch.where(torch.isfinite(lse_h)[..., None], p, torch.zeros_like(p))
        out[:, h0:h1] = torch.einsum("hqk,khd->qhd", p, v[:, h0:h1])
        lse[:, h0:h1] = lse_h.transpose(0, 1)
    return out, lse


def varlen_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed variable-length attention; returns (out, lse) in float32 (float64 for float64 q)."""
    ct = _compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=ct, device=q.device)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        o, l = attend(
            q[cq[b] : cq[b + 1]].to(ct), k[ck[b] : ck[b + 1]].to(ct), v[ck[b] : ck[b + 1]].to(ct),
            causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap,
        )
        out[cq[b] : cq[b + 1]], lse[cq[b] : cq[b + 1]] = o, l
    return out, lse


def gather_kv(cache: torch.Tensor, block_row: torch.Tensor, length: int, dtype: torch.dtype,
              scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """The first ``length`` tokens ``[length, num_kv_heads, head_dim]`` of one sequence of a
    paged cache, in ``dtype``, multiplied by ``scale`` (the cache stores ``x / scale``)."""
    block_size = cache.shape[1]
    n_blocks = -(-length // block_size)
    blocks = cache[block_row[:n_blocks].long()].to(dtype)
    kv = blocks.reshape(n_blocks * block_size, *cache.shape[2:])[:length]
    return kv * _scale_value(scale)


def paged_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    k_scale: torch.Tensor | float | None = None,
    v_scale: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of packed queries over a paged cache; returns (out, lse) in float32
    (float64 for float64 q). Queries are the last tokens of each sequence."""
    ct = _compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=ct, device=q.device)
    cq, lens = cu_seqlens_q.tolist(), seq_lens.tolist()
    for b, n in enumerate(lens):
        if cq[b + 1] == cq[b]:
            continue
        k = gather_kv(k_cache, block_tables[b], n, ct, k_scale)
        v = gather_kv(v_cache, block_tables[b], n, ct, v_scale)
        o, l = attend(
            q[cq[b] : cq[b + 1]].to(ct), k, v,
            causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap,
        )
        out[cq[b] : cq[b + 1]], lse[cq[b] : cq[b + 1]] = o, l
    return out, lse


def _write(out: torch.Tensor, lse: torch.Tensor | None,
           result: tuple[torch.Tensor, torch.Tensor]) -> None:
    out.copy_(result[0])
    if lse is not None:
        lse.copy_(result[1])


class ReferenceVarlen(Backend):
    family = "attention.varlen"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math, materialized scores; any device"
    graph_safe = False  # per-sequence loops over lengths read on the host

    def run(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
            causal, scale, sliding_window, softcap, out, lse) -> None:
        _write(out, lse, varlen_attention_reference(
            q, k, v, cu_seqlens_q, cu_seqlens_k,
            causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap,
        ))


class ReferencePaged(Backend):
    family = "attention.paged"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math, gathers each sequence's blocks; any device"
    graph_safe = False  # per-sequence loops over lengths read on the host

    def run(self, q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, max_seqlen_q, *,
            causal, scale, sliding_window, softcap, k_scale, v_scale, out, lse) -> None:
        _write(out, lse, paged_attention_reference(
            q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q,
            causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap,
            k_scale=k_scale, v_scale=v_scale,
        ))


class ReferenceDecode(Backend):
    family = "attention.decode"
    name = "reference"
    priority = 0
    description = "PyTorch, float32 math, gathers each sequence's blocks; any device"
    graph_safe = False  # per-sequence loops over lengths read on the host

    def run(self, q, k_cache, v_cache, block_tables, seq_lens, *,
            scale, sliding_window, softcap, k_scale, v_scale, num_splits, out, lse) -> None:
        cu = torch.arange(q.shape[0] + 1, dtype=torch.int32, device=q.device)
        _write(out, lse, paged_attention_reference(
            q, k_cache, v_cache, block_tables, seq_lens, cu,
            causal=True, scale=scale, sliding_window=sliding_window, softcap=softcap,
            k_scale=k_scale, v_scale=v_scale,
        ))
