"""``quantize_model``: swap a built model's ``nn.Linear`` modules for quantized ones."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from infercore.nn.linear import LINEAR_METHODS, QuantizedLinear

__all__ = ["quantize_model"]


def _skipped(name: str, patterns: tuple[str, ...]) -> bool:
    """``name`` matches a pattern as a whole or as a dotted suffix (``lm_head`` matches
    ``model.lm_head``; ``*.mlp.down_proj`` matches every layer's down projection)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, "*." + p)
               for p in patterns)


def quantize_model(
    model: nn.Module,
    method: str,
    *,
    group_size: int | None = 128,
    symmetric: bool = True,
    skip: Iterable[str] = ("lm_head",),
    backend: str = "auto",
) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` of ``model`` by a :class:`QuantizedLinear`.

    The model code is untouched: only its modules change (as in gpt-fast), so it keeps
    working with ``torch.compile`` and whatever host runs it. Every layer is quantized
    before any is swapped, so an error leaves the model as it was.

    Parameters
    ----------
    model : nn.Module
        A built model (HF transformers or plain PyTorch), on the device it will run on.
    method : str
        ``"int4"``, ``"int8"``, ``"fp8"`` (weight-only) or ``"w8a8"`` (see
        :meth:`QuantizedLinear.from_linear`).
    group_size : int or None
        Group size along in_features (``None``: one scale per output channel). Every
        quantized layer's in_features must be a multiple of it.
    symmetric : bool
        Symmetric or asymmetric (with zero points) integer grid.
    skip : iterable of str
        ``fnmatch`` patterns of qualified module names left as they are; a pattern also
        matches as a dotted suffix. The default keeps ``lm_head`` in full precision.
    backend : str
        Backend the quantized layers dispatch to (``"auto"`` by default).

    Returns
    -------
    The same ``model``, for chaining.

    Examples
    --------
    >>> model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
    >>> infercore.quantize_model(model, "int4", group_size=128)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if method not in LINEAR_METHODS:
        raise ValueError(f"method must be one of {LINEAR_METHODS}, got {method!r}")
    if isinstance(skip, str):
        raise TypeError(f"skip must be an iterable of patterns, not a string: use ({skip!r},)")
    patterns = tuple(skip)
    swaps: list[tuple[nn.Module, str, QuantizedLinear]] = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            qualified = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or _skipped(qualified, patterns):
                continue
            try:
                quantized = QuantizedLinear.from_linear(
                    child, method, group_size=group_size, symmetric=symmetric, backend=backend
                )
            except ValueError as exc:
                raise ValueError(
                    f"cannot quantize {qualified} ({child.in_features} -> {child.out_features}) "
                    f"with method={method!r}: {exc}. Add it to skip= or change group_size."
                ) from exc
            swaps.append((module, child_name, quantized))
    for parent, child_name, quantized in swaps:
        setattr(parent, child_name, quantized)
    return model
