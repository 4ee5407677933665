"""``quantized_linear``: activations times a weight-only quantized weight.

Families: ``gemm.w4a16`` (method ``int4``) and ``gemm.w8a16`` (methods ``int8`` and
``fp8``: 8-bit weights either way; backends state which methods they take).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.ops.quant.weights import QuantizedWeight
from infercore.registry import resolve

__all__ = ["QuantizedLinearInputs", "quantized_linear"]


@dataclass(frozen=True, slots=True)
class QuantizedLinearInputs(TensorInputs):
    """What ``gemm.w8a16`` / ``gemm.w4a16`` backends are asked to support."""

    x: torch.Tensor
    qweight: QuantizedWeight
    bias: torch.Tensor | None


def _check_args(x: torch.Tensor, qweight: QuantizedWeight, bias: torch.Tensor | None) -> None:
    if not isinstance(qweight, QuantizedWeight):
        raise TypeError(
            f"qweight must be a QuantizedWeight (see quantize_weight), got {type(qweight).__name__}"
        )
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    if x.shape[-1] != qweight.in_features:
        raise ValueError(
            f"x must have shape [..., K] with K = qweight.in_features = {qweight.in_features}, "
            f"got {tuple(x.shape)}"
        )
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES)
        if bias.shape[0] != qweight.out_features:
            raise ValueError(
                f"bias must have shape [N] = [{qweight.out_features}], got {tuple(bias.shape)}"
            )
    check_same_device(x=x, qweight=qweight.qweight, bias=bias)


def _dispatch(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None,
              backend: str) -> torch.Tensor:
    if x.shape[0] == 0:
        return x.new_empty((0, qw.out_features))
    return resolve(qw.family, QuantizedLinearInputs(x, qw, bias), backend).run(x, qw, bias)


@torch.library.custom_op("infercore::quantized_linear", mutates_args=())
def _quantized_linear_op(
    x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
    bias: torch.Tensor | None, method: str, group_size: int, backend: str,
) -> torch.Tensor:
    qw = QuantizedWeight(method, qweight, scales, zeros, group_size)
    return _dispatch(x, qw, bias, backend)


@_quantized_linear_op.register_fake
def _(x, qweight, scales, zeros, bias, method, group_size, backend):
    return x.new_empty((x.shape[0], scales.shape[1]))


def quantized_linear(
    x: torch.Tensor,
    qweight: QuantizedWeight,
    bias: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``y = x @ W^T + bias`` with ``W`` stored quantized (weight-only quantization).

    Dispatches to ``gemm.w4a16`` for int4 weights and ``gemm.w8a16`` for int8 and fp8
    weights. The reference backend dequantizes ``W`` and multiplies in float32; the
    Triton backend dequantizes tiles inside the GEMM (a split-K kernel for up to 64 rows,
    a tiled one above). Its kernels scale activations by powers of two to keep products
    exact or normal: finite results need ``|x| < 2**27`` (the one-row kernel for int4 and
    int8 with bfloat16 or float32 activations) and ``|x| < 2**64`` (fp8 weights with
    bfloat16 activations, 2-64 rows).

    Parameters
    ----------
    x : Tensor ``[..., K]``, float16 / bfloat16 / float32
    qweight : QuantizedWeight
        Holds ``W [N, K]`` (see :func:`quantize_weight`), on ``x``'s device.
    bias : Tensor ``[N]``, float, optional
    backend : str
        ``"auto"`` or a backend name of the family (``"triton"``, ``"reference"``).

    Returns
    -------
    Tensor ``[..., N]`` of ``x.dtype``.

    Examples
    --------
    >>> qw = infercore.ops.quantize_weight(w, "int4", group_size=128)  # w [N, K] bf16
    >>> y = infercore.ops.quantized_linear(x, qw)  # x [B, T, K] bf16 -> y [B, T, N]

    Also available as ``torch.ops.infercore.quantized_linear(x2d, qweight, scales, zeros,
    bias, method, group_size, backend)`` for ``torch.compile``.
    """
    _check_args(x, qweight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()  # the kernels take a row stride, not a column stride
    if torch.compiler.is_compiling():
        out = torch.ops.infercore.quantized_linear(
            x2, qweight.qweight, qweight.scales, qweight.zeros, bias, qweight.method,
            qweight.group_size, backend,
        )
    else:
        out = _dispatch(x2, qweight, bias, backend)
    return out.view(*x.shape[:-1], qweight.out_features)
