"""Reference verifiers in plain PyTorch, vectorized over the batch: the oracle and CPU path."""

from __future__ import annotations

import torch

from infercore.registry import Backend
from infercore.spec.rng import uniforms


def _accepted_prefix(accept: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of True in each row of ``accept [B, K]`` (int64 ``[B]``)."""
    return accept.to(torch.int64).cumprod(dim=1).sum(dim=1)


def _emit(
    draft_tokens: torch.Tensor, num_accepted: torch.Tensor, last: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens [B, K + 1]``: accepted drafts, then ``last`` at ``num_accepted``, then -1."""
    k = draft_tokens.shape[1]
    pos = torch.arange(k + 1, device=draft_tokens.device)
    drafts = torch.nn.functional.pad(draft_tokens.to(torch.int64), (0, 1), value=-1)
    tokens = torch.where(pos < num_accepted[:, None], drafts, -1)
    tokens = torch.where(pos == num_accepted[:, None], last[:, None], tokens)
    return tokens, num_accepted.to(torch.int32)


def sample_inverse_cdf(dist: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One index per row of ``dist [B, V]`` (non-negative weights) by inverse CDF at ``u [B]``.

    Sums run in float64, so backends that add in another order pick the same index except
    when the threshold lands within ~1e-16 of a boundary. Never returns an index of zero
    weight: the count of cumulative sums ``<= u * total`` is capped at the last positive
    index (rounding can push the threshold past the end).
    """
    weights = dist.double()
    cum = weights.cumsum(dim=-1)
    count = (cum <= (u.double() * weights.sum(dim=-1))[:, None]).sum(dim=-1)
    idx = torch.arange(dist.shape[-1], device=dist.device)
    last = torch.where(dist > 0, idx, -1).amax(dim=-1)
    return torch.minimum(count, last).clamp_min(0)


def rejection_sample_reference(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    num_draft: torch.Tensor,
    seeds: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, k = draft_tokens.shape
    vocab = target_probs.shape[-1]
    device = target_probs.device
    p = target_probs.float()
    rows = torch.arange(batch, device=device)
    pos = torch.arange(k, device=device)
    n = num_draft.to(torch.int64).clamp(0, k)
    x = draft_tokens.to(torch.int64)
    in_vocab = (x >= 0) & (x < vocab)
    xc = x.clamp(0, vocab - 1)

    p_x = p[:, :k].gather(2, xc[..., None]).squeeze(-1).masked_fill(~in_vocab, 0.0)
    if draft_probs is None:
        q_x = torch.ones_like(p_x)
    else:
        q_x = draft_probs.float().gather(2, xc[..., None]).squeeze(-1)
    u = uniforms(seeds, 2 * pos.expand(batch, k))
    # u < p/q, written without the division: exact on every backend, and a token the
    # target gives probability 0 is never accepted.
    accept = (u * q_x < p_x) & (pos < n[:, None])
    num_accepted = _accepted_prefix(accept)
    rejected = num_accepted < n

    at_p = p[rows, num_accepted]
    if k > 0:
        j = num_accepted.clamp(max=k - 1)
        if draft_probs is None:
            sub = torch.nn.functional.one_hot(xc[rows, j], vocab).float()
            sub = sub * in_vocab[rows, j, None]
        else:
            sub = draft_probs[rows, j].float()
        residual = (at_p - sub * rejected[:, None]).clamp_min(0.0)
    else:
        residual = at_p.clamp_min(0.0)
    dist = torch.where((residual.sum(dim=-1) > 0)[:, None], residual, at_p.clamp_min(0.0))
    u_sample = uniforms(seeds, (2 * num_accepted + 1)[:, None])[:, 0]
    return _emit(draft_tokens, num_accepted, sample_inverse_cdf(dist, u_sample))


def greedy_verify_reference(
    target_ids: torch.Tensor, draft_tokens: torch.Tensor, num_draft: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    k = draft_tokens.shape[1]
    target = target_ids.to(torch.int64)
    pos = torch.arange(k, device=target.device)
    n = num_draft.to(torch.int64).clamp(0, k)
    match = (draft_tokens.to(torch.int64) == target[:, :k]) & (pos < n[:, None])
    num_accepted = _accepted_prefix(match)
    last = target.gather(1, num_accepted[:, None])[:, 0]
    return _emit(draft_tokens, num_accepted, last)


class ReferenceRejectionSampler(Backend):
    family = "spec.rejection"
    name = "reference"
    priority = 0
    description = "PyTorch, vectorized over rows, float32 math; any device"

    def run(self, target_probs, draft_probs, draft_tokens, num_draft, seeds):
        return rejection_sample_reference(target_probs, draft_probs, draft_tokens, num_draft, seeds)


class ReferenceGreedyVerifier(Backend):
    family = "spec.greedy"
    name = "reference"
    priority = 0
    description = "PyTorch, vectorized over rows; any device"

    def run(self, target_ids, draft_tokens, num_draft):
        return greedy_verify_reference(target_ids, draft_tokens, num_draft)
