"""Rotary position embedding (family ``rope``) and cos/sin cache builders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.ops.rope.cache import (
    SCALING_TYPES,
    build_cos_sin_cache,
    cos_sin_cache_from_config,
    rope_inv_freq,
)
from infercore.registry import resolve

__all__ = [
    "SCALING_TYPES",
    "RotaryInputs",
    "build_cos_sin_cache",
    "cos_sin_cache_from_config",
    "rope_inv_freq",
    "rotary",
]

_POSITION_DTYPES = (torch.int64, torch.int32)


@dataclass(frozen=True, slots=True)
class RotaryInputs(TensorInputs):
    """What ``rope`` backends are asked to support."""

    q: torch.Tensor
    k: torch.Tensor
    positions: torch.Tensor
    cos_sin_cache: torch.Tensor
    is_neox: bool


def _check_rotary_args(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
                       cos_sin_cache: torch.Tensor, is_neox: bool,
                       rotary_dim: int | None) -> None:
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("k", k, ndim=3)
    if k.dtype != q.dtype:
        raise TypeError(f"k must have the dtype of q, {q.dtype}; got {k.dtype}")
    n_tokens, _, head_dim = q.shape
    if k.shape[0] != n_tokens or k.shape[2] != head_dim:
        raise ValueError(
            f"k must be [tokens, kv_heads, head_dim] = [{n_tokens}, *, {head_dim}] like q "
            f"{tuple(q.shape)}, got {tuple(k.shape)}"
        )
    check_tensor("positions", positions, ndim=1, dtypes=_POSITION_DTYPES)
    if positions.shape[0] != n_tokens:
        raise ValueError(
            f"positions must have shape [tokens] = [{n_tokens}], got {tuple(positions.shape)}"
        )
    check_tensor("cos_sin_cache", cos_sin_cache, ndim=2, dtypes=FLOAT_DTYPES)
    width = cos_sin_cache.shape[1]
    if width % 2 or not 0 < width <= head_dim:
        raise ValueError(
            f"cos_sin_cache must be [max_position, rotary_dim] with rotary_dim even and in "
            f"(0, head_dim={head_dim}], got shape {tuple(cos_sin_cache.shape)}"
        )
    if rotary_dim is not None and rotary_dim != width:
        raise ValueError(
            f"rotary_dim must equal cos_sin_cache.shape[1] = {width} (or be None), "
            f"got {rotary_dim!r}"
        )
    if not isinstance(is_neox, bool):
        raise TypeError(f"is_neox must be a bool, got {is_neox!r}")
    check_same_device(q=q, k=k, positions=positions, cos_sin_cache=cos_sin_cache)


def _rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
            cos_sin_cache: torch.Tensor, is_neox: bool, backend: str) -> None:
    inputs = RotaryInputs(q, k, positions, cos_sin_cache, is_neox)
    resolve("rope", inputs, backend).run(q, k, positions, cos_sin_cache, is_neox)


@torch.library.custom_op("infercore::rotary", mutates_args=("q", "k"))
def _rotary_op(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
               cos_sin_cache: torch.Tensor, is_neox: bool, backend: str) -> None:
    _rotary(q, k, positions, cos_sin_cache, is_neox, backend)


@_rotary_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
      is_neox: bool, backend: str) -> None:
    return None


def rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    *,
    is_neox: bool = True,
    rotary_dim: int | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply rotary position embedding to queries and keys, in place.

    For each token ``t`` at position ``p = positions[t]`` and each head, features
    ``(x1, x2)`` paired as below are rotated by the angle whose cosine and sine are
    ``cos_sin_cache[p, i]`` and ``cos_sin_cache[p, rotary_dim // 2 + i]``:
    ``x1' = x1 cos - x2 sin``, ``x2' = x2 cos + x1 sin`` (float32 math, one rounding).
    Features from ``rotary_dim`` on (partial rotary) are left untouched.

    Parameters
    ----------
    q : Tensor ``[tokens, heads, head_dim]``, float16 / bfloat16 / float32
        Any strides (e.g. a view into a fused qkv projection); the Triton backend
        needs unit stride along ``head_dim``. Overwritten.
    k : Tensor ``[tokens, kv_heads, head_dim]``, dtype and device of ``q``
        Any strides; overwritten. Must not overlap ``q``.
    positions : Tensor ``[tokens]``, int64 (or int32)
        Position of each token; every value in ``[0, max_position)`` (not checked: that
        would synchronize with the device).
    cos_sin_cache : Tensor ``[max_position, rotary_dim]``, float16 / bfloat16 / float32
        ``cos`` in the first half of each row, ``sin`` in the second; build it with
        :func:`build_cos_sin_cache` or :func:`cos_sin_cache_from_config`.
    is_neox : bool
        ``True``: feature ``i`` pairs with ``i + rotary_dim // 2`` (GPT-NeoX, Llama,
        HF ``rotate_half``); ``False``: ``2i`` pairs with ``2i + 1`` (GPT-J,
        interleaved).
    rotary_dim : int, optional
        Rotated features per head; must equal ``cos_sin_cache.shape[1]`` when given.
    backend : str
        ``"auto"`` (registry dispatch) or a backend name of ``rope``
        (``"triton"``, ``"reference"``).

    Returns
    -------
    (q, k) : the same tensor objects, rotated in place.

    Examples
    --------
    >>> qkv = torch.randn(9, (32 + 2 * 8) * 128, dtype=torch.bfloat16, device="cuda")
    >>> q = qkv[:, : 32 * 128].view(9, 32, 128)
    >>> k = qkv[:, 32 * 128 : 40 * 128].view(9, 8, 128)
    >>> cache = build_cos_sin_cache(128, 4096, 500000.0, device="cuda")
    >>> positions = torch.arange(9, device="cuda")
    >>> infercore.ops.rotary(q, k, positions, cache)  # rotates inside qkv

    Also available as ``torch.ops.infercore.rotary(q, k, positions, cos_sin_cache,
    is_neox, backend)`` (returns nothing; declares q and k mutated).
    """
    _check_rotary_args(q, k, positions, cos_sin_cache, is_neox, rotary_dim)
    if torch.compiler.is_compiling():
        torch.ops.infercore.rotary(q, k, positions, cos_sin_cache, is_neox, backend)
    else:
        _rotary(q, k, positions, cos_sin_cache, is_neox, backend)
    return q, k
