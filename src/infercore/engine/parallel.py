"""Tensor parallelism of the engine: weights split at load, two all-reduces per layer.

Run one process per rank under ``python -m infercore.comm.launch -n N script.py`` (or
``torchrun``), each building the same ``LLM(..., config=EngineConfig(
tensor_parallel_size=N))`` and making the same calls. Each rank keeps (Megatron layout):

- QKV: its query heads and its KV heads (a KV head is replicated on the ranks of its
  query group when there are fewer KV heads than ranks), biases alike; o_proj: the
  matching input columns; its output is summed over the ranks (all-reduce).
- gate-up: its slice of the intermediate size in both halves; down: the matching
  columns, summed over the ranks.
- lm_head: its slice of the vocabulary; the logits are gathered (all-gather) so every
  rank holds the full ``[N, vocab]``. The embedding and the norms are replicated.

The KV cache of a rank holds its KV heads only. Every rank runs the scheduler on the
same requests and samples; rank 0's sampled tokens are broadcast, so all ranks take the
same steps. Collectives go through :func:`infercore.comm.init_communicator` (gloo on
CPU, NCCL on CUDA).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from infercore.comm import Communicator, init_communicator
from infercore.comm.tp.sharding import even_range, head_rows, kv_head_rows, local_kv_heads
from infercore.comm.tp.vocab import vocab_range
from infercore.engine.arch import ModelArgs
from infercore.engine.model import LayerWeights, LlamaModel, ModelWeights

__all__ = ["ParallelLlamaModel", "agree_num_blocks", "broadcast_tokens", "shard_args",
           "shard_weights", "tensor_parallel_communicator"]


def tensor_parallel_communicator(size: int, device: str | None) -> Communicator | None:
    """The communicator of a tensor-parallel engine, or ``None`` for one rank.

    ``size > 1`` creates the process group from the launcher's environment when there is
    none; ``size == 1`` follows an initialized ``torch.distributed`` world of several
    ranks.

    Raises
    ------
    ValueError
        When ``size`` differs from a world of several ranks.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else None
    if size == 1 and (world is None or world == 1):
        return None
    comm = init_communicator(device=device)
    if size > 1 and comm.world_size != size:
        raise ValueError(
            f"EngineConfig.tensor_parallel_size={size} but the process group has "
            f"{comm.world_size} ranks; launch one process per rank "
            f"(python -m infercore.comm.launch -n {size} ...)"
        )
    return comm


def shard_args(args: ModelArgs, world_size: int) -> ModelArgs:
    """A rank's shape: its query heads, KV heads and intermediate size."""
    even_range(args.num_heads, world_size, 0, "num_attention_heads")
    even_range(args.intermediate_size, world_size, 0, "intermediate_size")
    return dataclasses.replace(
        args,
        num_heads=args.num_heads // world_size,
        num_kv_heads=local_kv_heads(args.num_kv_heads, world_size),
        intermediate_size=args.intermediate_size // world_size,
    )


def _qkv_rows(args: ModelArgs, world_size: int, rank: int) -> torch.Tensor:
    d = args.head_dim
    q0, q1 = head_rows(args.num_heads, d, world_size, rank)
    k0, k1 = kv_head_rows(args.num_kv_heads, d, world_size, rank)
    q, kv = args.q_size, args.kv_size
    return torch.cat([torch.arange(q0, q1), torch.arange(q + k0, q + k1),
                      torch.arange(q + kv + k0, q + kv + k1)])


def shard_weights(args: ModelArgs, weights: ModelWeights, world_size: int, rank: int,
                  device: torch.device) -> ModelWeights:
    """Rank ``rank``'s weights (see the module docstring), moved to ``device``."""
    qkv = _qkv_rows(args, world_size, rank)
    o0, o1 = head_rows(args.num_heads, args.head_dim, world_size, rank)
    i0, i1 = even_range(args.intermediate_size, world_size, rank, "intermediate_size")
    inter = args.intermediate_size
    gate_up = torch.cat([torch.arange(i0, i1), torch.arange(inter + i0, inter + i1)])
    v0, v1, block = vocab_range(args.vocab_size, world_size, rank)

    def to(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.contiguous().to(device)

    layers = []
    for lw in weights.layers:
        qkv_rows = qkv.to(lw.qkv.device)
        layers.append(LayerWeights(
            input_norm=to(lw.input_norm),
            qkv=to(lw.qkv[qkv_rows]),
            qkv_bias=None if lw.qkv_bias is None else to(lw.qkv_bias[qkv_rows]),
            o_proj=to(lw.o_proj[:, o0:o1]),
            post_norm=to(lw.post_norm),
            gate_up=to(lw.gate_up[gate_up.to(lw.gate_up.device)]),
            down=to(lw.down[:, i0:i1]),
            q_norm=to(lw.q_norm),
            k_norm=to(lw.k_norm),
        ))
    head = weights.lm_head
    local_head = head.new_zeros(block, head.shape[1])  # the last rank's block is padded
    local_head[: v1 - v0] = head[v0:v1]
    return ModelWeights(embed=to(weights.embed), layers=layers, norm=to(weights.norm),
                        lm_head=to(local_head))


class ParallelLlamaModel(LlamaModel):
    """A rank's :class:`LlamaModel`: sharded weights, all-reduce after the row-parallel
    projections, logits gathered over the vocabulary slices.

    Parameters
    ----------
    args : ModelArgs
        The rank's shape (:func:`shard_args`).
    weights : ModelWeights
        The rank's weights (:func:`shard_weights`).
    comm : Communicator
    vocab_size : int
        The full vocabulary (the gathered logits are cut to it).
    """

    def __init__(self, args: ModelArgs, weights: ModelWeights, comm: Communicator,
                 vocab_size: int) -> None:
        super().__init__(args, weights)
        self.comm = comm
        self.vocab_size = vocab_size

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(partial)

    def lm_head(self, x: torch.Tensor) -> torch.Tensor:
        local = super().lm_head(x)
        return self.comm.all_gather(local, dim=1)[:, : self.vocab_size]


def agree_num_blocks(comm: Communicator, num_blocks: int) -> int:
    """The fewest KV-cache blocks of any rank (every rank's scheduler must see the same
    cache)."""
    t = torch.tensor([num_blocks], dtype=torch.int64, device=comm.device)
    return int(comm.all_reduce(t, op="min").item())


def broadcast_tokens(comm: Communicator, tokens: Sequence[int] | Sequence[Sequence[int]],
                     width: int) -> list[int] | list[list[int]]:
    """Rank 0's sampled tokens on every rank (one int, or up to ``width`` emitted tokens,
    per request; the same shape on every rank)."""
    nested = bool(tokens) and not isinstance(tokens[0], int)
    rows = [list(t) for t in tokens] if nested else [[t] for t in tokens]
    buf = torch.full((len(rows), width), -1, dtype=torch.int64)
    for i, row in enumerate(rows):
        buf[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    buf = buf.to(comm.device)
    comm.broadcast(buf, 0)
    out = [[t for t in row if t >= 0] for row in buf.tolist()]
    return out if nested else [row[0] for row in out]
