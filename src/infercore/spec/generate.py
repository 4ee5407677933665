"""A minimal speculative decoding loop over a :class:`~infercore.spec.models.LogitsModel`.

Used by the tests and the benchmark as a bare model loop; the engine assembles the same
steps (propose, one target pass over ``k + 1`` tokens per row, verify, append) around the
scheduler and the paged cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infercore.spec.interface import Proposer, RequestView
from infercore.spec.models import LogitsModel
from infercore.spec.policy import KPolicy
from infercore.spec.sampling import all_greedy, batch_sampling_probs, per_row_sampling
from infercore.spec.stats import AcceptanceStats
from infercore.spec.verify import greedy_verify, rejection_sample

__all__ = ["speculative_generate", "step_seeds"]

_SEED_MASK = (1 << 63) - 1


def step_seeds(seed: int, num_tokens: Sequence[int]) -> list[int]:
    """Per-row verifier seeds for one step: a function of the run seed, the row and its
    token count, so every step of every row draws fresh, reproducible numbers."""
    return [((seed << 44) ^ (b << 26) ^ n) & _SEED_MASK for b, n in enumerate(num_tokens)]


def speculative_generate(
    target: LogitsModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    proposer: Proposer | None = None,
    k: int = 4,
    policy: KPolicy | None = None,
    temperature: float | Sequence[float] = 0.0,
    top_k: int | Sequence[int] = 0,
    top_p: float | Sequence[float] = 1.0,
    min_p: float | Sequence[float] = 0.0,
    seed: int = 0,
    stats: AcceptanceStats | None = None,
    backend: str = "auto",
) -> list[list[int]]:
    """Generate ``max_new_tokens`` per prompt, speculatively when a proposer is given.

    Parameters
    ----------
    target : LogitsModel
        The model whose distribution the output follows.
    prompts : sequences of token ids, one per row (each non-empty).
    max_new_tokens : int, >= 1
    proposer : Proposer or None
        ``None`` decodes plainly (one target pass per token).
    k : int, >= 1
        Draft tokens per step (ignored when ``policy`` is given).
    policy : KPolicy or None
        Chooses ``k`` per row each step (0 turns speculation off for the row) and is
        updated with every verification.
    temperature, top_k, top_p, min_p : number, or one per prompt
        The sampling settings of each row (:class:`~infercore.spec.sampling.SamplingParams`),
        applied alike to the target and, through the requests handed to the proposer, to
        the draft. All rows at temperature 0: greedy (verification by
        :func:`greedy_verify`; the output equals plain greedy decoding). Otherwise the
        target's :func:`~infercore.ops.sampling.sampling_probs` (one-hot for greedy rows)
        are verified by :func:`rejection_sample` with per-row seeds from ``seed``: every
        row's tokens follow its filtered target distribution exactly.
    stats : AcceptanceStats or None
        Updated with every step.
    backend : str
        Backend of ``spec.rejection`` / ``spec.greedy``.

    Returns
    -------
    list of lists of int: the new tokens of each row.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    sampling = per_row_sampling(len(prompts), temperature, top_k, top_p, min_p)
    greedy = all_greedy(sampling)
    for b, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompts[{b}] is empty; every prompt needs at least one token")
    tokens = [list(p) for p in prompts]
    ids = list(range(len(tokens)))
    goal = [len(t) + max_new_tokens for t in tokens]
    while any(len(t) < g for t, g in zip(tokens, goal, strict=True)):
        # No drafts past the last token wanted (the target adds one more).
        room = [max(g - len(t) - 1, 0) for t, g in zip(tokens, goal, strict=True)]
        ks = policy.choose(ids) if policy is not None else [k] * len(ids)
        ks = [min(kb, r) for kb, r in zip(ks, room, strict=True)]
        drafts: list[list[int]] = [[] for _ in ids]
        draft_probs = None
        if proposer is not None and max(ks) > 0:
            requests = [
                RequestView(i, t, sp) for i, t, sp in zip(ids, tokens, sampling, strict=True)
            ]
            proposal = proposer.propose(requests, ks)
            drafts = proposal.rows()
            draft_probs = proposal.probs
        num_draft = [len(d) for d in drafts]
        width = max(num_draft)
        logits = target.logits(
            [t + d for t, d in zip(tokens, drafts, strict=True)],
            [n + 1 for n in num_draft],
            keys=ids,
        )
        device = logits.device
        draft_tokens = torch.tensor(
            [d + [-1] * (width - len(d)) for d in drafts], dtype=torch.int64, device=device
        ).view(len(ids), width)
        n_draft = torch.tensor(num_draft, dtype=torch.int32, device=device)
        if greedy:
            out, accepted = greedy_verify(
                logits.argmax(dim=-1), draft_tokens, num_draft=n_draft, backend=backend
            )
        else:
            probs = batch_sampling_probs(logits, sampling)
            q = None if draft_probs is None else draft_probs[:, :width].to(device)
            seeds = torch.tensor(
                step_seeds(seed, [len(t) for t in tokens]), dtype=torch.int64, device=device
            )
            out, accepted = rejection_sample(
                probs, q, draft_tokens, num_draft=n_draft, seeds=seeds, backend=backend
            )
        num_accepted = [int(a) for a in accepted.tolist()]
        for t, row, a in zip(tokens, out.tolist(), num_accepted, strict=True):
            t.extend(row[: a + 1])
        if stats is not None:
            stats.update(ids, num_draft, num_accepted)
        if policy is not None:
            policy.update(ids, num_draft, num_accepted)
    return [t[len(p) : g] for t, p, g in zip(tokens, prompts, goal, strict=True)]
