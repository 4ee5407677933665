"""Sampling parameters of speculative decoding, applied alike to target and draft.

Rejection sampling keeps the distribution it is given as ``p``. For the emitted tokens to
follow what :func:`infercore.ops.sample` would draw, ``p`` must be the *filtered* target
distribution, :func:`infercore.ops.sampling.sampling_probs` with the request's
temperature, top-k, top-p and min-p; the draft samples from the same transformation of its
own logits, which keeps its proposals inside (or close to) the target's support and its
acceptance high. :class:`SamplingParams` carries one request's settings and
:func:`batch_sampling_probs` applies a batch of them to logits with any number of
positions per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infercore.ops.sampling import sampling_probs

__all__ = ["SamplingParams", "all_greedy", "batch_sampling_probs", "per_row_sampling"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One request's sampling settings (the meaning of :func:`infercore.ops.sample`).

    Attributes
    ----------
    temperature : float, >= 0
        0 is greedy (the argmax; verified by :func:`~infercore.spec.greedy_verify`).
    top_k : int
        Keep the ``top_k`` largest logits; ``<= 0`` disables.
    top_p : float, in (0, 1]
        Keep the smallest most-likely set reaching mass ``top_p``; 1 disables.
    min_p : float, in [0, 1]
        Keep tokens with probability ``>= min_p * max``; 0 disables.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an int (<= 0 disables), got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not isinstance(self.min_p, int | float) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be a number in [0, 1], got {self.min_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def per_row_sampling(
    batch: int,
    temperature: float | Sequence[float],
    top_k: int | Sequence[int] = 0,
    top_p: float | Sequence[float] = 1.0,
    min_p: float | Sequence[float] = 0.0,
) -> list[SamplingParams]:
    """One :class:`SamplingParams` per row from numbers (all rows) or per-row sequences.

    Raises ``ValueError`` naming the parameter when a sequence has the wrong length or a
    value is out of range.
    """
    values = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}
    columns: dict[str, list] = {}
    for name, value in values.items():
        if isinstance(value, Sequence):
            if len(value) != batch:
                raise ValueError(f"{name} has {len(value)} entries but there are {batch} rows")
            columns[name] = list(value)
        else:
            columns[name] = [value] * batch
    return [SamplingParams(**{n: c[b] for n, c in columns.items()}) for b in range(batch)]


def all_greedy(params: Sequence[SamplingParams]) -> bool:
    return all(p.greedy for p in params)


def batch_sampling_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """:func:`~infercore.ops.sampling.sampling_probs` of each row with its own parameters.

    Parameters
    ----------
    logits : Tensor ``[B, n, V]`` (or ``[B, V]``), float32 / float16 / bfloat16
    params : ``B`` :class:`SamplingParams`, one per row, shared by the row's positions.

    Returns
    -------
    Tensor of ``logits``' shape, float32: each ``[V]`` row sums to 1 (one-hot on the
    argmax for greedy rows).
    """
    if len(params) != logits.shape[0]:
        raise ValueError(
            f"params has {len(params)} entries but logits has {logits.shape[0]} rows"
        )
    positions = logits[0].numel() // logits.shape[-1] if logits.shape[0] else 0
    device = logits.device

    def column(name: str, dtype: torch.dtype) -> torch.Tensor:
        values = torch.tensor([getattr(p, name) for p in params], dtype=dtype, device=device)
        return values.repeat_interleave(positions)

    probs = sampling_probs(
        logits.reshape(-1, logits.shape[-1]),
        column("temperature", torch.float32),
        top_k=column("top_k", torch.int64),
        top_p=column("top_p", torch.float32),
        min_p=column("min_p", torch.float32),
    )
    return probs.view(logits.shape)
