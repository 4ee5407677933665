"""Vocabulary-parallel embedding and LM head.

The vocabulary splits into ``tp`` blocks of ``ceil(vocab / tp)`` rows; rank ``r`` owns
ids ``[r*block, min((r+1)*block, vocab))`` and pads its block with zero rows, so every
rank holds a ``[block, hidden]`` weight and the two layers can share it (tied
embeddings).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infercore.comm.interface import Communicator

__all__ = ["ParallelLMHead", "VocabParallelEmbedding", "vocab_range"]


def vocab_range(vocab_size: int, world_size: int, rank: int) -> tuple[int, int, int]:
    """``(start, end, block)``: the ids rank ``rank`` owns and the padded block size."""
    block = -(-vocab_size // world_size)
    start = min(rank * block, vocab_size)
    return start, min(start + block, vocab_size), block


def _padded_block(weight: torch.Tensor, start: int, end: int, block: int) -> torch.Tensor:
    local = torch.zeros((block, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    local[: end - start] = weight[start:end]
    return local


class VocabParallelEmbedding(nn.Module):
    """Embedding lookup with the vocabulary split over ranks, summed by an all-reduce.

    Each rank looks up the ids it owns (others give zero rows); the all-reduce completes
    every row.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
        Full vocabulary size and hidden size.
    comm : Communicator

    Shapes
    ------
    ``ids [...]`` int64 -> ``[..., embedding_dim]``, the same on every rank.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, comm: Communicator, *,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        start, end, block = vocab_range(num_embeddings, comm.world_size, comm.rank)
        weight = torch.zeros(block, embedding_dim, device=device, dtype=dtype)
        nn.init.normal_(weight[: end - start])
        self._setup(nn.Parameter(weight), comm, num_embeddings)

    def _setup(self, weight: nn.Parameter, comm: Communicator, num_embeddings: int) -> None:
        self.weight = weight
        self.comm = comm
        self.num_embeddings = num_embeddings
        self.embedding_dim = weight.shape[1]
        self.vocab_start, self.vocab_end, self.block = vocab_range(
            num_embeddings, comm.world_size, comm.rank
        )

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, comm: Communicator) -> VocabParallelEmbedding:
        """Shard an existing ``nn.Embedding`` (same on every rank)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        start, end, block = vocab_range(embedding.num_embeddings, comm.world_size, comm.rank)
        w = embedding.weight
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        weight = nn.Parameter(_padded_block(w.detach(), start, end, block),
                              requires_grad=w.requires_grad)
        self._setup(weight, comm, embedding.num_embeddings)
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        local = (ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        if self.comm.world_size > 1:
            self.comm.all_reduce(out)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, "
                f"ids=[{self.vocab_start}, {self.vocab_end}), tp={self.comm.world_size}")


class ParallelLMHead(nn.Module):
    """Output projection to the vocabulary, split over ranks; logits are all-gathered.

    Parameters
    ----------
    embedding_dim, num_embeddings : int
        Hidden size and full vocabulary size.
    comm : Communicator
    bias : bool

    Shapes
    ------
    ``x [..., embedding_dim]`` -> logits ``[..., num_embeddings]``, the same on every rank.
    """

    def __init__(self, embedding_dim: int, num_embeddings: int, comm: Communicator, *,
                 bias: bool = False, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        start, end, block = vocab_range(num_embeddings, comm.world_size, comm.rank)
        weight = torch.zeros(block, embedding_dim, device=device, dtype=dtype)
        nn.init.normal_(weight[: end - start], std=embedding_dim**-0.5)
        b = nn.Parameter(torch.zeros(block, device=device, dtype=dtype)) if bias else None
        self._setup(nn.Parameter(weight), b, comm, num_embeddings)

    def _setup(self, weight: nn.Parameter, bias: nn.Parameter | None, comm: Communicator,
               num_embeddings: int) -> None:
        self.weight = weight
        self.bias = bias
        self.comm = comm
        self.num_embeddings = num_embeddings
        self.embedding_dim = weight.shape[1]
        self.vocab_start, self.vocab_end, self.block = vocab_range(
            num_embeddings, comm.world_size, comm.rank
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, comm: Communicator, *,
                    tie_to: VocabParallelEmbedding | None = None) -> ParallelLMHead:
        """Shard an existing ``nn.Linear`` ``[vocab, hidden]`` (same on every rank).

        With ``tie_to`` the head shares that embedding's (already sharded) weight, as a
        tied ``lm_head`` shares ``embed_tokens``'s.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        vocab = linear.out_features
        start, end, block = vocab_range(vocab, comm.world_size, comm.rank)
        if tie_to is not None:
            if tie_to.num_embeddings != vocab or tie_to.embedding_dim != linear.in_features:
                raise ValueError(
                    f"tie_to has {tie_to.num_embeddings}x{tie_to.embedding_dim}, the linear "
                    f"{vocab}x{linear.in_features}"
                )
            weight = tie_to.weight
        else:
            weight = nn.Parameter(_padded_block(linear.weight.detach(), start, end, block),
                                  requires_grad=linear.weight.requires_grad)
        bias = None
        if linear.bias is not None:
            bias = nn.Parameter(_padded_block(linear.bias.detach(), start, end, block))
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(weight, bias, comm, vocab)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.linear(x, self.weight, self.bias)
        if self.comm.world_size > 1:
            logits = self.comm.all_gather(logits, dim=-1)
        if logits.shape[-1] != self.num_embeddings:
            logits = logits[..., : self.num_embeddings]
        return logits

    def extra_repr(self) -> str:
        return (f"{self.embedding_dim}, {self.num_embeddings}, "
                f"ids=[{self.vocab_start}, {self.vocab_end}), tp={self.comm.world_size}")
