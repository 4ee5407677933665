"""Speculative decoding: proposers, exact verification, acceptance statistics.

- Proposers (component family ``spec.proposer``, built with
  ``infercore.create("spec.proposer", name, config)``): ``ngram`` (prompt lookup) and
  ``draft_model`` (a smaller model with the target's vocabulary). Both satisfy
  :class:`Proposer`: ``propose(requests, k) -> Proposal``.
- Verifiers: :func:`rejection_sample` (family ``spec.rejection``, exact: emitted tokens
  follow the target distribution) and :func:`greedy_verify` (family ``spec.greedy``).
- :class:`SamplingParams` and :func:`batch_sampling_probs`: temperature, top-k, top-p,
  min-p applied alike to target and draft, so verification keeps the filtered target
  distribution.
- :class:`AcceptanceStats` and the :class:`KPolicy` hook with :class:`AdaptiveK`.
- Models for the draft proposer and the loop: :class:`LogitsModel`, with adapters
  :class:`CallableModel` (a stateless callable), :class:`PagedModel` (a paged forward over
  blocks of a :class:`infercore.cache.KVCacheManager`, rejected tokens rolled back) and
  :class:`HFModel` (a transformers causal LM with its own ``past_key_values`` cache).
- :class:`SpecKVCache`: paged-KV bookkeeping of a step (write the drafts' slots, roll
  back rejected ones through :meth:`infercore.cache.KVCacheManager.truncate`).
- :func:`speculative_generate`: a bare decoding loop assembling the pieces.
"""

from infercore.spec.draft import DraftModelConfig, DraftModelProposer
from infercore.spec.generate import speculative_generate
from infercore.spec.hf import HFModel
from infercore.spec.interface import Proposal, Proposer, RequestView, SpecRequest
from infercore.spec.kv import KVWrite, SpecKVCache
from infercore.spec.models import CallableModel, LogitsModel
from infercore.spec.ngram import NgramConfig, NgramProposer
from infercore.spec.paged import PagedBatch, PagedForward, PagedModel
from infercore.spec.policy import AdaptiveK, AdaptiveKConfig, KPolicy
from infercore.spec.sampling import SamplingParams, batch_sampling_probs
from infercore.spec.stats import AcceptanceCounts, AcceptanceStats
from infercore.spec.verify import greedy_verify, rejection_sample

__all__ = [
    "AcceptanceCounts",
    "AcceptanceStats",
    "AdaptiveK",
    "AdaptiveKConfig",
    "CallableModel",
    "DraftModelConfig",
    "DraftModelProposer",
    "HFModel",
    "KPolicy",
    "KVWrite",
    "LogitsModel",
    "NgramConfig",
    "NgramProposer",
    "PagedBatch",
    "PagedForward",
    "PagedModel",
    "Proposal",
    "Proposer",
    "RequestView",
    "SamplingParams",
    "SpecKVCache",
    "SpecRequest",
    "batch_sampling_probs",
    "greedy_verify",
    "rejection_sample",
    "speculative_generate",
]
