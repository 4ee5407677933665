"""Fixtures: tiny random transformers checkpoints saved to a temp dir, reference backends."""

from __future__ import annotations

import pytest
import torch

from infercore.registry import use_backend

#: The op families a forward step uses; the reference backends run them fast on CPU
#: (the Triton interpreter is exercised by one test with the default dispatch).
ENGINE_FAMILIES = ("norm.rms", "norm.add_rms", "gemm", "rope", "act.silu_mul", "kv.write",
                   "attention.paged", "sample")


@pytest.fixture
def reference_backends():
    with use_backend(dict.fromkeys(ENGINE_FAMILIES, "reference")):
        yield


def _save(tmp_path_factory, name: str, model_cls, config) -> str:
    path = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    model = model_cls(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


_SHAPE = dict(vocab_size=131, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=3, num_key_value_heads=1, head_dim=32,
              max_position_embeddings=256, initializer_range=0.1, bos_token_id=None,
              eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> str:
    """A 2-layer Llama with GQA 3:1 and an odd vocabulary, no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save(tmp_path_factory, "llama", LlamaForCausalLM, LlamaConfig(**_SHAPE))


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory) -> str:
    """A Qwen2-style model: biases on the QKV projections, tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = {**_SHAPE, "tie_word_embeddings": True}
    shape.pop("head_dim")
    return _save(tmp_path_factory, "qwen2", Qwen2ForCausalLM,
                 Qwen2Config(**{**shape, "hidden_size": 96}))


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory) -> str:
    """A Qwen3-style model: RMSNorm on each query and key head."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _save(tmp_path_factory, "qwen3", Qwen3ForCausalLM, Qwen3Config(**_SHAPE))


def hf_greedy(path: str, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers ``generate`` greedy continuations, one prompt at a time."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            gen = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False)
            outs.append(gen[0, len(p):].tolist())
    return outs
