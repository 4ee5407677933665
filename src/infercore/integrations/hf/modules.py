"""Forwards that :func:`~infercore.integrations.hf.apply_infercore` binds to HF modules.

Each is bound to one module instance (``module.forward = MethodType(fn, module)``), so
the class, other models and the revert path are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from infercore import ops

__all__ = ["fuse_gate_up", "make_attention_forward", "mlp_forward", "rms_norm_forward",
           "unfuse_gate_up"]


def rms_norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """``*RMSNorm.forward`` through :func:`infercore.ops.rms_norm` (module's weight, eps)."""
    return ops.rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _adjacent(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    """``first`` and ``second`` as one tensor when ``second`` directly follows ``first``
    in memory (same shape, dtype and device, both contiguous), else None."""
    if first is None or second is None:
        return None
    if (first.shape != second.shape or first.dtype != second.dtype
            or first.device != second.device
            or not (first.is_contiguous() and second.is_contiguous())
            or second.data_ptr() != first.data_ptr() + first.numel() * first.element_size()):
        return None
    return first.as_strided((2 * first.shape[0], *first.shape[1:]), first.stride())


def _fused_gate_up(self: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    gate, up = self.gate_proj, self.up_proj
    weight = _adjacent(gate.weight, up.weight)
    if weight is None or type(gate) is not nn.Linear or type(up) is not nn.Linear:
        return None
    if gate.bias is None and up.bias is None:
        return weight, None
    bias = _adjacent(gate.bias, up.bias)
    return None if bias is None else (weight, bias)


def mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SwiGLU MLP: ``down_proj(silu_and_mul([gate_proj(x), up_proj(x)]))``.

    When :func:`fuse_gate_up` laid the two projection weights out back to back, both
    run as one GEMM; otherwise (e.g. the model was moved after patching) the two
    Linear outputs are concatenated.
    """
    fused = _fused_gate_up(self)
    if fused is None:
        gate_up = torch.cat([self.gate_proj(x), self.up_proj(x)], dim=-1)
    else:
        gate_up = nn.functional.linear(x, *fused)
    return self.down_proj(ops.silu_and_mul(gate_up))


def _rebind(linear: nn.Linear, name: str, value: torch.Tensor) -> None:
    old = getattr(linear, name)
    setattr(linear, name, nn.Parameter(value, requires_grad=old.requires_grad))


def fuse_gate_up(mlp: nn.Module) -> bool:
    """Store ``gate_proj`` and ``up_proj`` weights (and biases) back to back in one
    buffer, so :func:`mlp_forward` runs one GEMM. Both stay ``nn.Linear`` with the same
    values. Returns False, changing nothing, unless both are plain ``nn.Linear`` with
    matching dtype and device, off the meta device."""
    gate, up = mlp.gate_proj, mlp.up_proj
    if type(gate) is not nn.Linear or type(up) is not nn.Linear:
        return False
    if (gate.weight.shape != up.weight.shape or gate.weight.dtype != up.weight.dtype
            or gate.weight.device != up.weight.device or gate.weight.is_meta
            or (gate.bias is None) != (up.bias is None)):
        return False
    rows = gate.weight.shape[0]
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(gate, name) is None:
                continue
            both = torch.cat([getattr(gate, name).detach(), getattr(up, name).detach()])
            _rebind(gate, name, both[:rows])
            _rebind(up, name, both[rows:])
    return True


def unfuse_gate_up(mlp: nn.Module) -> None:
    """Give ``gate_proj`` and ``up_proj`` their own storage again (same values)."""
    with torch.no_grad():
        for linear in (mlp.gate_proj, mlp.up_proj):
            for name in ("weight", "bias"):
                if getattr(linear, name) is not None:
                    _rebind(linear, name, getattr(linear, name).detach().clone())


#: Attribute of HF's ``cos`` tensor holding the rotary cache built from it.
_ROTARY_ATTR = "_infercore_rotary"


def _rotate(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate ``q [batch, seq, heads, dim]`` and ``k`` in place by HF's ``(cos, sin)``
    ``[batch or 1, seq, rotary_dim]`` (halves repeated) with :func:`infercore.ops.rotary`."""
    batch, seq = q.shape[:2]
    # Every layer of a forward pass gets the same (cos, sin): build the cache once per pass.
    memo = getattr(cos, _ROTARY_ATTR, None)
    if memo is None or memo[0] != batch:
        half = cos.shape[-1] // 2
        cache = torch.cat([cos[..., :half], sin[..., :half]], dim=-1).reshape(-1, 2 * half)
        if cos.shape[0] == batch:
            positions = torch.arange(batch * seq, device=q.device)
        else:
            positions = torch.arange(seq, device=q.device).repeat(batch)
        memo = (batch, cache, positions)
        setattr(cos, _ROTARY_ATTR, memo)
    _, cache, positions = memo
    ops.rotary(q.view(-1, *q.shape[2:]), k.view(-1, *k.shape[2:]), positions, cache)


def make_attention_forward(modeling: Any) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The Llama-family attention forward with rotary through :func:`infercore.ops.rotary`.

    ``modeling`` is the model's ``transformers.models.<type>.modeling_<type>`` module,
    whose ``ALL_ATTENTION_FUNCTIONS`` and ``eager_attention_forward`` it dispatches to,
    as the original forward does. Covers Llama, Mistral, Qwen2 (q/k/v biases live in the
    Linears) and Qwen3 (``q_norm``/``k_norm`` over the head dim before rotary).
    """

    def attention_forward(self: nn.Module, hidden_states: torch.Tensor,
                          position_embeddings: tuple[torch.Tensor, torch.Tensor],
                          attention_mask: torch.Tensor | None = None,
                          past_key_values: Any = None, **kwargs: Any
                          ) -> tuple[torch.Tensor, Any]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape)
        k = self.k_proj(hidden_states).view(hidden_shape)
        v = self.v_proj(hidden_states).view(hidden_shape)
        if getattr(self, "q_norm", None) is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        _rotate(q, k, *position_embeddings)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        implementation = self.config._attn_implementation
        if implementation == "eager":
            attend = modeling.eager_attention_forward
        else:
            attend = modeling.ALL_ATTENTION_FUNCTIONS[implementation]
        if hasattr(self, "sliding_window"):
            sliding_window = self.sliding_window
        else:
            sliding_window = getattr(self.config, "sliding_window", None)
        out, weights = attend(
            self, q, k, v, attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling, sliding_window=sliding_window, **kwargs,
        )
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights

    return attention_forward
