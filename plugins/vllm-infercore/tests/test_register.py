"""register() in this process: re-entrant, version-guarded, rolled back on failure."""

from __future__ import annotations

import logging

import pytest
import vllm_infercore
from vllm.model_executor.custom_op import op_registry_oot
from vllm.v1.attention.backends.registry import AttentionBackendEnum

from infercore.integrations import vllm as integration
from infercore.integrations import vllm_ops

NAMES = ("RMSNorm", "SiluAndMul", "RotaryEmbedding", "Llama3RotaryEmbedding")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def records(monkeypatch):
    """Messages of the plugin's logger (vLLM's logger does not propagate to the root)."""
    handler = _Records()
    logger = logging.getLogger("vllm.infercore")
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture
def clean(monkeypatch):
    """Undo registrations after each test."""
    monkeypatch.delenv("INFERCORE_VLLM_OPS", raising=False)
    monkeypatch.delenv("INFERCORE_VLLM_ATTENTION", raising=False)
    yield
    for name in NAMES:
        op_registry_oot.pop(name, None)
    for member in (AttentionBackendEnum.CUSTOM, AttentionBackendEnum.CPU_ATTN):
        member.clear_override()
    integration._registered.clear()


def test_register_is_reentrant(clean, records):
    vllm_infercore.register()
    vllm_infercore.register()
    integration._registered.clear()  # as if vLLM loaded plugins again in a fresh config
    vllm_infercore.register()
    expected = vllm_ops.replacements()
    assert op_registry_oot["RMSNorm"] is expected["RMSNorm"]["RMSNorm"]
    assert op_registry_oot["SiluAndMul"] is expected["SiluAndMul"]["SiluAndMul"]
    assert op_registry_oot["Llama3RotaryEmbedding"].__mro__[2].__name__ == "Llama3RotaryEmbedding"
    assert AttentionBackendEnum.CUSTOM.get_class().__name__ == "InfercoreAttentionBackend"
    assert not AttentionBackendEnum.CPU_ATTN.is_overridden()  # off by default
    assert not any("already replaced" in m for m in records)


def test_cpu_attention_override_is_opt_in(clean, monkeypatch):
    monkeypatch.setenv("INFERCORE_VLLM_ATTENTION", "1")
    vllm_infercore.register()
    backend = AttentionBackendEnum.CPU_ATTN.get_class()
    assert backend.get_name() == "CPU_ATTN"
    assert backend.get_impl_cls().__name__ == "InfercoreAttentionImpl"


def test_unsupported_version_is_skipped_with_a_log_line(clean, records, monkeypatch):
    monkeypatch.setattr(integration, "SUPPORTED_VLLM", ((0, 1), (0, 2)))
    vllm_infercore.register()
    assert any("is not supported (supported: >=0.1, <0.2)" in m for m in records), records
    assert not any(name in op_registry_oot for name in NAMES)
    assert not AttentionBackendEnum.CUSTOM.is_overridden()


def test_failure_rolls_back_and_logs(clean, records, monkeypatch):
    def broken(undo):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(integration, "_register_attention", broken)
    vllm_infercore.register()
    assert any("failed to register" in m for m in records), records
    assert not any(name in op_registry_oot for name in NAMES)
