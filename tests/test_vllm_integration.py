"""The vLLM plugin without vLLM: importable, inactive with a log line, version guard."""

import importlib.util
import logging

import pytest
import vllm_infercore

from infercore.integrations import vllm as integration


@pytest.mark.parametrize(("version", "supported"), [
    ("0.32.0", True),
    ("0.32.4.dev12+g1a2b3c", True),
    ("0.31.2", False),
    ("0.33.0", False),
    ("1.32.0", False),
    ("dev", False),
])
def test_version_guard(version, supported):
    assert integration.vllm_version_supported(version) is supported


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_register_without_vllm_logs_and_returns(caplog):
    with caplog.at_level(logging.WARNING, logger="vllm.infercore"):
        vllm_infercore.register()
    assert "infercore plugin inactive: vLLM is not importable" in caplog.text
    assert vllm_infercore.call_counts() == {}
