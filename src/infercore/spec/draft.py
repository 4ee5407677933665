"""Draft-model proposer: a smaller model with the target's vocabulary, run k steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic
import torch

from infercore.config import Config
from infercore.spec.interface import Proposal, SpecRequest, per_row_k
from infercore.spec.models import CallableModel, LogitsModel
from infercore.spec.sampling import SamplingParams, all_greedy, batch_sampling_probs

__all__ = ["DraftModelConfig", "DraftModelProposer", "as_logits_model"]


class DraftModelConfig(Config):
    """Settings of the ``draft_model`` proposer.

    ``temperature``, ``top_k``, ``top_p`` and ``min_p`` apply to requests without their
    own ``sampling`` settings.

    ``model`` is a :class:`~infercore.spec.models.LogitsModel` (e.g.
    :class:`~infercore.spec.paged.PagedModel`, the draft's own paged cache), a
    transformers causal LM
    (wrapped in :class:`~infercore.spec.hf.HFModel`), or a callable ``(input_ids [B, T],
    positions [B, T]) -> logits [B, T, V]`` (wrapped in
    :class:`~infercore.spec.models.CallableModel`; then ``vocab_size`` is required).
    """

    model: Any = pydantic.Field(description="the draft model")
    target_vocab_size: int = pydantic.Field(ge=1, description="vocabulary size of the target")
    vocab_size: int | None = pydantic.Field(
        None, ge=1, description="vocabulary size of a plain callable model"
    )
    temperature: float = pydantic.Field(
        0.0, ge=0.0, description="0: greedy drafts (no probabilities); > 0: sampled drafts"
    )
    top_k: int = pydantic.Field(0, description="top-k filter of sampled drafts (<= 0: off)")
    top_p: float = pydantic.Field(
        1.0, gt=0.0, le=1.0, description="top-p filter of sampled drafts (1: off)"
    )
    min_p: float = pydantic.Field(
        0.0, ge=0.0, le=1.0, description="min-p filter of sampled drafts (0: off)"
    )
    seed: int = pydantic.Field(0, description="seed of the draft sampler (temperature > 0)")


def as_logits_model(model: Any, vocab_size: int | None = None) -> LogitsModel:
    """Wrap ``model`` as a :class:`LogitsModel` (see :class:`DraftModelConfig`)."""
    if isinstance(model, LogitsModel):
        return model
    if hasattr(model, "get_output_embeddings") and hasattr(model, "config"):
        from infercore.spec.hf import HFModel

        return HFModel(model)
    if callable(model):
        if vocab_size is None:
            raise ValueError(
                "vocab_size is required for a draft model given as a plain callable "
                "(input_ids, positions) -> logits"
            )
        device = getattr(model, "device", "cpu")
        return CallableModel(model, vocab_size, device=device)
    raise TypeError(
        "model must be a LogitsModel, a transformers causal LM or a callable "
        f"(input_ids, positions) -> logits; got {type(model).__name__}"
    )


class DraftModelProposer:
    """Proposes by running a draft model autoregressively (``spec.proposer`` ``draft_model``).

    Each call advances the draft ``max(k)`` steps for the whole batch (rows asking for
    fewer keep the first ``k[b]``). Each row samples with its request's ``sampling``
    settings (the ones the target is verified with), or the proposer's own when the
    request has none. When every row is greedy, drafts are the draft's argmax and
    ``Proposal.probs`` is ``None`` (deterministic drafts: the verifier treats ``q`` as
    one-hot, which is exact). Otherwise drafts are sampled from
    :func:`~infercore.ops.sampling.sampling_probs` of the draft logits (temperature,
    top-k, top-p, min-p; one-hot for greedy rows) and those distributions are returned.

    A stateful model (``PagedModel``, ``HFModel``) keeps its cache between calls: the next
    call's rows share the accepted prefix with the cached ones and only the new tokens are
    fed; the rejected drafts' cache entries are rolled back.

    Raises
    ------
    ValueError
        If the draft's vocabulary size differs from ``target_vocab_size``.
    """

    def __init__(
        self,
        model: LogitsModel,
        *,
        target_vocab_size: int,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
    ) -> None:
        if model.vocab_size != target_vocab_size:
            raise ValueError(
                f"the draft model's vocabulary size ({model.vocab_size}) differs from "
                f"target_vocab_size ({target_vocab_size}): draft and target must share one "
                "vocabulary"
            )
        self.model = model
        self.sampling = SamplingParams(temperature, top_k, top_p, min_p)
        self.seed = seed
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, config: DraftModelConfig) -> DraftModelProposer:
        return cls(
            as_logits_model(config.model, config.vocab_size),
            target_vocab_size=config.target_vocab_size,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            min_p=config.min_p,
            seed=config.seed,
        )

    def _sample(
        self, logits: torch.Tensor, params: list[SamplingParams]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if all_greedy(params):
            return logits.argmax(dim=-1), None
        if self._generator is None or self._generator.device != logits.device:
            self._generator = torch.Generator(device=logits.device)
            self._generator.manual_seed(self.seed)
        probs = batch_sampling_probs(logits, params)
        race = torch.empty_like(probs).exponential_(generator=self._generator)
        race = race.clamp_min(torch.finfo(race.dtype).tiny)
        return (probs / race).argmax(dim=-1), probs  # exponential race: a draw from probs

    def propose(self, requests: Sequence[SpecRequest], k: int | Sequence[int]) -> Proposal:
        """Drafts ``[B, max(k)]`` on the model's device; ``probs`` as described above."""
        ks = per_row_k(k, len(requests))
        steps = max(ks, default=0)
        rows = [list(r.token_ids) for r in requests]
        keys = [r.request_id for r in requests]
        params = [getattr(r, "sampling", None) or self.sampling for r in requests]
        drafts: list[torch.Tensor] = []
        dists: list[torch.Tensor] = []
        for _ in range(steps):
            token, probs = self._sample(self.model.logits(rows, 1, keys)[:, 0], params)
            drafts.append(token)
            if probs is not None:
                dists.append(probs)
            for row, t in zip(rows, token.tolist(), strict=True):
                row.append(t)
        if not drafts:
            device = getattr(self.model, "device", torch.device("cpu"))
            empty = torch.empty((len(requests), 0), dtype=torch.int64, device=device)
            return Proposal(empty, torch.zeros(len(requests), dtype=torch.int32, device=device))
        tokens = torch.stack(drafts, dim=1).to(torch.int64)
        num = torch.tensor(ks, dtype=torch.int32, device=tokens.device)
        pos = torch.arange(steps, device=tokens.device)
        tokens = torch.where(pos < num[:, None], tokens, -1)
        probs = torch.stack(dists, dim=1) if dists else None
        return Proposal(tokens, num, probs)
