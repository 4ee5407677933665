"""Test oracles for sampling: an independent per-row filter and a chi-square test."""

from __future__ import annotations

import math

import torch


def oracle_probs(
    logits: list[float], temperature: float, top_k: int = 0, top_p: float = 1.0,
    min_p: float = 0.0,
) -> list[float]:
    """The filtered, renormalized distribution of one row, straight from the definitions
    (Python floats, no vectorization): min-p and top-k, then top-p on the remainder."""
    vocab = len(logits)
    if temperature == 0:
        best = max(range(vocab), key=lambda i: (logits[i], -i))
        return [1.0 if i == best else 0.0 for i in range(vocab)]
    s = [x / temperature for x in logits]
    m = max(s)
    e = [math.exp(v - m) for v in s]
    z = sum(e)
    p = [v / z for v in e]
    keep = [True] * vocab
    if min_p > 0:
        keep = [k and p[i] >= min_p * max(p) for i, k in enumerate(keep)]
    if 0 < top_k < vocab:
        kth = sorted(logits, reverse=True)[top_k - 1]
        keep = [k and logits[i] >= kth for i, k in enumerate(keep)]
    if top_p < 1:
        z0 = sum(p[i] for i in range(vocab) if keep[i])
        keep = [
            keep[i] and sum(p[j] for j in range(vocab) if keep[j] and logits[j] > logits[i])
            < top_p * z0
            for i in range(vocab)
        ]
    z1 = sum(p[i] for i in range(vocab) if keep[i])
    return [p[i] / z1 if keep[i] else 0.0 for i in range(vocab)]


def chi_square_pvalue(ids: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """p-value of Pearson's chi-square test that ``ids`` are draws from ``probs``.

    Categories with an expected count below ``min_expected`` are pooled into one.
    Draws outside the support must be checked separately (they would count towards
    the pooled bin here).
    """
    n = ids.numel()
    observed = torch.bincount(ids.cpu(), minlength=probs.numel()).double()
    expected = probs.double().cpu() * n
    big = expected >= min_expected
    obs = torch.cat([observed[big], observed[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] < min_expected:  # fold a small pooled bin into the smallest category
        obs[-2] += obs[-1]
        exp[-2] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = obs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))
