"""Acceptance statistics and the adaptive-k policy."""

from __future__ import annotations

import math

import pytest
import torch

from infercore.config import ConfigError
from infercore.spec import (
    AcceptanceStats,
    AdaptiveK,
    AdaptiveKConfig,
    CallableModel,
    DraftModelProposer,
    KPolicy,
    speculative_generate,
)
from infercore.spec.policy import expected_tokens
from tests.spec.toy import VOCAB, target_fn


def test_acceptance_stats_per_request_and_total():
    stats = AcceptanceStats()
    stats.update(["a", "b"], [4, 4], [4, 1])
    stats.update(["a", "b"], torch.tensor([4, 0]), torch.tensor([2, 0]))
    a, b = stats["a"], stats["b"]
    assert (a.num_spec_steps, a.num_accepted_tokens, a.num_rejections) == (2, 6, 1)
    assert a.mean_accepted_length == 4.0 and a.acceptance_rate == 0.75
    assert (b.num_spec_steps, b.num_plain_steps) == (1, 1) and b.tokens_per_step == 1.5
    assert stats.total.acceptance_rate == 7 / 12
    assert stats.remove("a") is a and "a" not in stats
    summary = stats.summary()
    assert summary["num_accepted_tokens"] == 7 and summary["num_requests"] == 1
    assert math.isnan(AcceptanceStats().total.mean_accepted_length)
    with pytest.raises(ValueError, match="num_accepted=3 not in"):
        stats.update(["c"], [2], [3])
    with pytest.raises(ValueError, match="one entry per row"):
        stats.update(["c", "d"], [2], [1])


def test_expected_tokens_matches_a_direct_sum():
    for a in (0.0, 0.3, 0.9, 1.0):
        for k in (0, 1, 4):
            assert expected_tokens(a, k) == pytest.approx(sum(a**i for i in range(k + 1)))


def test_adaptive_k_grows_with_acceptance_and_turns_off_when_poor():
    policy = AdaptiveK(AdaptiveKConfig(max_k=6, draft_cost=0.2, probe_interval=4))
    assert isinstance(policy, KPolicy)
    for _ in range(20):
        policy.update(["good", "bad"], [6, 3], [6, 0])
    assert policy.acceptance("good") > 0.9 and policy.acceptance("bad") < 0.2
    assert policy.choose(["good", "bad"]) == [6, 0]
    # Off: plain steps, with a min_k probe every probe_interval steps.
    seen = []
    for _ in range(8):
        k_bad = policy.choose(["bad"])[0]
        seen.append(k_bad)
        policy.update(["bad"], [k_bad], [0])
    assert seen == [0, 0, 0, 1, 0, 0, 0, 1]


def test_adaptive_k_bounds_draft_work_for_a_useless_draft():
    class Wrong:
        calls = 0

        def __call__(self, ids, pos):
            self.calls += 1
            return -target_fn(ids, pos)  # never the target's choice

    wrong = Wrong()
    proposer = DraftModelProposer(CallableModel(wrong, VOCAB), target_vocab_size=VOCAB)
    policy = AdaptiveK(AdaptiveKConfig(max_k=4, draft_cost=0.3, probe_interval=8))
    speculative_generate(CallableModel(target_fn, VOCAB), [[1, 2, 3]], 80, proposer=proposer,
                         policy=policy)
    # Fixed k = 4 would run the draft 4 times per token (320 calls).
    assert wrong.calls < 40


def test_config_errors():
    with pytest.raises(ConfigError, match="min_k"):
        AdaptiveKConfig(min_k=5, max_k=4)
    with pytest.raises(ConfigError, match="decay"):
        AdaptiveKConfig(decay=0.0)
