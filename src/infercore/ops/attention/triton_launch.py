"""Host side of the Triton attention kernels: launching a :class:`LaunchPlan`."""

from __future__ import annotations

import torch
import triton

from infercore.ops.attention.checks import fp8_reasons
from infercore.ops.attention.partition import KVSource, LaunchPlan
from infercore.ops.attention.triton_kernels import _attention_kernel, _split_reduce_kernel
from infercore.ops.common import TritonBackend

__all__ = ["TritonAttentionBase", "run_plan"]


def _scale_args(k_scale: torch.Tensor | None, v_scale: torch.Tensor | None, dummy: torch.Tensor):
    if k_scale is None and v_scale is None:
        return False, dummy, dummy
    ones = None
    if k_scale is None or v_scale is None:
        ones = torch.ones(1, dtype=torch.float32, device=dummy.device)
    return True, k_scale if k_scale is not None else ones, v_scale if v_scale is not None else ones


def run_plan(
    plan: LaunchPlan,
    q: torch.Tensor,
    kv: KVSource,
    cu_q: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    *,
    causal: bool,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Launch ``plan``: attention of ``q`` ``[total_q, heads, d]`` over ``kv`` into ``out``
    (and ``lse`` ``[total_q, heads]`` float32 when given). ``cu_q`` may be ``None`` only
    for plans with ``one_q_per_seq``."""
    if plan.num_seqs == 0 or q.shape[0] == 0:
        return
    if q.stride(-1) != 1:
        q = q.contiguous()
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv.num_kv_heads
    group = num_heads // num_kv_heads
    has_scale, k_scale_arg, v_scale_arg = _scale_args(k_scale, v_scale, q)
    block_tables = kv.block_tables
    if block_tables is not None and block_tables.stride(-1) != 1:
        block_tables = block_tables.contiguous()
    dummy = q
    common = dict(
        q_ptr=q, k_ptr=kv.k, v_ptr=kv.v, out_ptr=out, lse_ptr=lse if lse is not None else dummy,
        cu_q_ptr=cu_q if cu_q is not None else dummy,
        cu_k_ptr=kv.cu_k if kv.cu_k is not None else dummy,
        seq_lens_ptr=kv.seq_lens if kv.seq_lens is not None else dummy,
        block_tables_ptr=block_tables if block_tables is not None else dummy,
        k_scale_ptr=k_scale_arg, v_scale_ptr=v_scale_arg,
        sm_scale=float(scale), softcap=float(softcap or 0.0), window=int(sliding_window or 0),
        num_seqs=plan.num_seqs, num_heads=num_heads, num_splits=plan.num_splits,
        stride_qt=q.stride(0), stride_qh=q.stride(1), stride_ot=out.stride(0),
        stride_oh=out.stride(1),
        **dict(zip(("stride_kb", "stride_ks", "stride_kh", "stride_vb", "stride_vs", "stride_vh"),
                   kv.strides(), strict=True)),
        stride_bt=block_tables.stride(0) if block_tables is not None else 0,
        HEAD_DIM=head_dim, HEAD_DIM_PAD=triton.next_power_of_2(head_dim), GROUP=group,
        PAGE_SIZE=kv.page_size, PAGED=kv.paged, ONE_Q_PER_SEQ=plan.one_q_per_seq,
        CAUSAL=bool(causal), HAS_WINDOW=sliding_window is not None,
        HAS_SOFTCAP=softcap is not None, HAS_KV_SCALE=has_scale, RETURN_LSE=lse is not None,
        DOT_PRECISION="tf32x3" if q.dtype == torch.float32 else "tf32",
    )
    if plan.tiled and plan.num_tiles > 0:
        shape = plan.tiled_shape
        _attention_kernel[(plan.num_tiles, num_kv_heads, 1)](
            part_o_ptr=dummy, part_lse_ptr=dummy,
            tile_map_ptr=plan.tile_map if plan.tile_map is not None else dummy,
            GROUP_PAD=shape.group_pad, BLOCK_Q=shape.block_q, BLOCK_N=shape.block_n,
            TILING=2 if plan.tile_map is not None else 1,
            MAX_SMALL_Q=plan.small_shape.block_q if plan.small else 0, SPLIT_KV=False,
            num_warps=shape.num_warps, num_stages=shape.num_stages, **common,
        )
    if plan.small:
        shape, splits = plan.small_shape, plan.num_splits
        _attention_kernel[(plan.num_seqs, num_kv_heads, splits)](
            part_o_ptr=plan.part_o if splits > 1 else dummy,
            part_lse_ptr=plan.part_lse if splits > 1 else dummy, tile_map_ptr=dummy,
            GROUP_PAD=shape.group_pad, BLOCK_Q=shape.block_q, BLOCK_N=shape.block_n,
            TILING=0, MAX_SMALL_Q=0, SPLIT_KV=splits > 1,
            num_warps=shape.num_warps, num_stages=shape.num_stages, **common,
        )
        if splits > 1:
            _split_reduce_kernel[(plan.num_seqs * shape.block_q, num_heads)](
                plan.part_o, plan.part_lse, out, lse if lse is not None else dummy,
                cu_q if cu_q is not None else dummy, num_heads, splits, out.stride(0),
                out.stride(1), HEAD_DIM=head_dim, HEAD_DIM_PAD=triton.next_power_of_2(head_dim),
                SPLITS_PAD=triton.next_power_of_2(splits),
                BLOCK_Q=shape.block_q, ONE_Q_PER_SEQ=plan.one_q_per_seq,
                RETURN_LSE=lse is not None, num_warps=4,
            )


class TritonAttentionBase(TritonBackend):
    """Capabilities shared by the Triton attention backends."""

    def not_supported_reasons(self, inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if inputs is None:
            return reasons
        if inputs.head_dim > 256:
            reasons.append(f"head_dim {inputs.head_dim} > 256")
        reasons += fp8_reasons(inputs.kv_dtype, inputs.device)
        return reasons
