"""A vLLM V1 attention backend on infercore: ``ops.kv.write`` and ``ops.attention.paged``.

vLLM hands each layer one cache tensor, logically ``[num_blocks, num_kv_heads, block_size,
2 * head_size]`` (K in the first ``head_size`` features of each slot, V in the rest) in
whatever physical order the resolved ``KVCacheLayout`` gives it. The backend views it as
K and V caches ``[num_blocks, block_size, num_kv_heads, head_size]`` with the layout's
strides (no copy), which infercore's kernels read directly; so it accepts every layout.

Registered by :func:`infercore.integrations.vllm.register` as vLLM's ``CUSTOM`` backend
(select it with ``attention_config={"backend": "CUSTOM"}``) and, on CPU with
``INFERCORE_VLLM_ATTENTION=1``, in place of ``CPU_ATTN``. Decoder self-attention only;
no ALiBi, attention sinks, quantized KV caches or fused output quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionImpl,
    AttentionLayer,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
)

from infercore import ops
from infercore.integrations.vllm import count
from infercore.ops.attention import HEAD_DIMS

__all__ = [
    "InfercoreAttentionBackend",
    "InfercoreAttentionImpl",
    "InfercoreAttentionMetadata",
    "InfercoreAttentionMetadataBuilder",
    "InfercoreCPUAttentionBackend",
    "split_kv_cache",
]


def split_kv_cache(kv_cache: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V views ``[num_blocks, block_size, num_kv_heads, head_size]`` of a vLLM layer
    cache ``[num_blocks, num_kv_heads, block_size, 2 * head_size]`` (any physical layout)."""
    k_cache, v_cache = kv_cache.transpose(1, 2).split(head_size, dim=-1)
    return k_cache, v_cache


@dataclass
class InfercoreAttentionMetadata:
    """One step's batch, as ``ops.attention.paged`` takes it.

    ``num_tokens`` counts the scheduled query tokens (``query_start_loc[-1]``); rows of
    ``query`` past it are padding.
    """

    num_tokens: int
    max_query_len: int
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    causal: bool


class InfercoreAttentionMetadataBuilder(AttentionMetadataBuilder[InfercoreAttentionMetadata]):
    """Passes vLLM's common metadata through: the paged op takes mixed prefill/decode
    batches as they come, so no reordering and no per-step planning."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> InfercoreAttentionMetadata:
        m = common_attn_metadata
        if isinstance(m.causal, torch.Tensor):
            raise NotImplementedError(
                "infercore attention backend: per-request causal flags are not supported")
        return InfercoreAttentionMetadata(
            num_tokens=int(m.query_start_loc_cpu[m.num_reqs]),
            max_query_len=m.max_query_len,
            query_start_loc=m.query_start_loc[: m.num_reqs + 1],
            seq_lens=m.seq_lens[: m.num_reqs],
            block_table=m.block_table_tensor[: m.num_reqs],
            causal=bool(m.causal),
        )


class InfercoreAttentionImpl(AttentionImpl[InfercoreAttentionMetadata]):
    """Writes K/V with ``ops.kv.write`` (vLLM calls :meth:`do_kv_cache_update` before
    :meth:`forward`) and attends with ``ops.attention.paged``.

    Argument and value checks run except on CUDA, where they would synchronize every
    layer (and CUDA-graph capture forbids them); vLLM builds the metadata.
    """

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int,
        alibi_slopes: list[float] | None,
        sliding_window: int | None,
        kv_cache_dtype: str,
        logits_soft_cap: float | None = None,
        attn_type: str = AttentionType.DECODER,
        kv_sharing_target_layer_name: str | None = None,
        sinks: torch.Tensor | None = None,
    ) -> None:
        unsupported = {
            "ALiBi": alibi_slopes is not None,
            "attention sinks": sinks is not None,
            f"attention type {attn_type}": attn_type != AttentionType.DECODER,
            f"kv_cache_dtype={kv_cache_dtype!r}": kv_cache_dtype not in ("auto", "float16",
                                                                         "bfloat16"),
        }
        wanted = [name for name, bad in unsupported.items() if bad]
        if wanted:
            raise NotImplementedError(
                f"infercore attention backend does not support {', '.join(wanted)}")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.sliding_window = sliding_window
        self.softcap = logits_soft_cap or None
        self.kv_cache_dtype = kv_cache_dtype
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name

    def do_kv_cache_update(self, layer: torch.nn.Module, key: torch.Tensor, value: torch.Tensor,
                           kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        k_cache, v_cache = split_kv_cache(kv_cache, self.head_size)
        # key/value may carry padding rows past the scheduled tokens; slot_mapping does not.
        n = slot_mapping.shape[0]
        ops.kv.write(key[:n], value[:n], k_cache, v_cache, slot_mapping,
                     skip_checks=key.is_cuda)

    def forward(
        self,
        layer: AttentionLayer,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: InfercoreAttentionMetadata | None,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError(
                "infercore attention backend does not support fused output quantization")
        if attn_metadata is None:  # profiling run: no cache, nothing to attend
            return output
        m = attn_metadata
        n = m.num_tokens
        k_cache, v_cache = split_kv_cache(kv_cache, self.head_size)
        ops.attention.paged(
            query[:n], k_cache, v_cache, m.block_table, m.seq_lens, m.query_start_loc,
            m.max_query_len, causal=m.causal, scale=self.scale,
            sliding_window=self.sliding_window, softcap=self.softcap, out=output[:n],
            skip_checks=query.is_cuda,
        )
        count("attention")
        return output


class InfercoreAttentionBackend(AttentionBackend):
    """infercore's paged attention as vLLM's ``CUSTOM`` backend."""

    forward_includes_kv_cache_update: bool = False
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16,
                                                     torch.float32]

    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_impl_cls() -> type[InfercoreAttentionImpl]:
        return InfercoreAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[InfercoreAttentionMetadataBuilder]:
        return InfercoreAttentionMetadataBuilder

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return list(HEAD_DIMS)

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_non_causal(cls) -> bool:
        return True


class InfercoreCPUAttentionBackend(InfercoreAttentionBackend):
    """The same backend under the name vLLM's CPU platform selects (``CPU_ATTN``)."""

    @staticmethod
    def get_name() -> str:
        return "CPU_ATTN"
