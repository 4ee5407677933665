"""``apply_tensor_parallel``: shard a built Llama-family model in place.

The model code is not changed: its projections are replaced by parallel layers holding
slices of their weights, and the attention modules' head-count attributes are set to
the local counts. Modules are recognized by their children's names, as in HF
transformers' Llama, Mistral, Qwen2/3 and Phi-3:

- attention: ``q_proj``, ``k_proj``, ``v_proj`` (or a fused ``qkv_proj``) and ``o_proj``;
- MLP: ``gate_proj`` and ``up_proj`` (or a fused ``gate_up_proj``) and ``down_proj``;
- embeddings: ``get_input_embeddings()`` / ``get_output_embeddings()`` when the model
  has them, else children named ``embed_tokens`` / ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from infercore.comm.env import disable_nvls
from infercore.comm.interface import Communicator
from infercore.comm.tp.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from infercore.comm.tp.sharding import (
    even_range,
    head_rows,
    kv_head_rows,
    local_kv_heads,
    shard_linear,
)
from infercore.comm.tp.vocab import ParallelLMHead, VocabParallelEmbedding

__all__ = ["TensorParallelInfo", "apply_tensor_parallel"]

_HEAD_ATTRS = ("num_heads", "num_attention_heads")
_KV_ATTRS = ("num_key_value_heads", "num_kv_heads")


@dataclass(frozen=True)
class TensorParallelInfo:
    """Recorded on a sharded model as ``model.infercore_tensor_parallel``.

    Head counts are the model's full (unsharded) ones.
    """

    world_size: int
    rank: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int

    @property
    def kv_heads_replicated(self) -> bool:
        return self.world_size > self.num_key_value_heads


def _text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _head_dim(attn: nn.Module, config: Any) -> int:
    head_dim = getattr(attn, "head_dim", None) or getattr(config, "head_dim", None)
    if head_dim is None and config is not None:
        head_dim = config.hidden_size // config.num_attention_heads
    if not isinstance(head_dim, int):
        raise ValueError(
            f"cannot tell the head size of {type(attn).__name__}: it has no head_dim and "
            "the model has no config"
        )
    return head_dim


def _set_local_heads(attn: nn.Module, heads: int, kv_heads: int, head_dim: int,
                     comm: Communicator) -> None:
    local_heads = heads // comm.world_size
    local_kv = local_kv_heads(kv_heads, comm.world_size)
    for name in _HEAD_ATTRS:
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, local_heads)
    for name in _KV_ATTRS:
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, local_kv)
    if isinstance(getattr(attn, "num_key_value_groups", None), int):
        attn.num_key_value_groups = local_heads // local_kv
    # Older HF attention reshapes its output to ``self.hidden_size`` (= heads * head_dim).
    if getattr(attn, "hidden_size", None) == heads * head_dim:
        attn.hidden_size = local_heads * head_dim


def _shard_attention(attn: nn.Module, comm: Communicator, config: Any) -> tuple[int, int, int]:
    head_dim = _head_dim(attn, config)
    world, rank = comm.world_size, comm.rank
    if hasattr(attn, "qkv_proj"):
        if config is None:
            raise ValueError("a fused qkv_proj needs the model config for its head counts")
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        attn.qkv_proj = QKVParallelLinear.from_linear(
            attn.qkv_proj, comm, head_dim=head_dim, num_heads=heads, num_kv_heads=kv_heads
        )
    else:
        heads = attn.q_proj.out_features // head_dim
        kv_heads = attn.k_proj.out_features // head_dim
        q_rows = head_rows(heads, head_dim, world, rank)
        kv_rows = kv_head_rows(kv_heads, head_dim, world, rank)
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            full = getattr(attn, name)
            local = shard_linear(full, 0, [rows])
            setattr(attn, name, ColumnParallelLinear._wrap(local, comm, full.in_features,
                                                           full.out_features))
    attn.o_proj = RowParallelLinear.from_linear(attn.o_proj, comm)
    _set_local_heads(attn, heads, kv_heads, head_dim, comm)
    return heads, kv_heads, head_dim


def _shard_mlp(mlp: nn.Module, comm: Communicator) -> None:
    if hasattr(mlp, "gate_up_proj"):
        size = mlp.gate_up_proj.out_features // 2
        mlp.gate_up_proj = MergedColumnParallelLinear.from_linear(
            mlp.gate_up_proj, comm, output_sizes=[size, size]
        )
    else:
        even_range(mlp.gate_proj.out_features, comm.world_size, comm.rank, "intermediate_size")
        mlp.gate_proj = ColumnParallelLinear.from_linear(mlp.gate_proj, comm)
        mlp.up_proj = ColumnParallelLinear.from_linear(mlp.up_proj, comm)
    mlp.down_proj = RowParallelLinear.from_linear(mlp.down_proj, comm)


def _is_attention(m: nn.Module) -> bool:
    return hasattr(m, "o_proj") and (
        hasattr(m, "qkv_proj") or all(hasattr(m, n) for n in ("q_proj", "k_proj", "v_proj"))
    )


def _is_mlp(m: nn.Module) -> bool:
    return hasattr(m, "down_proj") and (
        hasattr(m, "gate_up_proj") or (hasattr(m, "gate_proj") and hasattr(m, "up_proj"))
    )


def _embeddings(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    def get(method: str, attr: str) -> nn.Module | None:
        fn = getattr(model, method, None)
        if fn is not None:
            try:
                return fn()
            except NotImplementedError:
                pass
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] == attr:
                return module
        return None

    return get("get_input_embeddings", "embed_tokens"), get("get_output_embeddings", "lm_head")


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    parents = [
        (module, name)
        for module in model.modules()
        for name, child in module.named_children()
        if child is old
    ]
    for module, name in parents:
        setattr(module, name, new)


def _shard_embeddings(model: nn.Module, comm: Communicator) -> None:
    embed, head = _embeddings(model)
    tied = embed is not None and head is not None and head.weight is embed.weight
    new_embed = None
    if isinstance(embed, nn.Embedding):
        new_embed = VocabParallelEmbedding.from_embedding(embed, comm)
        _replace(model, embed, new_embed)
    if isinstance(head, nn.Linear):
        new_head = ParallelLMHead.from_linear(head, comm, tie_to=new_embed if tied else None)
        _replace(model, head, new_head)


def apply_tensor_parallel(model: nn.Module, comm: Communicator) -> nn.Module:
    """Shard a built Llama-family model over ``comm``'s ranks, in place.

    Every rank must hold the same full model (same weights) on ``comm.device``. After
    the call each rank keeps ``1/tp`` of the attention heads, of the MLP's intermediate
    features and of the vocabulary; a forward pass on every rank with the same inputs
    returns the unsharded model's outputs on every rank.

    - Attention: Q/K/V column-parallel by whole heads, O row-parallel (one all-reduce);
      KV heads fewer than ``tp`` are replicated (``tp % num_kv_heads == 0`` needed).
    - MLP: gate/up column-parallel, down row-parallel (one all-reduce).
    - Embedding: vocabulary-parallel (one all-reduce); LM head: vocabulary-parallel with
      an all-gather of the logits; a tied head keeps sharing the embedding's weight.
    - The config's ``num_attention_heads`` / ``num_key_value_heads`` become the local
      counts (``head_dim`` is made explicit), so code that sizes KV caches from the
      config allocates the local heads; other fields keep their full values.
    - Linear types other than ``nn.Linear`` (quantized ones) shard through their
      registered sharder (:func:`~infercore.comm.register_linear_sharder`).

    Parameters
    ----------
    model : nn.Module
        E.g. a transformers ``LlamaForCausalLM``.
    comm : Communicator
        From :func:`~infercore.comm.init_communicator`; ``world_size == 1`` leaves the
        model unchanged.

    Returns
    -------
    nn.Module
        ``model``, with ``model.infercore_tensor_parallel`` (:class:`TensorParallelInfo`).

    Examples
    --------
    >>> comm = infercore.comm.init_communicator()      # under torchrun / comm.launch
    >>> model = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(comm.device)
    >>> apply_tensor_parallel(model, comm)
    >>> logits = model(input_ids.to(comm.device)).logits  # full logits on every rank
    """
    if getattr(model, "infercore_tensor_parallel", None) is not None:
        raise ValueError("the model is already sharded (model.infercore_tensor_parallel is set)")
    if comm.world_size == 1:
        return model
    disable_nvls()
    param = next(model.parameters(), None)
    if param is not None and param.device.type != comm.device.type:
        raise ValueError(
            f"the model is on {param.device} but the communicator runs on {comm.device}; "
            "move the model first"
        )
    config = _text_config(model)
    found = set()
    for module in list(model.modules()):
        if _is_attention(module):
            found.add(_shard_attention(module, comm, config))
        elif _is_mlp(module):
            _shard_mlp(module, comm)
    if not found:
        raise ValueError(
            f"found no attention module (children q_proj/k_proj/v_proj or qkv_proj, and "
            f"o_proj) in {type(model).__name__}; nothing to shard"
        )
    _shard_embeddings(model, comm)
    heads, kv_heads, head_dim = sorted(found)[0]
    if config is not None and len(found) == 1:
        config.head_dim = head_dim
        config.num_attention_heads = heads // comm.world_size
        config.num_key_value_heads = local_kv_heads(kv_heads, comm.world_size)
    model.infercore_tensor_parallel = TensorParallelInfo(
        comm.world_size, comm.rank, heads, kv_heads, head_dim
    )
    return model
