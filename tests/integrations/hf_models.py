"""Tiny random transformers models for the integration tests (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

#: One small config per architecture: hidden 64, 2 layers, 4 query / 2 KV heads of 32.
_COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=128,
               max_position_embeddings=256, pad_token_id=0)
#: Extra settings: Mistral and Qwen2/3 get a sliding window (shorter than the prompts)
#: on all layers / the second layer, Qwen2 q/k/v biases come with the architecture.
_EXTRA = {
    "llama": {},
    "mistral": dict(sliding_window=5),
    "qwen2": dict(sliding_window=5, use_sliding_window=True, max_window_layers=1),
    "qwen3": dict(sliding_window=5, use_sliding_window=True, max_window_layers=1),
}
ARCHS = tuple(_EXTRA)
_CLASSES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}


def tiny_config(arch: str, **overrides):
    config_cls = getattr(transformers, _CLASSES[arch] + "Config")
    return config_cls(**{**_COMMON, **_EXTRA[arch], **overrides})


def tiny_model(arch: str, *, attn_implementation: str = "sdpa", seed: int = 0, **overrides):
    """A random ``<Arch>ForCausalLM`` in eval mode with weights scaled up from HF's
    0.02-std init, so that logits (and greedy choices) depend clearly on the input."""
    torch.manual_seed(seed)
    model_cls = getattr(transformers, _CLASSES[arch] + "ForCausalLM")
    model = model_cls(tiny_config(arch, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.2 if p.ndim > 1 else 0.05)
            else:
                p.uniform_(0.5, 1.5)
    model.set_attn_implementation(attn_implementation)
    return model


def padded_batch(vocab: int = 128, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[4, 11]`` and an attention mask with left padding (rows 0, 2), right
    padding (row 1) and none (row 3)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (4, 11), generator=g)
    mask = torch.ones(4, 11, dtype=torch.long)
    mask[0, :4] = 0
    mask[1, 7:] = 0
    mask[2, :1] = 0
    return ids, mask


def left_padded_batch(vocab: int = 128, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of lengths 9, 6 and 3, left-padded to 9 (as ``generate`` expects)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :6] = 0
    ids[mask == 0] = 0
    return ids, mask
