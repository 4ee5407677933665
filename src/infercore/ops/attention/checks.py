"""Argument checks shared by the attention and KV-cache ops.

Two kinds: *shape checks* (types, dtypes, shapes, devices: no device work) and *value
checks* (contents of index tensors: monotone ``cu_seqlens``, ``seq_lens`` within the
block table, block ids and slots in range), which read device tensors and so cost one
host synchronization. Both run by default; ``skip_checks=True`` skips both on hot paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from infercore.ops.common import FLOAT_DTYPES, check_same_device, check_tensor
from infercore.registry import compute_capability

__all__ = [
    "FP8_DTYPE",
    "HEAD_DIMS",
    "check_cache_pair",
    "check_out",
    "check_positive",
    "check_scalar_options",
    "check_seqlen_bound",
    "check_values",
    "kv_scale_tensor",
    "num_kv_groups",
]

#: Head dims every attention op accepts (kernels pad to the next power of two with masks).
HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 256)
#: The 8-bit KV-cache format: e4m3, finite-only (max 448), values stored as ``x / scale``.
FP8_DTYPE = torch.float8_e4m3fn
INDEX_DTYPE = torch.int32


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_head_dim(name: str, head_dim: int) -> None:
    if head_dim not in HEAD_DIMS:
        allowed = ", ".join(map(str, HEAD_DIMS))
        raise ValueError(f"{name} has head_dim {head_dim}; supported head dims are {allowed}")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {list(a.shape)} and "
            f"{list(b.shape)}"
        )


def num_kv_groups(num_heads: int, num_kv_heads: int, kv_name: str) -> int:
    """Query heads per KV head; ``ValueError`` unless ``num_heads % num_kv_heads == 0``."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(
            f"q has {num_heads} heads, which is not a multiple of the {num_kv_heads} KV heads of "
            f"{kv_name} (num_heads % num_kv_heads must be 0)"
        )
    return num_heads // num_kv_heads


def check_query(q: torch.Tensor) -> None:
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_head_dim("q", q.shape[2])


def check_index(name: str, t: object, shape: tuple[int, ...] | None, ndim: int = 1) -> torch.Tensor:
    """An int32 index tensor of ``ndim`` dims, and of ``shape`` when given."""
    check_tensor(name, t, ndim=ndim, dtypes=(INDEX_DTYPE,))
    if shape is not None and _shape(t) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    return t


def check_cache_pair(
    k_cache: object, v_cache: object, head_dim: int | None, *, value_dtype: torch.dtype | None
) -> None:
    """``k_cache``/``v_cache``: equal 4-d shapes ``[num_blocks, block_size, num_kv_heads,
    head_dim]``, one dtype (``value_dtype`` or float8_e4m3fn), unit stride in the last dim."""
    allowed = (*FLOAT_DTYPES, FP8_DTYPE)
    check_tensor("k_cache", k_cache, ndim=4, dtypes=allowed)
    check_tensor("v_cache", v_cache, ndim=4, dtypes=allowed)
    check_same_shape("k_cache", k_cache, "v_cache", v_cache)
    if k_cache.dtype != v_cache.dtype:
        raise TypeError(
            f"k_cache and v_cache must share a dtype, got {k_cache.dtype} and {v_cache.dtype}"
        )
    if value_dtype is not None and k_cache.dtype not in (value_dtype, FP8_DTYPE):
        raise TypeError(
            f"k_cache must have the dtype of q ({value_dtype}) or {FP8_DTYPE}, got {k_cache.dtype}"
        )
    if head_dim is not None and k_cache.shape[3] != head_dim:
        raise ValueError(
            f"k_cache has head_dim {k_cache.shape[3]}, q has {head_dim}: they must be equal"
        )
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(3) != 1:
            raise ValueError(
                f"{name} must have unit stride in its last dim, got strides {t.stride()}"
            )


def check_out(
    out: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> None:
    check_tensor("out", out, ndim=len(shape), dtypes=(dtype,))
    if _shape(out) != shape:
        raise ValueError(f"out must have shape {list(shape)}, got {list(out.shape)}")
    if out.device != device:
        raise ValueError(f"out is on {out.device}, q on {device}: they must be on one device")
    if out.stride(-1) != 1:
        raise ValueError(f"out must have unit stride in its last dim, got strides {out.stride()}")


def check_positive(name: str, value: object, kind: type, *, allow_none: bool = True) -> None:
    """``value`` is a positive finite ``kind`` (``float`` also takes ints), or ``None``."""
    if value is None and allow_none:
        return
    numeric = (int,) if kind is int else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, numeric)
        or not (math.isfinite(value) and value > 0)
    ):
        what = "an int >= 1" if kind is int else "a positive finite number"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")


def check_scalar_options(scale: object, sliding_window: object, softcap: object) -> None:
    check_positive("scale", scale, float)
    check_positive("sliding_window", sliding_window, int)
    check_positive("softcap", softcap, float)


def check_seqlen_bound(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def kv_scale_tensor(name: str, scale: object, device: torch.device) -> torch.Tensor | None:
    """``None``, a positive float, or a one-element float32 tensor -> ``None`` or ``[1]`` tensor.

    Floats become a device tensor by a fill (no host-to-device copy), so this is safe
    under CUDA-graph capture.
    """
    if scale is None:
        return None
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1 or scale.dtype != torch.float32:
            raise ValueError(
                f"{name} must be a float or a one-element float32 tensor, got "
                f"{str(scale.dtype).removeprefix('torch.')}{list(scale.shape)}"
            )
        if scale.device != device:
            raise ValueError(
                f"{name} is on {scale.device}, q on {device}: they must be on one device"
            )
        return scale.reshape(1)
    check_positive(name, scale, float, allow_none=False)
    return torch.full((1,), float(scale), dtype=torch.float32, device=device)


def check_devices(**tensors: torch.Tensor | None) -> None:
    check_same_device(**{n: t for n, t in tensors.items() if t is not None})


def fp8_reasons(kv_dtype: torch.dtype, device: torch.device) -> list[str]:
    """Why a float8 cache cannot be converted by Triton kernels on ``device`` (if it cannot)."""
    if kv_dtype != FP8_DTYPE or device.type != "cuda":
        return []
    cc = compute_capability(device)
    if cc is not None and cc < (8, 9):
        return [f"float8 KV caches need compute capability >= 8.9, device has {cc[0]}.{cc[1]}"]
    return []


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


Conditions = list[tuple[torch.Tensor, Callable[[], str]]]


def check_values(device: torch.device, conditions: Conditions) -> None:
    """Raise ``ValueError`` with the message of the first condition that is false.

    ``conditions`` pairs a 0-d bool tensor (true = fine) with a function building the error
    message (called only on failure). All conditions are read in one host transfer.
    """
    if not conditions:
        return
    if _capturing(device):
        raise ValueError(
            "value checks read index tensors from the device, which CUDA-graph capture forbids: "
            "pass skip_checks=True under capture (or use PagedAttentionWrapper)"
        )
    flags = torch.stack([c.to(device, non_blocking=True) for c, _ in conditions]).tolist()
    for ok, (_, message) in zip(flags, conditions, strict=True):
        if not ok:
            raise ValueError(message())


def cu_seqlens_conditions(
    name: str, cu: torch.Tensor, total: int, max_name: str, max_len: int
) -> Conditions:
    """``cu`` starts at 0, never decreases, ends at ``total``, with no step above ``max_len``."""
    lens = cu[1:] - cu[:-1]
    return [
        (cu[0] == 0, lambda: f"{name} must start at 0, got {cu[0].item()}"),
        (
            (lens >= 0).all(),
            lambda: f"{name} must be non-decreasing; it decreases at index "
            f"{int(torch.nonzero(lens < 0)[0, 0]) + 1}: {cu.tolist()[:16]}",
        ),
        (
            cu[-1] == total,
            lambda: f"{name}[-1] must equal the number of packed tokens ({total}), "
            f"got {cu[-1].item()}",
        ),
        (
            (lens <= max_len).all(),
            lambda: f"{max_name}={max_len} is below the longest sequence in {name} "
            f"({lens.max().item()})",
        ),
    ]


def paged_conditions(
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_lens: torch.Tensor | None,
    num_blocks: int | None,
    block_size: int,
) -> Conditions:
    """``seq_lens`` within ``[query_lens, block-table capacity]``; used block ids in
    ``[0, num_blocks)`` (not checked when ``num_blocks`` is ``None``)."""
    capacity = block_tables.shape[1] * block_size

    def first(bad: torch.Tensor) -> int:
        return int(torch.nonzero(bad)[0, 0])

    conds = [
        (
            (seq_lens >= 0).all(),
            lambda: f"seq_lens must be >= 0, got seq_lens[{first(seq_lens < 0)}] = "
            f"{seq_lens[first(seq_lens < 0)].item()}",
        ),
        (
            (seq_lens <= capacity).all(),
            lambda: f"seq_lens[{first(seq_lens > capacity)}] = "
            f"{seq_lens[first(seq_lens > capacity)].item()} exceeds the block table's capacity "
            f"block_tables.shape[1] * block_size = {block_tables.shape[1]} * {block_size} = "
            f"{capacity}",
        ),
    ]
    if query_lens is not None:
        conds.append((
            (seq_lens >= query_lens).all(),
            lambda: f"seq_lens[{first(seq_lens < query_lens)}] = "
            f"{seq_lens[first(seq_lens < query_lens)].item()} is below that sequence's query "
            f"length {query_lens[first(seq_lens < query_lens)].item()}: seq_lens counts the new "
            "tokens, whose K/V must already be in the cache",
        ))
    if num_blocks is None:
        return conds
    used_blocks = (seq_lens.clamp(0, capacity) + block_size - 1) // block_size
    cols = torch.arange(block_tables.shape[1], device=block_tables.device)
    out_of_range = (block_tables < 0) | (block_tables >= num_blocks)
    bad = (cols[None, :] < used_blocks[:, None]) & out_of_range

    def bad_block() -> str:
        i, j = (int(x) for x in torch.nonzero(bad)[0])
        return (
            f"block_tables[{i}, {j}] = {block_tables[i, j].item()} is not a block of k_cache "
            f"(num_blocks = {num_blocks}) yet seq_lens[{i}] = {seq_lens[i].item()} uses it"
        )

    conds.append((~bad.any(), bad_block))
    return conds
