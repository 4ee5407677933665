"""INT8 W8A8 (SmoothQuant style): ``quantize_int8``, ``gemm_w8a8`` and ``smooth``.

A W8A8 linear layer quantizes its activations per token at run time and its weight per
output channel once; the GEMM multiplies int8 by int8 with int32 accumulation and applies
both scales in the epilogue::

    xq, xs = quantize_int8(x, "token")              # x [M, K] -> int8 [M, K], fp32 [M, 1]
    wq, ws = quantize_int8(w.t(), "channel")        # w [N, K] -> int8 [K, N] view, [1, N]
    y = gemm_w8a8(xq, wq, xs, ws, out_dtype=x.dtype)


Families: ``quant.int8`` and ``gemm.w8a8``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = [
    "GRANULARITIES",
    "GemmW8A8Inputs",
    "QuantizeInt8Inputs",
    "gemm_w8a8",
    "quantize_int8",
    "smooth",
]

#: ``quantize_int8`` granularities: one scale per row of the last dim ("token"), one for
#: the whole tensor ("tensor"), one per column of a 2-D ``[K, N]`` GEMM operand ("channel").
GRANULARITIES = ("token", "tensor", "channel")


@dataclass(frozen=True, slots=True)
class QuantizeInt8Inputs(TensorInputs):
    """What ``quant.int8`` backends are asked to support."""

    x: torch.Tensor
    granularity: str


@dataclass(frozen=True, slots=True)
class GemmW8A8Inputs:
    """What ``gemm.w8a8`` backends are asked to support (``dtype`` is the output dtype)."""

    a_q: torch.Tensor
    b_q: torch.Tensor
    a_scale: torch.Tensor
    b_scale: torch.Tensor
    bias: torch.Tensor | None
    out_dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return self.a_q.device

    @property
    def dtype(self) -> torch.dtype:
        return self.out_dtype


# -- quantize_int8 ----------------------------------------------------------------------------


def _quantize_int8(
    x: torch.Tensor, granularity: str, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = QuantizeInt8Inputs(x, granularity)
    return resolve("quant.int8", inputs, backend).run(x, granularity)


@torch.library.custom_op("infercore::quantize_int8", mutates_args=())
def _quantize_int8_op(
    x: torch.Tensor, granularity: str, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize_int8(x, granularity, backend)


def scale_shape(x_shape: tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of the scale ``quantize_int8`` returns: it broadcasts against ``x``."""
    if granularity == "token":
        return (*x_shape[:-1], 1)
    if granularity == "channel":
        return (1, x_shape[1])
    return (1,) * len(x_shape)


@_quantize_int8_op.register_fake
def _(x, granularity, backend):
    q = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    return q, torch.empty(scale_shape(tuple(x.shape), granularity), dtype=torch.float32,
                          device=x.device)


def quantize_int8(
    x: torch.Tensor, granularity: str = "token", *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization: ``q = clamp(round(x / scale), -127, 127)``.

    ``scale = absmax / 127`` over each group (float32), so ``|x - q * scale| <= scale / 2``
    element-wise. An all-zero group gets the smallest normal float32 as scale.

    Parameters
    ----------
    x : Tensor, float16 / bfloat16 / float32
        ``[..., K]`` for "token" and "tensor"; ``[K, N]`` for "channel".
    granularity : str
        ``"token"``: one scale per row of the last dim (activations, dynamic per token);
        ``"tensor"``: one scale; ``"channel"``: one scale per column of a 2-D ``[K, N]``
        GEMM operand, i.e. per output channel (pass ``weight.t()`` of an ``nn.Linear``).
    backend : str
        ``"auto"`` or a backend name of ``quant.int8`` (``"triton"``: "token" only,
        ``"reference"``).

    Returns
    -------
    q : Tensor int8, ``x.shape`` (with ``x``'s strides when it is a transposed view)
    scale : Tensor float32 that broadcasts against ``x``: ``[..., 1]`` ("token"),
        ``[1, ..., 1]`` ("tensor"), ``[1, N]`` ("channel").

    Examples
    --------
    >>> xq, xs = infercore.ops.quantize_int8(x, "token")  # x [M, K] bf16
    >>> torch.testing.assert_close(xq.float() * xs, x.float(), atol=xs.max() / 2, rtol=0)
    """
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "channel" and x.dim() != 2:
        raise ValueError(
            f"granularity='channel' takes a 2-D [K, N] tensor, got shape {tuple(x.shape)}"
        )
    if torch.compiler.is_compiling():
        return torch.ops.infercore.quantize_int8(x, granularity, backend)
    return _quantize_int8(x, granularity, backend)


# -- gemm_w8a8 --------------------------------------------------------------------------------


def _gemm_w8a8(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend) -> torch.Tensor:
    inputs = GemmW8A8Inputs(a_q, b_q, a_scale, b_scale, bias, out_dtype)
    return resolve("gemm.w8a8", inputs, backend).run(a_q, b_q, a_scale, b_scale, bias, out_dtype)


@torch.library.custom_op("infercore::gemm_w8a8", mutates_args=())
def _gemm_w8a8_op(
    a_q: torch.Tensor, b_q: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
    bias: torch.Tensor | None, out_dtype: torch.dtype, backend: str,
) -> torch.Tensor:
    return _gemm_w8a8(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend)


@_gemm_w8a8_op.register_fake
def _(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend):
    return torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)


def _flat_scale(name: str, t: object, length: int, layout: str) -> torch.Tensor:
    """A scale tensor as float32 ``[length]`` or ``[1]``; any single-axis layout is accepted."""
    t = check_tensor(name, t, dtypes=FLOAT_DTYPES)
    single_axis = sum(size != 1 for size in t.shape) <= 1
    if not single_axis or t.numel() not in (1, length):
        raise ValueError(
            f"{name} must hold one scale or {length} (shape {layout} or [{length}]), "
            f"got shape {tuple(t.shape)}"
        )
    return t.reshape(-1).float().contiguous()


def gemm_w8a8(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Scaled int8 GEMM: ``out = (a_q @ b_q) * a_scale * b_scale + bias``.

    The product accumulates exactly in int32; scales and bias apply in float32, rounded
    once to ``out_dtype``.

    Parameters
    ----------
    a_q : Tensor int8 ``[M, K]`` (activations)
    b_q : Tensor int8 ``[K, N]``, any strides; cuBLAS and the Triton kernel prefer it
        column-major, i.e. ``w_q.t()`` of an ``nn.Linear``-shaped ``w_q [N, K]``.
    a_scale : Tensor, float, ``[M, 1]`` or ``[M]`` (per token) or one element (per tensor)
    b_scale : Tensor, float, ``[1, N]`` or ``[N]`` (per channel) or one element
    out_dtype : torch.dtype
        float16, bfloat16 or float32.
    bias : Tensor ``[N]``, float, optional
    backend : str
        ``"auto"``, ``"triton"``, ``"torch"`` (``torch._int_mm``; on CUDA it needs
        M > 16 and K, N multiples of 8) or ``"reference"``.

    Returns
    -------
    Tensor ``[M, N]`` of ``out_dtype``.

    Examples
    --------
    >>> xq, xs = infercore.ops.quantize_int8(x, "token")
    >>> wq, ws = infercore.ops.quantize_int8(w.t(), "channel")
    >>> y = infercore.ops.gemm_w8a8(xq, wq, xs, ws, out_dtype=torch.bfloat16)
    """
    check_tensor("a_q", a_q, ndim=2, dtypes=(torch.int8,))
    check_tensor("b_q", b_q, ndim=2, dtypes=(torch.int8,))
    m, k = a_q.shape
    if b_q.shape[0] != k:
        raise ValueError(
            f"b_q must have shape [K, N] with K = a_q.shape[1] = {k}, got {tuple(b_q.shape)}"
        )
    n = b_q.shape[1]
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype!r}")
    a_s = _flat_scale("a_scale", a_scale, m, f"[{m}, 1]")
    b_s = _flat_scale("b_scale", b_scale, n, f"[1, {n}]")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES)
        if bias.shape[0] != n:
            raise ValueError(f"bias must have shape [N] = [{n}], got {tuple(bias.shape)}")
    check_same_device(a_q=a_q, b_q=b_q, a_scale=a_s, b_scale=b_s, bias=bias)
    if torch.compiler.is_compiling():
        return torch.ops.infercore.gemm_w8a8(a_q, b_q, a_s, b_s, bias, out_dtype, backend)
    return _gemm_w8a8(a_q, b_q, a_s, b_s, bias, out_dtype, backend)


# -- smooth -----------------------------------------------------------------------------------


def smooth(
    act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothQuant: move quantization difficulty from activations to the weight.

    Per input channel ``j``: ``s_j = act_absmax_j ** alpha / max_n |weight[n, j]| ** (1 -
    alpha)`` (both maxima clamped to >= 1e-5), and ``new_weight = weight * s``. The
    activation side applies the inverse, ``x' = x / s``, so ``x' @ new_weight^T == x @
    weight^T``: fold it into the layer that produces ``x`` (divide an RMSNorm's or
    LayerNorm's weight, and a LayerNorm's bias, by ``s``), or divide ``x`` before
    :func:`quantize_int8`. Layers that share an input (q/k/v, gate/up) share ``s``: pass
    their weights concatenated along dim 0 and split ``new_weight`` back.

    Parameters
    ----------
    act_absmax : Tensor ``[K]``, float, non-negative
        Largest ``|x_j|`` seen per input channel on calibration data.
    weight : Tensor ``[N, K]``, float (``nn.Linear`` layout)
    alpha : float
        Migration strength in ``[0, 1]``; 0.5 balances both sides.

    Returns
    -------
    smoothing_scales : Tensor float32 ``[K]``
    new_weight : Tensor ``[N, K]`` of ``weight.dtype``

    Examples
    --------
    >>> s, w_new = infercore.ops.smooth(act_absmax, layer.weight, alpha=0.5)
    >>> norm.weight.data.div_(s.to(norm.weight.dtype)); layer.weight.data.copy_(w_new)
    """
    check_tensor("act_absmax", act_absmax, ndim=1, dtypes=FLOAT_DTYPES)
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES)
    if act_absmax.shape[0] != weight.shape[1]:
        raise ValueError(
            f"act_absmax must have shape [K] = [{weight.shape[1]}] (weight.shape[1]), "
            f"got {tuple(act_absmax.shape)}"
        )
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if (act_absmax < 0).any():
        raise ValueError("act_absmax must be non-negative (it holds maxima of |x|)")
    check_same_device(act_absmax=act_absmax, weight=weight)
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.float().abs().amax(dim=0).clamp(min=1e-5)
    s = a.pow(alpha) / w.pow(1.0 - alpha)
    return s, (weight.float() * s).to(weight.dtype)
