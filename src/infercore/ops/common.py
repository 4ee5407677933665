"""Helpers shared by op families: the Triton backend base and argument checks."""

from __future__ import annotations

from typing import ClassVar

import torch

from infercore.registry import Backend, triton_interpret

__all__ = ["FLOAT_DTYPES", "TensorInputs", "TritonBackend", "check_same_device", "check_tensor"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TritonBackend(Backend):
    """A backend whose kernels are Triton programs.

    Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before
    the kernels were imported (the interpreter; slow, for testing).
    """

    requires: ClassVar[tuple[str, ...]] = ("triton",)
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    dtypes: ClassVar[tuple[torch.dtype, ...] | None] = FLOAT_DTYPES

    def supported_devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if triton_interpret() else ("cuda",)

    def _compute_environment_reasons(self) -> list[str]:
        reasons = super()._compute_environment_reasons()
        if reasons and not torch.cuda.is_available():
            reasons[-1] += " (TRITON_INTERPRET=1 runs Triton kernels on CPU tensors)"
        return reasons


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
    min_ndim: int | None = None,
) -> torch.Tensor:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``t`` is a fitting tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(t.shape)}"
            )
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}"
        )
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        got = str(t.dtype).removeprefix("torch.")
        raise TypeError(f"{name} must have dtype {allowed}; got {got}")
    return t


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` unless all tensors are on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device: {listing}")


class TensorInputs:
    """Base of the op-inputs dataclasses: ``device`` and ``dtype`` are those of the first
    field (the op's primary tensor), which is what backends' capability checks read."""

    __slots__ = ()
    __match_args__: tuple[str, ...]

    @property
    def device(self) -> torch.device:
        return getattr(self, self.__match_args__[0]).device

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, self.__match_args__[0]).dtype
