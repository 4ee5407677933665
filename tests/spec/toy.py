"""Deterministic toy language models for speculative-decoding tests."""

from __future__ import annotations

import torch

VOCAB = 11


def next_token(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """The toy rule: the next token is a hash of the last two tokens, mod VOCAB."""
    return (prev * prev + 3 * cur + 1) % VOCAB


def _shifted(input_ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(input_ids[:, :-1], (1, 0), value=0)


def target_fn(input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(input_ids [B, T], positions [B, T]) -> one-hot logits [B, T, VOCAB]``."""
    nxt = next_token(_shifted(input_ids), input_ids)
    return torch.nn.functional.one_hot(nxt, VOCAB).float() * 4.0


class DraftFn:
    """The toy rule, but wrong (off by one) whenever ``(prev + cur) % 4 == 0``; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        prev = _shifted(input_ids)
        nxt = next_token(prev, input_ids)
        nxt = torch.where((prev + input_ids) % 4 == 0, (nxt + 1) % VOCAB, nxt)
        return torch.nn.functional.one_hot(nxt, VOCAB).float() * 4.0


def plain_greedy(prompt: list[int], n: int) -> list[int]:
    """The toy target's greedy continuation, by the rule itself."""
    seq = list(prompt)
    for _ in range(n):
        prev = seq[-2] if len(seq) > 1 else 0
        seq.append(int(next_token(torch.tensor(prev), torch.tensor(seq[-1]))))
    return seq[len(prompt) :]
