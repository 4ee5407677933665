"""Choosing the number of draft tokens per request: a hook and an adaptive policy.

A :class:`KPolicy` picks ``k`` per request before each step (0 turns speculation off
for that row) and learns from the verification results. :class:`AdaptiveK` models
acceptance as independent per draft with probability ``a`` (estimated per request),
so a step with ``k`` drafts emits ``E(k) = (1 - a**(k+1)) / (1 - a)`` tokens on average
and costs ``1 + k * (draft_cost + verify_cost)`` plain decode steps; it picks the ``k``
with the best ratio and turns speculation off when no ``k`` beats plain decoding by
``min_speedup``, probing now and then to notice when acceptance recovers. This keeps
speculation from running much slower than plain decoding when drafts are poor.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pydantic
import torch

from infercore.config import Config
from infercore.spec.stats import as_int_list

__all__ = ["AdaptiveK", "AdaptiveKConfig", "KPolicy", "expected_tokens"]


@runtime_checkable
class KPolicy(Protocol):
    """Chooses draft lengths and learns from verification."""

    def choose(self, request_ids: Sequence[Hashable]) -> list[int]:
        """``k`` (>= 0) for each request of the next step."""
        ...

    def update(
        self,
        request_ids: Sequence[Hashable],
        num_draft: torch.Tensor | Sequence[int],
        num_accepted: torch.Tensor | Sequence[int],
    ) -> None:
        """Record a verification step."""
        ...


def expected_tokens(acceptance: float, k: int) -> float:
    """Mean tokens per step with ``k`` drafts each accepted with probability ``acceptance``."""
    if acceptance >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


class AdaptiveKConfig(Config):
    """Settings of :class:`AdaptiveK`. Cost defaults are an initial choice, to be tuned."""

    max_k: int = pydantic.Field(4, ge=1, description="largest k")
    min_k: int = pydantic.Field(1, ge=1, description="smallest k while speculating")
    draft_cost: float = pydantic.Field(
        0.0, ge=0.0, description="time of one draft step / time of one target decode step"
    )
    verify_cost: float = pydantic.Field(
        0.02, ge=0.0, description="extra target time per extra verified token, same unit"
    )
    min_speedup: float = pydantic.Field(
        1.05, ge=1.0, description="speculate only when the predicted speedup reaches this"
    )
    decay: float = pydantic.Field(
        0.9, gt=0.0, le=1.0, description="weight of earlier steps in the acceptance estimate"
    )
    prior_weight: float = pydantic.Field(
        2.0, ge=0.0, description="pseudo-observations of the batch-wide rate for each request"
    )
    probe_interval: int = pydantic.Field(
        16, ge=1, description="steps with speculation off between probes with min_k"
    )

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> AdaptiveKConfig:
        if self.min_k > self.max_k:
            raise ValueError(f"min_k ({self.min_k}) must be <= max_k ({self.max_k})")
        return self


@dataclass
class _Estimate:
    accepted: float = 0.0
    rejected: float = 0.0
    idle_steps: int = 0

    def observe(self, decay: float, accepted: int, rejected: int) -> None:
        self.accepted = decay * self.accepted + accepted
        self.rejected = decay * self.rejected + rejected


class AdaptiveK:
    """Per-request ``k`` from an online acceptance estimate and a cost model.

    The acceptance probability of a request is the decayed count of accepted drafts over
    accepted drafts plus rejections (each speculative step ends in at most one), shrunk
    toward the batch-wide estimate with ``prior_weight`` pseudo-observations.
    """

    def __init__(self, config: AdaptiveKConfig | None = None) -> None:
        self.config = config if config is not None else AdaptiveKConfig()
        self._requests: dict[Hashable, _Estimate] = {}
        self._batch = _Estimate()

    def acceptance(self, request_id: Hashable) -> float:
        """Current estimate of the per-draft acceptance probability of a request."""
        g = self._batch
        prior = (g.accepted + 1.0) / (g.accepted + g.rejected + 2.0)
        e = self._requests.get(request_id, _Estimate())
        w = self.config.prior_weight
        return (e.accepted + w * prior) / (e.accepted + e.rejected + w)

    def best_k(self, acceptance: float) -> tuple[int, float]:
        """``(k, predicted speedup)`` maximizing tokens per unit of time, over min_k..max_k."""
        c = self.config
        per_draft = c.draft_cost + c.verify_cost
        best = max(
            range(c.min_k, c.max_k + 1),
            key=lambda k: expected_tokens(acceptance, k) / (1.0 + k * per_draft),
        )
        return best, expected_tokens(acceptance, best) / (1.0 + best * per_draft)

    def choose(self, request_ids: Sequence[Hashable]) -> list[int]:
        ks = []
        for rid in request_ids:
            e = self._requests.setdefault(rid, _Estimate())
            k, speedup = self.best_k(self.acceptance(rid))
            if speedup >= self.config.min_speedup:
                ks.append(k)
            elif e.idle_steps + 1 >= self.config.probe_interval:
                ks.append(self.config.min_k)
            else:
                ks.append(0)
        return ks

    def update(
        self,
        request_ids: Sequence[Hashable],
        num_draft: torch.Tensor | Sequence[int],
        num_accepted: torch.Tensor | Sequence[int],
    ) -> None:
        decay = self.config.decay
        for rid, d, a in zip(
            request_ids, as_int_list(num_draft), as_int_list(num_accepted), strict=True
        ):
            e = self._requests.setdefault(rid, _Estimate())
            if d == 0:
                e.idle_steps += 1
                continue
            e.idle_steps = 0
            rejected = int(a < d)
            e.observe(decay, a, rejected)
            self._batch.observe(decay, a, rejected)

    def remove(self, request_id: Hashable) -> None:
        """Forget a finished request."""
        self._requests.pop(request_id, None)
