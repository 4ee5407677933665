"""``infercore generate`` end to end on tiny-random."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from infercore.cli import app

runner = CliRunner()


def test_generate_streams_one_prompt(reference_backends):
    result = runner.invoke(app, ["generate", "--model", "tiny-random", "--prompt", "Hello",
                                 "--max-tokens", "6", "--temperature", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Hello")
    assert "1 outputs, 6 tokens in" in result.output and "tok/s" in result.output


def test_generate_prompts_file_and_config(tmp_path, reference_backends):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond one\nthird\n")
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"block_size": 8, "num_blocks": 64, "max_num_seqs": 2,
                                  "max_num_batched_tokens": 16, "device": "cpu"}))
    result = runner.invoke(app, ["generate", "--prompts-file", str(prompts), "--config",
                                 str(config), "--max-tokens", "3", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "3 outputs, 9 tokens in" in result.output
    for text in ("first prompt", "second one", "third"):
        assert text in result.output


def test_generate_bad_config_names_the_field(tmp_path):
    config = tmp_path / "engine.yaml"
    config.write_text("max_num_seqs: 0\n")
    result = runner.invoke(app, ["generate", "--prompt", "x", "--config", str(config)])
    assert result.exit_code == 1
    assert "max_num_seqs" in result.output


def test_generate_needs_a_prompt():
    result = runner.invoke(app, ["generate"])
    assert result.exit_code == 2
