"""Column- and row-parallel linear layers (Megatron-style), built fresh or from a module.

Each layer holds its rank's shard as a child ``linear`` (an ``nn.Linear`` or any type
with a registered sharder, e.g. a quantized linear) and the communicator ``comm``.
Layers built fresh get ``nn.Linear`` shards with ``nn.Linear``'s initialization and a
zero row-parallel bias: they are meant to receive weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from infercore.comm.interface import Communicator
from infercore.comm.tp.sharding import (
    even_range,
    head_rows,
    kv_head_rows,
    local_kv_heads,
    shard_linear,
)

__all__ = [
    "ColumnParallelLinear",
    "MergedColumnParallelLinear",
    "QKVParallelLinear",
    "RowParallelLinear",
]


def _features(module: nn.Module, name: str) -> int:
    value = getattr(module, name, None)
    if not isinstance(value, int):
        raise TypeError(f"{type(module).__name__} has no integer {name!r}; cannot shard it")
    return value


class ColumnParallelLinear(nn.Module):
    """``y = x W^T + b`` with the output features split over ranks.

    Rank ``r`` holds rows ``r*out/tp .. (r+1)*out/tp`` of ``W`` and computes that slice of
    ``y``; no communication unless ``gather_output``.

    Parameters
    ----------
    in_features, out_features : int
        Full sizes; ``out_features`` divisible by ``comm.world_size``.
    comm : Communicator
    bias : bool
    gather_output : bool
        All-gather the slices so every rank returns the full ``[..., out_features]``.
    device, dtype : optional
        Of the fresh shard.

    Shapes
    ------
    ``x [..., in_features]`` -> ``[..., out_features / tp]`` (or ``[..., out_features]``
    with ``gather_output``).
    """

    def __init__(self, in_features: int, out_features: int, comm: Communicator, *,
                 bias: bool = True, gather_output: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        start, end = even_range(out_features, comm.world_size, comm.rank, "out_features")
        local = nn.Linear(in_features, end - start, bias=bias, device=device, dtype=dtype)
        self._setup(local, comm, in_features, out_features, gather_output)

    def _setup(self, local: nn.Module, comm: Communicator, in_features: int,
               out_features: int, gather_output: bool) -> None:
        self.linear = local
        self.comm = comm
        self.in_features = in_features
        self.out_features = out_features
        self.gather_output = gather_output

    @classmethod
    def _wrap(cls, local: nn.Module, comm: Communicator, in_features: int, out_features: int,
              gather_output: bool = False) -> ColumnParallelLinear:
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(local, comm, in_features, out_features, gather_output)
        return self

    @classmethod
    def from_linear(cls, linear: nn.Module, comm: Communicator, *,
                    gather_output: bool = False) -> ColumnParallelLinear:
        """Shard an existing linear (same on every rank): keep this rank's output rows."""
        out_features = _features(linear, "out_features")
        rows = even_range(out_features, comm.world_size, comm.rank, "out_features")
        return cls._wrap(shard_linear(linear, 0, [rows]), comm, _features(linear, "in_features"),
                         out_features, gather_output)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.gather_output and self.comm.world_size > 1:
            y = self.comm.all_gather(y, dim=-1)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"tp={self.comm.world_size}, rank={self.comm.rank}")


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel matrices stacked in one (e.g. gate and up projections).

    Each sub-matrix is split separately, so rank ``r``'s output is the concatenation of
    the ``r``-th slices: ``[gate_r, up_r]``, and ``chunk(len(output_sizes), -1)`` of it
    gives the local parts. ``gather_output`` is not offered (the gathered order would
    interleave the parts).

    Shapes
    ------
    ``x [..., in_features]`` -> ``[..., sum(output_sizes) / tp]``.
    """

    def __init__(self, in_features: int, output_sizes: Sequence[int], comm: Communicator, *,
                 bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        sizes = [end - start for start, end in self._rows(output_sizes, comm)]
        local = nn.Linear(in_features, sum(sizes), bias=bias, device=device, dtype=dtype)
        self._setup(local, comm, in_features, sum(output_sizes), False)
        self.output_sizes = list(output_sizes)

    @staticmethod
    def _rows(output_sizes: Sequence[int], comm: Communicator) -> list[tuple[int, int]]:
        rows, offset = [], 0
        for i, size in enumerate(output_sizes):
            start, end = even_range(size, comm.world_size, comm.rank, f"output_sizes[{i}]")
            rows.append((offset + start, offset + end))
            offset += size
        return rows

    @classmethod
    def from_linear(cls, linear: nn.Module, comm: Communicator, *,  # type: ignore[override]
                    output_sizes: Sequence[int]) -> MergedColumnParallelLinear:
        """Shard a fused linear whose output rows are the stacked ``output_sizes``."""
        out_features = _features(linear, "out_features")
        if sum(output_sizes) != out_features:
            raise ValueError(
                f"output_sizes {list(output_sizes)} sum to {sum(output_sizes)}, but the "
                f"linear has out_features = {out_features}"
            )
        local = shard_linear(linear, 0, cls._rows(output_sizes, comm))
        self = cls._wrap(local, comm, _features(linear, "in_features"), out_features)
        self.output_sizes = list(output_sizes)
        return self


class QKVParallelLinear(MergedColumnParallelLinear):
    """Fused Q, K, V projection split by whole heads.

    Query heads split evenly (``num_heads % tp == 0``). KV heads split when
    ``num_kv_heads % tp == 0`` and are replicated when ``tp % num_kv_heads == 0`` (each
    rank keeps the kv head of its query heads' group); otherwise ``ValueError``.
    ``num_local_heads`` / ``num_local_kv_heads`` give the per-rank counts.

    Shapes
    ------
    ``x [..., hidden]`` -> ``[..., (num_local_heads + 2 * num_local_kv_heads) * head_dim]``
    ordered ``[q, k, v]``.
    """

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int,
                 comm: Communicator, *, bias: bool = False, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        rows = self._head_rows(head_dim, num_heads, num_kv_heads, comm)
        local = nn.Linear(hidden_size, sum(e - s for s, e in rows), bias=bias, device=device,
                          dtype=dtype)
        self._setup(local, comm, hidden_size, (num_heads + 2 * num_kv_heads) * head_dim, False)
        self._set_heads(head_dim, num_heads, num_kv_heads)

    @staticmethod
    def _head_rows(head_dim: int, num_heads: int, num_kv_heads: int,
                   comm: Communicator) -> list[tuple[int, int]]:
        q = head_rows(num_heads, head_dim, comm.world_size, comm.rank)
        kv = kv_head_rows(num_kv_heads, head_dim, comm.world_size, comm.rank)
        q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
        return [q, (q_size + kv[0], q_size + kv[1]),
                (q_size + kv_size + kv[0], q_size + kv_size + kv[1])]

    def _set_heads(self, head_dim: int, num_heads: int, num_kv_heads: int) -> None:
        world = self.comm.world_size
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.num_local_heads = num_heads // world
        self.num_local_kv_heads = local_kv_heads(num_kv_heads, world)
        self.output_sizes = [num_heads * head_dim] + [num_kv_heads * head_dim] * 2

    @classmethod
    def from_linear(cls, linear: nn.Module, comm: Communicator, *,  # type: ignore[override]
                    head_dim: int, num_heads: int, num_kv_heads: int) -> QKVParallelLinear:
        """Shard a fused ``[q; k; v]`` linear: ``(num_heads + 2*num_kv_heads) * head_dim`` rows."""
        out_features = _features(linear, "out_features")
        expected = (num_heads + 2 * num_kv_heads) * head_dim
        if out_features != expected:
            raise ValueError(
                f"the fused QKV linear has out_features = {out_features}, expected "
                f"(num_heads + 2 * num_kv_heads) * head_dim = {expected}"
            )
        local = shard_linear(linear, 0, cls._head_rows(head_dim, num_heads, num_kv_heads, comm))
        self = cls._wrap(local, comm, _features(linear, "in_features"), out_features)
        self._set_heads(head_dim, num_heads, num_kv_heads)
        return self


class RowParallelLinear(nn.Module):
    """``y = x W^T + b`` with the input features split over ranks, then an all-reduce.

    Rank ``r`` holds columns ``r*in/tp .. (r+1)*in/tp`` of ``W``, computes a partial
    product from its slice of ``x``, all-reduces it (sum) and adds the bias once.

    Parameters
    ----------
    in_features, out_features : int
        Full sizes; ``in_features`` divisible by ``comm.world_size``.
    comm : Communicator
    bias : bool
    input_is_parallel : bool
        ``x`` is already this rank's slice ``[..., in_features / tp]`` (the output of a
        column-parallel layer); else ``x`` is full and the layer slices it.

    Shapes
    ------
    ``x [..., in_features / tp]`` (or ``[..., in_features]``) -> ``[..., out_features]``,
    the same on every rank.
    """

    def __init__(self, in_features: int, out_features: int, comm: Communicator, *,
                 bias: bool = True, input_is_parallel: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        start, end = even_range(in_features, comm.world_size, comm.rank, "in_features")
        local = nn.Linear(end - start, out_features, bias=False, device=device, dtype=dtype)
        full_bias = (nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
                     if bias else None)
        self._setup(local, full_bias, comm, in_features, out_features, input_is_parallel)

    def _setup(self, local: nn.Module, bias: nn.Parameter | None, comm: Communicator,
               in_features: int, out_features: int, input_is_parallel: bool) -> None:
        self.linear = local
        self.bias = bias
        self.comm = comm
        self.in_features = in_features
        self.out_features = out_features
        self.input_is_parallel = input_is_parallel
        self.input_range = even_range(in_features, comm.world_size, comm.rank, "in_features")

    @classmethod
    def from_linear(cls, linear: nn.Module, comm: Communicator, *,
                    input_is_parallel: bool = True) -> RowParallelLinear:
        """Shard an existing linear (same on every rank): keep this rank's input columns."""
        in_features = _features(linear, "in_features")
        cols = even_range(in_features, comm.world_size, comm.rank, "in_features")
        bias = getattr(linear, "bias", None)
        full_bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(shard_linear(linear, 1, [cols]), full_bias, comm, in_features,
                    _features(linear, "out_features"), input_is_parallel)
        return self

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = x[..., self.input_range[0] : self.input_range[1]]
        y = self.linear(x)
        if self.comm.world_size > 1:
            self.comm.all_reduce(y)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, tp={self.comm.world_size}, rank={self.comm.rank}")
