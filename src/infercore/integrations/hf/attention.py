"""The ``"infercore"`` attention implementation for transformers.

transformers calls an attention function with padded tensors ``[batch, heads, seq,
head_dim]`` and the mask its mask function built. Here the mask function hands over the
2D padding mask (``True`` = real token) and the attention function packs the real tokens
into infercore's variable-length layout, runs :func:`infercore.ops.attention.varlen`
(GQA K/V passed with their own head count, not repeated) and scatters the result back
to ``[batch, seq, heads, head_dim]``, zeros at padded query positions.

Queries are the last ``q_len`` positions of the keys (a KV cache's past comes first),
so dropping padding keeps every real query at the end of its row's real keys, where
varlen's end-aligned causal mask expects it: left, right and interior padding, prefill
and cached decode all reduce to the same packing. A sliding window counts real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from infercore import ops
from infercore.ops.attention import HEAD_DIMS

__all__ = ["ATTN_IMPLEMENTATION", "attention_forward", "padding_mask"]

#: Name under which transformers knows the attention and mask functions.
ATTN_IMPLEMENTATION = "infercore"

#: Attribute of a mask made by :func:`padding_mask` that memoizes its packings.
_PACKINGS_ATTR = "_infercore_packings"


@dataclass(frozen=True)
class _Packing:
    """Where the real tokens of a padded batch are, and their varlen offsets.

    ``*_rows``/``*_cols`` index the real tokens in ``[batch, seq]`` (``None``: no padding).
    """

    q_rows: torch.Tensor | None
    q_cols: torch.Tensor | None
    k_rows: torch.Tensor | None
    k_cols: torch.Tensor | None
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int


def _dense_packing(batch: int, len_q: int, len_k: int, device: torch.device) -> _Packing:
    def offsets(n: int) -> torch.Tensor:
        return torch.arange(0, (batch + 1) * n, n, dtype=torch.int32, device=device)

    return _Packing(None, None, None, None, offsets(len_q), offsets(len_k), len_q, len_k)


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def _masked_packing(mask: torch.Tensor, len_q: int, len_k: int) -> _Packing:
    if mask.ndim != 2:
        raise ValueError(
            f"attn_implementation={ATTN_IMPLEMENTATION!r} takes a 2D padding mask "
            f"[batch, kv_len] (or None), got a mask of shape {tuple(mask.shape)}"
        )
    if mask.shape[1] < len_k:
        raise ValueError(
            f"the padding mask covers {mask.shape[1]} positions but there are {len_k} keys: "
            f"attn_implementation={ATTN_IMPLEMENTATION!r} needs a cache whose keys are the "
            "mask's last positions (DynamicCache), not a preallocated static cache"
        )
    valid_k = mask[:, mask.shape[1] - len_k:]
    valid_q = valid_k[:, len_k - len_q:]
    lens_q, lens_k = valid_q.sum(1), valid_k.sum(1)
    max_q, max_k = torch.stack([lens_q.max(), lens_k.max()]).tolist()
    q_rows, q_cols = valid_q.nonzero(as_tuple=True)
    k_rows, k_cols = valid_k.nonzero(as_tuple=True)
    return _Packing(q_rows, q_cols, k_rows, k_cols, _offsets(lens_q), _offsets(lens_k),
                    int(max_q), int(max_k))


def _packing(mask: torch.Tensor | None, batch: int, len_q: int, len_k: int,
             device: torch.device) -> _Packing:
    if mask is None:
        return _dense_packing(batch, len_q, len_k, device)
    memo = getattr(mask, _PACKINGS_ATTR, None)
    if memo is None:
        return _masked_packing(mask, len_q, len_k)
    key = (len_q, len_k)
    if key not in memo:
        memo[key] = _masked_packing(mask, len_q, len_k)
    return memo[key]


def _pack(x: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None
          ) -> torch.Tensor:
    """``[batch, heads, seq, dim]`` -> ``[tokens, heads, dim]`` (real tokens only)."""
    if rows is None:
        return x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3])
    return x[rows, :, cols]


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function running :func:`infercore.ops.attention.varlen`.

    Parameters
    ----------
    module : the calling attention module
        Read for ``is_causal`` (default ``True``) and ``scaling`` when not passed.
    query : Tensor ``[batch, num_heads, len_q, head_dim]``, float16 / bfloat16 / float32
    key, value : Tensor ``[batch, num_kv_heads, len_k, head_dim]``, dtype of ``query``
        ``len_k >= len_q``: the queries are the last ``len_q`` key positions.
    attention_mask : Tensor ``[batch, >= len_k]`` bool, or None
        Padding mask from :func:`padding_mask` (``True`` = real token), aligned to the
        end of the keys. ``None``: no padding.
    scaling : float, optional
        Score scale; the module's ``scaling``, else ``1 / sqrt(head_dim)``.
    dropout : float
        Must be 0 (inference only).
    sliding_window, softcap : optional
        As in :func:`infercore.ops.attention.varlen`; passed by the modules that use them.

    Returns
    -------
    (Tensor ``[batch, len_q, num_heads, head_dim]`` of ``query.dtype``, None)
        Zeros at padded query positions; no attention weights.
    """
    if dropout:
        raise ValueError(f"attn_implementation={ATTN_IMPLEMENTATION!r} is for inference: "
                         f"dropout must be 0, got {dropout} (call model.eval())")
    batch, num_heads, len_q, head_dim = query.shape
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"attn_implementation={ATTN_IMPLEMENTATION!r} supports head_dim in "
                         f"{HEAD_DIMS}, got head_dim {head_dim}")
    len_k = key.shape[2]
    if scaling is None:
        scaling = getattr(module, "scaling", None)
    causal = kwargs.get("is_causal")
    if causal is None:
        causal = getattr(module, "is_causal", True)
    p = _packing(attention_mask, batch, len_q, len_k, query.device)
    out = ops.attention.varlen(
        _pack(query, p.q_rows, p.q_cols), _pack(key, p.k_rows, p.k_cols),
        _pack(value, p.k_rows, p.k_cols), p.cu_seqlens_q, p.cu_seqlens_k, p.max_seqlen_q,
        p.max_seqlen_k, causal=bool(causal), scale=scaling, sliding_window=sliding_window,
        softcap=softcap, skip_checks=True,
    )
    if p.q_rows is None:
        return out.view(batch, len_q, num_heads, head_dim), None
    padded = out.new_zeros(batch, len_q, num_heads, head_dim)
    padded[p.q_rows, p.q_cols] = out
    return padded, None


def padding_mask(*, attention_mask: torch.Tensor | None = None, **kwargs: Any
                 ) -> torch.Tensor | None:
    """transformers mask function for :func:`attention_forward`.

    Returns ``None`` when there is no padding, else a fresh bool copy of the 2D mask
    ``[batch, kv_len]`` (``True`` = real token) that memoizes its packings, so the
    layers of one forward pass pack once. The causal / sliding-window pattern
    transformers describes in ``mask_function`` is applied by the kernel instead.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    mask = attention_mask.to(torch.bool, copy=True)
    setattr(mask, _PACKINGS_ATTR, {})
    return mask
