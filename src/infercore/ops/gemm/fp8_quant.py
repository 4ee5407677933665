"""FP8 (e4m3) quantization (family ``quant.fp8``): ``ops.quantize_fp8``.

``q = saturate(x / scale)`` rounded to float8_e4m3fn, with one float32 scale per
granularity group; ``x ~= q * scale``. Dynamic scales are ``amax(|x|) / 448`` per group
(448 is the largest e4m3 value), so each group's largest magnitude maps to +-448.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = [
    "FP8_DTYPE",
    "FP8_MAX",
    "GRANULARITIES",
    "QuantFp8Inputs",
    "expand_scale",
    "quantize_fp8",
    "scale_groups",
    "scale_shape",
]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)
GRANULARITIES = ("tensor", "token", "channel", "block")


@dataclass(frozen=True, slots=True)
class QuantFp8Inputs(TensorInputs):
    """What ``quant.fp8`` backends are asked to support."""

    x: torch.Tensor
    granularity: str
    block_size: tuple[int, int]
    scale: torch.Tensor | None


def scale_shape(
    shape: Sequence[int], granularity: str, block_size: tuple[int, int]
) -> tuple[int, ...]:
    """Shape of the scale tensor for ``x`` of ``shape`` (same number of dims as ``x``)."""
    if granularity == "tensor":
        return (1,) * len(shape)
    if granularity == "token":
        return (*shape[:-1], 1)
    if granularity == "channel":
        return (1, shape[1])
    rows, cols = shape
    return (-(-rows // block_size[0]), -(-cols // block_size[1]))


def scale_groups(ndim: int, granularity: str, block_size: tuple[int, int]) -> tuple[int, ...]:
    """Elements per scale along each dim (0: the whole dim shares one scale)."""
    if granularity == "tensor":
        return (0,) * ndim
    if granularity == "token":
        return (1,) * (ndim - 1) + (0,)
    if granularity == "channel":
        return (0, 1)
    return tuple(block_size)


def expand_scale(
    scale: torch.Tensor, shape: Sequence[int], groups: Sequence[int]
) -> torch.Tensor:
    """Repeat block scales to ``shape`` (dims of size 1 are left to broadcasting)."""
    for dim, group in enumerate(groups):
        if scale.shape[dim] != 1 and group > 1:
            scale = scale.repeat_interleave(group, dim=dim).narrow(dim, 0, shape[dim])
    return scale


def _check_quant_args(
    x: torch.Tensor, granularity: str, block_size: object, scale: torch.Tensor | None
) -> tuple[int, int]:
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity in ("channel", "block") and x.dim() != 2:
        raise ValueError(
            f"granularity={granularity!r} needs a 2-D x, got shape {tuple(x.shape)}"
        )
    if not (
        isinstance(block_size, (tuple, list))
        and len(block_size) == 2
        and all(isinstance(v, int) and v > 0 for v in block_size)
    ):
        raise ValueError(f"block_size must be two positive ints (rows, cols), got {block_size!r}")
    block = (int(block_size[0]), int(block_size[1]))
    if scale is not None:
        check_tensor("scale", scale, dtypes=(torch.float32,))
        want = scale_shape(x.shape, granularity, block)
        if tuple(scale.shape) != want:
            raise ValueError(
                f"scale for granularity={granularity!r} must have shape {list(want)}, "
                f"got {list(scale.shape)}"
            )
        check_same_device(x=x, scale=scale)
    return block


def _quantize(
    x: torch.Tensor,
    granularity: str,
    block_size: tuple[int, int],
    scale: torch.Tensor | None,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = QuantFp8Inputs(x, granularity, block_size, scale)
    return resolve("quant.fp8", inputs, backend).run(x, granularity, block_size, scale)


@torch.library.custom_op("infercore::quantize_fp8", mutates_args=())
def _quantize_op(
    x: torch.Tensor, granularity: str, block_size: list[int], backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize(x, granularity, (block_size[0], block_size[1]), None, backend)


@_quantize_op.register_fake
def _(x, granularity, block_size, backend):
    shape = scale_shape(x.shape, granularity, (block_size[0], block_size[1]))
    return (
        torch.empty_like(x, dtype=FP8_DTYPE),
        torch.empty(shape, dtype=torch.float32, device=x.device),
    )


@torch.library.custom_op("infercore::quantize_fp8_static", mutates_args=())
def _quantize_static_op(
    x: torch.Tensor, scale: torch.Tensor, granularity: str, block_size: list[int], backend: str
) -> torch.Tensor:
    return _quantize(x, granularity, (block_size[0], block_size[1]), scale, backend)[0]


@_quantize_static_op.register_fake
def _(x, scale, granularity, block_size, backend):
    return torch.empty_like(x, dtype=FP8_DTYPE)


def quantize_fp8(
    x: torch.Tensor,
    granularity: str = "tensor",
    *,
    block_size: tuple[int, int] = (128, 128),
    scale: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize to FP8 e4m3 with float32 scales: ``x ~= q.float() * scale`` (broadcast).

    Parameters
    ----------
    x : Tensor ``[..., C]`` (``[R, C]`` for ``"channel"`` and ``"block"``),
        float16 / bfloat16 / float32
    granularity : {"tensor", "token", "channel", "block"}
        Which elements share a scale, and the scale's shape:

        - ``"tensor"``: all; scale ``[1, ..., 1]`` (``x.dim()`` ones).
        - ``"token"``: each row (last dim); scale ``[..., 1]``. Per-token for activations;
          per output channel for a weight stored ``[N, K]``.
        - ``"channel"``: each column; scale ``[1, C]``. Per output channel of a GEMM
          operand ``b [K, N]``.
        - ``"block"``: ``block_size`` tiles; scale ``[ceil(R / br), ceil(C / bc)]``.
          ``(128, 128)`` for weights, ``(1, 128)`` for activations (per-token groups).
    block_size : (int, int)
        Tile ``(br, bc)`` for ``"block"``.
    scale : Tensor, float32, optional
        Static scale of the shape above (used as given, values must be positive);
        default: dynamic, ``amax(|x|) / 448`` per group.
    backend : str
        ``"auto"`` or a backend of ``quant.fp8``.

    Returns
    -------
    q : Tensor of ``x``'s shape, float8_e4m3fn, with ``x``'s memory layout
        (quantizing ``w.t()`` gives the column-major ``b`` that GEMMs want).
    scale : Tensor, float32 (the given one when static)

    Examples
    --------
    >>> a_q, a_s = infercore.ops.quantize_fp8(x, "token")              # x [M, K]
    >>> b_q, b_s = infercore.ops.quantize_fp8(w.t(), "channel")        # w [N, K]
    >>> y = infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16)
    """
    block = _check_quant_args(x, granularity, block_size, scale)
    if torch.compiler.is_compiling():
        if scale is None:
            return torch.ops.infercore.quantize_fp8(x, granularity, list(block), backend)
        q = torch.ops.infercore.quantize_fp8_static(x, scale, granularity, list(block), backend)
        return q, scale
    return _quantize(x, granularity, block, scale, backend)
