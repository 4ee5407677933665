"""Sampling parameters applied alike to target and draft: speculative sampling keeps the
filtered target distribution (top-k / top-p / min-p), per request."""

from __future__ import annotations

import pytest
import torch

from infercore.ops.sampling import sampling_probs
from infercore.spec import (
    CallableModel,
    DraftModelProposer,
    RequestView,
    SamplingParams,
    batch_sampling_probs,
    speculative_generate,
)
from tests.spec.test_verify import _chi2_pvalue
from tests.spec.toy import VOCAB, plain_greedy, target_fn

V = 13
ROWS = 3000  # rows per parameter group: one seeded trial each
ALPHA = 1e-4  # significance of each (seeded, so deterministic) chi-square test


class TableModel:
    """A bigram toy: the logits after token ``t`` are row ``t`` of a fixed random table."""

    def __init__(self, seed: int, scale: float) -> None:
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * scale

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]


GROUPS = [
    SamplingParams(temperature=0.9, top_k=6, top_p=0.85),
    SamplingParams(temperature=1.3, top_k=0, top_p=0.7, min_p=0.05),
]


def test_first_and_second_tokens_follow_the_filtered_target():
    target, draft = TableModel(1, 2.0), TableModel(2, 2.0)
    prompt = [4, 7]
    prompts = [prompt] * (ROWS * len(GROUPS))
    params = [g for g in GROUPS for _ in range(ROWS)]
    proposer = DraftModelProposer(CallableModel(draft, V), target_vocab_size=V, seed=3)
    out = speculative_generate(
        CallableModel(target, V), prompts, 3, proposer=proposer, k=2, seed=11,
        temperature=[p.temperature for p in params], top_k=[p.top_k for p in params],
        top_p=[p.top_p for p in params], min_p=[p.min_p for p in params],
        backend="reference",
    )
    tokens = torch.tensor(out)
    for g, sp in enumerate(GROUPS):
        rows = tokens[g * ROWS : (g + 1) * ROWS]
        p = sampling_probs(target.table[prompt[-1]][None], sp.temperature, sp.top_k, sp.top_p,
                           sp.min_p)[0]
        unfiltered = torch.softmax(target.table[prompt[-1]] / sp.temperature, -1)
        assert int((p > 0).sum()) < V  # the filters do cut the support
        first = rows[:, 0]
        assert bool((p[first] > 0).all())  # never outside the filtered support
        counts = torch.bincount(first, minlength=V)
        assert _chi2_pvalue(counts, p) > ALPHA
        assert _chi2_pvalue(counts, unfiltered) < 1e-6
        # The second token, given the first (bigram: the target's row of the first token).
        for t in counts.argsort(descending=True)[:2].tolist():
            p2 = sampling_probs(target.table[t][None], sp.temperature, sp.top_k, sp.top_p,
                                sp.min_p)[0]
            second = rows[first == t, 1]
            assert bool((p2[second] > 0).all())
            assert _chi2_pvalue(torch.bincount(second, minlength=V), p2) > ALPHA


def test_draft_distributions_are_the_requests_filtered_draft_distributions():
    draft = TableModel(5, 2.0)
    proposer = DraftModelProposer(CallableModel(draft, V), target_vocab_size=V,
                                  temperature=0.7, top_k=3)
    reqs = [RequestView(0, [1, 2], GROUPS[0]), RequestView(1, [3], GROUPS[1]),
            RequestView(2, [6]), RequestView(3, [9], SamplingParams())]
    prop = proposer.propose(reqs, 2)
    assert prop.probs is not None
    own = [GROUPS[0], GROUPS[1], proposer.sampling, SamplingParams()]
    for b, r in enumerate(reqs):
        context = list(r.token_ids) + prop.rows()[b]
        expected = batch_sampling_probs(draft.table[context[-3:-1]][None], [own[b]])[0]
        torch.testing.assert_close(prop.probs[b], expected)
        assert bool((expected.gather(1, prop.tokens[b][:, None]) > 0).all())
    # The greedy request drafts its argmax (a one-hot distribution).
    assert prop.rows()[3][0] == int(draft.table[9].argmax())


def test_mixed_greedy_and_sampled_rows():
    from tests.spec.toy import DraftFn

    prompts = [[1, 2, 3, 1, 2], [5, 8], [9, 4, 7]]
    out = speculative_generate(
        CallableModel(target_fn, VOCAB), prompts, 16, k=3, temperature=[0.0, 1.0, 0.0],
        top_k=[0, 4, 0], seed=2,
        proposer=DraftModelProposer(CallableModel(DraftFn(), VOCAB), target_vocab_size=VOCAB),
    )
    assert out[0] == plain_greedy(prompts[0], 16) and out[2] == plain_greedy(prompts[2], 16)
    assert len(out[1]) == 16


def test_bad_sampling_parameters_are_errors():
    with pytest.raises(ValueError, match="top_p must be a number in"):
        SamplingParams(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        SamplingParams(temperature=-1.0)
    with pytest.raises(ValueError, match="top_k has 1 entries but there are 2 rows"):
        speculative_generate(CallableModel(target_fn, VOCAB), [[1], [2]], 2, top_k=[3])
