"""Speculative decoding end to end: greedy output equals plain greedy output."""

from __future__ import annotations

import pytest
import torch

from infercore.registry import triton_interpret
from infercore.spec import (
    AcceptanceStats,
    AdaptiveK,
    AdaptiveKConfig,
    CallableModel,
    DraftModelProposer,
    NgramConfig,
    NgramProposer,
    speculative_generate,
)
from tests.helpers import backend_params
from tests.spec.toy import VOCAB, DraftFn, plain_greedy, target_fn

PROMPTS = [[1, 2, 3, 1, 2, 3, 1, 2], [5, 8], [9, 9, 4, 7, 4, 7, 4, 7, 4, 7, 2]]
NEW = 40


def _target() -> CallableModel:
    return CallableModel(target_fn, VOCAB)


def _proposers():
    return {
        "ngram": NgramProposer(NgramConfig(min_n=1, max_n=3)),
        "draft_model": DraftModelProposer(CallableModel(DraftFn(), VOCAB), target_vocab_size=VOCAB),
    }


@pytest.mark.parametrize("name", ["ngram", "draft_model"])
@pytest.mark.parametrize("k", [1, 4])
def test_speculative_greedy_equals_plain_greedy(name, k):
    expected = [plain_greedy(p, NEW) for p in PROMPTS]
    assert speculative_generate(_target(), PROMPTS, NEW) == expected
    stats = AcceptanceStats()
    out = speculative_generate(_target(), PROMPTS, NEW, proposer=_proposers()[name], k=k,
                               stats=stats)
    assert out == expected
    total = stats.total
    # Both verification paths ran: some drafts accepted, some rejected.
    assert total.num_accepted_tokens > 0 and total.num_rejections > 0
    # Fewer target passes than tokens (counted per row): speculation paid off.
    assert total.num_spec_steps + total.num_plain_steps < NEW * len(PROMPTS)


@pytest.mark.parametrize("name", ["ngram", "draft_model"])
def test_adaptive_k_keeps_greedy_output(name):
    expected = [plain_greedy(p, NEW) for p in PROMPTS]
    policy = AdaptiveK(AdaptiveKConfig(max_k=5, draft_cost=0.1))
    out = speculative_generate(_target(), PROMPTS, NEW, proposer=_proposers()[name],
                               policy=policy)
    assert out == expected


def test_hf_target_and_truncated_draft_greedy_equals_plain():
    transformers = pytest.importorskip("transformers")
    from infercore.spec.hf import HFModel

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=61, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    target = transformers.LlamaForCausalLM(cfg).eval()
    draft = transformers.LlamaForCausalLM(cfg.__class__(**{**cfg.to_dict(),
                                                           "num_hidden_layers": 1})).eval()
    draft.load_state_dict(target.state_dict(), strict=False)  # shares layer 0, head, norm
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5], [1, 1]]
    plain = speculative_generate(HFModel(target), prompts, 24)
    stats = AcceptanceStats()
    proposer = DraftModelProposer(HFModel(draft), target_vocab_size=61)
    spec = speculative_generate(HFModel(target), prompts, 24, proposer=proposer, k=3, stats=stats)
    assert spec == plain
    assert stats.total.num_spec_steps > 0 and stats.total.num_rejections > 0


@pytest.mark.parametrize("backend", backend_params("spec.rejection", include_reference=True))
def test_sampling_is_reproducible_and_in_vocabulary(backend):
    if backend == "triton" and not triton_interpret():
        pytest.skip("the toy models run on CPU tensors, which Triton takes only in the interpreter")
    def run(seed):  # a fresh proposer: its draft sampler is seeded once, at the start
        return speculative_generate(_target(), PROMPTS, 12, seed=seed, k=3, temperature=0.8,
                                    proposer=_proposers()["draft_model"], backend=backend)

    a, b, c = run(5), run(5), run(6)
    assert a == b and a != c
    assert all(len(r) == 12 and all(0 <= t < VOCAB for t in r) for r in a)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        speculative_generate(_target(), PROMPTS, 4, proposer=_proposers()["ngram"], k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(_target(), PROMPTS, 0)
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        speculative_generate(_target(), [[1], []], 4)
