"""The engine on CUDA: decode steps replayed from CUDA graphs, default backends."""

from __future__ import annotations

import pytest
import torch

from infercore.engine import LLM, EngineConfig, SamplingParams
from tests.engine.conftest import hf_greedy

pytestmark = pytest.mark.cuda


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, 131, (n,), generator=gen).tolist() for n in (1, 7, 30, 61, 12)]


@pytest.mark.parametrize("cuda_graph", [True, False], ids=["graphs", "eager"])
def test_greedy_matches_hf_fp32(llama_dir, cuda_graph):
    prompts = _prompts()
    expected = hf_greedy(llama_dir, prompts, 12)
    config = EngineConfig(device="cuda", block_size=16, max_num_seqs=8,
                          max_num_batched_tokens=64, num_blocks=128, cuda_graph=cuda_graph,
                          cuda_graph_batch_sizes=[1, 2, 4, 8])
    llm = LLM(llama_dir, dtype="float32", config=config)
    assert bool(llm.runner.graphs) == cuda_graph
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    assert [o.token_ids for o in outs] == expected


def test_bf16_tokens_are_near_argmax_and_seeded_sampling_repeats(llama_dir):
    from transformers import AutoModelForCausalLM

    prompts = _prompts()
    llm = LLM(llama_dir, dtype="bfloat16", config=EngineConfig(device="cuda", max_num_seqs=4,
                                                               num_blocks=64))
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=10))
    hf = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).cuda().eval()
    for p, o in zip(prompts, outs, strict=True):
        with torch.no_grad():
            logits = hf(torch.tensor([p + o.token_ids], device="cuda")).logits[0]
        logits = logits[len(p) - 1 : -1]
        chosen = logits.gather(1, torch.tensor(o.token_ids, device="cuda")[:, None])[:, 0]
        assert (logits.max(dim=1).values - chosen).max().item() < 0.1
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=16, seed=5)
    first = [o.token_ids for o in llm.generate(prompts, params)]
    assert [o.token_ids for o in llm.generate(prompts, params)] == first


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_speculative_greedy_matches_hf_fp32(llama_dir, method):
    """Verification steps run eagerly next to graph-replayed plain decodes."""
    from infercore.engine import SpeculativeConfig

    prompts = [p + p for p in _prompts()]
    expected = hf_greedy(llama_dir, prompts, 12)
    spec = SpeculativeConfig(method=method, num_speculative_tokens=3,
                             draft_model=llama_dir if method == "draft_model" else None)
    config = EngineConfig(device="cuda", block_size=16, max_num_seqs=8,
                          max_num_batched_tokens=256, num_blocks=128, speculative=spec,
                          cuda_graph_batch_sizes=[1, 2, 4, 8])
    llm = LLM(llama_dir, dtype="float32", config=config)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    assert [o.token_ids for o in outs] == expected
    assert llm.stats.total.num_spec_steps > 0


def test_backends_that_cannot_be_captured_run_eagerly(llama_dir, caplog):
    """Reference attention and KV writes read lengths on the host: the runner sees that in
    its warm-up step, warns and captures no graph; decoding still matches HF."""
    from infercore.registry import use_backend

    prompts = _prompts()
    expected = hf_greedy(llama_dir, prompts, 8)
    config = EngineConfig(device="cuda", block_size=16, max_num_seqs=8,
                          max_num_batched_tokens=64, num_blocks=128,
                          cuda_graph_batch_sizes=[1, 2, 4, 8])
    with use_backend({"attention.paged": "reference", "kv.write": "reference"}):
        llm = LLM(llama_dir, dtype="float32", config=config)
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=8))
    assert not llm.runner.graphs
    assert "attention.paged:reference, kv.write:reference cannot be captured" in caplog.text
    assert [o.token_ids for o in outs] == expected
