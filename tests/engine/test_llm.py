"""LLM behaviour beyond greedy equality: sampling seeds, streaming, bad inputs."""

from __future__ import annotations

import json

import pytest

from infercore.config import ConfigError
from infercore.engine import LLM, EngineConfig, SamplingParams

SMALL = dict(block_size=8, num_blocks=64, max_num_seqs=4, max_num_batched_tokens=32)


@pytest.fixture(scope="module")
def tiny():
    from infercore.registry import use_backend
    from tests.engine.conftest import ENGINE_FAMILIES

    with use_backend(dict.fromkeys(ENGINE_FAMILIES, "reference")):
        yield LLM("tiny-random", config=EngineConfig(**SMALL))


def test_seeded_sampling_is_reproducible_in_any_batch(tiny):
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, max_tokens=12, seed=7,
                            ignore_eos=True)
    alone = tiny.generate(["abc"], params)[0].token_ids
    other = SamplingParams(temperature=1.0, max_tokens=5, ignore_eos=True)
    batch = tiny.generate(["xyz", "abc", "hello world"], [other, params, other])
    assert batch[1].token_ids == alone
    reseeded = tiny.generate(["abc"], params.model_copy(update={"seed": 8}))[0].token_ids
    assert reseeded != alone


def test_engine_seed_makes_unseeded_requests_reproducible(reference_backends):
    params = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    runs = [
        [o.token_ids for o in LLM("tiny-random", config=EngineConfig(**SMALL, seed=s))
         .generate(["p", "q"], params)]
        for s in (3, 3, 4)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_n_samples_are_consecutive_and_differ(tiny):
    params = SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=1, ignore_eos=True)
    outs = tiny.generate(["a", "b"], params)
    assert [o.index for o in outs] == [0, 0, 0, 1, 1, 1]
    assert len({tuple(o.token_ids) for o in outs[:3]}) == 3


def test_stream_matches_generate(tiny):
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    prompts = ["Hello", "a longer prompt of text", "é"]
    final = tiny.generate(prompts, params)
    tokens: dict[int, list[int]] = {i: [] for i in range(3)}
    texts = dict.fromkeys(range(3), "")
    reasons = {}
    for chunk in tiny.stream(prompts, params):
        tokens[chunk.index] += chunk.token_ids
        texts[chunk.index] += chunk.text
        if chunk.finish_reason is not None:
            reasons[chunk.index] = chunk.finish_reason
    assert [tokens[i] for i in range(3)] == [o.token_ids for o in final]
    assert [texts[i] for i in range(3)] == [o.text for o in final]
    assert reasons == dict.fromkeys(range(3), "length")


def test_stop_tokens_end_a_request(tiny):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ref = tiny.generate(["stop here"], params)[0].token_ids
    stop = ref[4]
    first = ref.index(stop)
    out = tiny.generate(["stop here"], params.model_copy(update={"stop_token_ids": [stop]}))[0]
    assert out.token_ids == ref[: first + 1]
    assert out.finish_reason == "stop"


def test_prompt_too_long_fails_alone(reference_backends):
    llm = LLM("tiny-random", config=EngineConfig(**SMALL, max_model_len=40))
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    outs = llm.generate(["short", "x" * 60, [256, 1, 2]], params)
    assert outs[1].finish_reason == "length_exceeded"
    assert "max_model_len=40" in outs[1].error and outs[1].token_ids == []
    assert [len(outs[i].token_ids) for i in (0, 2)] == [4, 4]
    assert outs[0].finish_reason == outs[2].finish_reason == "length"


def test_bad_token_ids_fail_alone(tiny):
    outs = tiny.generate([[1, 2], [1, 9999], []], SamplingParams(temperature=0, max_tokens=2))
    assert outs[0].finish_reason == "length"
    assert outs[1].finish_reason == "error" and "9999" in outs[1].error
    assert outs[2].finish_reason == "error" and "empty" in outs[2].error


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -0.5), ("top_p", 0.0), ("min_p", 1.5), ("max_tokens", 0), ("n", 0),
     ("seed", -1), ("stop_token_ids", [-3])],
)
def test_invalid_sampling_params_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**{field: value})


def test_invalid_engine_config_names_the_field():
    with pytest.raises(ConfigError, match="dtype"):
        EngineConfig(dtype="int8")
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        EngineConfig(max_num_seqs=64, max_num_batched_tokens=8)


def test_unknown_architecture(tmp_path):
    config = {"architectures": ["GPT2LMHeadModel"], "vocab_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="GPT2LMHeadModel") as err:
        LLM(tmp_path)
    assert "LlamaForCausalLM" in str(err.value) and "Qwen2ForCausalLM" in str(err.value)


def test_missing_weight_is_named(llama_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copy(f"{llama_dir}/config.json", tmp_path / "config.json")
    tensors = load_file(f"{llama_dir}/model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        LLM(tmp_path, config=EngineConfig(**SMALL))


def test_missing_directory():
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        LLM("/nonexistent/model/dir")


def test_text_prompt_without_tokenizer_fails_alone(llama_dir, reference_backends):
    llm = LLM(llama_dir, config=EngineConfig(**SMALL))
    outs = llm.generate(["text", [5, 6]], SamplingParams(temperature=0, max_tokens=2))
    assert outs[0].finish_reason == "error" and "tokenizer" in outs[0].error
    assert len(outs[1].token_ids) == 2
