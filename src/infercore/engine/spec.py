"""Speculative decoding in the engine: propose drafts, verify them in one target forward.

A speculative step is: :meth:`Speculator.propose` drafts up to ``k`` tokens for each
decoding request (a ``spec.proposer`` component: ``ngram`` or ``draft_model``); the
scheduler gives each decode ``1 + k`` query tokens with KV slots for all of them
(``Scheduler.schedule(draft_token_ids)``); the runner computes the logits of those
positions (:meth:`~infercore.engine.ModelRunner.verify_logits`, eager: no CUDA graph);
:meth:`Speculator.verify` accepts a prefix of each request's drafts and adds one target
token; ``Scheduler.update`` appends the emitted tokens and gives back the KV slots of the
rejected drafts.

Greedy requests are verified with :func:`infercore.spec.greedy_verify`, so their tokens
are the target's argmax tokens, as without speculation. When a request samples, the
whole batch goes through :func:`infercore.spec.rejection_sample` on the filtered target
distributions (greedy rows as one-hot distributions): every emitted token follows the
distribution :func:`infercore.ops.sample` draws from, though not the same draws for a
given seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infercore.cache import KVCacheConfig, KVCacheLayout, KVCacheManager
from infercore.engine.config import SamplingParams, SpeculativeConfig
from infercore.engine.model import LlamaModel
from infercore.ops.attention import PagedAttentionWrapper
from infercore.registry import create
from infercore.sched import Request, SchedulerOutput
from infercore.spec import (
    AcceptanceStats,
    PagedBatch,
    PagedModel,
    RequestView,
    batch_sampling_probs,
    greedy_verify,
    rejection_sample,
)
from infercore.spec import SamplingParams as SpecSampling

__all__ = ["Speculator", "paged_draft_model"]


def _spec_sampling(p: SamplingParams) -> SpecSampling:
    return SpecSampling(p.temperature, p.top_k, p.top_p, p.min_p)


def paged_draft_model(model: LlamaModel, *, block_size: int, num_blocks: int) -> PagedModel:
    """A draft :class:`LlamaModel` as a :class:`~infercore.spec.PagedModel` over its own
    paged KV cache of ``num_blocks`` blocks (the draft proposer's model)."""
    a = model.args
    manager = KVCacheManager(
        KVCacheConfig(block_size=block_size, num_blocks=num_blocks, enable_prefix_caching=False),
        KVCacheLayout(a.num_layers, a.num_kv_heads, a.head_dim, model.dtype),
        device=model.device,
    )
    model.kv_caches = manager.kv_caches

    def forward(input_ids: torch.Tensor, positions: torch.Tensor, batch: PagedBatch
                ) -> torch.Tensor:
        tables = batch.block_tables
        wrapper = PagedAttentionWrapper(
            a.num_heads, a.num_kv_heads, a.head_dim, block_size, max_batch=tables.shape[0],
            max_tokens=input_ids.shape[0], max_blocks_per_seq=max(tables.shape[1], 1),
            dtype=model.dtype, device=model.device, num_blocks=num_blocks,
        )
        wrapper.plan(batch.cu_seqlens_q.cpu(), batch.seq_lens.cpu(), tables.cpu())
        return model.forward(input_ids, positions, batch.slot_mapping, wrapper)

    return PagedModel(forward, a.vocab_size, manager)


class Speculator:
    """Drafts and verification of the engine's speculative steps.

    Parameters
    ----------
    config : SpeculativeConfig
    vocab_size : int
        The target's vocabulary.
    draft : LlamaModel, optional
        The draft model of ``method="draft_model"`` (its cache is built here).
    block_size, num_blocks : int
        Block size and blocks of the draft's KV cache.

    Attributes
    ----------
    stats : AcceptanceStats
        Drafts proposed and accepted, per running request and in total.
    """

    def __init__(self, config: SpeculativeConfig, vocab_size: int, *,
                 draft: LlamaModel | None = None, block_size: int = 16,
                 num_blocks: int = 0) -> None:
        self.config = config
        self.k = config.num_speculative_tokens
        if config.method == "ngram":
            self.proposer = create("spec.proposer", "ngram", config.ngram)
        else:
            assert draft is not None, "the engine loads the draft model"
            model = paged_draft_model(draft, block_size=block_size, num_blocks=num_blocks)
            self.proposer = create("spec.proposer", "draft_model",
                                   {"model": model, "target_vocab_size": vocab_size})
        self.stats = AcceptanceStats()
        self._draft_probs: torch.Tensor | None = None

    def propose(self, requests: Sequence[Request], params: Sequence[SamplingParams]
                ) -> dict[str, list[int]]:
        """Draft tokens for each decoding request (fewer near its ``max_tokens``)."""
        if not requests:
            return {}
        views = [RequestView(r.request_id, r.token_ids, _spec_sampling(p))
                 for r, p in zip(requests, params, strict=True)]
        ks = [max(0, min(self.k, r.num_prompt_tokens + r.max_tokens - r.num_tokens - 1))
              for r in requests]
        if not any(ks):
            return {}
        proposal = self.proposer.propose(views, ks)
        self._draft_probs = proposal.probs
        return {r.request_id: row for r, row in zip(requests, proposal.rows(), strict=True)}

    def verify(self, logits: torch.Tensor, out: SchedulerOutput,
               params: Sequence[SamplingParams], seeds: Sequence[int] | None
               ) -> list[list[int]]:
        """The tokens each request of ``out`` emits.

        Parameters
        ----------
        logits : Tensor ``[B, K + 1, vocab]``
            :meth:`~infercore.engine.ModelRunner.verify_logits` of the step.
        out : SchedulerOutput
            The step (decodes with ``num_draft_tokens`` drafts, then prefills).
        params : one SamplingParams per request
        seeds : one seed per request, or ``None`` when every request is greedy.
        """
        batch, width = logits.shape[0], logits.shape[1]
        nd = out.num_decodes
        dev = logits.device
        num = [*out.num_draft_tokens, *([0] * (batch - nd))]
        drafts = torch.full((batch, width - 1), -1, dtype=torch.int64)
        loc = out.query_start_loc
        for i, k in enumerate(out.num_draft_tokens):
            drafts[i, :k] = torch.tensor(out.input_ids[loc[i] + 1 : loc[i] + 1 + k])
        drafts = drafts.to(dev)
        num_draft = torch.tensor(num, dtype=torch.int32).to(dev)
        if seeds is None:
            tokens, accepted = greedy_verify(logits.argmax(-1), drafts, num_draft=num_draft)
        else:
            probs = batch_sampling_probs(logits, [_spec_sampling(p) for p in params])
            tokens, accepted = rejection_sample(
                probs, self._scheduled_draft_probs(nd, batch, width - 1, probs), drafts,
                num_draft=num_draft, seeds=torch.tensor(seeds, dtype=torch.int64).to(dev),
            )
        self._draft_probs = None
        counts = accepted.tolist()
        self.stats.update(out.req_ids[:nd], num[:nd], counts[:nd])
        return [row[: a + 1] for row, a in zip(tokens.tolist(), counts, strict=True)]

    def _scheduled_draft_probs(self, nd: int, batch: int, k: int, like: torch.Tensor
                               ) -> torch.Tensor | None:
        """The draft distributions of the scheduled decodes (a prefix of the proposal's
        rows), zero for the other rows; ``None`` for deterministic drafts."""
        q = self._draft_probs
        if q is None:
            return None
        full = like.new_zeros(batch, k, like.shape[-1])
        cols = min(k, q.shape[1])
        full[:nd, :cols] = q[:nd, :cols].to(full.dtype)
        return full
