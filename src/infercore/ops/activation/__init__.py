"""Gated activations: ``silu(a) * b`` (``act.silu_mul``) and ``gelu(a) * b`` (``act.gelu_mul``).

``x [..., 2d]`` holds the gate input ``a = x[..., :d]`` and the multiplier
``b = x[..., d:]`` (the fused gate/up projection of a SwiGLU / GeGLU MLP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = ["GatedActInputs", "gelu_and_mul", "silu_and_mul"]

_GELU_APPROXIMATIONS = {"none": "gelu", "tanh": "gelu_tanh"}


@dataclass(frozen=True, slots=True)
class GatedActInputs(TensorInputs):
    """What ``act.silu_mul`` / ``act.gelu_mul`` backends are asked to support.

    ``activation`` is ``"silu"``, ``"gelu"`` (erf form) or ``"gelu_tanh"``.
    """

    x: torch.Tensor
    out: torch.Tensor
    activation: str


def _prepare_out(x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    if x.shape[-1] % 2:
        raise ValueError(
            f"x must have an even last dim [..., 2d] (gate and multiplier halves), "
            f"got shape {tuple(x.shape)}"
        )
    shape = (*x.shape[:-1], x.shape[-1] // 2)
    if out is None:
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    check_tensor("out", out)
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape} (x's with the last dim halved), "
                         f"got {tuple(out.shape)}")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have the dtype of x, {x.dtype}; got {out.dtype}")
    check_same_device(x=x, out=out)
    return out


def _gated(family: str, x: torch.Tensor, out: torch.Tensor, activation: str,
           backend: str) -> None:
    resolve(family, GatedActInputs(x, out, activation), backend).run(x, out, activation)


@torch.library.custom_op("infercore::silu_and_mul", mutates_args=("out",))
def _silu_and_mul_op(x: torch.Tensor, out: torch.Tensor, backend: str) -> None:
    _gated("act.silu_mul", x, out, "silu", backend)


@_silu_and_mul_op.register_fake
def _(x: torch.Tensor, out: torch.Tensor, backend: str) -> None:
    return None


@torch.library.custom_op("infercore::gelu_and_mul", mutates_args=("out",))
def _gelu_and_mul_op(x: torch.Tensor, out: torch.Tensor, approximate: str, backend: str) -> None:
    _gated("act.gelu_mul", x, out, _GELU_APPROXIMATIONS[approximate], backend)


@_gelu_and_mul_op.register_fake
def _(x: torch.Tensor, out: torch.Tensor, approximate: str, backend: str) -> None:
    return None


def silu_and_mul(
    x: torch.Tensor, *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """SwiGLU gate: ``silu(x[..., :d]) * x[..., d:]``.

    Computed in float32 and rounded once to ``x.dtype``.

    Parameters
    ----------
    x : Tensor ``[..., 2d]``, float16 / bfloat16 / float32
        Gate input in the first half of the last dim, multiplier in the second. Any
        strides.
    out : Tensor ``[..., d]`` of ``x.dtype`` on ``x``'s device, optional
        Written in full and returned (a caller-owned buffer, e.g. for CUDA graphs).
    backend : str
        ``"auto"`` (registry dispatch) or a backend name of ``act.silu_mul``
        (``"triton"``, ``"reference"``).

    Returns
    -------
    Tensor ``[..., d]`` of ``x.dtype``: ``out`` when given, else a new contiguous tensor.

    Examples
    --------
    >>> gate_up = torch.randn(5, 2 * 14336, dtype=torch.bfloat16, device="cuda")
    >>> h = infercore.ops.silu_and_mul(gate_up)  # [5, 14336]

    Also available as ``torch.ops.infercore.silu_and_mul(x, out, backend)``, which
    writes ``out`` and returns nothing.
    """
    out = _prepare_out(x, out)
    if torch.compiler.is_compiling():
        torch.ops.infercore.silu_and_mul(x, out, backend)
    else:
        _gated("act.silu_mul", x, out, "silu", backend)
    return out


def gelu_and_mul(
    x: torch.Tensor,
    approximate: str = "none",
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """GeGLU gate: ``gelu(x[..., :d]) * x[..., d:]``.

    Computed in float32 and rounded once to ``x.dtype``.

    Parameters
    ----------
    x : Tensor ``[..., 2d]``, float16 / bfloat16 / float32
        Gate input in the first half of the last dim, multiplier in the second. Any
        strides.
    approximate : ``"none"`` or ``"tanh"``
        ``"none"``: exact GELU, ``0.5 a (1 + erf(a / sqrt 2))``; ``"tanh"``: the tanh
        approximation ``0.5 a (1 + tanh(sqrt(2 / pi) (a + 0.044715 a^3)))``, as in
        ``torch.nn.functional.gelu``.
    out : Tensor ``[..., d]`` of ``x.dtype`` on ``x``'s device, optional
        Written in full and returned.
    backend : str
        ``"auto"`` (registry dispatch) or a backend name of ``act.gelu_mul``
        (``"triton"``, ``"reference"``).

    Returns
    -------
    Tensor ``[..., d]`` of ``x.dtype``: ``out`` when given, else a new contiguous tensor.

    Examples
    --------
    >>> gate_up = torch.randn(5, 2 * 16384, dtype=torch.bfloat16, device="cuda")
    >>> h = infercore.ops.gelu_and_mul(gate_up, approximate="tanh")  # [5, 16384]

    Also available as ``torch.ops.infercore.gelu_and_mul(x, out, approximate, backend)``.
    """
    if approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(
            f"approximate must be 'none' or 'tanh', got {approximate!r}"
        )
    out = _prepare_out(x, out)
    if torch.compiler.is_compiling():
        torch.ops.infercore.gelu_and_mul(x, out, approximate, backend)
    else:
        _gated("act.gelu_mul", x, out, _GELU_APPROXIMATIONS[approximate], backend)
    return out
