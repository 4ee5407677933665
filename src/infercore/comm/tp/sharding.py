"""How weights split over tensor-parallel ranks, and the sharder registry.

A *sharder* cuts one linear-like module (``nn.Linear``, a quantized linear, ...) down to
the rows or columns a rank keeps. Tensor-parallel layers call :func:`shard_linear`,
which looks the sharder up by module type (through the MRO), so a new linear type
becomes shardable by registering one function::

    @register_linear_sharder(MyPackedLinear)
    def shard_packed(module, dim, ranges):
        ...  # return a MyPackedLinear holding only those rows (dim 0) / columns (dim 1)

Contract of ``sharder(module, dim, ranges) -> module``:

- ``dim == 0``: keep the output features in ``ranges`` (``[(start, end), ...]``,
  concatenated in order) and the matching bias entries;
- ``dim == 1``: keep the input features in ``ranges`` and **drop the bias** (the row-
  parallel layer adds it once, after the reduction);
- the result has ``in_features`` / ``out_features`` of the shard and computes
  ``x_shard @ W_shard^T`` like the original. A packed format that cannot cut at the
  given offsets (e.g. not on a quantization-group boundary) raises ``ValueError``
  saying which offset and which alignment it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "LinearSharder",
    "even_range",
    "head_rows",
    "kv_head_rows",
    "local_kv_heads",
    "register_linear_sharder",
    "shard_linear",
]

Ranges = Sequence[tuple[int, int]]
LinearSharder = Callable[[nn.Module, int, Ranges], nn.Module]

_SHARDERS: dict[type, LinearSharder] = {}


def even_range(size: int, world_size: int, rank: int, what: str) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank`` when ``size`` splits evenly over ``world_size``."""
    if size % world_size:
        raise ValueError(
            f"{what} = {size} must be divisible by the tensor-parallel size {world_size}"
        )
    n = size // world_size
    return rank * n, (rank + 1) * n


def head_rows(num_heads: int, head_dim: int, world_size: int, rank: int,
              what: str = "num_attention_heads") -> tuple[int, int]:
    """Rows of a projection holding this rank's whole heads."""
    start, end = even_range(num_heads, world_size, rank, what)
    return start * head_dim, end * head_dim


def _check_kv(num_kv_heads: int, world_size: int) -> None:
    if num_kv_heads % world_size and world_size % num_kv_heads:
        raise ValueError(
            f"num_key_value_heads = {num_kv_heads} cannot be spread over tensor-parallel "
            f"size {world_size}: kv heads are split when the size divides them and "
            "replicated when they divide the size; neither holds"
        )


def local_kv_heads(num_kv_heads: int, world_size: int) -> int:
    """KV heads per rank: split when ``world_size`` divides them, else one replicated head."""
    _check_kv(num_kv_heads, world_size)
    return max(num_kv_heads // world_size, 1)


def kv_head_rows(num_kv_heads: int, head_dim: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows of a K or V projection for this rank.

    With ``world_size > num_kv_heads`` (GQA with few kv heads) each kv head is
    replicated on ``world_size / num_kv_heads`` consecutive ranks, the ranks that hold
    the query heads of its group.
    """
    _check_kv(num_kv_heads, world_size)
    if num_kv_heads % world_size == 0:
        return head_rows(num_kv_heads, head_dim, world_size, rank, "num_key_value_heads")
    head = rank // (world_size // num_kv_heads)
    return head * head_dim, (head + 1) * head_dim


def register_linear_sharder(module_type: type) -> Callable[[LinearSharder], LinearSharder]:
    """Register ``fn(module, dim, ranges) -> module`` for ``module_type`` and subclasses."""

    def deco(fn: LinearSharder) -> LinearSharder:
        _SHARDERS[module_type] = fn
        return fn

    return deco


def shard_linear(module: nn.Module, dim: int, ranges: Ranges) -> nn.Module:
    """The part of ``module`` a rank keeps; see the module docstring for the contract.

    Raises ``TypeError`` when no sharder is registered for the module's type.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (output features) or 1 (input features), got {dim!r}")
    for cls in type(module).__mro__:
        fn = _SHARDERS.get(cls)
        if fn is not None:
            return fn(module, dim, ranges)
    known = ", ".join(sorted(c.__name__ for c in _SHARDERS))
    raise TypeError(
        f"no tensor-parallel sharder for {type(module).__name__}; register one with "
        f"infercore.comm.register_linear_sharder({type(module).__name__}) "
        f"(registered: {known})"
    )


@register_linear_sharder(nn.Linear)
def _shard_dense(linear: nn.Linear, dim: int, ranges: Ranges) -> nn.Linear:
    w = linear.weight
    # torch.cat copies even one piece, so the full weight can be freed afterwards.
    weight = torch.cat([w[a:b] if dim == 0 else w[:, a:b] for a, b in ranges], dim)
    keep_bias = linear.bias is not None and dim == 0
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=keep_bias, device="meta",
                    dtype=w.dtype)
    out.weight = nn.Parameter(weight, requires_grad=w.requires_grad)
    if keep_bias:
        bias = torch.cat([linear.bias[a:b] for a, b in ranges])
        out.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    return out
