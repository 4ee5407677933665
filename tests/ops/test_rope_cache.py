"""cos/sin cache builders against transformers' own RoPE initialisation."""

import pytest
import torch

from infercore.ops.rope import build_cos_sin_cache, cos_sin_cache_from_config, rope_inv_freq
from tests.helpers import assert_close

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def _config(**kwargs):
    base = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512}
    return transformers.LlamaConfig(**{**base, **kwargs})


def _cos_sin(inv_freq, positions):
    angles = positions.float()[:, None] * inv_freq.float()[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


@pytest.mark.parametrize(
    ("kwargs", "rope_type", "rows"),
    [
        ({"rope_theta": 10000.0}, "default", 512),
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}},
         "linear", 2048),
        ({"rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 2.5}}, "linear", 1280),
        ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}},
         "dynamic", 1024),
        ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 3.0,
                              "partial_rotary_factor": 0.5}}, "dynamic", 1536),
        ({"rope_parameters": LLAMA3}, "llama3", 512),
        ({"rope_theta": 500000.0, "rope_scaling": {k: v for k, v in LLAMA3.items()
                                                   if k != "rope_theta"}}, "llama3", 512),
    ],
    ids=["default", "linear", "linear-legacy", "dynamic", "dynamic-partial", "llama3",
         "llama3-legacy"],
)
def test_cache_from_config_matches_transformers(kwargs, rope_type, rows):
    config = _config(**kwargs)
    cache = cos_sin_cache_from_config(config)
    assert cache.shape[0] == rows and cache.dtype == torch.float32
    if rope_type == "default":
        inv_freq, scale = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        # A static cache serves every position with the frequencies for its full length.
        inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](config, seq_len=rows)
    assert scale == 1.0 and cache.shape[1] == 2 * inv_freq.shape[0]
    positions = torch.tensor([0, 1, 7, 63, 64, 300, rows - 1])
    assert_close(cache[positions], _cos_sin(inv_freq, positions), tol=1e-6)


def test_cache_from_a_config_json_dict():
    config_json = {"hidden_size": 512, "num_attention_heads": 8, "head_dim": 32,
                   "max_position_embeddings": 256, "rope_theta": 500000.0,
                   "partial_rotary_factor": 0.75,
                   "rope_scaling": {k: v for k, v in LLAMA3.items() if k != "rope_theta"}}
    cache = cos_sin_cache_from_config(config_json, max_position=300, dtype=torch.bfloat16)
    assert cache.shape == (300, 24) and cache.dtype == torch.bfloat16
    want = build_cos_sin_cache(24, 300, 500000.0, LLAMA3)
    assert_close(cache, want, dtype=torch.bfloat16)
    assert_close(want, _cos_sin(rope_inv_freq(24, 500000.0, LLAMA3), torch.arange(300)), tol=0)


def test_per_layer_rope_parameters_need_a_layer_type():
    config = {"head_dim": 16, "max_position_embeddings": 64, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }}
    with pytest.raises(ValueError, match=r"per layer type .*pass layer_type="):
        cos_sin_cache_from_config(config)
    with pytest.raises(ValueError, match="layer_type='global' is not in"):
        cos_sin_cache_from_config(config, layer_type="global")
    full = cos_sin_cache_from_config(config, layer_type="full_attention")
    sliding = cos_sin_cache_from_config(config, layer_type="sliding_attention")
    assert full.shape == (128, 16) and sliding.shape == (64, 16)
    assert_close(full, build_cos_sin_cache(16, 128, 1e6, {"type": "linear", "factor": 2.0}),
                 tol=0)
    assert_close(sliding, build_cos_sin_cache(16, 64, 1e4), tol=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_cos_sin_cache(16, 8, scaling={"rope_type": "yarn", "factor": 2.0}),
         "rope scaling type 'yarn' is not supported"),
        (lambda: build_cos_sin_cache(16, 8, scaling={"rope_type": "linear"}),
         "needs a positive number 'factor'"),
        (lambda: build_cos_sin_cache(15, 8), "rotary_dim must be a positive even int"),
        (lambda: build_cos_sin_cache(16, 0), "max_position must be a positive int"),
        (lambda: build_cos_sin_cache(16, 8, base=1.0), "base must be a number > 1"),
        (lambda: rope_inv_freq(16, scaling={"rope_type": "dynamic", "factor": 2.0,
                                            "original_max_position_embeddings": 8}),
         "'dynamic' needs max_position"),
        (lambda: cos_sin_cache_from_config({"max_position_embeddings": 8}),
         "config needs head_dim"),
    ],
)
def test_cache_builders_reject_bad_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()
