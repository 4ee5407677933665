"""Scaled FP8 GEMM (family ``gemm.fp8``): ``ops.gemm_fp8``.

``out = (a_q * a_scale) @ (b_q * b_scale) + bias`` with e4m3 operands, float32
accumulation and scales of one of these shapes (the layouts ``quantize_fp8`` returns):

=================  ==============================  ==============================
granularity        ``a_scale`` (a_q ``[M, K]``)    ``b_scale`` (b_q ``[K, N]``)
=================  ==============================  ==============================
tensor             one element                     one element
row / column       ``[M, 1]`` (per token)          ``[1, N]`` (per output channel)
1x128 groups       ``[M, ceil(K/128)]``            ``[ceil(K/128), N]``
128x128 blocks     ``[ceil(M/128), ceil(K/128)]``  ``[ceil(K/128), ceil(N/128)]``
=================  ==============================  ==============================

Where two shapes coincide (K <= 128, M == 1, ...) they mean the same scaling.

Accumulation: Hopper's FP8 tensor-core instructions sum their products in a format
narrower than float32. By default the Triton backend adds the products of each K step
(128-512 values, by configuration) into a float32 accumulator (``torch._scaled_mm``'s
default likewise asks cuBLASLt for its more precise mode); ``fast_accum=True`` keeps the
whole K sum in the instructions' own accumulator (``torch._scaled_mm``'s
``use_fast_accum``): faster on Hopper, with a larger error for long K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import TensorInputs, check_same_device, check_tensor
from infercore.ops.gemm.dense import check_bias, check_out_dtype
from infercore.ops.gemm.fp8_quant import FP8_DTYPE
from infercore.registry import resolve

__all__ = ["GemmFp8Inputs", "ScaleSpec", "classify_scale", "gemm_fp8"]

#: Extent of one scale group along K (and along M / N for 128x128 blocks).
GROUP = 128


@dataclass(frozen=True, slots=True)
class ScaleSpec:
    """How one operand's scale maps onto it.

    ``kind``: ``"tensor"``, ``"row"`` (per row of ``a`` / column of ``b``), ``"group"``
    (1x128 along K) or ``"block"`` (128x128). ``outer``: rows of ``a`` (columns of ``b``)
    per scale, 0 meaning all. ``k_grouped``: the scale changes every 128 elements of K.
    """

    kind: str
    outer: int
    k_grouped: bool


_SPECS = {
    "tensor": ScaleSpec("tensor", 0, False),
    "row": ScaleSpec("row", 1, False),
    "group": ScaleSpec("group", 1, True),
    "block": ScaleSpec("block", GROUP, True),
}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def classify_scale(name: str, scale: torch.Tensor, outer: int, k: int, operand: str) -> ScaleSpec:
    """The :class:`ScaleSpec` of ``scale`` for operand ``"a"`` (``[outer, k]``) or ``"b"``
    (``[k, outer]``); ``ValueError`` naming ``name`` and the allowed shapes otherwise."""
    if scale.numel() == 1 and scale.dim() <= 2:
        return _SPECS["tensor"]
    kg, og = _cdiv(k, GROUP), _cdiv(outer, GROUP)
    shapes = {"row": (outer, 1), "group": (outer, kg), "block": (og, kg)}
    if operand == "b":
        shapes = {kind: (s[1], s[0]) for kind, s in shapes.items()}
    got = tuple(scale.shape)
    for kind, shape in shapes.items():
        if got == shape:
            return _SPECS[kind]
    allowed = ", ".join(f"{list(s)} ({kind})" for kind, s in shapes.items())
    raise ValueError(
        f"{name} has shape {list(got)}; allowed: one element (tensor), {allowed}"
    )


@dataclass(frozen=True, slots=True)
class GemmFp8Inputs(TensorInputs):
    """What ``gemm.fp8`` backends are asked to support."""

    a_q: torch.Tensor
    b_q: torch.Tensor
    a_scale: torch.Tensor
    b_scale: torch.Tensor
    bias: torch.Tensor | None
    out: torch.Tensor
    fast_accum: bool = False

    @property
    def out_dtype(self) -> torch.dtype:
        return self.out.dtype

    @property
    def a_spec(self) -> ScaleSpec:
        return classify_scale("a_scale", self.a_scale, *self.a_q.shape, "a")

    @property
    def b_spec(self) -> ScaleSpec:
        k, n = self.b_q.shape
        return classify_scale("b_scale", self.b_scale, n, k, "b")


def _check_gemm_fp8_args(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None,
    fast_accum: bool,
) -> None:
    if not isinstance(fast_accum, bool):
        raise TypeError(f"fast_accum must be True or False, got {fast_accum!r}")
    check_tensor("a_q", a_q, ndim=2, dtypes=(FP8_DTYPE,))
    check_tensor("b_q", b_q, ndim=2, dtypes=(FP8_DTYPE,))
    m, k = a_q.shape
    if b_q.shape[0] != k:
        raise ValueError(
            f"b_q must have shape [K, N] with K = a_q.shape[1] = {k}, got {tuple(b_q.shape)}"
        )
    n = b_q.shape[1]
    check_tensor("a_scale", a_scale, dtypes=(torch.float32,))
    check_tensor("b_scale", b_scale, dtypes=(torch.float32,))
    classify_scale("a_scale", a_scale, m, k, "a")
    classify_scale("b_scale", b_scale, n, k, "b")
    check_out_dtype(out_dtype)
    check_bias(bias, n)
    check_same_device(a_q=a_q, b_q=b_q, a_scale=a_scale, b_scale=b_scale, bias=bias)


def _gemm_fp8(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    backend: str,
    fast_accum: bool,
) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)
    inputs = GemmFp8Inputs(a_q, b_q, a_scale, b_scale, bias, out, fast_accum)
    resolve("gemm.fp8", inputs, backend).run(inputs)
    return out


@torch.library.custom_op("infercore::gemm_fp8", mutates_args=())
def _gemm_fp8_op(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    backend: str,
    fast_accum: bool,
) -> torch.Tensor:
    return _gemm_fp8(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend, fast_accum)


@_gemm_fp8_op.register_fake
def _(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend, fast_accum):
    return torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)


def gemm_fp8(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
    fast_accum: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Scaled FP8 matrix product ``(a_q * a_scale) @ (b_q * b_scale) + bias``.

    Parameters
    ----------
    a_q : Tensor ``[M, K]``, float8_e4m3fn
        Row-major for the ``torch`` backend (``torch._scaled_mm``); any strides otherwise.
    b_q : Tensor ``[K, N]``, float8_e4m3fn
        Column-major (``w_q.t()`` of a contiguous ``[N, K]`` weight) is the fast layout
        and the one ``torch._scaled_mm`` requires.
    a_scale, b_scale : Tensor, float32
        Dequantization scales, shapes in the table of the module docstring; the two
        granularities may differ.
    out_dtype : torch.dtype
        bfloat16, float16 or float32.
    bias : Tensor ``[N]``, float16 / bfloat16 / float32, optional
        Added in float32 after scaling.
    fast_accum : bool
        Keep the whole K sum in the FP8 tensor-core accumulator instead of adding each K
        step into float32 (``torch._scaled_mm``'s ``use_fast_accum``; see the module
        docstring). The reference backend always sums in float32.
    backend : str
        ``"auto"`` or a backend of ``gemm.fp8`` (``"torch"``, ``"triton"``, ``"reference"``).

    Returns
    -------
    Tensor ``[M, N]`` of ``out_dtype``.

    Examples
    --------
    >>> a_q, a_s = infercore.ops.quantize_fp8(x, "block", block_size=(1, 128))
    >>> b_q, b_s = infercore.ops.quantize_fp8(w.t(), "block", block_size=(128, 128))
    >>> y = infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16)
    """
    _check_gemm_fp8_args(a_q, b_q, a_scale, b_scale, out_dtype, bias, fast_accum)
    if torch.compiler.is_compiling():
        return torch.ops.infercore.gemm_fp8(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend,
                                            fast_accum)
    return _gemm_fp8(a_q, b_q, a_scale, b_scale, bias, out_dtype, backend, fast_accum)
