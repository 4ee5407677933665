"""Greedy token ids equal transformers' greedy ``generate``."""

from __future__ import annotations

import random

import pytest

from infercore.engine import LLM, EngineConfig, SamplingParams
from tests.engine.conftest import hf_greedy

GREEDY = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)


def _prompts(vocab: int) -> list[list[int]]:
    rng = random.Random(5)
    shared = [rng.randrange(vocab) for _ in range(21)]
    return [
        [rng.randrange(vocab) for _ in range(3)],
        shared + [rng.randrange(vocab) for _ in range(12)],
        [rng.randrange(vocab) for _ in range(46)],
        shared + [rng.randrange(vocab) for _ in range(4)],
        [rng.randrange(vocab)],
    ]


@pytest.fixture(scope="module")
def llama_expected(llama_dir):
    prompts = _prompts(131)
    return prompts, hf_greedy(llama_dir, prompts, GREEDY.max_tokens)


def _config(prefix: bool, chunked: bool, **kw) -> EngineConfig:
    budget = 16 if chunked else 64
    return EngineConfig(block_size=8, num_blocks=96, max_num_seqs=8,
                        max_num_batched_tokens=budget, enable_chunked_prefill=chunked,
                        enable_prefix_caching=prefix, **kw)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "whole"])
@pytest.mark.parametrize("prefix", [True, False], ids=["prefix", "noprefix"])
def test_batch_matches_hf(llama_dir, llama_expected, reference_backends, prefix, chunked):
    prompts, expected = llama_expected
    llm = LLM(llama_dir, config=_config(prefix, chunked))
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == expected
    assert all(o.finish_reason == "length" for o in outs)
    assert all(o.prompt_token_ids == p for o, p in zip(outs, prompts, strict=True))


@pytest.mark.parametrize("prefix", [True, False], ids=["prefix", "noprefix"])
def test_staggered_arrival_matches_hf(llama_dir, llama_expected, reference_backends, prefix):
    """Requests join between steps (decodes and prefill chunks mix); prompts repeated
    later hit the prefix cache."""
    prompts, expected = llama_expected
    llm = LLM(llama_dir, config=_config(prefix, True))
    order = [*range(len(prompts)), 1, 2]
    outputs: dict[int, list] = {}
    steps = 0
    pending = list(order)
    while pending or llm.has_unfinished_requests:
        if pending and steps % 2 == 0:
            i = pending.pop(0)
            outputs.setdefault(i, []).extend(llm.add_request(prompts[i], GREEDY, index=i))
        if llm.has_unfinished_requests:
            llm.step()
        steps += 1
    for i, outs in outputs.items():
        for o in outs:
            assert o.token_ids == expected[i], f"prompt {i}"
    if prefix:
        assert llm.cache.prefix.stats.hit_blocks > 0, "repeated prompts reuse cached blocks"


@pytest.mark.parametrize("name", ["qwen2_dir", "qwen3_dir"])
def test_qwen_variants(name, request, reference_backends):
    """Qwen2 (QKV biases, tied embeddings) and Qwen3 (per-head q/k RMSNorm)."""
    path = request.getfixturevalue(name)
    prompts = _prompts(131)[:3]
    expected = hf_greedy(path, prompts, GREEDY.max_tokens)
    llm = LLM(path, config=_config(True, True))
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == expected


def test_sharded_checkpoint(tmp_path, reference_backends):
    """Weights split over several safetensors files with an index load alike."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.engine.conftest import _SHAPE

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**_SHAPE)).eval()
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    prompts = _prompts(131)[:2]
    expected = hf_greedy(str(tmp_path), prompts, 5)
    llm = LLM(tmp_path, config=_config(False, False))
    params = SamplingParams(temperature=0, max_tokens=5)
    assert [o.token_ids for o in llm.generate(prompts, params)] == expected


def test_default_dispatch_triton_interpreter(llama_dir, llama_expected):
    """No forced backends: Triton kernels (the interpreter on CPU) wherever they apply."""
    prompts, expected = llama_expected
    llm = LLM(llama_dir, config=_config(True, True))
    assert llm.runner.eager.backend.name == "triton"
    params = SamplingParams(temperature=0, max_tokens=3)
    outs = llm.generate([prompts[0], prompts[3]], params)
    assert [o.token_ids for o in outs] == [expected[0][:3], expected[3][:3]]
