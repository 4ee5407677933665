"""Speculative decoding in the engine: greedy tokens equal transformers' greedy
``generate``; sampled tokens keep the target distribution; acceptance statistics."""

from __future__ import annotations

import collections

import pytest

from infercore import ConfigError
from infercore.engine import LLM, EngineConfig, SamplingParams, SpeculativeConfig
from tests.engine.conftest import hf_greedy

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def _config(spec: SpeculativeConfig | None, *, prefix=True, budget=24) -> EngineConfig:
    return EngineConfig(block_size=8, num_blocks=96, max_num_seqs=8,
                        max_num_batched_tokens=budget, enable_prefix_caching=prefix,
                        speculative=spec)


@pytest.fixture(scope="module")
def repeating(llama_dir):
    """Prompts whose continuations the n-gram proposer can guess: a prompt followed by
    the model's own greedy continuation, then the prompt again; and plain ones."""
    seeds = [[3, 17, 29, 4], [101, 7, 7, 55, 90, 12], [60]]
    first = hf_greedy(llama_dir, seeds, 8)
    prompts = [s + g + s for s, g in zip(seeds, first, strict=True)] + [[9, 8, 7] * 5, [44]]
    return prompts, hf_greedy(llama_dir, prompts, GREEDY.max_tokens)


@pytest.mark.parametrize(("k", "prefix", "budget"), [(3, True, 24), (5, False, 12)],
                         ids=["k3-prefix", "k5-tight-budget"])
def test_ngram_greedy_matches_hf(llama_dir, repeating, reference_backends, k, prefix, budget):
    prompts, expected = repeating
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=k)
    llm = LLM(llama_dir, config=_config(spec, prefix=prefix, budget=budget))
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == expected
    total = llm.stats.total
    assert total.num_spec_steps > 0 and total.num_accepted_tokens > 0
    assert total.num_rejections > 0, "rejected drafts were rolled back"
    assert llm.cache.num_free_blocks == llm.cache.num_blocks, "every block came back"


def test_draft_model_greedy_matches_hf(llama_dir, repeating, reference_backends):
    """The target as its own draft: drafts are the target's greedy tokens, nearly all
    accepted; tokens still equal transformers'."""
    prompts, expected = repeating
    spec = SpeculativeConfig(method="draft_model", draft_model=llama_dir,
                             num_speculative_tokens=4)
    llm = LLM(llama_dir, config=_config(spec))
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == expected
    assert llm.stats.total.acceptance_rate > 0.9
    assert llm.stats.total.mean_accepted_length > 4.0


def test_staggered_mixed_greedy_and_sampled(llama_dir, repeating, reference_backends):
    """Greedy requests keep their tokens when sampled ones share their steps (the batch
    is then verified by rejection sampling, greedy rows as one-hot distributions)."""
    prompts, expected = repeating
    spec = SpeculativeConfig(num_speculative_tokens=3)
    llm = LLM(llama_dir, config=_config(spec))
    sampled = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=10, seed=1)
    greedy_outs = {}
    for i, p in enumerate(prompts):
        greedy_outs[i] = llm.add_request(p, GREEDY, index=i)[0]
        llm.add_request(p, sampled, index=i)
        llm.step()
    while llm.has_unfinished_requests:
        llm.step()
    assert [greedy_outs[i].token_ids for i in range(len(prompts))] == expected


def _joint(llm: LLM, prompt: list[int], n: int, params: dict) -> collections.Counter:
    outs = llm.generate([prompt] * n, [SamplingParams(seed=i, **params) for i in range(n)])
    return collections.Counter(tuple(o.token_ids) for o in outs)


@pytest.fixture(scope="module")
def perturbed_dir(llama_dir, tmp_path_factory) -> str:
    """The Llama of ``llama_dir`` with noise on every weight: a draft close to the target
    but not equal, so drafts are accepted often and rejected often."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for w in model.parameters():
            w.add_(torch.randn(w.shape, generator=gen) * 0.3 * w.std())
    path = tmp_path_factory.mktemp("draft")
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


def test_sampling_keeps_the_target_distribution(llama_dir, perturbed_dir, reference_backends):
    """The joint law of three sampled tokens with a draft model (exact rejection sampling
    on its distributions) equals the law without speculation: a two-sample chi-square
    test over the outcomes."""
    from scipy.stats import chi2_contingency

    prompt = [3, 17, 29, 4, 43]
    params = dict(temperature=1.0, top_k=3, max_tokens=3, ignore_eos=True)
    n = 240
    cfg = dict(block_size=8, num_blocks=512, max_num_seqs=n, max_num_batched_tokens=2048)
    plain = _joint(LLM(llama_dir, config=EngineConfig(**cfg)), prompt, n, params)
    spec_llm = LLM(llama_dir, config=EngineConfig(**cfg, speculative=SpeculativeConfig(
        method="draft_model", draft_model=perturbed_dir, num_speculative_tokens=2)))
    spec = _joint(spec_llm, prompt, n, params)
    total = spec_llm.stats.total
    assert total.num_accepted_tokens > 20 and total.num_rejections > 20, total
    keys = sorted(set(plain) | set(spec), key=lambda k: -(plain[k] + spec[k]))
    common = [k for k in keys if plain[k] + spec[k] >= 10]
    table = [[plain[k] for k in common] + [n - sum(plain[k] for k in common)],
             [spec[k] for k in common] + [n - sum(spec[k] for k in common)]]
    assert len(common) >= 3
    assert chi2_contingency(table).pvalue > 1e-3, table


def test_config_errors():
    with pytest.raises(ConfigError, match="draft_model"):
        SpeculativeConfig(method="draft_model")
    with pytest.raises(ConfigError, match="num_speculative_tokens"):
        SpeculativeConfig(num_speculative_tokens=0)
    assert LLM("tiny-random", config=EngineConfig(num_blocks=8)).stats is None
