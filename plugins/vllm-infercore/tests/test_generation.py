"""Greedy generation in a real vLLM (CPU) with and without the infercore plugin."""

from __future__ import annotations

# vLLM with no general plugin loaded: its own ops and CPU_ATTN.
PLAIN = {"VLLM_PLUGINS": ""}
OPS = ("RMSNorm", "SiluAndMul", "RotaryEmbedding")


def test_vllm_alone_matches_transformers(vllm_run, hf_tokens):
    result, _ = vllm_run(**PLAIN)
    assert result["counts"] == {}
    assert result["tokens"] == hf_tokens


def test_plugin_ops_run_and_keep_greedy_tokens(vllm_run, hf_tokens):
    result, log = vllm_run()
    counts = result["counts"]
    for op in OPS:
        assert counts.get(op, 0) > 0, f"{op} never ran infercore: {counts}"
    # CPU_ATTN stays vLLM's unless INFERCORE_VLLM_ATTENTION=1.
    assert counts.get("attention", 0) == 0
    assert "runs vLLM's implementation" not in log
    assert result["tokens"] == vllm_run(**PLAIN)[0]["tokens"] == hf_tokens


def test_plugin_attention_backend_keeps_greedy_tokens(vllm_run, hf_tokens):
    result, _ = vllm_run(INFERCORE_VLLM_ATTENTION="1")
    counts = result["counts"]
    # Two layers, at least one prefill step and one decode step each.
    assert counts.get("attention", 0) >= 4, counts
    for op in OPS:
        assert counts.get(op, 0) > 0, counts
    assert result["tokens"] == hf_tokens


def test_ops_switch_keeps_vllm_ops_with_infercore_attention(vllm_run, hf_tokens):
    result, _ = vllm_run(INFERCORE_VLLM_OPS="0", INFERCORE_VLLM_ATTENTION="1")
    assert set(result["counts"]) == {"attention"}
    assert result["tokens"] == hf_tokens


def test_missing_infercore_op_leaves_vllm_working(vllm_run, hf_tokens):
    # infercore without its activation plugin has no act.silu_mul backend.
    result, log = vllm_run(INFERCORE_DISABLED_PLUGINS="infercore.ops.activation.plugin")
    assert "not replacing vLLM's SiluAndMul: infercore has no backend for op family " \
           "act.silu_mul" in log
    counts = result["counts"]
    assert "SiluAndMul" not in counts
    assert counts.get("RMSNorm", 0) > 0
    assert result["tokens"] == hf_tokens
