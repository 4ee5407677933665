"""vLLM ops backed by infercore: subclasses of vLLM's in-tree ``CustomOp`` classes.

Each subclass keeps the in-tree ``__init__`` (weights, caches and attributes stay vLLM's)
and overrides ``forward_native``, ``forward_cuda`` and ``forward_cpu`` to call infercore
through its registry. Inputs no infercore backend supports (the registry raises
:class:`~infercore.registry.NoBackendError`) and features infercore lacks (a variance size
override, a weightless RMSNorm, vLLM's batch-invariant mode, rotary without keys) run
vLLM's own method; the first such fall-back of each op is logged. Imported only by
:func:`infercore.integrations.vllm.register` once vLLM's version is known to be supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm import envs
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
from vllm.model_executor.layers.rotary_embedding.dynamic_ntk_scaling_rope import (
    DynamicNTKScalingRotaryEmbedding,
)
from vllm.model_executor.layers.rotary_embedding.linear_scaling_rope import (
    LinearScalingRotaryEmbedding,
)
from vllm.model_executor.layers.rotary_embedding.llama3_rope import Llama3RotaryEmbedding
from vllm.model_executor.layers.rotary_embedding.yarn_scaling_rope import (
    YaRNScalingRotaryEmbedding,
)

from infercore import ops
from infercore.integrations.vllm import count, log
from infercore.registry import NoBackendError

__all__ = ["InfercoreRMSNorm", "InfercoreSiluAndMul", "replacements"]

_fallbacks_logged: set[str] = set()


def _run(name: str, infercore_fn: Callable[[], Any] | None, fallback: Callable[[], Any]) -> Any:
    """``infercore_fn()`` (counted) unless it is ``None`` or no infercore backend fits;
    then ``fallback()``, logged once per op."""
    reason = "a feature infercore does not implement"
    if infercore_fn is not None:
        try:
            result = infercore_fn()
        except NoBackendError as exc:
            reason = str(exc)
        else:
            count(name)
            return result
    if name not in _fallbacks_logged:
        _fallbacks_logged.add(name)
        log.warning("infercore plugin: %s runs vLLM's implementation for these inputs: %s",
                    name, reason)
    return fallback()


class InfercoreRMSNorm(RMSNorm):
    """vLLM's ``RMSNorm`` computed by ``ops.rms_norm`` / ``ops.fused_add_rms_norm``.

    With ``residual`` it returns ``(normed, x + residual)`` like vLLM, computed in place
    in ``x`` and ``residual`` (as vLLM's fused kernel does).
    """

    def _infercore(self, x: torch.Tensor, residual: torch.Tensor | None):
        if (self.variance_size_override is not None or not self.has_weight
                or envs.VLLM_BATCH_INVARIANT):
            return None
        weight, eps = self.weight.data, self.variance_epsilon
        if residual is None:
            return lambda: ops.rms_norm(x, weight, eps)
        return lambda: ops.fused_add_rms_norm(x, residual, weight, eps)

    def forward_native(self, x, residual=None):
        return _run("RMSNorm", self._infercore(x, residual),
                    lambda: super(InfercoreRMSNorm, self).forward_native(x, residual))

    def forward_cuda(self, x, residual=None):
        return _run("RMSNorm", self._infercore(x, residual),
                    lambda: super(InfercoreRMSNorm, self).forward_cuda(x, residual))

    def forward_cpu(self, x, residual=None):
        return _run("RMSNorm", self._infercore(x, residual),
                    lambda: super(InfercoreRMSNorm, self).forward_cpu(x, residual))


class InfercoreSiluAndMul(SiluAndMul):
    """vLLM's ``SiluAndMul`` computed by ``ops.silu_and_mul``."""

    def forward_native(self, x):
        return _run("SiluAndMul", lambda: ops.silu_and_mul(x),
                    lambda: SiluAndMul.forward_native(x))

    def forward_cuda(self, x):
        return _run("SiluAndMul", lambda: ops.silu_and_mul(x),
                    lambda: super(InfercoreSiluAndMul, self).forward_cuda(x))

    def forward_cpu(self, x):
        return _run("SiluAndMul", lambda: ops.silu_and_mul(x),
                    lambda: super(InfercoreSiluAndMul, self).forward_cpu(x))


class InfercoreRotaryMixin:
    """``forward_*`` of vLLM's ``RotaryEmbedding`` family computed by ``ops.rotary``, in
    place in ``query`` and ``key`` (as vLLM's kernels do). Mixed before a vLLM rotary class
    whose forward is ``RotaryEmbedding``'s (the subclass only changes the cos/sin cache)."""

    def _infercore(self, positions: torch.Tensor, query: torch.Tensor,
                   key: torch.Tensor | None):
        if key is None:
            return None

        def run():
            cache = self._match_cos_sin_cache_dtype(query)
            flat = positions.flatten()
            tokens = flat.shape[0]
            ops.rotary(query.view(tokens, -1, self.head_size), key.view(tokens, -1, self.head_size),
                       flat, cache, is_neox=self.is_neox_style)
            return query, key

        return run

    def _forward(self, method: str, positions, query, key):
        in_tree = getattr(super(), method)
        return _run("RotaryEmbedding", self._infercore(positions, query, key),
                    lambda: in_tree(positions, query, key))

    def forward_native(self, positions, query, key=None):
        return self._forward("forward_native", positions, query, key)

    def forward_cuda(self, positions, query, key=None):
        return self._forward("forward_cuda", positions, query, key)

    def forward_cpu(self, positions, query, key=None):
        return self._forward("forward_cpu", positions, query, key)


_ROTARY_CLASSES = (
    RotaryEmbedding,
    Llama3RotaryEmbedding,
    LinearScalingRotaryEmbedding,
    DynamicNTKScalingRotaryEmbedding,
    YaRNScalingRotaryEmbedding,
)

_ROTARY_REPLACEMENTS = {
    base.__name__: type(f"Infercore{base.__name__}", (InfercoreRotaryMixin, base),
                        {"__module__": __name__})
    for base in _ROTARY_CLASSES
}


def replacements() -> dict[str, dict[str, type]]:
    """Replacement classes by group (a key of ``OP_FAMILIES``), then by vLLM class name."""
    return {
        "RMSNorm": {"RMSNorm": InfercoreRMSNorm},
        "SiluAndMul": {"SiluAndMul": InfercoreSiluAndMul},
        "RotaryEmbedding": dict(_ROTARY_REPLACEMENTS),
    }
