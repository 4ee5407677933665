"""Tensor parallelism: parallel layers and ``apply_tensor_parallel`` for built models."""

from infercore.comm.tp.apply import TensorParallelInfo, apply_tensor_parallel
from infercore.comm.tp.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from infercore.comm.tp.sharding import LinearSharder, register_linear_sharder, shard_linear
from infercore.comm.tp.vocab import ParallelLMHead, VocabParallelEmbedding

__all__ = [
    "ColumnParallelLinear",
    "LinearSharder",
    "MergedColumnParallelLinear",
    "ParallelLMHead",
    "QKVParallelLinear",
    "RowParallelLinear",
    "TensorParallelInfo",
    "VocabParallelEmbedding",
    "apply_tensor_parallel",
    "register_linear_sharder",
    "shard_linear",
]
