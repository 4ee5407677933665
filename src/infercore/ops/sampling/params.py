"""Argument checks shared by the sampling ops, without host-device synchronization.

Per-row parameters are a Python number or a ``[batch]`` tensor on the logits' device.
Numbers are always range-checked. Tensors are range-checked when they live on the CPU;
checking a GPU tensor would synchronize with the device, so that happens only when the
environment variable ``INFERCORE_SAMPLING_CHECKS=1`` is set (a debugging aid).
Out-of-range values that go unchecked never produce an id outside the vocabulary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

from infercore.ops.sampling.filtering import RowParam

__all__ = [
    "CHECK_ENV",
    "check_count",
    "check_row_param",
    "check_rows",
    "finite_at_least_zero",
    "in_closed_unit",
    "in_open_closed_unit",
    "resolve_seeds",
]

CHECK_ENV = "INFERCORE_SAMPLING_CHECKS"

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _checks_values(t: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return t.device.type == "cpu" or os.environ.get(CHECK_ENV, "0") not in ("", "0")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_rows(name: str, t: torch.Tensor, batch: int, device: torch.device) -> None:
    """Raise ``ValueError`` unless ``t`` has shape ``[batch]`` and lives on ``device``."""
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a number or a tensor of shape [batch] = [{batch}], "
            f"got shape {tuple(t.shape)}"
        )
    if t.device != device:
        raise ValueError(f"{name} must be on the logits' device {device}, got {t.device}")


def check_row_param(
    name: str,
    value: object,
    *,
    batch: int,
    device: torch.device,
    integer: bool,
    ok: Callable[[object], object] | None = None,
    allowed: str = "",
) -> RowParam:
    """Validate a per-row parameter; ``ok(v)`` (elementwise on tensors) says which values
    are allowed and ``allowed`` describes them in the message."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, torch.Tensor):
        check_rows(name, value, batch, device)
        fits = value.dtype in _INT_DTYPES if integer else value.is_floating_point()
        if not fits:
            want = "an integer dtype" if integer else "a floating dtype"
            raise TypeError(f"{name} must have {want}, got {_dtype_name(value.dtype)}")
        if ok is not None and _checks_values(value):
            bad = ~torch.as_tensor(ok(value))
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"{name} must be {allowed}; row {row} holds {value[row].item()!r}"
                )
        return value
    number_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types):
        raise TypeError(
            f"{name} must be {kind} or a [batch] tensor, got {type(value).__name__}"
        )
    if ok is not None and not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_count(name: str, value: object, low: int, high: int) -> int:
    """Raise unless ``value`` is an int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def finite_at_least_zero(v):
    return (v >= 0) & (v < math.inf)


def in_open_closed_unit(v):
    return (v > 0) & (v <= 1)


def in_closed_unit(v):
    return (v >= 0) & (v <= 1)


def resolve_seeds(seeds: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """int64 ``[batch]`` seeds: rows with a seed ``>= 0`` keep it; the others (all rows when
    ``seeds`` is None) get a fresh one from torch's default generator of ``device``."""
    fresh = torch.randint(0, 2**63 - 1, (batch,), device=device, dtype=torch.int64)
    if seeds is None:
        return fresh
    if not isinstance(seeds, torch.Tensor):
        raise TypeError(f"seeds must be an int64 tensor of shape [batch] or None, "
                        f"got {type(seeds).__name__}")
    check_rows("seeds", seeds, batch, device)
    if seeds.dtype != torch.int64:
        raise TypeError(f"seeds must have dtype int64, got {_dtype_name(seeds.dtype)}")
    return torch.where(seeds >= 0, seeds, fresh)
