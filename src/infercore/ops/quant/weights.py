"""Weight-only quantization: the :class:`QuantizedWeight` format, quantize and dequantize.

Packing (a weight ``w [N, K]`` = ``[out_features, in_features]``, as ``nn.Linear`` stores it)
--------------------------------------------------------------------------------------------
``qweight`` keeps the row-major ``[N, K]`` order, so one output channel's values are
contiguous along K (the dequant-GEMM kernels stream rows):

- ``int4``: ``uint8 [N, K // 2]``, two values per byte along K: byte ``(n, j)`` holds
  ``k = 2j`` in its low nibble and ``k = 2j + 1`` in its high nibble. Values are unsigned
  ``u`` in ``[0, 15]``; the zero point is 8 when symmetric (``u = q + 8``, ``q`` in
  ``[-8, 7]``), else ``zeros``.
- ``int8``: ``int8 [N, K]`` holding ``q`` in ``[-127, 127]`` when symmetric (zero point 0);
  ``uint8 [N, K]`` holding ``u`` in ``[0, 255]`` with ``zeros`` when asymmetric.
- ``fp8``: ``float8_e4m3fn [N, K]`` (symmetric only).

``scales`` are ``[K // group_size, N]`` (one row per group of K, output channels
contiguous: the kernels load one coalesced row of scales per K tile) in the weight's
floating dtype; ``zeros`` (asymmetric only) are ``uint8 [K // group_size, N]`` integer zero
points. ``group_size == K`` means one scale per output channel. Dequantization is

    w[n, k] = (u[n, k] - zero[g, n]) * scales[g, n],   g = k // group_size

(for fp8, ``w = float(q) * scales``). This is the AWQ/GPTQ arithmetic; their checkpoints
convert with :mod:`infercore.ops.quant.importers`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, check_tensor

__all__ = [
    "METHODS",
    "QuantizedWeight",
    "dequantize_weight",
    "pack_int4",
    "quantize_weight",
    "unpack_int4",
]

#: Weight formats of :func:`quantize_weight`.
METHODS = ("int8", "int4", "fp8")

# Largest magnitude of each symmetric grid and the top of each unsigned grid.
_SYM_QMAX = {"int8": 127, "int4": 7, "fp8": 448.0}
_ASYM_QMAX = {"int8": 255, "int4": 15}
_IMPLICIT_ZERO = {"int8": 0, "int4": 8, "fp8": 0}
_FP8 = torch.float8_e4m3fn


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A linear weight ``[N, K]`` stored quantized; the module docstring gives the packing.

    Attributes
    ----------
    method : str
        ``"int8"``, ``"int4"`` or ``"fp8"``.
    qweight : Tensor
        ``int4``: ``uint8 [N, K // 2]``; ``int8``: ``int8 [N, K]`` (symmetric) or
        ``uint8 [N, K]`` (asymmetric); ``fp8``: ``float8_e4m3fn [N, K]``. Contiguous.
    scales : Tensor ``[K // group_size, N]``, float16 / bfloat16 / float32, contiguous
    zeros : Tensor ``uint8 [K // group_size, N]`` or None
        Integer zero points (asymmetric); ``None`` means symmetric.
    group_size : int
        Number of consecutive K values sharing a scale; divides K (``K`` = per channel).
    """

    method: str
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        qw = check_tensor("qweight", self.qweight, ndim=2, dtypes=self._qweight_dtypes())
        if self.method == "int8" and (qw.dtype == torch.uint8) != (self.zeros is not None):
            raise TypeError(
                "int8 qweight must be int8 when symmetric (zeros=None) and uint8 with zeros; "
                f"got {_dtype_name(qw.dtype)} with zeros={'None' if self.zeros is None else 'set'}"
            )
        if not qw.is_contiguous():
            raise ValueError(
                f"qweight must be contiguous (packed rows), got strides {qw.stride()} for shape "
                f"{tuple(qw.shape)}; call .contiguous() before building a QuantizedWeight"
            )
        n, k = self.out_features, self.in_features
        if not isinstance(self.group_size, int) or self.group_size <= 0 or k % self.group_size:
            raise ValueError(
                f"group_size must be a positive divisor of in_features K={k}, "
                f"got {self.group_size!r}"
            )
        groups = k // self.group_size
        sc = check_tensor("scales", self.scales, ndim=2, dtypes=FLOAT_DTYPES)
        if tuple(sc.shape) != (groups, n) or not sc.is_contiguous():
            raise ValueError(
                f"scales must be a contiguous [K // group_size, N] = [{groups}, {n}] tensor, "
                f"got shape {tuple(sc.shape)} strides {sc.stride()}"
            )
        if self.zeros is not None:
            if self.method == "fp8":
                raise ValueError("fp8 weights are symmetric: zeros must be None")
            z = check_tensor("zeros", self.zeros, ndim=2, dtypes=(torch.uint8,))
            if tuple(z.shape) != (groups, n) or not z.is_contiguous():
                raise ValueError(
                    f"zeros must be a contiguous [K // group_size, N] = [{groups}, {n}] tensor, "
                    f"got shape {tuple(z.shape)} strides {z.stride()}"
                )
        devices = {t.device for t in (qw, sc, self.zeros) if t is not None}
        if len(devices) > 1:
            raise ValueError(f"qweight, scales and zeros must be on one device, got {devices}")

    def _qweight_dtypes(self) -> tuple[torch.dtype, ...]:
        if self.method == "int4":
            return (torch.uint8,)
        if self.method == "int8":
            return (torch.int8, torch.uint8)
        return (_FP8,)

    @property
    def out_features(self) -> int:
        """N, the number of output channels."""
        return self.qweight.shape[0]

    @property
    def in_features(self) -> int:
        """K, the reduction length (two int4 values per stored byte)."""
        return self.qweight.shape[1] * (2 if self.method == "int4" else 1)

    @property
    def num_groups(self) -> int:
        return self.in_features // self.group_size

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    @property
    def bits(self) -> int:
        return 4 if self.method == "int4" else 8

    @property
    def zero_point(self) -> int:
        """The zero point every group shares when symmetric (8 for int4, else 0)."""
        return _IMPLICIT_ZERO[self.method]

    @property
    def family(self) -> str:
        """The GEMM family that multiplies by this weight: ``gemm.w4a16`` or ``gemm.w8a16``."""
        return "gemm.w4a16" if self.method == "int4" else "gemm.w8a16"

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def nbytes(self) -> int:
        """Bytes of qweight, scales and zeros (what a GEMM must read)."""
        tensors = (self.qweight, self.scales, self.zeros)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def to(self, device: torch.device | str) -> QuantizedWeight:
        """A copy on ``device``."""
        zeros = None if self.zeros is None else self.zeros.to(device)
        return dataclasses.replace(
            self, qweight=self.qweight.to(device), scales=self.scales.to(device), zeros=zeros
        )

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return (
            f"QuantizedWeight({self.method}, [{self.out_features}, {self.in_features}], "
            f"group_size={self.group_size}, {kind}, scales={_dtype_name(self.scales.dtype)}, "
            f"device={self.device})"
        )


def pack_int4(u: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, K]`` values in ``[0, 15]`` -> ``uint8 [N, K // 2]``, low nibble = even k."""
    assert u.dtype == torch.uint8 and u.shape[-1] % 2 == 0
    return (u[..., 0::2] | (u[..., 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: ``uint8 [N, K // 2]`` -> ``uint8 [N, K]``."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(*packed.shape[:-1], -1)


def _per_element(t: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[G, N]`` per-group values -> ``[N, G * group_size]``."""
    return t.t().repeat_interleave(group_size, dim=1)


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight ``[N, K]`` a :class:`QuantizedWeight` stands for.

    Computed in float32 (exact: small integers times scales), then cast to ``dtype``.
    """
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a QuantizedWeight, got {type(qw).__name__}")
    if qw.method == "int4":
        values = unpack_int4(qw.qweight).float()
    else:
        values = qw.qweight.float()
    if qw.method != "fp8":
        zero = qw.zero_point if qw.zeros is None else _per_element(qw.zeros.float(), qw.group_size)
        values = values - zero
    return (values * _per_element(qw.scales.float(), qw.group_size)).to(dtype)


def _check_group_size(group_size: int | None, k: int) -> int:
    if group_size is None or group_size == -1:
        return k
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int, -1 or None, got {group_size!r}")
    if k % group_size:
        raise ValueError(
            f"group_size={group_size} must divide in_features (w.shape[1] = {k}); use a divisor "
            f"of {k}, or group_size=None for one scale per output channel"
        )
    return group_size


def _round_scale_up(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float32 scales to ``dtype`` without going below them (so no value clips)."""
    scale = scale.clamp(min=torch.finfo(dtype).tiny)
    stored = scale.to(dtype)
    low = stored.float() < scale
    if low.any():
        up = torch.nextafter(stored, torch.full_like(stored, torch.inf))
        stored = torch.where(low, up, stored)
    return stored


def quantize_weight(
    w: torch.Tensor,
    method: str = "int4",
    group_size: int | None = 128,
    symmetric: bool = True,
) -> QuantizedWeight:
    """Quantize a linear weight ``[N, K]`` with one scale per group of ``group_size`` along K.

    Round-to-nearest with the grid fitted to each group (absmax when symmetric, min/max
    with 0 included when asymmetric). Scales are stored in ``w.dtype`` and rounded up, so
    no value clips: every element's error is at most half its group's scale for int8 and
    int4, and ``2**-4 * |w| + 2**-10 * scale`` for fp8 (3 mantissa bits; subnormals).

    Parameters
    ----------
    w : Tensor ``[N, K]``, float16 / bfloat16 / float32, finite
    method : str
        ``"int4"`` (K even), ``"int8"`` or ``"fp8"`` (e4m3, symmetric only).
    group_size : int or None
        Divides K. ``None`` (or -1) means one group per output channel.
    symmetric : bool
        Symmetric grid (implicit zero point) or asymmetric with ``uint8`` zero points.

    Returns
    -------
    QuantizedWeight

    Examples
    --------
    >>> qw = infercore.ops.quantize_weight(linear.weight, "int4", group_size=128)
    >>> y = infercore.ops.quantized_linear(x, qw)
    """
    check_tensor("w", w, ndim=2, dtypes=FLOAT_DTYPES)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n, k = w.shape
    gs = _check_group_size(group_size, k)
    if method == "int4" and k % 2:
        raise ValueError(
            f"int4 packs two values per byte along K: w.shape[1] must be even, got {k}"
        )
    if method == "fp8" and not symmetric:
        raise ValueError("method='fp8' is symmetric only; got symmetric=False")
    wg = w.detach().float().reshape(n, k // gs, gs)
    if not torch.isfinite(wg).all():
        raise ValueError("w must be finite (it has NaN or Inf values)")
    zeros = None
    if symmetric:
        qmax = _SYM_QMAX[method]
        scale = _round_scale_up(wg.abs().amax(dim=-1) / qmax, w.dtype)
        scaled = wg / scale.float()[..., None]
        if method == "fp8":
            q = scaled.clamp(-qmax, qmax).to(_FP8)
        else:
            q = torch.round(scaled).clamp(-qmax - 1, qmax) + _IMPLICIT_ZERO[method]
            q = q.to(torch.uint8 if method == "int4" else torch.int8)
    else:
        qmax = _ASYM_QMAX[method]
        lo = wg.amin(dim=-1).clamp(max=0)
        hi = wg.amax(dim=-1).clamp(min=0)
        scale = _round_scale_up((hi - lo) / qmax, w.dtype)
        zero = torch.round(-lo / scale.float()).clamp(0, qmax)
        q = (torch.round(wg / scale.float()[..., None]) + zero[..., None]).clamp(0, qmax)
        q = q.to(torch.uint8)
        zeros = zero.to(torch.uint8).t().contiguous()
    q = q.reshape(n, k)
    if method == "int4":
        q = pack_int4(q)
    return QuantizedWeight(method, q.contiguous(), scale.t().contiguous(), zeros, gs)
