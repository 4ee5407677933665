"""Cos/sin caches for :func:`infercore.ops.rotary`, from RoPE parameters or a HF config.

A cache is ``[max_position, rotary_dim]``: row ``p`` holds ``cos(p * inv_freq)`` in its
first half and ``sin(p * inv_freq)`` in its second, ``inv_freq`` being the
``rotary_dim / 2`` inverse frequencies of the chosen scaling. The frequencies and
angles are computed in float32 the way Hugging Face transformers computes them, so a
model sees the rotations it was trained with.

Supported scalings (``rope_type``, or the older key ``type``):

- ``"default"``: ``inv_freq[i] = base ** (-2 i / rotary_dim)``.
- ``"linear"``: positions divided by ``factor`` (same as ``inv_freq / factor``).
- ``"dynamic"`` (dynamic NTK): the base is stretched for the longest position the cache
  covers, ``base * (factor * max_position / original - (factor - 1)) **
  (rotary_dim / (rotary_dim - 2))`` when ``max_position > original``; a static cache
  uses that one base for every position (HF's value at ``seq_len = max_position``).
- ``"llama3"``: low frequencies divided by ``factor``, high ones kept, the band
  between interpolated (``low_freq_factor``, ``high_freq_factor``,
  ``original_max_position_embeddings``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["SCALING_TYPES", "build_cos_sin_cache", "cos_sin_cache_from_config", "rope_inv_freq"]

#: Values of ``rope_type`` these helpers understand.
SCALING_TYPES = ("default", "linear", "dynamic", "llama3")


def _scaling_type(scaling: Mapping[str, Any] | None) -> str:
    if scaling is None:
        return "default"
    if not isinstance(scaling, Mapping):
        raise TypeError(f"scaling must be a mapping or None, got {type(scaling).__name__}")
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type not in SCALING_TYPES:
        raise ValueError(
            f"rope scaling type {rope_type!r} is not supported; supported: "
            + ", ".join(SCALING_TYPES)
        )
    return rope_type


def _param(scaling: Mapping[str, Any], key: str, rope_type: str) -> float:
    value = scaling.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"rope scaling {rope_type!r} needs a positive number {key!r}, got {value!r}"
        )
    return float(value)


def _llama3(inv_freq: torch.Tensor, scaling: Mapping[str, Any]) -> torch.Tensor:
    factor = _param(scaling, "factor", "llama3")
    low = _param(scaling, "low_freq_factor", "llama3")
    high = _param(scaling, "high_freq_factor", "llama3")
    original = _param(scaling, "original_max_position_embeddings", "llama3")
    if not high > low:
        raise ValueError(
            f"rope scaling 'llama3' needs high_freq_factor > low_freq_factor, got {high} <= {low}"
        )
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen, high_freq_wavelen = original / low, original / high
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen <= low_freq_wavelen) & (wavelen >= high_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_inv_freq(
    rotary_dim: int,
    base: float = 10000.0,
    scaling: Mapping[str, Any] | None = None,
    *,
    max_position: int | None = None,
) -> torch.Tensor:
    """Inverse frequencies of a RoPE scaling, float32 ``[rotary_dim // 2]`` on the CPU.

    Parameters
    ----------
    rotary_dim : int
        Rotated features per head; positive and even.
    base : float
        ``rope_theta``.
    scaling : mapping, optional
        HF-style scaling parameters: ``rope_type`` (or ``type``) among
        :data:`SCALING_TYPES` plus that type's keys (``factor``, ...). ``None``: plain.
    max_position : int, optional
        Longest position the frequencies must serve; required by ``"dynamic"``.
    """
    if not isinstance(rotary_dim, int) or rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a positive even int, got {rotary_dim!r}")
    if not isinstance(base, (int, float)) or base <= 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    rope_type = _scaling_type(scaling)
    if rope_type == "dynamic":
        assert scaling is not None
        factor = _param(scaling, "factor", rope_type)
        original = _param(scaling, "original_max_position_embeddings", rope_type)
        if max_position is None:
            raise ValueError("rope scaling 'dynamic' needs max_position (the cache length)")
        if rotary_dim <= 2:
            raise ValueError(f"rope scaling 'dynamic' needs rotary_dim > 2, got {rotary_dim}")
        seq_len = max(max_position, original)
        base = base * (factor * seq_len / original - (factor - 1)) ** (
            rotary_dim / (rotary_dim - 2)
        )
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
    inv_freq = 1.0 / (base**exponents)
    if rope_type == "linear":
        assert scaling is not None
        inv_freq = inv_freq / _param(scaling, "factor", rope_type)
    elif rope_type == "llama3":
        assert scaling is not None
        inv_freq = _llama3(inv_freq, scaling)
    return inv_freq


def build_cos_sin_cache(
    rotary_dim: int,
    max_position: int,
    base: float = 10000.0,
    scaling: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``[max_position, rotary_dim]`` cos/sin cache that :func:`ops.rotary` takes.

    Parameters
    ----------
    rotary_dim : int
        Rotated features per head (``head_dim`` times the partial rotary factor); even.
    max_position : int
        Number of positions (rows); positions passed to ``rotary`` must be below it.
    base : float
        ``rope_theta``.
    scaling : mapping, optional
        See :func:`rope_inv_freq`.
    dtype, device
        Of the returned cache; angles are computed in float32 whatever ``dtype`` is.

    Returns
    -------
    Tensor ``[max_position, rotary_dim]``: ``cos`` in ``[:, :rotary_dim // 2]``,
    ``sin`` in ``[:, rotary_dim // 2:]``.

    Examples
    --------
    >>> cache = build_cos_sin_cache(128, 8192, 500000.0, {"rope_type": "llama3",
    ...     "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    ...     "original_max_position_embeddings": 8192}, device="cuda")
    """
    if not isinstance(max_position, int) or max_position <= 0:
        raise ValueError(f"max_position must be a positive int, got {max_position!r}")
    inv_freq = rope_inv_freq(rotary_dim, base, scaling, max_position=max_position)
    inv_freq = inv_freq.to(device)
    positions = torch.arange(max_position, dtype=torch.int64, device=inv_freq.device).float()
    angles = positions[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _rope_parameters(config: Any, layer_type: str | None) -> dict[str, Any]:
    params = _get(config, "rope_parameters")
    if params:
        nested = all(isinstance(v, Mapping) or v is None for v in params.values())
        if layer_type is not None:
            if layer_type not in params or not isinstance(params[layer_type], Mapping):
                keys = ", ".join(map(repr, params)) if nested else "none (not per layer)"
                raise ValueError(
                    f"layer_type={layer_type!r} is not in config.rope_parameters; "
                    f"layer types: {keys}"
                )
            params = params[layer_type]
        elif nested:
            raise ValueError(
                "config.rope_parameters is given per layer type ("
                + ", ".join(map(repr, params)) + "): pass layer_type="
            )
        return dict(params)
    if layer_type is not None:
        raise ValueError(f"layer_type={layer_type!r} given, but the config has no "
                         "per-layer rope_parameters")
    return dict(_get(config, "rope_scaling") or {})


def cos_sin_cache_from_config(
    config: Any,
    *,
    max_position: int | None = None,
    layer_type: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build the cos/sin cache a Hugging Face model config describes.

    Reads ``rope_parameters`` (transformers >= 5) when present, else ``rope_theta`` and
    ``rope_scaling`` (older configs); ``head_dim`` (or ``hidden_size //
    num_attention_heads``), ``partial_rotary_factor`` and ``max_position_embeddings``.

    Parameters
    ----------
    config : ``transformers.PretrainedConfig`` or mapping (a parsed ``config.json``)
    max_position : int, optional
        Cache rows. Default: ``max_position_embeddings``, times ``factor`` for
        ``"linear"`` and ``"dynamic"`` scaling (whose configs state the pre-training
        length there).
    layer_type : str, optional
        Selects one entry of per-layer ``rope_parameters`` (e.g. ``"sliding_attention"``).
    dtype, device
        Of the returned cache.

    Returns
    -------
    Tensor ``[max_position, rotary_dim]``, see :func:`build_cos_sin_cache`;
    ``rotary_dim`` is ``cache.shape[1]``.

    Examples
    --------
    >>> config = transformers.AutoConfig.from_pretrained("meta-llama/Llama-3.1-8B")
    >>> cache = cos_sin_cache_from_config(config, device="cuda")  # [131072, 128]
    """
    params = _rope_parameters(config, layer_type)
    rope_type = _scaling_type(params)
    base = params.get("rope_theta") or _get(config, "rope_theta") or 10000.0
    head_dim = _get(config, "head_dim")
    if not head_dim:
        hidden, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
        if not (hidden and heads):
            raise ValueError("config needs head_dim, or hidden_size and num_attention_heads")
        head_dim = hidden // heads
    partial = params.get("partial_rotary_factor") or _get(config, "partial_rotary_factor") or 1.0
    rotary_dim = int(head_dim * partial)
    config_max = _get(config, "max_position_embeddings")
    if rope_type in ("dynamic", "llama3") and not params.get("original_max_position_embeddings"):
        params["original_max_position_embeddings"] = (
            _get(config, "original_max_position_embeddings") or config_max
        )
    if max_position is None:
        if not config_max:
            raise ValueError("config has no max_position_embeddings: pass max_position=")
        factor = params.get("factor", 1.0) if rope_type in ("linear", "dynamic") else 1.0
        max_position = int(config_max * factor)
    return build_cos_sin_cache(rotary_dim, max_position, float(base), params, dtype=dtype,
                               device=device)
