"""Host-framework integrations: :mod:`infercore.integrations.hf` (transformers) and
:mod:`infercore.integrations.vllm` (vLLM, through the ``vllm-infercore`` plugin).

Each integration imports its host framework lazily, so importing infercore never
imports it.
"""
