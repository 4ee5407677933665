"""Dense GEMM (family ``gemm``): ``ops.gemm`` and ``ops.linear``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = ["GemmInputs", "check_bias", "check_out_dtype", "gemm", "linear"]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class GemmInputs(TensorInputs):
    """What ``gemm`` backends are asked to support: ``out = a @ b (+ bias)``."""

    a: torch.Tensor
    b: torch.Tensor
    bias: torch.Tensor | None
    out: torch.Tensor

    @property
    def out_dtype(self) -> torch.dtype:
        return self.out.dtype


def check_out_dtype(out_dtype: object) -> torch.dtype:
    """Raise ``TypeError`` unless ``out_dtype`` is float16, bfloat16 or float32."""
    if out_dtype not in FLOAT_DTYPES:
        allowed = ", ".join(_name(d) for d in FLOAT_DTYPES)
        raise TypeError(f"out_dtype must be one of {allowed}; got {out_dtype!r}")
    return out_dtype  # type: ignore[return-value]


def check_bias(bias: torch.Tensor | None, n: int) -> None:
    """Raise unless ``bias`` is ``None`` or a float tensor of shape ``[n]``."""
    if bias is None:
        return
    check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES)
    if bias.shape[0] != n:
        raise ValueError(f"bias must have shape [N] = [{n}], got {tuple(bias.shape)}")


def _check_gemm_args(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype | None,
    out: torch.Tensor | None,
) -> torch.dtype:
    check_tensor("a", a, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("b", b, ndim=2, dtypes=FLOAT_DTYPES)
    if b.dtype != a.dtype:
        raise TypeError(f"b must have a's dtype {_name(a.dtype)}; got {_name(b.dtype)}")
    m, k = a.shape
    if b.shape[0] != k:
        raise ValueError(
            f"b must have shape [K, N] with K = a.shape[1] = {k}, got {tuple(b.shape)}"
        )
    n = b.shape[1]
    check_bias(bias, n)
    if out is not None:
        check_tensor("out", out, ndim=2, dtypes=FLOAT_DTYPES)
        if tuple(out.shape) != (m, n):
            raise ValueError(f"out must have shape [M, N] = [{m}, {n}], got {tuple(out.shape)}")
        if out_dtype is not None and out.dtype != out_dtype:
            raise TypeError(
                f"out has dtype {_name(out.dtype)} but out_dtype is {_name(out_dtype)}"
            )
        out_dtype = out.dtype
    check_same_device(a=a, b=b, bias=bias, out=out)
    return check_out_dtype(out_dtype if out_dtype is not None else a.dtype)


def _gemm_into(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, backend: str
) -> None:
    resolve("gemm", GemmInputs(a, b, bias, out), backend).run(a, b, bias, out)


@torch.library.custom_op("infercore::gemm", mutates_args=())
def _gemm_op(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    backend: str,
) -> torch.Tensor:
    out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype, device=a.device)
    _gemm_into(a, b, bias, out, backend)
    return out


@_gemm_op.register_fake
def _(a, b, bias, out_dtype, backend):
    return torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype, device=a.device)


@torch.library.custom_op("infercore::gemm_out", mutates_args=("out",))
def _gemm_out_op(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, backend: str
) -> None:
    _gemm_into(a, b, bias, out, backend)


@_gemm_out_op.register_fake
def _(a, b, bias, out, backend):
    return None


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Matrix product ``a @ b (+ bias)`` with float32 accumulation.

    Parameters
    ----------
    a : Tensor ``[M, K]``, float16 / bfloat16 / float32
        Any strides (a transposed view is fine).
    b : Tensor ``[K, N]``, ``a``'s dtype, on ``a``'s device
        Any strides: pass ``weight.t()`` for a ``[N, K]`` weight (see :func:`linear`).
    bias : Tensor ``[N]``, float16 / bfloat16 / float32, optional
        Added to every row in float32 before the result is rounded.
    out_dtype : torch.dtype, optional
        float16, bfloat16 or float32; default ``out.dtype`` when ``out`` is given, else
        ``a.dtype``.
    out : Tensor ``[M, N]``, optional
        Written in full and returned; may be strided.
    backend : str
        ``"auto"`` or a backend of ``gemm`` (``"torch"``, ``"triton"``, ``"reference"``,
        ``"cutlass"`` with the infercore-cutlass plugin).

    Returns
    -------
    Tensor ``[M, N]`` of ``out_dtype``: ``out`` itself when given.

    Float32 inputs follow ``torch.backends.cuda.matmul.allow_tf32`` (TF32 tensor cores
    only where PyTorch allows them).

    Examples
    --------
    >>> a = torch.randn(512, 4096, dtype=torch.bfloat16, device="cuda")
    >>> w = torch.randn(6144, 4096, dtype=torch.bfloat16, device="cuda")
    >>> y = infercore.ops.gemm(a, w.t())  # [512, 6144]
    """
    out_dtype = _check_gemm_args(a, b, bias, out_dtype, out)
    compiling = torch.compiler.is_compiling()
    if out is None:
        if compiling:
            return torch.ops.infercore.gemm(a, b, bias, out_dtype, backend)
        out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype, device=a.device)
    if compiling:
        torch.ops.infercore.gemm_out(a, b, bias, out, backend)
    else:
        _gemm_into(a, b, bias, out, backend)
    return out


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``x @ weight.T (+ bias)``, as ``torch.nn.functional.linear``, through the ``gemm`` family.

    Parameters
    ----------
    x : Tensor ``[..., K]``, float16 / bfloat16 / float32
    weight : Tensor ``[N, K]``, ``x``'s dtype (the layout of ``nn.Linear.weight``)
    bias : Tensor ``[N]``, optional
    backend : str
        As for :func:`gemm`.

    Returns
    -------
    Tensor ``[..., N]`` of ``x.dtype``.

    Examples
    --------
    >>> layer = torch.nn.Linear(4096, 14336, bias=False, dtype=torch.bfloat16, device="cuda")
    >>> y = infercore.ops.linear(x, layer.weight)
    """
    check_tensor("x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    check_tensor("weight", weight, ndim=2, dtypes=FLOAT_DTYPES)
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape [N, K] with K = x.shape[-1] = {x.shape[-1]}, "
            f"got {tuple(weight.shape)}"
        )
    if weight.dtype != x.dtype:
        raise TypeError(f"weight must have x's dtype {_name(x.dtype)}; got {_name(weight.dtype)}")
    y = gemm(x.reshape(-1, x.shape[-1]), weight.t(), bias=bias, backend=backend)
    return y.view(*x.shape[:-1], weight.shape[0])
