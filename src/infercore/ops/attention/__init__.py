"""Attention ops: packed variable-length (``attention.varlen``), paged chunked prefill +
decode (``attention.paged``), all-decode flash-decoding (``attention.decode``), and the
plan/run :class:`PagedAttentionWrapper`.

Conventions shared by every op and backend:

- Queries are the *last* ``len_q`` tokens of their sequence: query ``i`` sits at key
  position ``p = len_k - len_q + i``. ``causal`` lets it see keys ``j <= p``.
- ``sliding_window=W`` lets it see only keys ``j > p - W``: with ``causal``, the ``W``
  most recent keys ``(p - W, p]`` including itself (Mistral's ``sliding_window``,
  FlashAttention's ``window_size=(W - 1, 0)``). Without ``causal`` only the left bound
  applies.
- ``softcap=c`` caps scores as ``c * tanh(scores / c)`` (after ``scale``, before masking).
- Default ``scale`` is ``1 / sqrt(head_dim)``. A query that sees no key (a causal query
  of a sequence with ``len_q > len_k``) gets zeros and LSE ``-inf``.
- GQA/MQA: query head ``h`` attends with KV head ``h // (num_heads // num_kv_heads)``.
- Caches ``[num_blocks, block_size, num_kv_heads, head_dim]`` hold ``x / k_scale`` and
  ``x / v_scale`` (float8_e4m3fn or the query dtype); reads multiply the scale back.
- ``skip_checks=True`` skips every argument check (shapes and the value checks that read
  index tensors from the device, one synchronization), for hot paths and CUDA-graph
  capture. Checks never turn off by themselves.
"""

from __future__ import annotations

import math

import torch

from infercore.ops.attention import checks as C
from infercore.ops.attention.inputs import PagedInputs, VarlenInputs
from infercore.ops.attention.wrapper import PagedAttentionWrapper
from infercore.registry import resolve

__all__ = [
    "HEAD_DIMS",
    "PagedAttentionWrapper",
    "PagedInputs",
    "VarlenInputs",
    "decode",
    "paged",
    "varlen",
]

HEAD_DIMS = C.HEAD_DIMS


def _default_scale(scale: float | None, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _outputs(q: torch.Tensor, out: torch.Tensor | None, return_lse: bool, skip_checks: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    elif not skip_checks:
        C.check_out(out, tuple(q.shape), q.dtype, q.device)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
    return out, lse


def _result(out: torch.Tensor, lse: torch.Tensor | None):
    return out if lse is None else (out, lse)


# -- varlen -------------------------------------------------------------------------------


def _check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                  scale, sliding_window, softcap) -> None:
    C.check_query(q)
    for name, t in (("k", k), ("v", v)):
        C.check_tensor(name, t, ndim=3, dtypes=(q.dtype,))
    C.check_same_shape("k", k, "v", v)
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"k has head_dim {k.shape[2]}, q has {q.shape[2]}: they must be equal")
    C.num_kv_groups(q.shape[1], k.shape[1], "k")
    C.check_index("cu_seqlens_q", cu_seqlens_q, None)
    batch = cu_seqlens_q.shape[0] - 1
    if batch < 0:
        raise ValueError("cu_seqlens_q must have shape [batch + 1], got an empty tensor")
    C.check_index("cu_seqlens_k", cu_seqlens_k, (batch + 1,))
    C.check_seqlen_bound("max_seqlen_q", max_seqlen_q)
    C.check_seqlen_bound("max_seqlen_k", max_seqlen_k)
    C.check_scalar_options(scale, sliding_window, softcap)
    C.check_devices(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale,
            sliding_window, softcap, out, lse, skip_checks, backend) -> None:
    if not skip_checks:
        C.check_values(q.device, [
            *C.cu_seqlens_conditions("cu_seqlens_q", cu_seqlens_q, q.shape[0], "max_seqlen_q",
                                     max_seqlen_q),
            *C.cu_seqlens_conditions("cu_seqlens_k", cu_seqlens_k, k.shape[0], "max_seqlen_k",
                                     max_seqlen_k),
        ])
    inputs = VarlenInputs(q, k, v, causal, sliding_window, softcap)
    resolve("attention.varlen", inputs, backend).run(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal,
        scale=scale, sliding_window=sliding_window, softcap=softcap, out=out, lse=lse,
    )


@torch.library.custom_op("infercore::attention_varlen", mutates_args=("out", "lse"))
def _varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
               cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
               scale: float, sliding_window: int | None, softcap: float | None,
               out: torch.Tensor, lse: torch.Tensor | None, skip_checks: bool,
               backend: str) -> None:
    _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale,
            sliding_window, softcap, out, lse, skip_checks, backend)


@_varlen_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale,
      sliding_window, softcap, out, lse, skip_checks, backend) -> None:
    return None


def varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    return_lse: bool = False,
    out: torch.Tensor | None = None,
    skip_checks: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Flash attention over packed variable-length sequences (no score matrix in memory).

    Parameters
    ----------
    q : Tensor ``[total_q, num_heads, head_dim]``, float16 / bfloat16 / float32
        Queries of all sequences, packed; ``head_dim`` in :data:`HEAD_DIMS`.
    k, v : Tensor ``[total_k, num_kv_heads, head_dim]``, dtype of ``q``
        ``num_heads % num_kv_heads == 0`` (GQA/MQA). Token and head strides are free.
    cu_seqlens_q, cu_seqlens_k : Tensor ``[batch + 1]``, int32
        Offsets of each sequence in ``q`` / ``k``: from 0, non-decreasing, ending at
        ``total_q`` / ``total_k``.
    max_seqlen_q, max_seqlen_k : int
        Bounds on the longest query / key sequence (host ints: no synchronization).
    causal : bool
        Causal mask aligned to the end: query ``i`` of a sequence sees keys up to
        ``len_k - len_q + i``.
    scale : float, optional
        Score scale; ``1 / sqrt(head_dim)`` by default.
    sliding_window : int, optional
        Query at key position ``p`` sees keys in ``(p - sliding_window, p]`` (causal).
    softcap : float, optional
        Scores become ``softcap * tanh(scores / softcap)``.
    return_lse : bool
        Also return the log-sum-exp of the scaled scores, ``[total_q, num_heads]`` float32
        (natural log; ``-inf`` for queries that see no key).
    out : Tensor ``[total_q, num_heads, head_dim]``, dtype of ``q``, optional
        Written in place (unit stride in the last dim); allocated when omitted.
    skip_checks : bool
        Skip argument checks, including the value checks that synchronize.
    backend : str
        ``"auto"`` or a backend of ``attention.varlen`` (``"triton"``, ``"reference"``).

    Returns
    -------
    out, or ``(out, lse)`` with ``return_lse``.

    Examples
    --------
    >>> q = torch.randn(7, 32, 128, dtype=torch.bfloat16, device="cuda")
    >>> k = torch.randn(7, 8, 128, dtype=torch.bfloat16, device="cuda")
    >>> cu = torch.tensor([0, 3, 7], dtype=torch.int32, device="cuda")
    >>> o = infercore.ops.attention.varlen(q, k, k, cu, cu, 4, 4)

    Also ``torch.ops.infercore.attention_varlen`` (writes ``out``/``lse`` in place).
    """
    if not skip_checks:
        _check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      scale, sliding_window, softcap)
    out, lse = _outputs(q, out, return_lse, skip_checks)
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
            bool(causal), _default_scale(scale, q.shape[2]), sliding_window,
            None if softcap is None else float(softcap), out, lse, skip_checks, backend)
    if torch.compiler.is_compiling():
        torch.ops.infercore.attention_varlen(*args)
    else:
        _varlen(*args)
    return _result(out, lse)


# -- paged --------------------------------------------------------------------------------


def _check_paged(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window,
                 softcap) -> int:
    """Shape checks shared by ``paged`` and ``decode``; returns the batch size."""
    C.check_query(q)
    C.check_cache_pair(k_cache, v_cache, q.shape[2], value_dtype=q.dtype)
    C.num_kv_groups(q.shape[1], k_cache.shape[2], "k_cache")
    C.check_index("block_tables", block_tables, None, ndim=2)
    batch = block_tables.shape[0]
    C.check_index("seq_lens", seq_lens, (batch,))
    C.check_scalar_options(scale, sliding_window, softcap)
    C.check_devices(q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables,
                    seq_lens=seq_lens)
    return batch


def _kv_scales(k_scale, v_scale, device: torch.device):
    return (C.kv_scale_tensor("k_scale", k_scale, device),
            C.kv_scale_tensor("v_scale", v_scale, device))


def _paged(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, max_seqlen_q, causal,
           scale, sliding_window, softcap, k_scale, v_scale, out, lse, skip_checks,
           backend) -> None:
    if not skip_checks:
        C.check_values(q.device, [
            *C.cu_seqlens_conditions("cu_seqlens_q", cu_seqlens_q, q.shape[0], "max_seqlen_q",
                                     max_seqlen_q),
            *C.paged_conditions(block_tables, seq_lens, cu_seqlens_q[1:] - cu_seqlens_q[:-1],
                                k_cache.shape[0], k_cache.shape[1]),
        ])
    inputs = PagedInputs(q, k_cache, v_cache, causal, sliding_window, softcap)
    resolve("attention.paged", inputs, backend).run(
        q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, max_seqlen_q, causal=causal,
        scale=scale, sliding_window=sliding_window, softcap=softcap, k_scale=k_scale,
        v_scale=v_scale, out=out, lse=lse,
    )


@torch.library.custom_op("infercore::attention_paged", mutates_args=("out", "lse"))
def _paged_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              block_tables: torch.Tensor, seq_lens: torch.Tensor, cu_seqlens_q: torch.Tensor,
              max_seqlen_q: int, causal: bool, scale: float, sliding_window: int | None,
              softcap: float | None, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None,
              out: torch.Tensor, lse: torch.Tensor | None, skip_checks: bool,
              backend: str) -> None:
    _paged(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, max_seqlen_q, causal,
           scale, sliding_window, softcap, k_scale, v_scale, out, lse, skip_checks, backend)


@_paged_op.register_fake
def _(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, max_seqlen_q, causal, scale,
      sliding_window, softcap, k_scale, v_scale, out, lse, skip_checks, backend) -> None:
    return None


def paged(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    max_seqlen_q: int,
    *,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    return_lse: bool = False,
    out: torch.Tensor | None = None,
    skip_checks: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of packed queries over a paged KV cache: chunked prefill and decodes mixed
    in one call. Each sequence's queries are its last ``len_q`` tokens, whose K/V are
    already in the cache (write them first with :func:`infercore.ops.kv.write`).

    Parameters
    ----------
    q : Tensor ``[total_q, num_heads, head_dim]``, float16 / bfloat16 / float32
    k_cache, v_cache : Tensor ``[num_blocks, block_size, num_kv_heads, head_dim]``
        Dtype of ``q`` or float8_e4m3fn; any block/slot/head strides (views into a shared
        K/V tensor work), unit stride in the last dim.
    block_tables : Tensor ``[batch, max_blocks]``, int32
        Block ids of each sequence, in order; entries past ``seq_lens`` are not read.
    seq_lens : Tensor ``[batch]``, int32
        Tokens in the cache per sequence, the new ones included; at most
        ``max_blocks * block_size`` and at least the sequence's query length.
    cu_seqlens_q : Tensor ``[batch + 1]``, int32
        Query offsets in ``q``: from 0, non-decreasing, ending at ``total_q``.
    max_seqlen_q : int
        Bound on the longest query run; ``1`` means an all-decode batch.
    causal, scale, sliding_window, softcap, return_lse, out, skip_checks
        As in :func:`varlen`.
    k_scale, v_scale : float or Tensor ``[1]`` float32, optional
        The caches hold ``x / scale``; default 1.
    backend : str
        ``"auto"`` or a backend of ``attention.paged``.

    Returns
    -------
    out ``[total_q, num_heads, head_dim]`` (dtype of ``q``), or ``(out, lse)``.

    Examples
    --------
    >>> out = infercore.ops.attention.paged(q, k_cache, v_cache, block_tables, seq_lens,
    ...                                     cu_seqlens_q, max_seqlen_q=512)

    Also ``torch.ops.infercore.attention_paged``. For a step with many layers, or CUDA
    graphs with fixed buffers, plan once with :class:`PagedAttentionWrapper`.
    """
    if not skip_checks:
        batch = _check_paged(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window,
                             softcap)
        C.check_index("cu_seqlens_q", cu_seqlens_q, (batch + 1,))
        C.check_devices(q=q, cu_seqlens_q=cu_seqlens_q)
        C.check_seqlen_bound("max_seqlen_q", max_seqlen_q)
    k_scale, v_scale = _kv_scales(k_scale, v_scale, q.device)
    out, lse = _outputs(q, out, return_lse, skip_checks)
    args = (q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, int(max_seqlen_q),
            bool(causal), _default_scale(scale, q.shape[2]), sliding_window,
            None if softcap is None else float(softcap), k_scale, v_scale, out, lse,
            skip_checks, backend)
    if torch.compiler.is_compiling():
        torch.ops.infercore.attention_paged(*args)
    else:
        _paged(*args)
    return _result(out, lse)


# -- decode -------------------------------------------------------------------------------


def _decode(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window, softcap,
            k_scale, v_scale, num_splits, out, lse, skip_checks, backend) -> None:
    if not skip_checks:
        ones = torch.ones_like(seq_lens)
        C.check_values(q.device, C.paged_conditions(block_tables, seq_lens, ones,
                                                    k_cache.shape[0], k_cache.shape[1]))
    inputs = PagedInputs(q, k_cache, v_cache, True, sliding_window, softcap, block_tables)
    resolve("attention.decode", inputs, backend).run(
        q, k_cache, v_cache, block_tables, seq_lens, scale=scale, sliding_window=sliding_window,
        softcap=softcap, k_scale=k_scale, v_scale=v_scale, num_splits=num_splits, out=out,
        lse=lse,
    )


@torch.library.custom_op("infercore::attention_decode", mutates_args=("out", "lse"))
def _decode_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
               sliding_window: int | None, softcap: float | None, k_scale: torch.Tensor | None,
               v_scale: torch.Tensor | None, num_splits: int | None, out: torch.Tensor,
               lse: torch.Tensor | None, skip_checks: bool, backend: str) -> None:
    _decode(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window, softcap,
            k_scale, v_scale, num_splits, out, lse, skip_checks, backend)


@_decode_op.register_fake
def _(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window, softcap, k_scale,
      v_scale, num_splits, out, lse, skip_checks, backend) -> None:
    return None


def decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    num_splits: int | None = None,
    return_lse: bool = False,
    out: torch.Tensor | None = None,
    skip_checks: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One new token per sequence attending to its whole cached context (flash-decoding).

    Family ``attention.decode``: the all-decode case of :func:`paged` with its own layout
    (``q`` ``[batch, ...]``, no ``cu_seqlens_q``). Keys are split across programs so one
    long sequence still fills the GPU, and the query heads of a KV head share each tile.

    Parameters
    ----------
    q : Tensor ``[batch, num_heads, head_dim]``, float16 / bfloat16 / float32
        The newest token of each sequence (position ``seq_lens[b] - 1``).
    k_cache, v_cache, block_tables, seq_lens, k_scale, v_scale
        As in :func:`paged`; ``seq_lens >= 1``.
    scale, sliding_window, softcap, return_lse, out, skip_checks
        As in :func:`varlen`.
    num_splits : int, optional
        Key splits per sequence; chosen from the batch, the KV heads, the block table's
        capacity and the SM count when omitted.
    backend : str
        ``"auto"`` or a backend of ``attention.decode``.

    Returns
    -------
    out ``[batch, num_heads, head_dim]`` (dtype of ``q``), or ``(out, lse)``.

    Examples
    --------
    >>> out = infercore.ops.attention.decode(q, k_cache, v_cache, block_tables, seq_lens)
    """
    if not skip_checks:
        batch = _check_paged(q, k_cache, v_cache, block_tables, seq_lens, scale, sliding_window,
                             softcap)
        if q.shape[0] != batch:
            raise ValueError(
                f"q has {q.shape[0]} sequences but block_tables has {batch} rows: they must match"
            )
        C.check_positive("num_splits", num_splits, int)
    k_scale, v_scale = _kv_scales(k_scale, v_scale, q.device)
    out, lse = _outputs(q, out, return_lse, skip_checks)
    args = (q, k_cache, v_cache, block_tables, seq_lens, _default_scale(scale, q.shape[2]),
            sliding_window, None if softcap is None else float(softcap), k_scale, v_scale,
            num_splits, out, lse, skip_checks, backend)
    if torch.compiler.is_compiling():
        torch.ops.infercore.attention_decode(*args)
    else:
        _decode(*args)
    return _result(out, lse)
