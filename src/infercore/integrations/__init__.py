"""Host-framework integrations: :mod:`infercore.integrations.hf` (transformers).

Each integration imports its host framework lazily, so importing infercore never
imports it.
"""
