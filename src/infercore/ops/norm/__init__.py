"""Normalization ops: RMSNorm (family ``norm.rms``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = ["RMSNormInputs", "rms_norm"]


@dataclass(frozen=True, slots=True)
class RMSNormInputs:
    """What ``norm.rms`` backends are asked to support."""

    x: torch.Tensor
    weight: torch.Tensor
    eps: float

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype


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
