"""Weights from a local Hugging Face directory: ``config.json`` plus safetensors files
(one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``).

HF names map to the engine's merged layout: ``q_proj``/``k_proj``/``v_proj`` are
concatenated into one QKV projection (their biases too), ``gate_proj``/``up_proj`` into
one gate-up projection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from infercore.engine.arch import ModelArgs
from infercore.engine.model import LayerWeights, ModelWeights

__all__ = ["load_config", "load_weights"]


def load_config(path: str | Path) -> ModelArgs:
    """Parse ``path/config.json``.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a directory with a ``config.json``.
    ValueError
        Unsupported architecture or missing fields (see :meth:`ModelArgs.from_hf_config`).
    """
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: pass a local Hugging Face model directory or "
            "'tiny-random'"
        )
    return ModelArgs.from_hf_config(json.loads(file.read_text()), source=str(file))


def _tensor_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: path / file for name, file in weight_map.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors files (only safetensors load)")
    names: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            names.update(dict.fromkeys(f.keys(), file))
    return names


def load_weights(
    path: str | Path, args: ModelArgs, *, dtype: torch.dtype, device: torch.device | str
) -> ModelWeights:
    """Read, merge and convert the weights of the model ``args`` describes.

    Returns
    -------
    ModelWeights
        Every tensor contiguous, of ``dtype`` on ``device``.

    Raises
    ------
    ValueError
        A tensor the architecture needs is missing or has the wrong shape (the message
        names it and the directory).
    """
    from safetensors import safe_open

    path = Path(path)
    files = _tensor_files(path)
    handles: dict[Path, object] = {}

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        file = files.get(name)
        if file is None:
            raise ValueError(f"{path}: missing weight {name!r} (expected shape {list(shape)})")
        if file not in handles:
            handles[file] = safe_open(str(file), framework="pt")
        t = handles[file].get_tensor(name)  # type: ignore[attr-defined]
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{path}: weight {name!r} has shape {list(t.shape)}, expected {list(shape)}"
            )
        return t.to(device=device, dtype=dtype)

    return build_weights(args, get)


def build_weights(
    args: ModelArgs, get: Callable[[str, tuple[int, ...]], torch.Tensor]
) -> ModelWeights:
    """Assemble :class:`ModelWeights` from HF-named tensors: ``get(name, shape)`` returns
    the tensor ``name`` of that shape (on the target device and dtype)."""
    a = args
    h, inter, d = a.hidden_size, a.intermediate_size, a.head_dim
    layers = []
    for i in range(a.num_layers):
        p = f"model.layers.{i}."
        attn = p + "self_attn."
        qkv = torch.cat([get(attn + "q_proj.weight", (a.q_size, h)),
                         get(attn + "k_proj.weight", (a.kv_size, h)),
                         get(attn + "v_proj.weight", (a.kv_size, h))])
        bias = None
        if a.qkv_bias:
            bias = torch.cat([get(attn + "q_proj.bias", (a.q_size,)),
                              get(attn + "k_proj.bias", (a.kv_size,)),
                              get(attn + "v_proj.bias", (a.kv_size,))])
        layers.append(LayerWeights(
            input_norm=get(p + "input_layernorm.weight", (h,)).contiguous(),
            qkv=qkv,
            qkv_bias=bias,
            o_proj=get(attn + "o_proj.weight", (h, a.q_size)).contiguous(),
            post_norm=get(p + "post_attention_layernorm.weight", (h,)).contiguous(),
            gate_up=torch.cat([get(p + "mlp.gate_proj.weight", (inter, h)),
                               get(p + "mlp.up_proj.weight", (inter, h))]),
            down=get(p + "mlp.down_proj.weight", (h, inter)).contiguous(),
            q_norm=get(attn + "q_norm.weight", (d,)).contiguous() if a.qk_norm else None,
            k_norm=get(attn + "k_norm.weight", (d,)).contiguous() if a.qk_norm else None,
        ))
    embed = get("model.embed_tokens.weight", (a.vocab_size, h)).contiguous()
    lm_head = embed if a.tie_word_embeddings else get("lm_head.weight", (a.vocab_size, h))
    return ModelWeights(embed=embed, layers=layers, norm=get("model.norm.weight", (h,)),
                        lm_head=lm_head.contiguous())
