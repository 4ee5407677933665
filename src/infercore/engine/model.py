"""The Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3) built from infercore ops.

One forward computes the packed new tokens of a step (prefill chunks and decodes alike):
each layer writes their K/V into the paged cache (:func:`infercore.ops.kv.write`) and
attends through the step's :class:`~infercore.ops.attention.PagedAttentionWrapper`
(family ``attention.paged``, planned once per step by the runner). Weights follow the
merged layout of the loader: one ``[q + 2 kv, hidden]`` QKV projection and one
``[2 * intermediate, hidden]`` gate-up projection per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore import ops
from infercore.engine.arch import ModelArgs
from infercore.ops.attention import PagedAttentionWrapper
from infercore.ops.rope.cache import cos_sin_cache_from_config

__all__ = ["LayerWeights", "LlamaModel", "ModelWeights"]


@dataclass
class LayerWeights:
    """One decoder layer (``nn.Linear`` layout ``[out, in]``)."""

    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [q_size + 2 * kv_size, hidden]
    qkv_bias: torch.Tensor | None  # [q_size + 2 * kv_size]
    o_proj: torch.Tensor  # [hidden, q_size]
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]
    q_norm: torch.Tensor | None = None  # [head_dim] (Qwen3)
    k_norm: torch.Tensor | None = None  # [head_dim] (Qwen3)


@dataclass
class ModelWeights:
    embed: torch.Tensor  # [vocab, hidden]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [vocab, hidden] (the embedding when tied)


class LlamaModel:
    """A Llama-family model over a paged KV cache.

    Parameters
    ----------
    args : ModelArgs
        The model's shape (under tensor parallelism, a rank's share of the heads and of
        the intermediate size: see :mod:`infercore.engine.parallel`).
    weights : ModelWeights
        On one device, all of one floating dtype.
    """

    def __init__(self, args: ModelArgs, weights: ModelWeights) -> None:
        self.args = args
        self.weights = weights
        self.device = weights.embed.device
        self.dtype = weights.embed.dtype
        self.cos_sin_cache = cos_sin_cache_from_config(
            args.hf_config, dtype=torch.float32, device=self.device
        )
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        slot_mapping: torch.Tensor,
        attention: PagedAttentionWrapper,
        logits_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of a step's tokens.

        Parameters
        ----------
        input_ids, positions, slot_mapping : Tensor ``[T]``, int64
            The step's packed tokens, their positions and KV-cache slots (``-1`` skips).
        attention : PagedAttentionWrapper
            Planned for this step (its token count is ``T`` or, for a CUDA-graph wrapper,
            at most ``T``).
        logits_indices : Tensor ``[B]``, int64, optional
            Tokens whose logits are computed (each request's last); default all.

        Returns
        -------
        Tensor ``[B, vocab]`` (or ``[T, vocab]``) of the model dtype.
        """
        a = self.args
        w = self.weights
        eps = a.rms_norm_eps
        t = input_ids.shape[0]
        h = torch.nn.functional.embedding(input_ids, w.embed)
        residual: torch.Tensor | None = None
        q_end, k_end = a.q_size, a.q_size + a.kv_size
        for layer, (k_cache, v_cache) in zip(w.layers, self.kv_caches, strict=True):
            if residual is None:
                residual = h
                x = ops.rms_norm(h, layer.input_norm, eps)
            else:
                x, residual = ops.fused_add_rms_norm(h, residual, layer.input_norm, eps)
            qkv = ops.linear(x, layer.qkv, layer.qkv_bias)
            q = qkv[:, :q_end].view(t, a.num_heads, a.head_dim)
            k = qkv[:, q_end:k_end].view(t, a.num_kv_heads, a.head_dim)
            v = qkv[:, k_end:].view(t, a.num_kv_heads, a.head_dim)
            if layer.q_norm is not None:
                q = ops.rms_norm(q, layer.q_norm, eps)
                k = ops.rms_norm(k, layer.k_norm, eps)
            ops.rotary(q, k, positions, self.cos_sin_cache)
            ops.kv.write(k, v, k_cache, v_cache, slot_mapping, skip_checks=True)
            o = attention.run(q, k_cache, v_cache, sliding_window=a.sliding_window,
                              skip_checks=True)
            h = self.reduce(ops.linear(o.view(t, a.q_size), layer.o_proj))
            x, residual = ops.fused_add_rms_norm(h, residual, layer.post_norm, eps)
            h = self.reduce(ops.linear(ops.silu_and_mul(ops.linear(x, layer.gate_up)),
                                       layer.down))
        assert residual is not None, "a model has at least one layer"
        if logits_indices is not None:
            h, residual = h[logits_indices], residual[logits_indices]
        x, _ = ops.fused_add_rms_norm(h, residual, w.norm, eps)
        return self.lm_head(x)

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """Sum of a row-parallel projection over the tensor-parallel ranks (one rank:
        the tensor itself)."""
        return partial

    def lm_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, vocab]`` of final hidden states ``[N, hidden]``."""
        return ops.linear(x, self.weights.lm_head)
