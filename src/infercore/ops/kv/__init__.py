"""KV-cache ops: scatter new tokens' keys and values into paged caches (``kv.write``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.attention import checks as C
from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_tensor
from infercore.registry import resolve

__all__ = ["KVWriteInputs", "write"]


@dataclass(frozen=True, slots=True)
class KVWriteInputs(TensorInputs):
    """What ``kv.write`` backends are asked to support."""

    k: torch.Tensor
    k_cache: torch.Tensor

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.k_cache.dtype

    @property
    def head_dim(self) -> int:
        return self.k.shape[-1]


def _check_write(k, v, k_cache, v_cache, slot_mapping) -> None:
    check_tensor("k", k, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("v", v, ndim=3, dtypes=(k.dtype,))
    C.check_same_shape("k", k, "v", v)
    C.check_cache_pair(k_cache, v_cache, None, value_dtype=None)
    if tuple(k.shape[1:]) != tuple(k_cache.shape[2:]):
        raise ValueError(
            f"k has shape {list(k.shape)}: its [num_kv_heads, head_dim] must match k_cache's "
            f"{list(k_cache.shape[2:])}"
        )
    check_tensor("slot_mapping", slot_mapping, ndim=1, dtypes=(torch.int64,))
    if slot_mapping.shape[0] != k.shape[0]:
        raise ValueError(
            f"slot_mapping has {slot_mapping.shape[0]} entries, k has {k.shape[0]} tokens: "
            "they must match"
        )
    C.check_devices(k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)


def _slot_conditions(slot_mapping: torch.Tensor, num_slots: int):
    bad = (slot_mapping < -1) | (slot_mapping >= num_slots)
    used = slot_mapping[slot_mapping >= 0]
    distinct = torch.unique(used).numel() == used.numel()

    def where_bad() -> str:
        i = int(torch.nonzero(bad)[0, 0])
        return (f"slot_mapping[{i}] = {slot_mapping[i].item()} is neither -1 (skip) nor a slot "
                f"of the cache (num_blocks * block_size = {num_slots})")

    return [
        (~bad.any(), where_bad),
        (torch.tensor(distinct), lambda: "slot_mapping names a slot twice: writes would race"),
    ]


def _write(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale, skip_checks, backend) -> None:
    if not skip_checks:
        num_slots = k_cache.shape[0] * k_cache.shape[1]
        C.check_values(k.device, _slot_conditions(slot_mapping, num_slots))
    resolve("kv.write", KVWriteInputs(k, k_cache), backend).run(
        k, v, k_cache, v_cache, slot_mapping, k_scale=k_scale, v_scale=v_scale)


@torch.library.custom_op("infercore::kv_write", mutates_args=("k_cache", "v_cache"))
def _write_op(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              slot_mapping: torch.Tensor, k_scale: torch.Tensor | None,
              v_scale: torch.Tensor | None, skip_checks: bool, backend: str) -> None:
    _write(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale, skip_checks, backend)


@_write_op.register_fake
def _(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale, skip_checks, backend) -> None:
    return None


def write(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    skip_checks: bool = False,
    backend: str = "auto",
) -> None:
    """Scatter new tokens' keys and values into paged caches, in place.

    Token ``t`` goes to block ``slot_mapping[t] // block_size``, offset
    ``slot_mapping[t] % block_size``; slot ``-1`` is skipped (padding). With a scale the
    cache stores ``x / scale`` (float32 division, then one rounding); float8_e4m3fn caches
    saturate to +-448.

    Parameters
    ----------
    k, v : Tensor ``[num_tokens, num_kv_heads, head_dim]``, float16 / bfloat16 / float32
        Token and head strides are free (views into a fused QKV output work).
    k_cache, v_cache : Tensor ``[num_blocks, block_size, num_kv_heads, head_dim]``
        Any float dtype or float8_e4m3fn; any block/slot/head strides, unit stride in the
        last dim.
    slot_mapping : Tensor ``[num_tokens]``, int64
        Distinct slots ``block * block_size + offset``, or ``-1``.
    k_scale, v_scale : float or Tensor ``[1]`` float32, optional
    skip_checks : bool
        Skip argument checks, including the slot checks that synchronize.
    backend : str
        ``"auto"`` or a backend of ``kv.write`` (``"triton"``, ``"reference"``).

    Examples
    --------
    >>> infercore.ops.kv.write(k, v, k_cache, v_cache, slot_mapping)

    Also ``torch.ops.infercore.kv_write`` (mutates ``k_cache`` and ``v_cache``).
    """
    if not skip_checks:
        _check_write(k, v, k_cache, v_cache, slot_mapping)
    k_scale = C.kv_scale_tensor("k_scale", k_scale, k.device)
    v_scale = C.kv_scale_tensor("v_scale", v_scale, k.device)
    args = (k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale, skip_checks, backend)
    if torch.compiler.is_compiling():
        torch.ops.infercore.kv_write(*args)
    else:
        _write(*args)
