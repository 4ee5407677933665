"""transformers integration: the ``"infercore"`` attention implementation and
:func:`apply_infercore`, which patches a built Llama-family model to run infercore ops.

transformers is imported only when these functions are called.

Examples
--------
>>> from infercore.integrations import hf
>>> hf.register()
>>> model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="infercore")
>>> patch = hf.apply_infercore(model)   # rms_norm, rotary, SwiGLU and attention
>>> model.generate(**inputs)
>>> patch.revert()                      # or hf.revert_infercore(model)
"""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from infercore.integrations.hf import modules
from infercore.integrations.hf.attention import (
    ATTN_IMPLEMENTATION,
    attention_forward,
    padding_mask,
)

__all__ = [
    "ATTN_IMPLEMENTATION",
    "SUPPORTED_MODEL_TYPES",
    "InfercorePatch",
    "apply_infercore",
    "attention_forward",
    "padding_mask",
    "register",
    "revert_infercore",
]

#: ``config.model_type`` -> class-name prefix in ``transformers.models.<type>``.
_PREFIXES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}
#: Architectures :func:`apply_infercore` patches.
SUPPORTED_MODEL_TYPES = tuple(_PREFIXES)
#: Attribute of a patched model holding its :class:`InfercorePatch`.
_PATCH_ATTR = "_infercore_patch"
_NO_FORWARD = object()


def register() -> None:
    """Register ``"infercore"`` with transformers' attention and mask interfaces.

    Afterwards ``from_pretrained(..., attn_implementation="infercore")`` and
    ``model.set_attn_implementation("infercore")`` run :func:`attention_forward`
    (:func:`infercore.ops.attention.varlen`). Idempotent.
    """
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, padding_mask)


@dataclass
class InfercorePatch:
    """What :func:`apply_infercore` changed on one model; :meth:`revert` undoes it."""

    model: nn.Module
    #: (module, its previous instance-level ``forward`` or a marker for none)
    forwards: list[tuple[nn.Module, Any]] = field(default_factory=list)
    #: MLPs whose gate/up weights were laid out back to back
    fused_mlps: list[nn.Module] = field(default_factory=list)
    #: attention implementation before patching (None: attention not switched)
    attn_implementation: str | None = None
    active: bool = True

    def bind(self, module: nn.Module, forward: Any) -> None:
        self.forwards.append((module, module.__dict__.get("forward", _NO_FORWARD)))
        module.forward = types.MethodType(forward, module)

    def revert(self) -> None:
        """Restore the original forwards, weight storage and attention implementation."""
        if not self.active:
            raise ValueError("this infercore patch was already reverted")
        for module, previous in reversed(self.forwards):
            if previous is _NO_FORWARD:
                del module.forward
            else:
                module.forward = previous
        for mlp in self.fused_mlps:
            modules.unfuse_gate_up(mlp)
        if self.attn_implementation is not None:
            self.model.set_attn_implementation(self.attn_implementation)
        self.forwards.clear()
        self.fused_mlps.clear()
        self.active = False
        self.model.__dict__.pop(_PATCH_ATTR, None)


def _model_type(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _PREFIXES:
        raise ValueError(
            f"apply_infercore supports the Llama family (model_type "
            f"{', '.join(map(repr, SUPPORTED_MODEL_TYPES))}); got {type(model).__name__} "
            f"with model_type {model_type!r}"
        )
    return model_type


def apply_infercore(
    model: nn.Module,
    *,
    rms_norm: bool = True,
    rotary: bool = True,
    mlp: bool = True,
    attention: bool = True,
) -> InfercorePatch:
    """Run infercore ops inside a built transformers Llama-family model, in place.

    Instance-level and reversible: forwards are bound to this model's module instances
    (the classes and other models are untouched) and :meth:`InfercorePatch.revert` /
    :func:`revert_infercore` restores them. ``model.generate`` keeps working.

    Parameters
    ----------
    model : ``transformers.PreTrainedModel``
        Llama, Mistral, Qwen2 or Qwen3 (``config.model_type`` in
        :data:`SUPPORTED_MODEL_TYPES`), e.g. ``LlamaForCausalLM``.
    rms_norm : bool
        Every ``*RMSNorm`` (Qwen3's ``q_norm``/``k_norm`` too) through
        :func:`infercore.ops.rms_norm` with the module's weight and eps.
    rotary : bool
        The attention forward applies HF's ``(cos, sin)`` with
        :func:`infercore.ops.rotary` (in place on the q/k projections).
    mlp : bool
        SwiGLU through :func:`infercore.ops.silu_and_mul`; ``gate_proj``/``up_proj`` stay
        ``nn.Linear`` but their weights are stored back to back so both run as one
        GEMM (revert before ``save_pretrained``: the two share storage). Needs
        ``hidden_act`` ``"silu"``.
    attention : bool
        :func:`register` and ``model.set_attn_implementation("infercore")``.

    Returns
    -------
    InfercorePatch
        Also kept on the model for :func:`revert_infercore`.

    Raises
    ------
    ValueError
        Unknown architecture, ``mlp=True`` with a non-SiLU activation, or a model
        already patched.
    """
    model_type = _model_type(model)
    if getattr(model, _PATCH_ATTR, None) is not None:
        raise ValueError("apply_infercore was already applied to this model: revert it first")
    hidden_act = getattr(model.config, "hidden_act", "silu")
    if mlp and hidden_act not in ("silu", "swish"):
        raise ValueError(f"mlp=True needs hidden_act 'silu' (SwiGLU), the model has "
                         f"{hidden_act!r}: pass mlp=False")
    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    prefix = _PREFIXES[model_type]
    norm_cls, mlp_cls, attn_cls = (getattr(modeling, prefix + suffix)
                                   for suffix in ("RMSNorm", "MLP", "Attention"))
    patch = InfercorePatch(model)
    attention_fwd = modules.make_attention_forward(modeling)
    for module in model.modules():
        if rms_norm and isinstance(module, norm_cls):
            patch.bind(module, modules.rms_norm_forward)
        elif mlp and isinstance(module, mlp_cls):
            patch.bind(module, modules.mlp_forward)
            if modules.fuse_gate_up(module):
                patch.fused_mlps.append(module)
        elif rotary and isinstance(module, attn_cls):
            patch.bind(module, attention_fwd)
    if attention:
        register()
        patch.attn_implementation = model.config._attn_implementation
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    model.__dict__[_PATCH_ATTR] = patch
    return patch


def revert_infercore(model: nn.Module) -> None:
    """Undo :func:`apply_infercore` on ``model`` (``ValueError`` if it is not patched)."""
    patch = model.__dict__.get(_PATCH_ATTR)
    if patch is None:
        raise ValueError(f"{type(model).__name__} has no infercore patch to revert")
    patch.revert()
