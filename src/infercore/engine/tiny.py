"""``tiny-random``: a small Llama with random weights, built on the fly (no download)."""

from __future__ import annotations

import math

import torch

from infercore.engine.arch import ModelArgs
from infercore.engine.loader import build_weights
from infercore.engine.model import ModelWeights
from infercore.engine.tokenizer import ByteTokenizer

__all__ = ["TINY_RANDOM", "tiny_random_args", "tiny_random_weights"]

#: The built-in model name.
TINY_RANDOM = "tiny-random"


def tiny_random_args() -> ModelArgs:
    """2 layers, hidden 128, 4 query / 2 KV heads of 32, the byte tokenizer's vocabulary."""
    tok = ByteTokenizer
    config = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": tok.vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "torch_dtype": "float32",
    }
    return ModelArgs.from_hf_config(config, source=TINY_RANDOM)


def tiny_random_weights(
    args: ModelArgs, *, seed: int, dtype: torch.dtype, device: torch.device | str
) -> ModelWeights:
    """Random weights drawn on the CPU from ``seed`` (the same on every device): linear
    weights ``N(0, 1 / in_features)``, norms ``1 + N(0, 0.1)``, embeddings ``N(0, 1)``."""
    gen = torch.Generator().manual_seed(seed)

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = torch.randn(shape, generator=gen)
        if name.endswith("norm.weight"):
            t = 1 + 0.1 * t
        elif len(shape) == 2 and "embed" not in name:
            t = t / math.sqrt(shape[1])
        elif len(shape) == 1:
            t = 0.1 * t
        return t.to(device=device, dtype=dtype)

    return build_weights(args, get)
