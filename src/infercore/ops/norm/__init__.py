"""Normalization ops: RMSNorm (``norm.rms``) and residual add + RMSNorm (``norm.add_rms``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = ["FusedAddRMSNormInputs", "RMSNormInputs", "fused_add_rms_norm", "rms_norm"]


@dataclass(frozen=True, slots=True)
class RMSNormInputs(TensorInputs):
    """What ``norm.rms`` backends are asked to support."""

    x: torch.Tensor
    weight: torch.Tensor
    eps: float


def _check_rms_args(x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    check_tensor("weight", weight, ndim=1, dtypes=FLOAT_DTYPES)
    if weight.shape[0] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape [hidden] = [{x.shape[-1]}] (the last dim of x), "
            f"got {tuple(weight.shape)}"
        )
    check_same_device(x=x, weight=weight)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str) -> torch.Tensor:
    return resolve("norm.rms", RMSNormInputs(x, weight, eps), backend).run(x, weight, eps)


@torch.library.custom_op("infercore::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str) -> torch.Tensor:
    return _rms_norm(x, weight, eps, backend)


@_rms_norm_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, backend: str = "auto"
) -> torch.Tensor:
    """Root-mean-square normalization over the last dimension.

    ``y = x / sqrt(mean(x**2, -1) + eps) * weight``, computed in float32 and rounded once
    to ``x.dtype``.

    Parameters
    ----------
    x : Tensor ``[..., hidden]``, float16 / bfloat16 / float32
        Any number of leading dims; ``hidden`` need not be a power of two.
    weight : Tensor ``[hidden]``, float16 / bfloat16 / float32, on ``x``'s device
    eps : float
        Added to the mean square; positive.
    backend : str
        ``"auto"`` (registry dispatch) or a backend name of ``norm.rms``
        (``"triton"``, ``"reference"``).

    Returns
    -------
    Tensor ``[..., hidden]`` of ``x.dtype``, contiguous.

    Examples
    --------
    >>> x = torch.randn(3, 5, 4096, dtype=torch.bfloat16, device="cuda")
    >>> w = torch.ones(4096, dtype=torch.bfloat16, device="cuda")
    >>> y = infercore.ops.rms_norm(x, w, 1e-5)

    Also available as ``torch.ops.infercore.rms_norm(x, weight, eps, backend)``, which
    ``torch.compile`` traces as one opaque op.
    """
    _check_rms_args(x, weight, eps)
    if torch.compiler.is_compiling():
        return torch.ops.infercore.rms_norm(x, weight, float(eps), backend)
    return _rms_norm(x, weight, float(eps), backend)


@dataclass(frozen=True, slots=True)
class FusedAddRMSNormInputs(TensorInputs):
    """What ``norm.add_rms`` backends are asked to support."""

    x: torch.Tensor
    residual: torch.Tensor
    weight: torch.Tensor
    eps: float


def _fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float, backend: str) -> None:
    inputs = FusedAddRMSNormInputs(x, residual, weight, eps)
    resolve("norm.add_rms", inputs, backend).run(x, residual, weight, eps)


@torch.library.custom_op("infercore::fused_add_rms_norm", mutates_args=("x", "residual"))
def _fused_add_rms_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                           eps: float, backend: str) -> None:
    _fused_add_rms_norm(x, residual, weight, eps, backend)


@_fused_add_rms_norm_op.register_fake
def _(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
      backend: str) -> None:
    return None


def fused_add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by RMSNorm, in place: ``residual += x; x = rms_norm(residual)``.

    The sum is rounded to ``residual.dtype`` and stored; that rounded sum is normalized
    (float32 math, one rounding to ``x.dtype``) into ``x``. This is the pre-norm decoder
    step ``h = x + residual; residual = h; x = rms_norm(h)`` without extra buffers.

    Parameters
    ----------
    x : Tensor ``[..., hidden]``, float16 / bfloat16 / float32
        The sublayer output; overwritten with the normalized sum. Any strides; the
        Triton backend needs ``x`` viewable as ``[rows, hidden]`` with unit column
        stride (else the reference backend runs).
    residual : Tensor, same shape, dtype and device as ``x``
        The residual stream; overwritten with ``residual + x``. Must not overlap ``x``.
    weight : Tensor ``[hidden]``, float16 / bfloat16 / float32, on ``x``'s device
    eps : float
        Added to the mean square; positive.
    backend : str
        ``"auto"`` (registry dispatch) or a backend name of ``norm.add_rms``
        (``"triton"``, ``"reference"``).

    Returns
    -------
    (x, residual) : the same tensor objects, updated in place.

    Examples
    --------
    >>> x = torch.randn(7, 4096, dtype=torch.bfloat16, device="cuda")
    >>> residual = torch.randn_like(x)
    >>> w = torch.ones(4096, dtype=torch.bfloat16, device="cuda")
    >>> x, residual = infercore.ops.fused_add_rms_norm(x, residual, w, 1e-5)

    Also available as ``torch.ops.infercore.fused_add_rms_norm(x, residual, weight, eps,
    backend)`` (returns nothing; declares both tensors mutated for ``torch.compile``).
    """
    _check_rms_args(x, weight, eps)
    check_tensor("residual", residual, dtypes=FLOAT_DTYPES)
    if residual.shape != x.shape:
        raise ValueError(
            f"residual must have the shape of x, {tuple(x.shape)}; got {tuple(residual.shape)}"
        )
    if residual.dtype != x.dtype:
        raise TypeError(f"residual must have the dtype of x, {x.dtype}; got {residual.dtype}")
    check_same_device(x=x, residual=residual)
    if torch.compiler.is_compiling():
        torch.ops.infercore.fused_add_rms_norm(x, residual, weight, float(eps), backend)
    else:
        _fused_add_rms_norm(x, residual, weight, float(eps), backend)
    return x, residual
