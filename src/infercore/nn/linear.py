"""``QuantizedLinear``: an ``nn.Linear`` replacement holding a quantized weight."""

from __future__ import annotations

import torch
from torch import nn

from infercore.ops.quant import (
    QuantizedWeight,
    gemm_w8a8,
    quantize_int8,
    quantize_weight,
    quantized_linear,
)

__all__ = ["LINEAR_METHODS", "QuantizedLinear"]

#: Methods of :meth:`QuantizedLinear.from_linear`: weight-only int8 / int4 / fp8, and
#: "w8a8" (int8 weight per output channel, activations quantized per token at run time).
LINEAR_METHODS = ("int8", "int4", "fp8", "w8a8")

_FP8 = torch.float8_e4m3fn


class QuantizedLinear(nn.Module):
    """``y = x @ W^T + b`` with ``W [out_features, in_features]`` stored quantized.

    The weight lives in buffers (``qweight``, ``scales`` and, when asymmetric, ``zeros``),
    so ``state_dict``, ``.to(device)`` and ``.half()`` work as for any module; fp8 weights
    are kept as their ``uint8`` bit pattern so that dtype casts of the module leave them
    alone. Build one with :meth:`from_linear` or from a :class:`QuantizedWeight`.

    Parameters
    ----------
    qweight : QuantizedWeight
    bias : Tensor ``[out_features]``, optional
    act_quant : bool
        Quantize activations per token and run the int8 x int8 GEMM (``gemm.w8a8``);
        needs a symmetric int8 weight with one scale per output channel.
    backend : str
        Passed to :func:`~infercore.ops.quantized_linear` / :func:`~infercore.ops.gemm_w8a8`.
    """

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None, *,
                 act_quant: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"qweight must be a QuantizedWeight, got {type(qweight).__name__}")
        if act_quant and not (qweight.method == "int8" and qweight.symmetric
                              and qweight.num_groups == 1):
            raise ValueError(
                "act_quant=True needs a symmetric int8 weight with one scale per output "
                f"channel (group_size=None), got {qweight!r}"
            )
        self.in_features = qweight.in_features
        self.out_features = qweight.out_features
        self.method = qweight.method
        self.group_size = qweight.group_size
        self.act_quant = act_quant
        self.backend = backend
        stored = qweight.qweight.view(torch.uint8) if self.method == "fp8" else qweight.qweight
        self.register_buffer("qweight", stored)
        self.register_buffer("scales", qweight.scales)
        self.register_buffer("zeros", qweight.zeros)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._weight_q: tuple[tuple, QuantizedWeight] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, method: str = "int4", *, group_size: int | None = 128,
                    symmetric: bool = True, backend: str = "auto") -> QuantizedLinear:
        """Quantize an ``nn.Linear`` (round to nearest; see :func:`quantize_weight`).

        ``method`` is one of :data:`LINEAR_METHODS`; "w8a8" ignores ``group_size`` and
        ``symmetric`` (per-channel symmetric int8 weights, per-token int8 activations).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if method not in LINEAR_METHODS:
            raise ValueError(f"method must be one of {LINEAR_METHODS}, got {method!r}")
        if method == "w8a8":
            qw = quantize_weight(linear.weight, "int8", group_size=None, symmetric=True)
        else:
            qw = quantize_weight(linear.weight, method, group_size=group_size, symmetric=symmetric)
        return cls(qw, linear.bias, act_quant=method == "w8a8", backend=backend)

    @property
    def weight_q(self) -> QuantizedWeight:
        """The buffers as a :class:`QuantizedWeight` (views, no copies; built once)."""
        buffers = (self.qweight, self.scales, self.zeros)
        cached = self._weight_q
        if cached is not None and all(a is b for a, b in zip(cached[0], buffers, strict=True)):
            return cached[1]
        qweight = self.qweight.view(_FP8) if self.method == "fp8" else self.qweight
        qw = QuantizedWeight(self.method, qweight, self.scales, self.zeros, self.group_size)
        self._weight_q = (buffers, qw)
        return qw

    def _apply(self, fn, recurse=True):
        self._weight_q = None  # buffers are replaced: drop the views of the old ones
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qw = self.weight_q
        if not self.act_quant:
            return quantized_linear(x, qw, self.bias, backend=self.backend)
        x2 = x.reshape(-1, self.in_features)
        xq, xs = quantize_int8(x2, "token")
        out = gemm_w8a8(xq, qw.qweight.t(), xs, qw.scales, out_dtype=x.dtype, bias=self.bias,
                        backend=self.backend)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "w8a8" if self.act_quant else self.method
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"method={kind}, group_size={self.group_size}, bias={self.bias is not None}")
