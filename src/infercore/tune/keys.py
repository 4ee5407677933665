"""Tuning keys: which tuned choice applies to a call.

A key names the device (name and compute capability), the family, the dtypes and a
*shape bucket* of the inputs: sizes that vary call to call (GEMM rows, decode batch and
context) are rounded up to a power of two, sizes fixed by the model (N, K, heads,
head_dim) are kept exact. Families tune only where a shape function is registered here
(:func:`register_shape_key`); built in: ``gemm`` and ``attention.decode``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from infercore.registry import compute_capability

__all__ = ["device_key", "pow2_bucket", "register_shape_key", "shape_key", "tune_key"]

#: family -> function(inputs) -> short text of the dtypes and shape bucket.
_SHAPE_KEYS: dict[str, Callable[[Any], str]] = {}


def pow2_bucket(n: int) -> int:
    """The power of two at or above ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


@functools.cache
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def device_key(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3 sm90"`` for a CUDA device, the device type otherwise."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = compute_capability(device)
    return f"{_cuda_name(index)} sm{major}{minor}"


def register_shape_key(family: str, fn: Callable[[Any], str]) -> None:
    """Make ``family`` tunable: ``fn(inputs)`` returns its dtypes and shape bucket as text."""
    _SHAPE_KEYS[family] = fn


def shape_key(family: str, inputs: Any) -> str | None:
    fn = _SHAPE_KEYS.get(family)
    return None if fn is None else fn(inputs)


def tune_key(family: str, inputs: Any) -> str | None:
    """``"device|family|dtypes and shape bucket"``, or ``None`` for families not tuned."""
    shape = shape_key(family, inputs)
    if shape is None:
        return None
    return f"{device_key(inputs.device)}|{family}|{shape}"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gemm_shape(inputs: Any) -> str:
    a, b = inputs.a, inputs.b
    layout = "bT" if b.stride(0) == 1 and b.shape[1] > 1 else "b"
    return (f"{_dtype(a.dtype)}->{_dtype(inputs.out.dtype)} M<={pow2_bucket(a.shape[0])} "
            f"N={b.shape[1]} K={a.shape[1]} {layout}")


def _decode_shape(inputs: Any) -> str:
    q, k_cache = inputs.q, inputs.k_cache
    tables = inputs.block_tables
    capacity = tables.shape[1] * k_cache.shape[1] if tables is not None else k_cache.shape[0]
    flags = "".join(f for f, on in (("w", inputs.sliding_window is not None),
                                    ("s", inputs.softcap is not None)) if on)
    return (f"{_dtype(q.dtype)}/kv {_dtype(k_cache.dtype)} batch<={pow2_bucket(q.shape[0])} "
            f"heads={q.shape[1]}/{k_cache.shape[2]} d={q.shape[2]} "
            f"ctx<={pow2_bucket(capacity)} page={k_cache.shape[1]}{' ' + flags if flags else ''}")


register_shape_key("gemm", _gemm_shape)
register_shape_key("attention.decode", _decode_shape)
